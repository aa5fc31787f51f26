/* test_emulator_golden.c - kiln-emulator as a pure function: requests in,
 * responses out, compared with golden files.
 *
 * Each tests/data/emulator/NAME.req holds one or more HTTP requests separated
 * by a line "%%", run in order against one fresh emulator (state in memory,
 * mock instances, the clock fixed at 2026-01-01T00:00:00Z, ids from a fixed
 * seed), so the replies are the same on every run.  Requests are written as
 * tests/support/request_text.h says (X-Kiln-Sign becomes a real signature).
 * Between requests the harness waits for the mock VM host to finish the work
 * queued (state transitions), so what a request sees is fixed.
 *
 * A "request" that is one line "KILN import-image NAME REGION ACCOUNT
 * private|public" instead registers a 1 GiB empty qcow2 as an AMI (as
 * `kiln-emulator import-image` does) and replies with its id; "KILN clock
 * +SECONDS" moves the clock on (later requests are signed and answered
 * then: temporary credentials expire).
 *
 * NAME.resp holds, per request, "HTTP STATUS", the Content-Type, a blank line
 * and the body, separated by "%%" lines.  KILN_REGENERATE=1 rewrites the .resp
 * files from what the emulator answers (review the diff). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "buf.h"
#include "cleanup.h"
#include "digest.h"
#include "dispatch.h"
#include "ec2.h"
#include "process.h"
#include "emulator.h"
#include "request_text.h"
#include "fsutil.h"
#include "sigv4.h"
#include "store.h"
#include "tap.h"
#include "jobs.h"
#include "xalloc.h"

#define FIXED_NOW 1767225600 /* 2026-01-01T00:00:00Z */

/* Runs one request and appends its reply to out. */
static void
run_one (struct kiln_emu *emu, struct request_text *r, struct kiln_buf *out)
{
  request_text_sign (r, emu->fixed_now, out);
  struct emu_request req;
  request_text_view (r, &req);
  struct emu_response resp;
  kiln_emu_handle (emu, &req, &resp);
  emu_jobs_wait_idle (emu);
  kiln_buf_printf (out, "HTTP %d\nContent-Type: %s\n\n%s%s", resp.status, resp.content_type ? resp.content_type : "",
                   kiln_buf_str (&resp.body),
                   resp.body.len && resp.body.data[resp.body.len - 1] == '\n' ? "" : "\n");
  emu_response_release (&resp);
}

/* "import-image NAME REGION ACCOUNT private|public" */
static void
import_image (struct kiln_emu *emu, const char *line, struct kiln_buf *out)
{
  char name[64], region[64], account[64], visibility[16];
  if (sscanf (line, "import-image %63s %63s %63s %15s", name, region, account, visibility) != 4)
    {
      kiln_buf_printf (out, "# bad directive: %s\n", line);
      return;
    }
  _cleanup_free_ char *disk = NULL;
  disk = kiln_xasprintf ("%s/source.qcow2", emu->data_dir);
  char *const argv[] = {(char *) "qemu-img", (char *) "create", (char *) "-q", (char *) "-f", (char *) "qcow2", disk,
                        (char *) "1G", NULL};
  struct kiln_process_spec spec = {.argv = argv, .timeout_ms = 60000};
  struct kiln_process_result res = {0};
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_free_ char *id = NULL;
  if (kiln_process_run (&spec, &res, &err) < 0 || res.exit_code != 0)
    kiln_buf_printf (out, "# qemu-img create failed: %s\n", err ? kiln_error_message (err) : "exit status");
  else if (emu_image_import (emu, disk, name, region, account, strcmp (visibility, "public") == 0, &id, &err) < 0)
    kiln_buf_printf (out, "# import failed: %s\n", kiln_error_message (err));
  else
    kiln_buf_printf (out, "IMPORTED %s\n", id);
  kiln_process_result_release (&res);
  unlink (disk);
}

