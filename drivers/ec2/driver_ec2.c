/* driver_ec2.c - the EC2 driver: instances are EC2 instances, reached
 * through SSM (ssm_session.c), captured with CreateImage.
 *
 * The same driver table as the QEMU driver, so the builder runs a recipe on
 * EC2 unchanged:
 *   create   resolves the parent image (an ami- id, or ssm:/parameter) and
 *            makes the EC2 and SSM clients; nothing is launched yet
 *   start    RunInstances (first time) or StartInstances (after shutdown),
 *            then waits for running and for the instance's SSM agent
 *   shutdown StopInstances, waits for stopped
 *   capture  CreateImage, waits for available (the image and its snapshots
 *            tagged), the AMI id is the result
 *   reboot   RebootInstances, then waits for a new boot id over SSM
 *   destroy  TerminateInstances (idempotent; waits for it to take)
 *   delete_image  DeregisterImage and DeleteSnapshot, for a build that
 *            failed after its capture
 *   distribute  copies to other regions, tags, launch permissions
 *            (ec2_images.c)
 *   reap     terminates what a kiln killed outright launched
 *            (launch_record.c)
 * Waits poll with growing pauses, honour the cancel flag and give up with an
 * error naming the instance and the state it was left in.  Works against AWS
 * and kiln-emulator alike (the endpoint comes from the cloud settings or from
 * where AWS tools look). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aws_client.h"
#include "aws_config.h"
#include "cancel.h"
#include "cleanup.h"
#include "digest.h"
#include "ami_transfer.h"
#include "driver.h"
#include "ec2_images.h"
#include "launch_record.h"
#include "log.h"
#include "process.h"
#include "ssm_session.h"
#include "xalloc.h"

#define DEFAULT_INSTANCE_TYPE "t3.micro"
#define RUNNING_TIMEOUT_SECONDS 900
#define AGENT_TIMEOUT_SECONDS 900
#define STOP_TIMEOUT_SECONDS 900
#define IMAGE_TIMEOUT_SECONDS 3600
#define TERMINATE_TIMEOUT_SECONDS 300
#define REBOOT_TIMEOUT_SECONDS 900

struct ec2_instance {
  struct kiln_aws_config *config;
  struct kiln_aws_client *ec2;
  struct kiln_aws_client *ssm;
  char *image_id;              /* the parent AMI, resolved */
  char *instance_id;           /* once launched */
  char *name;
  char *user_data;             /* base64, as RunInstances takes it */
  char **instance_types;       /* tried in order while EC2 lacks capacity */
  char *instance_type;         /* the one launched */
  char *work_dir;              /* where the launch record goes, or NULL */
  char *endpoint_url;          /* as given (NULL: as AWS tools find it) */
  char *profile;
  char *subnet_id;
  char **security_groups;
  char *instance_profile;
  char *key_pair;
  char **tags;                 /* key, value, ..., NULL */
  volatile sig_atomic_t *cancel;
  struct kiln_ssm_session session;
  char *scratch_dir;
  bool stopped;
  bool terminated;
};

static struct ec2_instance *
ec2_of (struct kiln_target *t)
{
  struct kiln_instance *inst = t->priv;
  return inst->priv;
}

static char **
strv_copy (const char *const *v)
{
  if (v == NULL)
    return NULL;
  size_t n = 0;
  while (v[n])
    n++;
  char **out = kiln_xcalloc (n + 1, sizeof *out);
  for (size_t i = 0; i < n; i++)
    out[i] = kiln_xstrdup (v[i]);
  return out;
}

/* The tags to put on what kiln makes: the settings' plus a Name and kiln's
 * own marker, so a user can find (and a later run clean up) its resources. */
static size_t
collect_tags (struct ec2_instance *e, const char *name, struct kiln_aws_tag *out, size_t max)
{
  size_t n = 0;
  out[n++] = (struct kiln_aws_tag){"Name", name};
  out[n++] = (struct kiln_aws_tag){"kiln:created-by", "kiln"};
  for (size_t i = 0; e->tags && e->tags[i] && e->tags[i + 1] && n < max; i += 2)
    out[n++] = (struct kiln_aws_tag){e->tags[i], e->tags[i + 1]};
  return n;
}

/* ---- create ---- */

/* The one available image a DescribeImages query ("filter:" + JSON, see
 * driver.h) matches, or with mostRecent the newest of them. */
