/* utf8.c - UTF-8 validity, and text made safe for XML 1.0 (see utf8.h). */
#include "utf8.h"

#include <stdint.h>
#include <string.h>

#include "buf.h"

/* The length of the valid sequence at p (1 to 4) with its code point in
 * *cp, or 0 when the bytes there are not one. */
static size_t
sequence (const unsigned char *p, uint32_t *cp)
{
  uint32_t c = p[0];
  size_t extra;
  uint32_t min;
  if (c < 0x80)
    {
      *cp = c;
      return 1;
    }
  if ((c & 0xe0) == 0xc0)
    extra = 1, min = 0x80, c &= 0x1f;
  else if ((c & 0xf0) == 0xe0)
    extra = 2, min = 0x800, c &= 0x0f;
  else if ((c & 0xf8) == 0xf0)
    extra = 3, min = 0x10000, c &= 0x07;
  else
    return 0;
  for (size_t i = 1; i <= extra; i++)
    {
      if ((p[i] & 0xc0) != 0x80) /* also stops at the NUL */
        return 0;
      c = (c << 6) | (p[i] & 0x3f);
    }
  if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
    return 0;
  *cp = c;
  return extra + 1;
}

static bool
xml_char (uint32_t c)
{
  if (c < 0x20)
    return c == '\t' || c == '\n' || c == '\r';
  return c != 0xfffe && c != 0xffff;
}

bool
kiln_utf8_valid (const char *s)
{
  const unsigned char *p = (const unsigned char *) s;
  uint32_t c;
  while (*p)
    {
      size_t n = sequence (p, &c);
      if (n == 0)
        return false;
      p += n;
    }
  return true;
}

bool
kiln_utf8_xml_safe (const char *s)
{
  const unsigned char *p = (const unsigned char *) s;
  uint32_t c;
  while (*p)
    {
      size_t n = sequence (p, &c);
      if (n == 0 || !xml_char (c))
        return false;
      p += n;
    }
  return true;
}

char *
kiln_utf8_for_xml (const char *s)
{
  struct kiln_buf b = KILN_BUF_INIT;
  kiln_buf_puts (&b, "");
  const unsigned char *p = (const unsigned char *) s;
  uint32_t c;
  while (*p)
    {
      size_t n = sequence (p, &c);
      if (n > 0 && xml_char (c))
        kiln_buf_append (&b, p, n);
      else
        kiln_buf_puts (&b, "\xef\xbf\xbd");
      p += n ? n : 1;
    }
  return kiln_buf_steal (&b);
}
