/* qmp.c - the QEMU JSON line channel and the QMP client (see qmp.h).
 *
 * The channel's socket is non-blocking; every send and read goes through
 * poll() with the caller's deadline, so nothing here can block longer than
 * asked.  Received bytes accumulate in one buffer; a line is handed out once
 * its '\n' has arrived, whatever the split of the reads was, and the consumed
 * prefix is dropped lazily (moved down only when it is at least half of the
 * buffer) so a burst of short lines costs no copying per line.
 *
 * QMP's own rules (from QEMU's qmp-spec): the server greets with
 * {"QMP": {"version": ..., "capabilities": [...]}} and accepts only
 * qmp_capabilities until negotiation; replies are {"return": ...} or
 * {"error": {"class": ..., "desc": ...}} and echo the request's "id";
 * events {"event": NAME, "data": ..., "timestamp": ...} can come at any time,
 * including between a command and its reply. */
#include "qmp.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "xalloc.h"
#include "clock.h"

#define READ_CHUNK 65536
/* Connection attempts while the socket does not exist yet. */
#define CONNECT_RETRY_MIN_MS 10
#define CONNECT_RETRY_MAX_MS 100

/* --- the line channel ----------------------------------------------------- */

int64_t
kiln_qemu_deadline (int timeout_ms)
{
  return timeout_ms < 0 ? 0 : kiln_monotonic_ms () + timeout_ms;
}

/* Milliseconds left until deadline for poll(): -1 without a deadline. */
static int
remaining_ms (int64_t deadline)
{
  if (deadline == 0)
    return -1;
  int64_t left = deadline - kiln_monotonic_ms ();
  if (left < 0)
    return 0;
  return left > INT32_MAX ? INT32_MAX : (int) left;
}

static void
sleep_ms (int ms)
{
  struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000};
  while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
    ;
}

void
kiln_qemu_chan_adopt (struct kiln_qemu_chan *c, int fd, const char *peer)
{
  c->fd = fd;
  c->peer = kiln_xstrdup (peer);
  c->in = (struct kiln_buf) KILN_BUF_INIT;
  c->start = 0;
  int flags = fcntl (fd, F_GETFL);
  if (flags >= 0)
    fcntl (fd, F_SETFL, flags | O_NONBLOCK);
}

int
kiln_qemu_chan_connect (struct kiln_qemu_chan *c, const char *path, const char *peer, int timeout_ms,
                        kiln_error **err)
{
  c->fd = -1;
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  size_t path_len = strlen (path);
  if (path_len >= sizeof addr.sun_path)
    return kiln_fail_invalid (err, "%s socket path '%s' is too long (%zu bytes; unix sockets allow %zu)", peer,
                              path, path_len, sizeof addr.sun_path - 1);
  memcpy (addr.sun_path, path, path_len + 1);

  int64_t deadline = kiln_qemu_deadline (timeout_ms);
  int pause = CONNECT_RETRY_MIN_MS;
  for (;;)
    {
      _cleanup_close_ int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0)
        return kiln_fail_errno (err, errno, "create a socket for %s", peer);
      int r;
      do
        r = connect (fd, (struct sockaddr *) &addr, sizeof addr);
      while (r < 0 && errno == EINTR);
      if (r == 0)
        {
          kiln_qemu_chan_adopt (c, kiln_steal_fd (&fd), peer);
          return 0;
        }
      int saved = errno;
      bool not_yet = saved == ENOENT || saved == ECONNREFUSED;
      if (!not_yet || (deadline && kiln_monotonic_ms () + pause > deadline))
        return kiln_error_set (err, not_yet ? KILN_ERR_TIMEOUT : KILN_ERR_IO, saved, "connect to %s at '%s'", peer,
                               path);
      sleep_ms (pause);
      pause = pause * 2 > CONNECT_RETRY_MAX_MS ? CONNECT_RETRY_MAX_MS : pause * 2;
    }
}

