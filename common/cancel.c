/* cancel.c - cancel flags and cancellable pauses (see cancel.h). */
#include "cancel.h"

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
