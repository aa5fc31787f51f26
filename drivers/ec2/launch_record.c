/* launch_record.c - terminating the EC2 instances of a kiln that was killed
 * outright (see launch_record.h). */
#include "launch_record.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "aws_client.h"
#include "aws_config.h"
#include "cleanup.h"
#include "fsutil.h"
#include "log.h"
#include "process.h"
#include "xalloc.h"

#define RECORD_NAME "ec2-launch.json"

static char *
record_path (const char *work_dir)
{
  char *path = NULL;
  path = kiln_xasprintf ("%s/" RECORD_NAME, work_dir);
  return path;
}

int
kiln_ec2_launch_record (const char *work_dir, const struct kiln_ec2_launch *l, kiln_error **err)
{
  _cleanup_free_ char *path = record_path (work_dir);
  _cleanup_json_ json_t *j = json_pack ("{s:s, s:s?, s:s, s:s?, s:s?}", "clientToken", l->client_token, "instanceId",
                                        l->instance_id, "region", l->region, "endpointUrl", l->endpoint_url,
                                        "profile", l->profile);
  _cleanup_free_ char *text = json_dumps (j, JSON_INDENT (2) | JSON_PRESERVE_ORDER);
  return kiln_write_file_atomic (path, text, strlen (text), 0600, err);
}

void
kiln_ec2_launch_forget (const char *work_dir)
{
  _cleanup_free_ char *path = record_path (work_dir);
  unlink (path);
}

/* The ids of the instances launched with token that are not terminated. */
static int
instances_of_token (struct kiln_aws_client *ec2, const char *token, char ***out, kiln_error **err)
{
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  const char *values[] = {token};
  kiln_aws_params_add_filter (&p, "client-token", values, 1);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (ec2, "DescribeInstances", &p, &doc, NULL, err);
  kiln_aws_params_release (&p);
  if (r < 0)
    return -1;
  char **ids = calloc (1, sizeof *ids);
  for (xmlNode *res = kiln_aws_xml_find (kiln_aws_xml_root (doc), "reservationSet/item"); res;
       res = kiln_aws_xml_next (res))
    for (xmlNode *it = kiln_aws_xml_find (res, "instancesSet/item"); it; it = kiln_aws_xml_next (it))
      {
        _cleanup_free_ char *id = kiln_aws_xml_text (it, "instanceId");
        _cleanup_free_ char *state = kiln_aws_xml_text (it, "instanceState/name");
        if (id && !(state && strcmp (state, "terminated") == 0))
          kiln_strv_push (&ids, id);
      }
  xmlFreeDoc (doc);
  *out = ids;
  return 0;
}

int
kiln_ec2_launch_reap (const char *work_dir, kiln_error **err)
{
  _cleanup_free_ char *path = record_path (work_dir);
  if (access (path, F_OK) < 0)
    return 0;
  json_error_t jerr;
  _cleanup_json_ json_t *j = json_load_file (path, 0, &jerr);
  const char *token = json_string_value (json_object_get (j, "clientToken"));
  const char *region = json_string_value (json_object_get (j, "region"));
  if (j == NULL || token == NULL || region == NULL)
    {
      /* Torn or foreign: kiln writes it atomically, so it is not ours. */
      kiln_log_warn ("ignoring '%s': not a launch record kiln wrote", path);
      return 0;
    }
  const char *instance_id = json_string_value (json_object_get (j, "instanceId"));
  const char *endpoint = json_string_value (json_object_get (j, "endpointUrl"));
  const char *profile = json_string_value (json_object_get (j, "profile"));

  struct kiln_aws_config *cfg = NULL;
  if (kiln_aws_config_load (NULL, profile, &cfg, err) < 0)
    return kiln_error_prefix (err, "terminate what a killed kiln launched (%s)", path);
  /* Few quick attempts: this runs before the user's own command. */
  struct kiln_aws_client_options opts = {.endpoint_url = endpoint, .region = region,
                                         .retry = {.max_attempts = 2}, .timeout_seconds = 20};
  struct kiln_aws_client *ec2 = NULL;
  _cleanup_strv_ char **ids = NULL;
  int r = kiln_aws_client_new (cfg, "ec2", &opts, &ec2, err);
  if (r == 0 && instance_id)
    ids = kiln_strv_new (instance_id, NULL);
  else if (r == 0)
    r = instances_of_token (ec2, token, &ids, err);
  if (r == 0 && ids[0])
    {
      struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
      kiln_aws_params_add_list (&p, "InstanceId", (const char *const *) ids, kiln_strv_length (ids));
      xmlDoc *doc = NULL;
      struct kiln_aws_error aws = {0};
      r = kiln_aws_ec2_call (ec2, "TerminateInstances", &p, &doc, &aws, err);
      kiln_aws_params_release (&p);
      xmlFreeDoc (doc);
      if (r < 0 && kiln_aws_error_is (&aws, "InvalidInstanceID.NotFound"))
        {
          kiln_error_freep (err);
          r = 0;
        }
      kiln_aws_error_release (&aws);
      if (r == 0)
        for (size_t i = 0; ids[i]; i++)
          kiln_log_warn ("ec2: terminated %s in %s, left running by a kiln that was killed", ids[i], region);
    }
  kiln_aws_client_free (ec2);
  kiln_aws_config_free (cfg);
  if (r < 0)
    return kiln_error_prefix (err, "terminate %s (launched by a kiln that was killed, in %s)",
                              instance_id ? instance_id : "the instance", region);
  unlink (path);
  return 0;
}
