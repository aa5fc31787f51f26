/* server.c - libmicrohttpd glue (server.h).
 *
 * libmicrohttpd decodes the URL it hands the access handler ('+' in the query
 * becomes a space), but SigV4 signs the query as sent, so the raw request
 * line is taken from the URI log callback, which runs first and whose return
 * value becomes the connection's per-request context.
 *
 * Bodies are read whole into memory, up to EMU_MAX_BODY, except those a
 * service takes as they arrive (S3 object data, PutObject and UploadPart:
 * several GiB): when the request's head shows one (emu_service_streaming),
 * each piece goes to that service's body_feed (S3 decodes it into a
 * temporary file), so memory stays bounded.
 * A body cut short (the client went away before Content-Length) never
 * reaches kiln_emu_handle, and its file is removed when libmicrohttpd
 * reports the request finished.  A costly body is not read at all before
 * its head authenticates, and slow heads are cut (conn_guard.h).  Replies may be a file's range (GetObject),
 * sent from the descriptor. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cleanup.h"
#include "conn_guard.h"
#include "dispatch.h"
#include "log.h"
#include "services.h"
#include "xalloc.h"

struct emu_server {
  struct MHD_Daemon *daemon;
  struct kiln_emu *emu;
  struct emu_conn_guard *guard;
};

/* Connection limits (conn_guard.h).  Every client is on loopback in tests
 * and on most users' machines, so the per-address cap is the whole
 * server's but for room kept free. */
#define CONNECTION_LIMIT 1000u
#define CONNECTION_LIMIT_PER_ADDRESS 800u
#define HEADER_DEADLINE_MS 10000
#define IDLE_DEADLINE_MS 60000
#define MAX_WAITING_FOR_HEAD 256u

struct header_list {
  struct kiln_sigv4_pair *items;
  size_t n;
};

/* One request being received. */
struct pending {
  char *raw_uri;
  char *path;                   /* decoded, before '?' */
  struct kiln_sigv4_pair *query;
  size_t n_query;
  struct header_list headers;
  struct kiln_buf body;
  const struct emu_service *streamer; /* the service taking the body as it arrives, or NULL */
  struct emu_upload *upload;    /* its stream (S3 object data), not body */
  bool started;     /* the access handler has seen the request once */
  bool too_large;
};

/* ---- body buffers kept for the next request ----
 *
 * Bodies of about the same size come one after another (PutSnapshotBlock:
 * 512 KiB each); a fresh buffer costs a page fault per page as it is
 * filled.  Each of libmicrohttpd's threads keeps the last body buffer it
 * released, up to SPARE_BODY_MAX bytes, for its next request.  A request
 * is received and completed on the thread that owns its connection. */
#define SPARE_BODY_MAX (1024u * 1024 + 1)

/* Bodies larger than this (or of unknown length) wait for the head to
 * authenticate before a byte of them is read. */
#define EARLY_CHECK_BYTES (64u * 1024)

struct spare_body {
  char *data;
  size_t cap;
};

static pthread_key_t spare_key;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;

static void
spare_free (void *v)
{
  struct spare_body *s = v;
  free (s->data);
  free (s);
}

static void
spare_init (void)
{
  if (pthread_key_create (&spare_key, spare_free) != 0)
    abort ();
}

/* A buffer of at least cap bytes for a body: this thread's spare when it is
 * large enough, else a new one. */
static void
body_reserve (struct kiln_buf *b, size_t cap)
{
  pthread_once (&spare_once, spare_init);
  struct spare_body *s = pthread_getspecific (spare_key);
  if (s && s->data && s->cap >= cap)
    {
      b->data = s->data;
      b->cap = s->cap;
      s->data = NULL;
    }
  else
    {
      b->data = malloc (cap);
      if (b->data == NULL)
        abort ();
      b->cap = cap;
    }
  b->data[0] = '\0';
  b->len = 0;
}

/* Releases a body, keeping its buffer as this thread's spare when it is
 * not too large and larger than the spare held. */
