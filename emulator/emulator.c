/* emulator.c - what every part of kiln-emulator shares (emulator.h): the
 * response object, error recording on a call, the clock, ids, the regions
 * served and the accounts.  It depends on no service and no other part of the core, so
 * everything may depend on it (dispatch.c routes requests to services). */
#include "emulator.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "cleanup.h"
#include "fsutil.h"
#include "log.h"
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

emu_handler_fn
emu_operation_find (const struct emu_operation *const *tables, const char *name)
{
  for (size_t t = 0; tables[t]; t++)
    for (const struct emu_operation *op = tables[t]; op->name; op++)
      if (strcmp (op->name, name) == 0)
        return op->fn;
  return NULL;
}

/* ---- clock and ids ---- */

time_t
emu_now (struct kiln_emu *emu)
{
  return emu->fixed_now ? emu->fixed_now : time (NULL);
}

void
emu_now_text (struct kiln_emu *emu, char out[24])
{
  snprintf (out, 24, "%lld", (long long) emu_now (emu));
}

static pthread_mutex_t seed_lock = PTHREAD_MUTEX_INITIALIZER;

/* n random bytes: from the kernel, or from the test seed (a counter run
 * through a mixing function, so ids differ but repeat from run to run). */
void
emu_random_bytes (struct kiln_emu *emu, unsigned char *out, size_t n)
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
  emu_random_bytes (emu, bytes, sizeof bytes);
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
  emu_random_bytes (emu, b, sizeof b);
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

/* ---- regions ---- */

const char *const emu_regions[] = {
  "us-east-1",      "us-east-2",      "us-west-1",      "us-west-2",      "ca-central-1",   "eu-west-1",
  "eu-west-2",      "eu-west-3",      "eu-central-1",   "eu-north-1",     "ap-south-1",     "ap-southeast-1",
  "ap-southeast-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "sa-east-1",      NULL,
};

bool
emu_region_known (const char *name)
{
  for (const char *const *r = emu_regions; name && *r; r++)
    if (strcmp (*r, name) == 0)
      return true;
  return false;
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
