/* request.c - the request object every service reads (emulator.h): its
 * headers and query parameters, and form-encoded parameters decoded into a
 * call (EC2 Query's bodies and any query string, which dispatch.c checks is
 * form encoding before a signature over it is verified). */
#include "emulator.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "digest.h"
#include "utf8.h"
#include "xalloc.h"

const char *
emu_request_header (const struct emu_request *req, const char *name)
{
  for (size_t i = 0; i < req->n_headers; i++)
    if (strcasecmp (req->headers[i].name, name) == 0)
      return req->headers[i].value;
  return NULL;
}

const char *
emu_request_query (const struct emu_request *req, const char *name)
{
  for (size_t i = 0; i < req->n_query; i++)
    if (strcmp (req->query[i].name, name) == 0)
      return req->query[i].value ? req->query[i].value : "";
  return NULL;
}

/* Whether every '%' in s[0..len) starts a %XX escape. */
static bool
escapes_valid (const char *s, size_t len)
{
  for (size_t i = 0; i < len; i++)
    if (s[i] == '%'
        && (i + 2 >= len || kiln_hex_digit_value (s[i + 1]) < 0 || kiln_hex_digit_value (s[i + 2]) < 0))
      return false;
  return true;
}

void
emu_params_add (struct emu_call *c, char *name, char *value)
{
  c->params = realloc (c->params, (c->n_params + 1) * sizeof *c->params);
  if (c->params == NULL)
    abort ();
  c->params[c->n_params++] = (struct emu_param){name, value};
}

/* Splits an application/x-www-form-urlencoded body ('+' is a space) into
 * the call's parameters.  A pair without a name or with a broken escape is
 * a malformed query string, as EC2 calls it. */
int
emu_form_parse (struct emu_call *c, const char *body, size_t len)
{
  size_t i = 0;
  while (i < len)
    {
      size_t end = i;
      while (end < len && body[end] != '&')
        end++;
      if (end > i)
        {
          const char *eq = memchr (body + i, '=', end - i);
          size_t name_len = eq ? (size_t) (eq - (body + i)) : end - i;
          if (name_len == 0)
            return emu_fail (c, 400, "MalformedQueryString", "The query string contains a parameter with no name "
                             "at byte %zu.", i);
          if (!escapes_valid (body + i, end - i))
            return emu_fail (c, 400, "MalformedQueryString", "The query string contains an invalid %%-escape in "
                             "'%.*s'.", (int) (end - i > 64 ? 64 : end - i), body + i);
          size_t nlen, vlen;
          char *name = kiln_sigv4_uri_decode (body + i, name_len, true, &nlen);
          char *value = eq ? kiln_sigv4_uri_decode (eq + 1, (size_t) (body + end - eq - 1), true, &vlen)
                           : kiln_xstrdup ("");
          if (strlen (name) != nlen || (eq && strlen (value) != vlen))
            {
              free (name);
              free (value);
              return emu_fail (c, 400, "MalformedQueryString", "The query string contains a NUL byte.");
            }
          if (!kiln_utf8_valid (name) || !kiln_utf8_valid (value))
            {
              int r = emu_fail (c, 400, "MalformedQueryString", "The query string parameter '%s' is not valid "
                                "UTF-8.", name);
              free (name);
              free (value);
              return r;
            }
          emu_params_add (c, name, value);
        }
      i = end + 1;
    }
  return 0;
}

void
emu_params_free (struct emu_call *c)
{
  for (size_t i = 0; i < c->n_params; i++)
    {
      free (c->params[i].name);
      free (c->params[i].value);
    }
  free (c->params);
  c->params = NULL;
  c->n_params = 0;
}