static void
body_release (struct kiln_buf *b)
{
  pthread_once (&spare_once, spare_init);
  struct spare_body *s = pthread_getspecific (spare_key);
  if (b->data && b->cap <= SPARE_BODY_MAX && (s == NULL || s->data == NULL || s->cap < b->cap))
    {
      if (s == NULL)
        {
          s = kiln_xcalloc (1, sizeof *s);
          if (pthread_setspecific (spare_key, s) != 0)
            abort ();
        }
      free (s->data);
      s->data = b->data;
      s->cap = b->cap;
      *b = (struct kiln_buf) KILN_BUF_INIT;
    }
  kiln_buf_release (b);
}

/* The guard's handle of con (conn_guard.h), or NULL. */
static struct emu_conn *
conn_of (struct MHD_Connection *con)
{
  const union MHD_ConnectionInfo *info = MHD_get_connection_info (con, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return info ? info->socket_context : NULL;
}

static void
connection_notified (void *cls, struct MHD_Connection *con, void **socket_context,
                     enum MHD_ConnectionNotificationCode code)
{
  struct emu_server *s = cls;
  if (code == MHD_CONNECTION_NOTIFY_STARTED)
    {
      const union MHD_ConnectionInfo *fd = MHD_get_connection_info (con, MHD_CONNECTION_INFO_CONNECTION_FD);
      *socket_context = fd ? emu_conn_opened (s->guard, fd->connect_fd) : NULL;
    }
  else
    {
      emu_conn_closed (s->guard, *socket_context);
      *socket_context = NULL;
    }
}

static void *
uri_logged (void *cls, const char *uri, struct MHD_Connection *con)
{
  struct emu_server *s = cls;
  emu_conn_request_line (s->guard, conn_of (con));
  struct pending *p = kiln_xcalloc (1, sizeof *p);
  p->raw_uri = kiln_xstrdup (uri ? uri : "/");
  return p;
}

static void
request_completed (void *cls, struct MHD_Connection *con, void **con_cls, enum MHD_RequestTerminationCode toe)
{
  struct emu_server *s = cls;
  emu_conn_request_done (s->guard, conn_of (con));
  struct pending *p = *con_cls;
  if (p == NULL)
    return;
  free (p->raw_uri);
  free (p->path);
  kiln_sigv4_pairs_free (p->query, p->n_query);
  kiln_sigv4_pairs_free (p->headers.items, p->headers.n);
  body_release (&p->body);
  if (p->streamer)
    p->streamer->body_free (p->upload);
  free (p);
  *con_cls = NULL;
}

static enum MHD_Result
collect_header (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
  struct header_list *h = cls;
  h->items = realloc (h->items, (h->n + 1) * sizeof *h->items);
  if (h->items == NULL)
    abort ();
  h->items[h->n].name = kiln_xstrdup (key);
  h->items[h->n].value = kiln_xstrdup (value ? value : "");
  h->n++;
  return MHD_YES;
}

/* Queues r; a body from a file passes its descriptor to libmicrohttpd. */
static enum MHD_Result
send_response (struct MHD_Connection *con, struct emu_response *r)
{
  struct MHD_Response *resp;
  if (r->body_from_file && r->body_length > 0)
    {
      resp = MHD_create_response_from_fd_at_offset64 (r->body_length, r->body_fd, r->body_offset);
      if (resp)
        r->body_from_file = false;
    }
  else if (r->body.cap > 0 && r->body.len > 0)
    {
      /* A body the response owns (cap > 0: kiln_buf allocated it) is handed
       * over rather than copied (GetSnapshotBlock: 512 KiB); libmicrohttpd
       * frees it once sent. */
      resp = MHD_create_response_from_buffer (r->body.len, r->body.data, MHD_RESPMEM_MUST_FREE);
      if (resp)
        r->body = (struct kiln_buf) KILN_BUF_INIT;
    }
  else
    resp = MHD_create_response_from_buffer (r->body.len, r->body.data ? r->body.data : (void *) "",
                                            MHD_RESPMEM_MUST_COPY);
  if (resp == NULL)
    return MHD_NO;
  if (r->content_type)
    MHD_add_response_header (resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
  for (size_t i = 0; i < r->n_headers; i++)
    MHD_add_response_header (resp, r->headers[i].name, r->headers[i].value);
  enum MHD_Result ret = MHD_queue_response (con, (unsigned) r->status, resp);
  MHD_destroy_response (resp);
  return ret;
}

static enum MHD_Result
send_too_large (struct MHD_Connection *con)
{
  static const char body[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>"
                             "<Code>RequestEntityTooLarge</Code><Message>Request bodies are limited to 10485760 "
                             "bytes.</Message></Error></Errors><RequestID></RequestID></Response>";
  struct emu_response r = {.status = 413, .content_type = (char *) "text/xml;charset=UTF-8"};
  r.body.data = (char *) body;
  r.body.len = sizeof body - 1;
  return send_response (con, &r);
}

static enum MHD_Result
access_handler (void *cls, struct MHD_Connection *con, const char *url, const char *method, const char *version,
                const char *upload_data, size_t *upload_data_size, void **con_cls)
{
  struct emu_server *s = cls;
  struct pending *p = *con_cls;
  if (p == NULL)
    return MHD_NO;
  const char *q = strchr (p->raw_uri, '?');
  if (!p->started)
    {
      p->started = true;
      emu_conn_head_done (s->guard, conn_of (con));
      /* The raw request target: path before '?', query after. */
      size_t path_len = q ? (size_t) (q - p->raw_uri) : strlen (p->raw_uri);
      p->path = kiln_sigv4_uri_decode (p->raw_uri, path_len, false, NULL);
      if (q)
        kiln_sigv4_parse_query (q + 1, &p->query, &p->n_query);
      MHD_get_connection_values (con, MHD_HEADER_KIND, collect_header, &p->headers);
      struct emu_request head = {
        .method = method,
        .path = p->path,
        .raw_query = q ? q + 1 : NULL,
        .query = p->query,
        .n_query = p->n_query,
        .headers = p->headers.items,
        .n_headers = p->headers.n,
        .body = "",
      };
      const char *length = MHD_lookup_connection_value (con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
      unsigned long long declared = length ? strtoull (length, NULL, 10) : 0;
      bool chunked = MHD_lookup_connection_value (con, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
      /* A body that costs something (object data streamed to disk, more
       * than EARLY_CHECK_BYTES, or of unknown length) is neither read,
       * stored nor held before the head authenticates: an unknown key, a
       * bad scope or date, or a wrong signature over a declared payload
       * hash is refused at once (the connection then closes: its body was
       * not read).  A small body is read as it is, so an error reply keeps
       * a keep-alive connection open. */
      p->streamer = emu_service_streaming (&head);
      if (p->streamer || declared > EARLY_CHECK_BYTES || (length == NULL && chunked))
        {
          head.head_only = true;
          struct emu_response early;
          kiln_emu_handle (s->emu, &head, &early);
          if (early.status != 0)
            {
              kiln_log_debug ("emulator: %s %s -> %d before its body", method, p->raw_uri, early.status);
              enum MHD_Result ret = send_response (con, &early);
              emu_response_release (&early);
              return ret;
            }
          emu_response_release (&early);
          head.head_only = false;
        }
      if (p->streamer)
        p->upload = p->streamer->body_begin (s->emu, &head);
      if (p->upload == NULL && declared > EMU_MAX_BODY)
        return send_too_large (con); /* at once, not after reading it */
      else if (p->upload == NULL && declared > 0)
        {
          /* The whole body in one allocation, not grown by doubling as it
           * arrives (an EBS block is 512 KiB: growing copies it twice). */
          body_reserve (&p->body, (size_t) declared + 1);
        }
      return MHD_YES;
    }
  if (*upload_data_size > 0)
    {
      if (p->upload)
        {
          p->streamer->body_feed (p->upload, upload_data, *upload_data_size);
          *upload_data_size = 0;
          return MHD_YES;
        }
      if (!p->too_large && p->body.len + *upload_data_size > EMU_MAX_BODY)
        {
          p->too_large = true;
          kiln_buf_release (&p->body);
        }
      if (!p->too_large)
        kiln_buf_append (&p->body, upload_data, *upload_data_size);
      *upload_data_size = 0;
      return MHD_YES;
    }
  if (p->too_large)
    return send_too_large (con);
  if (p->upload)
    p->streamer->body_finish (p->upload);

  struct emu_request req = {
    .method = method,
    .path = p->path,
    .raw_query = q ? q + 1 : NULL,
    .query = p->query,
    .n_query = p->n_query,
    .headers = p->headers.items,
    .n_headers = p->headers.n,
    .body = p->body.data ? p->body.data : "",
    .body_len = p->body.len,
    .upload = p->upload,
  };
  struct emu_response resp;
  kiln_emu_handle (s->emu, &req, &resp);
  /* Answered: an upload's file was published or is to go, before the
   * client sees the reply. */
  if (p->upload)
    p->streamer->body_free (p->upload);
  p->upload = NULL;
  kiln_log_debug ("emulator: %s %s -> %d", method, p->raw_uri, resp.status);
  enum MHD_Result ret = send_response (con, &resp);
  emu_response_release (&resp);
  return ret;
}

static void
mhd_log (void *cls, const char *fmt, va_list ap)
{
  char msg[512];
  vsnprintf (msg, sizeof msg, fmt, ap);
  size_t n = strlen (msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
    msg[--n] = '\0';
  kiln_log_debug ("libmicrohttpd: %s", msg);
}

int
emu_server_start (struct kiln_emu *emu, const char *listen, unsigned threads, struct emu_server **out, char **url,
                  kiln_error **err)
{
  const char *colon = strrchr (listen, ':');
  if (colon == NULL || colon == listen)
    return kiln_fail_invalid (err, "--listen '%s': expected HOST:PORT", listen);
  _cleanup_free_ char *host = kiln_xstrndup (listen, (size_t) (colon - listen));
  char *end;
  errno = 0;
  long port = strtol (colon + 1, &end, 10);
  if (*end != '\0' || colon[1] == '\0' || errno || port < 0 || port > 65535)
    return kiln_fail_invalid (err, "--listen '%s': bad port", listen);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons ((uint16_t) port)};
  if (strcmp (host, "localhost") == 0)
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  else if (inet_pton (AF_INET, host, &addr.sin_addr) != 1)
    return kiln_fail_invalid (err, "--listen '%s': '%s' is not an IPv4 address", listen, host);

  struct emu_server *s = kiln_xcalloc (1, sizeof *s);
  s->emu = emu;
  const struct emu_conn_limits limits = {.header_deadline_ms = HEADER_DEADLINE_MS,
                                         .idle_deadline_ms = IDLE_DEADLINE_MS,
                                         .max_waiting = MAX_WAITING_FOR_HEAD};
  s->guard = emu_conn_guard_new (&limits);
  if (s->guard == NULL)
    {
      free (s);
      return kiln_fail (err, "start the connection guard's thread");
    }
  /* poll(2): more connections than select(2) can watch. */
  s->daemon = MHD_start_daemon (MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, access_handler, s,
                                MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                                MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr,
                                MHD_OPTION_THREAD_POOL_SIZE, threads > 0 ? threads : 4u,
                                MHD_OPTION_URI_LOG_CALLBACK, uri_logged, s,
                                MHD_OPTION_NOTIFY_COMPLETED, request_completed, s,
                                MHD_OPTION_NOTIFY_CONNECTION, connection_notified, s,
                                MHD_OPTION_CONNECTION_TIMEOUT, 120u,
                                MHD_OPTION_CONNECTION_LIMIT, CONNECTION_LIMIT,
                                MHD_OPTION_PER_IP_CONNECTION_LIMIT, CONNECTION_LIMIT_PER_ADDRESS,
                                MHD_OPTION_END);
  if (s->daemon == NULL)
    {
      int e = errno;
      emu_conn_guard_free (s->guard);
      free (s);
      return kiln_error_set (err, KILN_ERR_IO, e, "listen on %s", listen);
    }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info (s->daemon, MHD_DAEMON_INFO_BIND_PORT);
  unsigned bound = info ? info->port : (unsigned) port;
  *url = kiln_xasprintf ("http://%s:%u", host, bound);
  *out = s;
  return 0;
}

void
emu_server_stop (struct emu_server *s)
{
  if (s == NULL)
    return;
  MHD_stop_daemon (s->daemon);
  emu_conn_guard_free (s->guard);
  free (s);
}
