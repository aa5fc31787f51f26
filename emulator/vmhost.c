/* vmhost.c - the guests behind kiln-emulator's instances (vmhost.h).
 *
 * One `struct vm` per instance that has had work queued since the emulator
 * started, with a worker thread and a FIFO of jobs.  The worker owns the
 * instance's kiln_instance (the QEMU driver's object, through the driver
 * table) and is the only thread that touches it; handlers only queue jobs and
 * may raise the vm's cancel flag to interrupt what the worker is waiting on
 * (a boot, a command) when the instance is being terminated or a command
 * cancelled.  Every outcome goes to the database with conditional updates
 * ("... WHERE state = 'pending'") so a late result never overwrites a newer
 * decision such as a termination.
 *
 * Instance directories: DATA_DIR/instances/<id>/ holds the overlay disk
 * (persistent: stop/start and restarts keep it), QEMU's sockets and pid, and
 * console.log (GetConsoleOutput reads it). */
#include "vmhost.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "digest.h"
#include "driver.h"
#include "ec2.h"
#include "fsutil.h"
#include "log.h"
#include "s3.h"
#include "store.h"
#include "xalloc.h"

/* Boot: from QEMU's start to the guest agent answering. */
#define BOOT_TIMEOUT_SECONDS 900
#define SHUTDOWN_TIMEOUT_SECONDS 120
/* Longest SSM executionTimeout AWS accepts (48 hours). */
#define MAX_EXECUTION_TIMEOUT 172800
/* The first-boot user data script's deadline. */
#define USER_DATA_TIMEOUT_SECONDS 1800

enum job_kind {
  JOB_LAUNCH,      /* first boot */
  JOB_START,       /* boot again (StartInstances, or after a restart) */
  JOB_STOP,
  JOB_REBOOT,
  JOB_TERMINATE,
  JOB_CAPTURE,
  JOB_COMMAND,
};

struct job {
  enum job_kind kind;
  char *a, *b, *c;  /* capture: image, snapshot; command: command id */
  bool flag;        /* stop: force; capture: no_reboot */
  struct job *next;
};

struct vm {
  struct emu_vmhost *host;
  char *id;
  char *dir;                       /* DATA_DIR/instances/<id> */
  struct kiln_instance *inst;      /* qemu mode, while a guest exists */
  pthread_t thread;
  pthread_mutex_t lock;            /* guards the queue, running_command, cancel's meaning */
  pthread_cond_t cond;
  struct job *head, *tail;
  volatile sig_atomic_t cancel;    /* interrupts the worker's current wait */
  char *running_command;           /* the command id the worker runs, or NULL */
  bool quit;                       /* emulator shutdown */
  struct vm *next;
};

struct emu_vmhost {
  struct kiln_emu *emu;
  pthread_mutex_t lock;            /* guards vms */
  struct vm *vms;
  bool shutting_down;
  unsigned long pending;           /* jobs queued or running, all instances */
  pthread_cond_t idle;             /* signalled when pending drops */
};

static void
job_free (struct job *j)
{
  free (j->a);
  free (j->b);
  free (j->c);
  free (j);
}

static char *
instance_dir (struct kiln_emu *emu, const char *id)
{
  char *p;
  p = kiln_xasprintf ("%s/instances/%s", emu->data_dir, id);
  return p;
}

char *
emu_disk_path (struct kiln_emu *emu, const char *snapshot_id, const char *format)
{
  char *p;
  p = kiln_xasprintf ("%s/disks/%s.%s", emu->data_dir, snapshot_id, format);
  return p;
}

static void
db_warn (const char *what, kiln_error *err)
{
  kiln_log_warn ("emulator: %s: %s", what, kiln_error_message (err));
}

/* Runs an UPDATE and logs (rather than returns) a failure: the worker has
 * nobody to report to but the log. */
#define db_update(emu, what, sql, ...)                                  \
  do                                                                    \
    {                                                                   \
      _cleanup_error_ kiln_error *db_err_ = NULL;                       \
      if (emu_db_exec ((emu), &db_err_, (sql), __VA_ARGS__) < 0)        \
        db_warn ((what), db_err_);                                      \
    }                                                                   \
  while (0)

static void
now_text (struct kiln_emu *emu, char out[24])
{
  snprintf (out, 24, "%lld", (long long) emu_now (emu));
}

/* ---- guests (qemu mode) ---- */

/* Creates (and unless create_only, boots) the vm's guest from its database
 * row: the overlay in its directory is reused when it exists. */
