/* test_digest.c - digests, HMAC and base64 against published vectors (TAP
 * output).  Digest vectors are FIPS 180 / RFC 1321 "abc" examples, HMAC
 * vectors RFC 4231 test cases 1 and 2, base64 vectors RFC 4648 section 10. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "digest.h"
#include "tap.h"

static bool
hex_is (const char *got, const char *want)
{
  if (strcmp (got, want) == 0)
    return true;
  printf ("# got  %s\n# want %s\n", got, want);
  return false;
}

static bool
test_sha256_fixed (void)
{
  char hex[KILN_SHA256_LEN * 2 + 1];
  kiln_sha256_hex ("", 0, hex);
  CHECK (hex_is (hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
  kiln_sha256_hex ("abc", 3, hex);
  CHECK (hex_is (hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));

  unsigned char raw[KILN_SHA256_LEN];
  kiln_sha256 ("abc", 3, raw);
  CHECK (raw[0] == 0xba && raw[31] == 0xad);
  return true;
}

static bool
test_named_digests (void)
{
  static const struct {
    const char *algorithm;
    const char *want;
  } cases[] = {
    {"MD5", "900150983cd24fb0d6963f7d28e17f72"},
    {"sha1", "a9993e364706816aba3e25717850c26c9cd0d89d"},
    {"SHA256", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
    {"Sha512", "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
               "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    {
      char hex[KILN_DIGEST_HEX_MAX];
      _cleanup_error_ kiln_error *err = NULL;
      CHECK (kiln_digest_buffer_hex (cases[i].algorithm, "abc", 3, hex, &err) == 0);
      CHECK (hex_is (hex, cases[i].want));
    }
  char hex[KILN_DIGEST_HEX_MAX];
  CHECK (kiln_digest_buffer_hex ("SHA256", "", 0, hex, NULL) == 0);
  CHECK (hex_is (hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
  return true;
}

static bool
test_algorithm_check (void)
{
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (kiln_digest_check_algorithm ("sha256", &err) == 0);
  CHECK (kiln_digest_check_algorithm ("MD5", &err) == 0);
  CHECK (kiln_digest_check_algorithm ("SHA3-256", &err) < 0);
  CHECK (err->code == KILN_ERR_INVALID);
  CHECK (strstr (err->message, "'SHA3-256'") != NULL);
  char hex[KILN_DIGEST_HEX_MAX];
  CHECK (kiln_digest_buffer_hex ("CRC32", "abc", 3, hex, NULL) < 0);
  return true;
}

static bool
test_hmac_rfc4231 (void)
{
  unsigned char key1[20];
  memset (key1, 0x0b, sizeof key1);
  unsigned char mac[KILN_SHA256_LEN];
  char hex[KILN_SHA256_LEN * 2 + 1];

  kiln_hmac_sha256 (key1, sizeof key1, "Hi There", 8, mac);
  kiln_hex_encode (mac, sizeof mac, hex);
  CHECK (hex_is (hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"));

  const char *data2 = "what do ya want for nothing?";
  kiln_hmac_sha256 ("Jefe", 4, data2, strlen (data2), mac);
  kiln_hex_encode (mac, sizeof mac, hex);
  CHECK (hex_is (hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
  return true;
}

static bool
test_hex_encode (void)
{
  const unsigned char in[] = {0x00, 0x0f, 0xa5, 0xff};
  char out[9];
  kiln_hex_encode (in, sizeof in, out);
  CHECK (strcmp (out, "000fa5ff") == 0);
  kiln_hex_encode (in, 0, out);
  CHECK (out[0] == '\0');
  return true;
}

static bool
test_base64_vectors (void)
{
  static const char *const pairs[][2] = {
    {"", ""},         {"f", "Zg=="},        {"fo", "Zm8="},       {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
  };
  for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
    {
      const char *raw = pairs[i][0], *text = pairs[i][1];
      _cleanup_free_ char *enc = kiln_base64_encode ((const unsigned char *) raw, strlen (raw));
      CHECK (strcmp (enc, text) == 0);
      _cleanup_free_ unsigned char *dec = NULL;
      size_t dec_len = 99;
      CHECK (kiln_base64_decode (text, strlen (text), &dec, &dec_len) == 0);
      CHECK (dec_len == strlen (raw));
      CHECK (memcmp (dec, raw, dec_len) == 0);
    }
  return true;
}

static bool
test_base64_round_trips (void)
{
  /* Every length up to 300 covers all padding cases; 200001 bytes crosses the
   * internal chunk boundaries. */
  size_t max = 200001;
  _cleanup_free_ unsigned char *data = malloc (max);
  CHECK (data != NULL);
  unsigned state = 12345;
  for (size_t i = 0; i < max; i++)
    {
      state = state * 1103515245u + 12345u;
      data[i] = (unsigned char) (state >> 16);
    }
  for (size_t len = 0; len <= max; len = len < 300 ? len + 1 : len == 300 ? max : max + 1)
    {
      _cleanup_free_ char *enc = kiln_base64_encode (data, len);
      CHECK (strlen (enc) == (len + 2) / 3 * 4);
      _cleanup_free_ unsigned char *dec = NULL;
      size_t dec_len = 0;
      CHECK (kiln_base64_decode (enc, strlen (enc), &dec, &dec_len) == 0);
      CHECK (dec_len == len);
      CHECK (len == 0 || memcmp (dec, data, len) == 0);
    }
  return true;
}

