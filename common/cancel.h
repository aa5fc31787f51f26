/* cancel.h - the cancel flag long operations watch, and pausing so that a
 * raised flag is noticed within 50 ms.
 *
 * kiln's commands raise a volatile sig_atomic_t from their SIGINT/SIGTERM
 * handlers; waits and polls (an instance starting, a snapshot completing,
 * an import task running) take a pointer to it, NULL when nothing can
 * cancel them, and give up promptly when it is raised.  kiln_poll_until is
 * the one shape of such a wait: ask, pause (doubling), ask again, until
 * done, failed, cancelled or out of time. */
#ifndef KILN_COMMON_CANCEL_H
#define KILN_COMMON_CANCEL_H

#include <signal.h>
#include <stdbool.h>

#include "error.h"

/* Whether cancel is set and raised. */
bool kiln_cancelled (volatile sig_atomic_t *cancel);

/* Sleeps ms milliseconds, waking early when cancel is raised; true when the
 * whole pause passed, false when it was cancelled. */
bool kiln_pause_ms (volatile sig_atomic_t *cancel, long ms);

/* What a poll's check says of the thing waited for. */
enum kiln_poll_answer {
  KILN_POLL_FAILED = -1,   /* it failed (err set): stop */
  KILN_POLL_WAIT = 0,      /* not there yet */
  KILN_POLL_DONE = 1,      /* there */
};

struct kiln_poll {
  const char *what;        /* for messages: "snapshot", "the SSM agent of" */
  const char *id;          /* what is waited for, after what: "snap-1" (or NULL) */
  int timeout_seconds;
  long first_ms;           /* the first pause; each next one doubles, up to max_ms */
  long max_ms;
  volatile sig_atomic_t *cancel;
};

/* Asks check (with opaque) at once, then after each pause, until it answers
 * DONE (0 returned) or FAILED (-1, its err).  check may leave in *state
 * (malloc'd; freed here) a word for what it saw ("pending"), which the
 * timeout message quotes.  A raised cancel flag ends the wait with
 * KILN_ERR_CANCELLED ("waiting for WHAT ID: interrupted"), the timeout
 * with KILN_ERR_TIMEOUT ("WHAT ID is still STATE after N s"). */
int kiln_poll_until (const struct kiln_poll *p,
                     enum kiln_poll_answer (*check) (void *opaque, char **state, kiln_error **err), void *opaque,
                     kiln_error **err);

#endif