static int
guest_up (struct vm *vm, bool create_only, kiln_error **err)
{
  struct kiln_emu *emu = vm->host->emu;
  _cleanup_json_ json_t *row = emu_db_query_one (
      emu, err, "SELECT i.instance_type, i.disk_snapshot, s.disk, s.disk_format FROM instances i "
      "LEFT JOIN snapshots s ON s.id = i.disk_snapshot WHERE i.id = ?", vm->id);
  if (row == NULL)
    return *err ? -1 : kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "instance %s is gone", vm->id);
  const char *disk = emu_row_str_or_null (row, "disk");
  _cleanup_free_ char *overlay = NULL;
  overlay = kiln_xasprintf ("%s/overlay.qcow2", vm->dir);
  if (disk == NULL && access (overlay, F_OK) < 0)
    return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0, "its image's snapshot %s has no disk (it was made by a "
                           "mock-mode instance or its disk was deleted)", emu_row_str (row, "disk_snapshot"));
  const struct kiln_aws_instance_type *type = kiln_aws_instance_type_find (emu_row_str (row, "instance_type"));
  if (kiln_mkdir_p (vm->dir, 0755, err) < 0)
    return -1;
  _cleanup_free_ char *console = NULL;
  console = kiln_xasprintf ("%s/console.log", vm->dir);
  struct kiln_instance_spec spec = {
    .name = vm->id,
    /* A reused overlay names its own parent; the spec's image then only
     * needs to exist, and the overlay itself does. */
    .image = disk ? disk : overlay,
    /* Never probed: a raw disk written through EBS direct may begin with
     * any bytes, a qcow2 header naming a backing file among them. */
    .image_format = disk ? emu_row_str_or_null (row, "disk_format") : NULL,
    .vcpus = type ? type->vcpus : 1,
    .memory_mib = type ? (uint64_t) type->memory_mib : 1024,
    .network = true,
    .accel = emu->accel,
    .cpu_model = emu->cpu_model,
    .work_dir = vm->dir,
    .console_log = console,
    .cancel = &vm->cancel,
    .persistent_disk = true,
  };
  const struct kiln_driver *qemu = kiln_driver_find ("qemu");
  if (qemu == NULL)
    return kiln_fail (err, "this kiln-emulator was built without the qemu driver");
  if (vm->inst == NULL && kiln_instance_create (qemu, &spec, &vm->inst, err) < 0)
    {
      vm->inst = NULL;
      return -1;
    }
  if (create_only)
    return 0;
  if (kiln_instance_start (vm->inst, BOOT_TIMEOUT_SECONDS, err) < 0)
    {
      kiln_instance_destroy (vm->inst);
      vm->inst = NULL;
      return -1;
    }
  return 0;
}

/* Stops the guest (cleanly when clean, else at once) and forgets it; the
 * overlay stays. */
static int
guest_down (struct vm *vm, bool clean, kiln_error **err)
{
  if (vm->inst == NULL)
    return 0;
  int r = 0;
  if (clean && vm->inst->started)
    r = kiln_instance_shutdown (vm->inst, SHUTDOWN_TIMEOUT_SECONDS, err);
  kiln_instance_destroy (vm->inst);
  vm->inst = NULL;
  return r;
}

/* First boot only: a user data script ("#!...") runs as root once the agent
 * answers, as cloud-init would run it; its output goes to the console log. */
static void
run_user_data (struct vm *vm)
{
  struct kiln_emu *emu = vm->host->emu;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *row = emu_db_query_one (emu, &err, "SELECT user_data FROM instances WHERE id = ?", vm->id);
  const char *b64 = row ? emu_row_str_or_null (row, "user_data") : NULL;
  if (b64 == NULL || *b64 == '\0')
    return;
  _cleanup_free_ unsigned char *script = NULL;
  size_t len = 0;
  if (kiln_base64_decode (b64, strlen (b64), &script, &len) < 0 || len < 2 || memcmp (script, "#!", 2) != 0)
    {
      kiln_log_info ("emulator: %s: user data is not a script (#!...): left for the guest", vm->id);
      return;
    }
  struct kiln_target *t = kiln_instance_target (vm->inst);
  char *const argv[] = {(char *) "/var/lib/kiln-emulator-user-data", NULL};
  struct kiln_target_command cmd = {.argv = argv, .timeout_seconds = USER_DATA_TIMEOUT_SECONDS};
  struct kiln_target_result res = {0};
  _cleanup_free_ char *console = NULL;
  console = kiln_xasprintf ("%s/console.log", vm->dir);
  _cleanup_fclose_ FILE *log = fopen (console, "a");
  if (kiln_target_put_data (t, script, len, argv[0], 0700, &err) < 0 || kiln_target_run (t, &cmd, &res, &err) < 0)
    {
      if (log)
        fprintf (log, "\n[kiln-emulator] user data script failed: %s\n", kiln_error_message (err));
      kiln_target_result_release (&res);
      return;
    }
  if (log)
    {
      fprintf (log, "\n[kiln-emulator] user data script: exit %d\n", res.exit_code);
      fwrite (res.out.data ? res.out.data : "", 1, res.out.len, log);
      fwrite (res.err.data ? res.err.data : "", 1, res.err.len, log);
    }
  kiln_target_result_release (&res);
}

/* ---- jobs ---- */

static void
set_state_reason (struct kiln_emu *emu, const char *id, const char *from, const char *to, const char *code,
                  const char *message)
{
  char now[24];
  now_text (emu, now);
  db_update (emu, "instance state",
             "UPDATE instances SET state = ?, state_reason_code = ?, state_reason_message = ?, state_changed = ?, "
             "agent_online = CASE WHEN ? = 'running' THEN agent_online ELSE 0 END WHERE id = ? AND state = ?",
             to, code, message, now, to, id, from);
}

static void
job_boot (struct vm *vm, bool first)
{
  struct kiln_emu *emu = vm->host->emu;
  _cleanup_error_ kiln_error *err = NULL;
  if (emu->instances == EMU_INSTANCES_QEMU && guest_up (vm, false, &err) < 0)
    {
      bool cancelled = err && err->code == KILN_ERR_CANCELLED;
      kiln_log_warn ("emulator: %s: boot failed: %s", vm->id, kiln_error_message (err));
      if (!cancelled)
        {
          _cleanup_free_ char *msg = NULL;
          msg = kiln_xasprintf ("Server.InternalError: the guest did not boot: %s", kiln_error_message (err));
          /* A first boot that fails ends the instance, as EC2 does; a
           * restart that fails leaves it stopped with the reason. */
          set_state_reason (emu, vm->id, "pending", first ? "terminated" : "stopped", "Server.InternalError", msg);
        }
      return;
    }
  db_update (emu, "instance running", "UPDATE instances SET state = 'running', state_reason_code = NULL, "
             "state_reason_message = NULL, agent_online = ? WHERE id = ? AND state = 'pending'",
             emu->instances == EMU_INSTANCES_QEMU ? "1" : "0", vm->id);
  if (first && emu->instances == EMU_INSTANCES_QEMU)
    run_user_data (vm);
}

