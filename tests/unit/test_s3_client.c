/* test_s3_client.c - the S3 client against tests/s3_fixture.py.
 *
 * Usage: test_s3_client PATH/TO/s3_fixture.py.  The fixture is started on
 * 127.0.0.1 with a kernel-chosen port, a temporary store, one bucket, an
 * account id and a page size of 2 (so listings need continuation tokens), and
 * it verifies every request's SigV4 signature with its own implementation.
 * PutObject, GetObject, HeadObject and ListObjectsV2 are exercised with awkward
 * keys, then the failure paths: wrong secret, unknown access key, wrong
 * expected bucket owner, missing key and bucket.  A presigned URL made by
 * sigv4.c is fetched through http_client.  Credentials reach the client
 * through an injected environment, never the real one.  Output is TAP; without
 * python3 the whole test is skipped. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "cleanup.h"
#include "fsutil.h"
#include "http_client.h"
#include "s3_client.h"
#include "sigv4.h"
#include "tap.h"
#include "xalloc.h"

#define BUCKET "kiln-test"
#define ACCOUNT "111122223333"

static pid_t fixture_pid = -1;
static int port;
static char *tmp;

static void
stop_fixture (void)
{
  if (fixture_pid > 0)
    {
      kill (fixture_pid, SIGTERM);
      while (waitpid (fixture_pid, NULL, 0) < 0 && errno == EINTR)
        ;
      fixture_pid = -1;
    }
}

static void
cleanup_tmp (void)
{
  stop_fixture ();
  if (tmp)
    {
      kiln_remove_tree (tmp, NULL);
      free (tmp);
      tmp = NULL;
    }
}

static bool
have_python3 (void)
{
  const char *path = getenv ("PATH");
  _cleanup_free_ char *copy = strdup (path ? path : "/usr/bin:/bin");
  char *save = NULL;
  for (char *dir = strtok_r (copy, ":", &save); dir; dir = strtok_r (NULL, ":", &save))
    {
      _cleanup_free_ char *p = NULL;
      p = kiln_xasprintf ("%s/python3", dir);
      if (access (p, X_OK) == 0)
        return true;
    }
  return false;
}

/* Starts the fixture and reads the port from its first line of output. */
static bool
start_fixture (const char *script, const char *root)
{
  int fds[2];
  if (pipe2 (fds, O_CLOEXEC) < 0)
    return false;
  pid_t pid = fork ();
  if (pid < 0)
    return false;
  if (pid == 0)
    {
      dup2 (fds[1], STDOUT_FILENO);
      execlp ("python3", "python3", script, "--root", root, "--port", "0", "--account", ACCOUNT, "--bucket",
              BUCKET, "--page-size", "2", (char *) NULL);
      _exit (127);
    }
  close (fds[1]);
  fixture_pid = pid;
  char line[32] = "";
  size_t n = 0;
  while (n < sizeof line - 1)
    {
      struct pollfd pfd = {fds[0], POLLIN, 0};
      if (poll (&pfd, 1, 20000) <= 0)
        break;
      ssize_t r = read (fds[0], line + n, 1);
      if (r <= 0 || line[n] == '\n')
        break;
      n++;
    }
  line[n] = '\0';
  close (fds[0]);
  port = atoi (line);
  return port > 0;
}

/* ---- the injected environment ---- */

struct fake_env {
  const char *vars[8];
};

static const char *
fake_getenv (const char *name, void *opaque)
{
  const struct fake_env *fe = opaque;
  size_t l = strlen (name);
  for (int i = 0; i < 8 && fe->vars[i]; i++)
    if (strncmp (fe->vars[i], name, l) == 0 && fe->vars[i][l] == '=')
      return fe->vars[i] + l + 1;
  return NULL;
}

static char endpoint[64];

static struct kiln_s3_client *
client_with (const struct fake_env *fe, const char *owner, bool use_override)
{
  struct kiln_aws_env env = {fake_getenv, (void *) fe};
  struct kiln_s3_options o = {
    .env = &env,
    .endpoint_url = use_override ? endpoint : NULL,
    .expected_bucket_owner = owner,
    .timeout_seconds = 60,
  };
  struct kiln_s3_client *c = NULL;
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_s3_client_new (&o, &c, &e) < 0)
    printf ("# client: %s\n", kiln_error_message (e));
  return c;
}

static const struct fake_env good_env = {
  {"HOME=/nonexistent/kiln-test", "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=us-east-1"}};

static char *
path_in_tmp (const char *name)
{
  char *p = NULL;
  p = kiln_xasprintf ("%s/%s", tmp, name);
  return p;
}

