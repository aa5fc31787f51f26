/* build_options.c - which options a build's driver takes (build.h,
 * kiln_build_check).  Pure: the plan and the options in, a refusal out,
 * before any instance starts, so `kiln build`, the golden tests
 * (tests/data/build, on the fake and ec2 drivers) and any other caller of
 * kiln_build_run refuse the same things with the same words.
 *
 * Local hypervisor drivers (qemu, fake) launch disk image files and take
 * the accelerator, CPU, boot-stall, network and format options; cloud
 * drivers (ec2: cloud_images) launch images of their cloud (ami-... or an
 * SSM parameter), make the image there (no --format), and give instances
 * their cloud's network (no --no-network).  Cloud settings go to a cloud
 * driver, or to the one a local build imports into. */
#include "build.h"

int
kiln_build_check (const struct kiln_plan *plan, const struct kiln_build_opts *opts, kiln_error **err)
{
  const struct kiln_driver *driver = opts->driver;
  bool cloud = driver->cloud_images;
  if (opts->import_driver && (!opts->import_driver->cloud_images || cloud))
    return kiln_fail_invalid (err, "--import takes a cloud driver (ec2) and applies to local builds");
  if (cloud && (opts->accel || opts->cpu_model || opts->boot_stall_seconds))
    return kiln_fail_invalid (err, "--accel, --cpu and --boot-stall-timeout apply to local hypervisor drivers, "
                              "not to %s", driver->name);
  if (!cloud && !plan->parent_is_file)
    return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0, "parentImage '%s' is not a disk image file, which the "
                           "driver needs (driver %s)", plan->parent_image, driver->name);
  if (cloud && plan->parent_is_file)
    return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0, "parentImage '%s' is a disk image file; the driver "
                           "launches images in its cloud (ami-... or ssm:/parameter) (driver %s)",
                           plan->parent_image, driver->name);
  if (cloud && !opts->network)
    return kiln_fail_invalid (err, "--no-network does not apply to the %s driver: its instances have their "
                              "cloud's network", driver->name);
  if (cloud && opts->full_shutdown)
    return kiln_fail_invalid (err, "--full-shutdown does not apply to the %s driver: its instances stop as its "
                              "cloud stops them", driver->name);
  if (cloud && opts->compress)
    return kiln_fail_invalid (err, "--compress does not apply to the %s driver: its image is made in the cloud",
                              driver->name);
  if (opts->compress && opts->format != KILN_IMAGE_QCOW2 && opts->format != KILN_IMAGE_VMDK)
    return kiln_fail_invalid (err, "--compress applies to qcow2 and vmdk images, not %s",
                              kiln_image_format_name (opts->format));
  if (cloud && opts->format_chosen)
    return kiln_fail_invalid (err, "--format does not apply to the %s driver: its image is made in the cloud",
                              driver->name);
  const struct kiln_cloud_settings *c = opts->cloud;
  if (!cloud && opts->import_driver == NULL && c
      && (c->endpoint_url || c->region || c->profile || c->instance_type))
    return kiln_fail_invalid (err, "--endpoint-url, --region, --profile and --instance-type apply to cloud drivers "
                              "(ec2), not to %s (unless --import names one)", driver->name);
  return 0;
}
