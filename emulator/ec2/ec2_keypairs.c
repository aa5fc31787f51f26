/* ec2_keypairs.c - EC2 key pairs: CreateKeyPair, ImportKeyPair,
 * DescribeKeyPairs, DeleteKeyPair.
 *
 * CreateKeyPair makes a real key with libcrypto and hands the private half
 * to the caller once, as EC2 does; only the public half is kept (the
 * key_pairs table, OpenSSH "ssh-rsa AAAA... name" form, for
 * IncludePublicKey and for whoever later puts the key on a guest).  The
 * private key comes back in the format EC2 uses: RSA as a traditional PKCS#1
 * PEM ("BEGIN RSA PRIVATE KEY"), ed25519 as an OpenSSH private key ("BEGIN
 * OPENSSH PRIVATE KEY", unencrypted).
 *
 * Fingerprints are computed the way EC2 documents so that users' checks
 * with openssl/ssh-keygen agree: a key EC2 created is the SHA-1 of its
 * PKCS#8 DER private key; an imported RSA key is the MD5 of its DER
 * SubjectPublicKeyInfo (both colon-separated lowercase hex); ed25519, either
 * way, is the base64 SHA-256 of the OpenSSH public key blob.  EC2 keeps the
 * base64 '=' padding that ssh-keygen drops (its user guide says so), and so
 * does this file. */
#include "ec2.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "buf.h"
#include "cleanup.h"
#include "digest.h"
#include "store.h"
#include "xalloc.h"

#define KEY_NAME_MAX 255
#define RSA_BITS 2048
/* Imported RSA keys: what EC2 accepts, give or take (it documents 1024,
 * 2048 and 4096). */
#define RSA_IMPORT_MIN_BITS 1024
#define RSA_IMPORT_MAX_BITS 16384
#define ED25519_LEN 32

static void
pkey_freep (EVP_PKEY **p)
{
  EVP_PKEY_free (*p);
}

static void
bio_freep (BIO **p)
{
  BIO_free (*p);
}

static void
bn_freep (BIGNUM **p)
{
  BN_free (*p);
}

static void
p8_freep (PKCS8_PRIV_KEY_INFO **p)
{
  PKCS8_PRIV_KEY_INFO_free (*p);
}

static void
pkey_ctx_freep (EVP_PKEY_CTX **p)
{
  EVP_PKEY_CTX_free (*p);
}

static void
param_bld_freep (OSSL_PARAM_BLD **p)
{
  OSSL_PARAM_BLD_free (*p);
}

static void
params_freep (OSSL_PARAM **p)
{
  OSSL_PARAM_free (*p);
}

/* Key material is wiped, not only freed. */
static void
buf_clear_releasep (struct kiln_buf *b)
{
  if (b->data)
    OPENSSL_cleanse (b->data, b->cap);
  kiln_buf_release (b);
}

#define _cleanup_pkey_ __attribute__ ((cleanup (pkey_freep)))
#define _cleanup_bio_ __attribute__ ((cleanup (bio_freep)))
#define _cleanup_bn_ __attribute__ ((cleanup (bn_freep)))
#define _cleanup_p8_ __attribute__ ((cleanup (p8_freep)))
#define _cleanup_pkey_ctx_ __attribute__ ((cleanup (pkey_ctx_freep)))
#define _cleanup_param_bld_ __attribute__ ((cleanup (param_bld_freep)))
#define _cleanup_params_ __attribute__ ((cleanup (params_freep)))
#define _cleanup_secret_buf_ __attribute__ ((cleanup (buf_clear_releasep)))

/* ---- the SSH wire format (RFC 4251 section 5) ---- */

static void
ssh_put_u32 (struct kiln_buf *b, uint32_t v)
{
  unsigned char x[4] = {v >> 24, v >> 16, v >> 8, v};
  kiln_buf_append (b, x, sizeof x);
}

static void
ssh_put_string (struct kiln_buf *b, const void *data, size_t len)
{
  ssh_put_u32 (b, (uint32_t) len);
  kiln_buf_append (b, data, len);
}

