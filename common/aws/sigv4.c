/* sigv4.c - AWS Signature Version 4 signing and verification (see sigv4.h).
 *
 * Both directions share one core, compute(): build the canonical request from
 * method, canonical URI, canonical query, the canonical headers restricted to
 * the ones being signed and the payload hash; hash it into the string to sign;
 * HMAC it with the key derived from the secret and the credential scope.  The
 * signer feeds it what it is about to send; the verifier feeds it what it
 * received, restricted to the header names the sender listed, so the two can
 * only disagree when the request was altered or the secret differs. */
#include "sigv4.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "xalloc.h"
#include "digest.h"

#define SCOPE_TERMINATOR "aws4_request"

/* ---- small helpers ---- */




static bool
is_unreserved (unsigned char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'
         || c == '_' || c == '.' || c == '~';
}

static bool
is_space (char c)
{
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}


static bool
is_lower_hex64 (const char *s)
{
  if (s == NULL || strlen (s) != KILN_SHA256_LEN * 2)
    return false;
  for (const char *p = s; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
      return false;
  return true;
}

/* A piece of a scope (region, service, access key) must be non-empty and
 * cannot hold the '/' that separates the scope's parts. */
static int
check_scope_part (const char *what, const char *s, kiln_error **err)
{
  if (s == NULL || *s == '\0')
    return kiln_fail_invalid (err, "SigV4: %s is empty", what);
  if (strchr (s, '/') || strpbrk (s, " \t\r\n"))
    return kiln_fail_invalid (err, "SigV4: %s '%s' contains '/' or whitespace", what, s);
  return 0;
}

static int
check_amz_date (const char *s, kiln_error **err)
{
  time_t t;
  return kiln_sigv4_parse_amz_date (s, &t, err);
}

static void
strv_push (char ***v, size_t *n, char *s)
{
  char **nv = realloc (*v, (*n + 2) * sizeof **v);
  if (nv == NULL)
    abort ();
  nv[(*n)++] = s;
  nv[*n] = NULL;
  *v = nv;
}

/* Constant-time comparison of two equal-length strings, so a server does not
 * reveal through timing how many leading signature characters were right. */
static bool
equal_constant_time (const char *a, const char *b)
{
  size_t la = strlen (a), lb = strlen (b);
  if (la != lb)
    return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < la; i++)
    diff |= (unsigned char) (a[i] ^ b[i]);
  return diff == 0;
}

/* ---- encoding ---- */

void
kiln_sigv4_uri_encode_buf (struct kiln_buf *b, const char *s, size_t len, bool keep_slash)
{
  static const char hex[] = "0123456789ABCDEF";
  for (size_t i = 0; i < len; i++)
    {
      unsigned char c = (unsigned char) s[i];
      if (is_unreserved (c) || (keep_slash && c == '/'))
        kiln_buf_append (b, &s[i], 1);
      else
        {
          char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
          kiln_buf_append (b, esc, 3);
        }
    }
  if (b->data == NULL)
    kiln_buf_append (b, "", 0);
}

char *
kiln_sigv4_uri_encode (const char *s, bool keep_slash)
{
  struct kiln_buf b = KILN_BUF_INIT;
  kiln_sigv4_uri_encode_buf (&b, s ? s : "", s ? strlen (s) : 0, keep_slash);
  return kiln_buf_steal (&b);
}

char *
kiln_sigv4_uri_decode (const char *s, size_t len, bool plus_is_space, size_t *out_len)
{
  char *r = kiln_xcalloc (len + 1, 1);
  size_t o = 0;
  for (size_t i = 0; i < len; i++)
    {
      if (s[i] == '%' && i + 2 < len)
        {
          int hi = kiln_hex_digit_value (s[i + 1]);
          int lo = kiln_hex_digit_value (s[i + 2]);
          if (hi >= 0 && lo >= 0)
            {
              r[o++] = (char) (hi << 4 | lo);
              i += 2;
              continue;
            }
        }
      r[o++] = (plus_is_space && s[i] == '+') ? ' ' : s[i];
    }
  r[o] = '\0';
  if (out_len)
    *out_len = o;
  return r;
}

void
kiln_sigv4_parse_query (const char *query, struct kiln_sigv4_pair **out, size_t *n_out)
{
  size_t cap = 1, n = 0;
  for (const char *p = query ? query : ""; *p; p++)
    if (*p == '&')
      cap++;
  struct kiln_sigv4_pair *pairs = kiln_xcalloc (cap, sizeof *pairs);
  const char *p = query ? query : "";
  while (*p)
    {
      const char *end = strchr (p, '&');
      size_t seg = end ? (size_t) (end - p) : strlen (p);
      if (seg > 0)
        {
          const char *eq = memchr (p, '=', seg);
          size_t nlen = eq ? (size_t) (eq - p) : seg;
          pairs[n].name = kiln_sigv4_uri_decode (p, nlen, false, NULL);
          pairs[n].value = eq ? kiln_sigv4_uri_decode (eq + 1, seg - nlen - 1, false, NULL) : kiln_xstrdup ("");
          n++;
        }
      p += seg;
      if (*p == '&')
        p++;
    }
  *out = pairs;
  *n_out = n;
}

