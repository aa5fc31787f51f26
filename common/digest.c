/* digest.c - message digests, HMAC and base64 through OpenSSL 3's libcrypto
 * (see digest.h).
 *
 * Digests are fetched by name from the default library context, so a provider
 * configuration that disables an algorithm (MD5 under FIPS) shows up as an
 * error naming the algorithm rather than a crash.  The fixed SHA-256 helpers
 * used by request signing cannot fail short of a broken libcrypto, so they
 * abort in that case instead of making every caller handle an error.
 *
 * base64 goes through EVP_EncodeBlock/EVP_DecodeBlock, which take int lengths
 * and know nothing of padding on the way back, so inputs are fed in bounded
 * chunks and decoding validates the text itself first. */
#include "digest.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "cleanup.h"

#define FILE_CHUNK (64 * 1024)
/* Multiples of 3 bytes in and 4 characters out keep chunk boundaries clean. */
#define B64_RAW_CHUNK (3 * 16384)
#define B64_TEXT_CHUNK (4 * 16384)

static void
md_freep (EVP_MD **md)
{
  EVP_MD_free (*md);
}

static void
md_ctx_freep (EVP_MD_CTX **ctx)
{
  EVP_MD_CTX_free (*ctx);
}

#define _cleanup_md_ __attribute__ ((cleanup (md_freep)))
#define _cleanup_md_ctx_ __attribute__ ((cleanup (md_ctx_freep)))

/* The names digest.h promises, spelled as OpenSSL fetches them. */
static const char *const supported_algorithms[] = {"MD5", "SHA1", "SHA256", "SHA512"};

void
kiln_sha256 (const void *data, size_t len, unsigned char out[KILN_SHA256_LEN])
{
  if (EVP_Digest (data, len, out, NULL, EVP_sha256 (), NULL) != 1)
    abort ();
}

void
kiln_sha256_hex (const void *data, size_t len, char out[KILN_SHA256_LEN * 2 + 1])
{
  unsigned char raw[KILN_SHA256_LEN];
  kiln_sha256 (data, len, raw);
  kiln_hex_encode (raw, sizeof raw, out);
}

void
kiln_random_hex (char *out, size_t n_bytes)
{
  unsigned char r[32];
  if (n_bytes > sizeof r)
    n_bytes = sizeof r;
  if (getrandom (r, n_bytes, GRND_NONBLOCK) != (ssize_t) n_bytes)
    {
      static unsigned counter;
      struct timespec ts;
      clock_gettime (CLOCK_REALTIME, &ts);
      for (size_t i = 0; i < n_bytes; i += sizeof (uint64_t))
        {
          uint64_t v = ((uint64_t) ts.tv_nsec << 20) ^ (uint64_t) ts.tv_sec ^ ((uint64_t) getpid () << 40)
                       ^ (uint64_t) __atomic_add_fetch (&counter, 1, __ATOMIC_RELAXED);
          memcpy (r + i, &v, n_bytes - i < sizeof v ? n_bytes - i : sizeof v);
        }
    }
  kiln_hex_encode (r, n_bytes, out);
}

void
kiln_hmac_sha256 (const void *key, size_t key_len, const void *data, size_t len,
                  unsigned char out[KILN_SHA256_LEN])
{
  /* HMAC() treats a NULL key as "reuse the previous one"; an empty key is
   * what a caller passing (NULL, 0) means. */
  static const unsigned char empty[1];
  unsigned int out_len = 0;
  if (key_len > INT_MAX)
    abort ();
  if (HMAC (EVP_sha256 (), key ? key : empty, (int) key_len, data ? data : (const void *) empty, len, out,
            &out_len)
          == NULL
      || out_len != KILN_SHA256_LEN)
    abort ();
}

void
kiln_hex_encode (const unsigned char *in, size_t n, char *out)
{
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++)
    {
      out[2 * i] = digits[in[i] >> 4];
      out[2 * i + 1] = digits[in[i] & 0x0f];
    }
  out[2 * n] = '\0';
}

static const char *
canonical_algorithm (const char *name)
{
  for (size_t i = 0; i < sizeof supported_algorithms / sizeof supported_algorithms[0]; i++)
    if (strcasecmp (name, supported_algorithms[i]) == 0)
      return supported_algorithms[i];
  return NULL;
}

static int
fetch_digest (const char *algorithm, EVP_MD **out, kiln_error **err)
{
  const char *canonical = algorithm ? canonical_algorithm (algorithm) : NULL;
  if (canonical == NULL)
    return kiln_fail_invalid (err, "unsupported digest algorithm '%s' (expected MD5, SHA1, SHA256 or SHA512)",
                              algorithm ? algorithm : "");
  EVP_MD *md = EVP_MD_fetch (NULL, canonical, NULL);
  if (md == NULL)
    return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0, "digest algorithm '%s' is not available in libcrypto",
                           canonical);
  *out = md;
  return 0;
}

int
kiln_digest_check_algorithm (const char *name, kiln_error **err)
{
  _cleanup_md_ EVP_MD *md = NULL;
  return fetch_digest (name, &md, err);
}

