/* test_qemu_argv.c - golden tests of the QEMU command line (TAP output).
 *
 * Usage: test_qemu_argv DATA_DIR (tests/data/qemu-argv).  Each NAME.json
 * there is a struct kiln_qemu_config written as JSON (the field names of the
 * struct; "accel" is "kvm" or "tcg").  The argument vector built from it is
 * compared with NAME.argv, one argument per line; a config the builder must
 * refuse has NAME.err instead, holding the error message.  With
 * QEMU_ARGV_REGENERATE=1 in the environment the .argv/.err files are written
 * from what the builder produces now (review the diff before committing). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "buf.h"
#include "cleanup.h"
#include "fsutil.h"
#include "golden_files.h"
#include "process.h"
#include "qemu/qemu_argv.h"
#include "xalloc.h"

static int test_count;
static int failure_count;

static void
report (bool ok, const char *name)
{
  test_count++;
  if (!ok)
    failure_count++;
  printf ("%s %d - %s\n", ok ? "ok" : "not ok", test_count, name);
  fflush (stdout);
}

static const char *
string_field (json_t *config, const char *key)
{
  return json_string_value (json_object_get (config, key));
}

/* Fills cfg from the JSON object; strings stay owned by config. */
static int
config_from_json (json_t *config, struct kiln_qemu_config *cfg)
{
  memset (cfg, 0, sizeof *cfg);
  const char *accel = string_field (config, "accel");
  if (accel && strcmp (accel, "kvm") == 0)
    cfg->accel = KILN_ACCEL_KVM;
  else if (accel && strcmp (accel, "tcg") != 0)
    return -1;
  cfg->binary = string_field (config, "binary");
  cfg->name = string_field (config, "name");
  cfg->machine = string_field (config, "machine");
  cfg->cpu = string_field (config, "cpu");
  cfg->vcpus = (int) json_integer_value (json_object_get (config, "vcpus"));
  cfg->memory_mib = (uint64_t) json_integer_value (json_object_get (config, "memory_mib"));
  cfg->disk_path = string_field (config, "disk_path");
  cfg->disk_format = string_field (config, "disk_format");
  cfg->qmp_socket = string_field (config, "qmp_socket");
  cfg->qga_socket = string_field (config, "qga_socket");
  cfg->serial_log = string_field (config, "serial_log");
  cfg->network = json_is_true (json_object_get (config, "network"));
  return 0;
}

static bool
run_case (const char *dir, const char *name, bool regenerate)
{
  _cleanup_free_ char *json_path = NULL, *argv_path = NULL, *err_path = NULL;
  json_path = kiln_xasprintf ("%s/%s.json", dir, name);
  argv_path = kiln_xasprintf ("%s/%s.argv", dir, name);
  err_path = kiln_xasprintf ("%s/%s.err", dir, name);
  json_error_t je;
  _cleanup_json_ json_t *config = json_load_file (json_path, 0, &je);
  if (config == NULL)
    {
      printf ("# %s: %s (line %d)\n", json_path, je.text, je.line);
      return false;
    }
  struct kiln_qemu_config cfg;
  if (config_from_json (config, &cfg) < 0)
    {
      printf ("# %s: bad accel\n", json_path);
      return false;
    }

  _cleanup_strv_ char **argv = NULL;
  _cleanup_error_ kiln_error *err = NULL;
  struct kiln_buf got = KILN_BUF_INIT;
  const char *expected_path = argv_path, *other_path = err_path;
  if (kiln_qemu_build_argv (&cfg, &argv, &err) < 0)
    {
      kiln_buf_printf (&got, "%s\n", kiln_error_message (err));
      expected_path = err_path;
      other_path = argv_path;
    }
  else
    for (char **a = argv; *a; a++)
      kiln_buf_printf (&got, "%s\n", *a);

  bool ok;
  if (regenerate)
    {
      _cleanup_error_ kiln_error *werr = NULL;
      ok = kiln_write_file_atomic (expected_path, got.data, got.len, 0644, &werr) == 0;
      unlink (other_path);
      if (!ok)
        printf ("# %s\n", kiln_error_message (werr));
    }
  else
    {
      struct kiln_buf want = KILN_BUF_INIT;
      _cleanup_error_ kiln_error *rerr = NULL;
      if (kiln_read_file (expected_path, &want, &rerr) < 0)
        {
          printf ("# %s\n", kiln_error_message (rerr));
          golden_print_diff (kiln_buf_str (&got), "");
          ok = false;
        }
      else
        {
          ok = strcmp (kiln_buf_str (&got), kiln_buf_str (&want)) == 0;
          if (!ok)
            golden_print_diff (kiln_buf_str (&got), kiln_buf_str (&want));
        }
      kiln_buf_release (&want);
    }
  kiln_buf_release (&got);
  return ok;
}

int
main (int argc, char **argv)
{
  if (argc != 2)
    {
      fprintf (stderr, "usage: %s DATA_DIR\n", argv[0]);
      return 2;
    }
  const char *dir = argv[1];
  const char *regen = getenv ("QEMU_ARGV_REGENERATE");
  bool regenerate = regen && strcmp (regen, "1") == 0;

  _cleanup_strv_ char **names = golden_stems (dir, ".json");
  if (names == NULL)
    {
      printf ("Bail out! cannot open %s\n", dir);
      return 1;
    }
  size_t n = kiln_strv_length (names);
  for (size_t i = 0; i < n; i++)
    report (run_case (dir, names[i], regenerate), names[i]);

  /* Pure: the same config gives the same vector twice. */
  struct kiln_qemu_config cfg = {
    .binary = "qemu-system-x86_64", .name = "x", .vcpus = 1, .memory_mib = 64, .disk_path = "/d",
    .qmp_socket = "/q", .qga_socket = "/g", .serial_log = "/s"};
  _cleanup_strv_ char **a1 = NULL, **a2 = NULL;
  bool same = kiln_qemu_build_argv (&cfg, &a1, NULL) == 0 && kiln_qemu_build_argv (&cfg, &a2, NULL) == 0
              && kiln_strv_length (a1) == kiln_strv_length (a2);
  for (size_t i = 0; same && a1[i]; i++)
    same = strcmp (a1[i], a2[i]) == 0;
  report (same, "the builder is deterministic");
  report (n >= 4, "at least four golden cases");

  printf ("1..%d\n", test_count);
  return failure_count ? 1 : 0;
}
