/* http_client.c - libcurl wrapper for single HTTP requests (see
 * http_client.h).
 *
 * Each thread keeps one easy handle (a pthread key, cleaned up when the
 * thread ends), reset before each request: requests stay independent, but
 * the handle's keep-alive connections survive, so a thread's next request
 * to the same endpoint skips the TCP (and TLS) setup; thousands of EBS
 * blocks to one endpoint gain the most.  libcurl's global initialisation
 * happens once, under pthread_once, because curl_global_init is not
 * thread-safe. */
#include "http_client.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cleanup.h"
#include "xalloc.h"

#define DEFAULT_MAX_BODY ((size_t) 256 * 1024 * 1024)
#define DEFAULT_CONNECT_TIMEOUT 30L
#define DEFAULT_STALL_TIMEOUT 120L

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_result;
/* Each thread's easy handle, kept between its requests (see the top). */
static pthread_key_t handle_key;

static void
handle_free (void *h)
{
  curl_easy_cleanup (h);
}

static void
global_init (void)
{
  global_result = curl_global_init (CURL_GLOBAL_DEFAULT);
  if (global_result == CURLE_OK && pthread_key_create (&handle_key, handle_free) != 0)
    global_result = CURLE_FAILED_INIT;
}

/* The calling thread's easy handle, reset to libcurl's defaults; its live
 * connections stay, so the next request to the same host reuses one. */
static CURL *
thread_handle (void)
{
  CURL *h = pthread_getspecific (handle_key);
  if (h)
    {
      curl_easy_reset (h);
      return h;
    }
  h = curl_easy_init ();
  if (h && pthread_setspecific (handle_key, h) != 0)
    {
      curl_easy_cleanup (h);
      return NULL;
    }
  return h;
}

char *
kiln_http_redact_url (const char *url)
{
  if (url == NULL)
    return kiln_xstrdup ("(no URL)");
  const char *scheme_end = strstr (url, "://");
  const char *auth = scheme_end ? scheme_end + 3 : url;
  size_t auth_len = strcspn (auth, "/?#");
  const char *at = memchr (auth, '@', auth_len);
  const char *path = auth + auth_len;
  size_t path_len = strcspn (path, "?#");
  char *r = NULL;
  r = kiln_xasprintf ("%.*s%.*s%.*s", (int) (auth - url), url, (int) (auth_len - (at ? (size_t) (at + 1 - auth) : 0)),
                      at ? at + 1 : auth, (int) path_len, path);
  return r;
}

struct transfer {
  const struct kiln_http_request *req;
  struct kiln_http_response *resp;
  CURL *curl;

  /* request body */
  const char *mem;
  FILE *file;
  off_t file_start;          /* the stream's position at the start, -1: cannot seek */
  uint64_t len;
  uint64_t sent;
  int read_errno;

  /* response body */
  size_t max_body;
  char *tmp_path;            /* temporary file beside response_path */
  int tmp_fd;
  bool to_file;              /* decided at the first byte: 2xx and a path */
  bool decided;
  int write_errno;
  bool too_big;
  bool new_headers;          /* the next header line starts a new response */
};

static size_t
read_cb (char *buf, size_t size, size_t nitems, void *opaque)
{
  struct transfer *t = opaque;
  size_t want = size * nitems;
  uint64_t left = t->len - t->sent;
  if (want > left)
    want = (size_t) left;
  if (want == 0)
    return 0;
  size_t got;
  if (t->mem)
    {
      memcpy (buf, t->mem + t->sent, want);
      got = want;
    }
  else
    {
      got = fread (buf, 1, want, t->file);
      if (got == 0)
        {
          /* A file that shrank under us, or a read error: abort rather than
           * send a body shorter than the Content-Length we announced. */
          t->read_errno = ferror (t->file) ? errno : EIO;
          return CURL_READFUNC_ABORT;
        }
    }
  t->sent += got;
  return got;
}

