/* driver.c - the driver registry and the instance dispatchers (see
 * driver.h).  The dispatchers are the only callers of driver slots: they
 * check that an optional slot exists, keep the started/destroyed state, and
 * put the driver's and instance's names in front of errors. */
#include "driver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cleanup.h"
#include "disk_image.h"
#include "log.h"
#include "xalloc.h"

extern const struct kiln_driver kiln_driver_fake;
extern const struct kiln_driver kiln_driver_qemu;
extern const struct kiln_driver kiln_driver_ec2;

static const struct kiln_driver *const drivers[] = {
  &kiln_driver_qemu,
  &kiln_driver_ec2,
  &kiln_driver_fake,
  NULL,
};

const struct kiln_driver *
kiln_driver_find (const char *name)
{
  for (const struct kiln_driver *const *d = drivers; *d; d++)
    if (strcmp ((*d)->name, name) == 0)
      return *d;
  return NULL;
}

const char *
kiln_driver_names (void)
{
  static char *names;
  if (names == NULL)
    {
      struct kiln_buf b = KILN_BUF_INIT;
      for (const struct kiln_driver *const *d = drivers; *d; d++)
        kiln_buf_printf (&b, "%s%s", d == drivers ? "" : ", ", (*d)->name);
      names = kiln_buf_steal (&b);
    }
  return names;
}

static int
unsupported (struct kiln_instance *inst, const char *what, kiln_error **err)
{
  return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0, "driver '%s' does not support %s", inst->driver->name, what);
}

int
kiln_instance_create (const struct kiln_driver *driver, const struct kiln_instance_spec *spec,
                      struct kiln_instance **out, kiln_error **err)
{
  struct kiln_instance *inst = calloc (1, sizeof *inst);
  if (inst == NULL)
    abort ();
  inst->driver = driver;
  inst->name = kiln_xstrdup (spec->name ? spec->name : "instance");
  if (driver->priv_size)
    {
      inst->priv = calloc (1, driver->priv_size);
      if (inst->priv == NULL)
        abort ();
    }
  inst->target.ops = driver->target_ops;
  inst->target.priv = inst;
  inst->target.cancel = spec->cancel;
  if (driver->create (inst, spec, err) < 0)
    {
      kiln_error_prefix (err, "%s: create %s instance", driver->name, inst->name);
      kiln_instance_destroy (inst);
      return -1;
    }
  *out = inst;
  return 0;
}

int
kiln_instance_start (struct kiln_instance *inst, int timeout_seconds, kiln_error **err)
{
  if (inst->driver->start (inst, timeout_seconds, err) < 0)
    return kiln_error_prefix (err, "%s: start %s instance", inst->driver->name, inst->name);
  inst->started = true;
  return 0;
}

struct kiln_target *
kiln_instance_target (struct kiln_instance *inst)
{
  return &inst->target;
}

int
kiln_instance_shutdown (struct kiln_instance *inst, int timeout_seconds, kiln_error **err)
{
  if (inst->driver->shutdown == NULL)
    return unsupported (inst, "shutting an instance down", err);
  if (inst->driver->shutdown (inst, timeout_seconds, err) < 0)
    return kiln_error_prefix (err, "%s: shut down %s instance", inst->driver->name, inst->name);
  inst->started = false;
  return 0;
}

int
kiln_instance_capture (struct kiln_instance *inst, const struct kiln_capture_spec *spec, kiln_error **err)
{
  if (inst->driver->capture == NULL)
    return unsupported (inst, "capturing an image", err);
  if (inst->driver->capture (inst, spec, err) < 0)
    return kiln_error_prefix (err, "%s: capture %s instance", inst->driver->name, inst->name);
  return 0;
}

void
kiln_image_distribution_release (struct kiln_image_distribution *d)
{
  /* The settings belong to whoever filled them; only the results are ours. */
  free (d->image_id);
  d->image_id = NULL;
  kiln_strv_free (d->snapshot_ids);
  d->snapshot_ids = NULL;
}

int
kiln_image_delete (const struct kiln_driver *driver, const struct kiln_instance_spec *spec, const char *image_id,
                   kiln_error **err)
{
  if (driver->delete_image == NULL)
    return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0, "driver '%s' does not support deleting an image",
                           driver->name);
  struct kiln_instance *inst = NULL;
  if (kiln_instance_create (driver, spec, &inst, err) < 0)
    return kiln_error_prefix (err, "delete image %s", image_id);
  int r = driver->delete_image (inst, image_id, err);
  if (r < 0)
    kiln_error_prefix (err, "%s: delete image %s", driver->name, image_id);
  kiln_instance_destroy (inst);
  return r;
}

