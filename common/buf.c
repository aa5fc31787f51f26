/* buf.c - growable NUL-terminated byte buffer (see buf.h). */
#include "buf.h"
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
reserve (struct kiln_buf *b, size_t extra)
{
  if (b->len + extra + 1 <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < b->len + extra + 1)
    cap *= 2;
  char *d = realloc (b->data, cap);
  if (d == NULL)
    abort ();
  b->data = d;
  b->cap = cap;
}

void
kiln_buf_append (struct kiln_buf *b, const void *data, size_t len)
{
  reserve (b, len);
  if (len)
    memcpy (b->data + b->len, data, len);
  b->len += len;
  b->data[b->len] = '\0';
}

void
kiln_buf_puts (struct kiln_buf *b, const char *s)
{
  kiln_buf_append (b, s, strlen (s));
}

void
kiln_buf_vprintf (struct kiln_buf *b, const char *fmt, va_list ap)
{
  va_list ap2;
  va_copy (ap2, ap);
  int n = vsnprintf (NULL, 0, fmt, ap2);
  va_end (ap2);
  if (n < 0)
    abort ();
  reserve (b, (size_t) n);
  vsnprintf (b->data + b->len, (size_t) n + 1, fmt, ap);
  b->len += (size_t) n;
}

void
kiln_buf_printf (struct kiln_buf *b, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  kiln_buf_vprintf (b, fmt, ap);
  va_end (ap);
}

void
kiln_buf_reset (struct kiln_buf *b)
{
  b->len = 0;
  if (b->data)
    b->data[0] = '\0';
}

char *
kiln_buf_steal (struct kiln_buf *b)
{
  if (b->data == NULL)
    {
      return kiln_xstrdup ("");
    }
  char *s = b->data;
  b->data = NULL;
  b->len = b->cap = 0;
  return s;
}

const char *
kiln_buf_str (const struct kiln_buf *b)
{
  return b->data ? b->data : "";
}

void
kiln_buf_release (struct kiln_buf *b)
{
  free (b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
