/* ssm_parameters.c - SSM Parameter Store: PutParameter, GetParameter(s),
 * DeleteParameter(s), GetParameterHistory, GetParametersByPath,
 * DescribeParameters, LabelParameterVersion and UnlabelParameterVersion, over
 * awsJson1_1 (c->input in, c->output out).
 *
 * Model.  A parameter is the set of its versions, one row each in the
 * `parameters` table, scoped by (account, region, name).  Versions count up
 * from 1 by 1; the latest is the parameter's current state.  At most
 * MAX_VERSIONS are kept: writing one more drops the oldest, unless the oldest
 * carries a label (AWS refuses with ParameterMaxVersionLimitExceeded then).
 * Deleting a parameter deletes every version, so a parameter created again
 * starts at version 1.  Labels are a JSON array of strings on the version
 * that holds them; a label names at most one version of a parameter.
 *
 * Names.  Letters, digits, '.', '-', '_'; a hierarchical name starts with
 * '/' and has at most MAX_LEVELS '/'-separated levels.  A name without a
 * leading '/' is a root-level parameter: GetParametersByPath "/" lists it.
 * Readers accept "name:<version>" and "name:<label>" selectors (labels never
 * start with a digit, so the two cannot be confused).
 *
 * SecureString.  The plaintext is never stored: the value column holds
 * base64(nonce || AES-256-GCM ciphertext || tag) under a data key kept in
 * `meta` ('parameter_key', base64 of 32 random bytes, created by the first
 * PutParameter that needs it).  The additional authenticated data is
 * "account\0region\0name", so a sealed value opens only as the parameter it
 * was written for.  KeyId is recorded and reported but no KMS key is used:
 * kiln-emulator has no KMS.  Readers without WithDecryption get the stored
 * base64 text, an opaque blob as AWS's is.
 *
 * Tags given to PutParameter live in the shared `tags` table with resource_id
 * = the parameter's ARN (the table's key has no account, and names repeat
 * across accounts) and resource_type 'Parameter'.
 *
 * Pagination tokens are base64 of "<kind>:<last key returned>" (a name, or a
 * version for history), so a page boundary survives writes between calls. */
#include "ssm.h"

#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "buf.h"
#include "cleanup.h"
#include "digest.h"
#include "store.h"
#include "xalloc.h"

#define MAX_NAME 2048
#define MAX_LEVELS 15
#define MAX_VERSIONS 100
#define MAX_NAMES 10           /* GetParameters, DeleteParameters */
#define MAX_LABELS 10          /* per version, and per Label/Unlabel request */
#define MAX_LABEL_LEN 100
#define MAX_STANDARD_VALUE 4096
#define MAX_ADVANCED_VALUE 8192
#define MAX_DESCRIPTION 1024
#define MAX_PATTERN 1024
#define MAX_KEY_ID 256
#define MAX_TAGS 1000

#define DEFAULT_KEY_ID "alias/aws/ssm"
#define DATA_KEY_META "parameter_key"
#define DATA_KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16

#define VALIDATION "ValidationException"

/* ---- reading the JSON input ----
 *
 * AWS names a member in validation messages in lower camel case ("name",
 * "maxResults"); the readers below fail the call with ValidationException in
 * that style and return -1. */

static void
member_name (const char *field, char out[64])
{
  snprintf (out, 64, "%s", field);
  out[0] = (char) tolower ((unsigned char) out[0]);
}

static int
fail_null (struct emu_call *c, const char *field)
{
  char m[64];
  member_name (field, m);
  return emu_fail (c, 400, VALIDATION, "1 validation error detected: Value null at '%s' failed to satisfy "
                   "constraint: Member must not be null", m);
}

static int
fail_type (struct emu_call *c, const char *field, const char *what)
{
  char m[64];
  member_name (field, m);
  return emu_fail (c, 400, VALIDATION, "1 validation error detected: Value at '%s' failed to satisfy "
                   "constraint: Member must be %s", m, what);
}

/* A string member of obj: *out is NULL when absent or null (a failure when
 * required).  Length limits are in bytes; echo says whether the value may
 * appear in the error message (not for parameter values). */
static int
in_string (struct emu_call *c, json_t *obj, const char *field, bool required, size_t min, size_t max, bool echo,
           const char **out)
{
  json_t *v = json_object_get (obj, field);
  *out = NULL;
  if (v == NULL || json_is_null (v))
    return required ? fail_null (c, field) : 0;
  if (!json_is_string (v))
    return fail_type (c, field, "a string");
  size_t len = json_string_length (v);
  if (len < min || len > max)
    {
      char m[64];
      member_name (field, m);
      /* Long values are cut in the message: a 2 KiB name helps nobody. */
      return emu_fail (c, 400, VALIDATION, "1 validation error detected: Value '%.64s%s' at '%s' failed to "
                       "satisfy constraint: Member must have length %s %zu", echo ? json_string_value (v) : "***",
                       echo && len > 64 ? "..." : "", m,
                       len < min ? "greater than or equal to" : "less than or equal to", len < min ? min : max);
    }
  *out = json_string_value (v);
  return 0;
}

static int
in_bool (struct emu_call *c, const char *field, bool *out)
{
  json_t *v = json_object_get (c->input, field);
  *out = false;
  if (v == NULL || json_is_null (v))
    return 0;
  if (!json_is_boolean (v))
    return fail_type (c, field, "a boolean");
  *out = json_is_true (v);
  return 0;
}

static int
in_int (struct emu_call *c, const char *field, long long min, long long max, long long def, long long *out)
{
  json_t *v = json_object_get (c->input, field);
  *out = def;
  if (v == NULL || json_is_null (v))
    return 0;
  if (!json_is_integer (v))
    return fail_type (c, field, "an integer");
  long long n = json_integer_value (v);
  if (n < min || n > max)
    {
      char m[64];
      member_name (field, m);
      return emu_fail (c, 400, VALIDATION, "1 validation error detected: Value '%lld' at '%s' failed to satisfy "
                       "constraint: Member must have value %s %lld", n, m,
                       n < min ? "greater than or equal to" : "less than or equal to", n < min ? min : max);
    }
  *out = n;
  return 0;
}

/* A list of strings (borrowed), each of length 1..max_len, with min..max
 * members; NULL when absent and not required. */
static int
in_string_list (struct emu_call *c, json_t *obj, const char *field, bool required, size_t min, size_t max,
                size_t max_len, json_t **out)
{
  json_t *v = json_object_get (obj, field);
  char m[64];
  member_name (field, m);
  *out = NULL;
  if (v == NULL || json_is_null (v))
    return required ? fail_null (c, field) : 0;
  if (!json_is_array (v))
    return fail_type (c, field, "a list");
  size_t n = json_array_size (v);
  if (n < min || n > max)
    return emu_fail (c, 400, VALIDATION, "1 validation error detected: Value at '%s' failed to satisfy "
                     "constraint: Member must have length %s %zu", m,
                     n < min ? "greater than or equal to" : "less than or equal to", n < min ? min : max);
  size_t i;
  json_t *item;
  json_array_foreach (v, i, item)
    {
      if (!json_is_string (item))
        return emu_fail (c, 400, VALIDATION, "1 validation error detected: Value at '%s.%zu.member' failed to "
                         "satisfy constraint: Member must be a string", m, i + 1);
      size_t len = json_string_length (item);
      if (len < 1 || len > max_len)
        return emu_fail (c, 400, VALIDATION, "1 validation error detected: Value '%s' at '%s.%zu.member' failed "
                         "to satisfy constraint: Member must have length %s", json_string_value (item), m, i + 1,
                         len < 1 ? "greater than or equal to 1" : "within the limit");
    }
  *out = v;
  return 0;
}

/* An enum member: *out is NULL when absent. */
static int
in_enum (struct emu_call *c, const char *field, const char *const *allowed, const char **out)
{
  if (in_string (c, c->input, field, false, 0, SIZE_MAX, true, out) < 0)
    return -1;
  if (*out == NULL)
    return 0;
  for (size_t i = 0; allowed[i]; i++)
    if (strcmp (*out, allowed[i]) == 0)
      return 0;
  struct kiln_buf set = KILN_BUF_INIT;
  for (size_t i = 0; allowed[i]; i++)
    kiln_buf_printf (&set, "%s%s", i ? ", " : "", allowed[i]);
  char m[64];
  member_name (field, m);
  emu_fail (c, 400, VALIDATION, "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: "
            "Member must satisfy enum value set: [%s]", *out, m, kiln_buf_str (&set));
  kiln_buf_release (&set);
  return -1;
}

