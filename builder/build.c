/* build.c - the build pipeline (see build.h).
 *
 * Everything a build starts lives in one run directory (common/rundir.h):
 * instance work directories (overlays, sockets, QEMU's pid file) and the
 * captured disk.  Whatever the ending, instances are destroyed and the run
 * directory removed before returning; a kiln killed outright leaves the run
 * directory unlocked, and the next kiln command reaps it. */
#include "build.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "digest.h"
#include "disk_image.h"
#include "executor.h"
#include "fsutil.h"
#include "log.h"
#include "output_convert.h"
#include "process.h"
#include "rundir.h"
#include "xalloc.h"
#include "clock.h"

#define DEFAULT_BOOT_TIMEOUT 600
#define SHUTDOWN_TIMEOUT 300

struct build {
  const struct kiln_plan *plan;
  const struct kiln_build_opts *opts;
  struct kiln_rundir *rd;
  char *logs_dir;
  json_t *stages;            /* [{name, status, seconds, instance?, accelerator?}] */
  json_t *accelerator;       /* what the build instance ran under, or NULL (cloud, fake) */
  struct kiln_instance *inst; /* the instance alive now, if any */
  bool keep;                 /* keep the run directory (keep_on_failure) */
  char build_date[40];       /* {{ imagebuilder:buildDate }} */
  char build_version[24];    /* {{ imagebuilder:buildVersion }} */
  /* Cloud drivers (or import_driver): the regions the image goes to, names
   * expanded (owned); home_region is the first's. */
  struct kiln_image_distribution *dist;
  size_t n_dist;
  char *home_region;
};

/* The driver whose cloud holds the build's images: the build driver's own,
 * or the one a local build imports into; NULL when none. */
static const struct kiln_driver *
cloud_driver (const struct build *b)
{
  return b->opts->driver->cloud_images ? b->opts->driver : b->opts->import_driver;
}

