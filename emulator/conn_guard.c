/* conn_guard.c - keeping slow clients from holding connections (see
 * conn_guard.h).
 *
 * Connections live in one list under one mutex, newest last.  A connection
 * is cut with shutdown(2) under that mutex, and libmicrohttpd reports a
 * connection closed (emu_conn_closed, which takes the mutex) before it
 * closes the descriptor, so a cut never reaches a descriptor that was
 * closed and reused. */
#include "conn_guard.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"
#include "xalloc.h"
#include "clock.h"

enum conn_state {
  CONN_NEW,      /* accepted, its first head not complete */
  CONN_IDLE,     /* kept alive between requests */
  CONN_HEAD,     /* a request line came on a kept-alive connection */
  CONN_REQUEST,  /* the head is here: not the guard's any more */
};

struct emu_conn {
  int fd;
  enum conn_state state;
  int64_t since_ms;  /* when the current state's deadline started */
  bool cut;
  struct emu_conn *prev, *next;
};

struct emu_conn_guard {
  struct emu_conn_limits limits;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  bool quit;
  pthread_t thread;
  struct emu_conn *head, *tail;
  unsigned waiting;  /* connections in CONN_NEW or CONN_HEAD */
  uint64_t cuts;
};

static bool
waiting_for_head (const struct emu_conn *c)
{
  return c->state == CONN_NEW || c->state == CONN_HEAD;
}

/* Called with the lock held. */
static void
set_state (struct emu_conn_guard *g, struct emu_conn *c, enum conn_state state)
{
  if (waiting_for_head (c))
    g->waiting--;
  c->state = state;
  c->since_ms = kiln_monotonic_ms ();
  if (waiting_for_head (c))
    g->waiting++;
}

/* Called with the lock held. */
static void
cut (struct emu_conn_guard *g, struct emu_conn *c, const char *why)
{
  if (c->cut)
    return;
  c->cut = true;
  g->cuts++;
  if (shutdown (c->fd, SHUT_RDWR) < 0 && errno != ENOTCONN)
    kiln_log_debug ("emulator: shutdown of a slow connection: %m");
  kiln_log_debug ("emulator: cut a connection: %s", why);
}

static void *
guard_main (void *arg)
{
  struct emu_conn_guard *g = arg;
  pthread_mutex_lock (&g->lock);
  while (!g->quit)
    {
      int64_t now = kiln_monotonic_ms ();
      for (struct emu_conn *c = g->head; c; c = c->next)
        {
          int64_t deadline = c->state == CONN_IDLE ? g->limits.idle_deadline_ms
                             : waiting_for_head (c)  ? g->limits.header_deadline_ms
                                                     : 0;
          if (deadline > 0 && now - c->since_ms > deadline)
            cut (g, c, c->state == CONN_IDLE ? "idle too long" : "its request head took too long");
        }
      struct timespec until;
      clock_gettime (CLOCK_REALTIME, &until);
      until.tv_nsec += 500 * 1000000L;
      if (until.tv_nsec >= 1000000000L)
        {
          until.tv_sec++;
          until.tv_nsec -= 1000000000L;
        }
      pthread_cond_timedwait (&g->wake, &g->lock, &until);
    }
  pthread_mutex_unlock (&g->lock);
  return NULL;
}

struct emu_conn_guard *
emu_conn_guard_new (const struct emu_conn_limits *limits)
{
  struct emu_conn_guard *g = kiln_xcalloc (1, sizeof *g);
  g->limits = *limits;
  pthread_mutex_init (&g->lock, NULL);
  pthread_cond_init (&g->wake, NULL);
  if (pthread_create (&g->thread, NULL, guard_main, g) != 0)
    {
      pthread_cond_destroy (&g->wake);
      pthread_mutex_destroy (&g->lock);
      free (g);
      return NULL;
    }
  return g;
}

void
emu_conn_guard_free (struct emu_conn_guard *g)
{
  if (g == NULL)
    return;
  pthread_mutex_lock (&g->lock);
  g->quit = true;
  pthread_cond_signal (&g->wake);
  pthread_mutex_unlock (&g->lock);
  pthread_join (g->thread, NULL);
  while (g->head)
    {
      struct emu_conn *c = g->head;
      g->head = c->next;
      free (c);
    }
  pthread_cond_destroy (&g->wake);
  pthread_mutex_destroy (&g->lock);
  free (g);
}

struct emu_conn *
emu_conn_opened (struct emu_conn_guard *g, int fd)
{
  struct emu_conn *c = kiln_xcalloc (1, sizeof *c);
  c->fd = fd;
  c->state = CONN_NEW;
  c->since_ms = kiln_monotonic_ms ();
  pthread_mutex_lock (&g->lock);
  /* Room for requests that complete: past the cap, the connection that has
   * waited longest for its head goes. */
  if (g->waiting >= g->limits.max_waiting)
    for (struct emu_conn *old = g->head; old; old = old->next)
      if (waiting_for_head (old) && !old->cut)
        {
          cut (g, old, "too many connections waiting for a request head");
          break;
        }
  c->prev = g->tail;
  if (g->tail)
    g->tail->next = c;
  else
    g->head = c;
  g->tail = c;
  g->waiting++;
  pthread_mutex_unlock (&g->lock);
  return c;
}

void
emu_conn_closed (struct emu_conn_guard *g, struct emu_conn *c)
{
  if (c == NULL)
    return;
  pthread_mutex_lock (&g->lock);
  if (waiting_for_head (c))
    g->waiting--;
  if (c->prev)
    c->prev->next = c->next;
  else
    g->head = c->next;
  if (c->next)
    c->next->prev = c->prev;
  else
    g->tail = c->prev;
  pthread_mutex_unlock (&g->lock);
  free (c);
}

void
emu_conn_request_line (struct emu_conn_guard *g, struct emu_conn *c)
{
  if (c == NULL)
    return;
  pthread_mutex_lock (&g->lock);
  if (c->state == CONN_IDLE)
    set_state (g, c, CONN_HEAD);
  pthread_mutex_unlock (&g->lock);
}

void
emu_conn_head_done (struct emu_conn_guard *g, struct emu_conn *c)
{
  if (c == NULL)
    return;
  pthread_mutex_lock (&g->lock);
  set_state (g, c, CONN_REQUEST);
  pthread_mutex_unlock (&g->lock);
}

void
emu_conn_request_done (struct emu_conn_guard *g, struct emu_conn *c)
{
  if (c == NULL)
    return;
  pthread_mutex_lock (&g->lock);
  set_state (g, c, CONN_IDLE);
  pthread_mutex_unlock (&g->lock);
}

uint64_t
emu_conn_guard_cut_count (struct emu_conn_guard *g)
{
  pthread_mutex_lock (&g->lock);
  uint64_t n = g->cuts;
  pthread_mutex_unlock (&g->lock);
  return n;
}
