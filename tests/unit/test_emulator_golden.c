/* test_emulator_golden.c - kiln-emulator as a pure function: requests in,
 * responses out, compared with golden files.
 *
 * Each tests/data/emulator/NAME.req holds one or more HTTP requests separated
 * by a line "%%", run in order against one fresh emulator (state in memory,
 * mock instances, the clock fixed at 2026-01-01T00:00:00Z, ids from a fixed
 * seed), so the replies are the same on every run.  A request may carry
 *   X-Kiln-Sign: ACCESS_KEY SECRET REGION SERVICE
 * which the harness replaces with a real SigV4 signature (made by
 * common/sigv4.c at the request's X-Amz-Date, added when absent, over the
 * body's hash or UNSIGNED-PAYLOAD when x-amz-content-sha256 says that), so the files
 * stay readable and a case can sign with the wrong secret, region or date on
 * purpose.  Between requests the harness waits for the mock VM host to finish
 * the work queued (state transitions), so what a request sees is fixed.
 *
 * A "request" that is one line "KILN import-image NAME REGION ACCOUNT
 * private|public" instead registers a 1 GiB empty qcow2 as an AMI (as
 * `kiln-emulator import-image` does) and replies with its id.
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
#include "ec2.h"
#include "process.h"
#include "emulator.h"
#include "fsutil.h"
#include "sigv4.h"
#include "store.h"
#include "tap.h"
#include "vmhost.h"
#include "xalloc.h"

#define FIXED_NOW 1767225600 /* 2026-01-01T00:00:00Z */

struct parsed {
  char *method;
  char *target;              /* path?query as written */
  struct kiln_sigv4_pair headers[64];
  size_t n_headers;
  char *body;
};

static void
parsed_release (struct parsed *p)
{
  free (p->method);
  free (p->target);
  for (size_t i = 0; i < p->n_headers; i++)
    {
      free ((char *) p->headers[i].name);
      free ((char *) p->headers[i].value);
    }
  free (p->body);
  memset (p, 0, sizeof *p);
}

/* Parses "METHOD TARGET HTTP/1.1\nName: value\n...\n\nbody". */
static bool
parse_request (const char *text, struct parsed *out)
{
  memset (out, 0, sizeof *out);
  const char *eol = strchr (text, '\n');
  if (eol == NULL)
    return false;
  _cleanup_free_ char *line = kiln_xstrndup (text, (size_t) (eol - text));
  char *sp1 = strchr (line, ' ');
  char *sp2 = sp1 ? strchr (sp1 + 1, ' ') : NULL;
  if (sp1 == NULL || sp2 == NULL)
    return false;
  out->method = kiln_xstrndup (line, (size_t) (sp1 - line));
  out->target = kiln_xstrndup (sp1 + 1, (size_t) (sp2 - sp1 - 1));
  const char *p = eol + 1;
  while (*p && *p != '\n')
    {
      const char *end = strchr (p, '\n');
      if (end == NULL)
        end = p + strlen (p);
      const char *colon = memchr (p, ':', (size_t) (end - p));
      if (colon == NULL || out->n_headers == 64)
        return false;
      const char *v = colon + 1;
      while (*v == ' ')
        v++;
      out->headers[out->n_headers].name = kiln_xstrndup (p, (size_t) (colon - p));
      out->headers[out->n_headers].value = kiln_xstrndup (v, (size_t) (end - v));
      out->n_headers++;
      p = *end ? end + 1 : end;
    }
  out->body = kiln_xstrdup (*p ? p + 1 : "");
  return true;
}

static const char *
header (struct parsed *p, const char *name)
{
  for (size_t i = 0; i < p->n_headers; i++)
    if (strcasecmp (p->headers[i].name, name) == 0)
      return p->headers[i].value;
  return NULL;
}

static void
remove_header (struct parsed *p, const char *name)
{
  for (size_t i = 0; i < p->n_headers; i++)
    if (strcasecmp (p->headers[i].name, name) == 0)
      {
        free ((char *) p->headers[i].name);
        free ((char *) p->headers[i].value);
        p->headers[i] = p->headers[--p->n_headers];
        return;
      }
}

static void
add_header (struct parsed *p, const char *name, const char *value)
{
  p->headers[p->n_headers].name = kiln_xstrdup (name);
  p->headers[p->n_headers].value = kiln_xstrdup (value);
  p->n_headers++;
}