int
kiln_qemu_chan_send (struct kiln_qemu_chan *c, const void *data, size_t len, int64_t deadline, kiln_error **err)
{
  const char *p = data;
  if (c->fd < 0)
    return kiln_error_set (err, KILN_ERR_IO, 0, "send to %s: not connected", c->peer);
  while (len > 0)
    {
      ssize_t n = send (c->fd, p, len, MSG_NOSIGNAL);
      if (n > 0)
        {
          p += n;
          len -= (size_t) n;
          continue;
        }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        return kiln_fail_errno (err, errno, "send to %s", c->peer);
      struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
      int r = poll (&pfd, 1, remaining_ms (deadline));
      if (r < 0 && errno != EINTR)
        return kiln_fail_errno (err, errno, "wait to send to %s", c->peer);
      if (r == 0)
        return kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "%s is not reading what is sent to it", c->peer);
    }
  return 0;
}

int
kiln_qemu_chan_send_json (struct kiln_qemu_chan *c, json_t *msg, int64_t deadline, kiln_error **err)
{
  _cleanup_free_ char *text = json_dumps (msg, JSON_COMPACT);
  if (text == NULL)
    return kiln_fail (err, "encode a message for %s", c->peer);
  size_t len = strlen (text);
  /* One write for the line where it fits: a reader sees it whole sooner. */
  char *line = realloc (text, len + 2);
  if (line == NULL)
    abort ();
  text = line;
  memcpy (text + len, "\n", 2);
  return kiln_qemu_chan_send (c, text, len + 1, deadline, err);
}

/* Drops the consumed prefix once it is at least half of what is held. */
static void
compact (struct kiln_qemu_chan *c)
{
  if (c->start == 0)
    return;
  if (c->start == c->in.len)
    {
      c->in.len = 0;
      c->start = 0;
      c->in.data[0] = '\0';
      return;
    }
  if (c->start * 2 < c->in.len)
    return;
  memmove (c->in.data, c->in.data + c->start, c->in.len - c->start);
  c->in.len -= c->start;
  c->in.data[c->in.len] = '\0';
  c->start = 0;
}

int
kiln_qemu_chan_read_line (struct kiln_qemu_chan *c, int64_t deadline, char **line, size_t *len, kiln_error **err)
{
  if (c->fd < 0)
    return kiln_error_set (err, KILN_ERR_IO, 0, "read from %s: not connected", c->peer);
  size_t scanned = c->start;
  for (;;)
    {
      char *nl = c->in.len > scanned ? memchr (c->in.data + scanned, '\n', c->in.len - scanned) : NULL;
      if (nl)
        {
          char *begin = c->in.data + c->start;
          size_t n = (size_t) (nl - begin);
          *nl = '\0';
          if (n > 0 && begin[n - 1] == '\r')
            begin[--n] = '\0';
          c->start = (size_t) (nl - c->in.data) + 1;
          *line = begin;
          *len = n;
          return 0;
        }
      if (c->in.len - c->start > KILN_QEMU_CHAN_MAX_LINE)
        return kiln_error_set (err, KILN_ERR_REMOTE, 0, "%s sent a line longer than %u bytes", c->peer,
                               KILN_QEMU_CHAN_MAX_LINE);
      /* Every held byte was searched: only new ones need looking at. */
      compact (c);
      scanned = c->in.len;

      char chunk[READ_CHUNK];
      ssize_t n = read (c->fd, chunk, sizeof chunk);
      if (n > 0)
        {
          kiln_buf_append (&c->in, chunk, (size_t) n);
          continue;
        }
      if (n == 0)
        return kiln_error_set (err, KILN_ERR_IO, 0, "%s closed the connection", c->peer);
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        return kiln_fail_errno (err, errno, "read from %s", c->peer);
      struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
      int r = poll (&pfd, 1, remaining_ms (deadline));
      if (r < 0 && errno != EINTR)
        return kiln_fail_errno (err, errno, "wait for %s", c->peer);
      if (r == 0)
        return kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "%s did not answer in time", c->peer);
    }
}

void
kiln_qemu_chan_close (struct kiln_qemu_chan *c)
{
  if (c->fd >= 0)
    close (c->fd);
  c->fd = -1;
  kiln_buf_release (&c->in);
  c->start = 0;
  free (c->peer);
  c->peer = NULL;
}

