/* web_download.c - the WebDownload action module: fetch files by URL onto the
 * target.
 *
 * The transfer happens on the machine running kiln, not on the target: the
 * file is downloaded (common/http_client.c, libcurl) into a local temporary
 * folder, verified, and only then copied to the target with
 * kiln_target_put_file.  A guest therefore needs no network access, no proxy
 * settings and no CA bundle, and credentials in URLs never reach it.  For
 * the same reason a file:// URL names a file on the machine running kiln
 * (the same machine as the target for the local target).
 *
 * Per entry (the first failing entry ends the step, "inputs[N]: " naming it):
 *   - http/https: redirects followed; only a final 200 is accepted.  Up to 5
 *     attempts, waiting 0.5, 1, 2, 4 s between them, after transport errors
 *     and 5xx answers; a 4xx (or other non-200) answer fails at once.  Each
 *     attempt is bounded by what remains of the step's timeout.
 *   - checksum and algorithm (MD5, SHA1, SHA256, SHA512): verified when both
 *     are given; a mismatch fails naming both digests.  With overwrite true
 *     and an existing destination that already matches, nothing is
 *     downloaded (noted in the step's output).  One of the two alone is
 *     noted and ignored, as AWSTOE verifies only with both.
 *   - destination ending in '/' is a folder and the file keeps the last
 *     segment of the URL's path (percent-decoded); otherwise it is the file's
 *     path.  Missing folders are created (mkdir -p on the target).
 *     overwrite false and an existing destination is an error.
 *   - the file lands with mode 0644 (the mode of a new file under umask 022;
 *     AWSTOE does not say).
 * Output `destination`: the final paths, joined with "\n". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "actions.h"
#include "cleanup.h"
#include "digest.h"
#include "fsutil.h"
#include "http_client.h"
#include "xalloc.h"

#define MAX_ATTEMPTS 5
#define FIRST_BACKOFF_MS 500
#define DOWNLOAD_MODE 0644

enum scheme { SCHEME_NONE, SCHEME_HTTP, SCHEME_FILE };

static enum scheme
url_scheme (const char *url)
{
  if (strncasecmp (url, "http://", 7) == 0 || strncasecmp (url, "https://", 8) == 0)
    return SCHEME_HTTP;
  if (strncasecmp (url, "file://", 7) == 0)
    return SCHEME_FILE;
  return SCHEME_NONE;
}


/* Percent-decodes s[0..len), malloc'd; NULL for a malformed escape or %00. */
static char *
percent_decode (const char *s, size_t len)
{
  char *out = malloc (len + 1);
  if (out == NULL)
    abort ();
  size_t k = 0;
  for (size_t i = 0; i < len; i++)
    {
      if (s[i] != '%')
        {
          out[k++] = s[i];
          continue;
        }
      int hi = i + 2 < len ? kiln_hex_digit_value (s[i + 1]) : -1;
      int lo = hi >= 0 ? kiln_hex_digit_value (s[i + 2]) : -1;
      if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
        {
          free (out);
          return NULL;
        }
      out[k++] = (char) (hi * 16 + lo);
      i += 2;
    }
  out[k] = '\0';
  return out;
}

/* The URL's path: after "scheme://authority", before '?' or '#' (raw). */
static void
url_path (const char *url, const char **path, size_t *len)
{
  const char *p = strstr (url, "://");
  p = p ? p + 3 : url;
  p += strcspn (p, "/?#");
  *path = p;
  *len = strcspn (p, "?#");
}

/* The file name a URL gives: its path's last segment, decoded; malloc'd, or
 * NULL with err when there is none. */
static char *
url_file_name (const char *url, kiln_error **err)
{
  const char *path;
  size_t len;
  url_path (url, &path, &len);
  size_t start = len;
  while (start > 0 && path[start - 1] != '/')
    start--;
  char *name = percent_decode (path + start, len - start);
  if (name == NULL || *name == '\0' || strcmp (name, ".") == 0 || strcmp (name, "..") == 0 || strchr (name, '/'))
    {
      free (name);
      kiln_fail_invalid (err, "the URL does not end in a file name: give the destination as a file path");
      return NULL;
    }
  return name;
}

/* The local path of a file:// URL (empty or "localhost" host only). */
static char *
file_url_path (const char *url, kiln_error **err)
{
  const char *rest = url + 7;
  const char *path;
  if (rest[0] == '/')
    path = rest;
  else if (strncasecmp (rest, "localhost/", 10) == 0)
    path = rest + 9;
  else
    {
      kiln_fail_invalid (err, "'%s': a file:// URL must name a local file (file:///path)", url);
      return NULL;
    }
  char *decoded = percent_decode (path, strcspn (path, "?#"));
  if (decoded == NULL)
    kiln_fail_invalid (err, "'%s': malformed %%-escape", url);
  return decoded;
}

