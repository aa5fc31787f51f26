/* fuzz_build_config.c - libFuzzer target for the build's input files: an
 * Image Builder recipe (kiln_plan_make), infrastructure configuration or
 * distribution configuration (for the qemu or the ec2 driver).  The first
 * byte picks the reader and driver; the rest is the file, written to a
 * scratch file the readers open as users' files are.  Any input gives a
 * plan or configuration or an error naming FILE:LINE:COL, never a crash.
 * Seeds: tests/data/recipe, infrastructure and distribution, each behind
 * its selector byte. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cleanup.h"
#include "distribution.h"
#include "driver.h"
#include "fsutil.h"
#include "infrastructure.h"
#include "recipe.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static char *path;
  if (path == NULL)
    {
      int fd = kiln_make_temp_file ("kiln-fuzz-config", &path, NULL);
      if (fd < 0)
        abort ();
      close (fd);
    }
  if (size < 1)
    return 0;
  if (kiln_write_file_atomic (path, data + 1, size - 1, 0600, NULL) < 0)
    return 0;
  const struct kiln_driver *driver = kiln_driver_find (data[0] & 4 ? "ec2" : "qemu");
  _cleanup_error_ kiln_error *e = NULL;
  switch (data[0] % 3)
    {
    case 0:
      {
        struct kiln_plan *plan = NULL;
        if (kiln_plan_make (path, &plan, &e) == 0)
          kiln_plan_free (plan);
        break;
      }
    case 1:
      {
        struct kiln_infrastructure *infra = NULL;
        if (kiln_infrastructure_load (path, driver, &infra, &e) == 0)
          kiln_infrastructure_free (infra);
        break;
      }
    default:
      {
        struct kiln_distribution_config *dist = NULL;
        if (kiln_distribution_load (path, driver, &dist, &e) == 0)
          kiln_distribution_free (dist);
        break;
      }
    }
  return 0;
}
