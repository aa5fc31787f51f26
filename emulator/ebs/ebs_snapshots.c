/* ebs_snapshots.c - the EBS direct APIs' operations: StartSnapshot,
 * PutSnapshotBlock, CompleteSnapshot, GetSnapshotBlock, ListSnapshotBlocks
 * and ListChangedBlocks (ebs.h), and the Timeout of pending snapshots
 * (emu_ebs_expire).
 *
 * A snapshot started here is an ordinary row of `snapshots` (so
 * DescribeSnapshots shows it pending, then completed or error, and
 * RegisterImage takes it once completed) whose disk is the sparse raw file
 * DATA_DIR/disks/<id>.raw, named by the row from the start so the disk
 * collector leaves it alone.  Beside it, `ebs_snapshots` keeps what only
 * the EBS direct APIs know: the parent (the lineage ListChangedBlocks
 * compares within), the client token with a hash of the request it came
 * with and the reply it got (StartSnapshot is idempotent), the Timeout and
 * the deadline it sets.  `ebs_blocks` holds one row per block the snapshot
 * holds: its index, the base64 SHA-256 of the data PutSnapshotBlock
 * received, and its origin, the snapshot whose write put it there (the
 * snapshot itself, or an ancestor for blocks inherited from the parent).
 * A child starts with a copy of its parent's disk and rows; the blocks
 * written to it are those whose origin is itself, which is what
 * ChangedBlocksCount and the LINEAR aggregate checksum are checked against,
 * and two snapshots of a lineage differ exactly where their origins do.
 *
 * Snapshots not written through these APIs (CreateImage captures, imports,
 * copies) have no `ebs_blocks` rows: their blocks are the ones their disk
 * file holds data in (ebs_disk_data_blocks), their origin the snapshot.
 *
 * Only the caller's own snapshots can be read or written (kiln-emulator
 * does not share snapshots): another account's is AccessDeniedException
 * UNAUTHORIZED_ACCOUNT.  Reads need a completed snapshot, writes a pending
 * one.  Block tokens are HMAC-SHA256 over (snapshot, index, expiry) under a
 * key kept in the `meta` table, so only tokens handed out by the list calls
 * read blocks, and they expire as ExpiryTime says.  Pagination tokens carry
 * the next block index. */
#include "ebs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cleanup.h"
#include "digest.h"
#include "ec2.h"
#include "fsutil.h"
#include "log.h"
#include "store.h"
#include "vmhost.h"
#include "xalloc.h"

#define MAX_VOLUME_SIZE 65536          /* GiB, EBS's largest volume */
#define DEFAULT_TIMEOUT_MINUTES 60
#define DEFAULT_MAX_RESULTS 10000
#define MAX_TAGS 50
#define DESCRIPTION_MAX 255
#define CLIENT_TOKEN_MAX 255
#define TOKEN_LIFETIME_SECONDS (7 * 24 * 3600)
#define TOKEN_MAC_LEN 16
#define PAGE_TOKEN_PREFIX "kiln-ebs-page:"
#define TOKEN_KEY_NAME "ebs_block_token_key"

/* Every snapshot is read with what EBS direct knows of it (ebs_id is NULL
 * for snapshots made otherwise). */
#define SNAPSHOT_SELECT                                                                                   \
  "SELECT s.*, e.id AS ebs_id, e.parent, e.timeout_minutes FROM snapshots s LEFT JOIN ebs_snapshots e " \
  "ON e.id = s.id "

/* ---- small helpers ---- */

static int
fail_internal (struct emu_call *c, kiln_error *err)
{
  kiln_log_error ("emulator: %s: %s", c->operation ? c->operation : "ebs", kiln_error_message (err));
  return ebs_fail (c, 500, "InternalServerException", NULL, "kiln-emulator: %s", kiln_error_message (err));
}

/* Commits when r is 0, else rolls back; returns r, or -1 after failing the
 * call when the commit itself failed. */
static int
finish_transaction (struct emu_call *c, int r)
{
  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_end (c->emu, r == 0, &err) < 0)
    return fail_internal (c, err);
  return r;
}

static const char *
in_str (struct emu_call *c, const char *name)
{
  return json_string_value (json_object_get (c->input, name));
}

static bool
in_int (struct emu_call *c, const char *name, long long *out)
{
  json_t *v = json_object_get (c->input, name);
  if (!json_is_integer (v))
    return false;
  *out = json_integer_value (v);
  return true;
}

/* The file a snapshot's disk column names (absolute, or relative to the
 * data directory); NULL when it has none. */
static char *
snapshot_disk (struct emu_call *c, json_t *snap)
{
  const char *disk = emu_row_str_or_null (snap, "disk");
  if (disk == NULL)
    return NULL;
  if (disk[0] == '/')
    return kiln_xstrdup (disk);
  char *path;
  path = kiln_xasprintf ("%s/%s", c->emu->data_dir, disk);
  return path;
}

static char *
disks_dir (struct kiln_emu *emu)
{
  char *dir;
  dir = kiln_xasprintf ("%s/disks", emu->data_dir);
  return dir;
}

/* Base64 of a SHA-256 digest, malloc'd. */
static char *
digest_b64 (const unsigned char d[KILN_SHA256_LEN])
{
  return kiln_base64_encode (d, KILN_SHA256_LEN);
}

/* Decodes a base64 SHA-256 digest; false when it is not one. */
static bool
digest_decode (const char *b64, unsigned char out[KILN_SHA256_LEN])
{
  unsigned char *raw = NULL;
  size_t len = 0;
  if (kiln_base64_decode (b64, strlen (b64), &raw, &len) < 0)
    return false;
  bool ok = len == KILN_SHA256_LEN;
  if (ok)
    memcpy (out, raw, KILN_SHA256_LEN);
  free (raw);
  return ok;
}

static bool
same_bytes (const unsigned char *a, const unsigned char *b, size_t n)
{
  unsigned char diff = 0;
  for (size_t i = 0; i < n; i++)
    diff |= (unsigned char) (a[i] ^ b[i]);
  return diff == 0;
}

/* ---- snapshots ---- */

static int
check_snapshot_id (struct emu_call *c, const char *id, const char *member)
{
  if (id == NULL)
    return ebs_fail_validation (c, "INVALID_SNAPSHOT_ID", "1 validation error detected: Value null at '%s' failed "
                                "to satisfy constraint: Member must not be null", member);
  size_t n = strlen (id);
  if (n > 64 || n <= 5 || strncmp (id, "snap-", 5) != 0 || strspn (id + 5, "0123456789abcdef") != n - 5)
    return ebs_fail_validation (c, "INVALID_SNAPSHOT_ID", "1 validation error detected: Value '%s' at '%s' failed "
                                "to satisfy constraint: Member must satisfy regular expression pattern: "
                                "^snap-[0-9a-f]+$", id, member);
  return 0;
}

/* The caller's snapshot id in its region (new reference), or NULL after
 * failing the call: malformed id, no such snapshot (404), or another
 * account's (403). */
