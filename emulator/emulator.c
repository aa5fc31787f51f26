/* emulator.c - kiln-emulator's front door: kiln_emu_handle() verifies a
 * request's signature, picks the service from the credential scope and hands
 * the call to that service's protocol; plus what every part shares (clock,
 * ids, accounts, error recording).
 *
 * Which error shape an unauthenticated request gets is decided before the
 * service is known: a request carrying X-Amz-Target speaks awsJson1_1, any
 * other speaks EC2 Query, except that a credential scope naming ebs gets
 * rest-json, one naming s3 (or none, on a request with no EC2 Action) S3's
 * XML. */
#include "emulator.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "auth.h"
#include "cleanup.h"
#include "fsutil.h"
#include "log.h"
#include "services.h"
#include "utf8.h"
#include "xalloc.h"

void
emu_response_release (struct emu_response *r)
{
  free (r->content_type);
  kiln_buf_release (&r->body);
  if (r->body_from_file)
    close (r->body_fd);
  kiln_sigv4_pairs_free (r->headers, r->n_headers);
  memset (r, 0, sizeof *r);
}

void
emu_response_add_header (struct emu_response *r, const char *name, const char *value)
{
  r->headers = realloc (r->headers, (r->n_headers + 1) * sizeof *r->headers);
  if (r->headers == NULL)
    abort ();
  r->headers[r->n_headers].name = kiln_xstrdup (name);
  r->headers[r->n_headers].value = kiln_xstrdup (value);
  r->n_headers++;
}

int
emu_fail (struct emu_call *c, int status, const char *code, const char *fmt, ...)
{
  if (c->error_code)
    return -1;
  c->error_status = status;
  c->error_code = kiln_xstrdup (code);
  va_list ap;
  va_start (ap, fmt);
  _cleanup_free_ char *message = NULL;
  message = kiln_xvasprintf (fmt, ap);
  va_end (ap);
  /* Messages quote what the client sent, which may be any bytes: every
   * error shape (XML or JSON) needs valid UTF-8 without XML's forbidden
   * characters, or the reply cannot be read at all. */
  c->error_message = kiln_utf8_for_xml (message);
  return -1;
}

int
emu_fail_internal (struct emu_call *c, kiln_error *err)
{
  kiln_log_error ("emulator: %s: %s", c->operation ? c->operation : "request", kiln_error_message (err));
  return emu_fail (c, 500, "InternalError", "kiln-emulator: %s", kiln_error_message (err));
}

void
kiln_emu_handle (struct kiln_emu *emu, const struct emu_request *req, struct emu_response *resp)
{
  memset (resp, 0, sizeof *resp);
  struct emu_call c = {.emu = emu, .req = req, .now = emu_now (emu)};
  emu_new_uuid (emu, c.request_id);

  /* A query string that is not form encoding is refused as such before
   * its signature (computed over bytes that mean nothing) is checked. */
  struct emu_auth auth = {0};
  _cleanup_free_ char *message = NULL;
  bool query_ok = req->raw_query == NULL || emu_form_parse (&c, req->raw_query, strlen (req->raw_query)) == 0;
  emu_params_free (&c);
  enum emu_auth_failure kind = query_ok ? emu_auth_verify (emu, req, c.now, &auth, &message) : EMU_AUTH_OK;
  /* The service is the request's (its endpoint, or its shape), not merely
   * what its signature names (services.h); a scope for another service is
   * then that service's signature error. */
  const struct emu_service *service = emu_service_route (req, auth.service);
  if (query_ok && kind == EMU_AUTH_OK && strcmp (auth.service, service->name) != 0)
    {
      free (message);
      message = kiln_xasprintf ("Credential should be scoped to correct service: '%s', not '%s'.", service->name,
                                auth.service);
      kind = EMU_AUTH_BAD_SCOPE;
    }
  if (!query_ok)
    kiln_log_debug ("emulator: %s %s refused: %s", req->method, req->path, c.error_message);
  else if (kind != EMU_AUTH_OK)
    {
      int status;
      const char *code;
      service->auth_error (kind, auth.presigned, &status, &code);
      emu_fail (&c, status, code, "%s", message);
      kiln_log_debug ("emulator: %s %s refused: %s: %s", req->method, req->path, code, message);
    }
  else if (req->head_only)
    {
      /* The head passed what it can be checked for: the body may come. */
      emu_auth_release (&auth);
      return;
    }
  else
    {
      c.account = auth.account->id;
      c.region = auth.region;
      c.service = auth.service;
      for (size_t i = 0; emu_services[i]; i++)
        if (emu_services[i]->tick)
          emu_services[i]->tick (emu, c.now);
      service->serve (&c, resp);
    }
  if (c.error_code && resp->status == 0)
    service->error_reply (&c, resp);
  emu_response_add_header (resp, service->request_id_header, c.request_id);
  free (c.error_code);
  free (c.error_message);
  emu_auth_release (&auth);
}

/* ---- clock and ids ---- */

time_t
emu_now (struct kiln_emu *emu)
{
  return emu->fixed_now ? emu->fixed_now : time (NULL);
}