static void say (struct build *b, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static void
say (struct build *b, const char *fmt, ...)
{
  if (b->opts->progress == NULL)
    return;
  va_list ap;
  va_start (ap, fmt);
  vfprintf (b->opts->progress, fmt, ap);
  va_end (ap);
  fputc ('\n', b->opts->progress);
  fflush (b->opts->progress);
}

/* Now in UTC: ISO 8601 for manifests, or compact for folder names. */
static void
utc_stamp (char *out, size_t n, bool compact)
{
  time_t t = time (NULL);
  struct tm tm;
  gmtime_r (&t, &tm);
  if (compact)
    strftime (out, n, "%Y%m%dT%H%M%SZ", &tm);
  else
    strftime (out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Now as Image Builder's buildDate: an AMI name may hold no ':'. */
static void
image_builder_date (char *out, size_t n)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r (&ts.tv_sec, &tm);
  char head[32];
  strftime (head, sizeof head, "%Y-%m-%dT%H-%M-%S", &tm);
  snprintf (out, n, "%s.%03dZ", head, (int) (ts.tv_nsec / 1000000L % 1000));
}

/* The build version: one more than the highest a manifest of the same
 * recipe name and version in the output directory records. */
static long
next_build_version (const char *output_dir, const struct kiln_plan *p)
{
  long highest = 0;
  DIR *d = opendir (output_dir);
  if (d == NULL)
    return 1;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      size_t len = strlen (de->d_name);
      const char *suffix = ".manifest.json";
      if (de->d_name[0] == '.' || len <= strlen (suffix) || strcmp (de->d_name + len - strlen (suffix), suffix) != 0)
        continue;
      _cleanup_free_ char *path = NULL;
      path = kiln_xasprintf ("%s/%s", output_dir, de->d_name);
      _cleanup_json_ json_t *m = json_load_file (path, 0, NULL);
      const char *name = json_string_value (json_object_get (m, "name"));
      const char *version = json_string_value (json_object_get (m, "version"));
      json_int_t bv = json_integer_value (json_object_get (m, "buildVersion"));
      if (name && version && strcmp (name, p->name) == 0 && strcmp (version, p->version) == 0 && bv > highest)
        highest = (long) bv;
    }
  closedir (d);
  return highest + 1;
}

/* The distribution target for region (NULL region: the first one named
 * NULL), or NULL. */
static const struct kiln_image_distribution *
distribution_for (struct build *b, const char *region)
{
  const struct kiln_distribution_config *dc = b->opts->distribution;
  for (size_t i = 0; dc && i < dc->n_targets; i++)
    if ((region == NULL && dc->targets[i].region == NULL)
        || (region && dc->targets[i].region && strcmp (region, dc->targets[i].region) == 0))
      return &dc->targets[i];
  return NULL;
}

/* The name a distribution target gives the image (its template expanded),
 * or the default NAME-VERSION-STAMP.  malloc'd. */
static int
image_name_for (struct build *b, const struct kiln_image_distribution *t, char **out, kiln_error **err)
{
  if (t && t->name)
    {
      if (kiln_ami_name_expand (t->name, b->build_date, b->build_version, out, err) < 0)
        return kiln_error_prefix (err, "%s: amiDistributionConfiguration.name", b->opts->distribution->path);
      return 0;
    }
  char stamp[32];
  utc_stamp (stamp, sizeof stamp, true);
  *out = kiln_xasprintf ("%s-%s-%s", b->plan->name, b->plan->version, stamp);
  return 0;
}

static void
dist_release (struct build *b)
{
  for (size_t i = 0; i < b->n_dist; i++)
    {
      free ((char *) b->dist[i].name);
      kiln_image_distribution_release (&b->dist[i]);
    }
  free (b->dist);
  b->dist = NULL;
  b->n_dist = 0;
}

static bool
cancelled (struct build *b)
{
  return b->opts->cancel && *b->opts->cancel;
}

static int
check_cancel (struct build *b, kiln_error **err)
{
  if (cancelled (b))
    return kiln_error_set (err, KILN_ERR_CANCELLED, 0, "interrupted");
  return 0;
}

static void
stage_done (struct build *b, const char *name, const char *status, double t0, json_t *extra)
{
  json_t *st = json_pack ("{s:s, s:s, s:f}", "name", name, "status", status, "seconds", kiln_monotonic_seconds () - t0);
  if (extra)
    {
      json_object_update (st, extra);
      json_decref (extra);
    }
  json_array_append_new (b->stages, st);
  say (b, "[%s] %s (%.1f s)", name, status, kiln_monotonic_seconds () - t0);
}

/* The recipe's userDataOverride (base64, checked by the plan) runs on the
 * build instance before the components, as user data does on EC2. */
static int
run_user_data (struct build *b, kiln_error **err)
{
  struct kiln_target *t = kiln_instance_target (b->inst);
  unsigned char *script = NULL;
  size_t len = 0;
  if (kiln_base64_decode (b->plan->user_data, strlen (b->plan->user_data), &script, &len) < 0)
    return kiln_fail_invalid (err, "userDataOverride is not base64");
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("%s/user-data", t->scratch_dir ? t->scratch_dir : "/var/tmp");
  int r = kiln_target_put_data (t, script, len, path, 0700, err);
  free (script);
  if (r < 0)
    return kiln_error_prefix (err, "userDataOverride");
  say (b, "[build] running userDataOverride");
  /* A script without "#!" runs under sh, as cloud-init would run it. */
  char *argv[] = {(char *) "sh", (char *) "-c", (char *) "head -c 2 \"$1\" | grep -q '#!' && exec \"$1\"; exec sh \"$1\"",
                  (char *) "user-data", path, NULL};
  struct kiln_buf out = KILN_BUF_INIT;
  r = kiln_target_run_checked (t, argv, 3600, &out, err);
  kiln_buf_release (&out);
  if (r < 0)
    return kiln_error_prefix (err, "userDataOverride");
  return 0;
}

/* Boots an instance from image and waits for its agent. */
static int
boot (struct build *b, const char *label, const char *image, const char *format, uint64_t disk_size,
      kiln_error **err)
{
  _cleanup_free_ char *work = NULL;
  _cleanup_free_ char *console = NULL;
  work = kiln_xasprintf ("%s/%s", b->rd->path, label);
  console = kiln_xasprintf ("%s/%s-console.log", b->logs_dir, label);
  if (mkdir (work, 0700) < 0)
    return kiln_fail_errno (err, errno, "create '%s'", work);
  struct kiln_instance_spec spec = {
    .name = label,
    .image = image,
    .image_format = format,
    .vcpus = b->opts->vcpus,
    .memory_mib = b->opts->memory_mib,
    .disk_size_bytes = disk_size,
    .network = b->opts->network,
    .full_shutdown = b->opts->full_shutdown,
    .accel = b->opts->accel,
    .cpu_model = b->opts->cpu_model,
    .boot_stall_seconds = b->opts->boot_stall_seconds,
    /* userDataOverride is the build instance's, as in Image Builder. */
    .user_data = strcmp (label, "build") == 0 ? b->plan->user_data : NULL,
    .work_dir = work,
    .console_log = console,
    .cancel = b->opts->cancel,
    .detach = b->opts->keep_on_failure && strcmp (label, "build") == 0,
    .cloud = b->opts->cloud,
  };
  say (b, "[%s] creating a %s instance from %s", label, b->opts->driver->name, image);
  if (kiln_instance_create (b->opts->driver, &spec, &b->inst, err) < 0)
    return -1;
  say (b, "[%s] booting and waiting for the guest agent", label);
  int timeout = b->opts->boot_timeout_seconds > 0 ? b->opts->boot_timeout_seconds : DEFAULT_BOOT_TIMEOUT;
  if (kiln_instance_start (b->inst, timeout, err) < 0)
    return -1;
  say (b, "[%s] instance %s is up", label, b->inst->id ? b->inst->id : "");
  /* Cloud drivers hand user data to the instance at launch (cloud-init or
   * the like runs it); on local guests kiln runs it itself. */
  if (b->plan->user_data && strcmp (label, "build") == 0 && !b->opts->driver->cloud_images
      && run_user_data (b, err) < 0)
    return -1;
  if (b->plan->working_directory)
    {
      /* The recipe's workingDirectory is where the executor's files go. */
      struct kiln_target *t = kiln_instance_target (b->inst);
      char *argv[] = {(char *) "mkdir", (char *) "-p", b->plan->working_directory, NULL};
      if (kiln_target_run_checked (t, argv, 60, NULL, err) < 0)
        return kiln_error_prefix (err, "workingDirectory '%s'", b->plan->working_directory);
      free (t->scratch_dir);
      t->scratch_dir = kiln_xstrdup (b->plan->working_directory);
    }
  return 0;
}

/* What a stage records of its instance: its id, for local hypervisors the
 * accelerator, CPU model and why (the build instance's also goes to the top
 * of the manifest), and why its boot was started again if it was. */
static json_t *
instance_record (struct build *b, const char *label)
{
  json_t *rec = json_pack ("{s:s}", "instance", b->inst->id ? b->inst->id : "");
  if (b->inst->accel)
    {
      json_t *accel = json_pack ("{s:s, s:s?, s:s?}", "name", b->inst->accel, "cpu", b->inst->cpu_model, "reason",
                                 b->inst->accel_reason);
      if (strcmp (label, "build") == 0 && b->accelerator == NULL)
        b->accelerator = json_deep_copy (accel);
      json_object_set_new (rec, "accelerator", accel);
    }
  if (b->inst->boot_note)
    json_object_set_new (rec, "bootRestarted", json_string (b->inst->boot_note));
  return rec;
}

static void
drop_instance (struct build *b)
{
  kiln_instance_destroy (b->inst);
  b->inst = NULL;
}

/* Runs the given phases of every component on the live instance. */
static int
run_components (struct build *b, const char *stage, const char *phases, kiln_error **err)
{
  const struct kiln_plan *p = b->plan;
  struct kiln_component **docs = calloc (p->n_components, sizeof *docs);
  json_t **params = calloc (p->n_components, sizeof *params);
  size_t n = 0;
  for (size_t i = 0; i < p->n_components; i++)
    {
      /* Only components that have one of these phases take part. */
      bool has = false;
      for (size_t j = 0; j < p->components[i].doc->n_phases; j++)
        has |= strstr (phases, p->components[i].doc->phases[j].name) != NULL;
      if (!has)
        continue;
      docs[n] = p->components[i].doc;
      params[n] = p->components[i].parameters;
      n++;
    }
  int r = 0;
  if (n > 0)
    {
      _cleanup_free_ char *log_dir = NULL;
      log_dir = kiln_xasprintf ("%s/%s", b->logs_dir, stage);
      struct kiln_executor_opts eo = {
        .target = kiln_instance_target (b->inst),
        .phases = phases,
        .document_parameters = params,
        .log_directory = log_dir,
        .progress = b->opts->progress,
        .cancel = b->opts->cancel,
      };
      struct kiln_run_result res;
      r = kiln_executor_run (docs, n, &eo, &res, err);
      if (r == 0)
        {
          if (res.status == KILN_RUN_CANCELLED)
            r = kiln_error_set (err, KILN_ERR_CANCELLED, 0, "interrupted");
          else if (res.status != KILN_RUN_SUCCESS)
            r = kiln_fail (err, "%s (logs: %s)", res.failure_message ? res.failure_message : "failed",
                           res.run_directory ? res.run_directory : log_dir);
          kiln_run_result_release (&res);
        }
    }
  free (docs);
  free (params);
  return r;
}

static bool
plan_has_phase (const struct kiln_plan *p, const char *phase)
{
  for (size_t i = 0; i < p->n_components; i++)
    if (kiln_component_phase (p->components[i].doc, phase))
      return true;
  return false;
}

/* Moves or copies src to dst (dst on the output's file system). */
static int
place_file (const char *src, const char *dst, volatile sig_atomic_t *cancel, kiln_error **err)
{
  if (rename (src, dst) == 0)
    return 0;
  if (errno != EXDEV)
    return kiln_fail_errno (err, errno, "rename '%s' to '%s'", src, dst);
  /* Another file system: a sparse copy, byte for byte (the file is in its
   * published format, compressed or not). */
  char *const argv[] = {(char *) "cp", (char *) "--sparse=always", (char *) "--", (char *) src, (char *) dst, NULL};
  struct kiln_process_spec spec = {.argv = argv, .cancel = cancel, .capture_limit = 64 * 1024};
  struct kiln_process_result res = {0};
  int r = kiln_process_run (&spec, &res, err);
  if (r < 0)
    kiln_error_prefix (err, "copy '%s' to '%s'", src, dst);
  else if (res.exit_code != 0)
    r = kiln_fail (err, "copy '%s' to '%s': %s", src, dst, kiln_buf_str (&res.err));
  kiln_process_result_release (&res);
  return r;
}

static json_t *
components_json (const struct kiln_plan *p)
{
  json_t *a = json_array ();
  for (size_t i = 0; i < p->n_components; i++)
    {
      const struct kiln_recipe_component *rc = &p->components[i];
      json_array_append_new (a, json_pack ("{s:s, s:s, s:s?, s:s?, s:s, s:O}", "componentArn", rc->arn, "path",
                                           rc->path, "name", rc->doc->name, "description", rc->doc->description,
                                           "sha256", rc->doc->sha256, "parameters", rc->parameters));
    }
  return a;
}

/* The images in the cloud, region by region, for a manifest. */
static json_t *
images_json (const struct build *b)
{
  json_t *images = json_array ();
  for (size_t i = 0; i < b->n_dist; i++)
    {
      const struct kiln_image_distribution *t = &b->dist[i];
      json_t *snaps = json_array ();
      for (size_t k = 0; t->snapshot_ids && t->snapshot_ids[k]; k++)
        json_array_append_new (snaps, json_string (t->snapshot_ids[k]));
      json_array_append_new (images, json_pack ("{s:s, s:s, s:s?, s:o, s:f}", "region", t->region, "imageId",
                                                t->image_id, "name", t->name, "snapshotIds", snaps, "seconds",
                                                t->seconds));
    }
  return images;
}

/* What both manifests (file and cloud) record beyond the image itself. */
static void
manifest_add_common (struct build *b, json_t *m)
{
  json_object_set_new (m, "buildVersion", json_integer (strtol (b->build_version, NULL, 10)));
  json_object_set_new (m, "buildDate", json_string (b->build_date));
  if (b->accelerator)
    json_object_set (m, "accelerator", b->accelerator);
  if (b->opts->infrastructure)
    json_object_set_new (m, "infrastructure", kiln_infrastructure_to_json (b->opts->infrastructure));
  if (b->opts->distribution)
    json_object_set_new (m, "distribution", kiln_distribution_to_json (b->opts->distribution));
}

static int
publish (struct build *b, const char *captured, struct kiln_build_result *res, const char *started, kiln_error **err)
{
  const struct kiln_plan *p = b->plan;
  const char *ext = kiln_image_format_extension (b->opts->format);
  _cleanup_json_ json_t *plan_json = kiln_plan_to_json (p);
  const char *base = json_string_value (json_object_get (plan_json, "output"));
  /* A distribution names the local image too (there is exactly one). */
  const struct kiln_image_distribution *target
      = b->home_region ? distribution_for (b, b->home_region)
        : b->opts->distribution && b->opts->distribution->n_targets ? &b->opts->distribution->targets[0] : NULL;
  _cleanup_free_ char *named = NULL;
  if (target && target->name)
    {
      if (image_name_for (b, target, &named, err) < 0)
        return -1;
      if (strchr (named, '/') || named[0] == '.')
        return kiln_fail_invalid (err, "%s: amiDistributionConfiguration.name '%s' cannot name a file (a '/' or a "
                                  "leading '.')", b->opts->distribution->path, named);
      base = named;
    }
  _cleanup_free_ char *final = NULL;
  _cleanup_free_ char *tmp = NULL;
  _cleanup_free_ char *manifest_final = NULL;
  _cleanup_free_ char *manifest_tmp = NULL;
  final = kiln_xasprintf ("%s/%s.%s", b->opts->output_dir, base, ext);
  tmp = kiln_xasprintf ("%s/.%s.%s.tmp-%d", b->opts->output_dir, base, ext, (int) getpid ());
  manifest_final = kiln_xasprintf ("%s/%s.manifest.json", b->opts->output_dir, base);
  manifest_tmp = kiln_xasprintf ("%s/.%s.manifest.json.tmp-%d", b->opts->output_dir, base, (int) getpid ());

  double t0 = kiln_monotonic_seconds ();
  /* The temporary names are recorded in the run directory first, so they
   * go whatever the ending, SIGKILL included. */
  int r = kiln_rundir_track (b->rd, tmp, err);
  if (r == 0)
    r = kiln_rundir_track (b->rd, manifest_tmp, err);
  if (r < 0)
    return kiln_error_prefix (err, "publish");
  /* The image is in its published format already (output_convert.h). */
  r = place_file (captured, tmp, b->opts->cancel, err);
  char hex[KILN_DIGEST_HEX_MAX] = "";
  if (r == 0)
    r = kiln_digest_file_hex ("SHA256", tmp, hex, err);
  struct stat st = {0};
  if (r == 0 && stat (tmp, &st) < 0)
    r = kiln_fail_errno (err, errno, "stat '%s'", tmp);
  if (r < 0)
    {
      unlink (tmp);
      return kiln_error_prefix (err, "publish");
    }

  char ended[32];
  utc_stamp (ended, sizeof ended, false);
  stage_done (b, "publish", "success", t0, NULL);
  json_t *parent = json_pack ("{s:s}", "image", p->parent_image);
  const char *description = target && target->description ? target->description : p->description;
  json_t *m = json_pack ("{s:s, s:s, s:s?, s:s, s:{s:s, s:s, s:O}, s:o, s:o, s:s, s:{s:s, s:s, s:s, s:I}, s:O, s:s, "
                         "s:s}",
                         "name", p->name, "version", p->version, "description", description, "kilnVersion",
                         KILN_VERSION, "recipe", "path", p->recipe_path, "sha256", p->recipe_sha256, "content",
                         p->recipe, "parentImage", parent, "components", components_json (p), "driver",
                         b->opts->driver->name, "output", "path", final, "format",
                         kiln_image_format_name (b->opts->format), "sha256", hex, "size", (json_int_t) st.st_size,
                         "stages", b->stages, "startTime", started, "endTime", ended);
  json_object_set_new (json_object_get (m, "output"), "compressed", json_boolean (b->opts->compress));
  if (b->n_dist)
    json_object_set_new (json_object_get (m, "output"), "images", images_json (b));
  manifest_add_common (b, m);
  _cleanup_free_ char *text = json_dumps (m, JSON_INDENT (2) | JSON_PRESERVE_ORDER);
  if (kiln_write_file_atomic (manifest_tmp, text, strlen (text), 0644, err) < 0)
    {
      unlink (tmp);
      json_decref (m);
      return kiln_error_prefix (err, "publish");
    }
  /* The image first, the manifest last: a manifest names a complete image.
   * Both appear, or neither: a kiln killed between the two renames has the
   * second done by the next kiln command (see rundir.h). */
  const char *const pairs[] = {tmp, final, manifest_tmp, manifest_final, NULL};
  if (kiln_rundir_publish (b->rd, pairs, err) < 0)
    {
      json_decref (m);
      return -1;
    }
  res->manifest = m;
  res->image_path = kiln_steal_pointer (&final);
  res->manifest_path = kiln_steal_pointer (&manifest_final);
  return 0;
}

/* A build that fails after its capture leaves no image behind: a cloud
 * image is deleted (a file capture goes with the run directory). */
static void
delete_cloud_image (struct build *b, const char *image_id, const char *region)
{
  drop_instance (b);
  struct kiln_cloud_settings there = b->opts->cloud ? *b->opts->cloud : (struct kiln_cloud_settings){0};
  if (region)
    there.region = region;
  struct kiln_instance_spec spec = {.name = "cleanup", .image = image_id, .cancel = NULL, .cloud = &there};
  _cleanup_error_ kiln_error *err = NULL;
  say (b, "[cleanup] deleting image %s", image_id);
  if (kiln_image_delete (cloud_driver (b), &spec, image_id, &err) < 0)
    kiln_log_error ("could not delete image %s of the failed build: %s", image_id, kiln_error_message (err));
}

/* A cloud driver's images stay where they were made and copied to:
 * publishing writes the manifest naming them, region by region. */
static int
publish_cloud (struct build *b, const char *image_id, struct kiln_build_result *res, const char *started,
               kiln_error **err)
{
  const struct kiln_plan *p = b->plan;
  _cleanup_json_ json_t *plan_json = kiln_plan_to_json (p);
  const char *base = json_string_value (json_object_get (plan_json, "output"));
  _cleanup_free_ char *manifest_final = NULL;
  _cleanup_free_ char *manifest_tmp = NULL;
  manifest_final = kiln_xasprintf ("%s/%s.manifest.json", b->opts->output_dir, base);
  manifest_tmp = kiln_xasprintf ("%s/.%s.manifest.json.tmp-%d", b->opts->output_dir, base, (int) getpid ());
  double t0 = kiln_monotonic_seconds ();
  json_t *images = images_json (b);
  char ended[32];
  utc_stamp (ended, sizeof ended, false);
  stage_done (b, "publish", "success", t0, NULL);
  json_t *parent = json_pack ("{s:s}", "image", p->parent_image);
  json_t *m = json_pack ("{s:s, s:s, s:s?, s:s, s:{s:s, s:s, s:O}, s:o, s:o, s:s, s:{s:o}, s:O, s:s, s:s}", "name",
                         p->name, "version", p->version, "description", p->description, "kilnVersion", KILN_VERSION,
                         "recipe", "path", p->recipe_path, "sha256", p->recipe_sha256, "content", p->recipe,
                         "parentImage", parent, "components", components_json (p), "driver", b->opts->driver->name,
                         "output", "images", images, "stages", b->stages, "startTime", started, "endTime", ended);
  manifest_add_common (b, m);
  _cleanup_free_ char *text = json_dumps (m, JSON_INDENT (2) | JSON_PRESERVE_ORDER);
  if (kiln_write_file_atomic (manifest_tmp, text, strlen (text), 0644, err) < 0
      || (rename (manifest_tmp, manifest_final) < 0 && kiln_fail_errno (err, errno, "publish '%s'", manifest_final)))
    {
      unlink (manifest_tmp);
      json_decref (m);
      return kiln_error_prefix (err, "publish");
    }
  res->manifest = m;
  res->image_path = kiln_xstrdup (image_id);
  res->manifest_path = kiln_steal_pointer (&manifest_final);
  return 0;
}

/* The regions the image goes to, names expanded: the build region first
 * (added when the distribution does not list it: it holds the source
 * image), then the others in the distribution's order. */
static int
plan_distribution (struct build *b, const char *build_region, const char *build_name, kiln_error **err)
{
  const struct kiln_distribution_config *dc = b->opts->distribution;
  size_t n = dc ? dc->n_targets : 0;
  b->dist = kiln_xcalloc (n + 1, sizeof *b->dist);
  const struct kiln_image_distribution *home = distribution_for (b, build_region);
  free (b->home_region);
  b->home_region = kiln_xstrdup (build_region);
  b->dist[0] = home ? *home : (struct kiln_image_distribution){0};
  b->dist[0].region = b->home_region;
  b->dist[0].name = kiln_xstrdup (build_name);
  b->n_dist = 1;
  for (size_t i = 0; i < n; i++)
    {
      const struct kiln_image_distribution *t = &dc->targets[i];
      if (t == home)
        continue;
      struct kiln_image_distribution *d = &b->dist[b->n_dist++];
      *d = *t;
      d->name = NULL;
      char *name = NULL;
      if (t->name && image_name_for (b, t, &name, err) < 0)
        return -1;
      d->name = name ? name : kiln_xstrdup (build_name);
    }
  return 0;
}

/* Distribute stage: the home region's image gets its tags and launch
 * permissions, every other region a copy.  A failure deletes the image. */
static int
distribute (struct build *b, const char *image_id, const char *region, const char *name, kiln_error **err)
{
  double t0 = kiln_monotonic_seconds ();
  say (b, "[distribute] %s to %zu region(s)", image_id,
       b->opts->distribution ? b->opts->distribution->n_targets : (size_t) 1);
  struct kiln_instance_spec spec = {.name = "distribute", .image = image_id, .cancel = b->opts->cancel,
                                    .cloud = b->opts->cloud};
  if (plan_distribution (b, region, name, err) < 0
      || kiln_image_distribute (cloud_driver (b), &spec, image_id, b->dist, b->n_dist, err) < 0
      || check_cancel (b, err) < 0)
    {
      stage_done (b, "distribute", "failed", t0, NULL);
      delete_cloud_image (b, image_id, NULL);
      return kiln_error_prefix (err, "distribute stage");
    }
  json_t *regions = json_array ();
  for (size_t i = 0; i < b->n_dist; i++)
    json_array_append_new (regions, json_string (b->dist[i].region));
  stage_done (b, "distribute", "success", t0, json_pack ("{s:o}", "regions", regions));
  return 0;
}

/* After a failed publish: every distributed image goes (the home region's
 * first entry is the source). */
static void
delete_distributed (struct build *b)
{
  for (size_t i = 1; i < b->n_dist; i++)
    delete_cloud_image (b, b->dist[i].image_id, b->dist[i].region);
  if (b->n_dist)
    delete_cloud_image (b, b->dist[0].image_id, NULL);
}

/* Import stage (a local build with import_driver): the captured disk
 * becomes an image in that driver's cloud, named as its distribution
 * says for the region it lands in, then distributed like a cloud build's. */
static int
import_image (struct build *b, const char *captured, char **image_id, kiln_error **err)
{
  double t0 = kiln_monotonic_seconds ();
  const struct kiln_driver *d = b->opts->import_driver;
  struct kiln_instance_spec spec = {.name = "import", .cancel = b->opts->cancel, .cloud = b->opts->cloud};
  /* Where it will land decides its name: ask the driver, launching nothing. */
  struct kiln_instance *probe = NULL;
  if (kiln_instance_create (d, &spec, &probe, err) < 0)
    {
      stage_done (b, "import", "failed", t0, NULL);
      return kiln_error_prefix (err, "import stage");
    }
  _cleanup_free_ char *region = probe->location ? kiln_xstrdup (probe->location) : NULL;
  kiln_instance_destroy (probe);
  _cleanup_free_ char *name = NULL;
  const struct kiln_image_distribution *home = region ? distribution_for (b, region) : NULL;
  struct kiln_image_transfer t = {.description = home && home->description ? home->description
                                                                             : b->plan->description,
                                  .cancel = b->opts->cancel, .scratch_dir = b->rd->path};
  if (image_name_for (b, home, &name, err) < 0)
    {
      stage_done (b, "import", "failed", t0, NULL);
      return kiln_error_prefix (err, "import stage");
    }
  t.name = name;
  say (b, "[import] importing into %s%s%s as '%s'", d->name, region ? " " : "", region ? region : "", name);
  int r = kiln_image_import (d, &spec, captured, &t, err);
  if (r < 0 || check_cancel (b, err) < 0)
    {
      if (r == 0)
        delete_cloud_image (b, t.image_id, NULL);
      kiln_image_transfer_release (&t);
      stage_done (b, "import", "failed", t0, NULL);
      return kiln_error_prefix (err, "import stage");
    }
  stage_done (b, "import", "success", t0,
              json_pack ("{s:s, s:I, s:I}", "imageId", t.image_id, "bytesRead", (json_int_t) t.bytes_read,
                         "bytesSent", (json_int_t) t.bytes_sent));
  *image_id = kiln_steal_pointer (&t.image_id);
  kiln_image_transfer_release (&t);
  return distribute (b, *image_id, region, name, err);
}

static int
run_stages (struct build *b, struct kiln_build_result *res, kiln_error **err)
{
  const struct kiln_plan *p = b->plan;
  char started[32];
  utc_stamp (started, sizeof started, false);

  /* Build: build and validate phases on an instance of the parent. */
  double t0 = kiln_monotonic_seconds ();
  if (boot (b, "build", p->parent_image, NULL, p->disk_size_bytes, err) < 0
      || run_components (b, "build", "build,validate", err) < 0 || check_cancel (b, err) < 0)
    {
      stage_done (b, "build", "failed", t0, NULL);
      return kiln_error_prefix (err, "build stage");
    }
  json_t *build_extra = instance_record (b, "build");
  say (b, "[build] shutting the instance down");
  if (kiln_instance_shutdown (b->inst, SHUTDOWN_TIMEOUT, err) < 0)
    {
      json_decref (build_extra);
      stage_done (b, "build", "failed", t0, NULL);
      return kiln_error_prefix (err, "build stage");
    }
  stage_done (b, "build", "success", t0, build_extra);

  /* Capture: the build instance's disk as a standalone image (a file, or an
   * image in the cloud the driver works in). */
  t0 = kiln_monotonic_seconds ();
  bool cloud = b->opts->driver->cloud_images;
  _cleanup_free_ char *captured = NULL;
  _cleanup_free_ char *image_region = NULL;
  _cleanup_free_ char *image_name = NULL;
  if (!cloud)
    captured = kiln_xasprintf ("%s/image.qcow2", b->rd->path);
  const struct kiln_image_distribution *home = cloud ? distribution_for (b, b->inst->location) : NULL;
  if (image_name_for (b, home, &image_name, err) < 0)
    {
      stage_done (b, "capture", "failed", t0, NULL);
      return kiln_error_prefix (err, "capture stage");
    }
  /* A plain qcow2 of the disk's data: the fastest to write, and what the
   * test instance boots; the published format is made beside the test. */
  struct kiln_capture_spec cs = {.output = captured, .format = KILN_IMAGE_QCOW2, .compress = false,
                                 .image_id = cloud ? &captured : NULL, .image_region = cloud ? &image_region : NULL,
                                 .image_name = image_name,
                                 .description = home && home->description ? home->description : p->description};
  say (b, cloud ? "[capture] creating an image of the build instance" : "[capture] writing the build instance's disk");
  if (kiln_instance_capture (b->inst, &cs, err) < 0 || check_cancel (b, err) < 0)
    {
      stage_done (b, "capture", "failed", t0, NULL);
      /* Interrupted once the cloud image existed: it goes too. */
      if (cloud && captured)
        delete_cloud_image (b, captured, NULL);
      return kiln_error_prefix (err, "capture stage");
    }
  drop_instance (b);
  /* The published format (or a compressed file), converted while the test
   * stage runs; any ending but publishing stops it and removes its file. */
  _cleanup_ (kiln_output_convert_abandon) struct kiln_output_convert *conversion = NULL;
  _cleanup_free_ char *converted = NULL;
  if (!cloud && kiln_output_convert_needed (b->opts->format, b->opts->compress))
    {
      converted = kiln_xasprintf ("%s/image.out.%s", b->rd->path, kiln_image_format_extension (b->opts->format));
      if (kiln_output_convert_start (captured, converted, b->opts->format, b->opts->compress, &conversion, err) < 0)
        {
          stage_done (b, "capture", "failed", t0, NULL);
          return kiln_error_prefix (err, "capture stage");
        }
    }
  stage_done (b, "capture", "success", t0, NULL);

  /* Test: test phases on a fresh instance of the new image. */
  t0 = kiln_monotonic_seconds ();
  if (plan_has_phase (p, "test"))
    {
      if (boot (b, "test", captured, cloud ? NULL : "qcow2", 0, err) < 0 || run_components (b, "test", "test", err) < 0
          || check_cancel (b, err) < 0)
        {
          stage_done (b, "test", "failed", t0, NULL);
          if (cloud)
            delete_cloud_image (b, captured, NULL);
          return kiln_error_prefix (err, "test stage");
        }
      json_t *extra = instance_record (b, "test");
      drop_instance (b);
      stage_done (b, "test", "success", t0, extra);
    }
  else
    stage_done (b, "test", "skipped (no component has a test phase)", t0, NULL);

  if (cloud)
    {
      if (distribute (b, captured, image_region, image_name, err) < 0)
        return -1;
      if (publish_cloud (b, captured, res, started, err) == 0)
        return 0;
      delete_distributed (b);
      return -1;
    }
  /* A local build may also end as an image in a cloud (import_driver). */
  _cleanup_free_ char *imported = NULL;
  if (b->opts->import_driver && import_image (b, captured, &imported, err) < 0)
    return -1;
  if (conversion)
    {
      double wait0 = kiln_monotonic_seconds ();
      say (b, "[publish] waiting for the conversion to %s%s", b->opts->compress ? "compressed " : "",
           kiln_image_format_name (b->opts->format));
      int cr = kiln_output_convert_finish (conversion, b->opts->cancel, err);
      conversion = NULL;
      if (cr < 0 || check_cancel (b, err) < 0)
        {
          if (imported)
            delete_distributed (b);
          return kiln_error_prefix (err, "publish");
        }
      kiln_log_debug ("build: waited %.1f s for the output conversion", kiln_monotonic_seconds () - wait0);
    }
  if (publish (b, converted ? converted : captured, res, started, err) == 0)
    return 0;
  if (imported)
    delete_distributed (b);
  return -1;
}

int
kiln_build_run (const struct kiln_plan *plan, const struct kiln_build_opts *opts, struct kiln_build_result *res,
                kiln_error **err)
{
  memset (res, 0, sizeof *res);
  if (kiln_build_check (plan, opts, err) < 0)
    return -1;
  struct build b = {.plan = plan, .opts = opts, .stages = json_array ()};
  int r = -1;
  image_builder_date (b.build_date, sizeof b.build_date);
  snprintf (b.build_version, sizeof b.build_version, "%ld", next_build_version (opts->output_dir, plan));

  if (kiln_mkdir_p (opts->output_dir, 0755, err) < 0)
    {
      kiln_error_prefix (err, "output directory");
      goto out;
    }
  char stamp[32];
  utc_stamp (stamp, sizeof stamp, true);
  b.logs_dir = kiln_xasprintf ("%s/logs/%s-%s-%s", opts->output_dir, plan->name, plan->version, stamp);
  for (char *c = b.logs_dir + strlen (opts->output_dir); *c; c++)
    if (*c == ' ')
      *c = '_';
  if (kiln_mkdir_p (b.logs_dir, 0755, err) < 0)
    goto out;
  res->logs_dir = kiln_xstrdup (b.logs_dir);
  if (kiln_rundir_create ("build", &b.rd, err) < 0)
    goto out;

  r = run_stages (&b, res, err);
  if (r < 0 && opts->keep_on_failure && b.inst && !cancelled (&b))
    {
      /* Leave the failed instance as it is, with its run directory, for
       * inspection; mark it so the reaper leaves it alone too. */
      _cleanup_free_ char *mark = NULL;
      mark = kiln_xasprintf ("%s/keep", b.rd->path);
      kiln_write_file_atomic (mark, "kept\n", 5, 0644, NULL);
      res->kept = kiln_xasprintf ("instance %s (%s driver), files in %s", b.inst->id ? b.inst->id : b.inst->name,
                                  opts->driver->name, b.rd->path);
      b.keep = true;
      /* Forget the instance without destroying it. */
      b.inst = NULL;
    }

out:
  drop_instance (&b);
  dist_release (&b);
  free (b.home_region);
  kiln_rundir_release (b.rd, b.keep);
  json_decref (b.stages);
  json_decref (b.accelerator);
  free (b.logs_dir);
  res->ok = r == 0;
  return r;
}

void
kiln_build_result_release (struct kiln_build_result *res)
{
  json_decref (res->manifest);
  free (res->image_path);
  free (res->manifest_path);
  free (res->logs_dir);
  free (res->kept);
  memset (res, 0, sizeof *res);
}
