/* test_build_config.c - the infrastructure and distribution configuration
 * readers (builder/infrastructure.c, builder/distribution.c) against golden
 * files, and AMI name expansion (TAP output).
 *
 * Usage: test_build_config DATA_DIR (tests/data).  Every NAME.yml, NAME.yaml
 * or NAME.json in DATA_DIR/infrastructure and DATA_DIR/distribution is read
 * for the qemu driver (local) and the ec2 driver (cloud); what the reader
 * gives is compared with NAME.qemu.out and NAME.ec2.out: the configuration's
 * JSON (*_to_json, indented) or "error: MESSAGE".  Files are read from inside
 * their folder, so the paths in messages are the bare file names.  With
 * KILN_REGENERATE=1 the .out files are written from what the readers give
 * now (review the diff before committing). */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "buf.h"
#include "cleanup.h"
#include "distribution.h"
#include "driver.h"
#include "fsutil.h"
#include "infrastructure.h"
#include "process.h"
#include "tap.h"
#include "xalloc.h"

static const char *const driver_names[] = {"qemu", "ec2", NULL};

/* What the reader for kind ("infrastructure" or "distribution") makes of
 * file for driver, as the .out files hold it. */
static void
load_output (const char *kind, const char *file, const struct kiln_driver *driver, struct kiln_buf *out)
{
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *j = NULL;
  if (strcmp (kind, "infrastructure") == 0)
    {
      struct kiln_infrastructure *infra = NULL;
      if (kiln_infrastructure_load (file, driver, &infra, &err) == 0)
        j = kiln_infrastructure_to_json (infra);
      kiln_infrastructure_free (infra);
    }
  else
    {
      struct kiln_distribution_config *dc = NULL;
      if (kiln_distribution_load (file, driver, &dc, &err) == 0)
        j = kiln_distribution_to_json (dc);
      kiln_distribution_free (dc);
    }
  if (j == NULL)
    {
      kiln_buf_printf (out, "error: %s\n", kiln_error_message (err));
      return;
    }
  _cleanup_free_ char *text = json_dumps (j, JSON_INDENT (2) | JSON_PRESERVE_ORDER);
  kiln_buf_printf (out, "%s\n", text);
}

static void
print_lines (const char *label, const char *text)
{
  printf ("# --- %s:\n", label);
  for (const char *p = text; *p;)
    {
      const char *e = strchr (p, '\n');
      int l = e ? (int) (e - p) : (int) strlen (p);
      printf ("#   %.*s\n", l, p);
      p = e ? e + 1 : p + l;
    }
}

/* Runs one input for one driver, in the current directory (the kind's
 * folder). */
static bool
run_case (const char *kind, const char *file, const char *stem, const char *driver_name, bool regenerate)
{
  const struct kiln_driver *driver = kiln_driver_find (driver_name);
  if (driver == NULL)
    {
      printf ("# no driver '%s' in this build\n", driver_name);
      return false;
    }
  _cleanup_free_ char *expected_path = NULL;
  expected_path = kiln_xasprintf ("%s.%s.out", stem, driver_name);
  struct kiln_buf got = KILN_BUF_INIT;
  load_output (kind, file, driver, &got);
  bool ok;
  if (regenerate)
    {
      _cleanup_error_ kiln_error *werr = NULL;
      ok = kiln_write_file_atomic (expected_path, got.data, got.len, 0644, &werr) == 0;
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
          print_lines ("got", kiln_buf_str (&got));
          ok = false;
        }
      else
        {
          ok = strcmp (kiln_buf_str (&got), kiln_buf_str (&want)) == 0;
          if (!ok)
            {
              print_lines ("got", kiln_buf_str (&got));
              print_lines ("want", kiln_buf_str (&want));
            }
        }
      kiln_buf_release (&want);
    }
  kiln_buf_release (&got);
  return ok;
}