static int
resolve_filter (struct ec2_instance *e, const char *image, kiln_error **err)
{
  json_error_t jerr;
  _cleanup_json_ json_t *q = json_loads (image + strlen ("filter:"), 0, &jerr);
  json_t *filters = json_object_get (q, "filters");
  if (!json_is_object (filters))
    return kiln_fail_invalid (err, "parent image query '%s' is not {\"filters\": {...}, ...}", image);
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  const char *name;
  json_t *values;
  json_object_foreach (filters, name, values)
    {
      size_t n = json_array_size (values);
      const char **v = kiln_xcalloc (n + 1, sizeof *v);
      for (size_t i = 0; i < n; i++)
        v[i] = json_string_value (json_array_get (values, i));
      kiln_aws_params_add_filter (&p, name, v, n);
      free (v);
    }
  size_t i;
  json_t *owner;
  json_array_foreach (json_object_get (q, "owners"), i, owner)
    {
      _cleanup_free_ char *key = NULL;
      key = kiln_xasprintf ("Owner.%zu", i + 1);
      kiln_aws_params_add (&p, key, json_string_value (owner));
    }
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (e->ec2, "DescribeImages", &p, &doc, NULL, err);
  kiln_aws_params_release (&p);
  if (r < 0)
    return kiln_error_prefix (err, "look up the parent image");
  size_t matches = 0;
  _cleanup_free_ char *best = NULL;
  _cleanup_free_ char *best_date = NULL;
  for (xmlNode *it = kiln_aws_xml_find (kiln_aws_xml_root (doc), "imagesSet/item"); it; it = kiln_aws_xml_next (it))
    {
      _cleanup_free_ char *id = kiln_aws_xml_text (it, "imageId");
      _cleanup_free_ char *state = kiln_aws_xml_text (it, "imageState");
      _cleanup_free_ char *date = kiln_aws_xml_text (it, "creationDate");
      if (id == NULL || state == NULL || strcmp (state, "available") != 0)
        continue;
      matches++;
      /* ISO 8601 dates in UTC order as strings do. */
      if (best == NULL || (date && (best_date == NULL || strcmp (date, best_date) > 0)))
        {
          free (best);
          free (best_date);
          best = kiln_steal_pointer (&id);
          best_date = date ? kiln_steal_pointer (&date) : NULL;
        }
    }
  xmlFreeDoc (doc);
  if (matches == 0)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "no available image matches the parent image query %s",
                           image + strlen ("filter:"));
  if (matches > 1 && !json_is_true (json_object_get (q, "mostRecent")))
    return kiln_fail_invalid (err, "%zu images match the parent image query %s: narrow the filters, or set "
                              "mostRecent: true to take the newest", matches, image + strlen ("filter:"));
  e->image_id = kiln_steal_pointer (&best);
  kiln_log_info ("ec2: parent image query matched %zu image(s); using %s", matches, e->image_id);
  return 0;
}

/* "ami-..." as is; "ssm:/name" through SSM GetParameter; "filter:{...}"
 * through DescribeImages. */
static int
resolve_image (struct ec2_instance *e, const char *image, kiln_error **err)
{
  if (strncmp (image, "filter:", 7) == 0)
    return resolve_filter (e, image, err);
  if (strncmp (image, "ami-", 4) == 0)
    {
      e->image_id = kiln_xstrdup (image);
      return 0;
    }
  if (strncmp (image, "ssm:", 4) == 0)
    {
      const char *name = image + 4;
      _cleanup_json_ json_t *in = json_pack ("{s:s}", "Name", name);
      _cleanup_json_ json_t *out = NULL;
      if (kiln_aws_json_call (e->ssm, "AmazonSSM.GetParameter", in, &out, NULL, err) < 0)
        return kiln_error_prefix (err, "resolve parent image '%s'", image);
      const char *value = json_string_value (json_object_get (json_object_get (out, "Parameter"), "Value"));
      if (value == NULL || strncmp (value, "ami-", 4) != 0)
        return kiln_fail_invalid (err, "parent image '%s': the parameter's value '%s' is not an AMI id", image,
                                  value ? value : "");
      e->image_id = kiln_xstrdup (value);
      kiln_log_info ("ec2: parent image %s is %s", image, value);
      return 0;
    }
  return kiln_fail_invalid (err, "parent image '%s': the ec2 driver takes an AMI id (ami-...) or an SSM parameter "
                            "holding one (ssm:/name)", image);
}

