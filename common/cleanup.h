/* cleanup.h - scope-bound release of resources, one style for all of kiln.
 *
 * A variable declared with one of these attributes is released when it goes
 * out of scope, so every early `return` is safe.  To hand a resource to the
 * caller, take it out with kiln_steal_pointer() / kiln_steal_fd().
 *
 *   _cleanup_free_    char *s = ...;    free()
 *   _cleanup_close_   int fd = -1;      close() when >= 0
 *   _cleanup_fclose_  FILE *f = NULL;   fclose()
 *   _cleanup_pid_     pid_t pid = 0;    a child still running is SIGKILLed
 *                                       (its whole process group) and reaped
 *   _cleanup_error_   kiln_error *e = NULL;
 *   _cleanup_json_    json_t *j = NULL; json_decref()
 *   _cleanup_strv_    char **v = NULL;  NULL-terminated vector of strings
 *   _cleanup_ (fn)    T *x = NULL;      fn (x), for types whose header says
 *                                       KILN_DEFINE_CLEANUP (T, fn) */
#ifndef KILN_COMMON_CLEANUP_H
#define KILN_COMMON_CLEANUP_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "error.h"

static inline void
kiln_freep (void *p)
{
  free (*(void **) p);
}

static inline void
kiln_closep (int *fd)
{
  if (*fd >= 0)
    {
      int saved = errno;
      close (*fd);
      errno = saved;
    }
}

static inline void
kiln_fclosep (FILE **f)
{
  if (*f)
    fclose (*f);
}

/* Kills a child that is still running and reaps it.  Children started by
 * common/process.c lead their own process group, so the group goes too. */
static inline void
kiln_pidp (pid_t *pid)
{
  if (*pid > 0)
    {
      int saved = errno;
      kill (-*pid, SIGKILL);
      kill (*pid, SIGKILL);
      while (waitpid (*pid, NULL, 0) < 0 && errno == EINTR)
        ;
      errno = saved;
    }
}

static inline void
kiln_jsonp (json_t **j)
{
  if (*j)
    json_decref (*j);
}

static inline void
kiln_strv_free (char **v)
{
  if (v == NULL)
    return;
  for (char **p = v; *p; p++)
    free (*p);
  free (v);
}

static inline void
kiln_strvp (char ***v)
{
  kiln_strv_free (*v);
}

/* KILN_DEFINE_CLEANUP (type, fn) defines kiln_cleanup_<fn> for a pointer to
 * a type released by fn (NULL-safe or not: it is only called on non-NULL),
 * and _cleanup_(fn) names it:
 *   KILN_DEFINE_CLEANUP (struct kiln_plan, kiln_plan_free)
 *   _cleanup_ (kiln_plan_free) struct kiln_plan *plan = NULL;
 * Each owned type's header defines its own, beside its free function. */
#define KILN_DEFINE_CLEANUP(type, fn)                                        \
  static inline void kiln_cleanup_##fn (type **p)                            \
  {                                                                          \
    if (*p)                                                                  \
      fn (*p);                                                               \
  }
#define _cleanup_(fn) __attribute__ ((cleanup (kiln_cleanup_##fn)))

#define _cleanup_free_ __attribute__ ((cleanup (kiln_freep)))
#define _cleanup_close_ __attribute__ ((cleanup (kiln_closep)))
#define _cleanup_fclose_ __attribute__ ((cleanup (kiln_fclosep)))
#define _cleanup_pid_ __attribute__ ((cleanup (kiln_pidp)))
#define _cleanup_error_ __attribute__ ((cleanup (kiln_error_freep)))
#define _cleanup_json_ __attribute__ ((cleanup (kiln_jsonp)))
#define _cleanup_strv_ __attribute__ ((cleanup (kiln_strvp)))

static inline void *
kiln_steal_pointer (void *pp)
{
  void **p = (void **) pp;
  void *r = *p;
  *p = NULL;
  return r;
}

static inline int
kiln_steal_fd (int *fd)
{
  int r = *fd;
  *fd = -1;
  return r;
}

#endif
