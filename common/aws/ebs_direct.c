/* ebs_direct.c - disks into and out of EBS snapshots (see ebs_direct.h).
 *
 * Both directions share one shape: a queue of block indices behind a mutex,
 * a pool of worker threads taking from it, each with its own EBS client,
 * the first error stopping everyone.  Upload's queue is the blocks the
 * source's data extents touch (from `qemu-img map`, so a qcow2 is read in
 * place and a hole is never read) plus, over a parent, the parent's
 * blocks; download's queue is the list ListSnapshotBlocks returned. */
#include "ebs_direct.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cleanup.h"
#include "digest.h"
#include "disk_image.h"
#include "xalloc.h"

#define GIB (1024ULL * 1024 * 1024)
#define DEFAULT_WORKERS 8
#define LIST_PAGE 10000

struct block_ref {
  uint64_t index;
  char *token;                 /* download: GetSnapshotBlock's token */
};

struct transfer {
  const struct kiln_ebs_options *o;
  const char *snapshot_id;
  int fd;
  uint64_t size;               /* upload: bytes in the source */
  uint64_t n_blocks;           /* in the volume */
  pthread_mutex_t lock;
  /* upload: the source's extents (guest order), the blocks worth a look
   * (holding data, or held by the parent), the parent's block tokens (NULL
   * where it has none, or no parent), and the next block to look at */
  const struct kiln_disk_extent *ext;
  size_t n_ext;
  unsigned char *candidate;
  char **parent_tokens;
  const char *parent_id;
  uint64_t next_block;
  /* download: the blocks to fetch */
  struct block_ref *refs;
  size_t n_refs, next_ref;
  /* upload: each sent block's SHA-256, and whether it was sent */
  unsigned char *digests;
  unsigned char *sent;
  struct kiln_ebs_stats stats;
  time_t last_progress;
  kiln_error *error;           /* the first failure */
  bool stop;
};

static bool
cancelled (struct transfer *t)
{
  return t->o->cancel && *t->o->cancel;
}

/* Records the first failure and stops the other workers. */
static void
fail_transfer (struct transfer *t, kiln_error **e)
{
  pthread_mutex_lock (&t->lock);
  if (t->error == NULL)
    kiln_error_move (&t->error, e);
  t->stop = true;
  pthread_mutex_unlock (&t->lock);
  kiln_error_freep (e);
}

enum block_fate { BLOCK_SENT, BLOCK_ZERO, BLOCK_UNCHANGED };

static void
account (struct transfer *t, uint64_t read, uint64_t sent, enum block_fate fate)
{
  pthread_mutex_lock (&t->lock);
  t->stats.bytes_read += read;
  t->stats.bytes_sent += sent;
  if (fate == BLOCK_ZERO)
    t->stats.zero_blocks++;
  else if (fate == BLOCK_UNCHANGED)
    t->stats.unchanged_blocks++;
  else
    t->stats.blocks++;
  time_t now = time (NULL);
  if (t->o->progress && now != t->last_progress)
    {
      t->last_progress = now;
      t->o->progress (&t->stats, t->o->progress_opaque);
    }
  pthread_mutex_unlock (&t->lock);
}

static int
make_client (const struct kiln_ebs_options *o, struct kiln_aws_client **c, kiln_error **err)
{
  return kiln_aws_client_new (o->config, "ebs", o->client, c, err);
}

/* Runs fn on o->workers threads and returns the first failure. */
static int
run_workers (struct transfer *t, void *(*fn) (void *), kiln_error **err)
{
  int n = t->o->workers > 0 ? t->o->workers : DEFAULT_WORKERS;
  pthread_t *threads = kiln_xcalloc ((size_t) n, sizeof *threads);
  int started = 0;
  for (; started < n; started++)
    if (pthread_create (&threads[started], NULL, fn, t) != 0)
      break;
  if (started == 0)
    {
      free (threads);
      return kiln_fail_errno (err, EAGAIN, "start transfer threads");
    }
  for (int i = 0; i < started; i++)
    pthread_join (threads[i], NULL);
  free (threads);
  if (t->error)
    {
      kiln_error_move (err, &t->error);
      return -1;
    }
  if (cancelled (t))
    return kiln_error_set (err, KILN_ERR_CANCELLED, 0, "interrupted");
  if (t->o->progress)
    t->o->progress (&t->stats, t->o->progress_opaque);
  return 0;
}