static int
ec2_create (struct kiln_instance *inst, const struct kiln_instance_spec *spec, kiln_error **err)
{
  struct ec2_instance *e = inst->priv;
  const struct kiln_cloud_settings *cloud = spec->cloud;
  static const struct kiln_cloud_settings none = {0};
  if (cloud == NULL)
    cloud = &none;
  if (kiln_aws_config_load (NULL, cloud->profile, &e->config, err) < 0)
    return kiln_error_prefix (err, "AWS configuration");
  struct kiln_aws_client_options opts = {.endpoint_url = cloud->endpoint_url, .region = cloud->region};
  if (kiln_aws_client_new (e->config, "ec2", &opts, &e->ec2, err) < 0
      || kiln_aws_client_new (e->config, "ssm", &opts, &e->ssm, err) < 0)
    return -1;
  /* An instance made only to import an image has no parent. */
  if (spec->image && *spec->image && resolve_image (e, spec->image, err) < 0)
    return -1;
  inst->location = kiln_xstrdup (kiln_aws_client_region (e->ec2));
  e->name = kiln_xstrdup (spec->name ? spec->name : "kiln");
  e->user_data = spec->user_data ? kiln_xstrdup (spec->user_data) : NULL;
  if (cloud->instance_type)
    e->instance_types = kiln_strv_new (cloud->instance_type, NULL);
  else if (cloud->instance_types && cloud->instance_types[0])
    e->instance_types = strv_copy (cloud->instance_types);
  else
    e->instance_types = kiln_strv_new (DEFAULT_INSTANCE_TYPE, NULL);
  e->instance_type = kiln_xstrdup (e->instance_types[0]);
  e->work_dir = spec->work_dir ? kiln_xstrdup (spec->work_dir) : NULL;
  e->endpoint_url = cloud->endpoint_url ? kiln_xstrdup (cloud->endpoint_url) : NULL;
  e->profile = cloud->profile ? kiln_xstrdup (cloud->profile) : NULL;
  e->subnet_id = cloud->subnet_id ? kiln_xstrdup (cloud->subnet_id) : NULL;
  e->security_groups = strv_copy (cloud->security_group_ids);
  e->instance_profile = cloud->instance_profile_name ? kiln_xstrdup (cloud->instance_profile_name) : NULL;
  e->key_pair = cloud->key_pair ? kiln_xstrdup (cloud->key_pair) : NULL;
  e->tags = strv_copy (cloud->tags);
  e->cancel = spec->cancel;
  if (spec->vcpus > 0 || spec->memory_mib > 0)
    kiln_log_info ("ec2: %s: vCPUs and memory come from the instance type (%s)", e->name, e->instance_type);
  if (spec->disk_size_bytes > 0)
    return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0, "growing the root volume is not supported by the ec2 "
                           "driver yet; leave the recipe's block device size unset");
  return 0;
}

/* ---- waits ---- */

/* The instance's state name (malloc'd) and its state reason message. */
static int
describe_state (struct ec2_instance *e, char **state, char **reason, kiln_error **err)
{
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  const char *ids[] = {e->instance_id};
  kiln_aws_params_add_list (&p, "InstanceId", ids, 1);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (e->ec2, "DescribeInstances", &p, &doc, NULL, err);
  kiln_aws_params_release (&p);
  if (r < 0)
    return -1;
  xmlNode *item = kiln_aws_xml_find (kiln_aws_xml_root (doc), "reservationSet/item/instancesSet/item");
  *state = item ? kiln_aws_xml_text (item, "instanceState/name") : NULL;
  *reason = item ? kiln_aws_xml_text (item, "stateReason/message") : NULL;
  xmlFreeDoc (doc);
  if (*state == NULL)
    return kiln_fail (err, "DescribeInstances did not describe %s", e->instance_id);
  return 0;
}

struct state_poll {
  struct ec2_instance *e;
  const char *want;
  const char *fatal;
};

static enum kiln_poll_answer
instance_in_state (void *opaque, char **state, kiln_error **err)
{
  struct state_poll *sp = opaque;
  _cleanup_free_ char *reason = NULL;
  if (describe_state (sp->e, state, &reason, err) < 0)
    return KILN_POLL_FAILED;
  if (strcmp (*state, sp->want) == 0)
    return KILN_POLL_DONE;
  _cleanup_free_ char *pattern = NULL, *fatal_list = NULL;
  pattern = kiln_xasprintf ("|%s|", *state);
  fatal_list = kiln_xasprintf ("|%s|", sp->fatal);
  if (strstr (fatal_list, pattern))
    {
      kiln_fail (err, "instance %s is %s, not %s%s%s", sp->e->instance_id, *state, sp->want, reason ? ": " : "",
                 reason ? reason : "");
      return KILN_POLL_FAILED;
    }
  return KILN_POLL_WAIT;
}