static void
ssh_put_cstring (struct kiln_buf *b, const char *s)
{
  ssh_put_string (b, s, strlen (s));
}

/* A non-negative mpint: big-endian, no leading zero bytes, but a zero byte
 * in front when the top bit is set (it would read as negative). */
static void
ssh_put_mpint (struct kiln_buf *b, const BIGNUM *bn)
{
  int n = BN_num_bytes (bn);
  _cleanup_free_ unsigned char *x = kiln_xcalloc ((size_t) n + 1, 1);
  BN_bn2bin (bn, x + 1);
  bool pad = n > 0 && (x[1] & 0x80);
  ssh_put_string (b, pad ? x : x + 1, (size_t) n + (pad ? 1 : 0));
}

struct ssh_reader {
  const unsigned char *p;
  size_t left;
};

static bool
ssh_get_string (struct ssh_reader *r, const unsigned char **data, size_t *len)
{
  if (r->left < 4)
    return false;
  uint32_t n = (uint32_t) r->p[0] << 24 | (uint32_t) r->p[1] << 16 | (uint32_t) r->p[2] << 8 | r->p[3];
  if (n > r->left - 4)
    return false;
  *data = r->p + 4;
  *len = n;
  r->p += 4 + n;
  r->left -= 4 + n;
  return true;
}

/* A positive mpint as a BIGNUM, or NULL. */
static BIGNUM *
ssh_get_mpint (struct ssh_reader *r)
{
  const unsigned char *data;
  size_t len;
  if (!ssh_get_string (r, &data, &len) || len == 0 || (data[0] & 0x80) || len > 4096)
    return NULL;
  return BN_bin2bn (data, (int) len, NULL);
}

/* ---- fingerprints ---- */

/* "1f:51:ae:...": lowercase hex bytes joined by colons; malloc'd. */
static char *
colon_hex (const unsigned char *d, size_t n)
{
  char *out = kiln_xcalloc (n * 3 + 1, 1);
  for (size_t i = 0; i < n; i++)
    snprintf (out + i * 3, 4, i + 1 < n ? "%02x:" : "%02x", d[i]);
  return out;
}

static int
digest_colon_hex (const EVP_MD *md, const void *data, size_t len, char **out, kiln_error **err)
{
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest (data, len, d, &n, md, NULL) != 1)
    return kiln_fail (err, "fingerprint: digest %s is unavailable", EVP_MD_get0_name (md));
  *out = colon_hex (d, n);
  return 0;
}

/* base64 SHA-256 of an OpenSSH public key blob, '=' padding kept. */
static char *
blob_sha256_b64 (const void *blob, size_t len)
{
  unsigned char d[KILN_SHA256_LEN];
  kiln_sha256 (blob, len, d);
  return kiln_base64_encode (d, sizeof d);
}

/* "<type> <base64 blob>[ <comment>]"; malloc'd. */
static char *
openssh_public_line (const char *type, const struct kiln_buf *blob, const char *comment)
{
  _cleanup_free_ char *b64 = kiln_base64_encode ((const unsigned char *) kiln_buf_str (blob), blob->len);
  char *line = NULL;
  line = kiln_xasprintf ("%s %s%s%s", type, b64, comment && *comment ? " " : "", comment ? comment : "");
  return line;
}

/* The OpenSSH public key blob of an RSA key: string "ssh-rsa", mpint e,
 * mpint n. */
static int
rsa_public_blob (EVP_PKEY *pkey, struct kiln_buf *blob, kiln_error **err)
{
  _cleanup_bn_ BIGNUM *e = NULL;
  _cleanup_bn_ BIGNUM *n = NULL;
  if (EVP_PKEY_get_bn_param (pkey, OSSL_PKEY_PARAM_RSA_E, &e) != 1
      || EVP_PKEY_get_bn_param (pkey, OSSL_PKEY_PARAM_RSA_N, &n) != 1)
    return kiln_fail (err, "RSA key: cannot read its public numbers");
  ssh_put_cstring (blob, "ssh-rsa");
  ssh_put_mpint (blob, e);
  ssh_put_mpint (blob, n);
  return 0;
}

