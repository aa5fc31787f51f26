/* store.c - kiln-emulator's SQLite database: schema and the small query API
 * every handler uses (store.h).
 *
 * The schema is the emulator's model of EC2 and SSM: one table per resource
 * kind, each row scoped by account and region, as AWS scopes them.  Times are
 * Unix seconds; lists and structures that are only ever read whole are JSON
 * text. */
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "cleanup.h"
#include "log.h"
#include "xalloc.h"

#define SCHEMA_VERSION "1"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);"
    /* Instances.  state: pending running stopping stopped shutting-down
     * terminated.  disk_snapshot: the snapshot whose disk the instance booted
     * from (its overlay's parent). */
    "CREATE TABLE IF NOT EXISTS instances ("
    "  id TEXT PRIMARY KEY, account TEXT NOT NULL, region TEXT NOT NULL,"
    "  reservation_id TEXT NOT NULL, image_id TEXT NOT NULL, instance_type TEXT NOT NULL,"
    "  state TEXT NOT NULL, state_reason_code TEXT, state_reason_message TEXT,"
    "  state_transition_reason TEXT, launch_time INTEGER NOT NULL, state_changed INTEGER,"
    "  ami_launch_index INTEGER NOT NULL DEFAULT 0, az TEXT NOT NULL, subnet_id TEXT, vpc_id TEXT,"
    "  private_ip TEXT, key_name TEXT, user_data TEXT, iam_profile TEXT, security_groups TEXT,"
    "  client_token TEXT, disk_snapshot TEXT, agent_online INTEGER NOT NULL DEFAULT 0,"
    "  seq INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS instances_scope ON instances (account, region, seq);"
    /* Images.  state: pending available invalid deregistered failed.  The
     * root volume is root_snapshot (one volume per image). */
    "CREATE TABLE IF NOT EXISTS images ("
    "  id TEXT PRIMARY KEY, account TEXT NOT NULL, region TEXT NOT NULL, name TEXT NOT NULL,"
    "  description TEXT, state TEXT NOT NULL, state_reason_code TEXT, state_reason_message TEXT,"
    "  architecture TEXT NOT NULL, root_device_name TEXT NOT NULL, root_snapshot TEXT,"
    "  volume_size INTEGER, creation_date INTEGER NOT NULL, source_instance TEXT,"
    "  source_image TEXT, source_region TEXT, virtualization_type TEXT NOT NULL,"
    "  ena_support INTEGER NOT NULL DEFAULT 1, boot_mode TEXT, image_location TEXT,"
    "  delete_on_termination INTEGER NOT NULL DEFAULT 1, seq INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS images_scope ON images (region, account);"
    "CREATE UNIQUE INDEX IF NOT EXISTS images_name ON images (account, region, name)"
    "  WHERE state <> 'deregistered';"
    /* Who may launch an image besides its owner: an account id, or 'all'. */
    "CREATE TABLE IF NOT EXISTS launch_permissions ("
    "  image_id TEXT NOT NULL, grantee TEXT NOT NULL, PRIMARY KEY (image_id, grantee));"
    /* Snapshots.  state: pending completed error.  disk: the file under the
     * data directory holding the volume (NULL for mock captures). */
    "CREATE TABLE IF NOT EXISTS snapshots ("
    "  id TEXT PRIMARY KEY, account TEXT NOT NULL, region TEXT NOT NULL, volume_id TEXT,"
    "  volume_size INTEGER NOT NULL, state TEXT NOT NULL, state_message TEXT,"
    "  progress TEXT NOT NULL DEFAULT '0%', start_time INTEGER NOT NULL, description TEXT,"
    "  disk TEXT, disk_format TEXT, seq INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS snapshots_scope ON snapshots (account, region);"
    /* Tags of any resource (instances, images, snapshots, key pairs, ...). */
    "CREATE TABLE IF NOT EXISTS tags ("
    "  resource_id TEXT NOT NULL, account TEXT NOT NULL, region TEXT NOT NULL,"
    "  resource_type TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
    "  PRIMARY KEY (resource_id, key));"
    "CREATE INDEX IF NOT EXISTS tags_scope ON tags (account, region);"
    "CREATE TABLE IF NOT EXISTS key_pairs ("
    "  account TEXT NOT NULL, region TEXT NOT NULL, name TEXT NOT NULL, id TEXT NOT NULL,"
    "  fingerprint TEXT NOT NULL, key_type TEXT NOT NULL, public_key TEXT, created INTEGER NOT NULL,"
    "  PRIMARY KEY (account, region, name));"
    /* SSM commands and one invocation per instance. */
    "CREATE TABLE IF NOT EXISTS commands ("
    "  id TEXT PRIMARY KEY, account TEXT NOT NULL, region TEXT NOT NULL, document_name TEXT NOT NULL,"
    "  document_version TEXT, comment TEXT, parameters TEXT NOT NULL, targets TEXT,"
    "  instance_ids TEXT NOT NULL, requested INTEGER NOT NULL, expires INTEGER,"
    "  timeout_seconds INTEGER NOT NULL, output_bucket TEXT, output_prefix TEXT,"
    "  max_concurrency TEXT, max_errors TEXT, seq INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS commands_scope ON commands (account, region, seq);"
    /* status: Pending InProgress Delayed Success Cancelled TimedOut Failed
     * Cancelling.  stdout/stderr: the whole output (AWS cuts what
     * GetCommandInvocation shows, not what is kept). */
    "CREATE TABLE IF NOT EXISTS invocations ("
    "  command_id TEXT NOT NULL, instance_id TEXT NOT NULL, account TEXT NOT NULL,"
    "  region TEXT NOT NULL, status TEXT NOT NULL, status_details TEXT NOT NULL,"
    "  response_code INTEGER NOT NULL DEFAULT -1, stdout TEXT NOT NULL DEFAULT '',"
    "  stderr TEXT NOT NULL DEFAULT '', requested INTEGER NOT NULL, started INTEGER,"
    "  ended INTEGER, seq INTEGER NOT NULL, PRIMARY KEY (command_id, instance_id));"
    "CREATE INDEX IF NOT EXISTS invocations_instance ON invocations (instance_id);"
    /* Where an invocation of a command sent with OutputS3BucketName put its
     * output (vmhost.c, written as the invocation ends, before its final
     * status): key_base is the plugin's key
     * "[<prefix>/]<command>/<instance>/awsrunShellScript/0.awsrunShellScript",
     * under which the agent's stdout and stderr objects go; error is NULL
     * when they were written, else why they were not.  A table of its own
     * (not invocations columns) so databases made before it still open. */
    "CREATE TABLE IF NOT EXISTS invocation_outputs ("
    "  command_id TEXT NOT NULL, instance_id TEXT NOT NULL, bucket TEXT NOT NULL, key_base TEXT NOT NULL,"
    "  error TEXT, PRIMARY KEY (command_id, instance_id));"
    /* SSM parameters: every version is kept. */
    "CREATE TABLE IF NOT EXISTS parameters ("
    "  account TEXT NOT NULL, region TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL,"
    "  type TEXT NOT NULL, value TEXT NOT NULL, description TEXT, allowed_pattern TEXT,"
    "  data_type TEXT NOT NULL DEFAULT 'text', tier TEXT NOT NULL DEFAULT 'Standard',"
    "  key_id TEXT, modified INTEGER NOT NULL, labels TEXT NOT NULL DEFAULT '[]',"
    "  PRIMARY KEY (account, region, name, version));"
    /* S3 buckets: names are global; each belongs to one account and lives
     * in one region. */
    "CREATE TABLE IF NOT EXISTS s3_buckets ("
    "  name TEXT PRIMARY KEY, account TEXT NOT NULL, region TEXT NOT NULL, created INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS s3_buckets_account ON s3_buckets (account, name);"
    /* S3 objects.  Keys compare as bytes (UTF-8 order, as S3 lists them).
     * data: the file DATA_DIR/s3/data/<data> (s3_data.c); etag without
     * quotes; metadata: JSON object of the headers returned with the object
     * (x-amz-meta-*, Content-Encoding, ...); checksum: base64, with "-N" for
     * a composite one; part_sizes: JSON array for a multipart object. */
    "CREATE TABLE IF NOT EXISTS s3_objects ("
    "  bucket TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL, size INTEGER NOT NULL,"
    "  etag TEXT NOT NULL, content_type TEXT NOT NULL, metadata TEXT NOT NULL DEFAULT '{}',"
    "  checksum_algorithm TEXT, checksum TEXT, checksum_type TEXT, part_sizes TEXT,"
    "  modified INTEGER NOT NULL, PRIMARY KEY (bucket, key));"
    /* S3 multipart uploads in progress and their parts (data as above). */
    "CREATE TABLE IF NOT EXISTS s3_uploads ("
    "  id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL, account TEXT NOT NULL,"
    "  initiated INTEGER NOT NULL, content_type TEXT NOT NULL, metadata TEXT NOT NULL DEFAULT '{}',"
    "  checksum_algorithm TEXT, checksum_type TEXT, seq INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS s3_uploads_key ON s3_uploads (bucket, key, seq);"
    "CREATE TABLE IF NOT EXISTS s3_parts ("
    "  upload TEXT NOT NULL, number INTEGER NOT NULL, data TEXT NOT NULL, size INTEGER NOT NULL,"
    "  etag TEXT NOT NULL, checksum TEXT, modified INTEGER NOT NULL, PRIMARY KEY (upload, number));"
    /* EBS direct (ebs_snapshots.c): what StartSnapshot knows of a snapshot
     * beside its `snapshots` row: its parent (the lineage), the client token
     * with the request's hash and the reply it got, the Timeout and the
     * deadline it sets (NULL once completed or expired).  Rows stay after
     * the snapshot is deleted: lineages and tokens outlive it. */
    "CREATE TABLE IF NOT EXISTS ebs_snapshots ("
    "  id TEXT PRIMARY KEY, account TEXT NOT NULL, region TEXT NOT NULL, parent TEXT,"
    "  client_token TEXT, request_hash TEXT NOT NULL, start_reply TEXT NOT NULL,"
    "  timeout_minutes INTEGER NOT NULL, deadline INTEGER);"
    "CREATE UNIQUE INDEX IF NOT EXISTS ebs_snapshots_token ON ebs_snapshots (account, region, client_token)"
    "  WHERE client_token IS NOT NULL;"
    "CREATE INDEX IF NOT EXISTS ebs_snapshots_deadline ON ebs_snapshots (deadline) WHERE deadline IS NOT NULL;"
    /* The blocks an EBS direct snapshot holds: base64 SHA-256 of the data
     * written (NULL for blocks inherited from a parent not written through
     * EBS direct), and origin, the snapshot whose write put it there. */
    "CREATE TABLE IF NOT EXISTS ebs_blocks ("
    "  snapshot_id TEXT NOT NULL, block_index INTEGER NOT NULL, checksum TEXT, origin TEXT NOT NULL,"
    "  PRIMARY KEY (snapshot_id, block_index)) WITHOUT ROWID;"
    "CREATE TRIGGER IF NOT EXISTS ebs_blocks_of_deleted AFTER DELETE ON snapshots BEGIN"
    "  DELETE FROM ebs_blocks WHERE snapshot_id = OLD.id; END;"
    /* VM import/export tasks (ec2_import.c, ec2_export.c).  kind:
     * import-snapshot, import-image, export-image.  state: active, then
     * completed, or deleting (cancel asked) and deleted (cancelled or
     * failed, status_message saying why).  progress: percent as text, NULL
     * when none.  Import: format (kiln's name: raw vmdk vhd vhdx qcow2),
     * bucket, object_key, url as asked, disk_size the object's bytes once
     * read; snapshot_id and image_id once made.  Export: image_id the AMI
     * exported, format the DiskImageFormat, bucket and object_key the
     * S3ExportLocation (object_key holds the prefix). */
    "CREATE TABLE IF NOT EXISTS conversion_tasks ("
    "  id TEXT PRIMARY KEY, kind TEXT NOT NULL, account TEXT NOT NULL, region TEXT NOT NULL,"
    "  state TEXT NOT NULL, status_message TEXT, progress TEXT, description TEXT, client_token TEXT,"
    "  format TEXT, bucket TEXT, object_key TEXT, url TEXT, disk_description TEXT, device_name TEXT,"
    "  disk_size INTEGER, role_name TEXT, architecture TEXT, platform TEXT, boot_mode TEXT,"
    "  license_type TEXT, snapshot_id TEXT, image_id TEXT, created INTEGER NOT NULL, seq INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS conversion_tasks_scope ON conversion_tasks (account, region, kind, seq);"
    "CREATE UNIQUE INDEX IF NOT EXISTS conversion_tasks_token ON conversion_tasks (account, region, kind,"
    "  client_token) WHERE client_token IS NOT NULL;"
    /* STS sessions (GetSessionToken): temporary credentials every service
     * accepts until expires (seconds since the epoch), with their token. */
    "CREATE TABLE IF NOT EXISTS sts_sessions ("
    "  access_key_id TEXT PRIMARY KEY, secret TEXT NOT NULL, token TEXT NOT NULL, account TEXT NOT NULL,"
    "  expires INTEGER NOT NULL, created INTEGER NOT NULL);"
    /* A counter that orders rows by creation (pagination follows it). */
    "CREATE TABLE IF NOT EXISTS sequence (id INTEGER PRIMARY KEY CHECK (id = 1), next INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO sequence (id, next) VALUES (1, 1);";

