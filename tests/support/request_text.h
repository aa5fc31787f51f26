/* request_text.h - HTTP requests written as text, for kiln-emulator's golden
 * test and its fuzz target.
 *
 *   METHOD TARGET HTTP/1.1
 *   Name: value
 *   ...
 *   (blank line)
 *   body
 *
 * A request may carry "X-Kiln-Sign: ACCESS_KEY SECRET REGION SERVICE", which
 * request_text_sign replaces with a real SigV4 signature (common/aws/sigv4.c)
 * at the request's X-Amz-Date (added at `now` when absent), over the body's
 * hash, or UNSIGNED-PAYLOAD when x-amz-content-sha256 says that: the files
 * stay readable, a case can sign with the wrong secret, region or date on
 * purpose, and a fuzzed request reaches the handlers authenticated. */
#ifndef KILN_TESTS_REQUEST_TEXT_H
#define KILN_TESTS_REQUEST_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "emulator.h"
#include "sigv4.h"

#define REQUEST_TEXT_MAX_HEADERS 64

struct request_text {
  char *method;
  char *target;              /* path?query as written */
  struct kiln_sigv4_pair headers[REQUEST_TEXT_MAX_HEADERS];
  size_t n_headers;
  char *body;                /* may hold NUL bytes: body_len counts */
  size_t body_len;
  /* Filled by request_text_view: */
  char *path;                /* decoded, before '?' */
  struct kiln_sigv4_pair *query;
  size_t n_query;
};

/* Parses len bytes of text; false when it is not a request. */
bool request_text_parse (const char *text, size_t len, struct request_text *out);
void request_text_release (struct request_text *r);
const char *request_text_header (const struct request_text *r, const char *name);

/* Signs r as its X-Kiln-Sign header asks (nothing without one); problems go
 * to diag as "# ..." lines. */
void request_text_sign (struct request_text *r, time_t now, struct kiln_buf *diag);

/* The request as kiln-emulator takes it (pointing into r). */
void request_text_view (struct request_text *r, struct emu_request *out);

#endif