static void
ed25519_public_blob (const unsigned char pub[ED25519_LEN], struct kiln_buf *blob)
{
  ssh_put_cstring (blob, "ssh-ed25519");
  ssh_put_string (blob, pub, ED25519_LEN);
}

/* ---- creating keys ---- */

struct new_key {
  char *material;      /* private key, PEM-armoured */
  char *fingerprint;
  char *public_key;    /* OpenSSH line */
};

static void
new_key_release (struct new_key *k)
{
  if (k->material)
    OPENSSL_cleanse (k->material, strlen (k->material));
  free (k->material);
  free (k->fingerprint);
  free (k->public_key);
}

static int
create_rsa (const char *name, struct new_key *out, kiln_error **err)
{
  _cleanup_pkey_ EVP_PKEY *pkey = EVP_PKEY_Q_keygen (NULL, NULL, "RSA", (size_t) RSA_BITS);
  if (pkey == NULL)
    return kiln_fail (err, "generate an RSA key");

  /* The traditional (PKCS#1) PEM, as EC2 hands out RSA keys. */
  _cleanup_bio_ BIO *bio = BIO_new (BIO_s_mem ());
  if (bio == NULL || PEM_write_bio_PrivateKey_traditional (bio, pkey, NULL, NULL, 0, NULL, NULL) != 1)
    return kiln_fail (err, "encode the RSA private key");
  char *pem = NULL;
  long pem_len = BIO_get_mem_data (bio, &pem);
  out->material = kiln_xstrndup (pem, (size_t) pem_len);
  OPENSSL_cleanse (pem, (size_t) pem_len);

  /* Fingerprint: SHA-1 of the PKCS#8 DER private key. */
  _cleanup_p8_ PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8 (pkey);
  unsigned char *der = NULL;
  int der_len = p8 ? i2d_PKCS8_PRIV_KEY_INFO (p8, &der) : -1;
  if (der_len <= 0)
    return kiln_fail (err, "encode the RSA private key as PKCS#8");
  int r = digest_colon_hex (EVP_sha1 (), der, (size_t) der_len, &out->fingerprint, err);
  OPENSSL_clear_free (der, (size_t) der_len);
  if (r < 0)
    return -1;

  struct kiln_buf blob = KILN_BUF_INIT;
  if (rsa_public_blob (pkey, &blob, err) < 0)
    {
      kiln_buf_release (&blob);
      return -1;
    }
  out->public_key = openssh_public_line ("ssh-rsa", &blob, name);
  kiln_buf_release (&blob);
  return 0;
}

/* Base64 wrapped at 70 columns between BEGIN/END lines, as ssh-keygen
 * writes OpenSSH private keys. */
static char *
armour (const char *label, const struct kiln_buf *body)
{
  _cleanup_free_ char *b64 = kiln_base64_encode ((const unsigned char *) kiln_buf_str (body), body->len);
  struct kiln_buf out = KILN_BUF_INIT;
  kiln_buf_printf (&out, "-----BEGIN %s-----\n", label);
  size_t len = strlen (b64);
  for (size_t i = 0; i < len; i += 70)
    {
      kiln_buf_append (&out, b64 + i, len - i < 70 ? len - i : 70);
      kiln_buf_puts (&out, "\n");
    }
  kiln_buf_printf (&out, "-----END %s-----\n", label);
  OPENSSL_cleanse (b64, len);
  return kiln_buf_steal (&out);
}

/* The unencrypted "openssh-key-v1" container (OpenSSH's PROTOCOL.key): the
 * public blob, then a private section of two equal check words, the key
 * (type, public, seed || public), a comment, and padding 1, 2, 3, ... to
 * the cipher block size (8 for "none"). */