static const char *const param_types[] = {"String", "StringList", "SecureString", NULL};
static const char *const param_tiers[] = {"Standard", "Advanced", "Intelligent-Tiering", NULL};

/* ---- names, paths, labels ---- */

static bool
name_char (char ch)
{
  return isalnum ((unsigned char) ch) || ch == '_' || ch == '.' || ch == '-';
}

/* "aws"/"ssm" (any case) at the start of s. */
static bool
reserved_prefix (const char *s)
{
  return strncasecmp (s, "aws", 3) == 0 || strncasecmp (s, "ssm", 3) == 0;
}

static size_t
count_levels (const char *name)
{
  size_t n = 0;
  for (const char *p = name; *p; p++)
    n += *p == '/';
  return n;
}

/* Whether the '/'-separated segments of s (after its leading '/', when it
 * has one) are non-empty runs of name characters. */
static bool
segments_valid (const char *s)
{
  const char *p = s[0] == '/' ? s + 1 : s;
  size_t seg = 0;
  for (; *p; p++)
    {
      if (*p == '/')
        {
          if (seg == 0)
            return false;
          seg = 0;
        }
      else if (!name_char (*p))
        return false;
      else
        seg++;
    }
  return seg > 0;
}

/* The rules PutParameter (and the label operations) apply to a name. */
static int
check_name (struct emu_call *c, const char *name)
{
  if (strchr (name, '/') && name[0] != '/')
    return emu_fail (c, 400, VALIDATION, "Parameter name '%s' is not valid: a hierarchical name must be fully "
                     "qualified, starting with '/'.", name);
  if (!segments_valid (name))
    return emu_fail (c, 400, VALIDATION, "Parameter name '%s' is not valid: a name is made of letters, digits and "
                     "the symbols . - _, and a hierarchical name of such levels each after a '/'.", name);
  if (reserved_prefix (name[0] == '/' ? name + 1 : name))
    return emu_fail (c, 400, VALIDATION, "Parameter name '%s' is not valid: names can't be prefixed with \"aws\" "
                     "or \"ssm\" (case-insensitive).", name);
  if (name[0] == '/' && count_levels (name) > MAX_LEVELS)
    return emu_fail (c, 400, "HierarchyLevelLimitExceededException", "A parameter name can have at most %d "
                     "hierarchy levels; '%s' has %zu.", MAX_LEVELS, name, count_levels (name));
  return 0;
}

/* A path for GetParametersByPath and the Path filter: starts with '/'; a
 * trailing '/' is dropped ("/a/b/" is "/a/b"), except for the root "/".
 * Returns a malloc'd normal form, or NULL after failing the call. */
static char *
normal_path (struct emu_call *c, const char *path)
{
  if (path[0] != '/')
    {
      emu_fail (c, 400, VALIDATION, "Path '%s' is not valid: a path must begin with '/'.", path);
      return NULL;
    }
  _cleanup_free_ char *p = kiln_xstrdup (path);
  size_t len = strlen (p);
  if (len > 1 && p[len - 1] == '/')
    p[len - 1] = '\0';
  if (strcmp (p, "/") != 0 && !segments_valid (p))
    {
      emu_fail (c, 400, VALIDATION, "Path '%s' is not valid: it must be '/' followed by levels of letters, digits "
                "and the symbols . - _ separated by '/'.", path);
      return NULL;
    }
  if (count_levels (p) > MAX_LEVELS)
    {
      emu_fail (c, 400, "HierarchyLevelLimitExceededException", "A path can have at most %d hierarchy levels.",
                MAX_LEVELS);
      return NULL;
    }
  return kiln_steal_pointer (&p);
}

/* Whether name lies under path (a normal path): a direct child, or with
 * recursive any descendant.  Names without a leading '/' are root-level. */
static bool
under_path (const char *name, const char *path, bool recursive)
{
  const char *rest;
  if (strcmp (path, "/") == 0)
    rest = name[0] == '/' ? name + 1 : name;
  else
    {
      size_t n = strlen (path);
      if (strncmp (name, path, n) != 0 || name[n] != '/')
        return false;
      rest = name + n + 1;
    }
  return recursive || strchr (rest, '/') == NULL;
}

/* AWS's label rules: 1..100 characters of [a-zA-Z0-9_.-], not starting with
 * a digit nor with "aws"/"ssm". */
static bool
label_valid (const char *label)
{
  size_t len = strlen (label);
  if (len < 1 || len > MAX_LABEL_LEN || isdigit ((unsigned char) label[0]) || reserved_prefix (label))
    return false;
  for (const char *p = label; *p; p++)
    if (!name_char (*p))
      return false;
  return true;
}

static bool
labels_contain (json_t *labels, const char *label)
{
  size_t i;
  json_t *l;
  json_array_foreach (labels, i, l)
    if (json_is_string (l) && strcmp (json_string_value (l), label) == 0)
      return true;
  return false;
}

/* The labels column of a row as a JSON array (new reference; empty when the
 * text is damaged). */
static json_t *
row_labels (json_t *row)
{
  json_t *labels = json_loads (emu_row_str (row, "labels"), 0, NULL);
  if (!json_is_array (labels))
    {
      json_decref (labels);
      labels = json_array ();
    }
  return labels;
}

static char *
param_arn (struct emu_call *c, const char *name)
{
  char *arn;
  arn = kiln_xasprintf ("arn:aws:ssm:%s:%s:parameter/%s", c->region, c->account, name[0] == '/' ? name + 1 : name);
  return arn;
}

/* ---- SecureString sealing ---- */

struct vault {
  bool loaded;
  unsigned char key[DATA_KEY_LEN];
};

static void
vault_wipe (struct vault *v)
{
  OPENSSL_cleanse (v, sizeof *v);
}

static void
cipher_ctx_freep (EVP_CIPHER_CTX **ctx)
{
  EVP_CIPHER_CTX_free (*ctx);
}

#define _cleanup_vault_ __attribute__ ((cleanup (vault_wipe)))
#define _cleanup_cipher_ctx_ __attribute__ ((cleanup (cipher_ctx_freep)))

/* Reads the data key into v.  Returns 1 when loaded, 0 when there is none
 * yet, -1 on error. */
static int
vault_read (struct emu_call *c, struct vault *v, kiln_error **err)
{
  if (v->loaded)
    return 1;
  _cleanup_json_ json_t *row = emu_db_query_one (c->emu, err, "SELECT value FROM meta WHERE key = ?",
                                                 DATA_KEY_META);
  if (row == NULL)
    return *err ? -1 : 0;
  const char *text = emu_row_str (row, "value");
  unsigned char *raw = NULL;
  size_t raw_len = 0;
  if (kiln_base64_decode (text, strlen (text), &raw, &raw_len) < 0 || raw_len != DATA_KEY_LEN)
    {
      if (raw)
        OPENSSL_cleanse (raw, raw_len);
      free (raw);
      return kiln_fail (err, "the SecureString data key in the state database (meta '%s') is damaged",
                        DATA_KEY_META);
    }
  memcpy (v->key, raw, DATA_KEY_LEN);
  OPENSSL_cleanse (raw, raw_len);
  free (raw);
  v->loaded = true;
  return 1;
}

/* The data key, created when there is none.  The caller holds a
 * transaction, so two first writers cannot make two keys. */
static int
vault_ensure_locked (struct emu_call *c, struct vault *v, kiln_error **err)
{
  int r = vault_read (c, v, err);
  if (r != 0)
    return r < 0 ? -1 : 0;
  if (RAND_bytes (v->key, DATA_KEY_LEN) != 1)
    return kiln_fail (err, "RAND_bytes failed making the SecureString data key");
  _cleanup_free_ char *text = kiln_base64_encode (v->key, DATA_KEY_LEN);
  int e = emu_db_exec (c->emu, err, "INSERT INTO meta (key, value) VALUES (?, ?)", DATA_KEY_META, text);
  OPENSSL_cleanse (text, strlen (text));
  if (e < 0)
    return -1;
  v->loaded = true;
  return 0;
}

static void
sealing_aad (struct emu_call *c, const char *name, struct kiln_buf *aad)
{
  kiln_buf_append (aad, c->account, strlen (c->account) + 1);
  kiln_buf_append (aad, c->region, strlen (c->region) + 1);
  kiln_buf_puts (aad, name);
}

