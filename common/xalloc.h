/* xalloc.h - allocation that cannot fail: kiln does not try to run on after
 * the heap is exhausted, so these abort instead of returning NULL. */
#ifndef KILN_COMMON_XALLOC_H
#define KILN_COMMON_XALLOC_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A copy of s; NULL copies as "". */
static inline char *
kiln_xstrdup (const char *s)
{
  char *r = strdup (s ? s : "");
  if (r == NULL)
    abort ();
  return r;
}

/* A copy of at most n bytes of s, NUL-terminated. */
static inline char *
kiln_xstrndup (const char *s, size_t n)
{
  char *r = strndup (s, n);
  if (r == NULL)
    abort ();
  return r;
}

/* Zeroed memory for n elements of size bytes. */
static inline void *
kiln_xcalloc (size_t n, size_t size)
{
  void *r = calloc (n ? n : 1, size ? size : 1);
  if (r == NULL)
    abort ();
  return r;
}

/* A formatted string, malloc'd (vasprintf that cannot fail). */
static inline char *
kiln_xvasprintf (const char *fmt, va_list ap)
{
  char *r = NULL;
  if (vasprintf (&r, fmt, ap) < 0)
    abort ();
  return r;
}

/* A formatted string, malloc'd (asprintf that cannot fail). */
static inline char *kiln_xasprintf (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
static inline char *
kiln_xasprintf (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  char *r = kiln_xvasprintf (fmt, ap);
  va_end (ap);
  return r;
}

#endif