static json_t *
snapshot_get (struct emu_call *c, const char *id, const char *member)
{
  if (check_snapshot_id (c, id, member) < 0)
    return NULL;
  _cleanup_error_ kiln_error *err = NULL;
  json_t *row = emu_db_query_one (c->emu, &err, SNAPSHOT_SELECT "WHERE s.id = ? AND s.region = ?", id, c->region);
  if (row == NULL && err)
    {
      fail_internal (c, err);
      return NULL;
    }
  if (row == NULL)
    {
      ebs_fail (c, 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND", "The snapshot '%s' does not exist.", id);
      return NULL;
    }
  if (strcmp (emu_row_str (row, "account"), c->account) != 0)
    {
      json_decref (row);
      ebs_fail (c, 403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT", "Account %s is not authorized to access "
                "snapshot %s: it belongs to another account (kiln-emulator does not share snapshots).", c->account,
                id);
      return NULL;
    }
  return row;
}

/* Fails unless the snapshot is in state (pending for writes, completed for
 * reads). */
static int
require_state (struct emu_call *c, json_t *snap, const char *state)
{
  const char *now = emu_row_str (snap, "state");
  if (strcmp (now, state) == 0)
    return 0;
  if (strcmp (state, "pending") == 0)
    return ebs_fail_validation (c, "INVALID_SNAPSHOT_ID", "Snapshot %s is %s: %s works on pending snapshots only%s.",
                                emu_row_str (snap, "id"), now, c->operation,
                                strcmp (now, "error") == 0 ? " (this one timed out or failed)" : "");
  return ebs_fail_validation (c, "INVALID_SNAPSHOT_ID", "Snapshot %s is %s: %s reads completed snapshots only.",
                              emu_row_str (snap, "id"), now, c->operation);
}

/* Fails unless the snapshot was started with StartSnapshot. */
static int
require_ebs_direct (struct emu_call *c, json_t *snap)
{
  if (emu_row_str_or_null (snap, "ebs_id"))
    return 0;
  return ebs_fail_validation (c, "INVALID_SNAPSHOT_ID", "Snapshot %s was not started with StartSnapshot: only such "
                              "snapshots take blocks and CompleteSnapshot.", emu_row_str (snap, "id"));
}

static long long
volume_blocks (json_t *snap)
{
  return emu_row_int (snap, "volume_size") * EBS_BLOCKS_PER_GIB;
}

static int
check_block_index (struct emu_call *c, json_t *snap, long long index)
{
  long long n = volume_blocks (snap);
  if (index < n)
    return 0;
  return ebs_fail_validation (c, "INVALID_BLOCK", "Block index %lld is past the end of snapshot %s: its %lld GiB "
                              "volume has blocks 0 to %lld.", index, emu_row_str (snap, "id"),
                              emu_row_int (snap, "volume_size"), n - 1);
}

/* ---- write locks: PutSnapshotBlock beside CompleteSnapshot ---- */

/* A block's bytes go to the snapshot's disk file outside the database lock,
 * so several PutSnapshotBlock calls write at once; its row is committed
 * after, in a transaction of its own.  Two locks keep the file and the rows
 * telling the same story:
 * - per snapshot, a read-write lock: PutSnapshotBlock holds it shared from
 *   checking that the snapshot is pending to committing its row,
 *   CompleteSnapshot exclusively, so no byte is written into a snapshot
 *   while or after it completes, and the sync at completion covers every
 *   block whose row it counts;
 * - per block (striped over a fixed set of mutexes), held from writing the
 *   bytes to committing the row, so two writes of one block land in the
 *   file and in the rows in the same order.
 * They are taken in that order, then db_lock, never the other way round.
 * These are the only writers of an EBS direct snapshot's disk in this
 * process (the timeout only changes its state; a deleted snapshot's file
 * goes once its row has gone). */

struct write_lock {
  struct write_lock *next;
  const struct kiln_emu *emu;
  char *id;
  unsigned users;
  pthread_rwlock_t rw;
};

static pthread_mutex_t write_locks_lock = PTHREAD_MUTEX_INITIALIZER;
static struct write_lock *write_locks;

#define BLOCK_STRIPES 64
static pthread_mutex_t block_stripes[BLOCK_STRIPES] = {[0 ... BLOCK_STRIPES - 1] = PTHREAD_MUTEX_INITIALIZER};

static struct write_lock *
write_lock_take (const struct kiln_emu *emu, const char *id, bool exclusive)
{
  pthread_mutex_lock (&write_locks_lock);
  struct write_lock *l = write_locks;
  while (l && (l->emu != emu || strcmp (l->id, id) != 0))
    l = l->next;
  if (l == NULL)
    {
      l = kiln_xcalloc (1, sizeof *l);
      l->emu = emu;
      l->id = kiln_xstrdup (id);
      pthread_rwlock_init (&l->rw, NULL);
      l->next = write_locks;
      write_locks = l;
    }
  l->users++;
  pthread_mutex_unlock (&write_locks_lock);
  if (exclusive)
    pthread_rwlock_wrlock (&l->rw);
  else
    pthread_rwlock_rdlock (&l->rw);
  return l;
}

static void
write_lock_release (struct write_lock *l)
{
  if (l == NULL)
    return;
  pthread_rwlock_unlock (&l->rw);
  pthread_mutex_lock (&write_locks_lock);
  if (--l->users == 0)
    {
      struct write_lock **p = &write_locks;
      while (*p != l)
        p = &(*p)->next;
      *p = l->next;
      pthread_rwlock_destroy (&l->rw);
      free (l->id);
      free (l);
    }
  pthread_mutex_unlock (&write_locks_lock);
}

static void
write_lock_releasep (struct write_lock **l)
{
  write_lock_release (*l);
}
#define _cleanup_write_lock_ __attribute__ ((cleanup (write_lock_releasep)))

static pthread_mutex_t *
block_stripe (const char *id, long long index)
{
  unsigned long h = 5381;
  for (const char *p = id; *p; p++)
    h = h * 33 + (unsigned char) *p;
  return &block_stripes[(h + (unsigned long long) index) % BLOCK_STRIPES];
}

static void
stripe_unlockp (pthread_mutex_t **m)
{
  if (*m)
    pthread_mutex_unlock (*m);
}
#define _cleanup_stripe_ __attribute__ ((cleanup (stripe_unlockp)))

/* ---- block maps: which blocks a snapshot holds, and from whom ---- */

struct block {
  long long index;
  char *origin;
};

struct block_map {
  struct block *items;
  size_t n;
};

static void
block_map_release (struct block_map *m)
{
  for (size_t i = 0; i < m->n; i++)
    free (m->items[i].origin);
  free (m->items);
  memset (m, 0, sizeof *m);
}

static void
block_map_releasep (struct block_map *m)
{
  block_map_release (m);
}
#define _cleanup_block_map_ __attribute__ ((cleanup (block_map_releasep)))

static int
block_map_load (struct emu_call *c, json_t *snap, struct block_map *out)
{
  memset (out, 0, sizeof *out);
  const char *id = emu_row_str (snap, "id");
  _cleanup_error_ kiln_error *err = NULL;
  if (emu_row_str_or_null (snap, "ebs_id"))
    {
      _cleanup_json_ json_t *rows = emu_db_query (c->emu, &err, "SELECT block_index, origin FROM ebs_blocks WHERE "
                                                  "snapshot_id = ? ORDER BY block_index", id);
      if (rows == NULL)
        return fail_internal (c, err);
      out->items = kiln_xcalloc (json_array_size (rows) + 1, sizeof *out->items);
      size_t i;
      json_t *row;
      json_array_foreach (rows, i, row)
        out->items[out->n++] = (struct block){emu_row_int (row, "block_index"),
                                              kiln_xstrdup (emu_row_str (row, "origin"))};
      return 0;
    }
  _cleanup_free_ char *disk = snapshot_disk (c, snap);
  if (disk == NULL)
    return 0;   /* a mock-mode capture: no bytes at all */
  _cleanup_free_ long long *indices = NULL;
  size_t n = 0;
  if (ebs_disk_data_blocks (disk, emu_row_str_or_null (snap, "disk_format"), &indices, &n, &err) < 0)
    return fail_internal (c, err);
  out->items = kiln_xcalloc (n + 1, sizeof *out->items);
  long long limit = volume_blocks (snap);
  for (size_t i = 0; i < n && indices[i] < limit; i++)
    out->items[out->n++] = (struct block){indices[i], kiln_xstrdup (id)};
  return 0;
}

/* The first snapshot of id's lineage (following parents), malloc'd. */
static char *
lineage_root (struct emu_call *c, const char *id, kiln_error **err)
{
  char *cur = kiln_xstrdup (id);
  for (int depth = 0; depth < 100000; depth++)
    {
      _cleanup_json_ json_t *row = emu_db_query_one (c->emu, err, "SELECT parent FROM ebs_snapshots WHERE id = ?",
                                                     cur);
      if (row == NULL && *err)
        {
          free (cur);
          return NULL;
        }
      const char *parent = row ? emu_row_str_or_null (row, "parent") : NULL;
      if (parent == NULL)
        return cur;
      free (cur);
      cur = kiln_xstrdup (parent);
    }
  return cur;
}

/* ---- tokens ---- */

/* The block token key (created on first use), malloc'd. */
static char *
token_key (struct emu_call *c)
{
  _cleanup_error_ kiln_error *err = NULL;
  for (int attempt = 0; attempt < 2; attempt++)
    {
      _cleanup_json_ json_t *row = emu_db_query_one (c->emu, &err, "SELECT value FROM meta WHERE key = ?",
                                                     TOKEN_KEY_NAME);
      if (row == NULL && err)
        break;
      if (row)
        return kiln_xstrdup (emu_row_str (row, "value"));
      char a[37], b[37], seed[80], key[KILN_SHA256_LEN * 2 + 1];
      emu_new_uuid (c->emu, a);
      emu_new_uuid (c->emu, b);
      snprintf (seed, sizeof seed, "%s%s", a, b);
      kiln_sha256_hex (seed, strlen (seed), key);
      if (emu_db_exec (c->emu, &err, "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", TOKEN_KEY_NAME,
                       key) < 0)
        break;
    }
  fail_internal (c, err);
  return NULL;
}

static void
token_mac (const char *key, const char *snapshot_id, long long index, long long expiry,
           unsigned char mac[KILN_SHA256_LEN])
{
  _cleanup_free_ char *msg = NULL;
  msg = kiln_xasprintf ("%s\n%lld\n%lld", snapshot_id, index, expiry);
  kiln_hmac_sha256 (key, strlen (key), msg, strlen (msg), mac);
}

/* base64 (the MAC's first 16 bytes, the expiry as 8 big-endian bytes),
 * malloc'd. */
static char *
block_token (const char *key, const char *snapshot_id, long long index, long long expiry)
{
  unsigned char raw[TOKEN_MAC_LEN + 8], mac[KILN_SHA256_LEN];
  token_mac (key, snapshot_id, index, expiry, mac);
  memcpy (raw, mac, TOKEN_MAC_LEN);
  for (int i = 0; i < 8; i++)
    raw[TOKEN_MAC_LEN + i] = (unsigned char) ((unsigned long long) expiry >> (56 - 8 * i));
  return kiln_base64_encode (raw, sizeof raw);
}

static int
check_block_token (struct emu_call *c, const char *key, const char *snapshot_id, long long index, const char *token)
{
  unsigned char *raw = NULL;
  size_t len = 0;
  bool ok = kiln_base64_decode (token, strlen (token), &raw, &len) == 0 && len == TOKEN_MAC_LEN + 8;
  long long expiry = 0;
  if (ok)
    {
      unsigned long long e = 0;
      for (int i = 0; i < 8; i++)
        e = (e << 8) | raw[TOKEN_MAC_LEN + i];
      expiry = (long long) e;
      unsigned char mac[KILN_SHA256_LEN];
      token_mac (key, snapshot_id, index, expiry, mac);
      ok = same_bytes (mac, raw, TOKEN_MAC_LEN);
    }
  free (raw);
  if (!ok)
    return ebs_fail_validation (c, "INVALID_BLOCK_TOKEN", "The block token is not one for block %lld of snapshot "
                                "%s (block tokens come from ListSnapshotBlocks or ListChangedBlocks).", index,
                                snapshot_id);
  if (expiry < (long long) c->now)
    return ebs_fail_validation (c, "INVALID_BLOCK_TOKEN", "The block token for block %lld of snapshot %s has "
                                "expired; list the blocks again for a new one.", index, snapshot_id);
  return 0;
}

static char *
page_token (long long next_index)
{
  char text[64];
  snprintf (text, sizeof text, PAGE_TOKEN_PREFIX "%lld", next_index);
  return kiln_base64_encode ((const unsigned char *) text, strlen (text));
}

/* Where a listing starts: NextToken's index when given (StartingBlockIndex
 * is then ignored, as AWS documents), else StartingBlockIndex, else 0. */
static int
listing_start (struct emu_call *c, long long *start)
{
  const char *token = in_str (c, "NextToken");
  *start = 0;
  if (token == NULL)
    {
      in_int (c, "StartingBlockIndex", start);
      return 0;
    }
  unsigned char *raw = NULL;
  size_t len = 0;
  bool ok = strlen (token) <= 256 && kiln_base64_decode (token, strlen (token), &raw, &len) == 0;
  size_t plen = strlen (PAGE_TOKEN_PREFIX);
  if (ok)
    {
      _cleanup_free_ char *text = kiln_xstrndup ((const char *) raw, len);
      ok = strlen (text) == len && len > plen && len - plen < 19 && strncmp (text, PAGE_TOKEN_PREFIX, plen) == 0
           && strspn (text + plen, "0123456789") == len - plen;
      if (ok)
        *start = strtoll (text + plen, NULL, 10);
    }
  free (raw);
  if (!ok)
    return ebs_fail_validation (c, "INVALID_PAGE_TOKEN", "The pagination token '%s' is not one kiln-emulator "
                                "handed out.", token);
  return 0;
}

/* ---- StartSnapshot ---- */

static int
check_tags (struct emu_call *c, json_t *tags)
{
  if (tags == NULL)
    return 0;
  if (json_array_size (tags) > MAX_TAGS)
    return ebs_fail_validation (c, "INVALID_TAG", "%zu tags given: a snapshot takes at most %d.",
                                json_array_size (tags), MAX_TAGS);
  size_t i;
  json_t *tag;
  json_array_foreach (tags, i, tag)
    {
      const char *key = json_string_value (json_object_get (tag, "Key"));
      const char *value = json_string_value (json_object_get (tag, "Value"));
      if (key == NULL || *key == '\0' || strlen (key) > 127)
        return ebs_fail_validation (c, "INVALID_TAG", "Tags[%zu]: a tag key is 1 to 127 characters.", i);
      if (strncasecmp (key, "aws:", 4) == 0)
        return ebs_fail_validation (c, "INVALID_TAG", "Tags[%zu]: tag keys starting with 'aws:' are reserved "
                                    "('%s').", i, key);
      if (value && strlen (value) > 255)
        return ebs_fail_validation (c, "INVALID_TAG", "Tags[%zu] (%s): a tag value is at most 255 characters.",
                                    i, key);
      for (size_t k = 0; k < i; k++)
        if (strcmp (key, json_string_value (json_object_get (json_array_get (tags, k), "Key"))) == 0)
          return ebs_fail_validation (c, "INVALID_TAG", "Tags: the key '%s' is given twice.", key);
    }
  return 0;
}

/* SHA-256 (hex) of the request without its ClientToken: what a retry with
 * the same token must repeat. */
static void
request_hash (struct emu_call *c, char out[KILN_SHA256_LEN * 2 + 1])
{
  _cleanup_json_ json_t *copy = json_deep_copy (c->input);
  json_object_del (copy, "ClientToken");
  _cleanup_free_ char *text = json_dumps (copy, JSON_COMPACT | JSON_SORT_KEYS);
  kiln_sha256_hex (text, strlen (text), out);
}

/* The snapshot an earlier StartSnapshot with this client token made: 1 and
 * its reply in c->output when the request is the same, ConflictException
 * when it differs, 0 when the token is new. */
static int
replay_client_token (struct emu_call *c, const char *token, const char *hash)
{
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *row = emu_db_query_one (c->emu, &err, "SELECT id, request_hash, start_reply FROM "
                                                 "ebs_snapshots WHERE account = ? AND region = ? AND "
                                                 "client_token = ?", c->account, c->region, token);
  if (row == NULL && err)
    return fail_internal (c, err);
  if (row == NULL)
    return 0;
  if (strcmp (emu_row_str (row, "request_hash"), hash) != 0)
    return ebs_fail (c, 409, "ConflictException", NULL, "The client token '%s' was used by an earlier, different "
                     "StartSnapshot request (which started %s).", token, emu_row_str (row, "id"));
  json_error_t jerr;
  json_t *reply = json_loads (emu_row_str (row, "start_reply"), 0, &jerr);
  if (reply == NULL)
    return ebs_fail (c, 500, "InternalServerException", NULL, "the stored reply of %s is unreadable: %s",
                     emu_row_str (row, "id"), jerr.text);
  json_decref (c->output);
  c->output = reply;
  return 1;
}

struct start_spec {
  const char *id, *parent_id, *description, *token, *hash, *tmp, *final;
  json_t *parent;              /* the parent's row, or NULL */
  json_t *tags;                /* [{Key, Value}] or NULL */
  long long volume_size, timeout;
  const long long *inherited;  /* blocks of a parent not written through EBS direct */
  size_t n_inherited;
  json_t *reply;
};

/* Inside the transaction: the rows, then the disk under its final name. */
static int
start_snapshot_rows (struct emu_call *c, const struct start_spec *s)
{
  _cleanup_error_ kiln_error *err = NULL;
  if (s->token)
    {
      int r = replay_client_token (c, s->token, s->hash);
      if (r != 0)
        return r < 0 ? -1 : 1;
    }
  char seq[24], size[24], start[24], timeout[24], deadline[24];
  if (emu_db_next_seq (c->emu, seq, &err) < 0)
    return fail_internal (c, err);
  snprintf (size, sizeof size, "%lld", s->volume_size);
  snprintf (start, sizeof start, "%lld", (long long) c->now);
  snprintf (timeout, sizeof timeout, "%lld", s->timeout);
  snprintf (deadline, sizeof deadline, "%lld", (long long) c->now + s->timeout * 60);
  _cleanup_free_ char *reply = json_dumps (s->reply, JSON_COMPACT);
  if (emu_db_exec (c->emu, &err, "INSERT INTO snapshots (id, account, region, volume_id, volume_size, state, "
                   "progress, start_time, description, disk, disk_format, seq) VALUES (?, ?, ?, NULL, ?, 'pending', "
                   "'0%', ?, ?, ?, 'raw', ?)", s->id, c->account, c->region, size, start, s->description, s->final,
                   seq) < 0
      || emu_db_exec (c->emu, &err, "INSERT INTO ebs_snapshots (id, account, region, parent, client_token, "
                      "request_hash, start_reply, timeout_minutes, deadline) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      s->id, c->account, c->region, s->parent_id, s->token, s->hash, reply, timeout, deadline) < 0)
    return fail_internal (c, err);
  if (s->parent && emu_row_str_or_null (s->parent, "ebs_id")
      && emu_db_exec (c->emu, &err, "INSERT INTO ebs_blocks (snapshot_id, block_index, checksum, origin) SELECT ?, "
                      "block_index, checksum, origin FROM ebs_blocks WHERE snapshot_id = ?", s->id, s->parent_id) < 0)
    return fail_internal (c, err);
  for (size_t i = 0; i < s->n_inherited; i++)
    {
      char index[24];
      snprintf (index, sizeof index, "%lld", s->inherited[i]);
      if (emu_db_exec (c->emu, &err, "INSERT INTO ebs_blocks (snapshot_id, block_index, checksum, origin) VALUES "
                       "(?, ?, NULL, ?)", s->id, index, s->parent_id) < 0)
        return fail_internal (c, err);
    }
  size_t i;
  json_t *tag;
  json_array_foreach (s->tags, i, tag)
    {
      const char *value = json_string_value (json_object_get (tag, "Value"));
      if (emu_tag_set (c, s->id, "snapshot", json_string_value (json_object_get (tag, "Key")), value ? value : "")
          < 0)
        return -1;
    }
  if (rename (s->tmp, s->final) < 0)
    {
      kiln_fail_errno (&err, errno, "rename '%s' to '%s'", s->tmp, s->final);
      return fail_internal (c, err);
    }
  return 0;
}

static int
op_start_snapshot (struct emu_call *c, struct emu_response *resp)
{
  (void) resp;
  long long volume_size = 0, timeout = DEFAULT_TIMEOUT_MINUTES;
  in_int (c, "VolumeSize", &volume_size);
  in_int (c, "Timeout", &timeout);
  const char *parent_id = in_str (c, "ParentSnapshotId");
  const char *description = in_str (c, "Description");
  const char *token = in_str (c, "ClientToken");
  json_t *encrypted = json_object_get (c->input, "Encrypted");
  json_t *tags = json_object_get (c->input, "Tags");
  if (volume_size < 1 || volume_size > MAX_VOLUME_SIZE)
    return ebs_fail_validation (c, "INVALID_VOLUME_SIZE", "Volume size %lld GiB is out of range: snapshots are 1 to "
                                "%d GiB.", volume_size, MAX_VOLUME_SIZE);
  if (encrypted && parent_id)
    return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "ParentSnapshotId and Encrypted cannot be given in "
                                "the same request.");
  if (json_is_true (encrypted) || in_str (c, "KmsKeyArn"))
    return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "kiln-emulator does not encrypt snapshots: Encrypted "
                                "must be false and KmsKeyArn absent.");
  if (description && strlen (description) > DESCRIPTION_MAX)
    return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "The description is %zu characters; at most %d are "
                                "allowed.", strlen (description), DESCRIPTION_MAX);
  if (token && (*token == '\0' || strlen (token) > CLIENT_TOKEN_MAX || strpbrk (token, " \t\r\n\v\f")))
    return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "The client token must be 1 to %d characters "
                                "without white space.", CLIENT_TOKEN_MAX);
  if (check_tags (c, tags) < 0)
    return -1;

  char hash[KILN_SHA256_LEN * 2 + 1];
  request_hash (c, hash);
  if (token)
    {
      int r = replay_client_token (c, token, hash);
      if (r != 0)
        return r < 0 ? -1 : 0;
    }

  _cleanup_json_ json_t *parent = NULL;
  _cleanup_free_ char *parent_disk = NULL;
  if (parent_id)
    {
      parent = snapshot_get (c, parent_id, "ParentSnapshotId");
      if (parent == NULL)
        return -1;
      if (strcmp (emu_row_str (parent, "state"), "completed") != 0)
        return ebs_fail_validation (c, "INVALID_SNAPSHOT_ID", "The parent snapshot %s is %s: only a completed "
                                    "snapshot can be a parent.", parent_id, emu_row_str (parent, "state"));
      if (volume_size < emu_row_int (parent, "volume_size"))
        return ebs_fail_validation (c, "INVALID_VOLUME_SIZE", "Volume size %lld GiB is smaller than the %lld GiB "
                                    "of the parent snapshot %s.", volume_size, emu_row_int (parent, "volume_size"),
                                    parent_id);
      parent_disk = snapshot_disk (c, parent);
    }

  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_free_ char *id = emu_new_id (c->emu, "snap");
  _cleanup_free_ char *dir = disks_dir (c->emu);
  _cleanup_free_ char *final = emu_disk_path (c->emu, id, "raw");
  _cleanup_unlink_ char *tmp = NULL;
  tmp = kiln_xasprintf ("%s/.ebs-%s.raw.part", dir, id);
  if (kiln_mkdir_p (dir, 0755, &err) < 0)
    return fail_internal (c, err);
  if (ebs_disk_create (tmp, parent_disk, parent ? emu_row_str_or_null (parent, "disk_format") : NULL,
                       (uint64_t) volume_size * EBS_GIB, &err) < 0)
    return fail_internal (c, err);
  /* A parent written otherwise: its blocks are those its disk holds. */
  _cleanup_free_ long long *inherited = NULL;
  size_t n_inherited = 0;
  if (parent && parent_disk && emu_row_str_or_null (parent, "ebs_id") == NULL
      && ebs_disk_data_blocks (tmp, "raw", &inherited, &n_inherited, &err) < 0)
    return fail_internal (c, err);

  _cleanup_json_ json_t *reply = json_pack ("{s:s, s:s, s:s, s:I, s:I, s:I, s:s}", "SnapshotId", id, "OwnerId",
                                            c->account, "Status", "pending", "StartTime", (json_int_t) c->now,
                                            "VolumeSize", (json_int_t) volume_size, "BlockSize",
                                            (json_int_t) EBS_BLOCK_SIZE, "SseType", "none");
  if (description)
    json_object_set_new (reply, "Description", json_string (description));
  if (json_array_size (tags) > 0)
    json_object_set (reply, "Tags", tags);
  if (parent_id)
    json_object_set_new (reply, "ParentSnapshotId", json_string (parent_id));

  struct start_spec spec = {
    .id = id, .parent_id = parent_id, .description = description, .token = token, .hash = hash, .tmp = tmp,
    .final = final, .parent = parent, .tags = tags, .volume_size = volume_size, .timeout = timeout,
    .inherited = inherited, .n_inherited = n_inherited, .reply = reply,
  };
  if (emu_db_begin (c->emu, &err) < 0)
    return fail_internal (c, err);
  int r = start_snapshot_rows (c, &spec);
  if (r == 1)
    {
      /* The token's first request won a race with this one: its reply is ours. */
      finish_transaction (c, 1);
      return 0;
    }
  if (finish_transaction (c, r) < 0)
    {
      if (r == 0)
        unlink (final);   /* renamed, but the rows naming it were rolled back */
      return -1;
    }
  free (kiln_steal_pointer (&tmp));   /* renamed: nothing to remove */
  json_decref (c->output);
  c->output = json_incref (reply);
  return 0;
}

