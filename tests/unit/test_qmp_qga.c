/* test_qmp_qga.c - the QMP and guest agent clients against scripted peers,
 * without a VM (TAP output).
 *
 * Usage: test_qmp_qga DATA_DIR (tests; DATA_DIR holds qmp/ and qga/ with
 * replies recorded from QEMU 7.2 and its qemu-ga).
 *
 * A peer thread plays QEMU's side of a socketpair: for each request line it
 * reads it either follows a script (expected command, reply text) or calls a
 * handler.  Reply texts may hold $ID (the request's id), $PREV (the id of the
 * request before it), $SYNC (the id
 * argument of the last guest-sync-delimited) and \xff bytes, and can be sent
 * in small pieces with pauses, so lines arrive split across reads.  The
 * wrapper script kiln_qga_run sends to guests is run here on the host with
 * /bin/sh, since it is plain POSIX sh. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "buf.h"
#include "cleanup.h"
#include "digest.h"
#include "fsutil.h"
#include "process.h"
#include "qemu/qga.h"
#include "qemu/qmp.h"
#include "tap.h"
#include "xalloc.h"

static const char *data_dir;




static void
sleep_ms (int ms)
{
  struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000};
  nanosleep (&ts, NULL);
}

/* --- the scripted peer ---------------------------------------------------- */

struct step {
  const char *expect;  /* the command the client must send next */
  const char *reply;   /* what to answer (placeholders expanded), NULL: nothing */
  int delay_ms;        /* pause before answering */
};

struct peer;
typedef void (*peer_handler) (struct peer *p, json_t *request, bool delimited);

struct peer {
  int fd;
  const char *preamble;      /* sent before reading (QMP's greeting) */
  const struct step *steps;
  size_t n_steps;
  size_t at;
  peer_handler handler;      /* used instead of steps when set */
  size_t split;              /* send in pieces of this many bytes (0: whole) */
  json_int_t last_id;
  json_int_t prev_id;        /* the id of the request before the last */
  json_int_t last_sync;
  bool saw_delimiter;        /* some sync request began with 0xFF */
  char failure[512];
  pthread_t thread;
  /* State for handlers. */
  int polls;
  bool killed;
  char killer_script[512];
  char killer_target[32];
  struct kiln_buf written;   /* guest-file-write data */
  int reads;
};