static int
db_error (struct kiln_emu *emu, kiln_error **err, const char *what)
{
  int code = sqlite3_extended_errcode (emu->db);
  return kiln_error_set (err, code == SQLITE_BUSY ? KILN_ERR_TIMEOUT : KILN_ERR_IO, 0, "database: %s: %s", what,
                         sqlite3_errmsg (emu->db));
}

int
emu_store_open (struct kiln_emu *emu, kiln_error **err)
{
  pthread_mutexattr_t attr;
  pthread_mutexattr_init (&attr);
  pthread_mutexattr_settype (&attr, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init (&emu->db_lock, &attr);
  pthread_mutexattr_destroy (&attr);

  _cleanup_free_ char *path = NULL;
  if (emu->state_dir)
    {
      path = kiln_xasprintf ("%s/emulator.db", emu->state_dir);
    }
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX;
  if (sqlite3_open_v2 (path ? path : ":memory:", &emu->db, flags, NULL) != SQLITE_OK)
    {
      kiln_error_set (err, KILN_ERR_IO, 0, "open database '%s': %s", path ? path : ":memory:",
                      emu->db ? sqlite3_errmsg (emu->db) : "out of memory");
      sqlite3_close (emu->db);
      emu->db = NULL;
      return -1;
    }
  sqlite3_busy_timeout (emu->db, 10000);
  char *msg = NULL;
  const char *pragmas = path ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
                             : "PRAGMA foreign_keys=ON;";
  if (sqlite3_exec (emu->db, pragmas, NULL, NULL, &msg) != SQLITE_OK
      || sqlite3_exec (emu->db, schema, NULL, NULL, &msg) != SQLITE_OK)
    {
      kiln_error_set (err, KILN_ERR_IO, 0, "prepare database '%s': %s", path ? path : ":memory:",
                      msg ? msg : "unknown error");
      sqlite3_free (msg);
      emu_store_close (emu);
      return -1;
    }
  _cleanup_json_ json_t *version = emu_db_query_one (emu, err, "SELECT value FROM meta WHERE key = ?",
                                                     "schema_version");
  if (version == NULL && *err)
    return -1;
  if (version && strcmp (emu_row_str (version, "value"), SCHEMA_VERSION) != 0)
    {
      kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0, "database '%s' has schema version %s; this kiln-emulator "
                      "knows version %s", path, emu_row_str (version, "value"), SCHEMA_VERSION);
      emu_store_close (emu);
      return -1;
    }
  if (version == NULL
      && emu_db_exec (emu, err, "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", "schema_version",
                      SCHEMA_VERSION) < 0)
    return -1;
  return 0;
}