static int
compare_names (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

static bool
has_suffix (const char *s, const char *suffix)
{
  size_t n = strlen (s), m = strlen (suffix);
  return n > m && strcmp (s + n - m, suffix) == 0;
}

/* The file names in dir ending with one of suffixes, sorted. */
static char **
list_files (const char *dir, const char *const *suffixes)
{
  char **names = NULL;
  DIR *d = opendir (dir);
  if (d == NULL)
    return NULL;
  struct dirent *e;
  while ((e = readdir (d)) != NULL)
    for (const char *const *s = suffixes; *s; s++)
      if (has_suffix (e->d_name, *s))
        {
          kiln_strv_push (&names, e->d_name);
          break;
        }
  closedir (d);
  size_t n = kiln_strv_length (names);
  if (n > 1)
    qsort (names, n, sizeof *names, compare_names);
  return names;
}

/* Runs every input of DATA_DIR/kind for every driver; returns how many
 * inputs there were (-1: the folder is missing). */
static int
run_kind (const char *data_dir, const char *kind, bool regenerate)
{
  _cleanup_free_ char *dir = NULL;
  dir = kiln_xasprintf ("%s/%s", data_dir, kind);
  static const char *const inputs[] = {".yml", ".yaml", ".json", NULL};
  _cleanup_strv_ char **files = list_files (dir, inputs);
  _cleanup_free_ char *cwd = getcwd (NULL, 0);
  if (files == NULL || cwd == NULL || chdir (dir) < 0)
    return -1;
  int n = 0;
  for (char **f = files; *f; f++, n++)
    {
      _cleanup_free_ char *stem = strndup (*f, (size_t) (strrchr (*f, '.') - *f));
      /* NAME.yml and NAME.json would write the same NAME.DRIVER.out. */
      for (char **g = files; g < f; g++)
        if (strncmp (*g, stem, strlen (stem)) == 0 && (*g)[strlen (stem)] == '.')
          tap_ok (false, "%s: %s and %s have the same name", kind, *g, *f);
      for (const char *const *d = driver_names; *d; d++)
        tap_ok (run_case (kind, *f, stem, *d, regenerate), "%s/%s for %s", kind, *f, *d);
    }

  /* Every expectation belongs to an input: a stale .out file would pass
   * nothing while looking like coverage. */
  static const char *const outs[] = {".out", NULL};
  _cleanup_strv_ char **expected = list_files (".", outs);
  size_t orphans = 0;
  for (char **o = expected; o && *o; o++)
    {
      char *driver_dot = strrchr (*o, '.');
      *driver_dot = '\0';
      char *stem_end = strrchr (*o, '.');
      bool found = false;
      if (stem_end)
        for (char **f = files; *f && !found; f++)
          found = strncmp (*f, *o, (size_t) (stem_end - *o)) == 0 && (*f)[stem_end - *o] == '.'
                  && strchr (*f + (stem_end - *o) + 1, '.') == NULL;
      if (!found)
        {
          printf ("# %s/%s.out has no input\n", kind, *o);
          orphans++;
        }
    }
  tap_ok (orphans == 0, "%s: every .out file has its input", kind);
  if (chdir (cwd) < 0)
    abort ();
  return n;
}

/* ---- kiln_ami_name_expand ---- */

#define DATE "2026-11-24T05-50-38.123Z"

static void
expect_name (const char *template, const char *version, const char *want)
{
  _cleanup_free_ char *got = NULL;
  _cleanup_error_ kiln_error *err = NULL;
  int r = kiln_ami_name_expand (template, DATE, version, &got, &err);
  if (!tap_ok (r == 0 && strcmp (got, want) == 0, "expand '%s'", template))
    printf ("# got %s\n", r == 0 ? got : kiln_error_message (err));
}

static void
expect_name_error (const char *label, const char *template, const char *version, const char *want)
{
  _cleanup_free_ char *got = NULL;
  _cleanup_error_ kiln_error *err = NULL;
  int r = kiln_ami_name_expand (template, DATE, version, &got, &err);
  bool ok = r < 0 && got == NULL && err && err->code == KILN_ERR_INVALID
            && strcmp (kiln_error_message (err), want) == 0;
  if (!tap_ok (ok, "expand refuses %s", label))
    printf ("# got %s\n# want %s\n", r == 0 ? got : kiln_error_message (err), want);
}

static void
test_ami_name_expand (void)
{
  expect_name ("app {{ imagebuilder:buildDate }}", "1", "app " DATE);
  expect_name ("app-{{imagebuilder:buildVersion}}-{{  imagebuilder:buildDate}}", "42", "app-42-" DATE);
  expect_name ("plain (name) [x] ./-'@_", "1", "plain (name) [x] ./-'@_");
  expect_name ("abc", "1", "abc");
  char max[129];
  memset (max, 'a', 128);
  max[128] = '\0';
  expect_name (max, "1", max);

  char too_long[130], want[300];
  memset (too_long, 'a', 129);
  too_long[129] = '\0';
  snprintf (want, sizeof want, "AMI name '%s' is 129 characters long; AMI names take 3 to 128", too_long);
  expect_name_error ("a name of 129 characters", too_long, "1", want);
  /* 104 + the date's 24 = 128: fits; one more does not. */
  char near[160];
  memset (near, 'b', 104);
  strcpy (near + 104, "{{ imagebuilder:buildDate }}");
  snprintf (want, sizeof want, "%.104s%s", near, DATE);
  expect_name (near, "1", want);
  memmove (near + 1, near, strlen (near) + 1);
  snprintf (want, sizeof want, "AMI name '%.105s%s' is 129 characters long; AMI names take 3 to 128", near, DATE);
  expect_name_error ("a name 129 characters long once expanded", near, "1", want);
  expect_name_error ("a name of 2 characters", "ab", "1",
                     "AMI name 'ab' is 2 characters long; AMI names take 3 to 128");
  expect_name_error ("a version that makes it too short", "{{ imagebuilder:buildVersion }}", "7",
                     "AMI name '7' is 1 characters long; AMI names take 3 to 128");
  expect_name_error ("'*'", "my*image {{ imagebuilder:buildVersion }}", "3",
                     "AMI name 'my*image 3' may not hold '*' (AMI names take letters, digits, spaces and ( ) [ ] . / "
                     "- ' @ _)");
  expect_name_error ("a non-ASCII letter", "caf\xc3\xa9-{{imagebuilder:buildVersion}}", "3",
                     "AMI name 'caf\xc3\xa9-3' may not hold '\xc3\xa9' (AMI names take letters, digits, spaces and "
                     "( ) [ ] . / - ' @ _)");
  expect_name_error ("a tab", "a\tb", "1",
                     "AMI name 'a\tb' may not hold '\\t' (AMI names take letters, digits, spaces and ( ) [ ] . / - ' "
                     "@ _)");
  expect_name_error ("a bad character in the version given", "v{{ imagebuilder:buildVersion }}", "1+2",
                     "AMI name 'v1+2' may not hold '+' (AMI names take letters, digits, spaces and ( ) [ ] . / - ' @ "
                     "_)");
  expect_name_error ("an unknown variable", "app {{ imagebuilder:buildTime }} x", "1",
                     "AMI name template 'app {{ imagebuilder:buildTime }} x': unknown variable "
                     "'{{ imagebuilder:buildTime }}' (kiln knows {{ imagebuilder:buildDate }} and "
                     "{{ imagebuilder:buildVersion }})");
  expect_name_error ("a variable in the wrong case", "app {{ imagebuilder:builddate }}", "1",
                     "AMI name template 'app {{ imagebuilder:builddate }}': unknown variable "
                     "'{{ imagebuilder:builddate }}' (kiln knows {{ imagebuilder:buildDate }} and "
                     "{{ imagebuilder:buildVersion }})");
  expect_name_error ("an unclosed '{{'", "app-{{ imagebuilder:buildDate", "1",
                     "AMI name template 'app-{{ imagebuilder:buildDate': the '{{' at character 5 is not closed");
  expect_name_error ("a lone '{'", "app-{x}", "1",
                     "AMI name 'app-{x}' may not hold '{' (AMI names take letters, digits, spaces and ( ) [ ] . / - ' "
                     "@ _)");
}

/* The struct as the driver table sees it, for one full file. */
static bool
test_distribution_struct (const char *data_dir)
{
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("%s/distribution/full.yml", data_dir);
  struct kiln_distribution_config *dc = NULL;
  _cleanup_error_ kiln_error *err = NULL;
  if (kiln_distribution_load (path, kiln_driver_find ("ec2"), &dc, &err) < 0)
    {
      printf ("# %s\n", kiln_error_message (err));
      return false;
    }
  bool ok = dc->n_targets == 2 && strcmp (dc->targets[0].region, "us-east-1") == 0
            && strcmp (dc->targets[0].name, "web-{{ imagebuilder:buildDate }}") == 0
            && dc->targets[0].tags && strcmp (dc->targets[0].tags[0], "team") == 0
            && strcmp (dc->targets[0].tags[1], "web") == 0 && dc->targets[0].tags[4] == NULL
            && dc->targets[0].launch_user_ids && dc->targets[0].launch_user_ids[2] == NULL
            && dc->targets[0].launch_groups == NULL && dc->targets[1].name == NULL && dc->targets[1].tags == NULL
            && dc->targets[1].launch_user_ids == NULL && dc->targets[1].launch_groups
            && strcmp (dc->targets[1].launch_groups[0], "all") == 0 && dc->targets[1].launch_groups[1] == NULL
            && dc->targets[0].image_id == NULL && dc->targets[0].snapshot_ids == NULL;
  /* What a distribute call leaves: kiln_image_distribution_release frees it
   * (ASan's leak check sees whether kiln_distribution_free does too). */
  dc->targets[0].image_id = strdup ("ami-0123456789abcdef0");
  dc->targets[0].snapshot_ids = kiln_strv_new ("snap-1", "snap-2", NULL);
  kiln_image_distribution_release (&dc->targets[0]);
  ok = ok && dc->targets[0].image_id == NULL && dc->targets[0].snapshot_ids == NULL
       && strcmp (dc->targets[0].region, "us-east-1") == 0;
  dc->targets[1].image_id = strdup ("ami-0fedcba9876543210");
  dc->targets[1].snapshot_ids = kiln_strv_new ("snap-3", NULL);
  kiln_distribution_free (dc);
  return ok;
}

static bool
test_infrastructure_struct (const char *data_dir)
{
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("%s/infrastructure/local.yml", data_dir);
  struct kiln_infrastructure *infra = NULL;
  _cleanup_error_ kiln_error *err = NULL;
  if (kiln_infrastructure_load (path, kiln_driver_find ("qemu"), &infra, &err) < 0)
    {
      printf ("# %s\n", kiln_error_message (err));
      return false;
    }
  bool ok = infra->vcpus == 2 && infra->memory_mib == 8192 && infra->terminate_instance_on_failure == 0
            && infra->subnet_id == NULL && infra->security_group_ids == NULL && infra->resource_tags == NULL
            && strcmp (infra->path, path) == 0;
  kiln_infrastructure_free (infra);
  infra = NULL;
  free (path);
  path = kiln_xasprintf ("%s/infrastructure/minimal.yml", data_dir);
  if (kiln_infrastructure_load (path, kiln_driver_find ("fake"), &infra, &err) < 0)
    {
      printf ("# %s\n", kiln_error_message (err));
      return false;
    }
  /* Nothing given: the driver's defaults, not a size of 0. */
  ok = ok && infra->vcpus == 0 && infra->memory_mib == 0 && infra->instance_types == NULL
       && infra->terminate_instance_on_failure == -1;
  kiln_infrastructure_free (infra);
  return ok;
}

/* A file that cannot be read is an error naming it, and *out is left alone. */
static bool
test_missing_file (void)
{
  struct kiln_infrastructure *infra = (void *) 1;
  struct kiln_distribution_config *dc = (void *) 1;
  _cleanup_error_ kiln_error *e1 = NULL, *e2 = NULL;
  CHECK (kiln_infrastructure_load ("no/such/infrastructure.yml", kiln_driver_find ("qemu"), &infra, &e1) < 0);
  CHECK (kiln_distribution_load ("no/such/distribution.yml", kiln_driver_find ("ec2"), &dc, &e2) < 0);
  CHECK (infra == (void *) 1 && dc == (void *) 1);
  CHECK (strcmp (kiln_error_message (e1), "open 'no/such/infrastructure.yml': No such file or directory") == 0);
  CHECK (strcmp (kiln_error_message (e2), "open 'no/such/distribution.yml': No such file or directory") == 0);
  return true;
}

int
main (int argc, char **argv)
{
  if (argc != 2)
    {
      fprintf (stderr, "usage: %s DATA_DIR\n", argv[0]);
      return 2;
    }
  const char *regen = getenv ("KILN_REGENERATE");
  bool regenerate = regen && strcmp (regen, "1") == 0;

  int n_infrastructure = run_kind (argv[1], "infrastructure", regenerate);
  int n_distribution = run_kind (argv[1], "distribution", regenerate);
  tap_ok (n_infrastructure >= 20, "infrastructure: %d inputs", n_infrastructure);
  tap_ok (n_distribution >= 30, "distribution: %d inputs", n_distribution);

  test_ami_name_expand ();
  tap_ok (test_distribution_struct (argv[1]), "distribution: the targets as the driver table takes them");
  tap_ok (test_infrastructure_struct (argv[1]), "infrastructure: the machine size a local driver takes");
  tap_ok (test_missing_file (), "a missing file is an error naming it");
  return tap_done ();
}
