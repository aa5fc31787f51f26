/* error.c - building and chaining kiln_error messages (see error.h). */
#include "error.h"
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *
format_message (int errnum, const char *fmt, va_list ap)
{
  char *msg = kiln_xvasprintf (fmt, ap);
  if (errnum != 0)
    {
      char *full = kiln_xasprintf ("%s: %s", msg, strerror (errnum));
      free (msg);
      msg = full;
    }
  return msg;
}

int
kiln_error_setv (kiln_error **err, int code, int errnum, const char *fmt, va_list ap)
{
  if (err == NULL)
    return -1;
  kiln_error *e = kiln_xcalloc (1, sizeof *e);
  e->code = code;
  e->errnum = errnum;
  e->message = format_message (errnum, fmt, ap);
  kiln_error_free (*err);
  *err = e;
  return -1;
}

int
kiln_error_set (kiln_error **err, int code, int errnum, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  kiln_error_setv (err, code, errnum, fmt, ap);
  va_end (ap);
  return -1;
}

int
kiln_error_prefix (kiln_error **err, const char *fmt, ...)
{
  if (err == NULL)
    return -1;
  va_list ap;
  va_start (ap, fmt);
  char *ctx = kiln_xvasprintf (fmt, ap);
  va_end (ap);
  if (*err == NULL)
    {
      kiln_error_set (err, KILN_ERR_FAILED, 0, "%s", ctx);
      free (ctx);
      return -1;
    }
  char *joined = NULL;
  joined = kiln_xasprintf ("%s: %s", ctx, (*err)->message);
  free (ctx);
  free ((*err)->message);
  (*err)->message = joined;
  return -1;
}

void
kiln_error_move (kiln_error **dst, kiln_error **src)
{
  if (dst == NULL)
    {
      kiln_error_freep (src);
      return;
    }
  kiln_error_free (*dst);
  *dst = *src;
  *src = NULL;
}

void
kiln_error_free (kiln_error *e)
{
  if (e == NULL)
    return;
  free (e->message);
  free (e);
}

void
kiln_error_freep (kiln_error **e)
{
  kiln_error_free (*e);
  *e = NULL;
}

const char *
kiln_error_message (const kiln_error *e)
{
  return e && e->message ? e->message : "unknown error";
}