/* ---- upload ---- */

/* The next block worth a look, or false at the end. */
static bool
next_candidate (struct transfer *t, uint64_t *index)
{
  pthread_mutex_lock (&t->lock);
  bool found = false;
  while (!t->stop && !found && t->next_block < t->n_blocks)
    {
      uint64_t i = t->next_block++;
      if (t->candidate[i])
        {
          *index = i;
          found = true;
        }
    }
  pthread_mutex_unlock (&t->lock);
  return found;
}

/* Marks the blocks that hold data in the source. */
static void
mark_data_blocks (struct transfer *t)
{
  for (size_t i = 0; i < t->n_ext; i++)
    if (t->ext[i].data)
      {
        uint64_t first = t->ext[i].start / KILN_EBS_BLOCK_SIZE;
        uint64_t last = (t->ext[i].start + t->ext[i].length - 1) / KILN_EBS_BLOCK_SIZE;
        for (uint64_t b = first; b <= last && b < t->n_blocks; b++)
          t->candidate[b] = 1;
      }
}

/* Reads the source's block index into block (KILN_EBS_BLOCK_SIZE bytes):
 * the data extents it overlaps from where they sit in the file, zeros
 * elsewhere.  Returns the bytes read from the file. */
static int
read_source_block (struct transfer *t, uint64_t index, unsigned char *block, uint64_t *bytes_read,
                   kiln_error **err)
{
  uint64_t off = index * KILN_EBS_BLOCK_SIZE, end = off + KILN_EBS_BLOCK_SIZE;
  memset (block, 0, KILN_EBS_BLOCK_SIZE);
  *bytes_read = 0;
  /* The first extent ending past off. */
  size_t lo = 0, hi = t->n_ext;
  while (lo < hi)
    {
      size_t mid = lo + (hi - lo) / 2;
      if (t->ext[mid].start + t->ext[mid].length <= off)
        lo = mid + 1;
      else
        hi = mid;
    }
  for (size_t i = lo; i < t->n_ext && t->ext[i].start < end; i++)
    {
      const struct kiln_disk_extent *e = &t->ext[i];
      if (!e->data)
        continue;
      uint64_t from = e->start > off ? e->start : off;
      uint64_t to = e->start + e->length < end ? e->start + e->length : end;
      size_t len = (size_t) (to - from);
      ssize_t got = pread (t->fd, block + (from - off), len, (off_t) ((uint64_t) e->offset + (from - e->start)));
      if (got != (ssize_t) len)
        return kiln_fail_errno (err, got < 0 ? errno : EIO, "read block %" PRIu64 " of the disk", index);
      *bytes_read += len;
    }
  return 0;
}

static bool
all_zero (const unsigned char *p, size_t n)
{
  static const unsigned char zeros[4096];
  for (size_t off = 0; off < n; off += sizeof zeros)
    {
      size_t k = n - off < sizeof zeros ? n - off : sizeof zeros;
      if (memcmp (p + off, zeros, k) != 0)
        return false;
    }
  return true;
}