/* Waits until the instance is in state want; states in fatal (|-separated)
 * end the wait with an error. */
static int
wait_state (struct ec2_instance *e, const char *want, const char *fatal, int timeout_seconds, kiln_error **err)
{
  const struct kiln_poll poll = {.what = "instance", .id = e->instance_id, .timeout_seconds = timeout_seconds,
                                 .first_ms = 500, .max_ms = 5000, .cancel = e->cancel};
  struct state_poll sp = {e, want, fatal};
  return kiln_poll_until (&poll, instance_in_state, &sp, err);
}

static enum kiln_poll_answer
agent_online (void *opaque, char **state, kiln_error **err)
{
  struct ec2_instance *e = opaque;
  _cleanup_json_ json_t *in = json_pack ("{s:[{s:s, s:[s]}]}", "Filters", "Key", "InstanceIds", "Values",
                                         e->instance_id);
  _cleanup_json_ json_t *out = NULL;
  if (kiln_aws_json_call (e->ssm, "AmazonSSM.DescribeInstanceInformation", in, &out, NULL, err) < 0)
    return KILN_POLL_FAILED;
  size_t i;
  json_t *info;
  json_array_foreach (json_object_get (out, "InstanceInformationList"), i, info)
    {
      const char *id = json_string_value (json_object_get (info, "InstanceId"));
      const char *ping = json_string_value (json_object_get (info, "PingStatus"));
      if (id && ping && strcmp (id, e->instance_id) == 0)
        {
          if (strcmp (ping, "Online") == 0)
            return KILN_POLL_DONE;
          *state = kiln_xstrdup (ping);
        }
    }
  return KILN_POLL_WAIT;
}

/* Waits until SSM lists the instance's agent as Online. */
static int
wait_agent (struct ec2_instance *e, kiln_error **err)
{
  const struct kiln_poll poll = {.what = "the SSM agent of", .id = e->instance_id,
                                 .timeout_seconds = AGENT_TIMEOUT_SECONDS, .first_ms = 500, .max_ms = 5000,
                                 .cancel = e->cancel};
  if (kiln_poll_until (&poll, agent_online, e, err) == 0)
    return 0;
  if ((*err)->code == KILN_ERR_TIMEOUT)
    {
      kiln_error_freep (err);
      kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "the SSM agent of %s did not come online within %d s (does its "
                      "instance profile allow SSM, and can it reach the SSM endpoint?)", e->instance_id,
                      AGENT_TIMEOUT_SECONDS);
    }
  return -1;
}

/* ---- start ---- */

/* Notes the launch in the work directory (see launch_record.h). */
static int
record_launch (struct ec2_instance *e, const char *token, kiln_error **err)
{
  if (e->work_dir == NULL)
    return 0;
  struct kiln_ec2_launch l = {.client_token = token, .instance_id = e->instance_id,
                              .region = kiln_aws_client_region (e->ec2), .endpoint_url = e->endpoint_url,
                              .profile = e->profile};
  return kiln_ec2_launch_record (e->work_dir, &l, err);
}

