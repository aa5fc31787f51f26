/* build.h - the image build pipeline: a plan run on a driver, as EC2 Image
 * Builder runs a recipe.
 *
 *   build instance from the parent → build and validate phases of every
 *   component, in recipe order → clean shutdown → capture the disk →
 *   a fresh test instance from the capture → test phases → distribute
 *   (cloud drivers: copies to other regions, tags, launch permissions) →
 *   publish.
 *
 * Publishing writes DIR/<name>-<version>.<ext> and its .manifest.json (a
 * cloud driver's image stays in the cloud: only the manifest, naming it, is
 * written); the
 * manifest is written last and is the mark of a complete build, and a
 * failed or interrupted build publishes neither.  Every instance, overlay and
 * temporary file is gone when kiln_build_run returns, whatever the ending,
 * unless keep_on_failure keeps a failed build's instance for inspection.
 * The executor's logs of every instance are kept under DIR/logs/. */
#ifndef KILN_BUILDER_BUILD_H
#define KILN_BUILDER_BUILD_H

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

#include "distribution.h"
#include "driver.h"
#include "error.h"
#include "infrastructure.h"
#include "recipe.h"

struct kiln_build_opts {
  const struct kiln_driver *driver;
  const char *output_dir;
  enum kiln_image_format format;
  bool format_chosen;        /* format was asked for (cloud drivers refuse it) */
  /* The published file compressed (qcow2: compressed clusters; vmdk:
   * streamOptimized); made while the test stage runs.  Default: a plain
   * file, the fastest to write. */
  bool compress;
  bool keep_on_failure;
  int vcpus;                 /* 0: driver default */
  uint64_t memory_mib;       /* 0: driver default */
  bool network;              /* give instances a network */
  /* Local drivers: the build instance's OS shuts down before the capture,
   * rather than its file systems frozen and the machine stopped (faster;
   * the default where the guest's agent can freeze). */
  bool full_shutdown;
  /* Local hypervisor drivers: --accel (auto, kvm, tcg; NULL: $KILN_ACCEL,
   * else auto) and --cpu (NULL: the accelerator's model). */
  const char *accel;
  const char *cpu_model;
  int boot_timeout_seconds;  /* 0: 600 */
  int boot_stall_seconds;    /* console silence that is a stalled boot (0: the driver's; -1: never) */
  FILE *progress;            /* stage and step progress; NULL: none */
  /* Cloud drivers (ec2): account and infrastructure settings; NULL for
   * local drivers or the defaults. */
  const struct kiln_cloud_settings *cloud;
  /* --distribution: where the image goes and what it is called (NULL: the
   * build region only, named NAME-VERSION-STAMP); --infrastructure, for the
   * manifest (its settings are already in the fields above). */
  const struct kiln_distribution_config *distribution;
  const struct kiln_infrastructure *infrastructure;
  /* A local build that also ends as an image in a cloud: the published disk
   * is imported into this cloud driver (with cloud's settings) and
   * distributed there as a cloud build's would be.  NULL: no import. */
  const struct kiln_driver *import_driver;
  volatile sig_atomic_t *cancel;
};

struct kiln_build_result {
  bool ok;
  json_t *manifest;          /* the published manifest, on success */
  char *image_path;          /* published image, on success (a cloud driver: its id) */
  char *manifest_path;
  char *logs_dir;            /* the executor logs of this build */
  char *kept;                /* what keep_on_failure kept, for the user */
};

/* Whether opts make sense for plan on opts->driver (build_options.c), before
 * anything is started: a parent image the driver can launch (a disk image
 * file for local drivers, an image id or SSM parameter for cloud ones),
 * local-only options (--accel, --cpu, --boot-stall-timeout, --no-network,
 * --format) not given to a cloud driver, cloud settings (endpoint, region,
 * profile, instance type) not given to a local build that imports nowhere.
 * 0, or -1 with *err: KILN_ERR_INVALID for options that contradict each
 * other (a usage error), KILN_ERR_UNSUPPORTED for a parent the driver
 * cannot launch.  kiln_build_run checks the same first. */
int kiln_build_check (const struct kiln_plan *plan, const struct kiln_build_opts *opts, kiln_error **err);

/* Returns 0 when the build succeeded and was published; -1 otherwise, with
 * err naming the stage, component, step and the step's output. */
int kiln_build_run (const struct kiln_plan *plan, const struct kiln_build_opts *opts, struct kiln_build_result *res,
                    kiln_error **err);
void kiln_build_result_release (struct kiln_build_result *res);

#endif