static int
put_block (struct kiln_aws_client *c, struct transfer *t, uint64_t index, const unsigned char *data,
           const unsigned char digest[KILN_SHA256_LEN], kiln_error **err)
{
  _cleanup_free_ char *checksum = kiln_base64_encode (digest, KILN_SHA256_LEN);
  _cleanup_free_ char *path = NULL;
  char length[24], progress[8];
  path = kiln_xasprintf ("/snapshots/%s/blocks/%" PRIu64, t->snapshot_id, index);
  snprintf (length, sizeof length, "%d", KILN_EBS_BLOCK_SIZE);
  snprintf (progress, sizeof progress, "%d",
            (int) (t->n_blocks ? (index * 100) / t->n_blocks : 100));
  const struct kiln_sigv4_pair headers[] = {
    {"x-amz-Data-Length", length},
    {"x-amz-Checksum", checksum},
    {"x-amz-Checksum-Algorithm", "SHA256"},
    {"x-amz-Progress", progress},
  };
  struct kiln_aws_rest_request req = {
    .operation = "PutSnapshotBlock",
    .method = "PUT",
    .path = path,
    .headers = headers,
    .n_headers = 4,
    .content_type = "application/octet-stream",
    .body = data,
    .body_len = KILN_EBS_BLOCK_SIZE,
    .unsigned_payload = true,
  };
  struct kiln_http_response resp;
  int r = kiln_aws_rest_call (c, &req, &resp, NULL, err);
  kiln_http_response_release (&resp);
  return r < 0 ? kiln_error_prefix (err, "block %" PRIu64, index) : 0;
}

static int fetch_block (struct kiln_aws_client *c, const char *snapshot_id, uint64_t index, const char *token,
                        struct kiln_http_response *resp, char **checksum, kiln_error **err);

/* Whether the parent's block index holds exactly digest. */
static int
same_as_parent (struct kiln_aws_client *c, struct transfer *t, uint64_t index, const unsigned char *digest,
                bool *same, kiln_error **err)
{
  struct kiln_http_response resp;
  _cleanup_free_ char *theirs = NULL;
  int r = fetch_block (c, t->parent_id, index, t->parent_tokens[index], &resp, &theirs, err);
  kiln_http_response_release (&resp);
  if (r < 0)
    return kiln_error_prefix (err, "compare with the parent %s", t->parent_id);
  _cleanup_free_ char *ours = kiln_base64_encode (digest, KILN_SHA256_LEN);
  *same = strcmp (ours, theirs) == 0;
  return 0;
}

static void *
upload_worker (void *arg)
{
  struct transfer *t = arg;
  kiln_error *e = NULL;
  struct kiln_aws_client *c = NULL;
  unsigned char *block = kiln_xcalloc (1, KILN_EBS_BLOCK_SIZE);
  if (make_client (t->o, &c, &e) < 0)
    {
      fail_transfer (t, &e);
      free (block);
      return NULL;
    }
  uint64_t index;
  while (!cancelled (t) && next_candidate (t, &index))
    {
      uint64_t read = 0;
      if (read_source_block (t, index, block, &read, &e) < 0)
        {
          fail_transfer (t, &e);
          break;
        }
      bool in_parent = t->parent_tokens && t->parent_tokens[index];
      /* A new snapshot reads as zeros where nothing was written; over a
       * parent, zeros must be written where the parent has data. */
      if (!in_parent && all_zero (block, KILN_EBS_BLOCK_SIZE))
        {
          account (t, read, 0, BLOCK_ZERO);
          continue;
        }
      unsigned char digest[KILN_SHA256_LEN];
      kiln_sha256 (block, KILN_EBS_BLOCK_SIZE, digest);
      bool same = false;
      if (in_parent && same_as_parent (c, t, index, digest, &same, &e) < 0)
        {
          fail_transfer (t, &e);
          break;
        }
      if (same)
        {
          account (t, read, 0, BLOCK_UNCHANGED);
          continue;
        }
      if (put_block (c, t, index, block, digest, &e) < 0)
        {
          fail_transfer (t, &e);
          break;
        }
      pthread_mutex_lock (&t->lock);
      memcpy (t->digests + index * KILN_SHA256_LEN, digest, KILN_SHA256_LEN);
      t->sent[index] = 1;
      pthread_mutex_unlock (&t->lock);
      account (t, read, KILN_EBS_BLOCK_SIZE, BLOCK_SENT);
    }
  kiln_aws_client_free (c);
  free (block);
  return NULL;
}

