/* s3_upload.c - object data as it arrives (s3.h): the bodies of PutObject
 * and UploadPart are never held in memory.  server.c hands each piece it
 * receives to emu_upload_feed, which decodes it, digests it and appends it
 * to a temporary file under DATA_DIR/s3/tmp; a handler later checks the
 * outcome (s3_upload_verify) and renames the file into place
 * (s3_upload_publish).  A body cut short never reaches a handler, and
 * emu_upload_free removes its file.
 *
 * Bodies come in two encodings:
 *   plain        Content-Length bytes of object data
 *   aws-chunked  (Content-Encoding: aws-chunked, or an x-amz-content-sha256
 *                of the STREAMING-* family) chunks "HEX[;chunk-signature=
 *                SIG]\r\nDATA\r\n", ended by a zero-size chunk, then
 *                trailer lines "name:value\r\n" and an empty line; the
 *                object's length is x-amz-decoded-content-length.
 * Chunk signatures (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]) are
 * checked chunk by chunk against the chain auth.c seeds from the request's
 * own signature; as S3 requires, every chunk but the last carries at least
 * 8 KiB.  The trailer carries the flexible checksum the x-amz-trailer header
 * announced (and, when signed, x-amz-trailer-signature).
 *
 * Digests kept on the way: MD5 of the object (the ETag), the one flexible
 * checksum the request names (header, trailer, x-amz-sdk-checksum-algorithm
 * or, for a part, its upload's algorithm), and SHA-256 of the raw body when
 * x-amz-content-sha256 claims one. */
#include "s3.h"

#include <ctype.h>
#include <stddef.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "auth.h"
#include "cleanup.h"
#include "digest.h"
#include "fsutil.h"
#include "store.h"
#include "xalloc.h"

/* auth.c reads req->upload as the summary it begins with. */
_Static_assert (offsetof (struct emu_upload, streamed) == 0, "an upload begins with its emu_streamed_body");

/* Object data is written in pieces this big. */
#define WRITE_BEHIND (256 * 1024)
/* Signed chunks other than the last carry at least this much. */
#define MIN_SIGNED_CHUNK 8192
#define MAX_TRAILER_BYTES 4096

enum state {
  ST_PLAIN,        /* not aws-chunked: every byte is data */
  ST_LINE,         /* reading a chunk header line */
  ST_DATA,         /* chunk_left bytes of data to go */
  ST_DATA_CR,      /* the CRLF after a chunk's data */
  ST_DATA_LF,
  ST_TRAILER,      /* after the zero-size chunk: trailer lines, then an empty line */
  ST_DONE,
  ST_FAILED,       /* a problem was recorded; the rest is ignored */
};

static void
upload_fail (struct emu_upload *u, int status, const char *code, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));

static void
upload_fail (struct emu_upload *u, int status, const char *code, const char *fmt, ...)
{
  u->state = ST_FAILED;
  u->complete = false;
  if (u->error_code)
    return;
  u->error_status = status;
  u->error_code = kiln_xstrdup (code);
  va_list ap;
  va_start (ap, fmt);
  u->error_message = kiln_xvasprintf (fmt, ap);
  va_end (ap);
}

static EVP_MD_CTX *
digest_new (const EVP_MD *md)
{
  EVP_MD_CTX *ctx = EVP_MD_CTX_new ();
  if (ctx == NULL || EVP_DigestInit_ex (ctx, md, NULL) != 1)
    abort ();
  return ctx;
}

static void
digest_hex (EVP_MD_CTX *ctx, char out[65])
{
  unsigned char raw[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_DigestFinal_ex (ctx, raw, &n) != 1)
    abort ();
  kiln_hex_encode (raw, n, out);
}

/* Whether a comma-separated header value has token (case-insensitive). */
static bool
has_token (const char *value, const char *token)
{
  size_t tlen = strlen (token);
  for (const char *p = value; p && *p;)
    {
      while (*p == ' ' || *p == ',' || *p == '\t')
        p++;
      const char *end = p;
      while (*end && *end != ',')
        end++;
      const char *last = end;
      while (last > p && (last[-1] == ' ' || last[-1] == '\t'))
        last--;
      if ((size_t) (last - p) == tlen && strncasecmp (p, token, tlen) == 0)
        return true;
      p = end;
    }
  return false;
}

