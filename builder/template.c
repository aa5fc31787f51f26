/* template.c - parsing and expanding `{{ ... }}` expressions (see template.h).
 *
 * The grammar is deliberately small: a reference is dot-separated names, and
 * the only other syntax is one optional `[index]` after inputs/outputs.  Text
 * outside the braces is copied as is; a "}}" with no "{{" before it is plain
 * text, but an opening "{{" without its "}}" is an error, because a silently
 * literal "{{ Name" would hide a typo. */
#include "template.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "xalloc.h"

static bool
is_name_char (char c)
{
  return isalnum ((unsigned char) c) || c == '_' || c == '-';
}

/* Copies one name (letters, digits, '_' and '-') from *p into dst. */
static int
take_name (const char **p, char *dst, size_t cap)
{
  size_t n = 0;
  while (is_name_char ((*p)[n]))
    n++;
  if (n == 0 || n >= cap)
    return -1;
  memcpy (dst, *p, n);
  dst[n] = '\0';
  *p += n;
  return 0;
}

int
kiln_ref_parse (const char *expr, struct kiln_ref *out, kiln_error **err)
{
  memset (out, 0, sizeof *out);
  out->index = -1;
  if (*expr == '\0')
    return kiln_fail_invalid (err, "empty expression '{{ }}'");

  /* Split into at most 4 parts; the third may carry [index]. */
  char parts[4][256];
  long index = -1;
  int n = 0;
  const char *p = expr;
  for (;;)
    {
      if (n == 4)
        return kiln_fail_invalid (err, "bad expression '%s': too many parts", expr);
      if (take_name (&p, parts[n], sizeof parts[n]) < 0)
        return kiln_fail_invalid (err, "bad expression '%s'", expr);
      n++;
      if (*p == '[')
        {
          if (n != 3)
            return kiln_fail_invalid (err, "bad expression '%s': an index may only follow inputs or outputs",
                                      expr);
          char *end = NULL;
          index = strtol (p + 1, &end, 10);
          if (end == p + 1 || *end != ']' || index < 0)
            return kiln_fail_invalid (err, "bad expression '%s': bad index", expr);
          p = end + 1;
        }
      if (*p == '\0')
        break;
      if (*p != '.')
        return kiln_fail_invalid (err, "bad expression '%s'", expr);
      p++;
    }

  switch (n)
    {
    case 1:
      out->kind = KILN_REF_VARIABLE;
      strcpy (out->name, parts[0]);
      return 0;
    case 2:
      if (strcmp (parts[1], "index") != 0 && strcmp (parts[1], "value") != 0)
        return kiln_fail_invalid (err, "bad expression '%s': a loop reference ends in .index or .value", expr);
      out->kind = KILN_REF_LOOP;
      strcpy (out->name, parts[0]);
      strcpy (out->field, parts[1]);
      return 0;
    case 4:
      if (strcmp (parts[2], "inputs") != 0 && strcmp (parts[2], "outputs") != 0)
        return kiln_fail_invalid (err, "bad expression '%s': expected phase.step.inputs.name or phase.step.outputs.name",
                                  expr);
      out->kind = KILN_REF_CHAIN;
      strcpy (out->name, parts[0]);
      strcpy (out->step, parts[1]);
      out->outputs = strcmp (parts[2], "outputs") == 0;
      out->index = index;
      strcpy (out->field, parts[3]);
      return 0;
    default:
      return kiln_fail_invalid (err,
                                "bad expression '%s': expected Name, loop.index, loop.value or phase.step.outputs.name",
                                expr);
    }
}

int
kiln_template_expand (const char *text, kiln_ref_resolver resolve, void *opaque, struct kiln_buf *out,
                      kiln_error **err)
{
  const char *p = text;
  for (;;)
    {
      const char *open = strstr (p, "{{");
      if (open == NULL)
        {
          kiln_buf_puts (out, p);
          return 0;
        }
      kiln_buf_append (out, p, (size_t) (open - p));
      const char *close = strstr (open + 2, "}}");
      if (close == NULL)
        return kiln_fail_invalid (err, "unterminated '{{' in '%s'", text);
      const char *a = open + 2, *b = close;
      while (a < b && isspace ((unsigned char) *a))
        a++;
      while (b > a && isspace ((unsigned char) b[-1]))
        b--;
      _cleanup_free_ char *expr = kiln_xstrndup (a, (size_t) (b - a));
      struct kiln_ref ref;
      if (kiln_ref_parse (expr, &ref, err) < 0)
        return -1;
      if (resolve (opaque, &ref, out, err) < 0)
        return -1;
      p = close + 2;
    }
}

bool
kiln_template_has_expression (const char *text)
{
  return strstr (text, "{{") != NULL;
}