/* ---- PutSnapshotBlock ---- */

/* The block's row, in a relaxed transaction (store.h), written once its
 * bytes are in the disk file (the OS has them, unsynced): once the row
 * commits the block survives the emulator being killed, and a row never
 * names bytes a killed emulator could lose.  CompleteSnapshot's sync of the
 * file and its ordinary commit make the whole snapshot durable, power loss
 * included.  The caller holds the snapshot's shared write lock and the
 * block's stripe (see the write locks). */
static int
put_block_rows (struct emu_call *c, const char *id, long long index, const char *checksum, const char *progress)
{
  _cleanup_error_ kiln_error *err = NULL;
  /* Again inside the transaction: a timeout may have come between. */
  _cleanup_json_ json_t *snap = emu_db_query_one (c->emu, &err, SNAPSHOT_SELECT "WHERE s.id = ?", id);
  if (snap == NULL)
    return err ? fail_internal (c, err) : ebs_fail (c, 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND",
                                                    "The snapshot '%s' does not exist.", id);
  if (require_state (c, snap, "pending") < 0)
    return -1;
  char index_s[24], deadline[24];
  snprintf (index_s, sizeof index_s, "%lld", index);
  snprintf (deadline, sizeof deadline, "%lld", (long long) c->now + emu_row_int (snap, "timeout_minutes") * 60);
  if (emu_db_exec (c->emu, &err, "INSERT INTO ebs_blocks (snapshot_id, block_index, checksum, origin) VALUES "
                   "(?, ?, ?, ?) ON CONFLICT (snapshot_id, block_index) DO UPDATE SET checksum = excluded.checksum, "
                   "origin = excluded.origin", id, index_s, checksum, id) < 0
      || emu_db_exec (c->emu, &err, "UPDATE ebs_snapshots SET deadline = ? WHERE id = ?", deadline, id) < 0)
    return fail_internal (c, err);
  if (progress && emu_db_exec (c->emu, &err, "UPDATE snapshots SET progress = ? WHERE id = ?", progress, id) < 0)
    return fail_internal (c, err);
  return 0;
}