static void peer_fail (struct peer *p, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static void
peer_fail (struct peer *p, const char *fmt, ...)
{
  if (p->failure[0] != '\0')
    return;
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (p->failure, sizeof p->failure, fmt, ap);
  va_end (ap);
}

static void
send_raw (struct peer *p, const char *data, size_t len)
{
  size_t piece = p->split ? p->split : len;
  while (len > 0)
    {
      size_t n = len < piece ? len : piece;
      ssize_t w = send (p->fd, data, n, MSG_NOSIGNAL);
      if (w <= 0)
        return;
      data += w;
      len -= (size_t) w;
      if (p->split && len > 0)
        sleep_ms (1);
    }
}

/* Sends text with $ID and $SYNC replaced. */
static void
peer_send (struct peer *p, const char *text)
{
  struct kiln_buf b = KILN_BUF_INIT;
  for (const char *s = text; *s;)
    {
      if (strncmp (s, "$ID", 3) == 0)
        {
          kiln_buf_printf (&b, "%lld", (long long) p->last_id);
          s += 3;
        }
      else if (strncmp (s, "$PREV", 5) == 0)
        {
          kiln_buf_printf (&b, "%lld", (long long) p->prev_id);
          s += 5;
        }
      else if (strncmp (s, "$SYNC", 5) == 0)
        {
          kiln_buf_printf (&b, "%lld", (long long) p->last_sync);
          s += 5;
        }
      else
        kiln_buf_append (&b, s++, 1);
    }
  send_raw (p, b.data, b.len);
  kiln_buf_release (&b);
}

static void
script_handler (struct peer *p, json_t *request, bool delimited)
{
  (void) delimited;
  const char *command = json_string_value (json_object_get (request, "execute"));
  if (p->at >= p->n_steps)
    {
      peer_fail (p, "unexpected request '%s' after the script", command ? command : "?");
      return;
    }
  const struct step *s = &p->steps[p->at++];
  if (command == NULL || strcmp (command, s->expect) != 0)
    {
      peer_fail (p, "expected '%s'", s->expect);
      return;
    }
  if (s->delay_ms)
    sleep_ms (s->delay_ms);
  if (s->reply)
    peer_send (p, s->reply);
}

static void *
peer_main (void *opaque)
{
  struct peer *p = opaque;
  if (p->preamble)
    peer_send (p, p->preamble);
  struct kiln_buf in = KILN_BUF_INIT;
  size_t start = 0;
  for (;;)
    {
      char *nl = in.len > start ? memchr (in.data + start, '\n', in.len - start) : NULL;
      if (nl == NULL)
        {
          char chunk[65536];
          ssize_t n = read (p->fd, chunk, sizeof chunk);
          if (n <= 0)
            break;
          kiln_buf_append (&in, chunk, (size_t) n);
          continue;
        }
      char *line = in.data + start;
      size_t len = (size_t) (nl - line);
      start += len + 1;
      bool delimited = false;
      while (len > 0 && (unsigned char) *line == 0xFF)
        {
          delimited = true;
          line++;
          len--;
        }
      json_t *request = json_loadb (line, len, 0, NULL);
      if (request == NULL)
        {
          peer_fail (p, "unparsable request");
          continue;
        }
      json_t *id = json_object_get (request, "id");
      p->prev_id = p->last_id;
      p->last_id = json_integer_value (id);
      const char *command = json_string_value (json_object_get (request, "execute"));
      if (command && strcmp (command, "guest-sync-delimited") == 0)
        {
          p->last_sync = json_integer_value (json_object_get (json_object_get (request, "arguments"), "id"));
          p->saw_delimiter = p->saw_delimiter || delimited;
        }
      if (p->handler)
        p->handler (p, request, delimited);
      else
        script_handler (p, request, delimited);
      json_decref (request);
    }
  kiln_buf_release (&in);
  return NULL;
}

/* Starts a peer on one end of a socketpair; returns the client's end. */
static int
peer_start (struct peer *p)
{
  int fds[2];
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
    return -1;
  p->fd = fds[1];
  if (pthread_create (&p->thread, NULL, peer_main, p) != 0)
    return -1;
  return fds[0];
}

/* Waits for the peer (the client must have closed its end) and reports. */
static bool
peer_finish (struct peer *p)
{
  pthread_join (p->thread, NULL);
  close (p->fd);
  kiln_buf_release (&p->written);
  if (p->failure[0])
    printf ("# peer: %s\n", p->failure);
  if (!p->handler && p->at != p->n_steps)
    printf ("# peer: script stopped at step %zu of %zu\n", p->at, p->n_steps);
  return p->failure[0] == '\0' && (p->handler || p->at == p->n_steps);
}

static char *
data_file (const char *name)
{
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("%s/%s", data_dir, name);
  struct kiln_buf b = KILN_BUF_INIT;
  _cleanup_error_ kiln_error *err = NULL;
  if (kiln_read_file (path, &b, &err) < 0)
    {
      printf ("# %s\n", kiln_error_message (err));
      kiln_buf_release (&b);
      return NULL;
    }
  return kiln_buf_steal (&b);
}

/* --- QMP ------------------------------------------------------------------ */

static bool
test_qmp_session (void)
{
  _cleanup_free_ char *greeting = data_file ("qmp/greeting.txt");
  CHECK (greeting != NULL);
  struct step steps[] = {
    {"qmp_capabilities", "{\"return\": {}, \"id\": $ID}\r\n", 0},
    /* An event between command and reply, a stale reply, then ours. */
    {"query-status",
     "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\r\n"
     "{\"return\": {\"status\": \"old\"}, \"id\": 4242}\r\n"
     "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}, \"id\": $ID}\r\n",
     0},
    {"query-name",
     "{\"timestamp\": {\"seconds\": 3, \"microseconds\": 4}, \"event\": \"SHUTDOWN\", \"data\": {\"guest\": true, "
     "\"reason\": \"guest-reset\"}}\r\n"
     "{\"timestamp\": {\"seconds\": 3, \"microseconds\": 5}, \"event\": \"RESET\", \"data\": {\"guest\": true, "
     "\"reason\": \"guest-reset\"}}\r\n{\"return\": {\"name\": \"kiln\"}, \"id\": $ID}\r\n",
     0},
  };
  struct peer p = {.preamble = greeting, .steps = steps, .n_steps = 3, .split = 13};
  int fd = peer_start (&p);
  CHECK (fd >= 0);
  struct kiln_qmp *q = NULL;
  _cleanup_error_ kiln_error *err = NULL;
  bool ok = kiln_qmp_open_fd (fd, 5000, &q, &err) == 0;
  if (!ok)
    printf ("# %s\n", kiln_error_message (err));
  if (ok)
    {
      json_t *version = json_object_get (json_object_get (kiln_qmp_greeting (q), "version"), "qemu");
      ok = json_integer_value (json_object_get (version, "major")) == 7;
    }
  json_t *ret = NULL;
  if (ok)
    ok = kiln_qmp_execute (q, "query-status", NULL, &ret, 5000, &err) == 0
         && strcmp (json_string_value (json_object_get (ret, "status")), "running") == 0
         && json_array_size (kiln_qmp_events (q)) == 1;
  json_decref (ret);
  ret = NULL;
  if (ok)
    ok = kiln_qmp_execute (q, "query-name", NULL, &ret, 5000, &err) == 0 && json_array_size (kiln_qmp_events (q)) == 3;
  json_decref (ret);
  /* RESET is queued: taken with what came before it, STOP and SHUTDOWN. */
  json_t *event = NULL;
  if (ok)
    ok = kiln_qmp_wait_event (q, "RESET", 1000, &event, &err) == 0
         && strcmp (json_string_value (json_object_get (json_object_get (event, "data"), "reason")), "guest-reset") == 0
         && json_array_size (kiln_qmp_events (q)) == 0;
  json_decref (event);
  if (!ok)
    printf ("# %s\n", kiln_error_message (err));
  kiln_qmp_close (q);
  return peer_finish (&p) && ok;
}

static bool
test_qmp_error_and_timeout (void)
{
  struct step steps[] = {
    {"qmp_capabilities", "{\"return\": {}, \"id\": $ID}\n", 0},
    {"blockdev-add", "{\"id\": $ID, \"error\": {\"class\": \"GenericError\", \"desc\": \"Could not open 'x'\"}}\n", 0},
    {"query-hang", NULL, 0},
    /* The late reply to query-hang comes with the next command's. */
    {"query-kvm", "{\"return\": {\"late\": true}, \"id\": 3}\n{\"return\": {\"enabled\": false}, \"id\": $ID}\n", 0},
  };
  struct peer p = {.preamble = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n", .steps = steps, .n_steps = 4};
  int fd = peer_start (&p);
  CHECK (fd >= 0);
  struct kiln_qmp *q = NULL;
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (kiln_qmp_open_fd (fd, 5000, &q, &err) == 0);

  json_t *args = json_pack ("{s:s}", "node-name", "x");
  int r = kiln_qmp_execute (q, "blockdev-add", args, NULL, 5000, &err);
  json_decref (args);
  bool ok = r < 0 && err->code == KILN_ERR_REMOTE
            && strcmp (err->message, "QMP command 'blockdev-add' failed: GenericError: Could not open 'x'") == 0;
  printf ("# %s\n", kiln_error_message (err));
  kiln_error_freep (&err);

  double start = seconds_now ();
  r = kiln_qmp_execute (q, "query-hang", NULL, NULL, 300, &err);
  double elapsed = seconds_now () - start;
  printf ("# %s (after %.2f s)\n", kiln_error_message (err), elapsed);
  ok = ok && r < 0 && err->code == KILN_ERR_TIMEOUT && elapsed < 1.5
       && strcmp (err->message, "QMP did not answer 'query-hang' within 0.3 s") == 0;
  kiln_error_freep (&err);

  json_t *ret = NULL;
  ok = ok && kiln_qmp_execute (q, "query-kvm", NULL, &ret, 5000, &err) == 0
       && json_object_get (ret, "enabled") != NULL;
  json_decref (ret);

  /* No event arrives: a bounded wait. */
  start = seconds_now ();
  r = kiln_qmp_wait_event (q, "RESET", 200, NULL, &err);
  ok = ok && r < 0 && err->code == KILN_ERR_TIMEOUT && seconds_now () - start < 1.5;
  printf ("# %s\n", kiln_error_message (err));
  kiln_qmp_close (q);
  return peer_finish (&p) && ok;
}

/* A listener that appears only after a while: connect must retry. */
struct late_listener {
  char path[108];
  int delay_ms;
  struct peer *peer;
};

static void *
late_listen_main (void *opaque)
{
  struct late_listener *l = opaque;
  sleep_ms (l->delay_ms);
  int s = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  strcpy (addr.sun_path, l->path);
  if (bind (s, (struct sockaddr *) &addr, sizeof addr) < 0 || listen (s, 1) < 0)
    {
      close (s);
      return NULL;
    }
  int c = accept4 (s, NULL, NULL, SOCK_CLOEXEC);
  close (s);
  if (c < 0)
    return NULL;
  l->peer->fd = c;
  peer_main (l->peer);
  close (c);
  l->peer->fd = -1;
  return NULL;
}

static bool
test_qmp_connect_retries (void)
{
  struct step steps[] = {{"qmp_capabilities", "{\"return\": {}, \"id\": $ID}\n", 0}};
  struct peer p = {.preamble = "{\"QMP\": {\"version\": {}, \"capabilities\": [\"oob\"]}}\n", .steps = steps,
                   .n_steps = 1};
  struct late_listener l = {.delay_ms = 300, .peer = &p};
  snprintf (l.path, sizeof l.path, "/tmp/kiln-test-qmp-%d.sock", (int) getpid ());
  unlink (l.path);
  pthread_t t;
  CHECK (pthread_create (&t, NULL, late_listen_main, &l) == 0);
  struct kiln_qmp *q = NULL;
  _cleanup_error_ kiln_error *err = NULL;
  double start = seconds_now ();
  int r = kiln_qmp_connect (l.path, 5000, &q, &err);
  double elapsed = seconds_now () - start;
  printf ("# connected after %.2f s: %s\n", elapsed, r == 0 ? "ok" : kiln_error_message (err));
  kiln_qmp_close (q);
  pthread_join (t, NULL);
  unlink (l.path);

  /* Nobody ever listens: a timeout naming the socket. */
  _cleanup_error_ kiln_error *err2 = NULL;
  start = seconds_now ();
  int r2 = kiln_qmp_connect ("/tmp/kiln-test-no-such.sock", 200, &q, &err2);
  double elapsed2 = seconds_now () - start;
  printf ("# %s (after %.2f s)\n", kiln_error_message (err2), elapsed2);

  char long_path[200];
  memset (long_path, 'x', sizeof long_path - 1);
  long_path[0] = '/';
  long_path[sizeof long_path - 1] = '\0';
  _cleanup_error_ kiln_error *err3 = NULL;
  int r3 = kiln_qmp_connect (long_path, 200, &q, &err3);
  return r == 0 && elapsed >= 0.25 && r2 < 0 && err2->code == KILN_ERR_TIMEOUT && elapsed2 < 1.0 && r3 < 0
         && err3->code == KILN_ERR_INVALID && strstr (err3->message, "too long") != NULL;
}

/* --- the guest agent ------------------------------------------------------ */

static bool
test_qga_sync_skips_stale (void)
{
  /* Recorded: what a freshly booted qemu-ga sent after reading three queued
   * syncs (each 0xFF answered with a parse error), plus a leftover
   * guest-exec-status reply; ours comes last, split in small pieces. */
  _cleanup_free_ char *stale = data_file ("qga/stale-before-sync.txt");
  CHECK (stale != NULL);
  struct kiln_buf reply = KILN_BUF_INIT;
  kiln_buf_puts (&reply, stale);
  kiln_buf_puts (&reply, "\xff{\"return\": $SYNC, \"id\": $SYNC}\n");
  struct step steps[] = {
    {"guest-sync-delimited", reply.data, 0},
    {"guest-ping", "{\"return\": {}, \"id\": $ID}\n", 0},
    {"guest-info", "{\"return\": {\"version\": \"7.2.0\", \"supported_commands\": []}, \"id\": $ID}\n", 0},
  };
  struct peer p = {.steps = steps, .n_steps = 3, .split = 5};
  int fd = peer_start (&p);
  CHECK (fd >= 0);
  struct kiln_qga *g = kiln_qga_open_fd (fd);
  _cleanup_error_ kiln_error *err = NULL;
  bool ok = kiln_qga_sync (g, 5000, &err) == 0 && kiln_qga_synced (g);
  ok = ok && kiln_qga_ping (g, 5000, &err) == 0;
  json_t *info = NULL;
  ok = ok && kiln_qga_info (g, &info, 5000, &err) == 0
       && strcmp (json_string_value (json_object_get (info, "version")), "7.2.0") == 0;
  json_decref (info);
  if (!ok)
    printf ("# %s\n", kiln_error_message (err));
  kiln_qga_close (g);
  bool peer_ok = peer_finish (&p);
  kiln_buf_release (&reply);
  return peer_ok && ok && p.saw_delimiter;
}

static bool
test_qga_never_answers (void)
{
  struct step steps[] = {
    {"guest-sync-delimited", NULL, 0},
    /* The call syncs first (never synced): that sync is not answered either. */
    {"guest-sync-delimited", NULL, 0},
  };
  struct peer p = {.steps = steps, .n_steps = 2};
  int fd = peer_start (&p);
  CHECK (fd >= 0);
  struct kiln_qga *g = kiln_qga_open_fd (fd);
  _cleanup_error_ kiln_error *err = NULL;
  double start = seconds_now ();
  int r = kiln_qga_sync (g, 300, &err);
  double elapsed = seconds_now () - start;
  printf ("# %s (after %.2f s)\n", kiln_error_message (err), elapsed);
  bool ok = r < 0 && err->code == KILN_ERR_TIMEOUT && elapsed < 1.5
            && strcmp (err->message, "guest agent did not answer 'guest-sync-delimited' within 0.3 s") == 0;
  kiln_error_freep (&err);

  char *argv[] = {"true", NULL};
  struct kiln_qga_run_spec spec = {.argv = argv, .call_timeout_ms = 400};
  struct kiln_qga_exec_result res;
  start = seconds_now ();
  r = kiln_qga_run (g, &spec, &res, &err);
  elapsed = seconds_now () - start;
  kiln_qga_exec_result_release (&res);
  printf ("# %s (after %.2f s)\n", kiln_error_message (err), elapsed);
  ok = ok && r < 0 && err->code == KILN_ERR_TIMEOUT && elapsed < 1.5
       && strcmp (err->message, "run 'true' on the guest: guest agent did not answer 'guest-exec' within 0.4 s") == 0;
  kiln_qga_close (g);
  return peer_finish (&p) && ok;
}

static bool
test_qga_resync_after_timeout (void)
{
  /* guest-exec-status times out; its reply arrives late, before the answer
   * to the re-sync the next call makes: it must not be taken for anything. */
  struct step steps[] = {
    {"guest-sync-delimited", "\xff{\"return\": $SYNC}\n", 0},
    {"guest-exec-status", NULL, 0},
    {"guest-sync-delimited",
     "{\"return\": {\"exited\": true, \"exitcode\": 9}, \"id\": $PREV}\n\xff{\"return\": $SYNC}\n", 0},
    {"guest-exec-status", "{\"return\": {\"exited\": true, \"exitcode\": 0}, \"id\": $ID}\n", 0},
  };
  struct peer p = {.steps = steps, .n_steps = 4};
  int fd = peer_start (&p);
  CHECK (fd >= 0);
  struct kiln_qga *g = kiln_qga_open_fd (fd);
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (kiln_qga_sync (g, 2000, &err) == 0);
  json_t *args = json_pack ("{s:i}", "pid", 1);
  json_t *ret = NULL;
  int r1 = kiln_qga_call (g, "guest-exec-status", args, &ret, 200, &err);
  bool ok = r1 < 0 && err->code == KILN_ERR_TIMEOUT && !kiln_qga_synced (g);
  kiln_error_freep (&err);
  ok = ok && kiln_qga_call (g, "guest-exec-status", args, &ret, 2000, &err) == 0
       && json_integer_value (json_object_get (ret, "exitcode")) == 0;
  if (!ok)
    printf ("# %s\n", kiln_error_message (err));
  json_decref (ret);
  json_decref (args);
  kiln_qga_close (g);
  return peer_finish (&p) && ok;
}

static bool
test_qga_exec_output (void)
{
  struct step steps[] = {
    {"guest-sync-delimited", "\xff{\"return\": $SYNC}\n", 0},
    {"guest-exec", "{\"return\": {\"pid\": 77}, \"id\": $ID}\n", 0},
    {"guest-exec-status", "{\"return\": {\"exited\": false}, \"id\": $ID}\n", 0},
    {"guest-exec-status", "{\"return\": {\"exited\": false}, \"id\": $ID}\n", 0},
    {"guest-exec-status",
     "{\"return\": {\"exitcode\": 3, \"err-data\": \"b29wcwo=\", \"out-data\": \"aGVsbG8gd29ybGQK\", "
     "\"err-truncated\": false, \"out-truncated\": true, \"exited\": true}, \"id\": $ID}\n",
     0},
  };
  struct peer p = {.steps = steps, .n_steps = 5};
  int fd = peer_start (&p);
  CHECK (fd >= 0);
  struct kiln_qga *g = kiln_qga_open_fd (fd);
  _cleanup_error_ kiln_error *err = NULL;
  char *argv[] = {"echo", "hello world", NULL};
  char *env[] = {"A=1", NULL};
  struct kiln_qga_run_spec spec = {.argv = argv, .env = env, .cwd = "/tmp", .input = "in", .input_len = 2,
                                   .call_timeout_ms = 5000};
  struct kiln_qga_exec_result res;
  double start = seconds_now ();
  bool ok = kiln_qga_run (g, &spec, &res, &err) == 0;
  double elapsed = seconds_now () - start;
  if (!ok)
    printf ("# %s\n", kiln_error_message (err));
  printf ("# three status polls took %.3f s\n", elapsed);
  ok = ok && res.exit_code == 3 && res.term_signal == 0 && !res.timed_out && res.pid == 77
       && strcmp (kiln_buf_str (&res.out), "hello world\n") == 0 && strcmp (kiln_buf_str (&res.err), "oops\n") == 0
       && res.out_truncated && !res.err_truncated && elapsed < 1.0;
  kiln_qga_exec_result_release (&res);

  /* Bad environment entries never reach the guest. */
  char *bad_env[] = {"1X=y", NULL};
  spec.env = bad_env;
  kiln_error_freep (&err);
  ok = ok && kiln_qga_run (g, &spec, &res, &err) < 0 && err->code == KILN_ERR_INVALID;
  kiln_qga_exec_result_release (&res);
  kiln_qga_close (g);
  return peer_finish (&p) && ok;
}

/* Plays a guest whose program never ends until killed. */
static void
hang_handler (struct peer *p, json_t *request, bool delimited)
{
  (void) delimited;
  const char *command = json_string_value (json_object_get (request, "execute"));
  json_t *args = json_object_get (request, "arguments");
  if (strcmp (command, "guest-sync-delimited") == 0)
    peer_send (p, "\xff{\"return\": $SYNC}\n");
  else if (strcmp (command, "guest-exec") == 0)
    {
      json_t *arg = json_object_get (args, "arg");
      const char *script = json_string_value (json_array_get (arg, 1));
      if (script && strstr (script, "kill -9"))
        {
          snprintf (p->killer_script, sizeof p->killer_script, "%s", script);
          snprintf (p->killer_target, sizeof p->killer_target, "%s",
                    json_string_value (json_array_get (arg, 3)) ? json_string_value (json_array_get (arg, 3)) : "");
          p->killed = true;
          peer_send (p, "{\"return\": {\"pid\": 79}, \"id\": $ID}\n");
        }
      else
        peer_send (p, "{\"return\": {\"pid\": 78}, \"id\": $ID}\n");
    }
  else if (strcmp (command, "guest-exec-status") == 0)
    {
      json_int_t pid = json_integer_value (json_object_get (args, "pid"));
      p->polls++;
      if (pid == 79)
        peer_send (p, "{\"return\": {\"exited\": true, \"exitcode\": 0}, \"id\": $ID}\n");
      else if (p->killed)
        peer_send (p, "{\"return\": {\"exited\": true, \"signal\": 9, \"out-data\": \"c3RhcnRlZAo=\"}, \"id\": $ID}\n");
      else
        peer_send (p, "{\"return\": {\"exited\": false}, \"id\": $ID}\n");
    }
  else
    peer_fail (p, "unexpected '%s'", command);
}

static bool
test_qga_exec_timeout_kills_group (void)
{
  struct peer p = {.handler = hang_handler};
  int fd = peer_start (&p);
  CHECK (fd >= 0);
  struct kiln_qga *g = kiln_qga_open_fd (fd);
  _cleanup_error_ kiln_error *err = NULL;
  char *argv[] = {"sleep", "30", NULL};
  struct kiln_qga_run_spec spec = {.argv = argv, .timeout_ms = 700, .call_timeout_ms = 5000};
  struct kiln_qga_exec_result res;
  double start = seconds_now ();
  bool ok = kiln_qga_run (g, &spec, &res, &err) == 0;
  double elapsed = seconds_now () - start;
  printf ("# timed out after %.2f s, %d status polls; killer: %s %s\n", elapsed, p.polls, p.killer_script,
          p.killer_target);
  ok = ok && res.timed_out && res.exit_code == -1 && res.term_signal == 9
       && strcmp (kiln_buf_str (&res.out), "started\n") == 0 && elapsed >= 0.65 && elapsed < 2.0
       && strstr (p.killer_script, "kill -9 -\"$1\"") != NULL && strcmp (p.killer_target, "78") == 0
       /* backoff: 10, 20, 40, 80, 160, 200, 200 ... ms, so few polls in 0.7 s */
       && p.polls < 15;
  if (!ok)
    printf ("# %s\n", kiln_error_message (err));
  kiln_qga_exec_result_release (&res);
  kiln_qga_close (g);
  return peer_finish (&p) && ok;
}

static bool
test_qga_wrapper_failures_reported (void)
{
  struct step steps[] = {
    {"guest-sync-delimited", "\xff{\"return\": $SYNC}\n", 0},
    {"guest-exec", "{\"return\": {\"pid\": 5}, \"id\": $ID}\n", 0},
    /* "kiln-wrapper: command not found: nope\n" */
    {"guest-exec-status",
     "{\"return\": {\"exited\": true, \"exitcode\": 127, \"err-data\": "
     "\"a2lsbi13cmFwcGVyOiBjb21tYW5kIG5vdCBmb3VuZDogbm9wZQo=\"}, \"id\": $ID}\n",
     0},
  };
  struct peer p = {.steps = steps, .n_steps = 3};
  int fd = peer_start (&p);
  CHECK (fd >= 0);
  struct kiln_qga *g = kiln_qga_open_fd (fd);
  _cleanup_error_ kiln_error *err = NULL;
  char *argv[] = {"nope", NULL};
  struct kiln_qga_run_spec spec = {.argv = argv, .call_timeout_ms = 5000};
  struct kiln_qga_exec_result res;
  int r = kiln_qga_run (g, &spec, &res, &err);
  printf ("# %s\n", kiln_error_message (err));
  bool ok = r < 0 && err->code == KILN_ERR_NOT_FOUND
            && strcmp (err->message, "execute 'nope' on the guest: command not found") == 0;
  kiln_qga_exec_result_release (&res);
  kiln_qga_close (g);
  return peer_finish (&p) && ok;
}

/* Plays guest-file-* for a put and a get. */
static void
file_handler (struct peer *p, json_t *request, bool delimited)
{
  (void) delimited;
  const char *command = json_string_value (json_object_get (request, "execute"));
  json_t *args = json_object_get (request, "arguments");
  if (strcmp (command, "guest-sync-delimited") == 0)
    peer_send (p, "\xff{\"return\": $SYNC}\n");
  else if (strcmp (command, "guest-file-open") == 0)
    {
      const char *path = json_string_value (json_object_get (args, "path"));
      if (strcmp (path, "/missing") == 0)
        peer_send (p, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"failed to open file '/missing' (mode: "
                      "'r'): No such file or directory\"}, \"id\": $ID}\n");
      else
        peer_send (p, strcmp (json_string_value (json_object_get (args, "mode")), "w") == 0
                          ? "{\"return\": 1000, \"id\": $ID}\n"
                          : "{\"return\": 1001, \"id\": $ID}\n");
    }
  else if (strcmp (command, "guest-file-write") == 0)
    {
      const char *b64 = json_string_value (json_object_get (args, "buf-b64"));
      unsigned char *data = NULL;
      size_t len = 0;
      if (json_integer_value (json_object_get (args, "handle")) != 1000
          || kiln_base64_decode (b64, strlen (b64), &data, &len) < 0 || len > KILN_QGA_FILE_CHUNK)
        peer_fail (p, "bad guest-file-write");
      kiln_buf_append (&p->written, data, len);
      free (data);
      char reply[128];
      snprintf (reply, sizeof reply, "{\"return\": {\"count\": %zu, \"eof\": false}, \"id\": $ID}\n", len);
      peer_send (p, reply);
    }
  else if (strcmp (command, "guest-file-read") == 0)
    {
      /* "abc", then "de" and the end, in two replies. */
      p->reads++;
      peer_send (p, p->reads == 1 ? "{\"return\": {\"count\": 3, \"buf-b64\": \"YWJj\", \"eof\": false}, \"id\": $ID}\n"
                                  : "{\"return\": {\"count\": 2, \"buf-b64\": \"ZGU=\", \"eof\": true}, \"id\": $ID}\n");
    }
  else if (strcmp (command, "guest-file-close") == 0)
    peer_send (p, "{\"return\": {}, \"id\": $ID}\n");
  else
    peer_fail (p, "unexpected '%s'", command);
}

static bool
test_qga_files (void)
{
  struct peer p = {.handler = file_handler, .split = 4096};
  int fd = peer_start (&p);
  CHECK (fd >= 0);
  struct kiln_qga *g = kiln_qga_open_fd (fd);
  _cleanup_error_ kiln_error *err = NULL;

  char dir[] = "/tmp/kiln-test-qga-XXXXXX";
  CHECK (mkdtemp (dir) != NULL);
  _cleanup_free_ char *local = NULL, *got = NULL;
  CHECK (asprintf (&local, "%s/in", dir) > 0 && asprintf (&got, "%s/out", dir) > 0);
  /* 1.5 MiB: one full chunk and a half one. */
  size_t size = KILN_QGA_FILE_CHUNK + KILN_QGA_FILE_CHUNK / 2;
  _cleanup_free_ char *content = malloc (size);
  CHECK (content != NULL);
  for (size_t i = 0; i < size; i++)
    content[i] = (char) (i * 131 + 7);
  CHECK (kiln_write_file_atomic (local, content, size, 0644, &err) == 0);

  bool ok = kiln_qga_file_put (g, local, "/var/tmp/x", 5000, &err) == 0;
  if (!ok)
    printf ("# put: %s\n", kiln_error_message (err));
  ok = ok && p.written.len == size && memcmp (p.written.data, content, size) == 0;

  ok = ok && kiln_qga_file_get (g, "/etc/x", got, 5000, &err) == 0;
  struct kiln_buf back = KILN_BUF_INIT;
  ok = ok && kiln_read_file (got, &back, &err) == 0 && strcmp (kiln_buf_str (&back), "abcde") == 0;
  kiln_buf_release (&back);
  if (!ok)
    printf ("# get: %s\n", kiln_error_message (err));

  kiln_error_freep (&err);
  _cleanup_free_ char *never = NULL;
  CHECK (asprintf (&never, "%s/never", dir) > 0);
  int r = kiln_qga_file_get (g, "/missing", never, 5000, &err);
  printf ("# %s\n", kiln_error_message (err));
  ok = ok && r < 0 && err->code == KILN_ERR_REMOTE && access (never, F_OK) < 0
       && strstr (err->message, "read '/missing' on the guest: guest agent command 'guest-file-open' failed: "
                                "GenericError: failed to open file") == err->message;

  kiln_qga_close (g);
  unlink (local);
  unlink (got);
  /* No temporary file is left beside the target of a failed get. */
  _cleanup_error_ kiln_error *rm_err = NULL;
  kiln_remove_tree (dir, &rm_err);
  return peer_finish (&p) && ok;
}

static bool
test_qga_shutdown (void)
{
  struct step steps[] = {
    {"guest-sync-delimited", "\xff{\"return\": $SYNC}\n", 0},
    {"guest-shutdown", NULL, 0}, /* success: no reply */
    {"guest-sync-delimited", "\xff{\"return\": $SYNC}\n", 0},
    {"guest-shutdown",
     "{\"error\": {\"class\": \"GenericError\", \"desc\": \"child process has failed to shutdown\"}, \"id\": $ID}\n",
     0},
  };
  struct peer p = {.steps = steps, .n_steps = 4};
  int fd = peer_start (&p);
  CHECK (fd >= 0);
  struct kiln_qga *g = kiln_qga_open_fd (fd);
  _cleanup_error_ kiln_error *err = NULL;
  double start = seconds_now ();
  bool ok = kiln_qga_shutdown (g, "reboot", 300, &err) == 0 && !kiln_qga_synced (g);
  double elapsed = seconds_now () - start;
  ok = ok && elapsed < 1.5;
  int r = kiln_qga_shutdown (g, "powerdown", 2000, &err);
  printf ("# silent shutdown accepted after %.2f s; then: %s\n", elapsed, kiln_error_message (err));
  ok = ok && r < 0 && err->code == KILN_ERR_REMOTE
       && strcmp (err->message, "guest agent command 'guest-shutdown' failed: GenericError: child process has "
                                "failed to shutdown") == 0;
  kiln_qga_close (g);
  return peer_finish (&p) && ok;
}

/* --- the wrapper script, run here with /bin/sh ------------------------------ */

/* Runs the wrapper with argv; via_child runs it from a shell that is not a
 * process group leader (as under qemu-ga), else as kiln_process_run's group
 * leader. */
static int
run_wrapper (const struct kiln_qga_run_spec *spec, bool via_child, struct kiln_process_result *res)
{
  _cleanup_strv_ char **args = kiln_qga_run_args (spec);
  _cleanup_strv_ char **argv = NULL;
  if (via_child)
    argv = kiln_strv_new ("/bin/sh", "-c", "/bin/sh \"$@\"; exit $?", "outer", NULL);
  else
    argv = kiln_strv_new ("/bin/sh", NULL);
  for (char **a = args; *a; a++)
    kiln_strv_push (&argv, *a);
  struct kiln_process_spec ps = {.argv = argv, .timeout_ms = 10000};
  _cleanup_error_ kiln_error *err = NULL;
  int r = kiln_process_run (&ps, res, &err);
  if (r < 0)
    printf ("# %s\n", kiln_error_message (err));
  return r;
}

static bool
test_wrapper_script (void)
{
  struct kiln_process_result res;
  /* cwd, exported environment (values with spaces and quotes kept), arguments. */
  char *argv1[] = {"sh", "-c", "pwd; echo \"$KILN_A|$KILN_B|$1\"", "x", "arg with space", NULL};
  char *env[] = {"KILN_A=one two", "KILN_B='q\"", NULL};
  struct kiln_qga_run_spec spec = {.argv = argv1, .env = env, .cwd = "/tmp"};
  CHECK (run_wrapper (&spec, false, &res) == 0);
  bool ok = res.exit_code == 0 && strcmp (kiln_buf_str (&res.out), "/tmp\none two|'q\"|arg with space\n") == 0;
  if (!ok)
    printf ("# out: '%s' err: '%s'\n", kiln_buf_str (&res.out), kiln_buf_str (&res.err));
  kiln_process_result_release (&res);

  /* The program leads its own process group, both when the shell already
   * led one and when it did not (setsid). */
  char *argv2[] = {"sh", "-c", "read -r _ _ _ _ g _ </proc/$$/stat; [ \"$g\" = \"$$\" ] && echo leader", NULL};
  struct kiln_qga_run_spec spec2 = {.argv = argv2};
  for (int via = 0; via < 2; via++)
    {
      CHECK (run_wrapper (&spec2, via, &res) == 0);
      bool leader = res.exit_code == 0 && strcmp (kiln_buf_str (&res.out), "leader\n") == 0;
      if (!leader)
        printf ("# via_child=%d: exit %d out '%s' err '%s'\n", via, res.exit_code, kiln_buf_str (&res.out),
                kiln_buf_str (&res.err));
      ok = ok && leader;
      kiln_process_result_release (&res);
    }

  /* The exit status passes through. */
  char *argv3[] = {"sh", "-c", "exit 42", NULL};
  struct kiln_qga_run_spec spec3 = {.argv = argv3};
  CHECK (run_wrapper (&spec3, true, &res) == 0);
  ok = ok && res.exit_code == 42;
  kiln_process_result_release (&res);

  /* Its own failures are marked. */
  char *argv4[] = {"kiln-no-such-program", NULL};
  struct kiln_qga_run_spec spec4 = {.argv = argv4};
  CHECK (run_wrapper (&spec4, true, &res) == 0);
  ok = ok && res.exit_code == 127
       && strcmp (kiln_buf_str (&res.err), "kiln-wrapper: command not found: kiln-no-such-program\n") == 0;
  kiln_process_result_release (&res);
  char *argv5[] = {"true", NULL};
  struct kiln_qga_run_spec spec5 = {.argv = argv5, .cwd = "/nonexistent-kiln-dir"};
  CHECK (run_wrapper (&spec5, true, &res) == 0);
  ok = ok && res.exit_code == 127
       && strcmp (kiln_buf_str (&res.err), "kiln-wrapper: cannot change directory to /nonexistent-kiln-dir\n") == 0;
  kiln_process_result_release (&res);
  return ok;
}

/* Processes of process group pgid that are not zombies (a zombie whose
 * parent is gone waits for init to reap it, and still counts for kill()). */
static int
live_members (pid_t pgid)
{
  int n = 0;
  DIR *d = opendir ("/proc");
  if (d == NULL)
    return -1;
  struct dirent *e;
  while ((e = readdir (d)) != NULL)
    {
      if (e->d_name[0] < '0' || e->d_name[0] > '9')
        continue;
      char path[300], buf[512];
      snprintf (path, sizeof path, "/proc/%s/stat", e->d_name);
      FILE *f = fopen (path, "r");
      if (f == NULL)
        continue;
      size_t len = fread (buf, 1, sizeof buf - 1, f);
      fclose (f);
      buf[len] = '\0';
      /* pid (comm) state ppid pgrp ...: comm may hold spaces, so from the last ')'. */
      char *close_paren = strrchr (buf, ')');
      char state;
      int ppid, pgrp;
      if (close_paren && sscanf (close_paren + 1, " %c %d %d", &state, &ppid, &pgrp) == 3 && pgrp == pgid
          && state != 'Z')
        n++;
    }
  closedir (d);
  return n;
}

/* The deadline's kill, run here with /bin/sh (dash on Debian, whose kill
 * differs from bash's and busybox's): the wrapped program and what it
 * started in the background all go. */
static bool
test_kill_script (void)
{
  char *argv[] = {"sh", "-c", "sleep 30 & sleep 30", NULL};
  struct kiln_qga_run_spec spec = {.argv = argv};
  _cleanup_strv_ char **args = kiln_qga_run_args (&spec);
  /* From a shell that does not lead its group, as under qemu-ga. */
  _cleanup_strv_ char **outer = kiln_strv_new ("/bin/sh", "-c", "/bin/sh \"$@\"; exit $?", "outer", NULL);
  for (char **a = args; *a; a++)
    kiln_strv_push (&outer, *a);
  struct kiln_process_spawn_spec ss = {.argv = outer};
  _cleanup_error_ kiln_error *err = NULL;
  pid_t pid = 0;
  /* The killed background sleep is orphaned: as a subreaper we reap it. */
  CHECK (prctl (PR_SET_CHILD_SUBREAPER, 1) == 0);
  CHECK (kiln_process_spawn (&ss, &pid, &err) == 0);
  sleep_ms (300);
  /* The wrapped program: the outer shell's child, leading its own group. */
  char find[160];
  snprintf (find, sizeof find, "pgrep -P %d", (int) pid);
  char *pgrep[] = {"sh", "-c", find, NULL};
  struct kiln_process_spec ps = {.argv = pgrep};
  struct kiln_process_result res;
  CHECK (kiln_process_run (&ps, &res, &err) == 0);
  pid_t program = (pid_t) atoi (kiln_buf_str (&res.out));
  kiln_process_result_release (&res);
  bool ok = program > 0 && getpgid (program) == program;

  _cleanup_strv_ char **kill_args = kiln_qga_kill_args (program, true);
  _cleanup_strv_ char **killer = kiln_strv_new ("/bin/sh", NULL);
  for (char **a = kill_args; *a; a++)
    kiln_strv_push (&killer, *a);
  struct kiln_process_spec ks = {.argv = killer, .timeout_ms = 10000};
  ok = kiln_process_run (&ks, &res, &err) == 0 && res.exit_code == 0 && ok;
  if (!ok)
    printf ("# program %d, killer: exit %d %s\n", (int) program, res.exit_code, kiln_buf_str (&res.err));
  kiln_process_result_release (&res);
  /* The outer shell reports its child killed; nothing of the group is left. */
  int status = 0;
  int r = kiln_process_wait_exit (pid, 5000, &status);
  ok = r == 1 && WIFEXITED (status) && WEXITSTATUS (status) == 128 + 9 && ok;
  if (r == 0)
    {
      kill (-pid, SIGKILL);
      kiln_process_wait_exit (pid, -1, NULL);
    }
  sleep_ms (100);
  int left = live_members (program);
  while (waitpid (-1, NULL, WNOHANG) > 0)
    ;
  prctl (PR_SET_CHILD_SUBREAPER, 0);
  if (left)
    printf ("# %d processes of group %d still run\n", left, (int) program);
  return left == 0 && ok;
}

int
main (int argc, char **argv)
{
  if (argc != 2)
    {
      fprintf (stderr, "usage: %s DATA_DIR\n", argv[0]);
      return 2;
    }
  data_dir = argv[1];

  tap_ok (test_qmp_session (), "QMP: greeting, capabilities, events around replies, stale reply, RESET");
  tap_ok (test_qmp_error_and_timeout (), "QMP: error reply, timeout, late reply skipped, event wait timeout");
  tap_ok (test_qmp_connect_retries (), "QMP: connect retries until the socket appears; bounded; long path");
  tap_ok (test_qga_sync_skips_stale (), "QGA: sync skips recorded stale replies, split into pieces");
  tap_ok (test_qga_never_answers (), "QGA: a guest that never answers gives a bounded timeout");
  tap_ok (test_qga_resync_after_timeout (), "QGA: a late reply after a timeout is skipped by the re-sync");
  tap_ok (test_qga_exec_output (), "QGA: guest-exec with polling and base64 output");
  tap_ok (test_qga_exec_timeout_kills_group (), "QGA: deadline kills the process group");
  tap_ok (test_qga_wrapper_failures_reported (), "QGA: wrapper's command-not-found becomes an error");
  tap_ok (test_qga_files (), "QGA: files in and out in chunks; agent errors name the path");
  tap_ok (test_qga_shutdown (), "QGA: guest-shutdown silence is success, an error reply is not");
  tap_ok (test_wrapper_script (), "wrapper script: cwd, env, process group, exit status, failures");
  tap_ok (test_kill_script (), "kill script: the wrapped program's whole group goes");

  return tap_done ();
}
