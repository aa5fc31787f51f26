/* cancel.c - cancel flags and cancellable pauses (see cancel.h). */
#include "cancel.h"

#include <stdlib.h>
#include <time.h>

/* How often a pause looks at the flag. */
#define CHECK_MS 50

bool
kiln_cancelled (volatile sig_atomic_t *cancel)
{
  return cancel && *cancel;
}

bool
kiln_pause_ms (volatile sig_atomic_t *cancel, long ms)
{
  while (ms > 0)
    {
      if (kiln_cancelled (cancel))
        return false;
      long step = ms < CHECK_MS ? ms : CHECK_MS;
      struct timespec ts = {step / 1000, (step % 1000) * 1000000L};
      nanosleep (&ts, NULL);
      ms -= step;
    }
  return !kiln_cancelled (cancel);
}

int
kiln_poll_until (const struct kiln_poll *p,
                 enum kiln_poll_answer (*check) (void *opaque, char **state, kiln_error **err), void *opaque,
                 kiln_error **err)
{
  time_t deadline = time (NULL) + p->timeout_seconds;
  long pause = p->first_ms > 0 ? p->first_ms : 100;
  for (;;)
    {
      char *state = NULL;
      enum kiln_poll_answer a = check (opaque, &state, err);
      if (a != KILN_POLL_WAIT)
        {
          free (state);
          return a == KILN_POLL_DONE ? 0 : -1;
        }
      int r = 0;
      if (kiln_cancelled (p->cancel))
        r = kiln_error_set (err, KILN_ERR_CANCELLED, 0, "waiting for %s%s%s: interrupted", p->what,
                            p->id ? " " : "", p->id ? p->id : "");
      else if (time (NULL) >= deadline)
        r = kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "%s%s%s is still %s after %d s", p->what, p->id ? " " : "",
                            p->id ? p->id : "", state ? state : "not ready", p->timeout_seconds);
      free (state);
      if (r < 0)
        return -1;
      kiln_pause_ms (p->cancel, pause);
      pause = pause * 2 < p->max_ms ? pause * 2 : p->max_ms;
    }
}