static int
op_put_snapshot_block (struct emu_call *c, struct emu_response *resp)
{
  const char *id = in_str (c, "SnapshotId");
  const char *checksum = in_str (c, "Checksum");
  const char *algorithm = in_str (c, "ChecksumAlgorithm");
  long long index = 0, data_length = 0, progress = -1;
  in_int (c, "BlockIndex", &index);
  in_int (c, "DataLength", &data_length);
  in_int (c, "Progress", &progress);
  /* Held from here: the snapshot stays pending (no CompleteSnapshot) until
   * the row is in. */
  _cleanup_write_lock_ struct write_lock *lock = write_lock_take (c->emu, id, false);
  _cleanup_json_ json_t *snap = snapshot_get (c, id, "snapshotId");
  if (snap == NULL || require_ebs_direct (c, snap) < 0 || require_state (c, snap, "pending") < 0
      || check_block_index (c, snap, index) < 0)
    return -1;
  if (strcmp (algorithm, "SHA256") != 0)
    return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "Checksum algorithm '%s' is not supported: SHA256 is "
                                "the only one.", algorithm);
  if (data_length != EBS_BLOCK_SIZE)
    return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "x-amz-Data-Length is %lld: the only block size is "
                                "%d bytes.", data_length, EBS_BLOCK_SIZE);
  if (c->req->body_len != (size_t) data_length)
    return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "Failed to read block data: x-amz-Data-Length says "
                                "%lld bytes, the request body holds %zu.", data_length, c->req->body_len);
  unsigned char claimed[KILN_SHA256_LEN], actual[KILN_SHA256_LEN];
  if (!digest_decode (checksum, claimed))
    return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "x-amz-Checksum '%s' is not a base64 SHA-256 "
                                "digest.", checksum);
  kiln_sha256 (c->req->body, c->req->body_len, actual);
  _cleanup_free_ char *actual_b64 = digest_b64 (actual);
  if (!same_bytes (claimed, actual, KILN_SHA256_LEN))
    return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "The checksum of block %lld's data, %s, does not "
                                "match x-amz-Checksum %s.", index, actual_b64, checksum);

  char progress_s[8];
  snprintf (progress_s, sizeof progress_s, "%lld%%", progress);
  _cleanup_free_ char *disk = snapshot_disk (c, snap);
  if (disk == NULL)
    return ebs_fail (c, 500, "InternalServerException", NULL, "snapshot %s has no disk file", id);
  _cleanup_stripe_ pthread_mutex_t *stripe = block_stripe (id, index);
  pthread_mutex_lock (stripe);
  _cleanup_error_ kiln_error *err = NULL;
  if (ebs_disk_write_block (disk, index, (const unsigned char *) c->req->body, &err) < 0)
    return fail_internal (c, err);
  if (emu_db_begin_relaxed (c->emu, &err) < 0)
    return fail_internal (c, err);
  int r = put_block_rows (c, id, index, actual_b64, progress >= 0 ? progress_s : NULL);
  if (emu_db_end_relaxed (c->emu, r == 0, &err) < 0)
    return fail_internal (c, err);
  if (r < 0)
    return -1;
  emu_response_add_header (resp, "x-amz-Checksum", actual_b64);
  emu_response_add_header (resp, "x-amz-Checksum-Algorithm", "SHA256");
  return 0;
}