static void
job_stop (struct vm *vm, bool force)
{
  struct kiln_emu *emu = vm->host->emu;
  _cleanup_error_ kiln_error *err = NULL;
  if (guest_down (vm, !force, &err) < 0)
    kiln_log_warn ("emulator: %s: stop: %s", vm->id, kiln_error_message (err));
  char now[24];
  now_text (emu, now);
  db_update (emu, "instance stopped", "UPDATE instances SET state = 'stopped', agent_online = 0, state_changed = ?, "
             "state_reason_code = 'Client.UserInitiatedShutdown', state_reason_message = "
             "'Client.UserInitiatedShutdown: User initiated shutdown' WHERE id = ? AND state = 'stopping'",
             now, vm->id);
}

static void
job_reboot (struct vm *vm)
{
  if (vm->inst == NULL)
    return;
  struct kiln_emu *emu = vm->host->emu;
  db_update (emu, "instance agent", "UPDATE instances SET agent_online = 0 WHERE id = ?", vm->id);
  enum kiln_reboot_outcome outcome;
  _cleanup_error_ kiln_error *err = NULL;
  if (kiln_target_reboot (kiln_instance_target (vm->inst), &outcome, &err) < 0)
    {
      kiln_log_warn ("emulator: %s: reboot: %s", vm->id, kiln_error_message (err));
      return;
    }
  db_update (emu, "instance agent", "UPDATE instances SET agent_online = 1 WHERE id = ? AND state = 'running'",
             vm->id);
}

/* Marks what can no longer happen on a terminated instance. */
static void
fail_leftovers (struct kiln_emu *emu, const char *instance_id)
{
  char now[24];
  now_text (emu, now);
  db_update (emu, "invocations", "UPDATE invocations SET status = 'Failed', status_details = 'Undeliverable', "
             "stderr = stderr || 'kiln-emulator: the instance was terminated before the command ran', ended = ? "
             "WHERE instance_id = ? AND status IN ('Pending', 'Delayed')", now, instance_id);
}

static void
job_terminate (struct vm *vm)
{
  struct kiln_emu *emu = vm->host->emu;
  _cleanup_error_ kiln_error *err = NULL;
  guest_down (vm, false, NULL);
  if (kiln_remove_tree (vm->dir, &err) < 0)
    kiln_log_warn ("emulator: %s: %s", vm->id, kiln_error_message (err));
  char now[24];
  now_text (emu, now);
  db_update (emu, "instance terminated", "UPDATE instances SET state = 'terminated', agent_online = 0, "
             "state_changed = ?, state_reason_code = COALESCE(state_reason_code, 'Client.UserInitiatedShutdown'), "
             "state_reason_message = COALESCE(state_reason_message, 'Client.UserInitiatedShutdown: User initiated "
             "shutdown') WHERE id = ? AND state = 'shutting-down'", now, vm->id);
  fail_leftovers (emu, vm->id);
  emu_disks_collect (emu);
}

static void
capture_failed (struct kiln_emu *emu, const char *image, const char *snapshot, const char *why)
{
  db_update (emu, "image failed", "UPDATE images SET state = 'failed', state_reason_code = 'Server.InternalError', "
             "state_reason_message = ? WHERE id = ? AND state = 'pending'", why, image);
  db_update (emu, "snapshot error", "UPDATE snapshots SET state = 'error', state_message = ? WHERE id = ?", why,
             snapshot);
}