static bool
test_base64_malformed (void)
{
  static const char *const bad[] = {
    "Zg=", "Zg", "Z",                  /* not whole quads */
    "Z===", "====", "=Zg=", "Zg=a",     /* '=' where no padding can be */
    "Zm9vY===", "Zm9v====", "Zg==Zm9v", /* padding before the end */
    "Zm9v!A==", "Zm 9v", "Zm9v\n",     /* outside the alphabet */
    "Zh==", "Zm9=",                     /* non-zero bits under the padding */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    {
      unsigned char *dec = NULL;
      size_t dec_len = 0;
      if (kiln_base64_decode (bad[i], strlen (bad[i]), &dec, &dec_len) != -1)
        {
          printf ("# accepted '%s'\n", bad[i]);
          free (dec);
          return false;
        }
    }
  /* Only in_len bytes are looked at: a valid prefix of a longer string decodes. */
  _cleanup_free_ unsigned char *dec = NULL;
  size_t dec_len = 0;
  CHECK (kiln_base64_decode ("Zm9v!!!!", 4, &dec, &dec_len) == 0 && dec_len == 3 && memcmp (dec, "foo", 3) == 0);
  return true;
}

static bool
test_file_digest (void)
{
  char path[] = "/tmp/kiln-test-digest-XXXXXX";
  int fd = mkstemp (path);
  CHECK (fd >= 0);
  /* Larger than the 64 KiB read chunk and not a multiple of it. */
  size_t len = 3 * 65536 + 17;
  _cleanup_free_ char *data = malloc (len);
  CHECK (data != NULL);
  for (size_t i = 0; i < len; i++)
    data[i] = (char) (i % 251);
  bool written = write (fd, data, len) == (ssize_t) len;
  close (fd);

  char from_file[KILN_DIGEST_HEX_MAX], from_buffer[KILN_DIGEST_HEX_MAX];
  _cleanup_error_ kiln_error *err = NULL;
  bool ok = written;
  const char *algorithms[] = {"MD5", "SHA1", "SHA256", "SHA512"};
  for (size_t i = 0; ok && i < 4; i++)
    ok = kiln_digest_file_hex (algorithms[i], path, from_file, &err) == 0
         && kiln_digest_buffer_hex (algorithms[i], data, len, from_buffer, &err) == 0
         && hex_is (from_file, from_buffer);

  /* An empty file has the digest of the empty string. */
  if (ok)
    ok = truncate (path, 0) == 0 && kiln_digest_file_hex ("sha256", path, from_file, &err) == 0
         && hex_is (from_file, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  unlink (path);
  CHECK (ok);

  CHECK (kiln_digest_file_hex ("SHA256", "/nonexistent/kiln-file", from_file, &err) < 0);
  printf ("# %s\n", err->message);
  CHECK (strcmp (err->message, "open '/nonexistent/kiln-file': No such file or directory") == 0);
  CHECK (err->code == KILN_ERR_NOT_FOUND);
  return true;
}

static bool
test_random_hex (void)
{
  char a[33], b[33], c[5];
  kiln_random_hex (a, 16);
  kiln_random_hex (b, 16);
  kiln_random_hex (c, 2);
  if (strlen (a) != 32 || strlen (c) != 4 || strcmp (a, b) == 0)
    return false;
  for (const char *p = a; *p; p++)
    if (kiln_hex_digit_value (*p) < 0 || (*p >= 'A' && *p <= 'F'))
      return false;
  return true;
}

int
main (void)
{
  tap_ok (test_sha256_fixed (), "SHA-256 of \"\" and \"abc\"");
  tap_ok (test_named_digests (), "MD5, SHA1, SHA256, SHA512 of \"abc\" by name");
  tap_ok (test_algorithm_check (), "unsupported algorithm names are rejected");
  tap_ok (test_hmac_rfc4231 (), "HMAC-SHA256 RFC 4231 cases 1 and 2");
  tap_ok (test_hex_encode (), "hex encoding");
  tap_ok (test_base64_vectors (), "base64 RFC 4648 vectors both ways");
  tap_ok (test_base64_round_trips (), "base64 round trips of every padding and large input");
  tap_ok (test_base64_malformed (), "malformed base64 is rejected");
  tap_ok (test_file_digest (), "file digests match buffer digests");
  tap_ok (test_random_hex (), "random hex: the length asked for, lowercase, two draws differ");

  return tap_done ();
}