static int
start_snapshot (struct kiln_aws_client *c, uint64_t gib, const char *parent, const char *description,
                const char *const *tags, char **snapshot_id, kiln_error **err)
{
  char token[33];
  kiln_random_hex (token, 16);
  _cleanup_json_ json_t *in = json_pack ("{s:I, s:s, s:i}", "VolumeSize", (json_int_t) gib, "ClientToken", token,
                                         "Timeout", 60);
  if (parent)
    json_object_set_new (in, "ParentSnapshotId", json_string (parent));
  if (description)
    json_object_set_new (in, "Description", json_string (description));
  if (tags && tags[0])
    {
      json_t *a = json_array ();
      for (size_t i = 0; tags[i] && tags[i + 1]; i += 2)
        json_array_append_new (a, json_pack ("{s:s, s:s}", "Key", tags[i], "Value", tags[i + 1]));
      json_object_set_new (in, "Tags", a);
    }
  _cleanup_free_ char *body = json_dumps (in, JSON_COMPACT);
  struct kiln_aws_rest_request req = {
    .operation = "StartSnapshot",
    .method = "POST",
    .path = "/snapshots",
    .content_type = "application/json",
    .body = body,
    .body_len = strlen (body),
  };
  struct kiln_http_response resp;
  int r = kiln_aws_rest_call (c, &req, &resp, NULL, err);
  if (r == 0)
    {
      _cleanup_json_ json_t *out = json_loadb (resp.body.data, resp.body.len, 0, NULL);
      const char *id = json_string_value (json_object_get (out, "SnapshotId"));
      json_int_t bs = json_integer_value (json_object_get (out, "BlockSize"));
      if (id == NULL)
        r = kiln_fail (err, "ebs StartSnapshot answered without a SnapshotId");
      else if (bs != KILN_EBS_BLOCK_SIZE)
        {
          *snapshot_id = kiln_xstrdup (id);
          r = kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0, "snapshot %s has blocks of %lld bytes; kiln sends %d",
                              id, (long long) bs, KILN_EBS_BLOCK_SIZE);
        }
      else
        *snapshot_id = kiln_xstrdup (id);
    }
  kiln_http_response_release (&resp);
  return r;
}

static int
complete_snapshot (struct kiln_aws_client *c, struct transfer *t, kiln_error **err)
{
  /* The linear aggregate: SHA-256 over the sent blocks' digests in order. */
  struct kiln_buf all = KILN_BUF_INIT;
  uint64_t count = 0;
  for (uint64_t i = 0; i < t->n_blocks; i++)
    if (t->sent[i])
      {
        kiln_buf_append (&all, t->digests + i * KILN_SHA256_LEN, KILN_SHA256_LEN);
        count++;
      }
  unsigned char aggregate[KILN_SHA256_LEN];
  kiln_sha256 (all.data ? all.data : "", all.len, aggregate);
  kiln_buf_release (&all);
  _cleanup_free_ char *checksum = kiln_base64_encode (aggregate, KILN_SHA256_LEN);
  char changed[24];
  snprintf (changed, sizeof changed, "%" PRIu64, count);
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("/snapshots/completion/%s", t->snapshot_id);
  const struct kiln_sigv4_pair headers[] = {
    {"x-amz-ChangedBlocksCount", changed},
    {"x-amz-Checksum", checksum},
    {"x-amz-Checksum-Algorithm", "SHA256"},
    {"x-amz-Checksum-Aggregation-Method", "LINEAR"},
  };
  struct kiln_aws_rest_request req = {
    .operation = "CompleteSnapshot", .method = "POST", .path = path, .headers = headers, .n_headers = 4,
  };
  struct kiln_http_response resp;
  int r = kiln_aws_rest_call (c, &req, &resp, NULL, err);
  kiln_http_response_release (&resp);
  return r;
}