void
emu_store_close (struct kiln_emu *emu)
{
  if (emu->db)
    {
      sqlite3_close_v2 (emu->db);
      emu->db = NULL;
    }
}

static int
prepare_bound (struct kiln_emu *emu, kiln_error **err, const char *sql, size_t n, const char *const *args,
               sqlite3_stmt **out)
{
  if (sqlite3_prepare_v2 (emu->db, sql, -1, out, NULL) != SQLITE_OK)
    return db_error (emu, err, "prepare");
  if ((size_t) sqlite3_bind_parameter_count (*out) != n)
    {
      kiln_error_set (err, KILN_ERR_FAILED, 0, "database: statement takes %d values, %zu given: %s",
                      sqlite3_bind_parameter_count (*out), n, sql);
      sqlite3_finalize (*out);
      *out = NULL;
      return -1;
    }
  for (size_t i = 0; i < n; i++)
    {
      int rc = args[i] ? sqlite3_bind_text (*out, (int) i + 1, args[i], -1, SQLITE_TRANSIENT)
                       : sqlite3_bind_null (*out, (int) i + 1);
      if (rc != SQLITE_OK)
        {
          sqlite3_finalize (*out);
          *out = NULL;
          return db_error (emu, err, "bind");
        }
    }
  return 0;
}