void
kiln_sigv4_pairs_free (struct kiln_sigv4_pair *pairs, size_t n)
{
  if (pairs == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    {
      free ((char *) pairs[i].name);
      free ((char *) pairs[i].value);
    }
  free (pairs);
}

/* ---- canonical pieces ---- */

unsigned
kiln_sigv4_service_flags (const char *service)
{
  if (service && strcmp (service, "s3") == 0)
    return 0;
  return KILN_SIGV4_NORMALIZE_PATH | KILN_SIGV4_DOUBLE_ENCODE;
}

/* Removes empty, "." and ".." segments; keeps a trailing slash (RFC 3986
 * section 5.2.4 as AWS applies it: "//example//" -> "/example/"). */
static char *
normalize_path (const char *path)
{
  size_t len = strlen (path);
  const char **seg = kiln_xcalloc (len + 1, sizeof *seg);
  size_t *seglen = kiln_xcalloc (len + 1, sizeof *seglen);
  size_t n = 0;
  const char *p = path;
  while (*p)
    {
      while (*p == '/')
        p++;
      if (*p == '\0')
        break;
      const char *e = strchr (p, '/');
      size_t l = e ? (size_t) (e - p) : strlen (p);
      if (l == 1 && p[0] == '.')
        ;
      else if (l == 2 && p[0] == '.' && p[1] == '.')
        {
          if (n > 0)
            n--;
        }
      else
        {
          seg[n] = p;
          seglen[n] = l;
          n++;
        }
      p += l;
    }
  struct kiln_buf b = KILN_BUF_INIT;
  for (size_t i = 0; i < n; i++)
    {
      kiln_buf_puts (&b, "/");
      kiln_buf_append (&b, seg[i], seglen[i]);
    }
  if (n == 0 || (len > 0 && path[len - 1] == '/'))
    kiln_buf_puts (&b, "/");
  free (seg);
  free (seglen);
  return kiln_buf_steal (&b);
}

char *
kiln_sigv4_canonical_uri (const char *path, unsigned flags)
{
  _cleanup_free_ char *withslash = NULL;
  if (path == NULL || *path == '\0')
    path = "/";
  if (path[0] != '/')
    {
      withslash = kiln_xasprintf ("/%s", path);
      path = withslash;
    }
  _cleanup_free_ char *norm = (flags & KILN_SIGV4_NORMALIZE_PATH) ? normalize_path (path) : NULL;
  char *once = kiln_sigv4_uri_encode (norm ? norm : path, true);
  if (!(flags & KILN_SIGV4_DOUBLE_ENCODE))
    return once;
  char *twice = kiln_sigv4_uri_encode (once, true);
  free (once);
  return twice;
}

struct enc_pair {
  char *name;
  char *value;
};

static int
cmp_enc_pair (const void *a, const void *b)
{
  const struct enc_pair *x = a, *y = b;
  int c = strcmp (x->name, y->name);
  return c ? c : strcmp (x->value, y->value);
}

char *
kiln_sigv4_canonical_query (const struct kiln_sigv4_pair *query, size_t n)
{
  struct enc_pair *e = kiln_xcalloc (n, sizeof *e);
  for (size_t i = 0; i < n; i++)
    {
      e[i].name = kiln_sigv4_uri_encode (query[i].name, false);
      e[i].value = kiln_sigv4_uri_encode (query[i].value ? query[i].value : "", false);
    }
  qsort (e, n, sizeof *e, cmp_enc_pair);
  struct kiln_buf b = KILN_BUF_INIT;
  for (size_t i = 0; i < n; i++)
    {
      kiln_buf_printf (&b, "%s%s=%s", i ? "&" : "", e[i].name, e[i].value);
      free (e[i].name);
      free (e[i].value);
    }
  free (e);
  return kiln_buf_steal (&b);
}

/* Appends a header value trimmed, with runs of whitespace collapsed. */
static void
append_trimmed_value (struct kiln_buf *b, const char *v)
{
  if (v == NULL)
    return;
  while (is_space (*v))
    v++;
  bool pending_space = false;
  for (; *v; v++)
    {
      if (is_space (*v))
        {
          pending_space = true;
          continue;
        }
      if (pending_space)
        kiln_buf_append (b, " ", 1);
      pending_space = false;
      kiln_buf_append (b, v, 1);
    }
}

/* A header name lowercased and stripped of surrounding whitespace. */
static char *
lower_name (const char *name)
{
  while (is_space (*name))
    name++;
  size_t l = strlen (name);
  while (l > 0 && is_space (name[l - 1]))
    l--;
  char *r = kiln_xstrndup (name, l);
  for (char *p = r; *p; p++)
    *p = (char) tolower ((unsigned char) *p);
  return r;
}

struct hdr {
  char *name;        /* lowercased */
  const char *value; /* as given */
  size_t index;      /* position given, so equal names keep their order */
};

static int
cmp_hdr (const void *a, const void *b)
{
  const struct hdr *x = a, *y = b;
  int c = strcmp (x->name, y->name);
  if (c)
    return c;
  return x->index < y->index ? -1 : x->index > y->index;
}

static bool
strv_contains (char *const *v, const char *s)
{
  for (; v && *v; v++)
    if (strcmp (*v, s) == 0)
      return true;
  return false;
}

/* Builds the canonical headers block ("name:value\n" each) and the signed
 * header list.  With only != NULL, headers whose names are not listed are left
 * out and every listed name must be present. */
static int
canonical_headers (const struct kiln_sigv4_pair *headers, size_t n, char *const *only,
                   struct kiln_buf *canon, struct kiln_buf *signed_names, kiln_error **err)
{
  struct hdr *h = kiln_xcalloc (n, sizeof *h);
  size_t m = 0;
  int ret = 0;
  for (size_t i = 0; i < n; i++)
    {
      if (headers[i].name == NULL)
        continue;
      char *name = lower_name (headers[i].name);
      if (*name == '\0')
        {
          free (name);
          ret = kiln_fail_invalid (err, "SigV4: a header has an empty name");
          goto out;
        }
      if (only && !strv_contains (only, name))
        {
          free (name);
          continue;
        }
      h[m].name = name;
      h[m].value = headers[i].value;
      h[m].index = i;
      m++;
    }
  qsort (h, m, sizeof *h, cmp_hdr);
  for (size_t i = 0; i < m; i++)
    {
      bool first = i == 0 || strcmp (h[i - 1].name, h[i].name) != 0;
      if (first)
        {
          if (i > 0)
            kiln_buf_puts (canon, "\n");
          kiln_buf_printf (canon, "%s:", h[i].name);
          kiln_buf_printf (signed_names, "%s%s", i ? ";" : "", h[i].name);
        }
      else
        kiln_buf_puts (canon, ",");
      append_trimmed_value (canon, h[i].value);
    }
  if (m > 0)
    kiln_buf_puts (canon, "\n");
  for (char *const *o = only; o && *o; o++)
    {
      bool found = false;
      for (size_t i = 0; i < m && !found; i++)
        found = strcmp (h[i].name, *o) == 0;
      if (!found)
        {
          ret = kiln_fail_invalid (err, "SigV4: signed header '%s' is not in the request", *o);
          goto out;
        }
    }
  if (canon->data == NULL)
    kiln_buf_append (canon, "", 0);
  if (signed_names->data == NULL)
    kiln_buf_append (signed_names, "", 0);
out:
  for (size_t i = 0; i < m; i++)
    free (h[i].name);
  free (h);
  return ret;
}

void
kiln_sigv4_signing_key (const char *secret_access_key, const char *date, const char *region,
                        const char *service, unsigned char out[KILN_SHA256_LEN])
{
  struct kiln_buf k = KILN_BUF_INIT;
  kiln_buf_printf (&k, "AWS4%s", secret_access_key);
  unsigned char a[KILN_SHA256_LEN], b[KILN_SHA256_LEN];
  kiln_hmac_sha256 (k.data, k.len, date, strlen (date), a);
  kiln_hmac_sha256 (a, sizeof a, region, strlen (region), b);
  kiln_hmac_sha256 (b, sizeof b, service, strlen (service), a);
  kiln_hmac_sha256 (a, sizeof a, SCOPE_TERMINATOR, strlen (SCOPE_TERMINATOR), out);
  /* The buffer held the secret: do not leave it in freed heap memory. */
  explicit_bzero (k.data, k.len);
  explicit_bzero (a, sizeof a);
  explicit_bzero (b, sizeof b);
  kiln_buf_release (&k);
}

void
kiln_sigv4_result_release (struct kiln_sigv4_result *r)
{
  if (r == NULL)
    return;
  free (r->canonical_request);
  free (r->string_to_sign);
  free (r->credential_scope);
  free (r->signed_headers);
  free (r->query_string);
  free (r->authorization);
  memset (r, 0, sizeof *r);
}

/* What compute() signs: everything already decided by the caller. */
struct sign_input {
  const char *method;
  const char *path;
  unsigned flags;
  const struct kiln_sigv4_pair *query;
  size_t n_query;
  const struct kiln_sigv4_pair *headers;
  size_t n_headers;
  char *const *only_headers; /* NULL: sign all headers */
  const char *payload_hash;
  const char *secret;
  const char *amz_date;
  const char *region;
  const char *service;
};

/* The shared core.  Fills out's canonical_request, string_to_sign,
 * credential_scope, signed_headers, query_string (canonical query) and
 * signature. */
static int
compute (const struct sign_input *in, struct kiln_sigv4_result *out, kiln_error **err)
{
  if (in->method == NULL || *in->method == '\0')
    return kiln_fail_invalid (err, "SigV4: the request has no method");
  if (in->payload_hash == NULL || *in->payload_hash == '\0' || strpbrk (in->payload_hash, "\r\n"))
    return kiln_fail_invalid (err, "SigV4: the payload hash is empty or malformed");
  if (check_amz_date (in->amz_date, err) < 0)
    return -1;
  if (check_scope_part ("region", in->region, err) < 0 || check_scope_part ("service", in->service, err) < 0)
    return -1;
  if (in->secret == NULL)
    return kiln_fail_invalid (err, "SigV4: no secret access key");

  struct kiln_buf canon = KILN_BUF_INIT, names = KILN_BUF_INIT;
  if (canonical_headers (in->headers, in->n_headers, in->only_headers, &canon, &names, err) < 0)
    {
      kiln_buf_release (&canon);
      kiln_buf_release (&names);
      return -1;
    }
  _cleanup_free_ char *uri = kiln_sigv4_canonical_uri (in->path, in->flags);
  char *query = kiln_sigv4_canonical_query (in->query, in->n_query);

  struct kiln_buf creq = KILN_BUF_INIT;
  kiln_buf_printf (&creq, "%s\n%s\n%s\n%s\n%s\n%s", in->method, uri, query, kiln_buf_str (&canon),
                   kiln_buf_str (&names), in->payload_hash);
  kiln_buf_release (&canon);

  char date[9];
  memcpy (date, in->amz_date, 8);
  date[8] = '\0';
  char *scope = NULL;
  scope = kiln_xasprintf ("%s/%s/%s/" SCOPE_TERMINATOR, date, in->region, in->service);

  char creq_hash[KILN_SHA256_LEN * 2 + 1];
  kiln_sha256_hex (creq.data, creq.len, creq_hash);
  char *sts = NULL;
  sts = kiln_xasprintf (KILN_SIGV4_ALGORITHM "\n%s\n%s\n%s", in->amz_date, scope, creq_hash);

  unsigned char key[KILN_SHA256_LEN], mac[KILN_SHA256_LEN];
  kiln_sigv4_signing_key (in->secret, date, in->region, in->service, key);
  kiln_hmac_sha256 (key, sizeof key, sts, strlen (sts), mac);
  explicit_bzero (key, sizeof key);

  kiln_sigv4_result_release (out);
  kiln_hex_encode (mac, sizeof mac, out->signature);
  out->canonical_request = kiln_buf_steal (&creq);
  out->string_to_sign = sts;
  out->credential_scope = scope;
  out->signed_headers = kiln_buf_steal (&names);
  out->query_string = query;
  return 0;
}

int
kiln_sigv4_compute (const struct kiln_sigv4_request *req, char *const *signed_headers,
                    const char *secret_access_key, const char *amz_date, const char *region, const char *service,
                    struct kiln_sigv4_result *out, kiln_error **err)
{
  memset (out, 0, sizeof *out);
  struct sign_input in = {
    .method = req->method,
    .path = req->path,
    .flags = req->flags,
    .query = req->query,
    .n_query = req->n_query,
    .headers = req->headers,
    .n_headers = req->n_headers,
    .only_headers = signed_headers,
    .payload_hash = req->payload_hash ? req->payload_hash : KILN_SIGV4_EMPTY_SHA256,
    .secret = secret_access_key,
    .amz_date = amz_date,
    .region = region,
    .service = service,
  };
  return compute (&in, out, err);
}

void
kiln_sigv4_chunk_signature (const unsigned char signing_key[KILN_SHA256_LEN], const char *amz_date,
                            const char *credential_scope, const char *previous_signature,
                            const char *chunk_sha256_hex, char out[KILN_SHA256_LEN * 2 + 1])
{
  char *sts = NULL;
  sts = kiln_xasprintf (KILN_SIGV4_ALGORITHM "-PAYLOAD\n%s\n%s\n%s\n" KILN_SIGV4_EMPTY_SHA256 "\n%s", amz_date,
                        credential_scope, previous_signature, chunk_sha256_hex);
  unsigned char mac[KILN_SHA256_LEN];
  kiln_hmac_sha256 (signing_key, KILN_SHA256_LEN, sts, strlen (sts), mac);
  kiln_hex_encode (mac, sizeof mac, out);
  free (sts);
}

static const char *
find_header (const struct kiln_sigv4_pair *headers, size_t n, const char *lname)
{
  for (size_t i = 0; i < n; i++)
    if (headers[i].name && strcasecmp (headers[i].name, lname) == 0)
      return headers[i].value ? headers[i].value : "";
  return NULL;
}

/* The value a header would have in the canonical request (trimmed). */
static char *
trimmed (const char *v)
{
  struct kiln_buf b = KILN_BUF_INIT;
  append_trimmed_value (&b, v);
  return kiln_buf_steal (&b);
}

int
kiln_sigv4_sign (const struct kiln_sigv4_request *req, const struct kiln_sigv4_signer *signer,
                 struct kiln_sigv4_result *out, kiln_error **err)
{
  memset (out, 0, sizeof *out);
  if (check_scope_part ("access key id", signer->access_key_id, err) < 0)
    return -1;
  if (check_amz_date (signer->amz_date, err) < 0)
    return -1;
  if (find_header (req->headers, req->n_headers, "host") == NULL)
    return kiln_fail_invalid (err, "SigV4: the request has no host header to sign");
  const char *xdate = find_header (req->headers, req->n_headers, "x-amz-date");
  if (xdate == NULL)
    return kiln_fail_invalid (err, "SigV4: the request has no x-amz-date header to sign");
  _cleanup_free_ char *xdate_t = trimmed (xdate);
  if (strcmp (xdate_t, signer->amz_date) != 0)
    return kiln_fail_invalid (err, "SigV4: x-amz-date header '%s' differs from the signing date '%s'",
                              xdate_t, signer->amz_date);
  if (signer->session_token)
    {
      const char *tok = find_header (req->headers, req->n_headers, "x-amz-security-token");
      _cleanup_free_ char *tok_t = tok ? trimmed (tok) : NULL;
      if (tok_t == NULL || strcmp (tok_t, signer->session_token) != 0)
        return kiln_fail_invalid (err, "SigV4: credentials carry a session token but the request's "
                                       "x-amz-security-token header is missing or different");
    }

  struct sign_input in = {
    .method = req->method,
    .path = req->path,
    .flags = req->flags,
    .query = req->query,
    .n_query = req->n_query,
    .headers = req->headers,
    .n_headers = req->n_headers,
    .payload_hash = req->payload_hash ? req->payload_hash : KILN_SIGV4_EMPTY_SHA256,
    .secret = signer->secret_access_key,
    .amz_date = signer->amz_date,
    .region = signer->region,
    .service = signer->service,
  };
  if (compute (&in, out, err) < 0)
    return -1;
  out->authorization = kiln_xasprintf (KILN_SIGV4_ALGORITHM " Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                                       signer->access_key_id, out->credential_scope, out->signed_headers,
                                       out->signature);
  return 0;
}

int
kiln_sigv4_presign (const struct kiln_sigv4_request *req, const struct kiln_sigv4_signer *signer,
                    long expires_seconds, struct kiln_sigv4_result *out, kiln_error **err)
{
  memset (out, 0, sizeof *out);
  if (check_scope_part ("access key id", signer->access_key_id, err) < 0)
    return -1;
  if (check_amz_date (signer->amz_date, err) < 0)
    return -1;
  if (check_scope_part ("region", signer->region, err) < 0 || check_scope_part ("service", signer->service, err) < 0)
    return -1;
  if (expires_seconds < 1 || expires_seconds > KILN_SIGV4_MAX_EXPIRES)
    return kiln_fail_invalid (err, "SigV4: presigned URL lifetime %ld s is outside 1..%ld", expires_seconds,
                              KILN_SIGV4_MAX_EXPIRES);
  if (find_header (req->headers, req->n_headers, "host") == NULL)
    return kiln_fail_invalid (err, "SigV4: the request has no host header to sign");
  static const char *const reserved[] = {"X-Amz-Algorithm",     "X-Amz-Credential", "X-Amz-Date",
                                         "X-Amz-Expires",       "X-Amz-SignedHeaders", "X-Amz-Signature",
                                         "X-Amz-Security-Token"};
  for (size_t i = 0; i < req->n_query; i++)
    for (size_t k = 0; req->query[i].name && k < sizeof reserved / sizeof reserved[0]; k++)
      if (strcasecmp (req->query[i].name, reserved[k]) == 0)
        return kiln_fail_invalid (err, "SigV4: query parameter '%s' is set by presigning", req->query[i].name);

  /* The signed header list is part of the query being signed, so work it out
   * first. */
  struct kiln_buf canon = KILN_BUF_INIT, names = KILN_BUF_INIT;
  int r = canonical_headers (req->headers, req->n_headers, NULL, &canon, &names, err);
  kiln_buf_release (&canon);
  if (r < 0)
    {
      kiln_buf_release (&names);
      return -1;
    }
  _cleanup_free_ char *signed_names = kiln_buf_steal (&names);

  char date[9];
  memcpy (date, signer->amz_date, 8);
  date[8] = '\0';
  _cleanup_free_ char *credential = NULL;
  credential = kiln_xasprintf ("%s/%s/%s/%s/" SCOPE_TERMINATOR, signer->access_key_id, date, signer->region,
                               signer->service);
  char expires[32];
  snprintf (expires, sizeof expires, "%ld", expires_seconds);

  size_t n = req->n_query;
  struct kiln_sigv4_pair *q = kiln_xcalloc (n + 6, sizeof *q);
  if (n)
    memcpy (q, req->query, n * sizeof *q);
  q[n++] = (struct kiln_sigv4_pair){"X-Amz-Algorithm", KILN_SIGV4_ALGORITHM};
  q[n++] = (struct kiln_sigv4_pair){"X-Amz-Credential", credential};
  q[n++] = (struct kiln_sigv4_pair){"X-Amz-Date", signer->amz_date};
  q[n++] = (struct kiln_sigv4_pair){"X-Amz-Expires", expires};
  q[n++] = (struct kiln_sigv4_pair){"X-Amz-SignedHeaders", signed_names};
  if (signer->session_token)
    q[n++] = (struct kiln_sigv4_pair){"X-Amz-Security-Token", signer->session_token};

  struct sign_input in = {
    .method = req->method,
    .path = req->path,
    .flags = req->flags,
    .query = q,
    .n_query = n,
    .headers = req->headers,
    .n_headers = req->n_headers,
    .payload_hash = req->payload_hash ? req->payload_hash : KILN_SIGV4_UNSIGNED_PAYLOAD,
    .secret = signer->secret_access_key,
    .amz_date = signer->amz_date,
    .region = signer->region,
    .service = signer->service,
  };
  r = compute (&in, out, err);
  free (q);
  if (r < 0)
    return -1;
  char *full = NULL;
  full = kiln_xasprintf ("%s&X-Amz-Signature=%s", out->query_string, out->signature);
  free (out->query_string);
  out->query_string = full;
  return 0;
}

/* ---- verification ---- */

void
kiln_sigv4_auth_release (struct kiln_sigv4_auth *a)
{
  if (a == NULL)
    return;
  free (a->access_key_id);
  free (a->date);
  free (a->region);
  free (a->service);
  kiln_strv_free (a->signed_headers);
  free (a->signature);
  free (a->amz_date);
  if (a->session_token)
    explicit_bzero (a->session_token, strlen (a->session_token));
  free (a->session_token);
  memset (a, 0, sizeof *a);
  a->expires = -1;
}

/* "AK/20150830/us-east-1/service/aws4_request": the access key is whatever
 * precedes the last four parts. */
static int
parse_credential (const char *cred, struct kiln_sigv4_auth *a, kiln_error **err)
{
  const char *slash[4];
  const char *end = cred + strlen (cred);
  const char *p = end;
  for (int i = 3; i >= 0; i--)
    {
      while (p > cred && p[-1] != '/')
        p--;
      if (p == cred)
        return kiln_fail_invalid (err, "SigV4: malformed credential '%s'", cred);
      slash[i] = p - 1;
      p--;
    }
  if (slash[0] == cred)
    return kiln_fail_invalid (err, "SigV4: credential '%s' has no access key", cred);
  if (strcmp (slash[3] + 1, SCOPE_TERMINATOR) != 0)
    return kiln_fail_invalid (err, "SigV4: credential scope of '%s' does not end in " SCOPE_TERMINATOR, cred);
  a->access_key_id = kiln_xstrndup (cred, (size_t) (slash[0] - cred));
  a->date = kiln_xstrndup (slash[0] + 1, (size_t) (slash[1] - slash[0] - 1));
  a->region = kiln_xstrndup (slash[1] + 1, (size_t) (slash[2] - slash[1] - 1));
  a->service = kiln_xstrndup (slash[2] + 1, (size_t) (slash[3] - slash[2] - 1));
  if (strlen (a->date) != 8 || strspn (a->date, "0123456789") != 8)
    return kiln_fail_invalid (err, "SigV4: credential date '%s' is not YYYYMMDD", a->date);
  if (*a->region == '\0' || *a->service == '\0')
    return kiln_fail_invalid (err, "SigV4: credential '%s' has an empty region or service", cred);
  return 0;
}

static int
parse_signed_headers (const char *list, struct kiln_sigv4_auth *a, kiln_error **err)
{
  size_t n = 0;
  const char *p = list;
  while (*p)
    {
      const char *e = strchr (p, ';');
      size_t l = e ? (size_t) (e - p) : strlen (p);
      if (l == 0)
        return kiln_fail_invalid (err, "SigV4: empty name in signed headers '%s'", list);
      char *name = kiln_xstrndup (p, l);
      char *lname = lower_name (name);
      free (name);
      strv_push (&a->signed_headers, &n, lname);
      p += l;
      if (*p == ';')
        p++;
    }
  if (n == 0)
    return kiln_fail_invalid (err, "SigV4: no signed headers");
  return 0;
}

static int
parse_signature (const char *sig, struct kiln_sigv4_auth *a, kiln_error **err)
{
  char *s = kiln_xstrdup (sig);
  for (char *c = s; *c; c++)
    *c = (char) tolower ((unsigned char) *c);
  if (!is_lower_hex64 (s))
    {
      free (s);
      return kiln_fail_invalid (err, "SigV4: the signature is not 64 hex digits");
    }
  a->signature = s;
  return 0;
}

int
kiln_sigv4_parse_authorization (const char *value, struct kiln_sigv4_auth *out, kiln_error **err)
{
  memset (out, 0, sizeof *out);
  out->expires = -1;
  if (value == NULL)
    return kiln_fail_invalid (err, "SigV4: no Authorization header");
  while (is_space (*value))
    value++;
  size_t alg = strlen (KILN_SIGV4_ALGORITHM);
  if (strncmp (value, KILN_SIGV4_ALGORITHM, alg) != 0 || !is_space (value[alg]))
    {
      size_t l = strcspn (value, " ");
      return kiln_fail_invalid (err, "SigV4: unsupported authorization scheme '%.*s'", (int) (l > 40 ? 40 : l),
                                value);
    }
  const char *p = value + alg;
  bool have_cred = false, have_sh = false, have_sig = false;
  int ret = 0;
  while (*p && ret == 0)
    {
      while (is_space (*p) || *p == ',')
        p++;
      if (*p == '\0')
        break;
      size_t l = strcspn (p, ",");
      size_t tl = l;
      while (tl > 0 && is_space (p[tl - 1]))
        tl--;
      _cleanup_free_ char *item = kiln_xstrndup (p, tl);
      p += l;
      char *eq = strchr (item, '=');
      if (eq == NULL)
        {
          ret = kiln_fail_invalid (err, "SigV4: malformed Authorization component");
          break;
        }
      *eq = '\0';
      const char *v = eq + 1;
      if (strcmp (item, "Credential") == 0 && !have_cred)
        {
          have_cred = true;
          ret = parse_credential (v, out, err);
        }
      else if (strcmp (item, "SignedHeaders") == 0 && !have_sh)
        {
          have_sh = true;
          ret = parse_signed_headers (v, out, err);
        }
      else if (strcmp (item, "Signature") == 0 && !have_sig)
        {
          have_sig = true;
          ret = parse_signature (v, out, err);
        }
      else
        ret = kiln_fail_invalid (err, "SigV4: unexpected or repeated Authorization component '%s'", item);
    }
  if (ret == 0 && !(have_cred && have_sh && have_sig))
    ret = kiln_fail_invalid (err, "SigV4: Authorization lacks %s", !have_cred ? "Credential"
                                                                  : !have_sh ? "SignedHeaders"
                                                                             : "Signature");
  if (ret < 0)
    kiln_sigv4_auth_release (out);
  return ret;
}

static const char *
find_param (const struct kiln_sigv4_pair *q, size_t n, const char *name)
{
  for (size_t i = 0; i < n; i++)
    if (q[i].name && strcmp (q[i].name, name) == 0)
      return q[i].value ? q[i].value : "";
  return NULL;
}

int
kiln_sigv4_parse_presigned (const struct kiln_sigv4_pair *query, size_t n_query, struct kiln_sigv4_auth *out,
                            kiln_error **err)
{
  const char *sig = find_param (query, n_query, "X-Amz-Signature");
  if (sig == NULL)
    return 1;
  memset (out, 0, sizeof *out);
  out->expires = -1;
  out->presigned = true;
  const char *alg = find_param (query, n_query, "X-Amz-Algorithm");
  const char *cred = find_param (query, n_query, "X-Amz-Credential");
  const char *date = find_param (query, n_query, "X-Amz-Date");
  const char *exp = find_param (query, n_query, "X-Amz-Expires");
  const char *sh = find_param (query, n_query, "X-Amz-SignedHeaders");
  const char *tok = find_param (query, n_query, "X-Amz-Security-Token");
  int ret = 0;
  if (alg == NULL || strcmp (alg, KILN_SIGV4_ALGORITHM) != 0)
    ret = kiln_fail_invalid (err, "SigV4: X-Amz-Algorithm is missing or not " KILN_SIGV4_ALGORITHM);
  else if (cred == NULL || date == NULL || exp == NULL || sh == NULL)
    ret = kiln_fail_invalid (err, "SigV4: presigned request lacks %s",
                             cred == NULL ? "X-Amz-Credential" : date == NULL ? "X-Amz-Date"
                                                             : exp == NULL    ? "X-Amz-Expires"
                                                                              : "X-Amz-SignedHeaders");
  if (ret == 0)
    ret = parse_credential (cred, out, err);
  if (ret == 0)
    ret = parse_signed_headers (sh, out, err);
  if (ret == 0)
    ret = parse_signature (sig, out, err);
  if (ret == 0)
    ret = check_amz_date (date, err);
  if (ret == 0)
    {
      char *end = NULL;
      errno = 0;
      long e = strtol (exp, &end, 10);
      if (errno || end == exp || *end || e < 1 || e > KILN_SIGV4_MAX_EXPIRES)
        ret = kiln_fail_invalid (err, "SigV4: X-Amz-Expires '%s' is not a number of seconds in 1..%ld", exp,
                                 KILN_SIGV4_MAX_EXPIRES);
      out->expires = e;
    }
  if (ret == 0)
    {
      out->amz_date = kiln_xstrdup (date);
      out->session_token = tok ? kiln_xstrdup (tok) : NULL;
      return 0;
    }
  kiln_sigv4_auth_release (out);
  out->presigned = true;
  return -1;
}

int
kiln_sigv4_verify (const struct kiln_sigv4_request *req, const struct kiln_sigv4_auth *auth,
                   const char *secret_access_key, struct kiln_sigv4_result *out, kiln_error **err)
{
  struct kiln_sigv4_result local = {0};
  struct kiln_sigv4_result *res = out ? out : &local;
  memset (res, 0, sizeof *res);
  if (auth->signature == NULL || auth->signed_headers == NULL || auth->date == NULL)
    return kiln_fail_invalid (err, "SigV4: incomplete authorization to verify");
  if (!strv_contains (auth->signed_headers, "host"))
    return kiln_fail_invalid (err, "SigV4: the host header is not signed");

  _cleanup_free_ char *amz_date = NULL;
  if (auth->presigned)
    amz_date = kiln_xstrdup (auth->amz_date ? auth->amz_date : "");
  else
    {
      const char *d = find_header (req->headers, req->n_headers, "x-amz-date");
      if (d == NULL)
        return kiln_fail_invalid (err, "SigV4: the request has no x-amz-date header");
      amz_date = trimmed (d);
    }
  if (check_amz_date (amz_date, err) < 0)
    return -1;
  if (strncmp (amz_date, auth->date, 8) != 0)
    return kiln_fail_invalid (err, "SigV4: request date %s is not the credential scope's date %s", amz_date,
                              auth->date);

  const char *payload_hash = req->payload_hash;
  if (payload_hash == NULL)
    {
      if (auth->presigned)
        payload_hash = KILN_SIGV4_UNSIGNED_PAYLOAD;
      else
        payload_hash = find_header (req->headers, req->n_headers, "x-amz-content-sha256");
      if (payload_hash == NULL)
        return kiln_fail_invalid (err, "SigV4: no payload hash (no x-amz-content-sha256 header)");
    }
  _cleanup_free_ char *payload_t = trimmed (payload_hash);

  /* A presigned request's signature is computed over every other parameter. */
  struct kiln_sigv4_pair *q = kiln_xcalloc (req->n_query, sizeof *q);
  size_t nq = 0;
  for (size_t i = 0; i < req->n_query; i++)
    if (!(auth->presigned && req->query[i].name && strcmp (req->query[i].name, "X-Amz-Signature") == 0))
      q[nq++] = req->query[i];

  struct sign_input in = {
    .method = req->method,
    .path = req->path,
    .flags = req->flags,
    .query = q,
    .n_query = nq,
    .headers = req->headers,
    .n_headers = req->n_headers,
    .only_headers = auth->signed_headers,
    .payload_hash = payload_t,
    .secret = secret_access_key,
    .amz_date = amz_date,
    .region = auth->region,
    .service = auth->service,
  };
  int r = compute (&in, res, err);
  free (q);
  if (r == 0 && !equal_constant_time (res->signature, auth->signature))
    r = kiln_error_set (err, KILN_ERR_FAILED, 0, "signature does not match");
  if (res == &local)
    kiln_sigv4_result_release (&local);
  return r;
}

/* ---- dates ---- */

void
kiln_sigv4_format_amz_date (time_t t, char out[KILN_SIGV4_AMZ_DATE_LEN + 1])
{
  struct tm tm;
  gmtime_r (&t, &tm);
  strftime (out, KILN_SIGV4_AMZ_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm);
}

static int
digits (const char *s, int n)
{
  int v = 0;
  for (int i = 0; i < n; i++)
    v = v * 10 + (s[i] - '0');
  return v;
}

int
kiln_sigv4_parse_amz_date (const char *s, time_t *out, kiln_error **err)
{
  if (s == NULL)
    return kiln_fail_invalid (err, "SigV4: no date");
  bool ok = strlen (s) == KILN_SIGV4_AMZ_DATE_LEN && s[8] == 'T' && s[15] == 'Z';
  for (int i = 0; ok && i < 15; i++)
    if (i != 8 && !(s[i] >= '0' && s[i] <= '9'))
      ok = false;
  struct tm tm = {0};
  if (ok)
    {
      tm.tm_year = digits (s, 4) - 1900;
      tm.tm_mon = digits (s + 4, 2) - 1;
      tm.tm_mday = digits (s + 6, 2);
      tm.tm_hour = digits (s + 9, 2);
      tm.tm_min = digits (s + 11, 2);
      tm.tm_sec = digits (s + 13, 2);
      ok = tm.tm_mon >= 0 && tm.tm_mon < 12 && tm.tm_mday >= 1 && tm.tm_mday <= 31 && tm.tm_hour < 24
           && tm.tm_min < 60 && tm.tm_sec < 61;
    }
  if (ok)
    {
      struct tm check = tm;
      time_t t = timegm (&check);
      /* timegm normalizes 31 February into March: reject what moved. */
      if (t == (time_t) -1 || check.tm_mday != tm.tm_mday || check.tm_mon != tm.tm_mon)
        ok = false;
      else
        *out = t;
    }
  if (!ok)
    return kiln_fail_invalid (err, "SigV4: date '%.32s' is not YYYYMMDDTHHMMSSZ", s);
  return 0;
}
