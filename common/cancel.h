/* cancel.h - the cancel flag long operations watch, and pausing so that a
 * raised flag is noticed within 50 ms.
 *
 * kiln's commands raise a volatile sig_atomic_t from their SIGINT/SIGTERM
 * handlers; waits and polls (an instance starting, a snapshot completing,
 * an import task running) take a pointer to it, NULL when nothing can
 * cancel them, and give up promptly when it is raised. */
#ifndef KILN_COMMON_CANCEL_H
#define KILN_COMMON_CANCEL_H

#include <signal.h>
#include <stdbool.h>

/* Whether cancel is set and raised. */
bool kiln_cancelled (volatile sig_atomic_t *cancel);

/* Sleeps ms milliseconds, waking early when cancel is raised; true when the
 * whole pause passed, false when it was cancelled. */
bool kiln_pause_ms (volatile sig_atomic_t *cancel, long ms);

#endif