static bool
parse_u64 (const char *s, int base, uint64_t *out)
{
  if (s == NULL || *s == '\0' || *s == '-' || *s == '+' || isspace ((unsigned char) *s))
    return false;
  char *end;
  errno = 0;
  unsigned long long v = strtoull (s, &end, base);
  if (errno || *end != '\0')
    return false;
  *out = v;
  return true;
}

/* The algorithm of the multipart upload a part belongs to (NONE when the
 * upload names none or does not exist: UploadPart reports that). */
static enum s3_algorithm
part_upload_algorithm (struct kiln_emu *emu, const struct emu_request *head)
{
  const char *upload_id = NULL;
  for (size_t i = 0; i < head->n_query; i++)
    if (strcmp (head->query[i].name, "uploadId") == 0)
      upload_id = head->query[i].value;
  if (upload_id == NULL)
    return S3_ALG_NONE;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *row
      = emu_db_query_one (emu, &err, "SELECT checksum_algorithm FROM s3_uploads WHERE id = ?", upload_id);
  return row ? s3_algorithm_by_name (emu_row_str (row, "checksum_algorithm")) : S3_ALG_NONE;
}

/* Which flexible checksum to compute: the one the request's headers name,
 * all of them agreeing. */
static void
choose_algorithm (struct emu_upload *u, const struct emu_request *head)
{
  enum s3_algorithm named = S3_ALG_NONE;
  for (size_t i = 0; i < head->n_headers; i++)
    {
      enum s3_algorithm a = s3_algorithm_by_header (head->headers[i].name);
      if (a == S3_ALG_NONE)
        continue;
      if (named != S3_ALG_NONE && named != a)
        {
          upload_fail (u, 400, "InvalidRequest", "Expecting a single x-amz-checksum- header. Multiple checksum "
                       "Types are not allowed.");
          return;
        }
      named = a;
    }
  if (u->trailer_name)
    {
      enum s3_algorithm a = s3_algorithm_by_header (u->trailer_name);
      if (a == S3_ALG_NONE)
        {
          upload_fail (u, 400, "InvalidRequest", "The value specified in the x-amz-trailer header is not "
                       "supported: %s", u->trailer_name);
          return;
        }
      if (named != S3_ALG_NONE && named != a)
        {
          upload_fail (u, 400, "InvalidRequest", "Expecting a single x-amz-checksum- header. Multiple checksum "
                       "Types are not allowed.");
          return;
        }
      named = a;
    }
  const char *sdk = emu_request_header (head, "x-amz-sdk-checksum-algorithm");
  if (sdk)
    {
      enum s3_algorithm a = s3_algorithm_by_name (sdk);
      if (a == S3_ALG_NONE)
        {
          upload_fail (u, 400, "InvalidRequest", "Checksum algorithm provided is unsupported. Please try again "
                       "with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]");
          return;
        }
      if (named != S3_ALG_NONE && named != a)
        {
          upload_fail (u, 400, "InvalidRequest", "Value for x-amz-sdk-checksum-algorithm header is invalid.");
          return;
        }
      named = a;
    }
  if (named == S3_ALG_NONE)
    named = part_upload_algorithm (u->emu, head);
  u->algorithm = named;
}