int
emu_db_exec_args (struct kiln_emu *emu, kiln_error **err, const char *sql, size_t n, const char *const *args)
{
  pthread_mutex_lock (&emu->db_lock);
  sqlite3_stmt *st = NULL;
  int r = prepare_bound (emu, err, sql, n, args, &st);
  if (r == 0)
    {
      int rc;
      while ((rc = sqlite3_step (st)) == SQLITE_ROW)
        ;
      r = rc == SQLITE_DONE ? sqlite3_changes (emu->db) : db_error (emu, err, "execute");
    }
  sqlite3_finalize (st);
  pthread_mutex_unlock (&emu->db_lock);
  return r;
}

void
emu_db_exec_logged_args (struct kiln_emu *emu, const char *what, const char *sql, size_t n, const char *const *args)
{
  _cleanup_error_ kiln_error *err = NULL;
  if (emu_db_exec_args (emu, &err, sql, n, args) < 0)
    kiln_log_warn ("emulator: %s: %s", what, kiln_error_message (err));
}

json_t *
emu_db_query_args (struct kiln_emu *emu, kiln_error **err, const char *sql, size_t n, const char *const *args)
{
  pthread_mutex_lock (&emu->db_lock);
  sqlite3_stmt *st = NULL;
  json_t *rows = NULL;
  if (prepare_bound (emu, err, sql, n, args, &st) == 0)
    {
      rows = json_array ();
      int rc;
      while ((rc = sqlite3_step (st)) == SQLITE_ROW)
        {
          json_t *row = json_object ();
          int cols = sqlite3_column_count (st);
          for (int i = 0; i < cols; i++)
            {
              const unsigned char *text = sqlite3_column_text (st, i);
              json_object_set_new (row, sqlite3_column_name (st, i),
                                   text ? json_stringn ((const char *) text, (size_t) sqlite3_column_bytes (st, i))
                                        : json_null ());
            }
          json_array_append_new (rows, row);
        }
      if (rc != SQLITE_DONE)
        {
          db_error (emu, err, "query");
          json_decref (rows);
          rows = NULL;
        }
    }
  sqlite3_finalize (st);
  pthread_mutex_unlock (&emu->db_lock);
  return rows;
}