/* One RunInstances of type; aws_err tells a capacity shortage apart. */
static int
run_instance_of_type (struct ec2_instance *e, const char *type, struct kiln_aws_error *aws_err, kiln_error **err)
{
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "ImageId", e->image_id);
  kiln_aws_params_add (&p, "InstanceType", type);
  kiln_aws_params_add (&p, "MinCount", "1");
  kiln_aws_params_add (&p, "MaxCount", "1");
  /* Idempotency: a retried RunInstances must not launch a second one, and
   * the token finds the instance if kiln dies before EC2 answers. */
  unsigned char token[16];
  char token_hex[33];
  FILE *f = fopen ("/dev/urandom", "rb");
  if (f == NULL || fread (token, 1, sizeof token, f) != sizeof token)
    {
      if (f)
        fclose (f);
      kiln_aws_params_release (&p);
      return kiln_fail_errno (err, errno ? errno : EIO, "read /dev/urandom");
    }
  fclose (f);
  kiln_hex_encode (token, sizeof token, token_hex);
  kiln_aws_params_add (&p, "ClientToken", token_hex);
  if (record_launch (e, token_hex, err) < 0)
    {
      kiln_aws_params_release (&p);
      return kiln_error_prefix (err, "record the launch");
    }
  if (e->user_data)
    kiln_aws_params_add (&p, "UserData", e->user_data);
  if (e->subnet_id)
    kiln_aws_params_add (&p, "SubnetId", e->subnet_id);
  size_t n_groups = 0;
  while (e->security_groups && e->security_groups[n_groups])
    n_groups++;
  if (n_groups)
    kiln_aws_params_add_list (&p, "SecurityGroupId", (const char *const *) e->security_groups, n_groups);
  if (e->instance_profile)
    kiln_aws_params_add (&p, "IamInstanceProfile.Name", e->instance_profile);
  if (e->key_pair)
    kiln_aws_params_add (&p, "KeyName", e->key_pair);
  struct kiln_aws_tag tags[64];
  _cleanup_free_ char *name = NULL;
  name = kiln_xasprintf ("kiln %s", e->name);
  size_t n_tags = collect_tags (e, name, tags, 64);
  kiln_aws_params_add_tag_specification (&p, "instance", tags, n_tags);
  kiln_aws_params_add_tag_specification (&p, "volume", tags, n_tags);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (e->ec2, "RunInstances", &p, &doc, aws_err, err);
  kiln_aws_params_release (&p);
  if (r < 0)
    return kiln_error_prefix (err, "launch a %s from %s", type, e->image_id);
  e->instance_id = kiln_aws_xml_text (kiln_aws_xml_root (doc), "instancesSet/item/instanceId");
  xmlFreeDoc (doc);
  if (e->instance_id == NULL)
    return kiln_fail (err, "RunInstances answered without an instance id");
  free (e->instance_type);
  e->instance_type = kiln_xstrdup (type);
  return record_launch (e, token_hex, err);
}

/* The instance types in order, as Image Builder does: the next one when EC2
 * has no capacity for (or does not offer) the last. */
static int
run_instance (struct ec2_instance *e, kiln_error **err)
{
  for (size_t i = 0;; i++)
    {
      struct kiln_aws_error aws = {0};
      int r = run_instance_of_type (e, e->instance_types[i], &aws, err);
      bool next = r < 0 && e->instance_types[i + 1]
                  && (kiln_aws_error_is (&aws, "InsufficientInstanceCapacity")
                      || kiln_aws_error_is (&aws, "Unsupported"));
      kiln_aws_error_release (&aws);
      if (!next)
        return r;
      kiln_log_info ("ec2: %s: %s; trying %s", e->name, kiln_error_message (*err), e->instance_types[i + 1]);
      kiln_error_freep (err);
    }
}

static int
make_scratch_dir (struct kiln_instance *inst, kiln_error **err)
{
  struct ec2_instance *e = inst->priv;
  struct kiln_buf out = KILN_BUF_INIT;
  int code = -1;
  int r = kiln_ssm_shell (&e->session, "d=$(mktemp -d /tmp/kiln.XXXXXX) && chmod 700 \"$d\" && printf %s \"$d\"", NULL,
                          60, &out, &code, err);
  if (r == 0 && (code != 0 || out.len == 0))
    r = kiln_fail (err, "making a scratch directory on %s failed (exit %d)", e->instance_id, code);
  if (r == 0)
    {
      free (e->scratch_dir);
      e->scratch_dir = kiln_buf_steal (&out);
      e->session.scratch_dir = e->scratch_dir;
      free (inst->target.scratch_dir);
      inst->target.scratch_dir = kiln_xstrdup (e->scratch_dir);
    }
  kiln_buf_release (&out);
  return r;
}

static int
ec2_start (struct kiln_instance *inst, int timeout_seconds, kiln_error **err)
{
  struct ec2_instance *e = inst->priv;
  if (e->terminated)
    return kiln_fail (err, "instance %s was terminated", e->instance_id);
  if (e->instance_id == NULL)
    {
      if (e->image_id == NULL)
        return kiln_fail_invalid (err, "no parent image given");
      if (run_instance (e, err) < 0)
        return -1;
      free (inst->id);
      inst->id = kiln_xstrdup (e->instance_id);
      kiln_log_info ("ec2: %s: launched %s from %s (%s)", e->name, e->instance_id, e->image_id, e->instance_type);
    }
  else if (e->stopped)
    {
      struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
      const char *ids[] = {e->instance_id};
      kiln_aws_params_add_list (&p, "InstanceId", ids, 1);
      xmlDoc *doc = NULL;
      int r = kiln_aws_ec2_call (e->ec2, "StartInstances", &p, &doc, NULL, err);
      kiln_aws_params_release (&p);
      xmlFreeDoc (doc);
      if (r < 0)
        return kiln_error_prefix (err, "start %s", e->instance_id);
    }
  else
    return kiln_fail (err, "instance %s is already running", e->instance_id);
  e->session = (struct kiln_ssm_session){.ssm = e->ssm, .instance_id = e->instance_id, .cancel = e->cancel};
  int wait_s = timeout_seconds > 0 ? timeout_seconds : RUNNING_TIMEOUT_SECONDS;
  if (wait_state (e, "running", "shutting-down|terminated|stopping|stopped", wait_s, err) < 0
      || wait_agent (e, err) < 0)
    return -1;
  e->stopped = false;
  return make_scratch_dir (inst, err);
}

