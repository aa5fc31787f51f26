/* cmd_build.c - `kiln build RECIPE`: plan the recipe, run the pipeline on a
 * driver, publish.  Progress goes to stderr; --json prints the manifest on
 * stdout.  Exit status: 0 published, 1 failed, 2 usage, 128+N on signal N.
 *
 * Network: build and test instances have one, as Image Builder's instances
 * do, so a component's UpdateOS or `apt-get install` works (on the qemu
 * driver, QEMU's user-mode network: the guest reaches what this host
 * reaches, and this host itself at 10.0.2.2; nothing reaches the guest).
 * --no-network gives local instances no NIC at all, for hermetic builds;
 * cloud instances always have their VPC's network, so it is refused there. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build.h"
#include "cleanup.h"
#include "cli.h"
#include "driver.h"
#include "accel/accel.h"
#include "recipe.h"
#include "rundir.h"

static void
build_usage (FILE *out)
{
  fprintf (out,
           "usage: kiln build RECIPE [--driver NAME] [--output DIR] [--format qcow2|raw|vmdk|vhd|vhdx] [--compress]\n"
           "                  [--keep-on-failure] [--json] [--vcpus N] [--memory MIB] [--no-network] [--full-shutdown]\n"
           "                  [--boot-timeout SECONDS] [--plan]\n"
           "                  [--endpoint-url URL] [--region REGION] [--profile NAME] [--instance-type TYPE]\n"
           "                  [--infrastructure FILE] [--distribution FILE] [--import DRIVER]\n"
           "                  [--accel auto|kvm|tcg] [--cpu MODEL] [--boot-stall-timeout SECONDS]\n"
           "--plan prints the build plan (JSON) and builds nothing.\n"
           "--full-shutdown: the build instance's OS shuts down before its disk is captured; by default\n"
           "its file systems are frozen clean through the guest agent and the machine stopped (faster).\n"
           "--compress: a compressed image (qcow2 or vmdk), smaller and slower to make (made while the\n"
           "test stage runs); by default the image is written plainly, which is fastest.\n"
           "--no-network: instances get no network interface (by default they have user-mode networking).\n"
           "--infrastructure and --distribution take Image Builder's infrastructure and distribution\n"
           "configurations (YAML or JSON, the API's field names); flags win over them.\n"
           "--import ec2: a local build also ends as an AMI, imported and distributed there.\n"
           "--accel (default $KILN_ACCEL, else auto): auto uses KVM where a probe shows it runs guests\n"
           "faster than TCG (see kiln doctor); kvm is KVM or an error; tcg never touches /dev/kvm.\n"
           "--cpu MODEL: a fixed QEMU CPU model instead of host (KVM) or max (TCG).\n"
           "--boot-stall-timeout: a boot whose console is silent this long is started again once\n"
           "(default 60; 0: never).\n"
           "--endpoint-url, --region, --profile and --instance-type: the ec2 driver (AWS, or kiln-emulator).\n"
           "drivers: %s (default qemu); output directory default: kiln-output\n",
           kiln_driver_names ());
}

int
kiln_cmd_build (int argc, char **argv)
{
  static const struct option options[] = {
    {"driver", required_argument, NULL, 'd'},
    {"output", required_argument, NULL, 'o'},
    {"format", required_argument, NULL, 'f'},
    {"keep-on-failure", no_argument, NULL, 'k'},
    {"compress", no_argument, NULL, 'z'},
    {"full-shutdown", no_argument, NULL, 'Z'},
    {"json", no_argument, NULL, 'j'},
    {"vcpus", required_argument, NULL, 'c'},
    {"memory", required_argument, NULL, 'm'},
    {"no-network", no_argument, NULL, 'n'},
    {"boot-timeout", required_argument, NULL, 't'},
    {"plan", no_argument, NULL, 'p'},
    {"endpoint-url", required_argument, NULL, 'E'},
    {"region", required_argument, NULL, 'R'},
    {"profile", required_argument, NULL, 'P'},
    {"instance-type", required_argument, NULL, 'I'},
    {"infrastructure", required_argument, NULL, 'F'},
    {"distribution", required_argument, NULL, 'D'},
    {"import", required_argument, NULL, 'M'},
    {"accel", required_argument, NULL, 'A'},
    {"cpu", required_argument, NULL, 'C'},
    {"boot-stall-timeout", required_argument, NULL, 'S'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  const char *driver_name = "qemu", *output = "kiln-output", *format = "qcow2";
  const char *infra_path = NULL, *dist_path = NULL, *import_name = NULL, *accel = NULL, *cpu = NULL;
  bool keep = false, json_out = false, network = true, plan_only = false, format_given = false, compress = false;
  bool full_shutdown = false;
  struct kiln_cloud_settings cloud = {0};
  long vcpus = 0, memory = 0, boot_timeout = 0, boot_stall = 0;
  int opt;
  optind = 1;
  while ((opt = getopt_long (argc, argv, "d:o:f:h", options, NULL)) != -1)
    {
      char *end = NULL;
      switch (opt)
        {
        case 'd':
          driver_name = optarg;
          break;
        case 'o':
          output = optarg;
          break;
        case 'f':
          format = optarg;
          format_given = true;
          break;
        case 'E':
          cloud.endpoint_url = optarg;
          break;
        case 'R':
          cloud.region = optarg;
          break;
        case 'P':
          cloud.profile = optarg;
          break;
        case 'I':
          cloud.instance_type = optarg;
          break;
        case 'F':
          infra_path = optarg;
          break;
        case 'D':
          dist_path = optarg;
          break;
        case 'M':
          import_name = optarg;
          break;
        case 'A':
          accel = optarg;
          break;
        case 'C':
          cpu = optarg;
          break;
        case 'S':
          {
            long v = strtol (optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || v < 0 || v > 86400)
              {
                fprintf (stderr, "kiln build: --boot-stall-timeout takes seconds (0 for never), not '%s'\n", optarg);
                return KILN_EXIT_USAGE;
              }
            boot_stall = v == 0 ? -1 : v;
            break;
          }
        case 'k':
          keep = true;
          break;
        case 'z':
          compress = true;
          break;
        case 'Z':
          full_shutdown = true;
          break;
        case 'j':
          json_out = true;
          break;
        case 'n':
          network = false;
          break;
        case 'p':
          plan_only = true;
          break;
        case 'c':
        case 'm':
        case 't':
          {
            long v = strtol (optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || v <= 0)
              {
                fprintf (stderr, "kiln build: --%s takes a positive number, not '%s'\n",
                         opt == 'c' ? "vcpus" : opt == 'm' ? "memory" : "boot-timeout", optarg);
                return KILN_EXIT_USAGE;
              }
            *(opt == 'c' ? &vcpus : opt == 'm' ? &memory : &boot_timeout) = v;
            break;
          }
        case 'h':
          build_usage (stdout);
          return KILN_EXIT_OK;
        default:
          build_usage (stderr);
          return KILN_EXIT_USAGE;
        }
    }
  if (optind != argc - 1)
    {
      build_usage (stderr);
      return KILN_EXIT_USAGE;
    }
  const char *recipe = argv[optind];

  _cleanup_error_ kiln_error *e = NULL;
  const struct kiln_driver *driver = kiln_driver_find (driver_name);
  if (driver == NULL)
    {
      fprintf (stderr, "kiln build: unknown driver '%s' (known: %s)\n", driver_name, kiln_driver_names ());
      return KILN_EXIT_USAGE;
    }
  const struct kiln_driver *import_driver = NULL;
  if (import_name && (import_driver = kiln_driver_find (import_name)) == NULL)
    {
      fprintf (stderr, "kiln build: --import takes a cloud driver (ec2): unknown driver '%s'\n", import_name);
      return KILN_EXIT_USAGE;
    }
  enum kiln_accel_mode accel_mode;
  if (!driver->cloud_images && kiln_accel_mode_parse (accel, &accel_mode, &e) < 0)
    {
      fprintf (stderr, "kiln build: %s\n", kiln_error_message (e));
      return KILN_EXIT_USAGE;
    }
  enum kiln_image_format fmt;
  if (kiln_image_format_parse (format, &fmt, &e) < 0)
    {
      fprintf (stderr, "kiln build: %s\n", kiln_error_message (e));
      return KILN_EXIT_USAGE;
    }

  /* Clean up after kiln commands that were killed outright. */
  if (kiln_rundir_reap_stale (kiln_drivers_reap, &e) < 0)
    {
      fprintf (stderr, "kiln: warning: %s\n", kiln_error_message (e));
      kiln_error_freep (&e);
    }

  _cleanup_ (kiln_plan_free) struct kiln_plan *plan = NULL;
  if (kiln_plan_make (recipe, &plan, &e) < 0)
    {
      fprintf (stderr, "%s\n", kiln_error_message (e));
      return KILN_EXIT_FAILED;
    }
  if (plan_only)
    {
      _cleanup_json_ json_t *pj = kiln_plan_to_json (plan);
      _cleanup_free_ char *text = json_dumps (pj, JSON_INDENT (2) | JSON_PRESERVE_ORDER);
      printf ("%s\n", text);
      return KILN_EXIT_OK;
    }
  /* Image Builder's configurations: what they say, unless a flag said it. */
  _cleanup_ (kiln_infrastructure_free) struct kiln_infrastructure *infra = NULL;
  _cleanup_ (kiln_distribution_free) struct kiln_distribution_config *dist = NULL;
  if ((infra_path && kiln_infrastructure_load (infra_path, driver, &infra, &e) < 0)
      || (dist_path && kiln_distribution_load (dist_path, import_driver ? import_driver : driver, &dist, &e) < 0))
    {
      fprintf (stderr, "kiln build: %s\n", kiln_error_message (e));
      return KILN_EXIT_FAILED;
    }
  if (infra)
    {
      if (vcpus == 0)
        vcpus = infra->vcpus;
      if (memory == 0)
        memory = (long) infra->memory_mib;
      if (infra->terminate_instance_on_failure == 0)
        keep = true;
      cloud.instance_types = (const char *const *) infra->instance_types;
      cloud.subnet_id = infra->subnet_id;
      cloud.security_group_ids = (const char *const *) infra->security_group_ids;
      cloud.instance_profile_name = infra->instance_profile_name;
      cloud.key_pair = infra->key_pair;
      cloud.tags = (const char *const *) infra->resource_tags;
    }

  struct kiln_build_opts bo = {
    .driver = driver,
    .output_dir = output,
    .format = fmt,
    .format_chosen = format_given,
    .compress = compress,
    .full_shutdown = full_shutdown,
    .keep_on_failure = keep,
    .vcpus = (int) vcpus,
    .memory_mib = (uint64_t) memory,
    .network = network,
    .accel = accel,
    .cpu_model = cpu,
    .boot_timeout_seconds = (int) boot_timeout,
    .boot_stall_seconds = (int) boot_stall,
    .progress = stderr,
    .cancel = &kiln_cli_cancel,
    /* Cloud settings given to a local build that imports nowhere reach
     * kiln_build_check, which refuses them. */
    .cloud = driver->cloud_images || import_driver || cloud.endpoint_url || cloud.region || cloud.profile
                 || cloud.instance_type ? &cloud : NULL,
    .import_driver = import_driver,
    .infrastructure = infra,
    .distribution = dist,
  };
  /* What the options say against the plan and the driver: a
   * contradiction is a usage error, a parent the driver cannot launch a
   * failure. */
  if (kiln_build_check (plan, &bo, &e) < 0)
    {
      fprintf (stderr, "kiln build: %s\n", kiln_error_message (e));
      return e->code == KILN_ERR_INVALID ? KILN_EXIT_USAGE : KILN_EXIT_FAILED;
    }
  struct kiln_build_result res;
  int r = kiln_build_run (plan, &bo, &res, &e);
  int status = KILN_EXIT_OK;
  if (r < 0)
    {
      fprintf (stderr, "kiln build: %s failed: %s\n", plan->name, kiln_error_message (e));
      if (res.logs_dir)
        fprintf (stderr, "kiln build: logs are in %s\n", res.logs_dir);
      if (res.kept)
        fprintf (stderr, "kiln build: kept %s\n", res.kept);
      status = kiln_cli_cancel ? 128 + (kiln_cli_signal ? kiln_cli_signal : 2) : KILN_EXIT_FAILED;
    }
  else
    {
      fprintf (stderr, "kiln build: published %s\n", res.image_path);
      if (json_out)
        {
          _cleanup_free_ char *text = json_dumps (res.manifest, JSON_INDENT (2) | JSON_PRESERVE_ORDER);
          printf ("%s\n", text);
        }
    }
  kiln_build_result_release (&res);
  return status;
}