/* ---- CompleteSnapshot ---- */

static int
complete_rows (struct emu_call *c, const char *id, long long count, const char *checksum)
{
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *snap = emu_db_query_one (c->emu, &err, SNAPSHOT_SELECT "WHERE s.id = ?", id);
  if (snap == NULL)
    return err ? fail_internal (c, err) : ebs_fail (c, 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND",
                                                    "The snapshot '%s' does not exist.", id);
  if (require_state (c, snap, "pending") < 0)
    return -1;
  _cleanup_json_ json_t *rows = emu_db_query (c->emu, &err, "SELECT block_index, checksum FROM ebs_blocks WHERE "
                                              "snapshot_id = ? AND origin = ? ORDER BY block_index", id, id);
  if (rows == NULL)
    return fail_internal (c, err);
  size_t written = json_array_size (rows);
  if ((long long) written != count)
    return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "ChangedBlocksCount is %lld, but %zu block%s written "
                                "to snapshot %s.", count, written, written == 1 ? " was" : "s were", id);
  if (checksum)
    {
      /* LINEAR: SHA-256 over the blocks' SHA-256 digests in index order. */
      unsigned char *all = kiln_xcalloc (written + 1, KILN_SHA256_LEN);
      size_t i;
      json_t *row;
      bool readable = true;
      json_array_foreach (rows, i, row)
        readable = readable && digest_decode (emu_row_str (row, "checksum"), all + i * KILN_SHA256_LEN);
      unsigned char aggregate[KILN_SHA256_LEN], claimed[KILN_SHA256_LEN];
      kiln_sha256 (all, written * KILN_SHA256_LEN, aggregate);
      free (all);
      if (!readable)
        return ebs_fail (c, 500, "InternalServerException", NULL, "a block checksum of %s is unreadable", id);
      _cleanup_free_ char *expected = digest_b64 (aggregate);
      if (!digest_decode (checksum, claimed))
        return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "x-amz-Checksum '%s' is not a base64 SHA-256 "
                                    "digest.", checksum);
      if (!same_bytes (claimed, aggregate, KILN_SHA256_LEN))
        return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "The aggregate checksum %s does not match the "
                                    "%zu block%s written to snapshot %s (SHA256 LINEAR over their checksums in "
                                    "block index order is %s).", checksum, written, written == 1 ? "" : "s", id,
                                    expected);
    }
  if (emu_db_exec (c->emu, &err, "UPDATE snapshots SET state = 'completed', progress = '100%' WHERE id = ? AND "
                   "state = 'pending'", id) < 0
      || emu_db_exec (c->emu, &err, "UPDATE ebs_snapshots SET deadline = NULL WHERE id = ?", id) < 0)
    return fail_internal (c, err);
  return 0;
}