/* base64(nonce || ciphertext || tag) of plain, malloc'd in *out. */
static int
seal (struct emu_call *c, const struct vault *v, const char *name, const char *plain, char **out, kiln_error **err)
{
  size_t n = strlen (plain);
  if (n > MAX_ADVANCED_VALUE)
    return kiln_fail (err, "seal: value too long");
  _cleanup_free_ unsigned char *blob = kiln_xcalloc (NONCE_LEN + n + TAG_LEN, 1);
  struct kiln_buf aad = KILN_BUF_INIT;
  sealing_aad (c, name, &aad);
  _cleanup_cipher_ctx_ EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new ();
  int len = 0, fin = 0;
  bool ok = ctx && RAND_bytes (blob, NONCE_LEN) == 1
            && EVP_EncryptInit_ex (ctx, EVP_aes_256_gcm (), NULL, NULL, NULL) == 1
            && EVP_CIPHER_CTX_ctrl (ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1
            && EVP_EncryptInit_ex (ctx, NULL, NULL, v->key, blob) == 1
            && EVP_EncryptUpdate (ctx, NULL, &len, (const unsigned char *) aad.data, (int) aad.len) == 1
            && EVP_EncryptUpdate (ctx, blob + NONCE_LEN, &len, (const unsigned char *) plain, (int) n) == 1
            && EVP_EncryptFinal_ex (ctx, blob + NONCE_LEN + len, &fin) == 1 && (size_t) (len + fin) == n
            && EVP_CIPHER_CTX_ctrl (ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, blob + NONCE_LEN + n) == 1;
  kiln_buf_release (&aad);
  if (!ok)
    return kiln_fail (err, "AES-256-GCM encryption of a SecureString value failed");
  *out = kiln_base64_encode (blob, NONCE_LEN + n + TAG_LEN);
  return 0;
}

/* The plaintext of a sealed value (malloc'd in *out). */
static int
unseal (struct emu_call *c, const struct vault *v, const char *name, const char *sealed, char **out,
        kiln_error **err)
{
  _cleanup_free_ unsigned char *blob = NULL;
  size_t blob_len = 0;
  if (kiln_base64_decode (sealed, strlen (sealed), &blob, &blob_len) < 0 || blob_len < NONCE_LEN + TAG_LEN)
    return kiln_fail (err, "the stored SecureString value of '%s' is damaged", name);
  size_t n = blob_len - NONCE_LEN - TAG_LEN;
  _cleanup_free_ char *plain = kiln_xcalloc (n + 1, 1);
  struct kiln_buf aad = KILN_BUF_INIT;
  sealing_aad (c, name, &aad);
  _cleanup_cipher_ctx_ EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new ();
  int len = 0, fin = 0;
  bool ok = ctx && EVP_DecryptInit_ex (ctx, EVP_aes_256_gcm (), NULL, NULL, NULL) == 1
            && EVP_CIPHER_CTX_ctrl (ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1
            && EVP_DecryptInit_ex (ctx, NULL, NULL, v->key, blob) == 1
            && EVP_DecryptUpdate (ctx, NULL, &len, (const unsigned char *) aad.data, (int) aad.len) == 1
            && EVP_DecryptUpdate (ctx, (unsigned char *) plain, &len, blob + NONCE_LEN, (int) n) == 1
            && EVP_CIPHER_CTX_ctrl (ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, blob + NONCE_LEN + n) == 1
            && EVP_DecryptFinal_ex (ctx, (unsigned char *) plain + len, &fin) == 1 && (size_t) (len + fin) == n;
  kiln_buf_release (&aad);
  if (!ok || memchr (plain, '\0', n))
    return kiln_fail (err, "the stored SecureString value of '%s' does not decrypt under this state's data key",
                      name);
  *out = kiln_steal_pointer (&plain);
  return 0;
}

/* ---- rendering rows ---- */

enum shape {
  SHAPE_PARAMETER,   /* Parameter: GetParameter(s), GetParametersByPath */
  SHAPE_HISTORY,     /* ParameterHistory */
  SHAPE_METADATA,    /* ParameterMetadata: DescribeParameters */
};

static bool
row_is_secure (json_t *row)
{
  return strcmp (emu_row_str (row, "type"), "SecureString") == 0;
}

/* One row as its API shape (new reference), or NULL after failing the call
 * (a SecureString that does not open). */
static json_t *
render (struct emu_call *c, struct vault *v, json_t *row, enum shape shape, bool decrypt, const char *selector)
{
  const char *name = emu_row_str (row, "name");
  _cleanup_json_ json_t *o = json_object ();
  json_object_set_new (o, "Name", json_string (name));
  json_object_set_new (o, "Type", json_string (emu_row_str (row, "type")));
  if (shape != SHAPE_METADATA)
    {
      const char *stored = emu_row_str (row, "value");
      if (decrypt && row_is_secure (row))
        {
          _cleanup_error_ kiln_error *err = NULL;
          _cleanup_free_ char *plain = NULL;
          if (vault_read (c, v, &err) <= 0 || unseal (c, v, name, stored, &plain, &err) < 0)
            {
              if (err == NULL)
                kiln_fail (&err, "no SecureString data key in the state database");
              emu_fail_internal (c, err);
              return NULL;
            }
          json_object_set_new (o, "Value", json_string (plain));
          OPENSSL_cleanse (plain, strlen (plain));
        }
      else
        json_object_set_new (o, "Value", json_string (stored));
    }
  json_object_set_new (o, "Version", json_integer (emu_row_int (row, "version")));
  json_object_set_new (o, "LastModifiedDate", json_integer (emu_row_int (row, "modified")));
  json_object_set_new (o, "DataType", json_string (emu_row_str (row, "data_type")));
  if (shape == SHAPE_PARAMETER || shape == SHAPE_METADATA)
    {
      _cleanup_free_ char *arn = param_arn (c, name);
      json_object_set_new (o, "ARN", json_string (arn));
    }
  if (shape == SHAPE_PARAMETER)
    {
      if (selector)
        json_object_set_new (o, "Selector", json_string (selector));
      return kiln_steal_pointer (&o);
    }
  _cleanup_free_ char *user = NULL;
  user = kiln_xasprintf ("arn:aws:iam::%s:root", c->account);
  json_object_set_new (o, "LastModifiedUser", json_string (user));
  if (row_is_secure (row) && emu_row_str_or_null (row, "key_id"))
    json_object_set_new (o, "KeyId", json_string (emu_row_str (row, "key_id")));
  if (emu_row_str_or_null (row, "description"))
    json_object_set_new (o, "Description", json_string (emu_row_str (row, "description")));
  if (emu_row_str_or_null (row, "allowed_pattern"))
    json_object_set_new (o, "AllowedPattern", json_string (emu_row_str (row, "allowed_pattern")));
  json_object_set_new (o, "Tier", json_string (emu_row_str (row, "tier")));
  json_object_set_new (o, "Policies", json_array ());
  if (shape == SHAPE_HISTORY)
    json_object_set_new (o, "Labels", row_labels (row));
  return kiln_steal_pointer (&o);
}

/* ---- pagination ---- */

static char *
token_make (const char *kind, const char *key)
{
  _cleanup_free_ char *plain = NULL;
  plain = kiln_xasprintf ("%s:%s", kind, key);
  return kiln_base64_encode ((const unsigned char *) plain, strlen (plain));
}

/* The key in a token this file made for kind (malloc'd in *key), NULL when
 * there is no token; a token that is not one fails with InvalidNextToken. */
static int
token_read (struct emu_call *c, const char *kind, char **key)
{
  const char *token;
  *key = NULL;
  if (in_string (c, c->input, "NextToken", false, 0, SIZE_MAX, false, &token) < 0)
    return -1;
  if (token == NULL || token[0] == '\0')
    return 0;
  _cleanup_free_ unsigned char *raw = NULL;
  size_t raw_len = 0;
  size_t klen = strlen (kind);
  if (kiln_base64_decode (token, strlen (token), &raw, &raw_len) < 0 || raw_len <= klen
      || memcmp (raw, kind, klen) != 0 || raw[klen] != ':' || memchr (raw, '\0', raw_len))
    return emu_fail (c, 400, "InvalidNextToken", "The specified token is not valid.");
  *key = kiln_xstrndup ((const char *) raw + klen + 1, raw_len - klen - 1);
  return 0;
}

/* From rows (sorted by column), the first max after the key `after` (all
 * when NULL) into *page (new array of borrowed-then-increfed rows), and the
 * token for the rest in *next (NULL when none).  numeric: the column holds
 * integers (versions), compared as such. */
static void
page_rows (json_t *rows, const char *column, bool numeric, const char *kind, const char *after, size_t max,
           json_t **page, char **next)
{
  *page = json_array ();
  *next = NULL;
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    {
      if (after)
        {
          bool past = numeric ? emu_row_int (row, column) > strtoll (after, NULL, 10)
                              : strcmp (emu_row_str (row, column), after) > 0;
          if (!past)
            continue;
        }
      if (json_array_size (*page) == max)
        {
          json_t *last = json_array_get (*page, max - 1);
          *next = token_make (kind, emu_row_str (last, column));
          return;
        }
      json_array_append (*page, row);
    }
}

/* ---- lookups ---- */

/* Every version of a parameter, oldest first (empty when there is none). */
static json_t *
all_versions (struct emu_call *c, const char *name, kiln_error **err)
{
  return emu_db_query (c->emu, err, "SELECT * FROM parameters WHERE account = ? AND region = ? AND name = ? "
                       "ORDER BY version", c->account, c->region, name);
}

/* The latest version of every parameter in scope, by name. */
static json_t *
latest_rows (struct emu_call *c, kiln_error **err)
{
  return emu_db_query (c->emu, err, "SELECT p.* FROM parameters p WHERE p.account = ? AND p.region = ? AND "
                       "p.version = (SELECT MAX(q.version) FROM parameters q WHERE q.account = p.account AND "
                       "q.region = p.region AND q.name = p.name) ORDER BY p.name", c->account, c->region);
}

enum found { FOUND, NO_PARAMETER, NO_VERSION };

/* Resolves "name", "name:<version>", "name:<label>" or the parameter's ARN
 * in this account and region.  *row (new reference) is set when FOUND;
 * *name and *selector (":3", ":label"; NULL without one) are malloc'd.
 * Returns an enum found, or -1 on a database error. */
static int
lookup (struct emu_call *c, const char *spec, json_t **row, char **name, char **selector, kiln_error **err)
{
  *row = NULL;
  *selector = NULL;
  _cleanup_free_ char *prefix = NULL;
  prefix = kiln_xasprintf ("arn:aws:ssm:%s:%s:parameter/", c->region, c->account);
  const char *s = spec;
  bool from_arn = strncmp (spec, prefix, strlen (prefix)) == 0;
  if (from_arn)
    s = spec + strlen (prefix);
  const char *colon = strchr (s, ':');
  _cleanup_free_ char *bare = colon ? kiln_xstrndup (s, (size_t) (colon - s)) : kiln_xstrdup (s);
  /* An ARN drops a hierarchical name's leading '/'. */
  if (from_arn && strchr (bare, '/'))
    {
      char *full;
      full = kiln_xasprintf ("/%s", bare);
      free (bare);
      bare = full;
    }
  _cleanup_json_ json_t *versions = all_versions (c, bare, err);
  if (versions == NULL)
    return -1;
  *name = kiln_steal_pointer (&bare);
  if (colon)
    *selector = kiln_xstrdup (colon);
  size_t n = json_array_size (versions);
  if (n == 0)
    return NO_PARAMETER;
  if (colon == NULL)
    {
      *row = json_incref (json_array_get (versions, n - 1));
      return FOUND;
    }
  const char *sel = colon + 1;
  bool numeric = sel[0] != '\0' && strspn (sel, "0123456789") == strlen (sel);
  size_t i;
  json_t *r;
  json_array_foreach (versions, i, r)
    {
      bool match;
      if (numeric)
        match = strlen (sel) < 19 && emu_row_int (r, "version") == strtoll (sel, NULL, 10);
      else
        {
          _cleanup_json_ json_t *labels = row_labels (r);
          match = labels_contain (labels, sel);
        }
      if (match)
        {
          *row = json_incref (r);
          return FOUND;
        }
    }
  return NO_VERSION;
}

/* ---- PutParameter ---- */

struct put_request {
  const char *name, *value, *type, *description, *pattern, *tier, *data_type, *key_id;
  bool overwrite;
  json_t *tags;
};

/* AWS takes Java regular expressions; users copy its examples ("^\d+$").
 * POSIX ERE has no \d, so \d and \D become bracket expressions (inside a
 * bracket expression \d becomes 0-9).  Everything else goes to regcomp as
 * written. */
static char *
posix_pattern (const char *pattern)
{
  struct kiln_buf b = KILN_BUF_INIT;
  bool in_bracket = false;
  kiln_buf_puts (&b, "");
  for (const char *p = pattern; *p; p++)
    {
      if (!in_bracket && p[0] == '\\' && (p[1] == 'd' || p[1] == 'D'))
        {
          kiln_buf_puts (&b, p[1] == 'd' ? "[0-9]" : "[^0-9]");
          p++;
        }
      else if (in_bracket && p[0] == '\\' && p[1] == 'd')
        {
          kiln_buf_puts (&b, "0-9");
          p++;
        }
      else if (!in_bracket && p[0] == '\\' && p[1])
        {
          kiln_buf_append (&b, p, 2);
          p++;
        }
      else if (!in_bracket && p[0] == '[')
        {
          in_bracket = true;
          kiln_buf_append (&b, p, 1);
          /* A ']' first in the set (after an optional '^') is literal. */
          if (p[1] == '^')
            kiln_buf_append (&b, ++p, 1);
          if (p[1] == ']')
            kiln_buf_append (&b, ++p, 1);
        }
      else if (in_bracket && p[0] == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '='))
        {
          /* [:alpha:], [.x.], [=x=]: copied through to their closing pair. */
          char close = p[1];
          const char *end = p + 2;
          while (*end && !(end[0] == close && end[1] == ']'))
            end++;
          size_t len = *end ? (size_t) (end - p) + 2 : strlen (p);
          kiln_buf_append (&b, p, len);
          p += len - 1;
        }
      else
        {
          if (in_bracket && p[0] == ']')
            in_bracket = false;
          kiln_buf_append (&b, p, 1);
        }
    }
  return kiln_buf_steal (&b);
}

/* 0 when value matches pattern (searched for, as AWS does: anchors are the
 * pattern's to give); fails the call otherwise. */
static int
check_pattern (struct emu_call *c, const char *pattern, const char *value)
{
  _cleanup_free_ char *posix = posix_pattern (pattern);
  regex_t re;
  int rc = regcomp (&re, posix, REG_EXTENDED | REG_NOSUB);
  if (rc != 0)
    {
      char msg[256];
      regerror (rc, &re, msg, sizeof msg);
      return emu_fail (c, 400, "InvalidAllowedPatternException", "The allowed pattern '%s' is not a valid regular "
                       "expression: %s", pattern, msg);
    }
  rc = regexec (&re, value, 0, NULL, 0);
  regfree (&re);
  if (rc != 0)
    return emu_fail (c, 400, "ParameterPatternMismatchException", "The parameter value failed to match the "
                     "allowed pattern: %s", pattern);
  return 0;
}

/* An AMI id as EC2 writes them: "ami-" and 8 or 17 lowercase hex digits. */
static bool
ami_id_like (const char *value)
{
  if (strncmp (value, "ami-", 4) != 0)
    return false;
  size_t n = strlen (value + 4);
  return (n == 8 || n == 17) && strspn (value + 4, "0123456789abcdef") == n;
}

/* Whether key_id names a KMS key the way AWS accepts one: an alias, a key
 * id (UUID or multi-Region "mrk-..."), or a key or alias ARN.  No KMS exists
 * here, so any such name is taken. */
static bool
kms_key_like (const char *key_id)
{
  if (strncmp (key_id, "alias/", 6) == 0)
    return key_id[6] != '\0';
  if (strncmp (key_id, "arn:aws:kms:", 12) == 0)
    return strstr (key_id, ":key/") || strstr (key_id, ":alias/");
  if (strncmp (key_id, "mrk-", 4) == 0)
    return key_id[4] && strspn (key_id + 4, "0123456789abcdef") == strlen (key_id + 4);
  static const char uuid_shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
  if (strlen (key_id) != sizeof uuid_shape - 1)
    return false;
  for (size_t i = 0; uuid_shape[i]; i++)
    if (uuid_shape[i] == '-' ? key_id[i] != '-' : !isxdigit ((unsigned char) key_id[i]))
      return false;
  return true;
}

/* What the request alone decides (no state read). */
static int
put_parse (struct emu_call *c, struct put_request *r)
{
  if (in_string (c, c->input, "Name", true, 1, MAX_NAME, true, &r->name) < 0
      || in_string (c, c->input, "Value", true, 0, SIZE_MAX, false, &r->value) < 0
      || in_enum (c, "Type", param_types, &r->type) < 0
      || in_string (c, c->input, "Description", false, 0, MAX_DESCRIPTION, true, &r->description) < 0
      || in_string (c, c->input, "AllowedPattern", false, 0, MAX_PATTERN, true, &r->pattern) < 0
      || in_enum (c, "Tier", param_tiers, &r->tier) < 0
      || in_string (c, c->input, "DataType", false, 0, 128, true, &r->data_type) < 0
      || in_string (c, c->input, "KeyId", false, 1, MAX_KEY_ID, true, &r->key_id) < 0
      || in_bool (c, "Overwrite", &r->overwrite) < 0)
    return -1;
  if (r->value[0] == '\0')
    return emu_fail (c, 400, VALIDATION, "1 validation error detected: Value at 'value' failed to satisfy "
                     "constraint: Member must have length greater than or equal to 1");
  if (check_name (c, r->name) < 0)
    return -1;
  json_t *policies = json_object_get (c->input, "Policies");
  if (policies && !json_is_null (policies))
    return emu_fail (c, 400, VALIDATION, "Parameter policies are not supported by kiln-emulator.");
  if (r->data_type && strcmp (r->data_type, "text") != 0 && strcmp (r->data_type, "aws:ec2:image") != 0)
    return emu_fail (c, 400, VALIDATION, "The data type '%s' is not supported; use text or aws:ec2:image "
                     "(data type names are lowercase).", r->data_type);
  if (r->key_id && !kms_key_like (r->key_id))
    return emu_fail (c, 400, "InvalidKeyId", "KeyId '%s' is not a KMS key id, key ARN, alias name or alias ARN.",
                     r->key_id);

  json_t *tags = json_object_get (c->input, "Tags");
  if (tags && !json_is_null (tags))
    {
      if (!json_is_array (tags))
        return fail_type (c, "Tags", "a list");
      if (json_array_size (tags) > MAX_TAGS)
        return emu_fail (c, 400, VALIDATION, "1 validation error detected: Value at 'tags' failed to satisfy "
                         "constraint: Member must have length less than or equal to %d", MAX_TAGS);
      if (r->overwrite && json_array_size (tags) > 0)
        return emu_fail (c, 400, VALIDATION, "Invalid request: tags and overwrite can't be used together. To "
                         "create a parameter with tags, please remove overwrite flag. To update tags for an "
                         "existing parameter, please use AddTagsToResource or RemoveTagsFromResource.");
      size_t i;
      json_t *tag;
      json_array_foreach (tags, i, tag)
        {
          const char *k, *v;
          if (!json_is_object (tag))
            return fail_type (c, "Tags", "a list of Tag structures");
          if (in_string (c, tag, "Key", true, 1, 128, true, &k) < 0
              || in_string (c, tag, "Value", true, 0, 256, true, &v) < 0)
            return -1;
        }
      r->tags = tags;
    }
  return 0;
}

/* The write, inside a transaction.  Fails the call (AWS errors) or returns
 * -1 with *err set (database). */
static int
put_locked (struct emu_call *c, struct put_request *r, kiln_error **err)
{
  _cleanup_json_ json_t *versions = all_versions (c, r->name, err);
  if (versions == NULL)
    return -1;
  size_t n = json_array_size (versions);
  json_t *latest = n ? json_array_get (versions, n - 1) : NULL;
  if (latest && !r->overwrite)
    return emu_fail (c, 400, "ParameterAlreadyExists", "The parameter already exists. To overwrite this value, "
                     "set the overwrite option in the request to true.");
  if (latest == NULL && r->type == NULL)
    return emu_fail (c, 400, VALIDATION, "A parameter type is required when you create a parameter.");

  /* On overwrite, what the request leaves out stays as it was. */
  const char *type = r->type ? r->type : emu_row_str (latest, "type");
  const char *description = r->description ? r->description
                                           : latest ? emu_row_str_or_null (latest, "description") : NULL;
  const char *pattern = r->pattern ? r->pattern : latest ? emu_row_str_or_null (latest, "allowed_pattern") : NULL;
  const char *data_type = r->data_type ? r->data_type : latest ? emu_row_str (latest, "data_type") : "text";
  bool secure = strcmp (type, "SecureString") == 0;
  if (r->key_id && !secure)
    return emu_fail (c, 400, VALIDATION, "KeyId can be given for SecureString parameters only.");
  const char *key_id = NULL;
  if (secure)
    key_id = r->key_id ? r->key_id
             : latest && row_is_secure (latest) && emu_row_str_or_null (latest, "key_id")
                 ? emu_row_str (latest, "key_id")
                 : DEFAULT_KEY_ID;

  size_t len = strlen (r->value);
  bool was_advanced = latest && strcmp (emu_row_str (latest, "tier"), "Advanced") == 0;
  const char *tier = r->tier ? r->tier : was_advanced ? "Advanced" : "Standard";
  if (strcmp (tier, "Intelligent-Tiering") == 0)
    tier = was_advanced || len > MAX_STANDARD_VALUE ? "Advanced" : "Standard";
  else if (strcmp (tier, "Standard") == 0 && was_advanced)
    return emu_fail (c, 400, VALIDATION, "Parameter %s is an advanced parameter; an advanced parameter can't be "
                     "changed back to the standard tier (delete and recreate it).", r->name);
  if (strcmp (tier, "Standard") == 0 && len > MAX_STANDARD_VALUE)
    return emu_fail (c, 400, VALIDATION, "Standard tier parameters support a value of at most %d bytes (this one "
                     "has %zu); use the Advanced tier for a larger value.", MAX_STANDARD_VALUE, len);
  if (len > MAX_ADVANCED_VALUE)
    return emu_fail (c, 400, VALIDATION, "Advanced tier parameters support a value of at most %d bytes (this one "
                     "has %zu).", MAX_ADVANCED_VALUE, len);

  if (strcmp (data_type, "aws:ec2:image") == 0)
    {
      if (strcmp (type, "String") != 0)
        return emu_fail (c, 400, "UnsupportedParameterType", "The aws:ec2:image data type is for String "
                         "parameters only, not %s.", type);
      if (!ami_id_like (r->value))
        return emu_fail (c, 400, VALIDATION, "The value '%s' is not valid for the aws:ec2:image data type: it "
                         "must be an AMI id, ami- and 8 or 17 hexadecimal digits.", r->value);
    }
  if (pattern && pattern[0] && check_pattern (c, pattern, r->value) < 0)
    return -1;

  /* Keep at most MAX_VERSIONS: the oldest goes, unless it is labelled. */
  if (n >= MAX_VERSIONS)
    {
      json_t *oldest = json_array_get (versions, 0);
      _cleanup_json_ json_t *labels = row_labels (oldest);
      if (json_array_size (labels) > 0)
        return emu_fail (c, 400, "ParameterMaxVersionLimitExceeded", "Parameter %s already has %d versions and "
                         "its oldest, version %lld, has labels; move or remove them (UnlabelParameterVersion) "
                         "before writing a new version.", r->name, MAX_VERSIONS, emu_row_int (oldest, "version"));
      if (emu_db_exec (c->emu, err, "DELETE FROM parameters WHERE account = ? AND region = ? AND name = ? "
                       "AND version = ?", c->account, c->region, r->name, emu_row_str (oldest, "version")) < 0)
        return -1;
    }

  _cleanup_free_ char *sealed = NULL;
  if (secure)
    {
      _cleanup_vault_ struct vault v = {0};
      if (vault_ensure_locked (c, &v, err) < 0 || seal (c, &v, r->name, r->value, &sealed, err) < 0)
        return -1;
    }

  long long version = latest ? emu_row_int (latest, "version") + 1 : 1;
  char version_s[24], now_s[24];
  snprintf (version_s, sizeof version_s, "%lld", version);
  snprintf (now_s, sizeof now_s, "%lld", (long long) c->now);
  if (emu_db_exec (c->emu, err, "INSERT INTO parameters (account, region, name, version, type, value, "
                   "description, allowed_pattern, data_type, tier, key_id, modified, labels) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]')", c->account, c->region, r->name, version_s,
                   type, secure ? sealed : r->value, description, pattern, data_type, tier, key_id, now_s)
      < 0)
    return -1;

  if (latest == NULL && r->tags)
    {
      _cleanup_free_ char *arn = param_arn (c, r->name);
      size_t i;
      json_t *tag;
      json_array_foreach (r->tags, i, tag)
        if (emu_db_exec (c->emu, err, "INSERT OR REPLACE INTO tags (resource_id, account, region, resource_type, "
                         "key, value) VALUES (?, ?, ?, 'Parameter', ?, ?)", arn, c->account, c->region,
                         json_string_value (json_object_get (tag, "Key")),
                         json_string_value (json_object_get (tag, "Value")))
            < 0)
          return -1;
    }

  json_object_set_new (c->output, "Version", json_integer (version));
  json_object_set_new (c->output, "Tier", json_string (tier));
  return 0;
}

/* Runs fn inside a transaction: commits when it returns 0, rolls back
 * otherwise.  A database error becomes InternalError. */
static int
in_transaction (struct emu_call *c, void *data, int (*fn) (struct emu_call *c, void *data, kiln_error **err))
{
  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_begin (c->emu, &err) < 0)
    return emu_fail_internal (c, err);
  int r = fn (c, data, &err);
  _cleanup_error_ kiln_error *end_err = NULL;
  int e = emu_db_end (c->emu, r == 0, &end_err);
  if (r < 0)
    return err ? emu_fail_internal (c, err) : -1;
  if (e < 0)
    return emu_fail_internal (c, end_err);
  return 0;
}

