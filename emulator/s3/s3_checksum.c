/* s3_checksum.c - the digests S3 computes over object data (s3.h): the
 * flexible checksums CRC32, CRC32C, CRC64NVME, SHA1 and SHA256 that
 * x-amz-checksum-* headers and trailers carry, and MD5 for ETags.
 *
 * The CRCs are the reflected ones S3 documents: CRC32 is ISO-HDLC
 * (polynomial 0x04C11DB7), CRC32C is Castagnoli (0x1EDC6F41), CRC64NVME is
 * the NVMe one (0xAD93D23594C93659); all start from all ones and end
 * inverted, and go on the wire as their big-endian bytes in base64.  They
 * run eight bytes at a time from eight derived tables, so a several-GiB
 * upload is not held up by its checksum.  The hashes go through libcrypto. */
#include "s3.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "digest.h"

/* Reflected polynomials. */
#define POLY_CRC32 0xEDB88320ULL
#define POLY_CRC32C 0x82F63B78ULL
#define POLY_CRC64NVME 0x9A6C9329AC4BC9B5ULL

static const struct s3_algorithm_info infos[] = {
  [S3_ALG_CRC32] = {"CRC32", "x-amz-checksum-crc32", "ChecksumCRC32", 4, true, true},
  [S3_ALG_CRC32C] = {"CRC32C", "x-amz-checksum-crc32c", "ChecksumCRC32C", 4, true, true},
  [S3_ALG_CRC64NVME] = {"CRC64NVME", "x-amz-checksum-crc64nvme", "ChecksumCRC64NVME", 8, false, true},
  [S3_ALG_SHA1] = {"SHA1", "x-amz-checksum-sha1", "ChecksumSHA1", 20, true, false},
  [S3_ALG_SHA256] = {"SHA256", "x-amz-checksum-sha256", "ChecksumSHA256", 32, true, false},
};

const struct s3_algorithm_info *
s3_algorithm_info (enum s3_algorithm alg)
{
  if (alg <= S3_ALG_NONE || alg >= S3_ALG_MD5)
    return NULL;
  return &infos[alg];
}

enum s3_algorithm
s3_algorithm_by_name (const char *name)
{
  for (int a = S3_ALG_CRC32; a < S3_ALG_MD5; a++)
    if (name && strcasecmp (infos[a].name, name) == 0)
      return (enum s3_algorithm) a;
  return S3_ALG_NONE;
}

enum s3_algorithm
s3_algorithm_by_header (const char *name)
{
  for (int a = S3_ALG_CRC32; a < S3_ALG_MD5; a++)
    if (name && strcasecmp (infos[a].header, name) == 0)
      return (enum s3_algorithm) a;
  return S3_ALG_NONE;
}

/* ---- CRCs ---- */

struct crc_tables {
  uint64_t t[8][256];
};

static struct crc_tables tables[3];   /* CRC32, CRC32C, CRC64NVME */
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void
make_tables (struct crc_tables *ct, uint64_t poly)
{
  for (unsigned i = 0; i < 256; i++)
    {
      uint64_t c = i;
      for (int k = 0; k < 8; k++)
        c = (c & 1) ? (c >> 1) ^ poly : c >> 1;
      ct->t[0][i] = c;
    }
  for (int s = 1; s < 8; s++)
    for (unsigned i = 0; i < 256; i++)
      ct->t[s][i] = (ct->t[s - 1][i] >> 8) ^ ct->t[0][ct->t[s - 1][i] & 0xff];
}

static void
init_tables (void)
{
  make_tables (&tables[0], POLY_CRC32);
  make_tables (&tables[1], POLY_CRC32C);
  make_tables (&tables[2], POLY_CRC64NVME);
}

static const struct crc_tables *
tables_for (enum s3_algorithm alg)
{
  pthread_once (&tables_once, init_tables);
  return &tables[alg == S3_ALG_CRC32 ? 0 : alg == S3_ALG_CRC32C ? 1 : 2];
}

/* The register runs un-inverted here: s3_hash_init sets all ones and
 * s3_hash_final inverts.  A 32-bit CRC in the low half of the 64-bit
 * register takes the same eight-table step, its upper half being zero. */