static int
op_complete_snapshot (struct emu_call *c, struct emu_response *resp)
{
  (void) resp;
  const char *id = in_str (c, "SnapshotId");
  const char *checksum = in_str (c, "Checksum");
  const char *algorithm = in_str (c, "ChecksumAlgorithm");
  const char *method = in_str (c, "ChecksumAggregationMethod");
  long long count = 0;
  in_int (c, "ChangedBlocksCount", &count);
  _cleanup_json_ json_t *snap = snapshot_get (c, id, "snapshotId");
  if (snap == NULL || require_ebs_direct (c, snap) < 0 || require_state (c, snap, "pending") < 0)
    return -1;
  if (algorithm && strcmp (algorithm, "SHA256") != 0)
    return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "Checksum algorithm '%s' is not supported: SHA256 is "
                                "the only one.", algorithm);
  if (method && strcmp (method, "LINEAR") != 0)
    return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "Checksum aggregation method '%s' is not supported: "
                                "LINEAR is the only one.", method);
  if (checksum && (algorithm == NULL || method == NULL))
    return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "An aggregate x-amz-Checksum needs "
                                "x-amz-Checksum-Algorithm (SHA256) and x-amz-Checksum-Aggregation-Method (LINEAR).");
  /* No block is being written from here on (see the write locks), and
   * every one written is in the file: synced before the ordinary (durable)
   * commit that completes the snapshot, which also makes the blocks' relaxed
   * rows durable.  Outside db_lock: a sync of a large disk takes a while. */
  _cleanup_write_lock_ struct write_lock *lock = write_lock_take (c->emu, id, true);
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_free_ char *disk = snapshot_disk (c, snap);
  if (disk && ebs_disk_sync (disk, &err) < 0)
    return fail_internal (c, err);
  if (emu_db_begin (c->emu, &err) < 0)
    return fail_internal (c, err);
  if (finish_transaction (c, complete_rows (c, id, count, checksum)) < 0)
    return -1;
  json_object_set_new (c->output, "Status", json_string ("completed"));
  return 0;
}