static void
job_capture (struct vm *vm, const char *image, const char *snapshot, bool no_reboot)
{
  struct kiln_emu *emu = vm->host->emu;
  _cleanup_error_ kiln_error *err = NULL;
  if (emu->instances == EMU_INSTANCES_MOCK)
    {
      /* No guest, no disk: the image exists for the API; launching it in
       * qemu mode says why it cannot boot. */
      db_update (emu, "snapshot", "UPDATE snapshots SET state = 'completed', progress = '100%' WHERE id = ?", snapshot);
      db_update (emu, "image", "UPDATE images SET state = 'available' WHERE id = ? AND state = 'pending'", image);
      return;
    }
  _cleanup_json_ json_t *row = emu_db_query_one (emu, &err, "SELECT state FROM instances WHERE id = ?", vm->id);
  const char *state = row ? emu_row_str (row, "state") : "";
  bool running = strcmp (state, "running") == 0 && vm->inst != NULL;
  bool restart = false;
  if (running && !no_reboot)
    {
      db_update (emu, "instance agent", "UPDATE instances SET agent_online = 0 WHERE id = ?", vm->id);
      if (guest_down (vm, true, &err) < 0)
        {
          kiln_log_warn ("emulator: %s: shutdown before capture: %s", vm->id, kiln_error_message (err));
          kiln_error_free (err);
          err = NULL;
        }
      restart = true;
      running = false;
    }
  int r = 0;
  bool made_here = false;
  if (vm->inst == NULL)
    {
      r = guest_up (vm, true, &err);
      made_here = r == 0;
    }
  _cleanup_free_ char *disk = emu_disk_path (emu, snapshot, "qcow2");
  _cleanup_free_ char *disks_dir = NULL;
  disks_dir = kiln_xasprintf ("%s/disks", emu->data_dir);
  /* Hidden while written: emu_disks_collect leaves dot files alone. */
  _cleanup_free_ char *tmp = NULL;
  tmp = kiln_xasprintf ("%s/.%s.qcow2.part", disks_dir, snapshot);
  if (r == 0)
    r = kiln_mkdir_p (disks_dir, 0755, &err);
  if (r == 0)
    {
      struct kiln_capture_spec spec = {.output = tmp, .format = KILN_IMAGE_QCOW2, .live = running};
      r = kiln_instance_capture (vm->inst, &spec, &err);
    }
  if (r == 0 && rename (tmp, disk) < 0)
    r = kiln_fail_errno (&err, errno, "rename '%s'", tmp);
  if (r < 0)
    unlink (tmp);
  if (made_here)
    guest_down (vm, false, NULL);
  if (restart)
    {
      _cleanup_error_ kiln_error *boot_err = NULL;
      if (guest_up (vm, false, &boot_err) < 0)
        {
          _cleanup_free_ char *msg = NULL;
          msg = kiln_xasprintf ("Server.InternalError: the guest did not boot again after CreateImage: %s",
                                kiln_error_message (boot_err));
          db_update (emu, "instance stopped", "UPDATE instances SET state = 'stopped', state_reason_code = "
                     "'Server.InternalError', state_reason_message = ? WHERE id = ? AND state = 'running'", msg,
                     vm->id);
        }
      else
        db_update (emu, "instance agent", "UPDATE instances SET agent_online = 1 WHERE id = ? AND state = 'running'",
                   vm->id);
    }
  if (r < 0)
    {
      kiln_log_warn ("emulator: %s: capture for %s: %s", vm->id, image, kiln_error_message (err));
      capture_failed (emu, image, snapshot, kiln_error_message (err));
      return;
    }
  db_update (emu, "snapshot", "UPDATE snapshots SET state = 'completed', progress = '100%', disk = ?, "
             "disk_format = 'qcow2' WHERE id = ?", disk, snapshot);
  db_update (emu, "image", "UPDATE images SET state = 'available' WHERE id = ? AND state = 'pending'", image);
}

/* The AWS-RunShellScript parameters of a command, checked when it was sent. */
struct shell_params {
  char *script;
  char *cwd;
  int timeout;
};

static int
read_shell_params (json_t *params, struct shell_params *out)
{
  struct kiln_buf script = KILN_BUF_INIT;
  size_t i;
  json_t *line;
  json_array_foreach (json_object_get (params, "commands"), i, line)
    {
      kiln_buf_puts (&script, json_string_value (line) ? json_string_value (line) : "");
      kiln_buf_puts (&script, "\n");
    }
  out->script = script.data ? kiln_buf_steal (&script) : kiln_xstrdup ("");
  const char *cwd = json_string_value (json_array_get (json_object_get (params, "workingDirectory"), 0));
  out->cwd = cwd && *cwd ? kiln_xstrdup (cwd) : NULL;
  const char *t = json_string_value (json_array_get (json_object_get (params, "executionTimeout"), 0));
  out->timeout = t ? atoi (t) : 3600;
  if (out->timeout <= 0 || out->timeout > MAX_EXECUTION_TIMEOUT)
    out->timeout = 3600;
  return 0;
}

/* The S3 key under which the agent puts a plugin's output, as
 * BuildS3Path (Go's path.Join) makes it:
 * "[<prefix>/]<command>/<instance>/awsrunShellScript/0.awsrunShellScript",
 * repeated and trailing slashes of the prefix dropped. */
static char *
output_key_base (const char *prefix, const char *command, const char *instance)
{
  struct kiln_buf b = KILN_BUF_INIT;
  size_t len = strlen (prefix);
  while (len > 1 && prefix[len - 1] == '/')
    len--;
  for (size_t i = 0; i < len; i++)
    if (prefix[i] != '/' || i == 0 || prefix[i - 1] != '/')
      kiln_buf_append (&b, prefix + i, 1);
  if (b.len > 0 && b.data[b.len - 1] != '/')
    kiln_buf_puts (&b, "/");
  kiln_buf_printf (&b, "%s/%s/awsrunShellScript/0.awsrunShellScript", command, instance);
  return kiln_buf_steal (&b);
}

/* Writes an invocation's whole stdout and stderr to the bucket its command
 * named (if any), as the SSM agent does before it reports the end: each
 * stream as an object <key base>/stdout and /stderr, only when not empty.
 * Records where they went, or why they could not go, in
 * invocation_outputs.  A bucket that is missing, another account's or in
 * another region fails the upload only: the agent logs it and the
 * invocation keeps its status; here the log says it and the output URLs
 * stay empty (ssm_commands.c) rather than name objects that are not
 * there. */