/* Every block of the snapshot with its token, and the volume's size. */
static int
list_blocks (struct kiln_aws_client *c, const char *snapshot_id, struct block_ref **refs, size_t *n_refs,
             uint64_t *volume_gib, kiln_error **err)
{
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("/snapshots/%s/blocks", snapshot_id);
  _cleanup_free_ char *page = NULL;
  size_t cap = 0;
  for (;;)
    {
      char max[16];
      snprintf (max, sizeof max, "%d", LIST_PAGE);
      struct kiln_sigv4_pair query[2] = {{"maxResults", max}, {"pageToken", page}};
      struct kiln_aws_rest_request req = {
        .operation = "ListSnapshotBlocks", .method = "GET", .path = path, .query = query, .n_query = page ? 2 : 1,
      };
      struct kiln_http_response resp;
      int r = kiln_aws_rest_call (c, &req, &resp, NULL, err);
      _cleanup_json_ json_t *out = r == 0 ? json_loadb (resp.body.data, resp.body.len, 0, NULL) : NULL;
      kiln_http_response_release (&resp);
      if (r < 0)
        return -1;
      if (!json_is_object (out))
        return kiln_fail (err, "ebs ListSnapshotBlocks: the reply is not JSON");
      json_int_t bs = json_integer_value (json_object_get (out, "BlockSize"));
      if (bs != KILN_EBS_BLOCK_SIZE)
        return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0, "snapshot %s has blocks of %lld bytes; kiln reads %d",
                               snapshot_id, (long long) bs, KILN_EBS_BLOCK_SIZE);
      *volume_gib = (uint64_t) json_integer_value (json_object_get (out, "VolumeSize"));
      size_t i;
      json_t *b;
      json_array_foreach (json_object_get (out, "Blocks"), i, b)
        {
          const char *token = json_string_value (json_object_get (b, "BlockToken"));
          json_int_t index = json_integer_value (json_object_get (b, "BlockIndex"));
          if (token == NULL || index < 0)
            return kiln_fail (err, "ebs ListSnapshotBlocks: a block without index or token");
          if (*n_refs == cap)
            {
              cap = cap ? cap * 2 : 256;
              struct block_ref *grown = kiln_xcalloc (cap, sizeof *grown);
              if (*n_refs)
                memcpy (grown, *refs, *n_refs * sizeof *grown);
              free (*refs);
              *refs = grown;
            }
          (*refs)[(*n_refs)++] = (struct block_ref){(uint64_t) index, kiln_xstrdup (token)};
        }
      const char *next = json_string_value (json_object_get (out, "NextToken"));
      free (page);
      page = next && *next ? kiln_xstrdup (next) : NULL;
      if (page == NULL)
        return 0;
    }
}

static void
refs_free (struct block_ref *refs, size_t n)
{
  for (size_t i = 0; i < n; i++)
    free (refs[i].token);
  free (refs);
}

/* The parent's blocks, as tokens by index, marked as candidates: each is
 * compared with the source's block (and overwritten when they differ). */
static int
load_parent (struct kiln_aws_client *c, struct transfer *t, uint64_t *parent_gib, kiln_error **err)
{
  struct block_ref *refs = NULL;
  size_t n = 0;
  int r = list_blocks (c, t->parent_id, &refs, &n, parent_gib, err);
  if (r == 0 && *parent_gib * GIB / KILN_EBS_BLOCK_SIZE > t->n_blocks)
    r = kiln_fail_invalid (err, "the parent snapshot %s holds a %" PRIu64 " GiB volume, larger than the disk's %" PRIu64
                           " GiB", t->parent_id, *parent_gib, (uint64_t) (t->n_blocks * KILN_EBS_BLOCK_SIZE / GIB));
  for (size_t i = 0; r == 0 && i < n; i++)
    {
      if (refs[i].index >= t->n_blocks)
        {
          r = kiln_fail (err, "the parent snapshot %s lists block %" PRIu64 ", past its volume", t->parent_id,
                         refs[i].index);
          break;
        }
      t->candidate[refs[i].index] = 1;
      free (t->parent_tokens[refs[i].index]);
      t->parent_tokens[refs[i].index] = kiln_steal_pointer (&refs[i].token);
    }
  refs_free (refs, n);
  return r < 0 ? kiln_error_prefix (err, "read the parent snapshot %s", t->parent_id) : 0;
}

