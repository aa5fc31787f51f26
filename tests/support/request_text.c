/* request_text.c - HTTP requests written as text (see request_text.h). */
#include "request_text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"
#include "digest.h"
#include "xalloc.h"

void
request_text_release (struct request_text *r)
{
  free (r->method);
  free (r->target);
  for (size_t i = 0; i < r->n_headers; i++)
    {
      free ((char *) r->headers[i].name);
      free ((char *) r->headers[i].value);
    }
  free (r->body);
  free (r->path);
  kiln_sigv4_pairs_free (r->query, r->n_query);
  memset (r, 0, sizeof *r);
}

bool
request_text_parse (const char *text, size_t len, struct request_text *out)
{
  memset (out, 0, sizeof *out);
  const char *end = text + len;
  const char *eol = memchr (text, '\n', len);
  if (eol == NULL)
    return false;
  _cleanup_free_ char *line = kiln_xstrndup (text, (size_t) (eol - text));
  char *sp1 = strchr (line, ' ');
  char *sp2 = sp1 ? strchr (sp1 + 1, ' ') : NULL;
  if (sp1 == NULL || sp2 == NULL || sp1 == line)
    return false;
  out->method = kiln_xstrndup (line, (size_t) (sp1 - line));
  out->target = kiln_xstrndup (sp1 + 1, (size_t) (sp2 - sp1 - 1));
  const char *p = eol + 1;
  while (p < end && *p != '\n')
    {
      const char *nl = memchr (p, '\n', (size_t) (end - p));
      const char *stop = nl ? nl : end;
      const char *colon = memchr (p, ':', (size_t) (stop - p));
      if (colon == NULL || colon == p || out->n_headers == REQUEST_TEXT_MAX_HEADERS
          || memchr (p, '\0', (size_t) (stop - p)))
        {
          request_text_release (out);
          return false;
        }
      const char *v = colon + 1;
      while (v < stop && *v == ' ')
        v++;
      out->headers[out->n_headers].name = kiln_xstrndup (p, (size_t) (colon - p));
      out->headers[out->n_headers].value = kiln_xstrndup (v, (size_t) (stop - v));
      out->n_headers++;
      p = nl ? nl + 1 : end;
    }
  if (p < end)
    p++; /* the blank line */
  out->body_len = (size_t) (end - p);
  out->body = malloc (out->body_len + 1);
  if (out->body == NULL)
    abort ();
  memcpy (out->body, p, out->body_len);
  out->body[out->body_len] = '\0';
  return true;
}

const char *
request_text_header (const struct request_text *r, const char *name)
{
  for (size_t i = 0; i < r->n_headers; i++)
    if (strcasecmp (r->headers[i].name, name) == 0)
      return r->headers[i].value;
  return NULL;
}

static void
remove_header (struct request_text *r, const char *name)
{
  for (size_t i = 0; i < r->n_headers; i++)
    if (strcasecmp (r->headers[i].name, name) == 0)
      {
        free ((char *) r->headers[i].name);
        free ((char *) r->headers[i].value);
        r->headers[i] = r->headers[--r->n_headers];
        return;
      }
}

static bool
add_header (struct request_text *r, const char *name, const char *value)
{
  if (r->n_headers == REQUEST_TEXT_MAX_HEADERS)
    return false;
  r->headers[r->n_headers].name = kiln_xstrdup (name);
  r->headers[r->n_headers].value = kiln_xstrdup (value);
  r->n_headers++;
  return true;
}

void
request_text_view (struct request_text *r, struct emu_request *out)
{
  const char *q = strchr (r->target, '?');
  if (r->path == NULL)
    {
      r->path = kiln_sigv4_uri_decode (r->target, q ? (size_t) (q - r->target) : strlen (r->target), false, NULL);
      if (q)
        kiln_sigv4_parse_query (q + 1, &r->query, &r->n_query);
    }
  *out = (struct emu_request){
    .method = r->method, .path = r->path, .raw_query = q ? q + 1 : NULL, .query = r->query, .n_query = r->n_query,
    .headers = r->headers, .n_headers = r->n_headers, .body = r->body, .body_len = r->body_len};
}

void
request_text_sign (struct request_text *r, time_t now, struct kiln_buf *diag)
{
  const char *sign = request_text_header (r, "X-Kiln-Sign");
  char key[64], secret[64], region[64], service[64];
  if (sign == NULL || sscanf (sign, "%63s %63s %63s %63s", key, secret, region, service) != 4)
    return;
  remove_header (r, "X-Kiln-Sign");
  char date[KILN_SIGV4_AMZ_DATE_LEN + 1];
  if (request_text_header (r, "X-Amz-Date") == NULL)
    {
      kiln_sigv4_format_amz_date (now, date);
      add_header (r, "X-Amz-Date", date);
    }
  const char *amz_date = request_text_header (r, "X-Amz-Date");
  if (amz_date == NULL)
    return;
  snprintf (date, sizeof date, "%s", amz_date);
  /* What the client signed: the body's hash, or UNSIGNED-PAYLOAD when its
   * x-amz-content-sha256 says so (as SDKs do). */
  char hash[KILN_SHA256_LEN * 2 + 1];
  kiln_sha256_hex (r->body, r->body_len, hash);
  const char *claimed = request_text_header (r, "X-Amz-Content-Sha256");
  if (claimed && strcmp (claimed, KILN_SIGV4_UNSIGNED_PAYLOAD) == 0)
    snprintf (hash, sizeof hash, "%s", claimed);
  struct emu_request view;
  request_text_view (r, &view);
  struct kiln_sigv4_request sreq = {
    .method = r->method, .path = r->path, .query = r->query, .n_query = r->n_query, .headers = r->headers,
    .n_headers = r->n_headers, .payload_hash = hash, .flags = kiln_sigv4_service_flags (service)};
  struct kiln_sigv4_signer signer = {
    .access_key_id = key, .secret_access_key = secret, .amz_date = date, .region = region, .service = service};
  struct kiln_sigv4_result res = {0};
  _cleanup_error_ kiln_error *err = NULL;
  if (kiln_sigv4_sign (&sreq, &signer, &res, &err) == 0)
    add_header (r, "Authorization", res.authorization);
  else if (diag)
    kiln_buf_printf (diag, "# signing failed: %s\n", kiln_error_message (err));
  kiln_sigv4_result_release (&res);
}