/* Runs one request and appends its reply to out. */
static void
run_one (struct kiln_emu *emu, struct parsed *p, struct kiln_buf *out)
{
  const char *q = strchr (p->target, '?');
  _cleanup_free_ char *path = kiln_sigv4_uri_decode (p->target, q ? (size_t) (q - p->target) : strlen (p->target),
                                                     false, NULL);
  struct kiln_sigv4_pair *query = NULL;
  size_t n_query = 0;
  if (q)
    kiln_sigv4_parse_query (q + 1, &query, &n_query);

  const char *sign = header (p, "X-Kiln-Sign");
  if (sign)
    {
      char key[64], secret[64], region[64], service[64];
      if (sscanf (sign, "%63s %63s %63s %63s", key, secret, region, service) == 4)
        {
          remove_header (p, "X-Kiln-Sign");
          char date[KILN_SIGV4_AMZ_DATE_LEN + 1];
          if (header (p, "X-Amz-Date") == NULL)
            {
              kiln_sigv4_format_amz_date (FIXED_NOW, date);
              add_header (p, "X-Amz-Date", date);
            }
          snprintf (date, sizeof date, "%s", header (p, "X-Amz-Date"));
          /* What the client signed: the body's hash, or UNSIGNED-PAYLOAD
           * when its x-amz-content-sha256 says so (as SDKs do). */
          char hash[KILN_SHA256_LEN * 2 + 1];
          kiln_sha256_hex (p->body, strlen (p->body), hash);
          const char *claimed = header (p, "X-Amz-Content-Sha256");
          if (claimed && strcmp (claimed, KILN_SIGV4_UNSIGNED_PAYLOAD) == 0)
            snprintf (hash, sizeof hash, "%s", claimed);
          struct kiln_sigv4_request sreq = {
            .method = p->method, .path = path, .query = query, .n_query = n_query, .headers = p->headers,
            .n_headers = p->n_headers, .payload_hash = hash, .flags = kiln_sigv4_service_flags (service)};
          struct kiln_sigv4_signer signer = {
            .access_key_id = key, .secret_access_key = secret, .amz_date = date, .region = region,
            .service = service};
          struct kiln_sigv4_result res = {0};
          _cleanup_error_ kiln_error *err = NULL;
          if (kiln_sigv4_sign (&sreq, &signer, &res, &err) == 0)
            add_header (p, "Authorization", res.authorization);
          else
            kiln_buf_printf (out, "# signing failed: %s\n", kiln_error_message (err));
          kiln_sigv4_result_release (&res);
        }
    }
  struct emu_request req = {
    .method = p->method, .path = path, .raw_query = q ? q + 1 : NULL, .query = query, .n_query = n_query, .headers = p->headers,
    .n_headers = p->n_headers, .body = p->body, .body_len = strlen (p->body)};
  struct emu_response resp;
  kiln_emu_handle (emu, &req, &resp);
  emu_vmhost_wait_idle (emu);
  kiln_buf_printf (out, "HTTP %d\nContent-Type: %s\n\n%s%s", resp.status, resp.content_type ? resp.content_type : "",
                   kiln_buf_str (&resp.body),
                   resp.body.len && resp.body.data[resp.body.len - 1] == '\n' ? "" : "\n");
  emu_response_release (&resp);
  kiln_sigv4_pairs_free (query, n_query);
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
  if (asprintf (&disk, "%s/source.qcow2", emu->data_dir) < 0)
    abort ();
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
  if (asprintf (&req_path, "%s/%s.req", dir, name) < 0 || asprintf (&resp_path, "%s/%s.resp", dir, name) < 0)
    abort ();
  struct kiln_buf text = KILN_BUF_INIT;
  _cleanup_error_ kiln_error *err = NULL;
  if (kiln_read_file (req_path, &text, &err) < 0)
    return tap_ok (false, "%s: %s", name, kiln_error_message (err));

  struct kiln_emu emu = {.instances = EMU_INSTANCES_MOCK, .fixed_now = FIXED_NOW, .id_seed = 1};
  bool ok = emu_accounts_load (&emu, NULL, &err) == 0 && kiln_make_temp_dir ("kiln-emu-golden", &emu.data_dir, &err) == 0
            && emu_store_open (&emu, &err) == 0 && emu_vmhost_init (&emu, &err) == 0;
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
      struct parsed req = {0};
      if (!first)
        kiln_buf_puts (&out, "%%\n");
      first = false;
      if (strncmp (one, "KILN ", 5) == 0)
        import_image (&emu, one + 5, &out);
      else if (parse_request (one, &req))
        run_one (&emu, &req, &out);
      else
        kiln_buf_printf (&out, "# unparsable request: %s\n", one);
      parsed_release (&req);
      p = sep ? sep + 4 : NULL;
    }

  emu_vmhost_shutdown (&emu);
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