static void
upload_output (struct kiln_emu *emu, const char *command, const char *instance, const char *out,
               const char *err_text)
{
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *cmd = emu_db_query_one (emu, &err, "SELECT account, region, output_bucket, output_prefix "
                                                 "FROM commands WHERE id = ?", command);
  if (cmd == NULL || emu_row_str_or_null (cmd, "output_bucket") == NULL)
    {
      if (err)
        db_warn ("command output", err);
      return;
    }
  const char *bucket = emu_row_str (cmd, "output_bucket");
  _cleanup_free_ char *base = output_key_base (emu_row_str (cmd, "output_prefix"), command, instance);
  const char *why = NULL;
  _cleanup_free_ char *failure = NULL;
  const char *streams[2][2] = {{"stdout", out}, {"stderr", err_text}};
  for (size_t i = 0; i < 2 && failure == NULL; i++)
    {
      if (*streams[i][1] == '\0')
        continue;
      _cleanup_free_ char *key = NULL;
      key = kiln_xasprintf ("%s/%s", base, streams[i][0]);
      int r = s3_object_store_data (emu, emu_row_str (cmd, "account"), emu_row_str (cmd, "region"), bucket, key,
                                    streams[i][1], strlen (streams[i][1]), "binary/octet-stream", emu_now (emu),
                                    &why, &err);
      if (r < 0)
        failure = kiln_xasprintf ("write s3://%s/%s: %s", bucket, key, kiln_error_message (err));
      if (r > 0)
        failure = kiln_xasprintf ("write s3://%s/%s: the bucket %s %s", bucket, key, bucket, why);
    }
  if (failure)
    kiln_log_warn ("emulator: command %s on %s: the output was not uploaded: %s", command, instance, failure);
  db_update (emu, "command output", "INSERT OR REPLACE INTO invocation_outputs (command_id, instance_id, bucket, "
             "key_base, error) VALUES (?, ?, ?, ?, ?)", command, instance, bucket, base, failure);
}

/* Records an invocation's end.  The output goes to S3 first when the
 * command asked for it (not for an invocation the agent never got:
 * Undeliverable), so a client that sees the final status finds it there. */
static void
finish_invocation (struct kiln_emu *emu, const char *command, const char *instance, const char *status,
                   const char *details, int code, const char *out, const char *err_text)
{
  char now[24], code_s[16];
  if (strcmp (details, "Undeliverable") != 0)
    upload_output (emu, command, instance, out, err_text);
  now_text (emu, now);
  snprintf (code_s, sizeof code_s, "%d", code);
  db_update (emu, "invocation", "UPDATE invocations SET status = ?, status_details = ?, response_code = ?, "
             "stdout = ?, stderr = ?, ended = ? WHERE command_id = ? AND instance_id = ?", status, details, code_s,
             out, err_text, now, command, instance);
}

static void
job_command (struct vm *vm, const char *command)
{
  struct kiln_emu *emu = vm->host->emu;
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *row = emu_db_query_one (
      emu, &err, "SELECT v.status, c.parameters, i.state, i.agent_online FROM invocations v "
      "JOIN commands c ON c.id = v.command_id JOIN instances i ON i.id = v.instance_id "
      "WHERE v.command_id = ? AND v.instance_id = ?", command, vm->id);
  if (row == NULL)
    {
      if (err)
        db_warn ("command", err);
      return;
    }
  if (strcmp (emu_row_str (row, "status"), "Pending") != 0)
    return; /* cancelled while queued */
  if (emu->instances == EMU_INSTANCES_MOCK)
    {
      finish_invocation (emu, command, vm->id, "Failed", "Undeliverable", -1, "",
                         "kiln-emulator runs with --instances mock: its instances have no guest to run commands in");
      return;
    }
  if (vm->inst == NULL || strcmp (emu_row_str (row, "state"), "running") != 0)
    {
      finish_invocation (emu, command, vm->id, "Failed", "Undeliverable", -1, "",
                         "kiln-emulator: the instance is not running");
      return;
    }
  json_error_t jerr;
  _cleanup_json_ json_t *params = json_loads (emu_row_str (row, "parameters"), 0, &jerr);
  struct shell_params sp = {0};
  read_shell_params (params, &sp);

  char now[24];
  now_text (emu, now);
  pthread_mutex_lock (&vm->lock);
  vm->running_command = kiln_xstrdup (command);
  pthread_mutex_unlock (&vm->lock);
  db_update (emu, "invocation", "UPDATE invocations SET status = 'InProgress', status_details = 'InProgress', "
             "started = ? WHERE command_id = ? AND instance_id = ? AND status = 'Pending'", now, command, vm->id);

  char *const argv[] = {(char *) "/bin/sh", (char *) "-c", sp.script, NULL};
  struct kiln_target_command cmd = {.argv = argv, .cwd = sp.cwd, .timeout_seconds = sp.timeout};
  struct kiln_target_result res = {0};
  int r = kiln_target_run (kiln_instance_target (vm->inst), &cmd, &res, &err);

  pthread_mutex_lock (&vm->lock);
  free (vm->running_command);
  vm->running_command = NULL;
  bool cancelled = vm->cancel != 0;
  vm->cancel = 0;
  pthread_mutex_unlock (&vm->lock);

  const char *out = res.out.data ? res.out.data : "";
  struct kiln_buf err_text = KILN_BUF_INIT;
  kiln_buf_puts (&err_text, res.err.data ? res.err.data : "");
  if (vm->quit)
    finish_invocation (emu, command, vm->id, "Failed", "Failed", -1, out,
                       "kiln-emulator stopped while the command ran");
  else if (cancelled || (r < 0 && err && err->code == KILN_ERR_CANCELLED))
    finish_invocation (emu, command, vm->id, "Cancelled", "Cancelled", -1, out, kiln_buf_str (&err_text));
  else if (r < 0)
    {
      kiln_buf_printf (&err_text, "kiln-emulator: the command could not run: %s", kiln_error_message (err));
      finish_invocation (emu, command, vm->id, "Failed", "Failed", -1, out, kiln_buf_str (&err_text));
    }
  else if (res.timed_out)
    {
      kiln_buf_printf (&err_text, "%sfailed to run commands: the execution timeout of %d seconds passed",
                       err_text.len && err_text.data[err_text.len - 1] != '\n' ? "\n" : "", sp.timeout);
      finish_invocation (emu, command, vm->id, "TimedOut", "ExecutionTimedOut", -1, out, kiln_buf_str (&err_text));
    }
  else if (res.exit_code != 0)
    {
      /* The SSM agent adds this line to a failed script's stderr. */
      kiln_buf_printf (&err_text, "%sfailed to run commands: exit status %d",
                       err_text.len && err_text.data[err_text.len - 1] != '\n' ? "\n" : "", res.exit_code);
      finish_invocation (emu, command, vm->id, "Failed", "Failed", res.exit_code, out, kiln_buf_str (&err_text));
    }
  else
    finish_invocation (emu, command, vm->id, "Success", "Success", 0, out, kiln_buf_str (&err_text));
  kiln_buf_release (&err_text);
  kiln_target_result_release (&res);
  free (sp.script);
  free (sp.cwd);
}