struct emu_upload *
emu_upload_begin (struct kiln_emu *emu, const struct emu_request *head)
{
  if (!emu_s3_is_object_write (head))
    return NULL;
  struct emu_upload *u = kiln_xcalloc (1, sizeof *u);
  u->emu = emu;
  u->fd = -1;
  u->md5_ctx = digest_new (EVP_md5 ());

  const char *claim = emu_request_header (head, "X-Amz-Content-Sha256");
  const char *encoding = emu_request_header (head, "Content-Encoding");
  u->streamed.aws_chunked = (encoding && has_token (encoding, "aws-chunked"))
                   || (claim && strncmp (claim, "STREAMING-", 10) == 0);
  u->signed_chunks = claim && strncmp (claim, KILN_SIGV4_STREAMING_PAYLOAD, strlen (KILN_SIGV4_STREAMING_PAYLOAD)) == 0;
  u->signed_trailer = u->signed_chunks && strcmp (claim, KILN_SIGV4_STREAMING_PAYLOAD "-TRAILER") == 0;
  if (claim && strlen (claim) == 64 && strspn (claim, "0123456789abcdefABCDEF") == 64)
    u->raw_ctx = digest_new (EVP_sha256 ());
  u->state = u->streamed.aws_chunked ? ST_LINE : ST_PLAIN;
  const char *trailer = emu_request_header (head, "x-amz-trailer");
  if (trailer && *trailer)
    {
      u->trailer_name = kiln_xstrdup (trailer);
      for (char *p = u->trailer_name; *p; p++)
        *p = (char) tolower ((unsigned char) *p);
    }

  const char *length = emu_request_header (head, u->streamed.aws_chunked ? "x-amz-decoded-content-length" : "Content-Length");
  if (length)
    {
      if (!parse_u64 (length, 10, &u->declared_length))
        upload_fail (u, 400, "InvalidArgument", "%s '%s' is not a number of bytes.",
                     u->streamed.aws_chunked ? "x-amz-decoded-content-length" : "Content-Length", length);
      u->has_length = true;
    }
  if (u->has_length && u->declared_length > S3_MAX_PUT_SIZE)
    upload_fail (u, 400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size (%llu bytes).",
                 (unsigned long long) S3_MAX_PUT_SIZE);

  choose_algorithm (u, head);
  s3_hash_init (&u->hash, u->algorithm);
  if (u->signed_chunks)
    {
      u->stream_auth = emu_auth_stream_begin (emu, head);
      u->streamed.signatures_ok = u->stream_auth != NULL;
      u->chunk_ctx = digest_new (EVP_sha256 ());
    }
  if (u->state != ST_FAILED)
    {
      _cleanup_error_ kiln_error *err = NULL;
      u->fd = s3_data_temp (emu, &u->tmp_path, &err);
      if (u->fd < 0)
        upload_fail (u, 500, "InternalError", "kiln-emulator: %s", kiln_error_message (err));
      else
        u->pending = kiln_xcalloc (1, WRITE_BEHIND);
    }
  return u;
}

static void
flush_pending (struct emu_upload *u)
{
  if (u->pending_len == 0 || u->fd < 0)
    return;
  if (kiln_write_all (u->fd, u->pending, u->pending_len) < 0)
    upload_fail (u, 500, "InternalError", "kiln-emulator: write '%s': %s", u->tmp_path, strerror (errno));
  u->pending_len = 0;
}

/* n bytes of object data. */
static void
put_data (struct emu_upload *u, const unsigned char *data, size_t n)
{
  if (u->size + n > S3_MAX_PUT_SIZE)
    {
      upload_fail (u, 400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size (%llu bytes).",
                   (unsigned long long) S3_MAX_PUT_SIZE);
      return;
    }
  u->size += n;
  if (EVP_DigestUpdate (u->md5_ctx, data, n) != 1)
    abort ();
  s3_hash_update (&u->hash, data, n);
  if (u->chunk_ctx && EVP_DigestUpdate (u->chunk_ctx, data, n) != 1)
    abort ();
  while (n > 0 && u->state != ST_FAILED)
    {
      size_t room = WRITE_BEHIND - u->pending_len;
      size_t take = n < room ? n : room;
      memcpy (u->pending + u->pending_len, data, take);
      u->pending_len += take;
      data += take;
      n -= take;
      if (u->pending_len == WRITE_BEHIND)
        flush_pending (u);
    }
}

/* The signature of the chunk whose data just ended (chunk_ctx holds it). */
static void
check_chunk_signature (struct emu_upload *u)
{
  char hex[65];
  digest_hex (u->chunk_ctx, hex);
  if (EVP_DigestInit_ex (u->chunk_ctx, EVP_sha256 (), NULL) != 1)
    abort ();
  if (u->stream_auth == NULL || !emu_auth_stream_chunk (u->stream_auth, hex, u->chunk_signature))
    {
      u->streamed.signatures_ok = false;
      upload_fail (u, 403, "SignatureDoesNotMatch", "The chunk signature we calculated does not match the "
                   "signature you provided (chunk ending at byte %llu of the object).",
                   (unsigned long long) u->size);
    }
}