static char *
openssh_private_key (const struct kiln_buf *pub_blob, const unsigned char pub[ED25519_LEN],
                     const unsigned char seed[ED25519_LEN], const char *comment)
{
  _cleanup_secret_buf_ struct kiln_buf priv = KILN_BUF_INIT;
  unsigned char check[4];
  if (RAND_bytes (check, sizeof check) != 1)
    abort ();
  kiln_buf_append (&priv, check, sizeof check);
  kiln_buf_append (&priv, check, sizeof check);
  ssh_put_cstring (&priv, "ssh-ed25519");
  ssh_put_string (&priv, pub, ED25519_LEN);
  unsigned char both[2 * ED25519_LEN];
  memcpy (both, seed, ED25519_LEN);
  memcpy (both + ED25519_LEN, pub, ED25519_LEN);
  ssh_put_string (&priv, both, sizeof both);
  OPENSSL_cleanse (both, sizeof both);
  ssh_put_cstring (&priv, comment ? comment : "");
  for (unsigned char pad = 1; priv.len % 8 != 0; pad++)
    kiln_buf_append (&priv, &pad, 1);

  _cleanup_secret_buf_ struct kiln_buf all = KILN_BUF_INIT;
  kiln_buf_append (&all, "openssh-key-v1", sizeof "openssh-key-v1"); /* with its NUL */
  ssh_put_cstring (&all, "none");     /* cipher */
  ssh_put_cstring (&all, "none");     /* kdf */
  ssh_put_string (&all, "", 0);       /* kdf options */
  ssh_put_u32 (&all, 1);              /* number of keys */
  ssh_put_string (&all, kiln_buf_str (pub_blob), pub_blob->len);
  ssh_put_string (&all, kiln_buf_str (&priv), priv.len);
  return armour ("OPENSSH PRIVATE KEY", &all);
}

static int
create_ed25519 (const char *name, struct new_key *out, kiln_error **err)
{
  _cleanup_pkey_ EVP_PKEY *pkey = EVP_PKEY_Q_keygen (NULL, NULL, "ED25519");
  if (pkey == NULL)
    return kiln_fail (err, "generate an ed25519 key");
  unsigned char pub[ED25519_LEN], seed[ED25519_LEN];
  size_t pub_len = sizeof pub, seed_len = sizeof seed;
  if (EVP_PKEY_get_raw_public_key (pkey, pub, &pub_len) != 1 || pub_len != ED25519_LEN
      || EVP_PKEY_get_raw_private_key (pkey, seed, &seed_len) != 1 || seed_len != ED25519_LEN)
    return kiln_fail (err, "read the ed25519 key");

  struct kiln_buf blob = KILN_BUF_INIT;
  ed25519_public_blob (pub, &blob);
  out->material = openssh_private_key (&blob, pub, seed, name);
  OPENSSL_cleanse (seed, sizeof seed);
  out->fingerprint = blob_sha256_b64 (kiln_buf_str (&blob), blob.len);
  out->public_key = openssh_public_line ("ssh-ed25519", &blob, name);
  kiln_buf_release (&blob);
  return 0;
}

/* ---- importing keys ---- */

/* An imported public key, checked: its type, fingerprint and the OpenSSH
 * line stored for IncludePublicKey. */
struct imported_key {
  const char *type;    /* "rsa" / "ed25519" */
  char *fingerprint;
  char *public_key;
};

static void
imported_key_release (struct imported_key *k)
{
  free (k->fingerprint);
  free (k->public_key);
}