static int
finish_hex (EVP_MD_CTX *ctx, const char *algorithm, char out[KILN_DIGEST_HEX_MAX], kiln_error **err)
{
  unsigned char raw[EVP_MAX_MD_SIZE];
  unsigned int raw_len = 0;
  if (EVP_DigestFinal_ex (ctx, raw, &raw_len) != 1 || raw_len > KILN_DIGEST_MAX_LEN)
    return kiln_fail (err, "compute %s digest", algorithm);
  kiln_hex_encode (raw, raw_len, out);
  return 0;
}

int
kiln_digest_buffer_hex (const char *algorithm, const void *data, size_t len, char out[KILN_DIGEST_HEX_MAX],
                        kiln_error **err)
{
  _cleanup_md_ EVP_MD *md = NULL;
  _cleanup_md_ctx_ EVP_MD_CTX *ctx = NULL;
  if (fetch_digest (algorithm, &md, err) < 0)
    return -1;
  ctx = EVP_MD_CTX_new ();
  if (ctx == NULL || EVP_DigestInit_ex (ctx, md, NULL) != 1 || EVP_DigestUpdate (ctx, data, len) != 1)
    return kiln_fail (err, "compute %s digest", algorithm);
  return finish_hex (ctx, algorithm, out, err);
}

int
kiln_digest_file_hex (const char *algorithm, const char *path, char out[KILN_DIGEST_HEX_MAX], kiln_error **err)
{
  _cleanup_md_ EVP_MD *md = NULL;
  _cleanup_md_ctx_ EVP_MD_CTX *ctx = NULL;
  _cleanup_close_ int fd = -1;
  _cleanup_free_ unsigned char *chunk = NULL;
  if (fetch_digest (algorithm, &md, err) < 0)
    return -1;
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return kiln_error_set (err, errno == ENOENT ? KILN_ERR_NOT_FOUND : KILN_ERR_IO, errno, "open '%s'", path);
  ctx = EVP_MD_CTX_new ();
  if (ctx == NULL || EVP_DigestInit_ex (ctx, md, NULL) != 1)
    return kiln_fail (err, "compute %s digest of '%s'", algorithm, path);
  chunk = malloc (FILE_CHUNK);
  if (chunk == NULL)
    abort ();
  for (;;)
    {
      ssize_t n = read (fd, chunk, FILE_CHUNK);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return kiln_fail_errno (err, errno, "read '%s'", path);
      if (n == 0)
        break;
      if (EVP_DigestUpdate (ctx, chunk, (size_t) n) != 1)
        return kiln_fail (err, "compute %s digest of '%s'", algorithm, path);
    }
  if (finish_hex (ctx, algorithm, out, err) < 0)
    return kiln_error_prefix (err, "digest '%s'", path);
  return 0;
}

char *
kiln_base64_encode (const unsigned char *in, size_t n)
{
  if (n > (SIZE_MAX - 1) / 4 * 3 - 3)
    abort ();
  size_t text_len = (n + 2) / 3 * 4;
  char *text = malloc (text_len + 1);
  if (text == NULL)
    abort ();
  size_t done = 0, written = 0;
  while (done < n)
    {
      size_t take = n - done < B64_RAW_CHUNK ? n - done : B64_RAW_CHUNK;
      written += (size_t) EVP_EncodeBlock ((unsigned char *) text + written, in + done, (int) take);
      done += take;
    }
  text[written] = '\0';
  return text;
}

static bool
is_base64_char (char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

static unsigned
base64_value (char c)
{
  if (c >= 'A' && c <= 'Z')
    return (unsigned) (c - 'A');
  if (c >= 'a' && c <= 'z')
    return (unsigned) (c - 'a') + 26;
  if (c >= '0' && c <= '9')
    return (unsigned) (c - '0') + 52;
  return c == '+' ? 62 : 63;
}

/* Accepts exactly the canonical encoding: whole quads, the alphabet, one or
 * two '=' only at the very end, and zero bits where padding cut a byte short
 * (so every byte string has one accepted spelling).  Returns the number of
 * '=' characters, or -1. */
static int
validate_base64 (const char *in, size_t len)
{
  if (len % 4 != 0)
    return -1;
  if (len == 0)
    return 0;
  int padding = 0;
  if (in[len - 1] == '=')
    padding = in[len - 2] == '=' ? 2 : 1;
  for (size_t i = 0; i < len - (size_t) padding; i++)
    if (!is_base64_char (in[i]))
      return -1;
  unsigned last = base64_value (in[len - 1 - (size_t) padding]);
  if ((padding == 1 && (last & 0x03) != 0) || (padding == 2 && (last & 0x0f) != 0))
    return -1;
  return padding;
}

int
kiln_base64_decode (const char *in, size_t in_len, unsigned char **out, size_t *out_len)
{
  int padding = validate_base64 (in, in_len);
  if (padding < 0)
    return -1;
  _cleanup_free_ unsigned char *raw = malloc (in_len / 4 * 3 + 1);
  if (raw == NULL)
    abort ();
  size_t done = 0, written = 0;
  while (done < in_len)
    {
      size_t take = in_len - done < B64_TEXT_CHUNK ? in_len - done : B64_TEXT_CHUNK;
      int n = EVP_DecodeBlock (raw + written, (const unsigned char *) in + done, (int) take);
      if (n < 0)
        return -1;
      written += (size_t) n;
      done += take;
    }
  /* EVP_DecodeBlock counts the bytes the '=' stand for as zeros. */
  *out_len = written - (size_t) padding;
  *out = kiln_steal_pointer (&raw);
  return 0;
}

int
kiln_hex_digit_value (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}