/* ---- target operations ---- */

static int
ec2_run (struct kiln_target *t, const struct kiln_target_command *cmd, struct kiln_target_result *res,
         kiln_error **err)
{
  return kiln_ssm_run (&ec2_of (t)->session, cmd, res, err);
}

static int
ec2_put_file (struct kiln_target *t, const char *local_path, const char *path, mode_t mode, kiln_error **err)
{
  return kiln_ssm_put_file (&ec2_of (t)->session, local_path, path, mode, err);
}

static int
ec2_get_file (struct kiln_target *t, const char *path, const char *local_path, kiln_error **err)
{
  return kiln_ssm_get_file (&ec2_of (t)->session, path, local_path, err);
}

static int
ec2_stat (struct kiln_target *t, const char *path, struct kiln_target_stat *st, kiln_error **err)
{
  return kiln_ssm_stat (&ec2_of (t)->session, path, st, err);
}

static int
boot_id (struct ec2_instance *e, char **out, kiln_error **err)
{
  struct kiln_buf buf = KILN_BUF_INIT;
  int code = -1;
  if (kiln_ssm_shell (&e->session, "cat /proc/sys/kernel/random/boot_id", NULL, 60, &buf, &code, err) < 0)
    {
      kiln_buf_release (&buf);
      return -1;
    }
  if (code != 0 || buf.len == 0)
    {
      kiln_buf_release (&buf);
      return kiln_fail (err, "reading the boot id of %s failed (exit %d)", e->instance_id, code);
    }
  *out = kiln_buf_steal (&buf);
  return 0;
}

struct reboot_poll {
  struct ec2_instance *e;
  const char *before;          /* the boot id before the reboot */
};

/* Done once the instance answers with another boot id. */
static enum kiln_poll_answer
rebooted (void *opaque, char **state, kiln_error **err)
{
  struct reboot_poll *rp = opaque;
  _cleanup_free_ char *now = NULL;
  _cleanup_error_ kiln_error *probe = NULL;
  if (boot_id (rp->e, &now, &probe) == 0 && strcmp (now, rp->before) != 0)
    return KILN_POLL_DONE;
  *state = probe ? kiln_xasprintf ("unfinished (%s)", kiln_error_message (probe)) : kiln_xstrdup ("unfinished");
  return KILN_POLL_WAIT;
}

/* RebootInstances, then the agent answering from a new boot: a boot id that
 * differs is the proof the reboot happened (the agent may answer once more
 * from the old boot before it goes down). */
static int
ec2_reboot (struct kiln_target *t, enum kiln_reboot_outcome *outcome, kiln_error **err)
{
  struct kiln_instance *inst = t->priv;
  struct ec2_instance *e = inst->priv;
  _cleanup_free_ char *before = NULL;
  if (boot_id (e, &before, err) < 0)
    return kiln_error_prefix (err, "reboot %s", e->instance_id);
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  const char *ids[] = {e->instance_id};
  kiln_aws_params_add_list (&p, "InstanceId", ids, 1);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (e->ec2, "RebootInstances", &p, &doc, NULL, err);
  kiln_aws_params_release (&p);
  xmlFreeDoc (doc);
  if (r < 0)
    return kiln_error_prefix (err, "reboot %s", e->instance_id);
  const struct kiln_poll poll = {.what = "the reboot of", .id = e->instance_id,
                                 .timeout_seconds = REBOOT_TIMEOUT_SECONDS, .first_ms = 1000, .max_ms = 5000,
                                 .cancel = e->cancel};
  struct reboot_poll rp = {e, before};
  if (kiln_poll_until (&poll, rebooted, &rp, err) < 0)
    return -1;
  if (make_scratch_dir (inst, err) < 0)
    return -1;
  *outcome = KILN_REBOOT_DONE;
  return 0;
}