/* --- QMP ------------------------------------------------------------------ */

struct kiln_qmp {
  struct kiln_qemu_chan chan;
  json_t *greeting;
  json_t *events;      /* array, oldest first */
  json_int_t next_id;
};

/* "N s" for messages. */
static double
seconds (int timeout_ms)
{
  return timeout_ms / 1000.0;
}

/* The next JSON object from QEMU; blank lines are skipped. */
static int
read_message (struct kiln_qmp *q, int64_t deadline, json_t **msg, kiln_error **err)
{
  for (;;)
    {
      char *line;
      size_t len;
      if (kiln_qemu_chan_read_line (&q->chan, deadline, &line, &len, err) < 0)
        return -1;
      if (len == 0)
        continue;
      json_error_t je;
      json_t *value = json_loadb (line, len, 0, &je);
      if (value == NULL || !json_is_object (value))
        {
          json_decref (value);
          return kiln_error_set (err, KILN_ERR_REMOTE, 0, "QMP sent something that is not a JSON object: %.80s",
                                 line);
        }
      *msg = value;
      return 0;
    }
}

static void
record_event (struct kiln_qmp *q, json_t *event)
{
  kiln_log_debug ("QMP event %s", json_string_value (json_object_get (event, "event")));
  json_array_append (q->events, event);
  while (json_array_size (q->events) > KILN_QMP_MAX_EVENTS)
    json_array_remove (q->events, 0);
}

static int
negotiate (struct kiln_qmp *q, int timeout_ms, kiln_error **err)
{
  int64_t deadline = kiln_qemu_deadline (timeout_ms);
  _cleanup_json_ json_t *msg = NULL;
  if (read_message (q, deadline, &msg, err) < 0)
    {
      if (*err && (*err)->code == KILN_ERR_TIMEOUT)
        return kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "QMP sent no greeting within %g s", seconds (timeout_ms));
      return kiln_error_prefix (err, "read the QMP greeting");
    }
  json_t *greeting = json_object_get (msg, "QMP");
  if (!json_is_object (greeting))
    return kiln_error_set (err, KILN_ERR_REMOTE, 0, "QMP greeting lacks its \"QMP\" object");
  q->greeting = json_incref (greeting);
  int left = remaining_ms (deadline);
  return kiln_qmp_execute (q, "qmp_capabilities", NULL, NULL, left, err);
}

static struct kiln_qmp *
qmp_new (void)
{
  struct kiln_qmp *q = calloc (1, sizeof *q);
  if (q == NULL)
    abort ();
  q->chan.fd = -1;
  q->events = json_array ();
  q->next_id = 1;
  return q;
}

int
kiln_qmp_connect (const char *socket_path, int timeout_ms, struct kiln_qmp **out, kiln_error **err)
{
  *out = NULL;
  int64_t deadline = kiln_qemu_deadline (timeout_ms);
  struct kiln_qmp *q = qmp_new ();
  if (kiln_qemu_chan_connect (&q->chan, socket_path, "QMP", timeout_ms, err) < 0
      || negotiate (q, remaining_ms (deadline), err) < 0)
    {
      kiln_qmp_close (q);
      return -1;
    }
  *out = q;
  return 0;
}

int
kiln_qmp_open_fd (int fd, int timeout_ms, struct kiln_qmp **out, kiln_error **err)
{
  *out = NULL;
  struct kiln_qmp *q = qmp_new ();
  kiln_qemu_chan_adopt (&q->chan, fd, "QMP");
  if (negotiate (q, timeout_ms, err) < 0)
    {
      kiln_qmp_close (q);
      return -1;
    }
  *out = q;
  return 0;
}