/* "HEX[;chunk-signature=SIG]" */
static void
chunk_header (struct emu_upload *u, char *line)
{
  char *ext = strchr (line, ';');
  if (ext)
    *ext++ = '\0';
  uint64_t size;
  if (strlen (line) > 16 || !parse_u64 (line, 16, &size))
    {
      upload_fail (u, 400, "IncompleteBody", "aws-chunked body: '%s' is not a chunk size.", line);
      return;
    }
  u->chunk_signature[0] = '\0';
  while (ext && *ext)
    {
      char *next = strchr (ext, ';');
      if (next)
        *next++ = '\0';
      if (strncmp (ext, "chunk-signature=", 16) == 0)
        snprintf (u->chunk_signature, sizeof u->chunk_signature, "%s", ext + 16);
      ext = next;
    }
  if (u->signed_chunks && u->chunk_signature[0] == '\0')
    {
      upload_fail (u, 403, "SignatureDoesNotMatch", "aws-chunked body: a chunk of a signed stream has no "
                   "chunk-signature.");
      return;
    }
  /* The chunk before this one was not the last, so it had to be full size. */
  if (u->signed_chunks && size > 0 && u->last_chunk_size > 0 && u->last_chunk_size < MIN_SIGNED_CHUNK)
    {
      upload_fail (u, 403, "InvalidChunkSizeError", "Only the last chunk is allowed to have a size less than "
                   "8192 bytes.");
      return;
    }
  u->chunk_left = size;
  u->last_chunk_size = size;
  if (size == 0)
    {
      if (u->signed_chunks)
        check_chunk_signature (u);
      if (u->state != ST_FAILED)
        u->state = ST_TRAILER;
      return;
    }
  u->state = ST_DATA;
}