static const struct kiln_target_ops ec2_target_ops = {
  .name = "ec2",
  .run = ec2_run,
  .put_file = ec2_put_file,
  .get_file = ec2_get_file,
  .stat = ec2_stat,
  .reboot = ec2_reboot,
};

/* ---- shutdown, capture, destroy ---- */

static int
simple_instance_call (struct ec2_instance *e, const char *action, kiln_error **err)
{
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  const char *ids[] = {e->instance_id};
  kiln_aws_params_add_list (&p, "InstanceId", ids, 1);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (e->ec2, action, &p, &doc, NULL, err);
  kiln_aws_params_release (&p);
  xmlFreeDoc (doc);
  return r;
}

static int
ec2_shutdown (struct kiln_instance *inst, int timeout_seconds, kiln_error **err)
{
  struct ec2_instance *e = inst->priv;
  if (e->instance_id == NULL || e->stopped)
    return 0;
  if (simple_instance_call (e, "StopInstances", err) < 0)
    return kiln_error_prefix (err, "stop %s", e->instance_id);
  if (wait_state (e, "stopped", "terminated|shutting-down", timeout_seconds > 0 ? timeout_seconds : STOP_TIMEOUT_SECONDS,
                  err) < 0)
    return -1;
  e->stopped = true;
  return 0;
}

static int
ec2_capture (struct kiln_instance *inst, const struct kiln_capture_spec *spec, kiln_error **err)
{
  struct ec2_instance *e = inst->priv;
  if (spec->image_id == NULL)
    return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0, "the ec2 driver makes AMIs, not %s files; export an AMI to "
                           "a file is a separate step", kiln_image_format_name (spec->format));
  if (e->instance_id == NULL)
    return kiln_fail (err, "the instance was never launched");
  char stamp[32];
  time_t now = time (NULL);
  struct tm tm;
  gmtime_r (&now, &tm);
  strftime (stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  _cleanup_free_ char *name = NULL;
  if (spec->image_name)
    name = kiln_xstrdup (spec->image_name);
  else
    name = kiln_xasprintf ("kiln-%s-%s", e->name, stamp);
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "InstanceId", e->instance_id);
  kiln_aws_params_add (&p, "Name", name);
  if (spec->description)
    kiln_aws_params_add (&p, "Description", spec->description);
  /* A running instance is rebooted by CreateImage for a consistent disk;
   * the builder normally stops it first. */
  kiln_aws_params_add (&p, "NoReboot", e->stopped ? "true" : "false");
  struct kiln_aws_tag tags[64];
  size_t n_tags = collect_tags (e, name, tags, 64);
  kiln_aws_params_add_tag_specification (&p, "image", tags, n_tags);
  kiln_aws_params_add_tag_specification (&p, "snapshot", tags, n_tags);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (e->ec2, "CreateImage", &p, &doc, NULL, err);
  kiln_aws_params_release (&p);
  if (r < 0)
    return kiln_error_prefix (err, "create an image of %s", e->instance_id);
  char *image_id = kiln_aws_xml_text (kiln_aws_xml_root (doc), "imageId");
  xmlFreeDoc (doc);
  if (image_id == NULL)
    return kiln_fail (err, "CreateImage answered without an image id");
  kiln_log_info ("ec2: %s: creating %s (%s) from %s", e->name, image_id, name, e->instance_id);
  if (kiln_ec2_image_wait (e->ec2, image_id, IMAGE_TIMEOUT_SECONDS, e->cancel, err) < 0)
    {
      free (image_id);
      return -1;
    }
  *spec->image_id = image_id;
  if (spec->image_region)
    *spec->image_region = kiln_xstrdup (kiln_aws_client_region (e->ec2));
  return 0;
}

static int
ec2_delete_image (struct kiln_instance *inst, const char *image_id, kiln_error **err)
{
  struct ec2_instance *e = inst->priv;
  return kiln_ec2_image_delete (e->ec2, image_id, err);
}

static int
ec2_distribute (struct kiln_instance *inst, const char *image_id, struct kiln_image_distribution *d, size_t n,
                kiln_error **err)
{
  struct ec2_instance *e = inst->priv;
  _cleanup_strv_ char **tags = kiln_strv_new ("kiln:created-by", "kiln", NULL);
  for (size_t i = 0; e->tags && e->tags[i]; i++)
    kiln_strv_push (&tags, e->tags[i]);
  return kiln_ec2_image_distribute (e->config, e->endpoint_url, e->ec2, image_id, (const char *const *) tags, d, n,
                                    e->cancel, err);
}