json_t *
emu_db_query_one_args (struct kiln_emu *emu, kiln_error **err, const char *sql, size_t n,
                       const char *const *args)
{
  _cleanup_json_ json_t *rows = emu_db_query_args (emu, err, sql, n, args);
  if (rows == NULL || json_array_size (rows) == 0)
    return NULL;
  return json_incref (json_array_get (rows, 0));
}

int
emu_db_begin (struct kiln_emu *emu, kiln_error **err)
{
  pthread_mutex_lock (&emu->db_lock);
  char *msg = NULL;
  if (sqlite3_exec (emu->db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK)
    {
      kiln_error_set (err, KILN_ERR_IO, 0, "database: begin: %s", msg ? msg : sqlite3_errmsg (emu->db));
      sqlite3_free (msg);
      pthread_mutex_unlock (&emu->db_lock);
      return -1;
    }
  return 0;
}

int
emu_db_end (struct kiln_emu *emu, bool commit, kiln_error **err)
{
  char *msg = NULL;
  int r = 0;
  if (commit && sqlite3_exec (emu->db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK)
    {
      kiln_error_set (err, KILN_ERR_IO, 0, "database: commit: %s", msg ? msg : sqlite3_errmsg (emu->db));
      sqlite3_free (msg);
      msg = NULL;
      commit = false;
      r = -1;
    }
  if (!commit && sqlite3_get_autocommit (emu->db) == 0)
    sqlite3_exec (emu->db, "ROLLBACK", NULL, NULL, NULL);
  pthread_mutex_unlock (&emu->db_lock);
  return r;
}

const char *
emu_row_str (json_t *row, const char *column)
{
  const char *s = json_string_value (json_object_get (row, column));
  return s ? s : "";
}

const char *
emu_row_str_or_null (json_t *row, const char *column)
{
  return json_string_value (json_object_get (row, column));
}

long long
emu_row_int (json_t *row, const char *column)
{
  const char *s = json_string_value (json_object_get (row, column));
  return s ? strtoll (s, NULL, 10) : 0;
}

int
emu_db_next_seq (struct kiln_emu *emu, char out[24], kiln_error **err)
{
  _cleanup_json_ json_t *row
      = emu_db_query_one_args (emu, err, "UPDATE sequence SET next = next + 1 WHERE id = 1 RETURNING next - 1 AS n",
                               0, NULL);
  if (row == NULL)
    return *err ? -1 : kiln_fail (err, "database: the sequence row is missing");
  snprintf (out, 24, "%s", emu_row_str (row, "n"));
  return 0;
}

/* A relaxed transaction: the same as emu_db_begin/emu_db_end, but its
 * commit does not wait for the disk.  The connection is switched to
 * synchronous=NORMAL for it (set outside any transaction, as SQLite
 * wants) and back to FULL after, all under db_lock so no other
 * transaction of this connection commits relaxed.  In WAL mode a NORMAL
 * commit has written its frames to the WAL file (the OS has them) before
 * it returns: it survives the process being killed, but may be lost to a
 * power loss until the next FULL commit, whose sync of the WAL covers every
 * frame before it. */
int
emu_db_begin_relaxed (struct kiln_emu *emu, kiln_error **err)
{
  pthread_mutex_lock (&emu->db_lock);
  char *msg = NULL;
  if (sqlite3_exec (emu->db, "PRAGMA synchronous=NORMAL", NULL, NULL, &msg) != SQLITE_OK)
    {
      kiln_error_set (err, KILN_ERR_IO, 0, "database: relax sync: %s", msg ? msg : sqlite3_errmsg (emu->db));
      sqlite3_free (msg);
      pthread_mutex_unlock (&emu->db_lock);
      return -1;
    }
  if (emu_db_begin (emu, err) < 0)
    {
      sqlite3_exec (emu->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
      pthread_mutex_unlock (&emu->db_lock);
      return -1;
    }
  pthread_mutex_unlock (&emu->db_lock);   /* emu_db_begin's own hold stays */
  return 0;
}

int
emu_db_end_relaxed (struct kiln_emu *emu, bool commit, kiln_error **err)
{
  pthread_mutex_lock (&emu->db_lock);   /* held past emu_db_end's release */
  int r = emu_db_end (emu, commit, err);
  char *msg = NULL;
  if (sqlite3_exec (emu->db, "PRAGMA synchronous=FULL", NULL, NULL, &msg) != SQLITE_OK)
    {
      /* Every later commit would be relaxed: not something to run on with. */
      kiln_log_error ("emulator: database: restore synchronous=FULL: %s", msg ? msg : sqlite3_errmsg (emu->db));
      abort ();
    }
  pthread_mutex_unlock (&emu->db_lock);
  return r;
}
