/* http_client.h - one HTTP request at a time over libcurl.
 *
 * Callers describe a request (method, URL, headers, a body from memory, an
 * open FILE* or a path) and get back the status, the response headers with
 * lowercased names, and the body, in memory or streamed to a file.  Nothing
 * here knows about AWS: signing is done by the caller, which is why the URL's
 * path is sent exactly as given (no "/../" squashing) and the caller may set
 * its own Host header.
 *
 * A response body destined for a file is written to a temporary file in the
 * same directory and renamed into place only when the status is 2xx and the
 * transfer completed, so a failed download never leaves a truncated file
 * under the final name.  Non-2xx bodies (error documents) always land in
 * memory, capped, for the caller to report.
 *
 * Transport failures are errors ("GET http://127.0.0.1:9000/b/k: Couldn't
 * connect to server"); an HTTP error status is not (the caller decides).
 * Messages show the URL without its query string or user info, which may
 * carry presigned signatures, session tokens or passwords; header values are
 * never shown. */
#ifndef KILN_COMMON_HTTP_CLIENT_H
#define KILN_COMMON_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "buf.h"
#include "error.h"

/* Longest error document kept from a non-2xx response. */
#define KILN_HTTP_ERROR_BODY_MAX (1024 * 1024)

struct kiln_http_request {
  const char *method;            /* "GET", "HEAD", "PUT", "POST", "DELETE", ... */
  const char *url;               /* http:// or https:// only */
  const char *const *headers;    /* "Name: value" lines, NULL-terminated; may be NULL */

  /* The request body, at most one of: */
  const void *body;              /* body_len bytes from memory */
  FILE *body_file;               /* body_len bytes from the stream's current position */
  const char *body_path;         /* the whole file (its size is taken when opened) */
  uint64_t body_len;
  /* PUT, POST and PATCH always send a body (Content-Length: 0 when empty);
   * other methods only when one of the body members is set. */

  /* When set, a 2xx response body is written to this path (see above). */
  const char *response_path;
  /* Cap on a body kept in memory; 0: 256 MiB.  Exceeding it is an error. */
  size_t max_body;

  long timeout_seconds;          /* whole request; 0: no limit */
  long connect_timeout_seconds;  /* 0: 30 */
  /* Abort when fewer than 1 byte/s flowed for this long; 0: 120, <0: never. */
  long stall_timeout_seconds;
  bool follow_redirects;         /* default: a 3xx is returned as is */
  bool insecure;                 /* skip TLS certificate and host name checks */
};

struct kiln_http_header {
  char *name;                    /* lowercased */
  char *value;                   /* surrounding whitespace removed */
};

struct kiln_http_response {
  long status;
  struct kiln_http_header *headers; /* of the final response, in order */
  size_t n_headers;
  struct kiln_buf body;          /* empty when written to response_path */
  uint64_t body_bytes;           /* bytes received (in memory or file) */
};

/* Performs the request.  0 when an HTTP response was received (any status),
 * -1 on a transport failure, timeout (KILN_ERR_TIMEOUT), unreadable body
 * source or unwritable response_path.  *resp is filled in either case as far
 * as it got; release it with kiln_http_response_release. */
int kiln_http_perform (const struct kiln_http_request *req, struct kiln_http_response *resp, kiln_error **err);

void kiln_http_response_release (struct kiln_http_response *resp);

/* The first header named name (any case), or NULL. */
const char *kiln_http_response_header (const struct kiln_http_response *resp, const char *name);

/* The URL as it may appear in messages: no user info, query or fragment.
 * malloc'd. */
char *kiln_http_redact_url (const char *url);

#endif