static int
put_txn (struct emu_call *c, void *data, kiln_error **err)
{
  return put_locked (c, data, err);
}

static int
op_put_parameter (struct emu_call *c)
{
  struct put_request r = {0};
  if (put_parse (c, &r) < 0)
    return -1;
  return in_transaction (c, &r, put_txn);
}

/* ---- GetParameter, GetParameters ---- */

static int
op_get_parameter (struct emu_call *c)
{
  const char *spec;
  bool decrypt;
  if (in_string (c, c->input, "Name", true, 1, MAX_NAME, true, &spec) < 0
      || in_bool (c, "WithDecryption", &decrypt) < 0)
    return -1;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *row = NULL;
  _cleanup_free_ char *name = NULL, *selector = NULL;
  int found = lookup (c, spec, &row, &name, &selector, &err);
  if (found < 0)
    return emu_fail_internal (c, err);
  if (found == NO_PARAMETER)
    return emu_fail (c, 400, "ParameterNotFound", "Parameter %s not found.", spec);
  if (found == NO_VERSION)
    return emu_fail (c, 400, "ParameterVersionNotFound", "Systems Manager could not find %s %s of %s. Verify the "
                     "version and try again.", isdigit ((unsigned char) selector[1]) ? "version" : "label",
                     selector + 1, name);
  _cleanup_vault_ struct vault v = {0};
  json_t *p = render (c, &v, row, SHAPE_PARAMETER, decrypt, selector);
  if (p == NULL)
    return -1;
  json_object_set_new (c->output, "Parameter", p);
  return 0;
}

