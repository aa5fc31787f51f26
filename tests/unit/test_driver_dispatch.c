/* test_driver_dispatch.c - the dispatchers of drivers/driver.c report an
 * optional slot a driver lacks as "driver 'X' does not support Y"
 * (KILN_ERR_UNSUPPORTED), before making any instance for it.
 *
 * Two drivers: the registered `fake` (no delete_image, distribute,
 * import_image, export_image) and a bare one made here with only the
 * required slots (no shutdown, capture, console_tail either), which counts
 * how often its slots are called. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "driver.h"
#include "fsutil.h"
#include "tap.h"
#include "xalloc.h"

#define _unused_ __attribute__ ((unused))

static int bare_creates, bare_starts, bare_destroys;

static int
bare_create (struct kiln_instance *inst _unused_, const struct kiln_instance_spec *spec _unused_,
             kiln_error **err _unused_)
{
  bare_creates++;
  return 0;
}

static int
bare_start (struct kiln_instance *inst _unused_, int timeout_seconds _unused_, kiln_error **err _unused_)
{
  bare_starts++;
  return 0;
}

static int
bare_destroy (struct kiln_instance *inst _unused_)
{
  bare_destroys++;
  return 0;
}

static const struct kiln_target_ops bare_ops = {.name = "bare"};

static const struct kiln_driver bare_driver = {
  .name = "bare",
  .create = bare_create,
  .start = bare_start,
  .destroy = bare_destroy,
  .target_ops = &bare_ops,
};

static bool
unsupported (const kiln_error *err, const char *message)
{
  if (err == NULL)
    {
      printf ("# no error\n");
      return false;
    }
  if (strcmp (kiln_error_message (err), message) != 0 || err->code != KILN_ERR_UNSUPPORTED)
    {
      printf ("# got code %d, '%s'\n# want '%s'\n", err->code, kiln_error_message (err), message);
      return false;
    }
  return true;
}

static bool
test_bare_instance_slots (void)
{
  struct kiln_instance_spec spec = {.name = "build"};
  struct kiln_instance *inst = NULL;
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (kiln_instance_create (&bare_driver, &spec, &inst, &err) == 0);
  CHECK (kiln_instance_start (inst, 10, &err) == 0 && inst->started);

  CHECK (kiln_instance_shutdown (inst, 10, &err) == -1);
  CHECK (unsupported (err, "driver 'bare' does not support shutting an instance down"));
  CHECK (inst->started); /* not shut down: still counted as running */
  kiln_error_freep (&err);

  struct kiln_capture_spec cap = {.output = "/nonexistent/out.qcow2"};
  CHECK (kiln_instance_capture (inst, &cap, &err) == -1);
  CHECK (unsupported (err, "driver 'bare' does not support capturing an image"));

  CHECK (kiln_instance_console_tail (inst, 100) == NULL);
  kiln_instance_destroy (inst);
  CHECK (bare_creates == 1 && bare_starts == 1 && bare_destroys == 1);
  return true;
}

static bool
test_bare_image_slots (void)
{
  /* The image dispatchers check the slot before creating an instance. */
  bare_creates = 0;
  struct kiln_instance_spec spec = {.name = "image"};
  _cleanup_error_ kiln_error *err = NULL;
  CHECK (kiln_image_delete (&bare_driver, &spec, "img-1", &err) == -1);
  CHECK (unsupported (err, "driver 'bare' does not support deleting an image"));
  kiln_error_freep (&err);

  struct kiln_image_distribution d = {.region = "us-east-1"};
  CHECK (kiln_image_distribute (&bare_driver, &spec, "img-1", &d, 1, &err) == -1);
  CHECK (unsupported (err, "driver 'bare' does not support distributing an image"));
  CHECK (d.image_id == NULL);
  CHECK (bare_creates == 0);
  return true;
}

static bool
test_fake_lacks_image_slots (void)
{
  const struct kiln_driver *fake = kiln_driver_find ("fake");
  CHECK (fake != NULL);
  struct kiln_instance_spec spec = {.name = "transfer"};
  struct kiln_image_transfer t = {.name = "x"};
  _cleanup_error_ kiln_error *err = NULL;

  CHECK (kiln_image_export (fake, &spec, "img-1", "/nonexistent/out.raw", &t, &err) == -1);
  CHECK (unsupported (err, "driver 'fake' does not support exporting an image to a disk"));
  kiln_error_freep (&err);

  CHECK (kiln_image_delete (fake, &spec, "img-1", &err) == -1);
  CHECK (unsupported (err, "driver 'fake' does not support deleting an image"));
  kiln_error_freep (&err);

  /* Import reads the disk first (qemu-img info): give it a real raw one. */
  _cleanup_free_ char *dir = NULL;
  CHECK (kiln_make_temp_dir ("kiln-dispatch", &dir, &err) == 0);
  _cleanup_free_ char *disk = NULL;
  disk = kiln_xasprintf ("%s/disk.raw", dir);
  FILE *f = fopen (disk, "we");
  CHECK (f != NULL);
  CHECK (ftruncate (fileno (f), 1 << 20) == 0);
  fclose (f);
  int r = kiln_image_import (fake, &spec, disk, &t, &err);
  unlink (disk);
  rmdir (dir);
  CHECK (r == -1);
  CHECK (unsupported (err, "driver 'fake' does not support importing a disk as an image"));
  CHECK (t.image_id == NULL && t.format == NULL);
  return true;
}

int
main (void)
{
  tap_ok (test_bare_instance_slots (), "no shutdown/capture/console_tail: 'does not support' and nothing called");
  tap_ok (test_bare_image_slots (), "no delete_image/distribute: refused before any instance is made");
  tap_ok (test_fake_lacks_image_slots (), "the fake driver: export, delete, import refused with exact messages");
  return tap_done ();
}