static int
seek_cb (void *opaque, curl_off_t offset, int origin)
{
  struct transfer *t = opaque;
  if (origin != SEEK_SET || offset < 0 || (uint64_t) offset > t->len)
    return CURL_SEEKFUNC_CANTSEEK;
  if (t->file)
    {
      /* Offset 0 is where the stream was when the request started. */
      if (t->file_start < 0)
        return CURL_SEEKFUNC_CANTSEEK;
      if (fseeko (t->file, t->file_start + (off_t) offset, SEEK_SET) != 0)
        return CURL_SEEKFUNC_FAIL;
    }
  t->sent = (uint64_t) offset;
  return CURL_SEEKFUNC_OK;
}

static bool
write_all (int fd, const char *data, size_t len)
{
  while (len > 0)
    {
      ssize_t n = write (fd, data, len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return false;
      data += n;
      len -= (size_t) n;
    }
  return true;
}

static size_t
write_cb (char *data, size_t size, size_t nmemb, void *opaque)
{
  struct transfer *t = opaque;
  size_t n = size * nmemb;
  if (!t->decided)
    {
      long status = 0;
      curl_easy_getinfo (t->curl, CURLINFO_RESPONSE_CODE, &status);
      t->to_file = t->tmp_fd >= 0 && status >= 200 && status < 300;
      t->decided = true;
    }
  if (t->to_file)
    {
      if (!write_all (t->tmp_fd, data, n))
        {
          t->write_errno = errno;
          return 0;
        }
    }
  else
    {
      size_t cap = t->tmp_fd >= 0 ? KILN_HTTP_ERROR_BODY_MAX : t->max_body;
      if (t->resp->body.len + n > cap)
        {
          if (t->tmp_fd >= 0)
            {
              /* An error document that big is not worth keeping whole. */
              size_t room = cap - t->resp->body.len;
              kiln_buf_append (&t->resp->body, data, room);
              t->resp->body_bytes += n;
              return n;
            }
          t->too_big = true;
          return 0;
        }
      kiln_buf_append (&t->resp->body, data, n);
    }
  t->resp->body_bytes += n;
  return n;
}

static void
clear_headers (struct kiln_http_response *r)
{
  for (size_t i = 0; i < r->n_headers; i++)
    {
      free (r->headers[i].name);
      free (r->headers[i].value);
    }
  free (r->headers);
  r->headers = NULL;
  r->n_headers = 0;
}

static size_t
header_cb (char *data, size_t size, size_t nitems, void *opaque)
{
  struct transfer *t = opaque;
  size_t n = size * nitems;
  /* Each response (a 100 Continue, a redirect, the final one) starts with its
   * status line: keep only the last response's headers. */
  if (n >= 5 && strncmp (data, "HTTP/", 5) == 0)
    {
      clear_headers (t->resp);
      return n;
    }
  const char *colon = memchr (data, ':', n);
  if (colon == NULL)
    return n; /* the blank line ending the block, or junk */
  size_t nl = (size_t) (colon - data);
  const char *v = colon + 1;
  size_t vl = n - nl - 1;
  while (vl > 0 && (*v == ' ' || *v == '\t'))
    v++, vl--;
  while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' ' || v[vl - 1] == '\t'))
    vl--;
  struct kiln_http_header *h = realloc (t->resp->headers, (t->resp->n_headers + 1) * sizeof *h);
  if (h == NULL)
    abort ();
  t->resp->headers = h;
  char *name = kiln_xstrndup (data, nl);
  char *value = kiln_xstrndup (v, vl);
  for (char *p = name; *p; p++)
    *p = (char) tolower ((unsigned char) *p);
  h[t->resp->n_headers++] = (struct kiln_http_header){name, value};
  return n;
}

void
kiln_http_response_release (struct kiln_http_response *resp)
{
  if (resp == NULL)
    return;
  clear_headers (resp);
  kiln_buf_release (&resp->body);
  memset (resp, 0, sizeof *resp);
}

const char *
kiln_http_response_header (const struct kiln_http_response *resp, const char *name)
{
  for (size_t i = 0; i < resp->n_headers; i++)
    if (strcasecmp (resp->headers[i].name, name) == 0)
      return resp->headers[i].value;
  return NULL;
}

static bool
method_sends_body (const char *m)
{
  return strcmp (m, "PUT") == 0 || strcmp (m, "POST") == 0 || strcmp (m, "PATCH") == 0;
}

