/* tap.h - the Test Anything Protocol output the unit test programs share.
 *
 * A program reports each test with tap_ok as it finishes and ends with
 * `return tap_done ();`, which prints the plan ("1..N") last, as TAP allows,
 * so no program counts its tests in advance.  Test functions that return bool
 * can use CHECK to give up at the first condition that does not hold, with a
 * diagnostic naming it.  Header-only: every test is a program of its own, and
 * the counters below are that program's. */
#ifndef KILN_TESTS_UNIT_TAP_H
#define KILN_TESTS_UNIT_TAP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

static int tap_count;    /* tests reported so far */
static int tap_failures; /* how many of them failed */

static inline bool tap_ok (bool cond, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

/* Reports one test: "ok N - NAME" when cond holds, else "not ok N - NAME",
 * NAME formatted from fmt as by printf.  stdout is flushed, so the line comes
 * before anything a child process writes next.  Returns cond. */
static inline bool
tap_ok (bool cond, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  printf ("%s %d - ", cond ? "ok" : "not ok", ++tap_count);
  vprintf (fmt, ap);
  printf ("\n");
  va_end (ap);
  if (!cond)
    tap_failures++;
  fflush (stdout);
  return cond;
}

/* Prints the plan for the tests reported ("1..N") and returns the program's
 * exit status: 0 when all of them passed, else 1. */
static inline int
tap_done (void)
{
  printf ("1..%d\n", tap_count);
  return tap_failures ? 1 : 0;
}

/* Seconds on the monotonic clock, for tests that time what they check. */
static inline double
seconds_now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* In a function returning bool: when cond is false, prints a TAP diagnostic
 * ("# FILE:LINE: check failed: COND") and returns false. */
#define CHECK(cond)                                                          \
  do                                                                         \
    {                                                                        \
      if (!(cond))                                                           \
        {                                                                    \
          printf ("# %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
          return false;                                                      \
        }                                                                    \
    }                                                                        \
  while (0)

#endif
