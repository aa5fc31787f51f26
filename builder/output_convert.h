/* output_convert.h - the published image made from the capture while the
 * test stage runs.
 *
 * A local build captures its instance as a plain qcow2 of the disk's data
 * (the fastest thing to write, and what the test instance boots).  When the
 * user asked for another format or a compressed file, that conversion is
 * CPU work the test stage does not need: it runs beside it, on a thread of
 * its own, from the capture (only read by both) into a file in the run
 * directory, and publishing waits for it.  A build that fails or is
 * cancelled meanwhile stops the conversion and removes its file. */
#ifndef KILN_BUILDER_OUTPUT_CONVERT_H
#define KILN_BUILDER_OUTPUT_CONVERT_H

#include <signal.h>
#include <stdbool.h>

#include "cleanup.h"
#include "driver.h"
#include "error.h"

struct kiln_output_convert;

/* Whether publishing fmt (compressed or not) needs a conversion of a plain
 * qcow2 capture. */
bool kiln_output_convert_needed (enum kiln_image_format fmt, bool compress);
/* Starts converting captured (qcow2) into out as fmt, compressed when
 * compress (qcow2: compressed clusters; vmdk: streamOptimized). */
int kiln_output_convert_start (const char *captured, const char *out, enum kiln_image_format fmt, bool compress,
                               struct kiln_output_convert **job, kiln_error **err);
/* Waits for the conversion; cancel (when non-NULL and raised) stops it.  0
 * when out is complete, else -1 with *err.  Frees the job either way. */
int kiln_output_convert_finish (struct kiln_output_convert *job, volatile sig_atomic_t *cancel, kiln_error **err);
/* Stops the conversion if it still runs, removes out, frees the job; safe
 * on NULL.  For _cleanup_: every ending but a finished one abandons. */
void kiln_output_convert_abandon (struct kiln_output_convert *job);
KILN_DEFINE_CLEANUP (struct kiln_output_convert, kiln_output_convert_abandon)

#endif