static bool
write_file (const char *path, const void *data, size_t len)
{
  return kiln_write_file_atomic (path, data, len, 0644, NULL) == 0;
}

static bool
same_file (const char *a, const char *b)
{
  struct kiln_buf x = KILN_BUF_INIT, y = KILN_BUF_INIT;
  bool r = kiln_read_file (a, &x, NULL) == 0 && kiln_read_file (b, &y, NULL) == 0 && x.len == y.len
           && memcmp (kiln_buf_str (&x), kiln_buf_str (&y), x.len) == 0;
  kiln_buf_release (&x);
  kiln_buf_release (&y);
  return r;
}

static void
test_pure (void)
{
  char *b = NULL, *k = NULL;
  tap_ok (kiln_s3_parse_uri ("s3://my-bucket/a/b c.txt", &b, &k, NULL) == 0 && strcmp (b, "my-bucket") == 0
              && strcmp (k, "a/b c.txt") == 0,
          "parse_uri: bucket and key");
  free (b);
  free (k);
  tap_ok (kiln_s3_parse_uri ("s3://bucket", &b, &k, NULL) == 0 && strcmp (k, "") == 0, "parse_uri: bucket only");
  free (b);
  free (k);
  _cleanup_error_ kiln_error *e = NULL;
  const char *bad[] = {"https://x/y", "s3://", "s3:///key", "s3://bad bucket/k", "S3://b/k"};
  bool all = true;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    {
      kiln_error_freep (&e);
      if (kiln_s3_parse_uri (bad[i], &b, &k, &e) == 0 || e->code != KILN_ERR_INVALID || !strstr (e->message, bad[i]))
        all = false;
    }
  tap_ok (all, "parse_uri: rejects malformed URIs, naming them");

  char *out = NULL;
  const char *s = "a&amp;b&lt;c&gt;d&quot;e&apos;f&#65;&#x42;&#xe9;&#x1F600;";
  tap_ok (kiln_s3_xml_unescape (s, strlen (s), &out) == 0
              && strcmp (out, "a&b<c>d\"e'fAB\xc3\xa9\xf0\x9f\x98\x80") == 0,
          "xml_unescape: named and numeric references");
  free (out);
  const char *bads[] = {"&bogus;", "&#0;", "&#xD800;", "&amp", "&#x110000;", "&#;"};
  all = true;
  for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++)
    if (kiln_s3_xml_unescape (bads[i], strlen (bads[i]), &out) == 0)
      {
        free (out);
        all = false;
      }
  tap_ok (all, "xml_unescape: rejects malformed references");

  char *code = NULL, *msg = NULL;
  kiln_s3_parse_error ("<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>The key &quot;x&quot; "
                       "does not exist.</Message></Error>",
                       &code, &msg);
  tap_ok (code && msg && strcmp (code, "NoSuchKey") == 0 && strcmp (msg, "The key \"x\" does not exist.") == 0,
          "parse_error");
  free (code);
  free (msg);
  _cleanup_free_ char *r = kiln_http_redact_url ("https://user:pw@host:1/p/a?X-Amz-Signature=abc#frag");
  tap_ok (strcmp (r, "https://host:1/p/a") == 0, "redact_url: %s", r);
}

