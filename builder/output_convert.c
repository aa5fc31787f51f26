/* output_convert.c - the conversion to the published format, on a thread
 * beside the test stage (output_convert.h).
 *
 * The thread runs qemu-img through kiln_disk_convert with a stop flag of
 * its own: the build raises it when it fails or is cancelled, and while
 * the build waits for the thread it copies the user's cancel flag into it,
 * so SIGINT stops qemu-img in either case.  qemu-img is started and reaped
 * by the thread (its parent-death signal is tied to the thread that forked
 * it), and the thread ends only once qemu-img has. */
#include "output_convert.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "disk_image.h"
#include "xalloc.h"

struct kiln_output_convert {
  pthread_t thread;
  char *captured, *out;
  enum kiln_image_format fmt;
  bool compress;
  volatile sig_atomic_t stop;
  int status;                /* the thread's result: 0 or -1 */
  kiln_error *err;           /* the thread's error */
};

bool
kiln_output_convert_needed (enum kiln_image_format fmt, bool compress)
{
  return fmt != KILN_IMAGE_QCOW2 || compress;
}

static void *
convert_main (void *opaque)
{
  struct kiln_output_convert *job = opaque;
  job->status = kiln_disk_convert (job->captured, job->out, kiln_image_format_name (job->fmt), job->compress,
                                   &job->stop, &job->err);
  return NULL;
}

int
kiln_output_convert_start (const char *captured, const char *out, enum kiln_image_format fmt, bool compress,
                           struct kiln_output_convert **job, kiln_error **err)
{
  struct kiln_output_convert *j = kiln_xcalloc (1, sizeof *j);
  j->captured = kiln_xstrdup (captured);
  j->out = kiln_xstrdup (out);
  j->fmt = fmt;
  j->compress = compress;
  int e = pthread_create (&j->thread, NULL, convert_main, j);
  if (e != 0)
    {
      free (j->captured);
      free (j->out);
      free (j);
      return kiln_fail_errno (err, e, "start converting '%s' to %s", captured, kiln_image_format_name (fmt));
    }
  *job = j;
  return 0;
}

static void
job_free (struct kiln_output_convert *job)
{
  kiln_error_free (job->err);
  free (job->captured);
  free (job->out);
  free (job);
}

int
kiln_output_convert_finish (struct kiln_output_convert *job, volatile sig_atomic_t *cancel, kiln_error **err)
{
  for (;;)
    {
      struct timespec deadline;
      clock_gettime (CLOCK_REALTIME, &deadline);
      deadline.tv_nsec += 100 * 1000 * 1000;
      if (deadline.tv_nsec >= 1000000000L)
        {
          deadline.tv_sec++;
          deadline.tv_nsec -= 1000000000L;
        }
      if (pthread_timedjoin_np (job->thread, NULL, &deadline) == 0)
        break;
      if (cancel && *cancel)
        job->stop = 1;
    }
  int r = job->status;
  if (r < 0)
    {
      unlink (job->out);
      kiln_error_move (err, &job->err);
      kiln_error_prefix (err, "convert the capture to %s%s", job->compress ? "compressed " : "",
                         kiln_image_format_name (job->fmt));
    }
  job_free (job);
  return r;
}

void
kiln_output_convert_abandon (struct kiln_output_convert *job)
{
  if (job == NULL)
    return;
  job->stop = 1;
  pthread_join (job->thread, NULL);
  unlink (job->out);
  job_free (job);
}