static bool
strings_contain (json_t *list, const char *s)
{
  size_t i;
  json_t *item;
  json_array_foreach (list, i, item)
    if (strcmp (json_string_value (item), s) == 0)
      return true;
  return false;
}

static int
op_get_parameters (struct emu_call *c)
{
  json_t *names;
  bool decrypt;
  if (in_string_list (c, c->input, "Names", true, 1, MAX_NAMES, MAX_NAME, &names) < 0
      || in_bool (c, "WithDecryption", &decrypt) < 0)
    return -1;
  _cleanup_json_ json_t *params = json_array ();
  _cleanup_json_ json_t *invalid = json_array ();
  _cleanup_json_ json_t *seen = json_array ();
  _cleanup_vault_ struct vault v = {0};
  size_t i;
  json_t *item;
  json_array_foreach (names, i, item)
    {
      const char *spec = json_string_value (item);
      if (strings_contain (seen, spec))
        continue;
      json_array_append (seen, item);
      _cleanup_error_ kiln_error *err = NULL;
      _cleanup_json_ json_t *row = NULL;
      _cleanup_free_ char *name = NULL, *selector = NULL;
      int found = lookup (c, spec, &row, &name, &selector, &err);
      if (found < 0)
        return emu_fail_internal (c, err);
      if (found != FOUND)
        {
          json_array_append_new (invalid, json_string (spec));
          continue;
        }
      json_t *p = render (c, &v, row, SHAPE_PARAMETER, decrypt, selector);
      if (p == NULL)
        return -1;
      json_array_append_new (params, p);
    }
  json_object_set (c->output, "Parameters", params);
  json_object_set (c->output, "InvalidParameters", invalid);
  return 0;
}