static int
ec2_import_image (struct kiln_instance *inst, const char *path, struct kiln_image_transfer *t, kiln_error **err)
{
  struct ec2_instance *e = inst->priv;
  struct kiln_aws_client_options o = {.endpoint_url = e->endpoint_url, .region = kiln_aws_client_region (e->ec2)};
  return kiln_ec2_ami_import (e->config, &o, e->ec2, path, t, err);
}

static int
ec2_export_image (struct kiln_instance *inst, const char *image_id, const char *raw_path,
                  struct kiln_image_transfer *t, kiln_error **err)
{
  struct ec2_instance *e = inst->priv;
  struct kiln_aws_client_options o = {.endpoint_url = e->endpoint_url, .region = kiln_aws_client_region (e->ec2)};
  return kiln_ec2_ami_export (e->config, &o, e->ec2, image_id, raw_path, t, err);
}

static void
free_priv (struct ec2_instance *e)
{
  kiln_aws_client_free (e->ec2);
  kiln_aws_client_free (e->ssm);
  kiln_aws_config_free (e->config);
  free (e->image_id);
  free (e->instance_id);
  free (e->name);
  free (e->user_data);
  free (e->instance_type);
  kiln_strv_free (e->instance_types);
  free (e->work_dir);
  free (e->endpoint_url);
  free (e->profile);
  free (e->subnet_id);
  kiln_strv_free (e->security_groups);
  free (e->instance_profile);
  free (e->key_pair);
  kiln_strv_free (e->tags);
  free (e->scratch_dir);
  memset (e, 0, sizeof *e);
}

/* Terminates the instance and waits (bounded) for EC2 to say so; never
 * consults the cancel flag, since it is what an interrupted build runs. */
static int
ec2_destroy (struct kiln_instance *inst)
{
  struct ec2_instance *e = inst->priv;
  if (e == NULL)
    return 0;
  int r = 0;
  if (e->instance_id && !e->terminated)
    {
      _cleanup_error_ kiln_error *err = NULL;
      if (simple_instance_call (e, "TerminateInstances", &err) < 0)
        {
          kiln_log_error ("ec2: could not terminate %s: %s", e->instance_id, kiln_error_message (err));
          r = -1;
        }
      else
        {
          e->terminated = true;
          e->cancel = NULL;
          if (e->work_dir)
            kiln_ec2_launch_forget (e->work_dir);
          _cleanup_error_ kiln_error *werr = NULL;
          if (wait_state (e, "terminated", "", TERMINATE_TIMEOUT_SECONDS, &werr) < 0)
            kiln_log_warn ("ec2: %s: %s", e->instance_id, kiln_error_message (werr));
          else
            kiln_log_info ("ec2: %s: terminated %s", e->name, e->instance_id);
        }
    }
  free_priv (e);
  return r;
}

static char *
ec2_console_tail (struct kiln_instance *inst, size_t max_bytes)
{
  struct ec2_instance *e = inst->priv;
  if (e->instance_id == NULL)
    return NULL;
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "InstanceId", e->instance_id);
  xmlDoc *doc = NULL;
  _cleanup_error_ kiln_error *err = NULL;
  int r = kiln_aws_ec2_call (e->ec2, "GetConsoleOutput", &p, &doc, NULL, &err);
  kiln_aws_params_release (&p);
  if (r < 0)
    return NULL;
  _cleanup_free_ char *b64 = kiln_aws_xml_text (kiln_aws_xml_root (doc), "output");
  xmlFreeDoc (doc);
  if (b64 == NULL)
    return NULL;
  unsigned char *text = NULL;
  size_t len = 0;
  if (kiln_base64_decode (b64, strlen (b64), &text, &len) < 0)
    return NULL;
  size_t from = len > max_bytes ? len - max_bytes : 0;
  char *tail = kiln_xstrndup ((const char *) text + from, len - from);
  free (text);
  return tail;
}

const struct kiln_driver kiln_driver_ec2 = {
  .name = "ec2",
  .priv_size = sizeof (struct ec2_instance),
  .cloud_images = true,
  .create = ec2_create,
  .start = ec2_start,
  .destroy = ec2_destroy,
  .target_ops = &ec2_target_ops,
  .shutdown = ec2_shutdown,
  .capture = ec2_capture,
  .delete_image = ec2_delete_image,
  .distribute = ec2_distribute,
  .reap = kiln_ec2_launch_reap,
  .import_image = ec2_import_image,
  .export_image = ec2_export_image,
  .console_tail = ec2_console_tail,
};