static void
test_against_fixture (void)
{
  _cleanup_error_ kiln_error *e = NULL;
  struct kiln_s3_client *c = client_with (&good_env, ACCOUNT, true);
  tap_ok (c != NULL && kiln_s3_client_path_style (c), "client for the fixture (path style)");
  if (c == NULL)
    return;

  /* PutObject / HeadObject / GetObject with an awkward key. */
  const char *key = "dir/a b+c~\xc3\xa9&$=.txt";
  _cleanup_free_ char *src = path_in_tmp ("src.txt"), *dst = path_in_tmp ("dst.txt");
  const char *text = "hello from kiln\n";
  write_file (src, text, strlen (text));
  int r = kiln_s3_put_object (c, BUCKET, key, src, "text/plain", &e);
  tap_ok (r == 0, "PutObject%s%s", r ? ": " : "", r ? kiln_error_message (e) : "");
  struct kiln_s3_object_info info = {0};
  kiln_error_freep (&e);
  r = kiln_s3_head_object (c, BUCKET, key, &info, &e);
  tap_ok (r == 0 && info.size == strlen (text) && info.etag && info.etag[0] == '"' && info.content_type
              && strcmp (info.content_type, "text/plain") == 0 && info.last_modified,
          "HeadObject: size %llu, etag %s%s%s", (unsigned long long) info.size, info.etag ? info.etag : "-",
          r ? ": " : "", r ? kiln_error_message (e) : "");
  kiln_s3_object_info_release (&info);
  kiln_error_freep (&e);
  r = kiln_s3_get_object (c, BUCKET, key, dst, &e);
  tap_ok (r == 0 && same_file (src, dst), "GetObject returns what was put%s%s", r ? ": " : "",
          r ? kiln_error_message (e) : "");

  /* A larger binary object, overwriting dst. */
  size_t big_len = 3 * 1024 * 1024 + 17;
  unsigned char *big = malloc (big_len);
  for (size_t i = 0; i < big_len; i++)
    big[i] = (unsigned char) ((i * 2654435761u) >> 13);
  _cleanup_free_ char *bigsrc = path_in_tmp ("big.bin");
  write_file (bigsrc, big, big_len);
  free (big);
  kiln_error_freep (&e);
  r = kiln_s3_put_object (c, BUCKET, "big.bin", bigsrc, NULL, &e);
  if (r == 0)
    r = kiln_s3_get_object (c, BUCKET, "big.bin", dst, &e);
  tap_ok (r == 0 && same_file (bigsrc, dst), "3 MiB round trip%s%s", r ? ": " : "", r ? kiln_error_message (e) : "");

  /* ListObjectsV2 over several pages (the fixture returns two per page). */
  const char *names[] = {"list/e", "list/a", "list/c d", "list/b", "list/\xc3\xa9", "other"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    {
      kiln_error_freep (&e);
      if (kiln_s3_put_object (c, BUCKET, names[i], src, NULL, &e) < 0)
        printf ("# put %s: %s\n", names[i], kiln_error_message (e));
    }
  struct kiln_s3_listing l = {0};
  kiln_error_freep (&e);
  r = kiln_s3_list_objects (c, BUCKET, "list/", &l, &e);
  const char *want[] = {"list/a", "list/b", "list/c d", "list/e", "list/\xc3\xa9"};
  bool good = r == 0 && l.n == 5;
  for (size_t i = 0; good && i < 5; i++)
    good = strcmp (l.objects[i].key, want[i]) == 0 && l.objects[i].info.size == strlen (text)
           && l.objects[i].info.etag && l.objects[i].info.etag[0] == '"';
  tap_ok (good, "ListObjectsV2 with prefix over 3 pages: %zu keys%s%s", l.n, r ? ": " : "",
          r ? kiln_error_message (e) : "");
  kiln_s3_listing_release (&l);
  kiln_error_freep (&e);
  r = kiln_s3_list_objects (c, BUCKET, NULL, &l, &e);
  tap_ok (r == 0 && l.n == 8 && strcmp (l.objects[0].key, "big.bin") == 0 && strcmp (l.objects[1].key, key) == 0,
          "ListObjectsV2 of the whole bucket: %zu keys", l.n);
  kiln_s3_listing_release (&l);
  kiln_error_freep (&e);
  r = kiln_s3_list_objects (c, BUCKET, "nothing/", &l, &e);
  tap_ok (r == 0 && l.n == 0, "ListObjectsV2 of an empty prefix");
  kiln_s3_listing_release (&l);

  /* Missing things. */
  kiln_error_freep (&e);
  r = kiln_s3_head_object (c, BUCKET, "no/such", &info, &e);
  tap_ok (r < 0 && e->code == KILN_ERR_NOT_FOUND && strstr (e->message, "s3://" BUCKET "/no/such"),
          "HeadObject of a missing key: %s", kiln_error_message (e));
  _cleanup_free_ char *missing = path_in_tmp ("missing.out");
  kiln_error_freep (&e);
  r = kiln_s3_get_object (c, BUCKET, "no/such", missing, &e);
  tap_ok (r < 0 && e->code == KILN_ERR_NOT_FOUND && strstr (e->message, "NoSuchKey") && access (missing, F_OK) != 0,
          "GetObject of a missing key leaves no file: %s", kiln_error_message (e));
  kiln_error_freep (&e);
  r = kiln_s3_list_objects (c, "no-such-bucket", NULL, &l, &e);
  tap_ok (r < 0 && e->code == KILN_ERR_NOT_FOUND && strstr (e->message, "NoSuchBucket"),
          "ListObjectsV2 of a missing bucket: %s", kiln_error_message (e));
  kiln_error_freep (&e);
  r = kiln_s3_put_object (c, BUCKET, "x", "/nonexistent/kiln/file", NULL, &e);
  tap_ok (r < 0 && e->code == KILN_ERR_IO && strstr (e->message, "/nonexistent/kiln/file"),
          "PutObject of a missing file: %s", kiln_error_message (e));
  kiln_s3_client_free (c);

  /* The expected bucket owner is checked. */
  c = client_with (&good_env, "999999999999", true);
  kiln_error_freep (&e);
  r = c ? kiln_s3_head_object (c, BUCKET, key, &info, &e) : -1;
  tap_ok (r < 0 && e && e->code == KILN_ERR_REMOTE && strstr (e->message, "HTTP 403"),
          "wrong expected bucket owner is refused: %s", kiln_error_message (e));
  kiln_error_freep (&e);
  r = c ? kiln_s3_get_object (c, BUCKET, key, dst, &e) : -1;
  tap_ok (r < 0 && e && strstr (e->message, "AccessDenied"), "GetObject with the wrong owner: %s",
          kiln_error_message (e));
  kiln_s3_client_free (c);

  /* Wrong secret: the fixture's own SigV4 computes a different signature. */
  struct fake_env wrong = {{"HOME=/nonexistent/kiln-test", "AWS_ACCESS_KEY_ID=test",
                            "AWS_SECRET_ACCESS_KEY=not-the-secret", "AWS_REGION=us-east-1"}};
  c = client_with (&wrong, NULL, true);
  kiln_error_freep (&e);
  r = c ? kiln_s3_put_object (c, BUCKET, "w", src, NULL, &e) : -1;
  tap_ok (r < 0 && e && e->code == KILN_ERR_REMOTE && strstr (e->message, "SignatureDoesNotMatch")
              && !strstr (e->message, "not-the-secret"),
          "wrong secret: %s", kiln_error_message (e));
  kiln_s3_client_free (c);

  struct fake_env unknown = {{"HOME=/nonexistent/kiln-test", "AWS_ACCESS_KEY_ID=AKIDUNKNOWN",
                              "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=us-east-1"}};
  c = client_with (&unknown, NULL, true);
  kiln_error_freep (&e);
  r = c ? kiln_s3_list_objects (c, BUCKET, NULL, &l, &e) : -1;
  tap_ok (r < 0 && e && strstr (e->message, "InvalidAccessKeyId"), "unknown access key: %s", kiln_error_message (e));
  kiln_s3_client_free (c);

  /* Endpoint from AWS_ENDPOINT_URL_S3, a session token, and no region at all
   * (S3 falls back to us-east-1). */
  char endpoint_var[96];
  snprintf (endpoint_var, sizeof endpoint_var, "AWS_ENDPOINT_URL_S3=%s", endpoint);
  struct fake_env via_env = {{"HOME=/nonexistent/kiln-test", "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test",
                              "AWS_SESSION_TOKEN=session/token+=", endpoint_var}};
  c = client_with (&via_env, NULL, false);
  kiln_error_freep (&e);
  r = c ? kiln_s3_get_object (c, BUCKET, key, dst, &e) : -1;
  tap_ok (r == 0 && same_file (src, dst) && strcmp (kiln_s3_client_endpoint (c), endpoint) == 0,
          "endpoint from AWS_ENDPOINT_URL_S3, signed session token%s%s", r ? ": " : "",
          r ? kiln_error_message (e) : "");
  kiln_s3_client_free (c);

  /* A presigned URL made by sigv4.c, fetched by http_client. */
  char host[64], amz_date[KILN_SIGV4_AMZ_DATE_LEN + 1];
  snprintf (host, sizeof host, "127.0.0.1:%d", port);
  kiln_sigv4_format_amz_date (time (NULL), amz_date);
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("/%s/%s", BUCKET, key);
  struct kiln_sigv4_pair h[] = {{"host", host}};
  struct kiln_sigv4_request preq = {.method = "GET", .path = path, .headers = h, .n_headers = 1};
  struct kiln_sigv4_signer signer = {.access_key_id = "test", .secret_access_key = "test", .amz_date = amz_date,
                                     .region = "us-east-1", .service = "s3"};
  struct kiln_sigv4_result pres = {0};
  kiln_error_freep (&e);
  r = kiln_sigv4_presign (&preq, &signer, 300, &pres, &e);
  _cleanup_free_ char *enc = kiln_sigv4_uri_encode (path, true);
  _cleanup_free_ char *url = NULL;
  url = kiln_xasprintf ("http://%s%s?%s", host, enc, r == 0 ? pres.query_string : "");
  struct kiln_http_request hreq = {.method = "GET", .url = url, .timeout_seconds = 30};
  struct kiln_http_response resp = {0};
  r = r == 0 ? kiln_http_perform (&hreq, &resp, &e) : -1;
  tap_ok (r == 0 && resp.status == 200 && strcmp (kiln_buf_str (&resp.body), text) == 0
              && kiln_http_response_header (&resp, "ETag") != NULL,
          "presigned GET: HTTP %ld", resp.status);
  kiln_http_response_release (&resp);

  /* The same URL for another key does not verify. */
  _cleanup_free_ char *other = NULL;
  other = kiln_xasprintf ("http://%s/%s/big.bin?%s", host, BUCKET, pres.query_string ? pres.query_string : "");
  hreq.url = other;
  _cleanup_free_ char *to_file = path_in_tmp ("presigned.out");
  hreq.response_path = to_file;
  kiln_error_freep (&e);
  r = kiln_http_perform (&hreq, &resp, &e);
  tap_ok (r == 0 && resp.status == 403 && strstr (kiln_buf_str (&resp.body), "SignatureDoesNotMatch")
              && access (to_file, F_OK) != 0,
          "presigned URL for another key is refused; error body kept in memory, no file");
  kiln_http_response_release (&resp);
  kiln_sigv4_result_release (&pres);

  /* http_client: a 2xx body to a file, and a HEAD. */
  kiln_error_freep (&e);
  struct kiln_sigv4_result p2 = {0};
  preq.path = path;
  r = kiln_sigv4_presign (&preq, &signer, 300, &p2, &e);
  _cleanup_free_ char *url2 = NULL;
  url2 = kiln_xasprintf ("http://%s%s?%s", host, enc, r == 0 ? p2.query_string : "");
  hreq.url = url2;
  r = kiln_http_perform (&hreq, &resp, &e);
  struct kiln_buf got = KILN_BUF_INIT;
  tap_ok (r == 0 && resp.status == 200 && resp.body.len == 0 && resp.body_bytes == strlen (text)
              && kiln_read_file (to_file, &got, NULL) == 0 && strcmp (kiln_buf_str (&got), text) == 0,
          "http_client writes a 2xx body to response_path");
  kiln_buf_release (&got);
  kiln_http_response_release (&resp);
  kiln_sigv4_result_release (&p2);
}

static void
test_transport_errors (void)
{
  /* The fixture is gone: nothing listens on its port any more. */
  char url[128];
  snprintf (url, sizeof url, "http://127.0.0.1:%d/bucket/key?X-Amz-Signature=deadbeefsecret", port);
  struct kiln_http_request req = {.method = "GET", .url = url, .connect_timeout_seconds = 5};
  struct kiln_http_response resp = {0};
  _cleanup_error_ kiln_error *e = NULL;
  int r = kiln_http_perform (&req, &resp, &e);
  tap_ok (r < 0 && e && strstr (e->message, "GET http://127.0.0.1:") && strstr (e->message, "/bucket/key")
              && !strstr (e->message, "deadbeef"),
          "connection refused names method and URL, not the query: %s", kiln_error_message (e));
  kiln_http_response_release (&resp);
  kiln_error_freep (&e);
  req.url = "ftp://127.0.0.1/x";
  tap_ok (kiln_http_perform (&req, &resp, &e) < 0 && e->code == KILN_ERR_INVALID, "non-HTTP URLs are refused");
  kiln_http_response_release (&resp);
}

int
main (int argc, char **argv)
{
  if (argc != 2)
    {
      fprintf (stderr, "usage: %s PATH/TO/s3_fixture.py\n", argv[0]);
      return 2;
    }
  /* A proxy from the environment must not intercept loopback traffic. */
  unsetenv ("http_proxy");
  unsetenv ("HTTP_PROXY");
  unsetenv ("https_proxy");
  unsetenv ("HTTPS_PROXY");
  unsetenv ("all_proxy");
  unsetenv ("ALL_PROXY");

  test_pure ();
  if (!have_python3 ())
    {
      tap_ok (true, "# SKIP python3 is not available for the S3 fixture");
      tap_done ();
      return 0;
    }
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_make_temp_dir ("kiln-s3-test", &tmp, &e) < 0)
    {
      printf ("Bail out! %s\n", kiln_error_message (e));
      return 1;
    }
  atexit (cleanup_tmp);
  _cleanup_free_ char *store = path_in_tmp ("store");
  if (!start_fixture (argv[1], store))
    {
      printf ("Bail out! the S3 fixture %s did not start\n", argv[1]);
      return 1;
    }
  snprintf (endpoint, sizeof endpoint, "http://127.0.0.1:%d", port);
  tap_ok (true, "fixture listening on port %d", port);
  test_against_fixture ();
  stop_fixture ();
  test_transport_errors ();
  return tap_done ();
}