int
kiln_qmp_execute (struct kiln_qmp *q, const char *command, json_t *arguments, json_t **ret, int timeout_ms,
                  kiln_error **err)
{
  if (ret)
    *ret = NULL;
  int64_t deadline = kiln_qemu_deadline (timeout_ms);
  json_int_t id = q->next_id++;
  _cleanup_json_ json_t *request = json_pack ("{s:s, s:I}", "execute", command, "id", id);
  if (arguments)
    json_object_set (request, "arguments", arguments);
  if (kiln_qemu_chan_send_json (&q->chan, request, deadline, err) < 0)
    return kiln_error_prefix (err, "send QMP command '%s'", command);

  for (;;)
    {
      _cleanup_json_ json_t *msg = NULL;
      if (read_message (q, deadline, &msg, err) < 0)
        {
          if (*err && (*err)->code == KILN_ERR_TIMEOUT)
            return kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "QMP did not answer '%s' within %g s", command,
                                   seconds (timeout_ms));
          return kiln_error_prefix (err, "QMP command '%s'", command);
        }
      if (json_object_get (msg, "event"))
        {
          record_event (q, msg);
          continue;
        }
      json_t *reply_id = json_object_get (msg, "id");
      if (!json_is_integer (reply_id) || json_integer_value (reply_id) != id)
        {
          kiln_log_debug ("QMP: skipping a reply that is not for '%s'", command);
          continue;
        }
      json_t *error = json_object_get (msg, "error");
      if (error)
        {
          const char *cls = json_string_value (json_object_get (error, "class"));
          const char *desc = json_string_value (json_object_get (error, "desc"));
          return kiln_error_set (err, KILN_ERR_REMOTE, 0, "QMP command '%s' failed: %s: %s", command,
                                 cls ? cls : "Error", desc ? desc : "(no description)");
        }
      json_t *value = json_object_get (msg, "return");
      if (value == NULL)
        return kiln_error_set (err, KILN_ERR_REMOTE, 0, "QMP reply to '%s' has neither return nor error", command);
      if (ret)
        *ret = json_incref (value);
      return 0;
    }
}

/* Index of the first queued event named name, or -1. */
static ssize_t
find_event (struct kiln_qmp *q, const char *name)
{
  size_t i;
  json_t *event;
  json_array_foreach (q->events, i, event)
    {
      const char *n = json_string_value (json_object_get (event, "event"));
      if (n && strcmp (n, name) == 0)
        return (ssize_t) i;
    }
  return -1;
}

int
kiln_qmp_wait_event (struct kiln_qmp *q, const char *name, int timeout_ms, json_t **event, kiln_error **err)
{
  if (event)
    *event = NULL;
  ssize_t at = find_event (q, name);
  if (at >= 0)
    {
      if (event)
        *event = json_incref (json_array_get (q->events, (size_t) at));
      for (ssize_t i = 0; i <= at; i++)
        json_array_remove (q->events, 0);
      return 0;
    }
  int64_t deadline = kiln_qemu_deadline (timeout_ms);
  for (;;)
    {
      _cleanup_json_ json_t *msg = NULL;
      if (read_message (q, deadline, &msg, err) < 0)
        {
          if (*err && (*err)->code == KILN_ERR_TIMEOUT)
            return kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "QMP sent no %s event within %g s", name,
                                   seconds (timeout_ms));
          return kiln_error_prefix (err, "wait for QMP event %s", name);
        }
      const char *n = json_string_value (json_object_get (msg, "event"));
      if (n == NULL)
        continue; /* a late reply to a command that timed out */
      if (strcmp (n, name) == 0)
        {
          /* What came before it is of the past, as for a queued one. */
          json_array_clear (q->events);
          if (event)
            *event = kiln_steal_pointer (&msg);
          return 0;
        }
      record_event (q, msg);
    }
}

void
kiln_qmp_clear_events (struct kiln_qmp *q)
{
  json_array_clear (q->events);
}

json_t *
kiln_qmp_events (struct kiln_qmp *q)
{
  return q->events;
}

json_t *
kiln_qmp_greeting (struct kiln_qmp *q)
{
  return q->greeting;
}

void
kiln_qmp_close (struct kiln_qmp *q)
{
  if (q == NULL)
    return;
  kiln_qemu_chan_close (&q->chan);
  json_decref (q->greeting);
  json_decref (q->events);
  free (q);
}