static void
trailer_line (struct emu_upload *u, char *line)
{
  if (*line == '\0')
    {
      if (u->signed_trailer)
        {
          /* x-amz-trailer-signature went to chunk_signature (below). */
          char hex[65];
          kiln_sha256_hex (kiln_buf_str (&u->trailers), u->trailers.len, hex);
          if (u->stream_auth == NULL || !emu_auth_stream_trailer (u->stream_auth, hex, u->chunk_signature))
            {
              u->streamed.signatures_ok = false;
              upload_fail (u, 403, "SignatureDoesNotMatch", "The trailer signature we calculated does not match "
                           "the signature you provided.");
              return;
            }
        }
      u->state = ST_DONE;
      return;
    }
  char *colon = strchr (line, ':');
  if (colon == NULL)
    {
      upload_fail (u, 400, "MalformedTrailerError", "The request contained trailing data that was not well-formed "
                   "or did not conform to our published schema: '%.64s'.", line);
      return;
    }
  *colon = '\0';
  char *value = colon + 1;
  while (*value == ' ' || *value == '\t')
    value++;
  size_t vlen = strlen (value);
  while (vlen && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t'))
    value[--vlen] = '\0';
  for (char *p = line; *p; p++)
    *p = (char) tolower ((unsigned char) *p);
  if (u->signed_trailer && strcmp (line, "x-amz-trailer-signature") == 0)
    {
      snprintf (u->chunk_signature, sizeof u->chunk_signature, "%s", value);
      return;
    }
  if (u->trailer_name == NULL || strcmp (line, u->trailer_name) != 0 || u->trailer_value)
    {
      upload_fail (u, 400, "MalformedTrailerError", "The request contained trailing data that was not "
                   "announced by x-amz-trailer: '%s'.", line);
      return;
    }
  u->trailer_value = kiln_xstrdup (value);
  if (u->trailers.len + strlen (line) + vlen > MAX_TRAILER_BYTES)
    {
      upload_fail (u, 400, "MalformedTrailerError", "The request's trailer is too long.");
      return;
    }
  kiln_buf_printf (&u->trailers, "%s:%s\n", line, value);
}

/* Collects a CRLF-ended line into u->line; returns how many bytes it used
 * and sets *done when the line is complete (its CRLF stripped). */
static size_t
take_line (struct emu_upload *u, const unsigned char *p, size_t n, bool *done)
{
  *done = false;
  size_t i = 0;
  while (i < n)
    {
      unsigned char ch = p[i++];
      if (ch == '\n')
        {
          if (u->line_len == 0 || u->line[u->line_len - 1] != '\r')
            {
              upload_fail (u, 400, "IncompleteBody", "aws-chunked body: a line does not end with CRLF.");
              return i;
            }
          u->line[u->line_len - 1] = '\0';
          u->line_len = 0;
          *done = true;
          return i;
        }
      if (u->line_len + 1 >= sizeof u->line)
        {
          upload_fail (u, 400, "IncompleteBody", "aws-chunked body: a chunk header or trailer line is longer than "
                       "%zu bytes.", sizeof u->line - 2);
          return i;
        }
      u->line[u->line_len++] = (char) ch;
    }
  return i;
}

static void
decode (struct emu_upload *u, const unsigned char *p, size_t n)
{
  while (n > 0 && u->state != ST_FAILED)
    {
      size_t used = 0;
      bool done;
      switch (u->state)
        {
        case ST_LINE:
          used = take_line (u, p, n, &done);
          if (done && u->state != ST_FAILED)
            chunk_header (u, u->line);
          break;
        case ST_DATA:
          used = n < u->chunk_left ? n : (size_t) u->chunk_left;
          put_data (u, p, used);
          u->chunk_left -= used;
          if (u->chunk_left == 0 && u->state != ST_FAILED)
            {
              if (u->signed_chunks)
                check_chunk_signature (u);
              if (u->state != ST_FAILED)
                u->state = ST_DATA_CR;
            }
          break;
        case ST_DATA_CR:
        case ST_DATA_LF:
          used = 1;
          if (*p != (u->state == ST_DATA_CR ? '\r' : '\n'))
            upload_fail (u, 400, "IncompleteBody", "aws-chunked body: a chunk's data is not followed by CRLF.");
          else
            u->state = u->state == ST_DATA_CR ? ST_DATA_LF : ST_LINE;
          break;
        case ST_TRAILER:
          used = take_line (u, p, n, &done);
          if (done && u->state != ST_FAILED)
            trailer_line (u, u->line);
          break;
        case ST_DONE:
          upload_fail (u, 400, "IncompleteBody", "aws-chunked body: data after the end of the body.");
          break;
        default:
          return;
        }
      p += used;
      n -= used;
    }
}

void
emu_upload_feed (struct emu_upload *u, const void *data, size_t len)
{
  u->raw_len += len;
  if (u->raw_ctx && EVP_DigestUpdate (u->raw_ctx, data, len) != 1)
    abort ();
  if (u->state == ST_FAILED)
    return;
  if (u->state == ST_PLAIN)
    put_data (u, data, len);
  else
    decode (u, data, len);
}

void
emu_upload_finish (struct emu_upload *u)
{
  if (u->raw_ctx)
    digest_hex (u->raw_ctx, u->streamed.raw_sha256);
  if (u->state != ST_FAILED)
    flush_pending (u);
  if (u->state != ST_FAILED && u->state != ST_PLAIN && u->state != ST_DONE)
    {
      /* The stream may end right after the zero-size chunk's line. */
      if (!(u->state == ST_TRAILER && u->line_len == 0 && u->trailers.len == 0 && !u->signed_trailer))
        upload_fail (u, 400, "IncompleteBody", "The aws-chunked body ended before its final chunk and trailer.");
    }
  if (u->state != ST_FAILED && u->has_length && u->size != u->declared_length)
    upload_fail (u, 400, "IncompleteBody", "You did not provide the number of bytes specified by the %s HTTP "
                 "header (%llu announced, %llu received).",
                 u->streamed.aws_chunked ? "x-amz-decoded-content-length" : "Content-Length",
                 (unsigned long long) u->declared_length, (unsigned long long) u->size);
  if (u->state != ST_FAILED && u->trailer_name && u->trailer_value == NULL)
    upload_fail (u, 400, "MalformedTrailerError", "x-amz-trailer announced %s but the body's trailer did not "
                 "carry it.", u->trailer_name);
  unsigned int n = 0;
  if (EVP_DigestFinal_ex (u->md5_ctx, u->md5, &n) != 1)
    abort ();
  u->checksum_len = s3_hash_final (&u->hash, u->checksum);
  u->complete = u->state != ST_FAILED;
}

void
emu_upload_free (struct emu_upload *u)
{
  if (u == NULL)
    return;
  if (u->fd >= 0)
    close (u->fd);
  if (u->tmp_path)
    unlink (u->tmp_path);
  free (u->tmp_path);
  free (u->trailer_name);
  free (u->trailer_value);
  free (u->error_code);
  free (u->error_message);
  free (u->pending);
  kiln_buf_release (&u->trailers);
  EVP_MD_CTX_free (u->md5_ctx);
  EVP_MD_CTX_free (u->raw_ctx);
  EVP_MD_CTX_free (u->chunk_ctx);
  s3_hash_release (&u->hash);
  emu_auth_stream_free (u->stream_auth);
  free (u);
}

struct emu_upload *
emu_upload_from_memory (struct kiln_emu *emu, const struct emu_request *req)
{
  struct emu_upload *u = emu_upload_begin (emu, req);
  if (u == NULL)
    return NULL;
  /* The body's length is known here whatever the headers say. */
  if (!u->streamed.aws_chunked && !u->has_length)
    {
      u->has_length = true;
      u->declared_length = req->body_len;
    }
  if (req->body_len)
    emu_upload_feed (u, req->body, req->body_len);
  emu_upload_finish (u);
  return u;
}

/* ---- for handlers ---- */

/* The base64 value of a checksum header or trailer, decoded; -1 when it is
 * not base64 of the algorithm's length. */
static int
decode_checksum (const char *value, size_t want, unsigned char out[S3_CHECKSUM_MAX])
{
  unsigned char *raw = NULL;
  size_t n = 0;
  if (kiln_base64_decode (value, strlen (value), &raw, &n) < 0 || n != want)
    {
      free (raw);
      return -1;
    }
  memcpy (out, raw, n);
  free (raw);
  return 0;
}

int
s3_upload_verify (struct s3_call *s, enum s3_algorithm expected)
{
  struct emu_upload *u = s->upload;
  if (u == NULL)
    return s3_fail (s, 500, "InternalError", "kiln-emulator: %s arrived without its body", s->c->operation);
  if (u->error_code)
    return s3_fail (s, u->error_status, u->error_code, "%s", u->error_message);
  if (!u->has_length)
    return s3_fail (s, 411, "MissingContentLength", "You must provide the Content-Length HTTP header.");
  if (!u->complete)
    return s3_fail (s, 400, "IncompleteBody", "The request body terminated unexpectedly.");

  const char *md5 = s3_header (s, "Content-MD5");
  if (md5)
    {
      unsigned char want[S3_CHECKSUM_MAX];
      if (decode_checksum (md5, 16, want) < 0)
        return s3_fail (s, 400, "InvalidDigest", "The Content-MD5 you specified was invalid.");
      if (memcmp (want, u->md5, 16) != 0)
        {
          _cleanup_free_ char *got = kiln_base64_encode (u->md5, 16);
          s3_error_extra (s, "ExpectedDigest", md5);
          s3_error_extra (s, "CalculatedDigest", got);
          return s3_fail (s, 400, "BadDigest", "The Content-MD5 you specified did not match what we received.");
        }
    }

  const struct s3_algorithm_info *info = s3_algorithm_info (u->algorithm);
  if (info)
    {
      const char *claimed = u->trailer_value ? u->trailer_value : s3_header (s, info->header);
      if (claimed)
        {
          unsigned char want[S3_CHECKSUM_MAX];
          if (decode_checksum (claimed, info->len, want) < 0)
            return s3_fail (s, 400, "InvalidRequest", "Value for %s %s is invalid.", info->header,
                            u->trailer_value ? "trailing header" : "header");
          if (memcmp (want, u->checksum, info->len) != 0)
            return s3_fail (s, 400, "BadDigest", "The %s you specified did not match the calculated checksum.",
                            info->name);
        }
    }
  if (expected != S3_ALG_NONE && u->algorithm != expected)
    {
      const struct s3_algorithm_info *want = s3_algorithm_info (expected);
      return s3_fail (s, 400, "InvalidRequest", "Checksum Type mismatch occurred, expected checksum Type: %s, "
                      "actual checksum Type: %s", want ? want->name : "none", info ? info->name : "none");
    }
  return 0;
}

int
s3_upload_publish (struct s3_call *s, char id[33])
{
  struct emu_upload *u = s->upload;
  _cleanup_error_ kiln_error *err = NULL;
  int r = s3_data_publish (u->emu, u->tmp_path, u->fd, id, &err);
  close (u->fd);
  u->fd = -1;
  free (u->tmp_path);
  u->tmp_path = NULL;
  return r < 0 ? s3_fail_internal (s, err) : 0;
}