int
kiln_ebs_upload (const struct kiln_ebs_options *o, const char *path, const char *format, const char *description,
                 const char *const *tags, char **snapshot_id, struct kiln_ebs_stats *stats, kiln_error **err)
{
  *snapshot_id = NULL;
  memset (stats, 0, sizeof *stats);
  struct kiln_disk_extent *ext = NULL;
  size_t n_ext = 0;
  if (kiln_disk_map (path, format, &ext, &n_ext, err) < 0)
    return kiln_error_prefix (err, "upload '%s'", path);
  _cleanup_free_ struct kiln_disk_extent *ext_owned = ext;
  uint64_t size = n_ext ? ext[n_ext - 1].start + ext[n_ext - 1].length : 0;
  if (size == 0)
    return kiln_fail_invalid (err, "'%s' is empty: no disk to upload", path);
  for (size_t i = 0; i < n_ext; i++)
    if (ext[i].data && ext[i].offset < 0)
      return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0,
                             "'%s' holds compressed clusters (at %" PRIu64 "), which cannot be read in place", path,
                             ext[i].start);
  _cleanup_close_ int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return kiln_fail_errno (err, errno, "open '%s'", path);
  uint64_t gib = (size + GIB - 1) / GIB;

  struct kiln_aws_client *c = NULL;
  if (make_client (o, &c, err) < 0)
    return -1;
  struct transfer t = {
    .o = o,
    .fd = fd,
    .size = size,
    .n_blocks = gib * GIB / KILN_EBS_BLOCK_SIZE,
    .ext = ext,
    .n_ext = n_ext,
    .parent_id = o->parent_snapshot_id,
  };
  t.candidate = kiln_xcalloc (t.n_blocks, 1);
  mark_data_blocks (&t);
  pthread_mutex_init (&t.lock, NULL);
  int r = 0;
  if (t.parent_id)
    {
      uint64_t parent_gib = 0;
      t.parent_tokens = kiln_xcalloc (t.n_blocks, sizeof *t.parent_tokens);
      r = load_parent (c, &t, &parent_gib, err);
    }
  if (r == 0)
    r = start_snapshot (c, gib, t.parent_id, description, tags, snapshot_id, err);
  t.snapshot_id = *snapshot_id;
  t.stats.volume_bytes = gib * GIB;
  if (r == 0)
    {
      t.digests = kiln_xcalloc (t.n_blocks, KILN_SHA256_LEN);
      t.sent = kiln_xcalloc (t.n_blocks, 1);
      r = run_workers (&t, upload_worker, err);
      if (r == 0)
        r = complete_snapshot (c, &t, err);
    }
  *stats = t.stats;
  free (t.digests);
  free (t.sent);
  free (t.candidate);
  if (t.parent_tokens)
    for (uint64_t i = 0; i < t.n_blocks; i++)
      free (t.parent_tokens[i]);
  free (t.parent_tokens);
  kiln_error_free (t.error);
  pthread_mutex_destroy (&t.lock);
  kiln_aws_client_free (c);
  return r < 0 ? kiln_error_prefix (err, "upload '%s'%s%s", path, *snapshot_id ? " to " : "",
                                    *snapshot_id ? *snapshot_id : "")
               : 0;
}

/* ---- download ---- */

static bool
next_ref (struct transfer *t, struct block_ref **ref)
{
  pthread_mutex_lock (&t->lock);
  bool found = !t->stop && t->next_ref < t->n_refs;
  if (found)
    *ref = &t->refs[t->next_ref++];
  pthread_mutex_unlock (&t->lock);
  return found;
}

/* GetSnapshotBlock, the data checked against the checksum EBS sends (which
 * goes to *checksum, base64, malloc'd). */