/* Fails what the dropped jobs (detached from a queue) were to do: their
 * commands and captures.  Called without any vmhost lock held. */
static void
fail_dropped (struct kiln_emu *emu, const char *instance_id, struct job *j)
{
  while (j)
    {
      struct job *next = j->next;
      if (j->kind == JOB_CAPTURE)
        capture_failed (emu, j->a, j->b, "Server.InternalError: the instance was terminated during CreateImage");
      else if (j->kind == JOB_COMMAND)
        fail_leftovers (emu, instance_id);
      job_free (j);
      j = next;
    }
}

static void
vm_free (struct vm *vm)
{
  struct job *j = vm->head;
  while (j)
    {
      struct job *next = j->next;
      job_free (j);
      j = next;
    }
  free (vm->running_command);
  free (vm->id);
  free (vm->dir);
  pthread_mutex_destroy (&vm->lock);
  pthread_cond_destroy (&vm->cond);
  free (vm);
}

/* With its queue empty and no guest (mock mode, stopped, terminated), a
 * worker leaves: threads exist only for instances that have work or a
 * guest.  Takes the host lock first (the order queue() uses) so no job can
 * slip in between the check and the exit.  Returns true when the vm is gone. */
static bool
worker_leaves (struct vm *vm)
{
  struct emu_vmhost *h = vm->host;
  pthread_mutex_lock (&h->lock);
  if (h->shutting_down)
    {
      /* emu_vmhost_shutdown owns the list now and joins this thread. */
      pthread_mutex_unlock (&h->lock);
      return false;
    }
  pthread_mutex_lock (&vm->lock);
  bool leave = vm->head == NULL && vm->inst == NULL;
  if (leave)
    {
      for (struct vm **p = &h->vms; *p; p = &(*p)->next)
        if (*p == vm)
          {
            *p = vm->next;
            break;
          }
    }
  pthread_mutex_unlock (&vm->lock);
  pthread_mutex_unlock (&h->lock);
  if (leave)
    {
      pthread_detach (vm->thread);
      vm_free (vm);
    }
  return leave;
}

static void *
worker (void *opaque)
{
  struct vm *vm = opaque;
  for (;;)
    {
      pthread_mutex_lock (&vm->lock);
      while (vm->head == NULL && !vm->quit)
        pthread_cond_wait (&vm->cond, &vm->lock);
      if (vm->quit)
        {
          pthread_mutex_unlock (&vm->lock);
          break;
        }
      struct job *j = vm->head;
      vm->head = j->next;
      if (vm->head == NULL)
        vm->tail = NULL;
      if (j->kind != JOB_COMMAND)
        vm->cancel = 0;
      pthread_mutex_unlock (&vm->lock);

      switch (j->kind)
        {
        case JOB_LAUNCH: job_boot (vm, true); break;
        case JOB_START: job_boot (vm, false); break;
        case JOB_STOP: job_stop (vm, j->flag); break;
        case JOB_REBOOT: job_reboot (vm); break;
        case JOB_TERMINATE: job_terminate (vm); break;
        case JOB_CAPTURE: job_capture (vm, j->a, j->b, j->flag); break;
        case JOB_COMMAND: job_command (vm, j->a); break;
        }
      job_free (j);
      pthread_mutex_lock (&vm->lock);
      bool idle = vm->head == NULL && vm->inst == NULL;
      pthread_mutex_unlock (&vm->lock);
      pthread_mutex_lock (&vm->host->lock);
      vm->host->pending--;
      pthread_cond_broadcast (&vm->host->idle);
      pthread_mutex_unlock (&vm->host->lock);
      if (idle && worker_leaves (vm))
        return NULL;
    }
  /* Emulator shutdown: the guest stops, its disk stays for the restart. */
  guest_down (vm, false, NULL);
  return NULL;
}

/* The vm of an instance, or NULL.  Call with the host lock held. */
static struct vm *
vm_find (struct emu_vmhost *h, const char *id)
{
  for (struct vm *vm = h->vms; vm; vm = vm->next)
    if (strcmp (vm->id, id) == 0)
      return vm;
  return NULL;
}

