/* buf.h - a growable byte buffer, always NUL-terminated so text can be used
 * as a C string directly.  Allocation failure aborts: kiln does not try to
 * run on after the heap is exhausted. */
#ifndef KILN_COMMON_BUF_H
#define KILN_COMMON_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct kiln_buf {
  char *data; /* NULL until the first append; then NUL-terminated */
  size_t len;
  size_t cap;
};

#define KILN_BUF_INIT {NULL, 0, 0}

void kiln_buf_append (struct kiln_buf *b, const void *data, size_t len);
void kiln_buf_puts (struct kiln_buf *b, const char *s);
void kiln_buf_printf (struct kiln_buf *b, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
void kiln_buf_vprintf (struct kiln_buf *b, const char *fmt, va_list ap);
void kiln_buf_reset (struct kiln_buf *b);
/* The contents as a malloc'd NUL-terminated string ("" when empty); b is left empty. */
char *kiln_buf_steal (struct kiln_buf *b);
/* The contents as a C string, "" when nothing was appended. */
const char *kiln_buf_str (const struct kiln_buf *b);
void kiln_buf_release (struct kiln_buf *b);

#endif