/* The number of hex digits of the algorithm's digests, 0 when unknown. */
static size_t
digest_hex_length (const char *algorithm)
{
  static const struct {
    const char *name;
    size_t hex_len;
  } lengths[] = {{"MD5", 32}, {"SHA1", 40}, {"SHA256", 64}, {"SHA512", 128}};
  for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++)
    if (strcasecmp (algorithm, lengths[i].name) == 0)
      return lengths[i].hex_len;
  return 0;
}

static bool
is_hex (const char *s)
{
  for (; *s; s++)
    if (kiln_hex_digit_value (*s) < 0)
      return false;
  return true;
}

/* Sleeps ms milliseconds in short steps, returning early (false) when the
 * run is cancelled. */
static bool
backoff (struct kiln_action_ctx *ctx, long ms)
{
  while (ms > 0)
    {
      if (ctx->cancel && *ctx->cancel)
        return false;
      long step = ms < 100 ? ms : 100;
      struct timespec ts = {0, step * 1000000L};
      nanosleep (&ts, NULL);
      ms -= step;
    }
  return !(ctx->cancel && *ctx->cancel);
}

/* Downloads an http(s) URL to local_path with the retry policy above.
 * deadline: monotonic seconds, or 0 for none. */
static int
fetch_http (struct kiln_action_ctx *ctx, const char *url, bool insecure, const char *local_path, double deadline,
            kiln_error **err)
{
  long wait_ms = FIRST_BACKOFF_MS;
  for (int attempt = 1;; attempt++)
    {
      struct kiln_http_request req = {
        .method = "GET",
        .url = url,
        .response_path = local_path,
        .follow_redirects = true,
        .insecure = insecure,
      };
      if (kiln_action_time_left (ctx, deadline, &req.timeout_seconds, err) < 0)
        return -1;
      struct kiln_http_response resp;
      _cleanup_error_ kiln_error *e = NULL;
      int r = kiln_http_perform (&req, &resp, &e);
      long status = resp.status;
      kiln_http_response_release (&resp);

      bool retry;
      if (r < 0)
        /* A malformed request or a local write failure will not get better. */
        retry = e->code != KILN_ERR_INVALID && !(e->code == KILN_ERR_IO && e->errnum != 0);
      else if (status == 200)
        return 0;
      else
        {
          unlink (local_path); /* a 2xx other than 200 was stored */
          retry = status >= 500 && status <= 599;
          kiln_error_set (&e, KILN_ERR_REMOTE, 0, "HTTP status %ld%s", status,
                          status >= 200 && status < 300 ? " (only 200 is accepted)" : "");
        }

      /* Another attempt needs the wait plus a second of the step's time. */
      bool out_of_time = retry && deadline > 0 && kiln_action_now () + (double) wait_ms / 1000 + 1 > deadline;
      if (!retry || attempt == MAX_ATTEMPTS || out_of_time)
        {
          if (attempt == 1 && !out_of_time)
            kiln_error_move (err, &e);
          else if (out_of_time && attempt < MAX_ATTEMPTS)
            kiln_error_set (err, KILN_ERR_TIMEOUT, 0, "%s (%d attempt%s, then the step's %d seconds ran out)",
                            kiln_error_message (e), attempt, attempt > 1 ? "s" : "", ctx->timeout_seconds);
          else
            kiln_error_set (err, e->code, 0, "%s (%d attempts)", kiln_error_message (e), attempt);
          return -1;
        }
      kiln_action_note (ctx, "WebDownload: attempt %d of %d failed (%s); retrying in %.1f s", attempt, MAX_ATTEMPTS,
                        kiln_error_message (e), (double) wait_ms / 1000);
      if (!backoff (ctx, wait_ms))
        return kiln_error_set (err, KILN_ERR_CANCELLED, 0, "cancelled");
      wait_ms *= 2;
    }
}

/* Hex digest of a local file, compared without regard to case. */
static int
matches_checksum (const char *algorithm, const char *checksum, const char *local_path, char actual[KILN_DIGEST_HEX_MAX],
                  bool *match, kiln_error **err)
{
  if (kiln_digest_file_hex (algorithm, local_path, actual, err) < 0)
    return -1;
  *match = strcasecmp (actual, checksum) == 0;
  return 0;
}