/* ---- DeleteParameter, DeleteParameters ---- */

/* Deletes every version and the tags of name: 1 when there was such a
 * parameter, 0 when not, -1 on error. */
static int
delete_one (struct emu_call *c, const char *name, kiln_error **err)
{
  int n = emu_db_exec (c->emu, err, "DELETE FROM parameters WHERE account = ? AND region = ? AND name = ?",
                       c->account, c->region, name);
  if (n <= 0)
    return n;
  _cleanup_free_ char *arn = param_arn (c, name);
  if (emu_db_exec (c->emu, err, "DELETE FROM tags WHERE resource_id = ? AND account = ? AND region = ?", arn,
                   c->account, c->region)
      < 0)
    return -1;
  return 1;
}

static int
delete_txn (struct emu_call *c, void *data, kiln_error **err)
{
  const char *name = data;
  int r = delete_one (c, name, err);
  if (r < 0)
    return -1;
  if (r == 0)
    return emu_fail (c, 400, "ParameterNotFound", "Parameter %s not found.", name);
  return 0;
}

static int
op_delete_parameter (struct emu_call *c)
{
  const char *name;
  if (in_string (c, c->input, "Name", true, 1, MAX_NAME, true, &name) < 0)
    return -1;
  return in_transaction (c, (void *) name, delete_txn);
}

static int
delete_many_txn (struct emu_call *c, void *data, kiln_error **err)
{
  json_t *names = data;
  _cleanup_json_ json_t *deleted = json_array ();
  _cleanup_json_ json_t *invalid = json_array ();
  size_t i;
  json_t *item;
  json_array_foreach (names, i, item)
    {
      const char *name = json_string_value (item);
      if (strings_contain (deleted, name) || strings_contain (invalid, name))
        continue;
      int r = delete_one (c, name, err);
      if (r < 0)
        return -1;
      json_array_append (r ? deleted : invalid, item);
    }
  json_object_set (c->output, "DeletedParameters", deleted);
  json_object_set (c->output, "InvalidParameters", invalid);
  return 0;
}

static int
op_delete_parameters (struct emu_call *c)
{
  json_t *names;
  if (in_string_list (c, c->input, "Names", true, 1, MAX_NAMES, MAX_NAME, &names) < 0)
    return -1;
  return in_transaction (c, names, delete_many_txn);
}

/* ---- GetParameterHistory ---- */

static int
op_get_parameter_history (struct emu_call *c)
{
  const char *name;
  bool decrypt;
  long long max;
  _cleanup_free_ char *after = NULL;
  if (in_string (c, c->input, "Name", true, 1, MAX_NAME, true, &name) < 0
      || in_bool (c, "WithDecryption", &decrypt) < 0 || in_int (c, "MaxResults", 1, 50, 50, &max) < 0
      || token_read (c, "history", &after) < 0)
    return -1;
  if (after && (after[0] == '\0' || strspn (after, "0123456789") != strlen (after)))
    return emu_fail (c, 400, "InvalidNextToken", "The specified token is not valid.");
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *versions = all_versions (c, name, &err);
  if (versions == NULL)
    return emu_fail_internal (c, err);
  if (json_array_size (versions) == 0)
    return emu_fail (c, 400, "ParameterNotFound", "Parameter %s not found.", name);
  _cleanup_json_ json_t *page = NULL;
  _cleanup_free_ char *next = NULL;
  page_rows (versions, "version", true, "history", after, (size_t) max, &page, &next);
  _cleanup_json_ json_t *out = json_array ();
  _cleanup_vault_ struct vault v = {0};
  size_t i;
  json_t *row;
  json_array_foreach (page, i, row)
    {
      json_t *p = render (c, &v, row, SHAPE_HISTORY, decrypt, NULL);
      if (p == NULL)
        return -1;
      json_array_append_new (out, p);
    }
  json_object_set (c->output, "Parameters", out);
  if (next)
    json_object_set_new (c->output, "NextToken", json_string (next));
  return 0;
}

/* ---- ParameterFilters (DescribeParameters, GetParametersByPath) ---- */

struct pfilter {
  const char *key;      /* "Name", "Type", ..., "tag:<key>" */
  const char *option;   /* "Equals", "BeginsWith", "Contains", "Recursive", "OneLevel" */
  json_t *values;       /* borrowed array of strings; NULL only for tag: filters */
  char **paths;         /* Path filters: the values in normal form (malloc'd, NULL-terminated) */
};

struct pfilters {
  struct pfilter *items;
  size_t n;
};

static void
pfilters_release (struct pfilters *f)
{
  for (size_t i = 0; i < f->n; i++)
    kiln_strv_free (f->items[i].paths);
  free (f->items);
  f->items = NULL;
  f->n = 0;
}