static void
queue (struct kiln_emu *emu, const char *id, enum job_kind kind, const char *a, const char *b, bool flag)
{
  struct emu_vmhost *h = emu->vmhost;
  struct job *j = kiln_xcalloc (1, sizeof *j);
  j->kind = kind;
  j->a = a ? kiln_xstrdup (a) : NULL;
  j->b = b ? kiln_xstrdup (b) : NULL;
  j->flag = flag;
  struct job *dropped = NULL;

  pthread_mutex_lock (&h->lock);
  if (h->shutting_down)
    {
      pthread_mutex_unlock (&h->lock);
      job_free (j);
      return;
    }
  struct vm *vm = vm_find (h, id);
  if (vm == NULL)
    {
      vm = kiln_xcalloc (1, sizeof *vm);
      vm->host = h;
      vm->id = kiln_xstrdup (id);
      vm->dir = instance_dir (emu, id);
      pthread_mutex_init (&vm->lock, NULL);
      pthread_cond_init (&vm->cond, NULL);
      if (pthread_create (&vm->thread, NULL, worker, vm) != 0)
        abort ();
      vm->next = h->vms;
      h->vms = vm;
    }
  pthread_mutex_lock (&vm->lock);
  if (kind == JOB_TERMINATE)
    {
      /* Whatever the worker waits on (a boot, a command) gives up, and
       * nothing queued behind will run. */
      vm->cancel = 1;
      dropped = vm->head;
      vm->head = vm->tail = NULL;
      for (struct job *d = dropped; d; d = d->next)
        h->pending--;
    }
  h->pending++;
  if (vm->tail)
    vm->tail->next = j;
  else
    vm->head = j;
  vm->tail = j;
  pthread_cond_broadcast (&vm->cond);
  pthread_mutex_unlock (&vm->lock);
  pthread_mutex_unlock (&h->lock);
  fail_dropped (emu, id, dropped);
}

void
emu_vmhost_launch (struct kiln_emu *emu, const char *id)
{
  queue (emu, id, JOB_LAUNCH, NULL, NULL, false);
}

void
emu_vmhost_start (struct kiln_emu *emu, const char *id)
{
  queue (emu, id, JOB_START, NULL, NULL, false);
}

void
emu_vmhost_stop (struct kiln_emu *emu, const char *id, bool force)
{
  queue (emu, id, JOB_STOP, NULL, NULL, force);
}

void
emu_vmhost_reboot (struct kiln_emu *emu, const char *id)
{
  queue (emu, id, JOB_REBOOT, NULL, NULL, false);
}

void
emu_vmhost_terminate (struct kiln_emu *emu, const char *id)
{
  queue (emu, id, JOB_TERMINATE, NULL, NULL, false);
}

void
emu_vmhost_capture (struct kiln_emu *emu, const char *instance_id, const char *image_id, const char *snapshot_id,
                    bool no_reboot)
{
  queue (emu, instance_id, JOB_CAPTURE, image_id, snapshot_id, no_reboot);
}

void
emu_vmhost_run_command (struct kiln_emu *emu, const char *command_id, const char *instance_id)
{
  queue (emu, instance_id, JOB_COMMAND, command_id, NULL, false);
}

void
emu_vmhost_cancel_command (struct kiln_emu *emu, const char *command_id, const char *instance_id)
{
  struct emu_vmhost *h = emu->vmhost;
  pthread_mutex_lock (&h->lock);
  struct vm *vm = vm_find (h, instance_id);
  if (vm)
    {
      pthread_mutex_lock (&vm->lock);
      if (vm->running_command && strcmp (vm->running_command, command_id) == 0)
        vm->cancel = 1;
      pthread_mutex_unlock (&vm->lock);
    }
  pthread_mutex_unlock (&h->lock);
}

char *
emu_vmhost_console (struct kiln_emu *emu, const char *instance_id, size_t max_bytes)
{
  _cleanup_free_ char *dir = instance_dir (emu, instance_id);
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("%s/console.log", dir);
  _cleanup_fclose_ FILE *f = fopen (path, "rb");
  if (f == NULL)
    return NULL;
  if (fseeko (f, 0, SEEK_END) < 0)
    return NULL;
  off_t size = ftello (f);
  off_t from = size > (off_t) max_bytes ? size - (off_t) max_bytes : 0;
  if (fseeko (f, from, SEEK_SET) < 0)
    return NULL;
  char *buf = kiln_xcalloc ((size_t) (size - from) + 1, 1);
  size_t got = fread (buf, 1, (size_t) (size - from), f);
  buf[got] = '\0';
  return buf;
}

void
emu_disks_collect (struct kiln_emu *emu)
{
  _cleanup_free_ char *dir_path = NULL;
  dir_path = kiln_xasprintf ("%s/disks", emu->data_dir);
  DIR *dir = opendir (dir_path);
  if (dir == NULL)
    return;
  _cleanup_error_ kiln_error *err = NULL;
  /* In a write transaction: `import-image` (another process) renames its
   * disk into place inside its own, so a disk seen here without its row is
   * truly unused, not one about to be committed. */
  if (emu_db_begin (emu, &err) < 0)
    {
      db_warn ("collect disks", err);
      closedir (dir);
      return;
    }
  /* Disks in use: every snapshot's, and every live instance's parent. */
  _cleanup_json_ json_t *used = emu_db_query0 (emu, &err,
                                               "SELECT disk FROM snapshots WHERE disk IS NOT NULL UNION "
                                               "SELECT s.disk FROM instances i JOIN snapshots s ON s.id = i.disk_snapshot "
                                               "WHERE i.state <> 'terminated' AND s.disk IS NOT NULL");
  if (used == NULL)
    {
      db_warn ("collect disks", err);
      emu_db_end (emu, false, NULL);
      closedir (dir);
      return;
    }
  /* Live instances whose snapshot row is gone still hold their disk by name. */
  _cleanup_json_ json_t *held = emu_db_query0 (emu, &err, "SELECT disk_snapshot FROM instances WHERE state <> "
                                               "'terminated' AND disk_snapshot IS NOT NULL");
  struct dirent *e;
  while ((e = readdir (dir)))
    {
      if (e->d_name[0] == '.')
        continue;
      _cleanup_free_ char *full = NULL;
      full = kiln_xasprintf ("%s/%s", dir_path, e->d_name);
      bool in_use = false;
      size_t i;
      json_t *row;
      json_array_foreach (used, i, row)
        if (strcmp (emu_row_str (row, "disk"), full) == 0)
          in_use = true;
      json_array_foreach (held, i, row)
        {
          const char *snap = emu_row_str (row, "disk_snapshot");
          size_t n = strlen (snap);
          if (strncmp (e->d_name, snap, n) == 0 && e->d_name[n] == '.')
            in_use = true;
        }
      if (!in_use && unlink (full) == 0)
        kiln_log_debug ("emulator: removed unused disk %s", full);
    }
  emu_db_end (emu, false, NULL);
  closedir (dir);
}