/* What the entries of one step share. */
struct download {
  const char *tmp_dir;          /* local folder where fetched files wait */
  double deadline;              /* the step's, from kiln_action_deadline */
  size_t index;                 /* of the next entry */
  struct kiln_buf destinations; /* the `destination` output so far */
};

/* Handles one entry; opaque is the step's struct download. */
static int
download_one (struct kiln_action_ctx *ctx, json_t *entry, void *opaque, kiln_error **err)
{
  struct download *d = opaque;
  const char *tmp_dir = d->tmp_dir;
  size_t index = d->index++;
  double deadline = d->deadline;
  struct kiln_buf *destinations = &d->destinations;
  const char *source = NULL, *destination = NULL, *checksum = NULL, *algorithm = NULL;
  bool overwrite = true, insecure = false;
  if (kiln_input_required_string (entry, "source", NULL, &source, err) < 0
      || kiln_input_required_string (entry, "destination", NULL, &destination, err) < 0
      || kiln_input_bool (entry, "overwrite", NULL, &overwrite, err) < 0
      || kiln_input_string (entry, "checksum", NULL, &checksum, err) < 0
      || kiln_input_string (entry, "algorithm", NULL, &algorithm, err) < 0
      || kiln_input_bool (entry, "ignoreCertificateErrors", NULL, &insecure, err) < 0)
    return -1;
  if (checksum && *checksum == '\0')
    checksum = NULL;
  if (algorithm && *algorithm == '\0')
    algorithm = NULL;

  enum scheme scheme = url_scheme (source);
  _cleanup_free_ char *shown = kiln_http_redact_url (source);
  if (scheme == SCHEME_NONE)
    return kiln_fail_invalid (err, "download '%s': the source must be an http://, https:// or file:// URL", shown);
  if (*destination == '\0')
    return kiln_fail_invalid (err, "download '%s': the destination is empty", shown);
  bool verify = checksum && algorithm;
  if (verify && kiln_digest_check_algorithm (algorithm, err) < 0)
    return kiln_error_prefix (err, "download '%s'", shown);
  if ((checksum != NULL) != (algorithm != NULL))
    kiln_action_note (ctx, "WebDownload: %s given without %s; the download is not verified",
                      checksum ? "checksum" : "algorithm", checksum ? "algorithm" : "checksum");

  _cleanup_free_ char *final = NULL;
  size_t dlen = strlen (destination);
  if (destination[dlen - 1] == '/')
    {
      _cleanup_free_ char *name = url_file_name (source, err);
      if (name == NULL)
        return kiln_error_prefix (err, "download '%s'", shown);
      final = kiln_xasprintf ("%s%s", destination, name);
    }
  else
    final = kiln_xstrdup (destination);

  struct kiln_target_stat st;
  if (kiln_target_stat (ctx->target, final, &st, err) < 0)
    return kiln_error_prefix (err, "download '%s' to '%s'", shown, final);
  if (st.exists && st.is_dir)
    return kiln_fail (err, "download '%s' to '%s': the destination is a folder (end it with '/' to download into it)",
                      shown, final);
  if (st.exists && !overwrite)
    return kiln_fail (err, "download '%s' to '%s': the destination exists and overwrite is false", shown, final);

  char actual[KILN_DIGEST_HEX_MAX];
  bool match = false;
  char local_name[64];
  snprintf (local_name, sizeof local_name, "entry-%zu", index);
  _cleanup_free_ char *local = NULL;
  local = kiln_xasprintf ("%s/%s", tmp_dir, local_name);

  if (st.exists && verify)
    {
      /* Already there and matching: nothing to fetch. */
      if (kiln_target_get_file (ctx->target, final, local, err) < 0
          || matches_checksum (algorithm, checksum, local, actual, &match, err) < 0)
        return kiln_error_prefix (err, "download '%s' to '%s': check the existing file", shown, final);
      unlink (local);
      if (match)
        {
          kiln_action_note (ctx, "WebDownload: '%s' already has %s %s; not downloaded again", final, algorithm,
                            actual);
          kiln_buf_printf (destinations, "%s%s", destinations->len ? "\n" : "", final);
          return 0;
        }
    }

  _cleanup_free_ char *file_path = NULL;
  const char *fetched = local;
  if (scheme == SCHEME_FILE)
    {
      file_path = file_url_path (source, err);
      if (file_path == NULL)
        return kiln_error_prefix (err, "download '%s'", shown);
      struct stat lst;
      if (stat (file_path, &lst) < 0)
        return kiln_error_set (err, errno == ENOENT ? KILN_ERR_NOT_FOUND : KILN_ERR_IO, errno, "download '%s': open '%s'",
                               shown, file_path);
      if (!S_ISREG (lst.st_mode))
        return kiln_fail (err, "download '%s': not a regular file", shown);
      fetched = file_path;
    }
  else
    {
      kiln_action_note (ctx, "WebDownload: %s -> %s", shown, final);
      if (fetch_http (ctx, source, insecure, local, deadline, err) < 0)
        return kiln_error_prefix (err, "download '%s' to '%s'", shown, final);
    }

  if (verify)
    {
      if (matches_checksum (algorithm, checksum, fetched, actual, &match, err) < 0)
        return kiln_error_prefix (err, "download '%s'", shown);
      if (!match)
        return kiln_fail (err, "download '%s': %s checksum mismatch: expected %s, got %s", shown, algorithm,
                          checksum, actual);
    }

  if (kiln_action_make_parent (ctx, final, err) < 0)
    return kiln_error_prefix (err, "download '%s' to '%s'", shown, final);
  if (kiln_target_put_file (ctx->target, fetched, final, DOWNLOAD_MODE, err) < 0)
    return kiln_error_prefix (err, "download '%s' to '%s'", shown, final);
  if (fetched == local)
    unlink (local);
  kiln_buf_printf (destinations, "%s%s", destinations->len ? "\n" : "", final);
  return 0;
}