/* MD5 of the DER SubjectPublicKeyInfo of the RSA key (e, n). */
static int
rsa_import_fingerprint (BIGNUM *e, BIGNUM *n, char **out, kiln_error **err)
{
  _cleanup_param_bld_ OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new ();
  if (bld == NULL || OSSL_PARAM_BLD_push_BN (bld, OSSL_PKEY_PARAM_RSA_N, n) != 1
      || OSSL_PARAM_BLD_push_BN (bld, OSSL_PKEY_PARAM_RSA_E, e) != 1)
    return kiln_fail (err, "RSA key: cannot build its parameters");
  _cleanup_params_ OSSL_PARAM *params = OSSL_PARAM_BLD_to_param (bld);
  _cleanup_pkey_ctx_ EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name (NULL, "RSA", NULL);
  _cleanup_pkey_ EVP_PKEY *pkey = NULL;
  if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init (ctx) != 1
      || EVP_PKEY_fromdata (ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
    return kiln_fail (err, "RSA key: not a usable public key");
  unsigned char *der = NULL;
  int der_len = i2d_PUBKEY (pkey, &der);
  if (der_len <= 0)
    return kiln_fail (err, "RSA key: cannot encode it as SubjectPublicKeyInfo");
  int r = digest_colon_hex (EVP_md5 (), der, (size_t) der_len, out, err);
  OPENSSL_free (der);
  return r;
}

/* The first non-blank line of text, trimmed; malloc'd. */
static char *
first_line (const char *text, size_t len)
{
  const char *p = text, *end = text + len;
  while (p < end)
    {
      while (p < end && isspace ((unsigned char) *p))
        p++;
      const char *eol = memchr (p, '\n', (size_t) (end - p));
      const char *q = eol ? eol : end;
      while (q > p && isspace ((unsigned char) q[-1]))
        q--;
      if (q > p)
        return kiln_xstrndup (p, (size_t) (q - p));
      p = eol ? eol + 1 : end;
    }
  return kiln_xstrdup ("");
}

/* "<type> <base64>...": printable ASCII with a space after a first word. */
static bool
looks_like_key_line (const char *line)
{
  size_t word = strcspn (line, " \t");
  if (word == 0 || line[word] == '\0')
    return false;
  for (const char *p = line; *p; p++)
    if (!isprint ((unsigned char) *p) && *p != '\t')
      return false;
  return true;
}

/* The key line PublicKeyMaterial carries.  SDKs send the blob base64
 * encoded (it is a Blob in the model); a caller writing the Query by hand
 * may send the line itself, which no base64 decoding yields. */
static char *
public_key_line (const char *material)
{
  unsigned char *raw = NULL;
  size_t raw_len = 0;
  if (kiln_base64_decode (material, strlen (material), &raw, &raw_len) == 0)
    {
      _cleanup_free_ char *line = first_line ((const char *) raw, raw_len);
      free (raw);
      if (looks_like_key_line (line))
        return kiln_steal_pointer (&line);
    }
  return first_line (material, strlen (material));
}

/* Parses "ssh-rsa AAAA... comment" / "ssh-ed25519 AAAA... comment".  Fails
 * the call with InvalidKey.Format (EC2's code) when it is not such a key. */
static int
parse_public_key (struct emu_call *c, const char *material, struct imported_key *out)
{
  _cleanup_free_ char *line = public_key_line (material);
  const char *type = line;
  size_t type_len = strcspn (type, " \t");
  const char *b64 = type + type_len + strspn (type + type_len, " \t");
  size_t b64_len = strcspn (b64, " \t");

  _cleanup_free_ unsigned char *blob = NULL;
  size_t blob_len = 0;
  if (type_len == 0 || b64_len == 0 || kiln_base64_decode (b64, b64_len, &blob, &blob_len) < 0)
    return emu_fail (c, 400, "InvalidKey.Format", "Key is not in valid OpenSSH public key format");

  struct ssh_reader r = {blob, blob_len};
  const unsigned char *blob_type;
  size_t blob_type_len;
  if (!ssh_get_string (&r, &blob_type, &blob_type_len) || blob_type_len != type_len
      || memcmp (blob_type, type, type_len) != 0)
    return emu_fail (c, 400, "InvalidKey.Format", "Key is not in valid OpenSSH public key format");

  if (type_len == 7 && memcmp (type, "ssh-rsa", 7) == 0)
    {
      _cleanup_bn_ BIGNUM *e = ssh_get_mpint (&r);
      _cleanup_bn_ BIGNUM *n = ssh_get_mpint (&r);
      if (e == NULL || n == NULL || r.left != 0)
        return emu_fail (c, 400, "InvalidKey.Format", "Key is not in valid OpenSSH public key format");
      int bits = BN_num_bits (n);
      if (bits < RSA_IMPORT_MIN_BITS || bits > RSA_IMPORT_MAX_BITS)
        return emu_fail (c, 400, "InvalidKey.Format", "RSA keys must be between %d and %d bits long; this one "
                         "has %d", RSA_IMPORT_MIN_BITS, RSA_IMPORT_MAX_BITS, bits);
      _cleanup_error_ kiln_error *err = NULL;
      if (rsa_import_fingerprint (e, n, &out->fingerprint, &err) < 0)
        return emu_fail (c, 400, "InvalidKey.Format", "Key is not a valid RSA public key: %s",
                         kiln_error_message (err));
      out->type = "rsa";
    }
  else if (type_len == 11 && memcmp (type, "ssh-ed25519", 11) == 0)
    {
      const unsigned char *pub;
      size_t pub_len;
      if (!ssh_get_string (&r, &pub, &pub_len) || pub_len != ED25519_LEN || r.left != 0)
        return emu_fail (c, 400, "InvalidKey.Format", "Key is not in valid OpenSSH public key format");
      out->fingerprint = blob_sha256_b64 (blob, blob_len);
      out->type = "ed25519";
    }
  else
    return emu_fail (c, 400, "InvalidKey.Format", "Key type '%.*s' is not supported: import an RSA or ED25519 "
                     "key in OpenSSH public key format", (int) type_len, type);

  /* Stored as given, comment included. */
  out->public_key = kiln_xstrdup (line);
  return 0;
}

/* ---- operations ---- */

/* KeyName: required, at most 255 ASCII characters. */
static int
read_key_name (struct emu_call *c, const char **out)
{
  if (emu_param_required (c, "KeyName", out) < 0)
    return -1;
  if (**out == '\0')
    return emu_fail (c, 400, "MissingParameter", "The request must contain the parameter KeyName");
  if (strlen (*out) > KEY_NAME_MAX)
    return emu_fail_param (c, "Value (%s) for parameter keyName is invalid. Length exceeds maximum of %d.", *out,
                           KEY_NAME_MAX);
  for (const char *p = *out; *p; p++)
    if ((unsigned char) *p >= 0x80 || iscntrl ((unsigned char) *p))
      return emu_fail_param (c, "Value (%s) for parameter keyName is invalid. Character sets beyond ASCII are "
                             "not supported.", *out);
  return 0;
}

static const char *const key_pair_tag_types[] = {"key-pair", NULL};

/* Stores a new key pair with its tags, atomically; fails the call with
 * InvalidKeyPair.Duplicate when the name is taken. */
static int
store_key_pair (struct emu_call *c, const char *id, const char *name, const char *fingerprint,
                const char *key_type, const char *public_key)
{
  _cleanup_error_ kiln_error *err = NULL;
  char created[32];
  snprintf (created, sizeof created, "%lld", (long long) c->now);
  if (emu_db_begin (c->emu, &err) < 0)
    return emu_fail_internal (c, err);
  int changed = emu_db_exec (c->emu, &err,
                             "INSERT INTO key_pairs (account, region, name, id, fingerprint, key_type, public_key, "
                             "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                             c->account, c->region, name, id, fingerprint, key_type, public_key, created);
  if (changed < 0)
    {
      emu_db_end (c->emu, false, NULL);
      return emu_fail_internal (c, err);
    }
  if (changed == 0)
    {
      emu_db_end (c->emu, false, NULL);
      return emu_fail (c, 400, "InvalidKeyPair.Duplicate", "The keypair '%s' already exists.", name);
    }
  if (emu_tag_specs_apply (c, "key-pair", id) < 0)
    {
      emu_db_end (c->emu, false, NULL);
      return -1;
    }
  if (emu_db_end (c->emu, true, &err) < 0)
    return emu_fail_internal (c, err);
  return 0;
}

static int
write_tag_set (struct emu_call *c, const char *id)
{
  _cleanup_json_ json_t *tags = emu_tags_of (c, id);
  if (tags == NULL)
    return -1;
  emu_xml_tag_set (c, "tagSet", tags);
  return 0;
}

static int
op_create_key_pair (struct emu_call *c)
{
  const char *name;
  if (read_key_name (c, &name) < 0)
    return -1;
  const char *key_type = emu_param (c, "KeyType");
  if (key_type == NULL || *key_type == '\0')
    key_type = "rsa";
  if (strcmp (key_type, "rsa") != 0 && strcmp (key_type, "ed25519") != 0)
    return emu_fail_param (c, "Value (%s) for parameter KeyType is invalid. Valid values are rsa and ed25519.",
                           key_type);
  const char *format = emu_param (c, "KeyFormat");
  if (format && strcmp (format, "ppk") == 0)
    return emu_fail_param (c, "KeyFormat 'ppk' (PuTTY) is not supported by kiln-emulator: use 'pem' and convert "
                           "the key with puttygen if PuTTY needs it");
  if (format && *format && strcmp (format, "pem") != 0)
    return emu_fail_param (c, "Value (%s) for parameter KeyFormat is invalid. Valid values are pem and ppk.",
                           format);
  if (emu_tag_specs_check (c, key_pair_tag_types) < 0)
    return -1;

  /* Refuse a taken name before spending time on a key; store_key_pair
   * checks again under the transaction. */
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *existing
      = emu_db_query_one (c->emu, &err, "SELECT id FROM key_pairs WHERE account = ? AND region = ? AND name = ?",
                          c->account, c->region, name);
  if (existing == NULL && err)
    return emu_fail_internal (c, err);
  if (existing)
    return emu_fail (c, 400, "InvalidKeyPair.Duplicate", "The keypair '%s' already exists.", name);

  __attribute__ ((cleanup (new_key_release))) struct new_key key = {0};
  int r = strcmp (key_type, "rsa") == 0 ? create_rsa (name, &key, &err) : create_ed25519 (name, &key, &err);
  if (r < 0)
    return emu_fail_internal (c, err);

  _cleanup_free_ char *id = emu_new_id (c->emu, "key");
  if (store_key_pair (c, id, name, key.fingerprint, key_type, key.public_key) < 0)
    return -1;

  emu_xml_text (c, "keyFingerprint", key.fingerprint);
  emu_xml_text (c, "keyMaterial", key.material);
  emu_xml_text (c, "keyName", name);
  emu_xml_text (c, "keyPairId", id);
  return write_tag_set (c, id);
}

static int
op_import_key_pair (struct emu_call *c)
{
  const char *name, *material;
  if (read_key_name (c, &name) < 0 || emu_param_required (c, "PublicKeyMaterial", &material) < 0)
    return -1;
  if (emu_tag_specs_check (c, key_pair_tag_types) < 0)
    return -1;
  __attribute__ ((cleanup (imported_key_release))) struct imported_key key = {0};
  if (parse_public_key (c, material, &key) < 0)
    return -1;

  _cleanup_free_ char *id = emu_new_id (c->emu, "key");
  if (store_key_pair (c, id, name, key.fingerprint, key.type, key.public_key) < 0)
    return -1;

  emu_xml_text (c, "keyFingerprint", key.fingerprint);
  emu_xml_text (c, "keyName", name);
  emu_xml_text (c, "keyPairId", id);
  return write_tag_set (c, id);
}

static const char *const describe_key_pairs_filters[] = {"key-name", "key-pair-id", "fingerprint", "key-type",
                                                          "tag:*", "tag-key", NULL};

static json_t *
key_pair_fields (struct emu_call *c, json_t *row)
{
  return json_pack ("{s:s, s:s, s:s, s:s}", "key-name", emu_row_str (row, "name"), "key-pair-id",
                    emu_row_str (row, "id"), "fingerprint", emu_row_str (row, "fingerprint"), "key-type",
                    emu_row_str (row, "key_type"));
}

static int
read_include_public (struct emu_call *c, struct emu_describe_call *d)
{
  bool include_public = false;
  if (emu_param_bool (c, "IncludePublicKey", false, &include_public) < 0)
    return -1;
  json_object_set_new (d->options, "include_public", json_boolean (include_public));
  return 0;
}

/* Every key pair is listed; its public key only with IncludePublicKey. */
static bool
keep_key_pair (struct emu_call *c, struct emu_describe_call *d, json_t *row)
{
  if (!json_is_true (json_object_get (d->options, "include_public")))
    json_object_del (row, "public_key");
  return true;
}

static const struct emu_describe_text key_pair_texts[] = {
  {"keyPairId", "id"}, {"keyFingerprint", "fingerprint"}, {"keyName", "name"}, {"keyType", "key_type"}, {NULL, NULL},
};

/* After key_pair_texts. */
static void
write_key_pair (struct emu_call *c, json_t *row, json_t *tags)
{
  emu_xml_tag_set (c, "tagSet", tags);
  emu_xml_text (c, "publicKey", emu_row_str_or_null (row, "public_key"));
  emu_xml_time (c, "createTime", (time_t) emu_row_int (row, "created"));
}

/* Key pairs by name and by id (together: their union), each of which must
 * exist, as in EC2; no paging. */
#define KEY_PAIR_NOT_FOUND {"InvalidKeyPair.NotFound", "The key pair '%s' does not exist", NULL, EMU_REPORT_FIRST}

static const struct emu_describe_kind key_pairs_kind = {
  .ids = {
    {.param = "KeyName", .column = "name", .not_found = KEY_PAIR_NOT_FOUND},
    {.param = "KeyPairId", .column = "id", .not_found = KEY_PAIR_NOT_FOUND},
  },
  .filter_names = describe_key_pairs_filters, .fields = key_pair_fields,
  .query = "SELECT id, name, fingerprint, key_type, public_key, created FROM key_pairs WHERE account = ?1 AND "
           "region = ?2 ORDER BY name",
  .read = read_include_public, .keep = keep_key_pair,
  .set = "keySet", .texts = key_pair_texts, .write = write_key_pair,
};

EMU_DESCRIBE_HANDLER (op_describe_key_pairs, key_pairs_kind)

/* Deleting a key pair that does not exist succeeds, as in EC2. */
static int
op_delete_key_pair (struct emu_call *c)
{
  const char *name = emu_param (c, "KeyName");
  const char *id = emu_param (c, "KeyPairId");
  if (name && *name == '\0')
    name = NULL;
  if (id && *id == '\0')
    id = NULL;
  if (name == NULL && id == NULL)
    return emu_fail (c, 400, "MissingParameter", "The request must contain the parameter KeyName or KeyPairId");

  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_begin (c->emu, &err) < 0)
    return emu_fail_internal (c, err);
  /* A NULL argument leaves its condition out. */
  _cleanup_json_ json_t *row
      = emu_db_query_one (c->emu, &err, "SELECT id FROM key_pairs WHERE account = ? AND region = ? AND "
                          "(?3 IS NULL OR name = ?3) AND (?4 IS NULL OR id = ?4)", c->account, c->region, name, id);
  _cleanup_free_ char *deleted = row ? kiln_xstrdup (emu_row_str (row, "id")) : NULL;
  if ((row == NULL && err)
      || (deleted
          && (emu_db_exec (c->emu, &err, "DELETE FROM key_pairs WHERE account = ? AND region = ? AND id = ?",
                           c->account, c->region, deleted) < 0
              || emu_db_exec (c->emu, &err, "DELETE FROM tags WHERE resource_id = ? AND account = ? AND "
                              "region = ?", deleted, c->account, c->region) < 0)))
    {
      emu_db_end (c->emu, false, NULL);
      return emu_fail_internal (c, err);
    }
  if (emu_db_end (c->emu, true, &err) < 0)
    return emu_fail_internal (c, err);

  emu_xml_bool (c, "return", true);
  emu_xml_text (c, "keyPairId", deleted);
  return 0;
}

const struct emu_operation emu_ec2_keypair_ops[] = {
  {"CreateKeyPair", op_create_key_pair},
  {"ImportKeyPair", op_import_key_pair},
  {"DescribeKeyPairs", op_describe_key_pairs},
  {"DeleteKeyPair", op_delete_key_pair},
  {NULL, NULL},
};