void
emu_vmhost_wait_idle (struct kiln_emu *emu)
{
  struct emu_vmhost *h = emu->vmhost;
  pthread_mutex_lock (&h->lock);
  while (h->pending > 0 && !h->shutting_down)
    pthread_cond_wait (&h->idle, &h->lock);
  pthread_mutex_unlock (&h->lock);
}

/* ---- start and stop ---- */

static void
recover (struct kiln_emu *emu)
{
  _cleanup_error_ kiln_error *err = NULL;
  char now[24];
  now_text (emu, now);
  db_update (emu, "recover", "UPDATE instances SET state = 'stopped', agent_online = 0, state_changed = ? "
             "WHERE state = 'stopping'", now);
  db_update (emu, "recover", "UPDATE images SET state = 'failed', state_reason_code = 'Server.InternalError', "
             "state_reason_message = 'Server.InternalError: kiln-emulator restarted during CreateImage' "
             "WHERE state = 'pending' AND source_instance IS NOT NULL");
  db_update (emu, "recover", "UPDATE snapshots SET state = 'error', state_message = 'kiln-emulator restarted "
             "while the snapshot was taken' WHERE state = 'pending' AND id IN (SELECT root_snapshot FROM images "
             "WHERE state = 'failed' AND source_instance IS NOT NULL AND state_reason_message LIKE ?)",
             "%restarted during CreateImage");
  db_update (emu, "recover", "UPDATE invocations SET status = 'Failed', status_details = 'Failed', ended = ?, "
             "stderr = stderr || 'kiln-emulator restarted while the command ran' WHERE status = 'InProgress'", now);
  db_update (emu, "recover", "UPDATE instances SET agent_online = ? WHERE agent_online <> 0", "0");

  _cleanup_json_ json_t *rows = emu_db_query0 (emu, &err, "SELECT id, state FROM instances WHERE state IN "
                                               "('pending', 'running', 'shutting-down') ORDER BY seq");
  if (rows == NULL)
    {
      db_warn ("recover", err);
      return;
    }
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    {
      const char *id = emu_row_str (row, "id");
      if (strcmp (emu_row_str (row, "state"), "shutting-down") == 0)
        emu_vmhost_terminate (emu, id);
      else
        {
          db_update (emu, "recover", "UPDATE instances SET state = 'pending' WHERE id = ?", id);
          emu_vmhost_start (emu, id);
        }
    }
  /* Commands still waiting for their turn get it again. */
  _cleanup_json_ json_t *pending = emu_db_query0 (emu, &err, "SELECT command_id, instance_id FROM invocations "
                                                  "WHERE status = 'Pending' ORDER BY seq");
  json_array_foreach (pending, i, row)
    emu_vmhost_run_command (emu, emu_row_str (row, "command_id"), emu_row_str (row, "instance_id"));
}

int
emu_vmhost_init (struct kiln_emu *emu, kiln_error **err)
{
  struct emu_vmhost *h = kiln_xcalloc (1, sizeof *h);
  h->emu = emu;
  pthread_mutex_init (&h->lock, NULL);
  pthread_cond_init (&h->idle, NULL);
  emu->vmhost = h;
  _cleanup_free_ char *dir = NULL;
  dir = kiln_xasprintf ("%s/instances", emu->data_dir);
  if (kiln_mkdir_p (dir, 0755, err) < 0)
    return -1;
  recover (emu);
  /* VM import/export tasks have their own worker (ec2_import.c); it starts
   * and stops with the VM host so every user of the host gets it. */
  return emu_tasks_init (emu, err);
}

void
emu_vmhost_shutdown (struct kiln_emu *emu)
{
  emu_tasks_shutdown (emu);
  struct emu_vmhost *h = emu->vmhost;
  if (h == NULL)
    return;
  pthread_mutex_lock (&h->lock);
  h->shutting_down = true;
  pthread_cond_broadcast (&h->idle);
  struct vm *vms = h->vms;
  h->vms = NULL;
  pthread_mutex_unlock (&h->lock);
  for (struct vm *vm = vms; vm; vm = vm->next)
    {
      pthread_mutex_lock (&vm->lock);
      vm->quit = true;
      vm->cancel = 1;
      pthread_cond_broadcast (&vm->cond);
      pthread_mutex_unlock (&vm->lock);
    }
  while (vms)
    {
      struct vm *vm = vms;
      vms = vm->next;
      pthread_join (vm->thread, NULL);
      vm_free (vm);
    }
  pthread_mutex_destroy (&h->lock);
  pthread_cond_destroy (&h->idle);
  free (h);
  emu->vmhost = NULL;
}