static int
web_download_run (struct kiln_action_ctx *ctx, kiln_error **err)
{
  struct download d = {.deadline = kiln_action_deadline (ctx), .destinations = KILN_BUF_INIT};
  _cleanup_free_ char *tmp_dir = NULL;
  if (kiln_make_temp_dir ("kiln-download", &tmp_dir, err) < 0)
    return -1;
  d.tmp_dir = tmp_dir;

  int r = kiln_action_for_each_entry (ctx, download_one, &d, err);
  if (r == 0)
    json_object_set_new (ctx->outputs, "destination",
                         json_stringn (kiln_buf_str (&d.destinations), d.destinations.len));
  kiln_buf_release (&d.destinations);
  _cleanup_error_ kiln_error *ignored = NULL;
  kiln_remove_tree (tmp_dir, &ignored);
  return r;
}

/* ---- static checks ------------------------------------------------------------ */

/* source is an http, https or file URL; algorithm is known; checksum is hex
 * of the algorithm's length. */
static int
check_entry (const struct kiln_action_check_ctx *ctx, const struct kiln_yaml_node *e, void *opaque _unused_,
             kiln_error **err)
{
  const struct kiln_yaml_node *v;
  if ((v = kiln_input_literal (e, "source")) && url_scheme (v->value) == SCHEME_NONE)
    return kiln_yaml_error (err, ctx->doc, v, "WebDownload source '%s' must be an http://, https:// or file:// URL",
                            v->value);
  const struct kiln_yaml_node *alg = kiln_input_literal (e, "algorithm");
  if (alg && *alg->value)
    {
      _cleanup_error_ kiln_error *why = NULL;
      if (kiln_digest_check_algorithm (alg->value, &why) < 0)
        return kiln_yaml_error (err, ctx->doc, alg, "unknown algorithm '%s' (expected MD5, SHA1, SHA256 or SHA512)",
                                alg->value);
    }
  if ((v = kiln_input_literal (e, "checksum")) && *v->value)
    {
      if (!is_hex (v->value))
        return kiln_yaml_error (err, ctx->doc, v, "checksum '%s' must be hexadecimal digits", v->value);
      size_t want = alg ? digest_hex_length (alg->value) : 0;
      if (want && strlen (v->value) != want)
        return kiln_yaml_error (err, ctx->doc, v, "checksum '%s' has %zu hex digits; %s digests have %zu", v->value,
                                strlen (v->value), alg->value, want);
    }
  return 0;
}

static int
web_download_check (const struct kiln_action_check_ctx *ctx, kiln_error **err)
{
  return kiln_action_check_each_entry (ctx, check_entry, NULL, err);
}

static const struct kiln_input_field web_download_fields[] = {
  {"source", KILN_IN_STRING, true},
  {"destination", KILN_IN_STRING, true},
  {"overwrite", KILN_IN_BOOL, false},
  {"checksum", KILN_IN_STRING, false},
  {"algorithm", KILN_IN_STRING, false},
  {"ignoreCertificateErrors", KILN_IN_BOOL, false},
  {NULL, 0, false},
};

static const char *const web_download_outputs[] = {"destination", NULL};

const struct kiln_action kiln_action_web_download = {
  .name = "WebDownload",
  .shape = KILN_INPUTS_LIST,
  .fields = web_download_fields,
  .outputs = web_download_outputs,
  .check = web_download_check,
  .run = web_download_run,
};
