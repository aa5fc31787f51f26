/* test_cancel.c - cancellable pauses and kiln_poll_until (common/cancel.h):
 * a poll ends done, failed, cancelled or timed out, with the messages and
 * codes its callers rely on, and a raised flag cuts a pause short. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cancel.h"
#include "cleanup.h"
#include "tap.h"

struct script {
  int calls;
  int done_at;                 /* the call that answers DONE (0: never) */
  int fail_at;                 /* the call that answers FAILED (0: never) */
  volatile sig_atomic_t *raise_at_call_2;
};

static enum kiln_poll_answer
scripted (void *opaque, char **state, kiln_error **err)
{
  struct script *s = opaque;
  s->calls++;
  if (s->raise_at_call_2 && s->calls == 2)
    *s->raise_at_call_2 = 1;
  if (s->calls == s->done_at)
    return KILN_POLL_DONE;
  if (s->calls == s->fail_at)
    {
      kiln_fail (err, "it broke");
      return KILN_POLL_FAILED;
    }
  *state = strdup ("pending");
  return KILN_POLL_WAIT;
}

static double
seconds_since (const struct timespec *t0)
{
  struct timespec t1;
  clock_gettime (CLOCK_MONOTONIC, &t1);
  return (double) (t1.tv_sec - t0->tv_sec) + (double) (t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static bool
test_done_after_waits (void)
{
  struct script s = {.done_at = 3};
  struct kiln_poll p = {.what = "thing", .timeout_seconds = 60, .first_ms = 1, .max_ms = 4};
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (kiln_poll_until (&p, scripted, &s, &err) == 0);
  CHECK (s.calls == 3 && err == NULL);
  return true;
}

static bool
test_failure_passes_through (void)
{
  struct script s = {.fail_at = 2};
  struct kiln_poll p = {.what = "thing", .timeout_seconds = 60, .first_ms = 1, .max_ms = 4};
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (kiln_poll_until (&p, scripted, &s, &err) == -1);
  CHECK (s.calls == 2 && strcmp (kiln_error_message (err), "it broke") == 0);
  return true;
}

static bool
test_timeout (void)
{
  struct script s = {0};
  struct kiln_poll p = {.what = "snapshot", .id = "snap-1", .timeout_seconds = 0, .first_ms = 1, .max_ms = 4};
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (kiln_poll_until (&p, scripted, &s, &err) == -1);
  printf ("# %s\n", kiln_error_message (err));
  CHECK (err->code == KILN_ERR_TIMEOUT);
  CHECK (strcmp (kiln_error_message (err), "snapshot snap-1 is still pending after 0 s") == 0);
  return true;
}

static bool
test_cancel_cuts_the_pause (void)
{
  volatile sig_atomic_t flag = 0;
  struct script s = {.raise_at_call_2 = &flag};
  struct timespec t0;
  clock_gettime (CLOCK_MONOTONIC, &t0);
  /* A raised flag ends a 10 s pause at once. */
  flag = 1;
  CHECK (!kiln_pause_ms (&flag, 10000));
  CHECK (seconds_since (&t0) < 1.0);
  /* The check raises the flag on its second call (as a signal would): the
   * poll stops there, interrupted, instead of pausing on to its timeout. */
  flag = 0;
  struct kiln_poll p = {.what = "image", .id = "ami-1", .timeout_seconds = 600, .first_ms = 20, .max_ms = 10000,
                        .cancel = &flag};
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (kiln_poll_until (&p, scripted, &s, &err) == -1);
  printf ("# %s (%.2f s)\n", kiln_error_message (err), seconds_since (&t0));
  CHECK (err->code == KILN_ERR_CANCELLED && s.calls == 2);
  CHECK (strcmp (kiln_error_message (err), "waiting for image ami-1: interrupted") == 0);
  CHECK (seconds_since (&t0) < 2.0);
  CHECK (kiln_pause_ms (NULL, 5) && !kiln_cancelled (NULL));
  return true;
}

int
main (void)
{
  tap_ok (test_done_after_waits (), "a poll that becomes done after two waits");
  tap_ok (test_failure_passes_through (), "a failing check ends the poll with its error");
  tap_ok (test_timeout (), "out of time: KILN_ERR_TIMEOUT quoting the last state");
  tap_ok (test_cancel_cuts_the_pause (), "a raised flag cuts a pause short and ends the poll as interrupted");
  return tap_done ();
}