static uint64_t
crc_update (const struct crc_tables *ct, uint64_t crc, const unsigned char *p, size_t n)
{
  while (n >= 8)
    {
      uint64_t x = crc;
      for (int i = 0; i < 8; i++)
        x ^= (uint64_t) p[i] << (8 * i);
      crc = ct->t[7][x & 0xff] ^ ct->t[6][(x >> 8) & 0xff] ^ ct->t[5][(x >> 16) & 0xff]
            ^ ct->t[4][(x >> 24) & 0xff] ^ ct->t[3][(x >> 32) & 0xff] ^ ct->t[2][(x >> 40) & 0xff]
            ^ ct->t[1][(x >> 48) & 0xff] ^ ct->t[0][x >> 56];
      p += 8;
      n -= 8;
    }
  while (n--)
    crc = ct->t[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

/* ---- the common interface ---- */

static const EVP_MD *
md_for (enum s3_algorithm alg)
{
  switch (alg)
    {
    case S3_ALG_SHA1: return EVP_sha1 ();
    case S3_ALG_SHA256: return EVP_sha256 ();
    case S3_ALG_MD5: return EVP_md5 ();
    default: return NULL;
    }
}

void
s3_hash_init (struct s3_hash *h, enum s3_algorithm alg)
{
  EVP_MD_CTX *keep = h->md;
  memset (h, 0, sizeof *h);
  h->alg = alg;
  h->md = keep;
  switch (alg)
    {
    case S3_ALG_CRC32:
    case S3_ALG_CRC32C:
      h->crc = 0xffffffffULL;
      break;
    case S3_ALG_CRC64NVME:
      h->crc = ~0ULL;
      break;
    case S3_ALG_SHA1:
    case S3_ALG_SHA256:
    case S3_ALG_MD5:
      if (h->md == NULL && (h->md = EVP_MD_CTX_new ()) == NULL)
        abort ();
      if (EVP_DigestInit_ex (h->md, md_for (alg), NULL) != 1)
        abort ();
      break;
    case S3_ALG_NONE:
      break;
    }
}

void
s3_hash_update (struct s3_hash *h, const void *data, size_t len)
{
  switch (h->alg)
    {
    case S3_ALG_CRC32:
    case S3_ALG_CRC32C:
    case S3_ALG_CRC64NVME:
      h->crc = crc_update (tables_for (h->alg), h->crc, data, len);
      break;
    case S3_ALG_SHA1:
    case S3_ALG_SHA256:
    case S3_ALG_MD5:
      if (EVP_DigestUpdate (h->md, data, len) != 1)
        abort ();
      break;
    case S3_ALG_NONE:
      break;
    }
}

size_t
s3_hash_final (struct s3_hash *h, unsigned char out[S3_CHECKSUM_MAX])
{
  switch (h->alg)
    {
    case S3_ALG_CRC32:
    case S3_ALG_CRC32C:
      {
        uint32_t v = (uint32_t) ~h->crc;
        for (int i = 0; i < 4; i++)
          out[i] = (unsigned char) (v >> (24 - 8 * i));
        return 4;
      }
    case S3_ALG_CRC64NVME:
      {
        uint64_t v = ~h->crc;
        for (int i = 0; i < 8; i++)
          out[i] = (unsigned char) (v >> (56 - 8 * i));
        return 8;
      }
    case S3_ALG_SHA1:
    case S3_ALG_SHA256:
    case S3_ALG_MD5:
      {
        unsigned int n = 0;
        if (EVP_DigestFinal_ex (h->md, out, &n) != 1)
          abort ();
        return n;
      }
    case S3_ALG_NONE:
      break;
    }
  return 0;
}

void
s3_hash_release (struct s3_hash *h)
{
  EVP_MD_CTX_free (h->md);
  memset (h, 0, sizeof *h);
}

char *
s3_checksum_base64 (enum s3_algorithm alg, const void *data, size_t len)
{
  struct s3_hash h = {0};
  s3_hash_init (&h, alg);
  s3_hash_update (&h, data, len);
  unsigned char raw[S3_CHECKSUM_MAX];
  size_t n = s3_hash_final (&h, raw);
  s3_hash_release (&h);
  return kiln_base64_encode (raw, n);
}
