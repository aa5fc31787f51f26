/* fuzz_sigv4.c - libFuzzer target for what kiln parses of SigV4 before it
 * knows who is asking: the Authorization header, a presigned query string,
 * X-Amz-Date, and URI decoding.  Input: the header value, a newline, the
 * query string.  Any input gives a result or an error, never a crash. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "sigv4.h"
#include "xalloc.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  const char *text = (const char *) data;
  const char *nl = memchr (text, '\n', size);
  size_t head_len = nl ? (size_t) (nl - text) : size;
  _cleanup_free_ char *header = kiln_xstrndup (text, head_len);
  _cleanup_free_ char *query = nl ? kiln_xstrndup (nl + 1, size - head_len - 1) : kiln_xstrdup ("");

  struct kiln_sigv4_auth auth = {0};
  _cleanup_error_ kiln_error *e1 = NULL;
  kiln_sigv4_parse_authorization (header, &auth, &e1);
  kiln_sigv4_auth_release (&auth);

  time_t t;
  _cleanup_error_ kiln_error *e2 = NULL;
  kiln_sigv4_parse_amz_date (header, &t, &e2);

  struct kiln_sigv4_pair *pairs = NULL;
  size_t n = 0;
  kiln_sigv4_parse_query (query, &pairs, &n);
  struct kiln_sigv4_auth presigned = {0};
  _cleanup_error_ kiln_error *e3 = NULL;
  kiln_sigv4_parse_presigned (pairs, n, &presigned, &e3);
  kiln_sigv4_auth_release (&presigned);
  kiln_sigv4_pairs_free (pairs, n);

  size_t decoded_len = 0;
  free (kiln_sigv4_uri_decode (query, strlen (query), true, &decoded_len));
  free (kiln_sigv4_uri_decode (query, strlen (query), false, &decoded_len));
  return 0;
}