#define _cleanup_pfilters_ __attribute__ ((cleanup (pfilters_release)))

enum filter_op { FILTER_DESCRIBE, FILTER_BY_PATH };

/* The options a key takes in op, the first being the default; NULL when the
 * key is not valid there. */
static const char *const *
filter_options (const char *key, enum filter_op op)
{
  static const char *const name_opts[] = {"Equals", "BeginsWith", "Contains", NULL};
  static const char *const string_opts[] = {"Equals", "BeginsWith", NULL};
  static const char *const path_opts[] = {"OneLevel", "Recursive", NULL};
  static const char *const label_opts[] = {"Equals", NULL};
  if (strcmp (key, "Type") == 0 || strcmp (key, "KeyId") == 0)
    return string_opts;
  if (op == FILTER_BY_PATH)
    return strcmp (key, "Label") == 0 ? label_opts : NULL;
  if (strcmp (key, "Name") == 0)
    return name_opts;
  if (strcmp (key, "Tier") == 0 || strcmp (key, "DataType") == 0 || strncmp (key, "tag:", 4) == 0)
    return string_opts;
  if (strcmp (key, "Path") == 0)
    return path_opts;
  return NULL;
}

static bool
filter_key_known (const char *key)
{
  static const char *const keys[] = {"Name", "Type", "KeyId", "Path", "Label", "Tier", "DataType", NULL};
  if (strncmp (key, "tag:", 4) == 0)
    return key[4] != '\0';
  for (size_t i = 0; keys[i]; i++)
    if (strcmp (key, keys[i]) == 0)
      return true;
  return false;
}

static int
pfilters_parse (struct emu_call *c, enum filter_op op, struct pfilters *out)
{
  json_t *list = json_object_get (c->input, "ParameterFilters");
  if (list == NULL || json_is_null (list))
    return 0;
  if (!json_is_array (list))
    return fail_type (c, "ParameterFilters", "a list");
  out->items = kiln_xcalloc (json_array_size (list), sizeof *out->items);
  size_t i;
  json_t *item;
  json_array_foreach (list, i, item)
    {
      struct pfilter *f = &out->items[out->n++];
      if (!json_is_object (item))
        return fail_type (c, "ParameterFilters", "a list of ParameterStringFilter structures");
      if (in_string (c, item, "Key", true, 1, 132, true, &f->key) < 0
          || in_string (c, item, "Option", false, 1, 10, true, &f->option) < 0
          || in_string_list (c, item, "Values", false, 1, 50, 1024, &f->values) < 0)
        return -1;
      if (!filter_key_known (f->key))
        return emu_fail (c, 400, VALIDATION, "1 validation error detected: Value '%s' at "
                         "'parameterFilters.%zu.member.key' failed to satisfy constraint: Member must satisfy "
                         "regular expression pattern: tag:.+|Name|Type|KeyId|Path|Label|Tier|DataType", f->key, i + 1);
      const char *const *opts = filter_options (f->key, op);
      if (opts == NULL)
        return emu_fail (c, 400, "InvalidFilterKey", "The filter key %s is not valid for %s.", f->key,
                         c->operation);
      if (f->option == NULL)
        f->option = opts[0];
      bool option_ok = false;
      for (size_t k = 0; opts[k]; k++)
        option_ok = option_ok || strcmp (f->option, opts[k]) == 0;
      if (!option_ok)
        return emu_fail (c, 400, "InvalidFilterOption", "The filter option '%s' is not valid for the key %s.",
                         f->option, f->key);
      if (f->values == NULL && strncmp (f->key, "tag:", 4) != 0)
        return emu_fail (c, 400, "InvalidFilterValue", "The filter %s needs at least one value.", f->key);
      if (strcmp (f->key, "Path") == 0)
        {
          f->paths = kiln_xcalloc (json_array_size (f->values) + 1, sizeof *f->paths);
          size_t k;
          json_t *pv;
          json_array_foreach (f->values, k, pv)
            if ((f->paths[k] = normal_path (c, json_string_value (pv))) == NULL)
              return -1;
        }
    }
  return 0;
}

/* DescribeParameters' deprecated Filters (Key Name|Type|KeyId, Values): Name
 * matches names beginning with a value, Type and KeyId match exactly. */
static int
legacy_filters_parse (struct emu_call *c, struct pfilters *out)
{
  json_t *list = json_object_get (c->input, "Filters");
  if (list == NULL || json_is_null (list))
    return 0;
  if (!json_is_array (list))
    return fail_type (c, "Filters", "a list");
  if (out->n > 0)
    return emu_fail (c, 400, VALIDATION, "You can use either Filters or ParameterFilters in a single request.");
  free (out->items);
  out->items = kiln_xcalloc (json_array_size (list), sizeof *out->items);
  size_t i;
  json_t *item;
  json_array_foreach (list, i, item)
    {
      struct pfilter *f = &out->items[out->n++];
      if (!json_is_object (item))
        return fail_type (c, "Filters", "a list of ParametersFilter structures");
      if (in_string (c, item, "Key", true, 1, 132, true, &f->key) < 0
          || in_string_list (c, item, "Values", true, 1, 50, 1024, &f->values) < 0)
        return -1;
      if (strcmp (f->key, "Name") != 0 && strcmp (f->key, "Type") != 0 && strcmp (f->key, "KeyId") != 0)
        return emu_fail (c, 400, VALIDATION, "1 validation error detected: Value '%s' at 'filters.%zu.member.key' "
                         "failed to satisfy constraint: Member must satisfy enum value set: [Name, Type, KeyId]",
                         f->key, i + 1);
      f->option = strcmp (f->key, "Name") == 0 ? "BeginsWith" : "Equals";
    }
  return 0;
}

static bool
string_matches (const char *option, const char *value, json_t *values)
{
  size_t i;
  json_t *item;
  json_array_foreach (values, i, item)
    {
      const char *want = json_string_value (item);
      if (strcmp (option, "Equals") == 0 ? strcmp (value, want) == 0
          : strcmp (option, "BeginsWith") == 0 ? strncmp (value, want, strlen (want)) == 0
                                               : strstr (value, want) != NULL)
        return true;
    }
  return false;
}

/* Whether row passes filter f.  tags: the parameter's tags (key -> value),
 * read only when a tag: filter needs them (*tags NULL until then).  Returns
 * -1 on a database error. */
static int
filter_match (struct emu_call *c, const struct pfilter *f, json_t *row, json_t **tags, kiln_error **err)
{
  const char *name = emu_row_str (row, "name");
  if (strcmp (f->key, "Path") == 0)
    {
      for (char **p = f->paths; *p; p++)
        if (under_path (name, *p, strcmp (f->option, "Recursive") == 0))
          return 1;
      return 0;
    }
  if (strcmp (f->key, "Label") == 0)
    {
      _cleanup_json_ json_t *labels = row_labels (row);
      size_t i;
      json_t *item;
      json_array_foreach (f->values, i, item)
        if (labels_contain (labels, json_string_value (item)))
          return 1;
      return 0;
    }
  if (strncmp (f->key, "tag:", 4) == 0)
    {
      if (*tags == NULL)
        {
          _cleanup_free_ char *arn = param_arn (c, name);
          _cleanup_json_ json_t *rows = emu_db_query (c->emu, err, "SELECT key, value FROM tags WHERE "
                                                      "resource_id = ? AND account = ? AND region = ?", arn,
                                                      c->account, c->region);
          if (rows == NULL)
            return -1;
          *tags = json_object ();
          size_t i;
          json_t *t;
          json_array_foreach (rows, i, t)
            json_object_set_new (*tags, emu_row_str (t, "key"), json_string (emu_row_str (t, "value")));
        }
      json_t *value = json_object_get (*tags, f->key + 4);
      if (value == NULL)
        return 0;
      return f->values == NULL || string_matches (f->option, json_string_value (value), f->values);
    }
  const char *column = strcmp (f->key, "Name") == 0       ? "name"
                       : strcmp (f->key, "Type") == 0     ? "type"
                       : strcmp (f->key, "KeyId") == 0    ? "key_id"
                       : strcmp (f->key, "Tier") == 0     ? "tier"
                                                          : "data_type";
  const char *value = emu_row_str_or_null (row, column);
  if (value == NULL || (strcmp (column, "key_id") == 0 && !row_is_secure (row)))
    return 0;
  return string_matches (f->option, value, f->values);
}