/* ---- GetSnapshotBlock ---- */

/* Where raw conversions of non-raw disks are kept for reading (ebs.h). */
static char *
cache_dir (struct kiln_emu *emu)
{
  char *dir;
  dir = kiln_xasprintf ("%s/ebs-cache", emu->data_dir);
  return dir;
}

/* SQL function kiln_ebs_cache_drop(id): the snapshot's row is being
 * deleted (or its deletion is; a rollback costs one conversion more). */
static void
cache_drop_sql (sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
  (void) argc;
  struct kiln_emu *emu = sqlite3_user_data (ctx);
  const unsigned char *id = sqlite3_value_text (argv[0]);
  if (id)
    {
      _cleanup_free_ char *dir = cache_dir (emu);
      ebs_cache_drop (dir, (const char *) id);
    }
  sqlite3_result_null (ctx);
}

/* Every deletion of a snapshot row (DeleteSnapshot, DeregisterImage, ...)
 * drops its raw conversion: a TEMP trigger of this connection, not part of
 * the schema, installed before the first conversion is made.  It runs under
 * db_lock; ebs_cache_drop takes only the cache's own short lock. */
static int
cache_trigger_install (struct kiln_emu *emu, kiln_error **err)
{
  pthread_mutex_lock (&emu->db_lock);
  int r = 0;
  _cleanup_json_ json_t *have = emu_db_query_one (emu, err, "SELECT name FROM temp.sqlite_master WHERE type = "
                                                  "'trigger' AND name = ?", "ebs_cache_of_deleted");
  if (have == NULL && *err)
    r = -1;
  else if (have == NULL)
    {
      if (sqlite3_create_function_v2 (emu->db, "kiln_ebs_cache_drop", 1, SQLITE_UTF8, emu, cache_drop_sql, NULL,
                                      NULL, NULL) != SQLITE_OK)
        r = kiln_fail (err, "database: register kiln_ebs_cache_drop: %s", sqlite3_errmsg (emu->db));
      else if (emu_db_exec0 (emu, err, "CREATE TEMP TRIGGER IF NOT EXISTS ebs_cache_of_deleted AFTER DELETE ON "
                             "main.snapshots BEGIN SELECT kiln_ebs_cache_drop (OLD.id); END") < 0)
        r = -1;
    }
  pthread_mutex_unlock (&emu->db_lock);
  return r;
}

static int
op_get_snapshot_block (struct emu_call *c, struct emu_response *resp)
{
  const char *id = in_str (c, "SnapshotId");
  const char *token = in_str (c, "BlockToken");
  long long index = 0;
  in_int (c, "BlockIndex", &index);
  _cleanup_json_ json_t *snap = snapshot_get (c, id, "snapshotId");
  if (snap == NULL || require_state (c, snap, "completed") < 0 || check_block_index (c, snap, index) < 0)
    return -1;
  _cleanup_free_ char *key = token_key (c);
  if (key == NULL || check_block_token (c, key, id, index, token) < 0)
    return -1;
  _cleanup_error_ kiln_error *err = NULL;
  /* Read straight into the reply's body (no copy). */
  kiln_buf_release (&resp->body);
  resp->body.data = kiln_xcalloc (1, EBS_BLOCK_SIZE + 1);
  resp->body.cap = EBS_BLOCK_SIZE + 1;
  resp->body.len = EBS_BLOCK_SIZE;
  unsigned char *data = (unsigned char *) resp->body.data;
  _cleanup_free_ char *disk = snapshot_disk (c, snap);
  const char *format = emu_row_str_or_null (snap, "disk_format");
  _cleanup_free_ char *dir = cache_dir (c->emu);
  if (disk && format && strcmp (format, "raw") != 0 && cache_trigger_install (c->emu, &err) < 0)
    return fail_internal (c, err);
  if (disk && ebs_disk_read_block (disk, format, index, dir, id, data, &err) < 0)
    return fail_internal (c, err);
  unsigned char digest[KILN_SHA256_LEN];
  kiln_sha256 (data, EBS_BLOCK_SIZE, digest);
  _cleanup_free_ char *b64 = digest_b64 (digest);
  char length[24];
  snprintf (length, sizeof length, "%d", EBS_BLOCK_SIZE);
  resp->content_type = kiln_xstrdup ("application/octet-stream");
  emu_response_add_header (resp, "x-amz-Data-Length", length);
  emu_response_add_header (resp, "x-amz-Checksum", b64);
  emu_response_add_header (resp, "x-amz-Checksum-Algorithm", "SHA256");
  return 0;
}

/* ---- ListSnapshotBlocks, ListChangedBlocks ---- */

/* The members every listing reply has. */
static void
listing_reply (struct emu_call *c, json_t *snap, long long expiry, long long next_index)
{
  json_object_set_new (c->output, "ExpiryTime", json_integer (expiry));
  json_object_set_new (c->output, "VolumeSize", json_integer (emu_row_int (snap, "volume_size")));
  json_object_set_new (c->output, "BlockSize", json_integer (EBS_BLOCK_SIZE));
  if (next_index >= 0)
    {
      _cleanup_free_ char *token = page_token (next_index);
      json_object_set_new (c->output, "NextToken", json_string (token));
    }
}