int
kiln_image_distribute (const struct kiln_driver *driver, const struct kiln_instance_spec *spec, const char *image_id,
                       struct kiln_image_distribution *d, size_t n, kiln_error **err)
{
  if (driver->distribute == NULL)
    return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0, "driver '%s' does not support distributing an image",
                           driver->name);
  struct kiln_instance *inst = NULL;
  if (kiln_instance_create (driver, spec, &inst, err) < 0)
    return kiln_error_prefix (err, "distribute image %s", image_id);
  int r = driver->distribute (inst, image_id, d, n, err);
  if (r < 0)
    kiln_error_prefix (err, "%s: distribute image %s", driver->name, image_id);
  kiln_instance_destroy (inst);
  return r;
}

void
kiln_image_transfer_release (struct kiln_image_transfer *t)
{
  free (t->image_id);
  free (t->snapshot_id);
  t->image_id = t->snapshot_id = NULL;
}

/* The slot on a purpose-made instance: import (image_id NULL) or export. */
static int
image_transfer (const struct kiln_driver *driver, const struct kiln_instance_spec *spec, const char *image_id,
                const char *path, struct kiln_image_transfer *t, kiln_error **err)
{
  bool import = image_id == NULL;
  if (import ? driver->import_image == NULL : driver->export_image == NULL)
    return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0, "driver '%s' does not support %s", driver->name,
                           import ? "importing a disk as an image" : "exporting an image to a disk");
  struct kiln_instance *inst = NULL;
  if (kiln_instance_create (driver, spec, &inst, err) < 0)
    return -1;
  int r = import ? driver->import_image (inst, path, t, err) : driver->export_image (inst, image_id, path, t, err);
  if (r < 0)
    kiln_error_prefix (err, "%s: %s", driver->name, import ? "import" : "export");
  kiln_instance_destroy (inst);
  return r;
}

int
kiln_image_import (const struct kiln_driver *driver, const struct kiln_instance_spec *spec, const char *path,
                   struct kiln_image_transfer *t, kiln_error **err)
{
  struct kiln_disk_info info = {0};
  if (kiln_disk_info (path, &info, err) < 0)
    return -1;
  int r;
  if (info.backing_file)
    r = kiln_fail_invalid (err, "'%s' has a backing file (%s); import a standalone disk (kiln image convert it "
                           "first)", path, info.backing_file);
  else
    {
      t->format = info.format;
      r = image_transfer (driver, spec, NULL, path, t, err);
      t->format = NULL;
    }
  kiln_disk_info_release (&info);
  return r;
}

int
kiln_image_export (const struct kiln_driver *driver, const struct kiln_instance_spec *spec, const char *image_id,
                   const char *raw_path, struct kiln_image_transfer *t, kiln_error **err)
{
  return image_transfer (driver, spec, image_id, raw_path, t, err);
}

int
kiln_drivers_reap (const char *work_dir, kiln_error **err)
{
  int r = 0;
  for (const struct kiln_driver *const *d = drivers; *d; d++)
    {
      if ((*d)->reap == NULL)
        continue;
      kiln_error *e = NULL;
      if ((*d)->reap (work_dir, &e) < 0)
        {
          /* Offer the directory to every driver; report the first failure. */
          if (r == 0)
            {
              kiln_error_prefix (&e, "%s", (*d)->name);
              if (err)
                kiln_error_move (err, &e);
            }
          kiln_error_free (e);
          r = -1;
        }
    }
  return r;
}

char *
kiln_instance_console_tail (struct kiln_instance *inst, size_t max_bytes)
{
  if (inst->driver->console_tail == NULL)
    return NULL;
  return inst->driver->console_tail (inst, max_bytes);
}

void
kiln_instance_destroy (struct kiln_instance *inst)
{
  if (inst == NULL)
    return;
  if (!inst->destroyed && inst->driver->destroy (inst) < 0)
    kiln_log_warn ("%s: destroying %s instance did not complete", inst->driver->name, inst->name);
  inst->destroyed = true;
  free (inst->target.scratch_dir);
  free (inst->priv);
  free (inst->name);
  free (inst->id);
  free (inst->location);
  free (inst->accel);
  free (inst->cpu_model);
  free (inst->accel_reason);
  free (inst->boot_note);
  free (inst);
}

static const char *const format_names[] = {"qcow2", "raw", "vmdk", "vhd", "vhdx"};

const char *
kiln_image_format_name (enum kiln_image_format f)
{
  return format_names[f];
}

const char *
kiln_image_format_extension (enum kiln_image_format f)
{
  return format_names[f];
}

int
kiln_image_format_parse (const char *name, enum kiln_image_format *out, kiln_error **err)
{
  for (size_t i = 0; i < sizeof format_names / sizeof format_names[0]; i++)
    if (strcmp (format_names[i], name) == 0)
      {
        *out = (enum kiln_image_format) i;
        return 0;
      }
  return kiln_fail_invalid (err, "unknown image format '%s' (expected qcow2, raw, vmdk, vhd or vhdx)", name);
}