static bool
run_case (const char *dir, const char *name)
{
  _cleanup_free_ char *req_path = NULL, *resp_path = NULL;
  req_path = kiln_xasprintf ("%s/%s.req", dir, name);
  resp_path = kiln_xasprintf ("%s/%s.resp", dir, name);
  struct kiln_buf text = KILN_BUF_INIT;
  _cleanup_error_ kiln_error *err = NULL;
  if (kiln_read_file (req_path, &text, &err) < 0)
    return tap_ok (false, "%s: %s", name, kiln_error_message (err));

  struct kiln_emu emu = {.instances = EMU_INSTANCES_MOCK, .fixed_now = FIXED_NOW, .id_seed = 1};
  bool ok = emu_accounts_load (&emu, NULL, &err) == 0 && kiln_make_temp_dir ("kiln-emu-golden", &emu.data_dir, &err) == 0
            && emu_store_open (&emu, &err) == 0 && emu_start (&emu, &err) == 0;
  if (!ok)
    {
      kiln_buf_release (&text);
      return tap_ok (false, "%s: set up: %s", name, kiln_error_message (err));
    }

  /* Leading '#' lines are the case's description. */
  struct kiln_buf out = KILN_BUF_INIT;
  char *p = text.data;
  while (p && *p == '#')
    {
      char *nl = strchr (p, '\n');
      p = nl ? nl + 1 : p + strlen (p);
    }
  bool first = true;
  while (p && *p)
    {
      char *sep = strstr (p, "\n%%\n");
      char *end = sep ? sep : p + strlen (p);
      _cleanup_free_ char *one = kiln_xstrndup (p, (size_t) (end - p));
      size_t n = strlen (one);
      while (n && one[n - 1] == '\n')
        one[--n] = '\0';
      struct request_text req = {0};
      if (!first)
        kiln_buf_puts (&out, "%%\n");
      first = false;
      long long advance;
      if (sscanf (one, "KILN clock +%lld", &advance) == 1 && advance > 0)
        {
          /* Time passes: later requests are signed and answered then. */
          emu.fixed_now += (time_t) advance;
          kiln_buf_printf (&out, "CLOCK +%lld\n", advance);
        }
      else if (strncmp (one, "KILN ", 5) == 0)
        import_image (&emu, one + 5, &out);
      else if (request_text_parse (one, strlen (one), &req))
        run_one (&emu, &req, &out);
      else
        kiln_buf_printf (&out, "# unparsable request: %s\n", one);
      request_text_release (&req);
      p = sep ? sep + 4 : NULL;
    }

  emu_stop (&emu);
  emu_store_close (&emu);
  kiln_remove_tree (emu.data_dir, NULL);
  free (emu.data_dir);
  for (size_t i = 0; i < emu.n_accounts; i++)
    {
      free (emu.accounts[i].id);
      free (emu.accounts[i].access_key_id);
      free (emu.accounts[i].secret_access_key);
    }
  free (emu.accounts);
  kiln_buf_release (&text);

  bool result;
  const char *regen = getenv ("KILN_REGENERATE");
  if (regen && *regen && strcmp (regen, "0") != 0)
    {
      result = kiln_write_file_atomic (resp_path, out.data ? out.data : "", out.len, 0644, &err) == 0;
      tap_ok (result, "%s (regenerated)", name);
    }
  else
    {
      struct kiln_buf expected = KILN_BUF_INIT;
      if (kiln_read_file (resp_path, &expected, &err) < 0)
        result = tap_ok (false, "%s: %s (run with KILN_REGENERATE=1 and review it)", name, kiln_error_message (err));
      else
        {
          result = tap_ok (strcmp (kiln_buf_str (&expected), kiln_buf_str (&out)) == 0, "%s", name);
          if (!result)
            printf ("# expected:\n%s\n# actual:\n%s\n", kiln_buf_str (&expected), kiln_buf_str (&out));
        }
      kiln_buf_release (&expected);
    }
  kiln_buf_release (&out);
  return result;
}

static int
compare_names (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

int
main (int argc, char **argv)
{
  if (argc != 2)
    {
      fprintf (stderr, "usage: %s DATA_DIR\n", argv[0]);
      return 2;
    }
  DIR *d = opendir (argv[1]);
  if (d == NULL)
    {
      tap_ok (false, "open %s: %s", argv[1], strerror (errno));
      return tap_done ();
    }
  char *names[512];
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir (d)) && n < 512)
    {
      size_t len = strlen (e->d_name);
      if (len > 4 && strcmp (e->d_name + len - 4, ".req") == 0)
        names[n++] = kiln_xstrndup (e->d_name, len - 4);
    }
  closedir (d);
  qsort (names, n, sizeof *names, compare_names);
  tap_ok (n > 0, "golden cases found in %s (%zu)", argv[1], n);
  for (size_t i = 0; i < n; i++)
    {
      run_case (argv[1], names[i]);
      free (names[i]);
    }
  return tap_done ();
}
