/* digest.h - message digests and HMAC through OpenSSL's libcrypto.
 *
 * The algorithm names are the ones AWS uses in documents and APIs:
 * "MD5", "SHA1", "SHA256", "SHA512" (matched without regard to case). */
#ifndef KILN_COMMON_DIGEST_H
#define KILN_COMMON_DIGEST_H

#include <stddef.h>

#include "error.h"

#define KILN_SHA256_LEN 32
#define KILN_DIGEST_MAX_LEN 64
#define KILN_DIGEST_HEX_MAX (KILN_DIGEST_MAX_LEN * 2 + 1)

void kiln_sha256 (const void *data, size_t len, unsigned char out[KILN_SHA256_LEN]);
void kiln_sha256_hex (const void *data, size_t len, char out[KILN_SHA256_LEN * 2 + 1]);
void kiln_hmac_sha256 (const void *key, size_t key_len, const void *data, size_t len,
                       unsigned char out[KILN_SHA256_LEN]);

/* The value of one hex digit (either case), or -1 for any other character. */
int kiln_hex_digit_value (char c);

/* Lowercase hex of n bytes into out (2n+1 bytes). */
void kiln_hex_encode (const unsigned char *in, size_t n, char *out);

/* n_bytes random bytes (getrandom; a clock-and-pid mix if that fails) as
 * lowercase hex into out (2 * n_bytes + 1 bytes, n_bytes at most 32): names
 * and tokens no other run uses, not secrets. */
void kiln_random_hex (char *out, size_t n_bytes);

/* Returns 0 if name is a supported algorithm. */
int kiln_digest_check_algorithm (const char *name, kiln_error **err);
/* Hex digest of a buffer / a file with the named algorithm. */
int kiln_digest_buffer_hex (const char *algorithm, const void *data, size_t len,
                            char out[KILN_DIGEST_HEX_MAX], kiln_error **err);
int kiln_digest_file_hex (const char *algorithm, const char *path, char out[KILN_DIGEST_HEX_MAX],
                          kiln_error **err);

/* Standard base64 (with padding) of n bytes; malloc'd. */
char *kiln_base64_encode (const unsigned char *in, size_t n);
/* Decodes standard base64; returns -1 on malformed input. *out is malloc'd. */
int kiln_base64_decode (const char *in, size_t in_len, unsigned char **out, size_t *out_len);

#endif