static int
fetch_block (struct kiln_aws_client *c, const char *snapshot_id, uint64_t index, const char *token,
             struct kiln_http_response *resp, char **checksum, kiln_error **err)
{
  *checksum = NULL;
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("/snapshots/%s/blocks/%" PRIu64, snapshot_id, index);
  const struct kiln_sigv4_pair query[] = {{"blockToken", token}};
  struct kiln_aws_rest_request req = {
    .operation = "GetSnapshotBlock", .method = "GET", .path = path, .query = query, .n_query = 1,
  };
  int r = kiln_aws_rest_call (c, &req, resp, NULL, err);
  if (r < 0)
    return -1;
  const char *want = kiln_http_response_header (resp, "x-amz-checksum");
  unsigned char digest[KILN_SHA256_LEN];
  kiln_sha256 (resp->body.data ? resp->body.data : "", resp->body.len, digest);
  _cleanup_free_ char *got = kiln_base64_encode (digest, KILN_SHA256_LEN);
  if (resp->body.len != KILN_EBS_BLOCK_SIZE)
    return kiln_fail (err, "block %" PRIu64 " of %s: %zu bytes, not %d", index, snapshot_id, resp->body.len,
                      KILN_EBS_BLOCK_SIZE);
  if (want == NULL || strcmp (want, got) != 0)
    return kiln_fail (err, "block %" PRIu64 " of %s: the data does not match its checksum (%s, computed %s)", index,
                      snapshot_id, want ? want : "none sent", got);
  *checksum = kiln_steal_pointer (&got);
  return 0;
}

static void *
download_worker (void *arg)
{
  struct transfer *t = arg;
  kiln_error *e = NULL;
  struct kiln_aws_client *c = NULL;
  if (make_client (t->o, &c, &e) < 0)
    {
      fail_transfer (t, &e);
      return NULL;
    }
  struct block_ref *ref;
  while (!cancelled (t) && next_ref (t, &ref))
    {
      struct kiln_http_response resp;
      _cleanup_free_ char *checksum = NULL;
      int r = fetch_block (c, t->snapshot_id, ref->index, ref->token, &resp, &checksum, &e);
      if (r == 0
          && pwrite (t->fd, resp.body.data, resp.body.len, (off_t) (ref->index * KILN_EBS_BLOCK_SIZE))
                 != (ssize_t) resp.body.len)
        r = kiln_fail_errno (&e, errno ? errno : EIO, "write block %" PRIu64, ref->index);
      kiln_http_response_release (&resp);
      if (r < 0)
        {
          fail_transfer (t, &e);
          break;
        }
      account (t, KILN_EBS_BLOCK_SIZE, KILN_EBS_BLOCK_SIZE, BLOCK_SENT);
    }
  kiln_aws_client_free (c);
  return NULL;
}

int
kiln_ebs_download (const struct kiln_ebs_options *o, const char *snapshot_id, const char *raw_path,
                   struct kiln_ebs_stats *stats, kiln_error **err)
{
  memset (stats, 0, sizeof *stats);
  struct kiln_aws_client *c = NULL;
  if (make_client (o, &c, err) < 0)
    return -1;
  struct transfer t = {.o = o, .snapshot_id = snapshot_id, .fd = -1};
  pthread_mutex_init (&t.lock, NULL);
  uint64_t gib = 0;
  int r = list_blocks (c, snapshot_id, &t.refs, &t.n_refs, &gib, err);
  if (r == 0 && gib == 0)
    r = kiln_fail (err, "snapshot %s has no volume size", snapshot_id);
  for (size_t i = 0; r == 0 && i < t.n_refs; i++)
    if (t.refs[i].index >= gib * GIB / KILN_EBS_BLOCK_SIZE)
      r = kiln_fail (err, "snapshot %s lists block %" PRIu64 ", past its %" PRIu64 " GiB volume", snapshot_id,
                     t.refs[i].index, gib);
  if (r == 0)
    {
      t.fd = open (raw_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (t.fd < 0)
        r = kiln_fail_errno (err, errno, "create '%s'", raw_path);
      else if (ftruncate (t.fd, (off_t) (gib * GIB)) < 0)
        r = kiln_fail_errno (err, errno, "size '%s'", raw_path);
    }
  t.stats.volume_bytes = gib * GIB;
  if (r == 0)
    r = run_workers (&t, download_worker, err);
  if (t.fd >= 0 && close (t.fd) < 0 && r == 0)
    r = kiln_fail_errno (err, errno, "write '%s'", raw_path);
  *stats = t.stats;
  refs_free (t.refs, t.n_refs);
  kiln_error_free (t.error);
  pthread_mutex_destroy (&t.lock);
  kiln_aws_client_free (c);
  return r < 0 ? kiln_error_prefix (err, "download %s", snapshot_id) : 0;
}