static pthread_mutex_t seed_lock = PTHREAD_MUTEX_INITIALIZER;

/* n random bytes: from the kernel, or from the test seed (a counter run
 * through a mixing function, so ids differ but repeat from run to run). */
static void
random_bytes (struct kiln_emu *emu, unsigned char *out, size_t n)
{
  if (emu->id_seed)
    {
      pthread_mutex_lock (&seed_lock);
      for (size_t i = 0; i < n; i++)
        {
          unsigned long long x = ++emu->id_seed;
          x ^= x >> 33;
          x *= 0xff51afd7ed558ccdULL;
          x ^= x >> 33;
          out[i] = (unsigned char) x;
        }
      pthread_mutex_unlock (&seed_lock);
      return;
    }
  size_t got = 0;
  while (got < n)
    {
      ssize_t r = getrandom (out + got, n - got, 0);
      if (r < 0 && errno != EINTR)
        abort ();
      if (r > 0)
        got += (size_t) r;
    }
}

char *
emu_new_id (struct kiln_emu *emu, const char *prefix)
{
  unsigned char bytes[9];
  random_bytes (emu, bytes, sizeof bytes);
  char hex[19];
  kiln_hex_encode (bytes, sizeof bytes, hex);
  hex[17] = '\0';
  char *id;
  id = kiln_xasprintf ("%s-%s", prefix, hex);
  return id;
}

void
emu_new_uuid (struct kiln_emu *emu, char out[37])
{
  unsigned char b[16];
  random_bytes (emu, b, sizeof b);
  b[6] = (unsigned char) ((b[6] & 0x0f) | 0x40);
  b[8] = (unsigned char) ((b[8] & 0x3f) | 0x80);
  snprintf (out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
            b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

void
emu_format_time (time_t t, char out[32])
{
  struct tm tm;
  gmtime_r (&t, &tm);
  strftime (out, 32, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
}

/* ---- accounts ---- */

const struct emu_account *
emu_account_by_key (struct kiln_emu *emu, const char *access_key_id)
{
  for (size_t i = 0; i < emu->n_accounts; i++)
    if (strcmp (emu->accounts[i].access_key_id, access_key_id) == 0)
      return &emu->accounts[i];
  return NULL;
}

bool
emu_account_exists (struct kiln_emu *emu, const char *account_id)
{
  for (size_t i = 0; i < emu->n_accounts; i++)
    if (strcmp (emu->accounts[i].id, account_id) == 0)
      return true;
  return false;
}

static void
add_account (struct kiln_emu *emu, const char *id, const char *key, const char *secret)
{
  emu->accounts = realloc (emu->accounts, (emu->n_accounts + 1) * sizeof *emu->accounts);
  if (emu->accounts == NULL)
    abort ();
  emu->accounts[emu->n_accounts++] = (struct emu_account){
    .id = kiln_xstrdup (id), .access_key_id = kiln_xstrdup (key), .secret_access_key = kiln_xstrdup (secret)};
}

static bool
is_account_id (const char *s)
{
  if (strlen (s) != 12)
    return false;
  for (const char *p = s; *p; p++)
    if (!isdigit ((unsigned char) *p))
      return false;
  return true;
}

int
emu_accounts_load (struct kiln_emu *emu, const char *path, kiln_error **err)
{
  if (path == NULL)
    {
      add_account (emu, "000000000000", "test", "test");
      add_account (emu, "111111111111", "test2", "test2");
      return 0;
    }
  json_error_t jerr;
  _cleanup_json_ json_t *doc = json_load_file (path, 0, &jerr);
  if (doc == NULL)
    return kiln_fail_invalid (err, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
  json_t *list = json_object_get (doc, "accounts");
  if (!json_is_array (list) || json_array_size (list) == 0)
    return kiln_fail_invalid (err, "%s: expected {\"accounts\": [{\"id\", \"accessKeyId\", \"secretAccessKey\"}, ...]}",
                              path);
  size_t i;
  json_t *a;
  json_array_foreach (list, i, a)
    {
      const char *id = json_string_value (json_object_get (a, "id"));
      const char *key = json_string_value (json_object_get (a, "accessKeyId"));
      const char *secret = json_string_value (json_object_get (a, "secretAccessKey"));
      if (id == NULL || key == NULL || secret == NULL)
        return kiln_fail_invalid (err, "%s: accounts[%zu]: \"id\", \"accessKeyId\" and \"secretAccessKey\" are "
                                  "required strings", path, i);
      if (!is_account_id (id))
        return kiln_fail_invalid (err, "%s: accounts[%zu].id: '%s' is not a 12-digit account id", path, i, id);
      if (*key == '\0' || *secret == '\0')
        return kiln_fail_invalid (err, "%s: accounts[%zu]: empty access key or secret", path, i);
      if (emu_account_by_key (emu, key))
        return kiln_fail_invalid (err, "%s: accounts[%zu]: access key '%s' is given twice", path, i, key);
      add_account (emu, id, key, secret);
    }
  return 0;
}