static int
op_list_snapshot_blocks (struct emu_call *c, struct emu_response *resp)
{
  (void) resp;
  const char *id = in_str (c, "SnapshotId");
  long long max = DEFAULT_MAX_RESULTS, start;
  in_int (c, "MaxResults", &max);
  _cleanup_json_ json_t *snap = snapshot_get (c, id, "snapshotId");
  if (snap == NULL || require_state (c, snap, "completed") < 0 || listing_start (c, &start) < 0)
    return -1;
  _cleanup_free_ char *key = token_key (c);
  if (key == NULL)
    return -1;
  _cleanup_block_map_ struct block_map map = {0};
  if (block_map_load (c, snap, &map) < 0)
    return -1;
  long long expiry = (long long) c->now + TOKEN_LIFETIME_SECONDS, next = -1;
  json_t *blocks = json_array ();
  json_object_set_new (c->output, "Blocks", blocks);
  for (size_t i = 0; i < map.n; i++)
    {
      if (map.items[i].index < start)
        continue;
      if ((long long) json_array_size (blocks) == max)
        {
          next = map.items[i].index;
          break;
        }
      _cleanup_free_ char *token = block_token (key, id, map.items[i].index, expiry);
      json_array_append_new (blocks, json_pack ("{s:I, s:s}", "BlockIndex", (json_int_t) map.items[i].index,
                                                "BlockToken", token));
    }
  listing_reply (c, snap, expiry, next);
  return 0;
}

static int
op_list_changed_blocks (struct emu_call *c, struct emu_response *resp)
{
  (void) resp;
  const char *second_id = in_str (c, "SecondSnapshotId");
  const char *first_id = in_str (c, "FirstSnapshotId");
  long long max = DEFAULT_MAX_RESULTS, start;
  in_int (c, "MaxResults", &max);
  _cleanup_json_ json_t *second = snapshot_get (c, second_id, "secondSnapshotId");
  if (second == NULL || require_state (c, second, "completed") < 0)
    return -1;
  _cleanup_json_ json_t *first = NULL;
  if (first_id)
    {
      first = snapshot_get (c, first_id, "firstSnapshotId");
      if (first == NULL || require_state (c, first, "completed") < 0)
        return -1;
      _cleanup_error_ kiln_error *err = NULL;
      _cleanup_free_ char *root1 = lineage_root (c, first_id, &err);
      _cleanup_free_ char *root2 = root1 ? lineage_root (c, second_id, &err) : NULL;
      if (root2 == NULL)
        return fail_internal (c, err);
      if (strcmp (root1, root2) != 0)
        return ebs_fail_validation (c, "UNRELATED_SNAPSHOTS", "Snapshots %s and %s are not of the same lineage "
                                    "(neither descends, through ParentSnapshotId, from where the other does).",
                                    first_id, second_id);
    }
  if (listing_start (c, &start) < 0)
    return -1;
  _cleanup_free_ char *key = token_key (c);
  if (key == NULL)
    return -1;
  _cleanup_block_map_ struct block_map a = {0};
  _cleanup_block_map_ struct block_map b = {0};
  if ((first && block_map_load (c, first, &a) < 0) || block_map_load (c, second, &b) < 0)
    return -1;

  long long expiry = (long long) c->now + TOKEN_LIFETIME_SECONDS, next = -1;
  json_t *changed = json_array ();
  json_object_set_new (c->output, "ChangedBlocks", changed);
  size_t i = 0, k = 0;
  while (i < a.n || k < b.n)
    {
      /* Merge by index: a block is changed when only one side holds it or
       * the two got it from different writes. */
      long long index;
      const struct block *in_a = NULL, *in_b = NULL;
      if (k >= b.n || (i < a.n && a.items[i].index < b.items[k].index))
        in_a = &a.items[i++];
      else if (i >= a.n || b.items[k].index < a.items[i].index)
        in_b = &b.items[k++];
      else
        {
          in_a = &a.items[i++];
          in_b = &b.items[k++];
        }
      index = in_a ? in_a->index : in_b->index;
      if (index < start || (in_a && in_b && strcmp (in_a->origin, in_b->origin) == 0))
        continue;
      if ((long long) json_array_size (changed) == max)
        {
          next = index;
          break;
        }
      json_t *entry = json_pack ("{s:I}", "BlockIndex", (json_int_t) index);
      if (in_a)
        {
          _cleanup_free_ char *token = block_token (key, first_id, index, expiry);
          json_object_set_new (entry, "FirstBlockToken", json_string (token));
        }
      if (in_b)
        {
          _cleanup_free_ char *token = block_token (key, second_id, index, expiry);
          json_object_set_new (entry, "SecondBlockToken", json_string (token));
        }
      json_array_append_new (changed, entry);
    }
  listing_reply (c, second, expiry, next);
  return 0;
}

/* ---- Timeout ---- */

void
emu_ebs_expire (struct kiln_emu *emu, time_t now)
{
  char now_s[24];
  snprintf (now_s, sizeof now_s, "%lld", (long long) now);
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *due = emu_db_query (emu, &err, "SELECT id, timeout_minutes FROM ebs_snapshots WHERE "
                                             "deadline IS NOT NULL AND deadline <= ?", now_s);
  if (due == NULL)
    {
      kiln_log_warn ("emulator: EBS snapshot timeouts: %s", kiln_error_message (err));
      return;
    }
  size_t i;
  json_t *row;
  json_array_foreach (due, i, row)
    {
      const char *id = emu_row_str (row, "id");
      _cleanup_free_ char *message = NULL;
      message = kiln_xasprintf ("The snapshot was not completed within its %lld-minute timeout (StartSnapshot "
                                "Timeout) after it was started or its last block was written.",
                                emu_row_int (row, "timeout_minutes"));
      if (emu_db_begin (emu, &err) < 0)
        break;
      bool ok = emu_db_exec (emu, &err, "UPDATE snapshots SET state = 'error', state_message = ? WHERE id = ? AND "
                             "state = 'pending'", message, id) >= 0
                && emu_db_exec (emu, &err, "UPDATE ebs_snapshots SET deadline = NULL WHERE id = ? AND deadline <= ?",
                                id, now_s) >= 0;
      if (emu_db_end (emu, ok, ok ? &err : NULL) < 0 || !ok)
        break;
      kiln_log_debug ("emulator: EBS snapshot %s timed out", id);
    }
  if (err)
    kiln_log_warn ("emulator: EBS snapshot timeouts: %s", kiln_error_message (err));
}

const struct ebs_operation emu_ebs_snapshot_ops[] = {
  {"CompleteSnapshot", op_complete_snapshot},
  {"GetSnapshotBlock", op_get_snapshot_block},
  {"ListChangedBlocks", op_list_changed_blocks},
  {"ListSnapshotBlocks", op_list_snapshot_blocks},
  {"PutSnapshotBlock", op_put_snapshot_block},
  {"StartSnapshot", op_start_snapshot},
  {NULL, NULL},
};