static void
slist_freep (struct curl_slist **l)
{
  curl_slist_free_all (*l);
}

int
kiln_http_perform (const struct kiln_http_request *req, struct kiln_http_response *resp, kiln_error **err)
{
  memset (resp, 0, sizeof *resp);
  _cleanup_free_ char *shown = kiln_http_redact_url (req->url);
  const char *method = req->method ? req->method : "GET";

  pthread_once (&global_once, global_init);
  if (global_result != CURLE_OK)
    return kiln_fail (err, "%s %s: libcurl initialisation failed: %s", method, shown,
                      curl_easy_strerror (global_result));
  if (req->url == NULL || (strncasecmp (req->url, "http://", 7) != 0 && strncasecmp (req->url, "https://", 8) != 0))
    return kiln_fail_invalid (err, "%s %s: only http:// and https:// URLs are supported", method, shown);
  int nbodies = (req->body != NULL) + (req->body_file != NULL) + (req->body_path != NULL);
  if (nbodies > 1)
    return kiln_fail_invalid (err, "%s %s: more than one request body given", method, shown);

  struct transfer t = {.req = req, .resp = resp, .tmp_fd = -1};
  t.max_body = req->max_body ? req->max_body : DEFAULT_MAX_BODY;
  _cleanup_fclose_ FILE *owned_body = NULL;
  bool upload = method_sends_body (method) || nbodies > 0;
  if (req->body)
    {
      t.mem = req->body;
      t.len = req->body_len;
    }
  else if (req->body_file)
    {
      t.file = req->body_file;
      t.file_start = ftello (req->body_file);
      t.len = req->body_len;
    }
  else if (req->body_path)
    {
      owned_body = fopen (req->body_path, "rbe");
      if (owned_body == NULL)
        return kiln_fail_errno (err, errno, "%s %s: open '%s'", method, shown, req->body_path);
      struct stat st;
      if (fstat (fileno (owned_body), &st) < 0)
        return kiln_fail_errno (err, errno, "%s %s: stat '%s'", method, shown, req->body_path);
      if (!S_ISREG (st.st_mode))
        return kiln_fail_invalid (err, "%s %s: '%s' is not a regular file", method, shown, req->body_path);
      t.file = owned_body;
      t.file_start = 0;
      t.len = (uint64_t) st.st_size;
    }
  else if (upload)
    t.mem = "";

  if (req->response_path)
    {
      t.tmp_path = kiln_xasprintf ("%s.part-XXXXXX", req->response_path);
      t.tmp_fd = mkostemp (t.tmp_path, O_CLOEXEC);
      if (t.tmp_fd < 0)
        {
          int e = errno;
          free (t.tmp_path);
          return kiln_fail_errno (err, e, "%s %s: create a file beside '%s'", method, shown, req->response_path);
        }
    }

  int ret = 0;
  CURL *curl = thread_handle ();
  __attribute__ ((cleanup (slist_freep))) struct curl_slist *headers = NULL;
  if (curl == NULL)
    {
      ret = kiln_fail (err, "%s %s: cannot create a libcurl handle", method, shown);
      goto out;
    }
  t.curl = curl;
  char errbuf[CURL_ERROR_SIZE] = "";
  for (const char *const *h = req->headers; h && *h; h++)
    {
      struct curl_slist *n = curl_slist_append (headers, *h);
      if (n == NULL)
        abort ();
      headers = n;
    }
  /* Without this curl waits for "100 Continue" before larger bodies, a round
   * trip some servers (and emulators) never answer. */
  headers = curl_slist_append (headers, "Expect:");
  if (headers == NULL)
    abort ();

  curl_easy_setopt (curl, CURLOPT_URL, req->url);
  curl_easy_setopt (curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt (curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt (curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  /* Signed requests must go out with the path that was signed. */
  curl_easy_setopt (curl, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt (curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt (curl, CURLOPT_FOLLOWLOCATION, req->follow_redirects ? 1L : 0L);
  curl_easy_setopt (curl, CURLOPT_CONNECTTIMEOUT,
                    req->connect_timeout_seconds > 0 ? req->connect_timeout_seconds : DEFAULT_CONNECT_TIMEOUT);
  if (req->timeout_seconds > 0)
    curl_easy_setopt (curl, CURLOPT_TIMEOUT, req->timeout_seconds);
  if (req->stall_timeout_seconds >= 0)
    {
      curl_easy_setopt (curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
      curl_easy_setopt (curl, CURLOPT_LOW_SPEED_TIME,
                        req->stall_timeout_seconds > 0 ? req->stall_timeout_seconds : DEFAULT_STALL_TIMEOUT);
    }
  if (req->insecure)
    {
      curl_easy_setopt (curl, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt (curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
  curl_easy_setopt (curl, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt (curl, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt (curl, CURLOPT_WRITEDATA, &t);

  if (strcmp (method, "HEAD") == 0)
    curl_easy_setopt (curl, CURLOPT_NOBODY, 1L);
  else if (strcmp (method, "GET") != 0 || upload)
    curl_easy_setopt (curl, CURLOPT_CUSTOMREQUEST, method);
  if (upload)
    {
      if (t.len > (uint64_t) INT64_MAX)
        {
          ret = kiln_fail_invalid (err, "%s %s: body too large", method, shown);
          goto out;
        }
      curl_easy_setopt (curl, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt (curl, CURLOPT_READFUNCTION, read_cb);
      curl_easy_setopt (curl, CURLOPT_READDATA, &t);
      curl_easy_setopt (curl, CURLOPT_SEEKFUNCTION, seek_cb);
      curl_easy_setopt (curl, CURLOPT_SEEKDATA, &t);
      curl_easy_setopt (curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t) t.len);
    }

  CURLcode rc = curl_easy_perform (curl);
  curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &resp->status);
  if (rc != CURLE_OK)
    {
      if (t.read_errno)
        ret = kiln_fail_errno (err, t.read_errno, "%s %s: read the request body%s%s%s", method, shown,
                               req->body_path ? " from '" : "", req->body_path ? req->body_path : "",
                               req->body_path ? "'" : "");
      else if (t.write_errno)
        ret = kiln_fail_errno (err, t.write_errno, "%s %s: write '%s'", method, shown, req->response_path);
      else if (t.too_big)
        ret = kiln_fail (err, "%s %s: response body larger than %zu bytes", method, shown, t.max_body);
      else
        ret = kiln_error_set (err, rc == CURLE_OPERATION_TIMEDOUT ? KILN_ERR_TIMEOUT : KILN_ERR_IO, 0, "%s %s: %s",
                              method, shown, errbuf[0] ? errbuf : curl_easy_strerror (rc));
      goto out;
    }
  if (resp->status == 0)
    {
      ret = kiln_fail (err, "%s %s: no HTTP response", method, shown);
      goto out;
    }
  if (t.tmp_fd >= 0 && resp->status >= 200 && resp->status < 300)
    {
      if (fsync (t.tmp_fd) < 0)
        {
          ret = kiln_fail_errno (err, errno, "%s %s: write '%s'", method, shown, req->response_path);
          goto out;
        }
      int fd = t.tmp_fd;
      t.tmp_fd = -1;
      if (close (fd) < 0)
        {
          ret = kiln_fail_errno (err, errno, "%s %s: write '%s'", method, shown, req->response_path);
          goto out;
        }
      /* mkostemp made it 0600; a downloaded file gets the usual mode. */
      mode_t mask = umask (0);
      umask (mask);
      if (chmod (t.tmp_path, 0666 & ~mask) < 0 || rename (t.tmp_path, req->response_path) < 0)
        {
          ret = kiln_fail_errno (err, errno, "%s %s: rename into '%s'", method, shown, req->response_path);
          goto out;
        }
      free (t.tmp_path);
      t.tmp_path = NULL;
    }

out:
  if (t.tmp_fd >= 0)
    close (t.tmp_fd);
  if (t.tmp_path)
    {
      unlink (t.tmp_path);
      free (t.tmp_path);
    }
  if (resp->body.data == NULL)
    kiln_buf_append (&resp->body, "", 0);
  return ret;
}
