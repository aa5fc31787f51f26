/* clock.h - the monotonic clock, for timing and deadlines (never the wall
 * clock: it jumps). */
#ifndef KILN_COMMON_CLOCK_H
#define KILN_COMMON_CLOCK_H

#include <stdint.h>

/* Milliseconds and seconds on CLOCK_MONOTONIC. */
int64_t kiln_monotonic_ms (void);
double kiln_monotonic_seconds (void);

#endif