/* The rows of `rows` that pass every filter (new array). */
static json_t *
filter_rows (struct emu_call *c, const struct pfilters *f, json_t *rows, kiln_error **err)
{
  _cleanup_json_ json_t *out = json_array ();
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    {
      _cleanup_json_ json_t *tags = NULL;
      bool pass = true;
      for (size_t k = 0; pass && k < f->n; k++)
        {
          int m = filter_match (c, &f->items[k], row, &tags, err);
          if (m < 0)
            return NULL;
          pass = m == 1;
        }
      if (pass)
        json_array_append (out, row);
    }
  return kiln_steal_pointer (&out);
}

/* ---- GetParametersByPath, DescribeParameters ---- */

static int
op_get_parameters_by_path (struct emu_call *c)
{
  const char *path_in;
  bool recursive, decrypt;
  long long max;
  _cleanup_free_ char *after = NULL;
  _cleanup_pfilters_ struct pfilters filters = {0};
  if (in_string (c, c->input, "Path", true, 1, MAX_NAME, true, &path_in) < 0
      || in_bool (c, "Recursive", &recursive) < 0 || in_bool (c, "WithDecryption", &decrypt) < 0
      || in_int (c, "MaxResults", 1, 10, 10, &max) < 0 || token_read (c, "path", &after) < 0
      || pfilters_parse (c, FILTER_BY_PATH, &filters) < 0)
    return -1;
  _cleanup_free_ char *path = normal_path (c, path_in);
  if (path == NULL)
    return -1;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *rows = latest_rows (c, &err);
  if (rows == NULL)
    return emu_fail_internal (c, err);
  _cleanup_json_ json_t *under = json_array ();
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    if (under_path (emu_row_str (row, "name"), path, recursive))
      json_array_append (under, row);
  _cleanup_json_ json_t *matching = filter_rows (c, &filters, under, &err);
  if (matching == NULL)
    return emu_fail_internal (c, err);
  _cleanup_json_ json_t *page = NULL;
  _cleanup_free_ char *next = NULL;
  page_rows (matching, "name", false, "path", after, (size_t) max, &page, &next);
  _cleanup_json_ json_t *out = json_array ();
  _cleanup_vault_ struct vault v = {0};
  json_array_foreach (page, i, row)
    {
      json_t *p = render (c, &v, row, SHAPE_PARAMETER, decrypt, NULL);
      if (p == NULL)
        return -1;
      json_array_append_new (out, p);
    }
  json_object_set (c->output, "Parameters", out);
  if (next)
    json_object_set_new (c->output, "NextToken", json_string (next));
  return 0;
}

static int
op_describe_parameters (struct emu_call *c)
{
  long long max;
  _cleanup_free_ char *after = NULL;
  _cleanup_pfilters_ struct pfilters filters = {0};
  if (in_int (c, "MaxResults", 1, 50, 50, &max) < 0 || token_read (c, "describe", &after) < 0
      || pfilters_parse (c, FILTER_DESCRIBE, &filters) < 0 || legacy_filters_parse (c, &filters) < 0)
    return -1;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *rows = latest_rows (c, &err);
  if (rows == NULL)
    return emu_fail_internal (c, err);
  _cleanup_json_ json_t *matching = filter_rows (c, &filters, rows, &err);
  if (matching == NULL)
    return emu_fail_internal (c, err);
  _cleanup_json_ json_t *page = NULL;
  _cleanup_free_ char *next = NULL;
  page_rows (matching, "name", false, "describe", after, (size_t) max, &page, &next);
  _cleanup_json_ json_t *out = json_array ();
  size_t i;
  json_t *row;
  json_array_foreach (page, i, row)
    {
      json_t *p = render (c, NULL, row, SHAPE_METADATA, false, NULL);
      if (p == NULL)
        return -1;
      json_array_append_new (out, p);
    }
  json_object_set (c->output, "Parameters", out);
  if (next)
    json_object_set_new (c->output, "NextToken", json_string (next));
  return 0;
}

/* ---- LabelParameterVersion, UnlabelParameterVersion ---- */

struct label_request {
  const char *name;
  long long version;    /* 0: the latest (LabelParameterVersion only) */
  json_t *labels;
  bool remove;
};

static int
set_labels (struct emu_call *c, json_t *row, json_t *labels, kiln_error **err)
{
  _cleanup_free_ char *text = json_dumps (labels, JSON_COMPACT);
  return emu_db_exec (c->emu, err, "UPDATE parameters SET labels = ? WHERE account = ? AND region = ? AND name = ? "
                      "AND version = ?", text, c->account, c->region, emu_row_str (row, "name"),
                      emu_row_str (row, "version"));
}

static int
label_txn (struct emu_call *c, void *data, kiln_error **err)
{
  struct label_request *r = data;
  _cleanup_json_ json_t *versions = all_versions (c, r->name, err);
  if (versions == NULL)
    return -1;
  size_t n = json_array_size (versions);
  if (n == 0)
    return emu_fail (c, 400, "ParameterNotFound", "Parameter %s not found.", r->name);
  json_t *target = NULL;
  size_t i;
  json_t *row;
  json_array_foreach (versions, i, row)
    if (r->version == 0 ? i == n - 1 : emu_row_int (row, "version") == r->version)
      target = row;
  if (target == NULL)
    return emu_fail (c, 400, "ParameterVersionNotFound", "Systems Manager could not find version %lld of %s. "
                     "Verify the version and try again.", r->version, r->name);

  _cleanup_json_ json_t *invalid = json_array ();
  _cleanup_json_ json_t *removed = json_array ();
  _cleanup_json_ json_t *target_labels = row_labels (target);
  size_t k;
  json_t *item;
  json_array_foreach (r->labels, k, item)
    {
      const char *label = json_string_value (item);
      if (r->remove)
        {
          size_t at;
          json_t *l;
          bool found = false;
          json_array_foreach (target_labels, at, l)
            if (strcmp (json_string_value (l), label) == 0)
              {
                json_array_remove (target_labels, at);
                found = true;
                break;
              }
          json_array_append (found ? removed : invalid, item);
          continue;
        }
      if (!label_valid (label))
        {
          json_array_append (invalid, item);
          continue;
        }
      if (labels_contain (target_labels, label))
        continue;
      /* A label names one version: take it off whichever version has it. */
      json_array_foreach (versions, i, row)
        {
          if (row == target)
            continue;
          _cleanup_json_ json_t *labels = row_labels (row);
          size_t at;
          json_t *l;
          json_array_foreach (labels, at, l)
            if (strcmp (json_string_value (l), label) == 0)
              {
                json_array_remove (labels, at);
                if (set_labels (c, row, labels, err) < 0)
                  return -1;
                break;
              }
        }
      json_array_append (target_labels, item);
    }
  if (json_array_size (target_labels) > MAX_LABELS)
    return emu_fail (c, 400, "ParameterVersionLabelLimitExceeded", "A parameter version can have at most %d "
                     "labels.", MAX_LABELS);
  if (set_labels (c, target, target_labels, err) < 0)
    return -1;
  json_object_set (c->output, "InvalidLabels", invalid);
  if (r->remove)
    json_object_set (c->output, "RemovedLabels", removed);
  else
    json_object_set_new (c->output, "ParameterVersion", json_integer (emu_row_int (target, "version")));
  return 0;
}

static int
label_op (struct emu_call *c, bool remove)
{
  struct label_request r = {.remove = remove};
  if (in_string (c, c->input, "Name", true, 1, MAX_NAME, true, &r.name) < 0
      || in_string_list (c, c->input, "Labels", true, 1, MAX_LABELS, MAX_LABEL_LEN, &r.labels) < 0)
    return -1;
  json_t *v = json_object_get (c->input, "ParameterVersion");
  if (remove && (v == NULL || json_is_null (v)))
    return fail_null (c, "ParameterVersion");
  if (in_int (c, "ParameterVersion", 1, 1LL << 53, 0, &r.version) < 0)
    return -1;
  return in_transaction (c, &r, label_txn);
}

static int
op_label_parameter_version (struct emu_call *c)
{
  return label_op (c, false);
}

static int
op_unlabel_parameter_version (struct emu_call *c)
{
  return label_op (c, true);
}

const struct emu_operation emu_ssm_parameter_ops[] = {
  {"PutParameter", op_put_parameter},
  {"GetParameter", op_get_parameter},
  {"GetParameters", op_get_parameters},
  {"DeleteParameter", op_delete_parameter},
  {"DeleteParameters", op_delete_parameters},
  {"GetParameterHistory", op_get_parameter_history},
  {"GetParametersByPath", op_get_parameters_by_path},
  {"DescribeParameters", op_describe_parameters},
  {"LabelParameterVersion", op_label_parameter_version},
  {"UnlabelParameterVersion", op_unlabel_parameter_version},
  {NULL, NULL},
};
