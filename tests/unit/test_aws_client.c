/* test_aws_client.c - the AWS client (common/aws/aws_client.c): requests it
 * builds, replies it reads, its retry policy, and real calls to kiln-emulator.
 *
 * Usage: test_aws_client DATA_DIR [KILN_EMULATOR].  DATA_DIR is
 * tests/data/aws-client:
 *   requests/NAME.request  golden requests: the method and URL, the header
 *                          lines as sent (User-Agent left out, it carries the
 *                          version) and the body, for a fixed clock
 *                          (2015-08-30T12:36:00Z) and AWS's example
 *                          credentials.  KILN_REGENERATE=1 rewrites them from
 *                          what the client sends now; review the diff.
 *   replies/               recorded EC2 XML and SSM JSON replies, served by a
 *                          scripted transport to check what the client reads.
 * Everything but the last part runs in a fake world injected through
 * struct kiln_aws_hooks: a clock that only moves when the client sleeps, a
 * chosen jitter draw, and a transport that records each request and answers
 * from a script.  The last part starts the real kiln-emulator (mock
 * instances, one imported AMI) on a kernel-chosen port and calls EC2 and SSM
 * through libcurl; it is skipped when no emulator or qemu-img is at hand.
 * Credentials reach the client through an injected environment, never the
 * real one.  Output is TAP. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "aws_client.h"
#include "aws_config.h"
#include "buf.h"
#include "cleanup.h"
#include "fsutil.h"
#include "log.h"
#include "process.h"
#include "tap.h"
#include "xalloc.h"

#define FIXED_TIME 1440938160 /* 2015-08-30T12:36:00Z, as in AWS's SigV4 suite */
#define EXAMPLE_KEY "AKIDEXAMPLE"
#define EXAMPLE_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define MAX_REQUESTS 32

static const char *data_dir;
static bool regenerate;

/* ---- the injected environment ---- */

struct fake_env {
  const char *vars[12];
};

static const char *
fake_getenv (const char *name, void *opaque)
{
  const struct fake_env *fe = opaque;
  size_t l = strlen (name);
  for (int i = 0; i < 12 && fe->vars[i]; i++)
    if (strncmp (fe->vars[i], name, l) == 0 && fe->vars[i][l] == '=')
      return fe->vars[i] + l + 1;
  return NULL;
}

/* ---- the fake world: clock, jitter and a scripted transport ---- */

/* One scripted answer.  transport_error != 0 makes the exchange fail with
 * that kiln error code instead of returning a reply. */
struct reply {
  long status;
  const char *file;          /* under DATA_DIR/replies, or NULL */
  const char *body;          /* used when file is NULL */
  const char *header;        /* one "Name: value" response header, or NULL */
  int transport_error;
};

static struct {
  time_t start;
  long elapsed_ms;
  double u;
  long delays[MAX_REQUESTS];
  int n_delays;
  const struct reply *replies;
  size_t n_replies;
  size_t next;
  char *requests[MAX_REQUESTS];   /* serialized as in the golden files */
  char *dates[MAX_REQUESTS];      /* X-Amz-Date of each */
  char *authorizations[MAX_REQUESTS];
  int n_requests;
  bool user_agent_ok;
} world;

static void
world_reset (const struct reply *replies, size_t n)
{
  for (int i = 0; i < world.n_requests; i++)
    {
      free (world.requests[i]);
      free (world.dates[i]);
      free (world.authorizations[i]);
    }
  memset (&world, 0, sizeof world);
  world.start = FIXED_TIME;
  world.u = 1.0;
  world.replies = replies;
  world.n_replies = n;
  world.user_agent_ok = true;
}

static time_t
fake_now (void *opaque)
{
  return world.start + world.elapsed_ms / 1000;
}

static void
fake_sleep_ms (long ms, void *opaque)
{
  if (world.n_delays < MAX_REQUESTS)
    world.delays[world.n_delays++] = ms;
  world.elapsed_ms += ms;
}

static double
fake_random (void *opaque)
{
  return world.u;
}

static bool
read_data_file (const char *sub, const char *name, struct kiln_buf *out)
{
  _cleanup_free_ char *path = NULL;
  path = kiln_xasprintf ("%s/%s/%s", data_dir, sub, name);
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_read_file (path, out, &e) < 0)
    {
      printf ("# %s\n", kiln_error_message (e));
      return false;
    }
  return true;
}

static int
fake_perform (const struct kiln_http_request *req, struct kiln_http_response *resp, kiln_error **err, void *opaque)
{
  memset (resp, 0, sizeof *resp);
  struct kiln_buf s = KILN_BUF_INIT;
  kiln_buf_printf (&s, "%s %s\n", req->method, req->url);
  char *date = NULL, *auth = NULL;
  for (const char *const *h = req->headers; h && *h; h++)
    {
      if (strncasecmp (*h, "User-Agent: ", 12) == 0)
        {
          if (strncmp (*h + 12, "kiln/", 5) != 0)
            world.user_agent_ok = false;
          continue;
        }
      if (strncasecmp (*h, "X-Amz-Date: ", 12) == 0)
        date = kiln_xstrdup (*h + 12);
      if (strncasecmp (*h, "Authorization: ", 15) == 0)
        auth = kiln_xstrdup (*h + 15);
      kiln_buf_printf (&s, "%s\n", *h);
    }
  kiln_buf_puts (&s, "\n");
  if (req->body)
    kiln_buf_append (&s, req->body, (size_t) req->body_len);
  kiln_buf_puts (&s, "\n");
  if (world.n_requests < MAX_REQUESTS)
    {
      world.requests[world.n_requests] = kiln_buf_steal (&s);
      world.dates[world.n_requests] = date;
      world.authorizations[world.n_requests] = auth;
      world.n_requests++;
    }
  else
    {
      kiln_buf_release (&s);
      free (date);
      free (auth);
    }

  if (world.next >= world.n_replies)
    return kiln_fail (err, "%s %s: the script has no more replies", req->method, req->url);
  const struct reply *r = &world.replies[world.next++];
  if (r->transport_error)
    return kiln_error_set (err, r->transport_error, 0, "%s %s: Couldn't connect to server", req->method, req->url);
  resp->status = r->status;
  if (r->file)
    {
      if (!read_data_file ("replies", r->file, &resp->body))
        return kiln_fail (err, "missing reply file %s", r->file);
    }
  else if (r->body)
    kiln_buf_puts (&resp->body, r->body);
  resp->body_bytes = resp->body.len;
  if (r->header)
    {
      const char *colon = strchr (r->header, ':');
      resp->headers = kiln_xcalloc (1, sizeof *resp->headers);
      resp->headers[0].name = kiln_xstrndup (r->header, (size_t) (colon - r->header));
      for (char *p = resp->headers[0].name; *p; p++)
        *p = (char) tolower ((unsigned char) *p);
      resp->headers[0].value = kiln_xstrdup (colon + 2);
      resp->n_headers = 1;
    }
  return 0;
}

static const struct kiln_aws_hooks fake_hooks = {fake_now, fake_sleep_ms, fake_random, fake_perform, NULL};

/* A client for service from the fake environment vars, living in the fake
 * world unless opts says otherwise. */
static struct kiln_aws_client *
client_from (const char *service, const struct fake_env *fe, const struct kiln_aws_client_options *opts,
             kiln_error **err)
{
  struct kiln_aws_env env = {fake_getenv, (void *) fe};
  struct kiln_aws_config *cfg = NULL;
  if (kiln_aws_config_load (&env, NULL, &cfg, err) < 0)
    return NULL;
  struct kiln_aws_client_options o = {0};
  if (opts)
    o = *opts;
  if (o.hooks == NULL)
    o.hooks = &fake_hooks;
  struct kiln_aws_client *c = NULL;
  kiln_aws_client_new (cfg, service, &o, &c, err);
  kiln_aws_config_free (cfg);
  return c;
}

static const struct fake_env example_env = {
  {"HOME=/nonexistent/kiln-test", "AWS_ACCESS_KEY_ID=" EXAMPLE_KEY, "AWS_SECRET_ACCESS_KEY=" EXAMPLE_SECRET,
   "AWS_REGION=us-east-1"}};

/* ---- golden requests ---- */

/* Compares the recorded request number index with requests/NAME.request,
 * or writes it there when regenerating. */
static bool
check_golden_request (const char *name, int index)
{
  CHECK (index < world.n_requests);
  const char *got = world.requests[index];
  _cleanup_free_ char *file = NULL;
  file = kiln_xasprintf ("%s.request", name);
  if (regenerate)
    {
      _cleanup_free_ char *path = NULL;
      path = kiln_xasprintf ("%s/requests/%s", data_dir, file);
      _cleanup_error_ kiln_error *e = NULL;
      if (kiln_write_file_atomic (path, got, strlen (got), 0644, &e) < 0)
        {
          printf ("# %s\n", kiln_error_message (e));
          return false;
        }
      return true;
    }
  struct kiln_buf want = KILN_BUF_INIT;
  bool have = read_data_file ("requests", file, &want);
  bool same = have && strcmp (kiln_buf_str (&want), got) == 0;
  if (!same)
    {
      printf ("# expected (%s):\n", file);
      for (const char *p = kiln_buf_str (&want); *p;)
        {
          size_t l = strcspn (p, "\n");
          printf ("#   %.*s\n", (int) l, p);
          p += l + (p[l] == '\n');
        }
      printf ("# got:\n");
      for (const char *p = got; *p;)
        {
          size_t l = strcspn (p, "\n");
          printf ("#   %.*s\n", (int) l, p);
          p += l + (p[l] == '\n');
        }
    }
  kiln_buf_release (&want);
  return same;
}

static bool
golden_describe_instances (void)
{
  static const struct reply replies[] = {{200, "ec2-describe-instances.xml"}};
  world_reset (replies, 1);
  _cleanup_error_ kiln_error *e = NULL;
  struct kiln_aws_client *c = client_from ("ec2", &example_env, NULL, &e);
  if (c == NULL)
    printf ("# %s\n", kiln_error_message (e));
  CHECK (c != NULL);
  CHECK (strcmp (kiln_aws_client_endpoint (c), "https://ec2.us-east-1.amazonaws.com") == 0);
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  const char *ids[] = {"i-0123456789abcdef0", "i-0fedcba9876543210"};
  kiln_aws_params_add_list (&p, "InstanceId", ids, 2);
  const char *states[] = {"running", "stopped"};
  kiln_aws_params_add_filter (&p, "instance-state-name", states, 2);
  const char *build[] = {"web build/1 (x+y)"};
  kiln_aws_params_add_filter (&p, "tag:kiln:build", build, 1);
  kiln_aws_params_addf (&p, "MaxResults", "%d", 5);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (c, "DescribeInstances", &p, &doc, NULL, &e);
  if (r < 0)
    printf ("# %s\n", kiln_error_message (e));
  kiln_aws_params_release (&p);
  xmlFreeDoc (doc);
  kiln_aws_client_free (c);
  CHECK (r == 0);
  CHECK (world.user_agent_ok);
  return check_golden_request ("ec2-describe-instances", 0);
}

static bool
golden_run_instances (void)
{
  static const struct reply replies[] = {{200, "ec2-run-instances.xml"}};
  world_reset (replies, 1);
  static const struct fake_env env = {{"HOME=/nonexistent/kiln-test", "AWS_ACCESS_KEY_ID=" EXAMPLE_KEY,
                                       "AWS_SECRET_ACCESS_KEY=" EXAMPLE_SECRET,
                                       "AWS_SESSION_TOKEN=FQoGZXIvYXdzEXAMPLE/token+with=chars",
                                       "AWS_DEFAULT_REGION=eu-west-1", "AWS_ENDPOINT_URL_EC2=http://wrong.invalid:1"}};
  struct kiln_aws_client_options o = {.endpoint_url = "http://127.0.0.1:4566", .region = "us-east-1"};
  _cleanup_error_ kiln_error *e = NULL;
  struct kiln_aws_client *c = client_from ("ec2", &env, &o, &e);
  if (c == NULL)
    printf ("# %s\n", kiln_error_message (e));
  CHECK (c != NULL);
  CHECK (strcmp (kiln_aws_client_region (c), "us-east-1") == 0);
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "ImageId", "ami-0abcdef1234567890");
  kiln_aws_params_add (&p, "InstanceType", "t3.small");
  kiln_aws_params_addf (&p, "MinCount", "%d", 1);
  kiln_aws_params_addf (&p, "MaxCount", "%d", 1);
  kiln_aws_params_add (&p, "SubnetId", "subnet-0fedcba9876543210");
  const char *groups[] = {"sg-0123abcd4567ef890", "sg-0aaaabbbbccccdddd"};
  kiln_aws_params_add_list (&p, "SecurityGroupId", groups, 2);
  kiln_aws_params_add (&p, "IamInstanceProfile.Name", "kiln-ssm");
  kiln_aws_params_add (&p, "KeyName", "kiln-build");
  kiln_aws_params_add (&p, "UserData", "IyEvYmluL3NoCmVjaG8gaGk+L3RtcC94Cg==");
  kiln_aws_params_add (&p, "ClientToken", "kiln-3f2a9c1e");
  const struct kiln_aws_tag instance_tags[] = {{"Name", "kiln build & test <web>"}, {"kiln:build", "20240514"}};
  kiln_aws_params_add_tag_specification (&p, "instance", instance_tags, 2);
  const struct kiln_aws_tag volume_tags[] = {{"kiln:build", "20240514"}};
  kiln_aws_params_add_tag_specification (&p, "volume", volume_tags, 1);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (c, "RunInstances", &p, &doc, NULL, &e);
  if (r < 0)
    printf ("# %s\n", kiln_error_message (e));
  kiln_aws_params_release (&p);
  xmlFreeDoc (doc);
  kiln_aws_client_free (c);
  CHECK (r == 0);
  CHECK (strstr (world.requests[0], "X-Amz-Security-Token: FQoGZXIvYXdzEXAMPLE/token+with=chars\n") != NULL);
  return check_golden_request ("ec2-run-instances", 0);
}

static bool
golden_ssm_send_command (void)
{
  static const struct reply replies[] = {{200, "ssm-send-command.json", NULL, "x-amzn-RequestId: req-ssm-1"}};
  world_reset (replies, 1);
  /* The service variable wins over AWS_ENDPOINT_URL; its path is kept. */
  static const struct fake_env env = {
    {"HOME=/nonexistent/kiln-test", "AWS_ACCESS_KEY_ID=" EXAMPLE_KEY, "AWS_SECRET_ACCESS_KEY=" EXAMPLE_SECRET,
     "AWS_REGION=us-east-1", "AWS_ENDPOINT_URL=http://wrong.invalid:1",
     "AWS_ENDPOINT_URL_SSM=http://localhost:4566/aws%20proxy/"}};
  _cleanup_error_ kiln_error *e = NULL;
  struct kiln_aws_client *c = client_from ("ssm", &env, NULL, &e);
  if (c == NULL)
    printf ("# %s\n", kiln_error_message (e));
  CHECK (c != NULL);
  CHECK (strcmp (kiln_aws_client_signing_name (c), "ssm") == 0);
  _cleanup_json_ json_t *input = json_pack ("{s:s, s:[s], s:{s:[s,s]}, s:i}", "DocumentName", "AWS-RunShellScript",
                                            "InstanceIds", "i-0123456789abcdef0", "Parameters", "commands",
                                            "set -e", "echo \"hello\" > /tmp/x", "TimeoutSeconds", 600);
  json_t *out = NULL;
  struct kiln_aws_error ae = {0};
  int r = kiln_aws_json_call (c, "AmazonSSM.SendCommand", input, &out, &ae, &e);
  if (r < 0)
    printf ("# %s\n", kiln_error_message (e));
  kiln_aws_client_free (c);
  bool ok = r == 0 && out && ae.http_status == 200 && ae.attempts == 1 && ae.request_id
            && strcmp (ae.request_id, "req-ssm-1") == 0;
  json_decref (out);
  kiln_aws_error_release (&ae);
  CHECK (ok);
  return check_golden_request ("ssm-send-command", 0);
}

static bool
golden_ssm_bare_target (void)
{
  static const struct reply replies[] = {{200, "ssm-get-parameter.json"}};
  world_reset (replies, 1);
  struct kiln_aws_client_options o = {.region = "eu-west-1"};
  _cleanup_error_ kiln_error *e = NULL;
  struct kiln_aws_client *c = client_from ("ssm", &example_env, &o, &e);
  CHECK (c != NULL);
  CHECK (strcmp (kiln_aws_client_endpoint (c), "https://ssm.eu-west-1.amazonaws.com") == 0);
  _cleanup_json_ json_t *input = json_pack ("{s:s, s:b}", "Name", "/kiln/base-ami", "WithDecryption", 1);
  json_t *out = NULL;
  int r = kiln_aws_json_call (c, "GetParameter", input, &out, NULL, &e);
  kiln_aws_client_free (c);
  json_decref (out);
  CHECK (r == 0);
  return check_golden_request ("ssm-get-parameter", 0);
}

/* EBS direct: a GET with a query (names and values encoded once in the
 * URL, sorted when signed) and a PUT of binary data signed
 * UNSIGNED-PAYLOAD with extra headers; then a rest-json error whose Reason
 * reaches the message. */
static bool
golden_ebs (void)
{
  static const struct reply replies[] = {
    {200, "ebs-list-snapshot-blocks.json"},
    {201, NULL, "{}"},
    {400, "ebs-error-checksum.json", NULL, "x-amzn-ErrorType: ValidationException"},
  };
  world_reset (replies, 3);
  struct kiln_aws_client_options o = {.endpoint_url = "http://127.0.0.1:4566", .region = "us-east-1",
                                      .retry = {.max_attempts = 1}};
  _cleanup_error_ kiln_error *e = NULL;
  struct kiln_aws_client *c = client_from ("ebs", &example_env, &o, &e);
  CHECK (c != NULL);
  const struct kiln_sigv4_pair query[] = {{"pageToken", "page 2/+="}, {"maxResults", "100"}};
  struct kiln_aws_rest_request list = {.operation = "ListSnapshotBlocks", .method = "GET",
                                       .path = "/snapshots/snap-0123/blocks", .query = query, .n_query = 2};
  struct kiln_http_response resp;
  int r = kiln_aws_rest_call (c, &list, &resp, NULL, &e);
  bool listed = r == 0 && resp.status == 200 && strstr (kiln_buf_str (&resp.body), "tok/0+a=") != NULL;
  kiln_http_response_release (&resp);

  unsigned char block[64];
  for (size_t i = 0; i < sizeof block; i++)
    block[i] = (unsigned char) ('a' + i % 26);
  const struct kiln_sigv4_pair headers[] = {{"x-amz-Data-Length", "64"},
                                            {"x-amz-Checksum", "c2FtcGxlLWNoZWNrc3Vt"},
                                            {"x-amz-Checksum-Algorithm", "SHA256"}};
  struct kiln_aws_rest_request put = {.operation = "PutSnapshotBlock", .method = "PUT",
                                      .path = "/snapshots/snap-0123/blocks/7", .headers = headers, .n_headers = 3,
                                      .content_type = "application/octet-stream", .body = block,
                                      .body_len = sizeof block, .unsigned_payload = true};
  int r2 = kiln_aws_rest_call (c, &put, &resp, NULL, &e);
  bool put_ok = r2 == 0 && resp.status == 201;
  kiln_http_response_release (&resp);

  struct kiln_aws_error ae = {0};
  _cleanup_error_ kiln_error *e3 = NULL;
  int r3 = kiln_aws_rest_call (c, &put, &resp, &ae, &e3);
  kiln_http_response_release (&resp);
  bool err_ok = r3 < 0 && ae.code && strcmp (ae.code, "ValidationException") == 0 && e3
                && strstr (kiln_error_message (e3), "(reason: INVALID_BLOCK_CHECKSUM)") != NULL
                && strstr (kiln_error_message (e3), "ebs PutSnapshotBlock: ValidationException") != NULL;
  if (!err_ok)
    printf ("# error: %s\n", kiln_error_message (e3));
  kiln_aws_error_release (&ae);
  kiln_aws_client_free (c);
  CHECK (listed);
  CHECK (put_ok);
  CHECK (err_ok);
  CHECK (strstr (world.requests[1], "X-Amz-Content-SHA256: UNSIGNED-PAYLOAD\n") != NULL);
  return check_golden_request ("ebs-list-snapshot-blocks", 0) && check_golden_request ("ebs-put-snapshot-block", 1);
}

static void
test_golden_requests (void)
{
  tap_ok (golden_describe_instances (), "golden: DescribeInstances (lists, filters, default endpoint)");
  tap_ok (golden_run_instances (), "golden: RunInstances (tag specifications, session token, endpoint override)");
  tap_ok (golden_ssm_send_command (), "golden: SSM SendCommand (AWS_ENDPOINT_URL_SSM with a path)");
  tap_ok (golden_ssm_bare_target (), "golden: SSM GetParameter named without its target prefix, --region");
  tap_ok (golden_ebs (), "golden: EBS direct REST calls (query, binary body, unsigned payload, error Reason)");
}

/* ---- pure pieces ---- */

static void
test_params_and_form (void)
{
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "Owner.1", "self");
  const char *names[] = {"debian-12-* (x)"};
  kiln_aws_params_add_filter (&p, "name", names, 1);
  kiln_aws_params_add_filter (&p, "state", NULL, 0);
  const struct kiln_aws_tag tags[] = {{"a=b", "c&d"}, {"e", NULL}};
  kiln_aws_params_add_tags (&p, "Tag", tags, 2);
  kiln_aws_params_add (&p, "Empty", NULL);
  _cleanup_free_ char *body = kiln_aws_ec2_form_body ("DescribeImages", &p);
  const char *want = "Action=DescribeImages&Version=2016-11-15&Owner.1=self&Filter.1.Name=name"
                     "&Filter.1.Value.1=debian-12-%2A%20%28x%29&Filter.2.Name=state&Tag.1.Key=a%3Db"
                     "&Tag.1.Value=c%26d&Tag.2.Key=e&Tag.2.Value=&Empty=";
  tap_ok (strcmp (body, want) == 0, "form body: order kept, lists numbered, values encoded: %s", body);
  kiln_aws_params_release (&p);
  tap_ok (p.n == 0 && p.items == NULL && p.n_filters == 0, "params_release empties the list");
  _cleanup_free_ char *bare = kiln_aws_ec2_form_body ("DescribeRegions", NULL);
  tap_ok (strcmp (bare, "Action=DescribeRegions&Version=2016-11-15") == 0, "form body without parameters");
}

static void
test_retry_pure (void)
{
  struct {
    long status;
    const char *code;
    bool retry;
  } table[] = {
    {503, "RequestLimitExceeded", true}, {400, "Throttling", true},      {400, "ThrottlingException", true},
    {429, "TooManyRequestsException", true}, {503, "ServiceUnavailable", true}, {500, "InternalError", true},
    {500, "InternalServerError", true},  {400, "RequestTimeout", true},  {400, "RequestLimitExceeded", true},
    {502, NULL, true},                   {504, NULL, true},              {429, NULL, true},
    {400, "InvalidParameterValue", false}, {400, "IncorrectInstanceState", false},
    {400, "InvalidInstanceID.NotFound", false}, {401, "AuthFailure", false},
    {403, "UnauthorizedOperation", false}, {400, "ValidationException", false}, {404, NULL, false},
    {400, NULL, false},                  {403, "SignatureDoesNotMatch", false},
  };
  bool all = true;
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (kiln_aws_retryable (table[i].status, table[i].code) != table[i].retry)
      {
        printf ("# %ld %s: expected %s\n", table[i].status, table[i].code ? table[i].code : "(none)",
                table[i].retry ? "retry" : "no retry");
        all = false;
      }
  tap_ok (all, "retryable: throttling, transient codes and 5xx/429 only");

  struct kiln_aws_retry_policy pol = {.base_delay_ms = 100, .max_delay_ms = 1000};
  long want_full[] = {100, 200, 400, 800, 1000, 1000, 1000};
  bool grow = true;
  for (int a = 1; a <= 7; a++)
    grow &= kiln_aws_retry_delay_ms (&pol, a, 1.0) == want_full[a - 1];
  tap_ok (grow, "delay ceilings double from the base and stop at the cap");
  tap_ok (kiln_aws_retry_delay_ms (&pol, 3, 0.5) == 200 && kiln_aws_retry_delay_ms (&pol, 3, 0.0) == 0
              && kiln_aws_retry_delay_ms (&pol, 3, 7.0) == 400 && kiln_aws_retry_delay_ms (&pol, 3, -1.0) == 0,
          "full jitter: u scales the ceiling, clamped to [0, 1]");
  tap_ok (kiln_aws_retry_delay_ms (&pol, 1000, 1.0) == 1000 && kiln_aws_retry_delay_ms (&pol, 0, 1.0) == 100,
          "huge attempt numbers do not overflow; attempt 0 counts as 1");
  struct kiln_aws_retry_policy defaults = {0};
  tap_ok (kiln_aws_retry_delay_ms (&defaults, 1, 1.0) == KILN_AWS_DEFAULT_BASE_DELAY_MS
              && kiln_aws_retry_delay_ms (&defaults, 30, 1.0) == KILN_AWS_DEFAULT_MAX_DELAY_MS
              && kiln_aws_retry_delay_ms (NULL, 2, 1.0) == 2 * KILN_AWS_DEFAULT_BASE_DELAY_MS,
          "zeros mean the default policy");
}

/* ---- replies read ---- */

static bool
parse_run_instances (void)
{
  static const struct reply replies[] = {{200, "ec2-run-instances.xml"}};
  world_reset (replies, 1);
  struct kiln_aws_client *c = client_from ("ec2", &example_env, NULL, NULL);
  CHECK (c != NULL);
  xmlDoc *doc = NULL;
  struct kiln_aws_error ae = {0};
  int r = kiln_aws_ec2_call (c, "RunInstances", NULL, &doc, &ae, NULL);
  kiln_aws_client_free (c);
  CHECK (r == 0 && doc != NULL);
  xmlNode *root = kiln_aws_xml_root (doc);
  xmlNode *inst = kiln_aws_xml_find (root, "instancesSet/item");
  _cleanup_free_ char *id = kiln_aws_xml_text (inst, "instanceId");
  _cleanup_free_ char *state = kiln_aws_xml_text (inst, "instanceState/name");
  _cleanup_free_ char *code = kiln_aws_xml_text (inst, "instanceState/code");
  _cleanup_free_ char *name = kiln_aws_xml_tag (inst, "Name");
  _cleanup_free_ char *nothing = kiln_aws_xml_tag (inst, "absent");
  _cleanup_free_ char *dns = kiln_aws_xml_text (inst, "dnsName");
  _cleanup_free_ char *profile = kiln_aws_xml_text (inst, "iamInstanceProfile/arn");
  _cleanup_free_ char *missing = kiln_aws_xml_text (inst, "instanceState/nope");
  bool ok = inst && id && strcmp (id, "i-0123456789abcdef0") == 0 && state && strcmp (state, "pending") == 0
            && code && strcmp (code, "0") == 0 && name && strcmp (name, "kiln build & test <web>") == 0
            && nothing == NULL && dns && strcmp (dns, "") == 0 && profile && strstr (profile, "kiln-ssm")
            && missing == NULL && kiln_aws_xml_count (inst) == 1 && ae.request_id
            && strcmp (ae.request_id, "7a62c49f-347e-4fc4-9331-6e8eEXAMPLE") == 0 && ae.http_status == 200;
  xmlFreeDoc (doc);
  kiln_aws_error_release (&ae);
  return ok;
}

static bool
parse_describe_instances (void)
{
  static const struct reply replies[] = {{200, "ec2-describe-instances.xml"}};
  world_reset (replies, 1);
  struct kiln_aws_client *c = client_from ("ec2", &example_env, NULL, NULL);
  CHECK (c != NULL);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (c, "DescribeInstances", NULL, &doc, NULL, NULL);
  kiln_aws_client_free (c);
  CHECK (r == 0 && doc != NULL);
  xmlNode *root = kiln_aws_xml_root (doc);
  struct kiln_buf seen = KILN_BUF_INIT;
  for (xmlNode *res = kiln_aws_xml_find (root, "reservationSet/item"); res; res = kiln_aws_xml_next (res))
    for (xmlNode *i = kiln_aws_xml_find (res, "instancesSet/item"); i; i = kiln_aws_xml_next (i))
      {
        _cleanup_free_ char *id = kiln_aws_xml_text (i, "instanceId");
        _cleanup_free_ char *st = kiln_aws_xml_text (i, "instanceState/name");
        kiln_buf_printf (&seen, "%s=%s;", id ? id : "?", st ? st : "?");
      }
  _cleanup_free_ char *first = kiln_aws_xml_text (root, "reservationSet/item/instancesSet/item/instanceId");
  _cleanup_free_ char *token = kiln_aws_xml_text (root, "nextToken");
  _cleanup_free_ char *reason = kiln_aws_xml_text (root, "reservationSet/item/instancesSet/item/stateReason/code");
  bool ok = strcmp (kiln_buf_str (&seen),
                    "i-0123456789abcdef0=running;i-0fedcba9876543210=stopped;i-00aa11bb22cc33dd4=terminated;")
                == 0
            && first && strcmp (first, "i-0123456789abcdef0") == 0 && token
            && strcmp (token, "eyJ2IjoiMiIsImMiOiJleGFtcGxlIn0=") == 0
            && reason == NULL /* the first instance has none: paths take first children */
            && kiln_aws_xml_count (kiln_aws_xml_find (root, "reservationSet/item")) == 2
            && kiln_aws_xml_find (root, "") == root && kiln_aws_xml_find (root, NULL) == root
            && kiln_aws_xml_child (NULL, "x") == NULL && kiln_aws_xml_next (NULL) == NULL;
  if (!ok)
    printf ("# seen %s\n", kiln_buf_str (&seen));
  kiln_buf_release (&seen);
  xmlFreeDoc (doc);
  return ok;
}

static bool
parse_describe_images (void)
{
  static const struct reply replies[] = {{200, "ec2-describe-images.xml"}};
  world_reset (replies, 1);
  struct kiln_aws_client *c = client_from ("ec2", &example_env, NULL, NULL);
  CHECK (c != NULL);
  xmlDoc *doc = NULL;
  int r = kiln_aws_ec2_call (c, "DescribeImages", NULL, &doc, NULL, NULL);
  kiln_aws_client_free (c);
  CHECK (r == 0 && doc != NULL);
  /* The most recent image, as Packer's most_recent filter picks it. */
  char *newest = NULL, *newest_date = NULL;
  for (xmlNode *i = kiln_aws_xml_find (kiln_aws_xml_root (doc), "imagesSet/item"); i; i = kiln_aws_xml_next (i))
    {
      char *date = kiln_aws_xml_text (i, "creationDate");
      if (date && (newest_date == NULL || strcmp (date, newest_date) > 0))
        {
          free (newest_date);
          free (newest);
          newest_date = date;
          newest = kiln_aws_xml_text (i, "imageId");
        }
      else
        free (date);
    }
  xmlNode *first = kiln_aws_xml_find (kiln_aws_xml_root (doc), "imagesSet/item");
  _cleanup_free_ char *snap = kiln_aws_xml_text (first, "blockDeviceMapping/item/ebs/snapshotId");
  _cleanup_free_ char *state = kiln_aws_xml_text (first, "imageState");
  _cleanup_free_ char *recipe = kiln_aws_xml_tag (first, "kiln:recipe");
  bool ok = newest && strcmp (newest, "ami-0999888777666555a") == 0 && snap
            && strcmp (snap, "snap-0123456789abcdef0") == 0 && state && strcmp (state, "available") == 0 && recipe
            && strcmp (recipe, "web-1.2.0") == 0;
  free (newest);
  free (newest_date);
  xmlFreeDoc (doc);
  return ok;
}

/* Runs one call against a script and returns its error message (malloc'd)
 * and parts. */
struct call_outcome {
  int ret;
  int kind;
  char *message;
  struct kiln_aws_error ae;
};

static void
outcome_release (struct call_outcome *o)
{
  free (o->message);
  kiln_aws_error_release (&o->ae);
  memset (o, 0, sizeof *o);
}

static struct call_outcome
run_scripted (const char *service, const char *op, const struct reply *replies, size_t n,
              const struct kiln_aws_client_options *opts)
{
  struct call_outcome o = {0};
  world_reset (replies, n);
  _cleanup_error_ kiln_error *e = NULL;
  struct kiln_aws_client *c = client_from (service, &example_env, opts, &e);
  if (c == NULL)
    {
      o.ret = -2;
      o.message = kiln_xstrdup (kiln_error_message (e));
      return o;
    }
  if (strcmp (service, "ec2") == 0)
    {
      xmlDoc *doc = NULL;
      o.ret = kiln_aws_ec2_call (c, op, NULL, &doc, &o.ae, &e);
      if (o.ret == 0 && doc == NULL)
        o.ret = -3;
      xmlFreeDoc (doc);
    }
  else
    {
      json_t *out = NULL;
      o.ret = kiln_aws_json_call (c, op, NULL, &out, &o.ae, &e);
      if (o.ret == 0 && out == NULL)
        o.ret = -3;
      json_decref (out);
    }
  if (e)
    {
      o.kind = e->code;
      o.message = kiln_xstrdup (e->message);
    }
  kiln_aws_client_free (c);
  return o;
}

static void
test_error_replies (void)
{
  static const struct reply bad_ami[] = {{400, "ec2-error-invalid-ami.xml"}};
  struct call_outcome o = run_scripted ("ec2", "RunInstances", bad_ami, 1, NULL);
  tap_ok (o.ret < 0 && o.message
              && strcmp (o.message, "ec2 RunInstances: InvalidAMIID.NotFound: The image id '[ami-1]' does not exist")
                     == 0
              && o.kind == KILN_ERR_NOT_FOUND && kiln_aws_error_is (&o.ae, "InvalidAMIID.NotFound")
              && o.ae.http_status == 400 && o.ae.attempts == 1 && o.ae.request_id
              && strcmp (o.ae.request_id, "b4a2b5e0-7d1c-4d2e-9f0a-example0003") == 0 && world.n_delays == 0,
          "EC2 error: names service, action, code and message; NOT_FOUND; not retried: %s", o.message);
  outcome_release (&o);

  static const struct reply bad_state[] = {{400, "ec2-error-incorrect-state.xml"}};
  o = run_scripted ("ec2", "StopInstances", bad_state, 1, NULL);
  tap_ok (o.ret < 0 && o.kind == KILN_ERR_REMOTE && kiln_aws_error_is (&o.ae, "IncorrectInstanceState")
              && o.ae.message && strstr (o.ae.message, "'i-0123456789abcdef0'") && world.n_requests == 1,
          "EC2 IncorrectInstanceState: the code reaches the caller, entities decoded: %s", o.message);
  outcome_release (&o);

  static const struct reply param_missing[] = {{400, "ssm-error-parameter.json", NULL, "x-amzn-RequestId: rq-7"}};
  o = run_scripted ("ssm", "AmazonSSM.GetParameter", param_missing, 1, NULL);
  tap_ok (o.ret < 0 && o.message
              && strcmp (o.message, "ssm GetParameter: ParameterNotFound: Parameter /kiln/nope not found.") == 0
              && o.kind == KILN_ERR_NOT_FOUND && o.ae.request_id && strcmp (o.ae.request_id, "rq-7") == 0
              && world.n_requests == 1,
          "SSM error: %s", o.message);
  outcome_release (&o);

  static const struct reply invocation[] = {{400, "ssm-error-invocation.json"}};
  o = run_scripted ("ssm", "GetCommandInvocation", invocation, 1, NULL);
  tap_ok (o.ret < 0 && kiln_aws_error_is (&o.ae, "InvocationDoesNotExist") && o.ae.message
              && strstr (o.ae.message, "does not exist on i-0123456789abcdef0") && o.kind == KILN_ERR_NOT_FOUND
              && strstr (o.message, "ssm GetCommandInvocation: InvocationDoesNotExist: An invocation"),
          "SSM error: prefix# stripped from __type, Message accepted: %s", o.message);
  outcome_release (&o);

  static const struct reply header_only[] = {
    {400, NULL, "", "x-amzn-ErrorType: AccessDeniedException:http://internal.amazon.com/coral/x/"}};
  o = run_scripted ("ssm", "DescribeInstanceInformation", header_only, 1, NULL);
  tap_ok (o.ret < 0 && kiln_aws_error_is (&o.ae, "AccessDeniedException") && o.ae.message == NULL
              && strcmp (o.message, "ssm DescribeInstanceInformation: AccessDeniedException") == 0,
          "SSM error code from x-amzn-ErrorType: %s", o.message);
  outcome_release (&o);

  static const struct reply not_xml[] = {{200, NULL, "{\"not\": \"xml\"}"}};
  o = run_scripted ("ec2", "DescribeRegions", not_xml, 1, NULL);
  tap_ok (o.ret == -1 && o.kind == KILN_ERR_REMOTE && strstr (o.message, "ec2 DescribeRegions: the reply")
              && strstr (o.message, "is not XML"),
          "a 2xx that is not XML: %s", o.message);
  outcome_release (&o);

  /* Entities that would multiply when the text is read: refused whole. */
  static const struct reply doctype[] = {
    {200, NULL,
     "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]>"
     "<DescribeRegionsResponse><requestId>&b;</requestId></DescribeRegionsResponse>"}};
  o = run_scripted ("ec2", "DescribeRegions", doctype, 1, NULL);
  tap_ok (o.ret == -1 && o.kind == KILN_ERR_REMOTE && strstr (o.message, "is not XML"),
          "a reply with a DOCTYPE is refused: %s", o.message);
  outcome_release (&o);

  static const struct reply not_json[] = {{200, NULL, "<xml/>"}};
  o = run_scripted ("ssm", "GetParameter", not_json, 1, NULL);
  tap_ok (o.ret == -1 && o.kind == KILN_ERR_REMOTE && strstr (o.message, "is not a JSON object"),
          "a 2xx that is not JSON: %s", o.message);
  outcome_release (&o);

  static const struct reply empty_json[] = {{200, NULL, ""}};
  o = run_scripted ("ssm", "DeleteParameter", empty_json, 1, NULL);
  tap_ok (o.ret == 0, "an empty awsJson 2xx body reads as {}");
  outcome_release (&o);

  static const struct reply forbidden[] = {{403, NULL, "<html>denied</html>"}};
  o = run_scripted ("ec2", "DescribeImages", forbidden, 1, NULL);
  tap_ok (o.ret < 0 && o.ae.code == NULL && o.ae.http_status == 403 && o.kind == KILN_ERR_REMOTE
              && strcmp (o.message, "ec2 DescribeImages: HTTP 403 without an AWS error in the reply") == 0,
          "an error reply that is not AWS's shape: %s", o.message);
  outcome_release (&o);

  /* Bad arguments never reach the transport. */
  world_reset (NULL, 0);
  struct kiln_aws_client *c = client_from ("ec2", &example_env, NULL, NULL);
  xmlDoc *doc = NULL;
  _cleanup_error_ kiln_error *e = NULL;
  int r = c ? kiln_aws_ec2_call (c, "Describe Instances&x=1", NULL, &doc, NULL, &e) : 0;
  tap_ok (r < 0 && e && e->code == KILN_ERR_INVALID && world.n_requests == 0, "a malformed action is refused: %s",
          kiln_error_message (e));
  kiln_error_freep (&e);
  json_t *out = NULL;
  r = c ? kiln_aws_json_call (c, "DescribeThings", NULL, &out, NULL, &e) : 0;
  tap_ok (r < 0 && e && e->code == KILN_ERR_INVALID && strstr (e->message, "prefix") && world.n_requests == 0,
          "a bare target on a service without a JSON prefix is refused: %s", kiln_error_message (e));
  kiln_aws_client_free (c);
}

static void
test_parse_replies (void)
{
  tap_ok (parse_run_instances (), "RunInstances reply: instance, state, tags (entities decoded), request id");
  tap_ok (parse_describe_instances (), "DescribeInstances reply: reservations and instances iterated, nextToken");
  tap_ok (parse_describe_images (), "DescribeImages reply: newest image, snapshot id, tags");

  struct kiln_aws_error ae = {0};
  const char *unqualified = "<ErrorResponse><Error><Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
                            "<RequestId>r-9</RequestId></ErrorResponse>";
  tap_ok (kiln_aws_parse_ec2_error (unqualified, strlen (unqualified), &ae) == 0
              && kiln_aws_error_is (&ae, "Throttling") && strcmp (ae.request_id, "r-9") == 0,
          "query-protocol ErrorResponse shape read too");
  kiln_aws_error_release (&ae);
  tap_ok (kiln_aws_parse_ec2_error ("<<<", 3, &ae) < 0 && ae.code == NULL
              && kiln_aws_parse_ec2_error (NULL, 0, &ae) < 0,
          "malformed error documents yield no code");
  kiln_aws_error_release (&ae);
}

/* ---- retries in the fake world ---- */

static void
test_retries (void)
{
  struct kiln_aws_client_options o = {.retry = {.max_attempts = 5, .base_delay_ms = 1000, .max_delay_ms = 8000}};

  /* Throttled twice, then served: three requests, delays 1 s and 2 s (u = 1),
   * each request signed at its own time. */
  static const struct reply twice[] = {{503, "ec2-error-throttled.xml"}, {503, "ec2-error-throttled.xml"},
                                       {200, "ec2-describe-images.xml"}};
  struct call_outcome out = run_scripted ("ec2", "DescribeImages", twice, 3, &o);
  tap_ok (out.ret == 0 && world.n_requests == 3 && out.ae.attempts == 3 && out.ae.code == NULL
              && world.n_delays == 2 && world.delays[0] == 1000 && world.delays[1] == 2000,
          "RequestLimitExceeded twice, then success: %d requests, delays %ld, %ld ms", world.n_requests,
          world.delays[0], world.delays[1]);
  tap_ok (world.n_requests == 3 && strcmp (world.dates[0], "20150830T123600Z") == 0
              && strcmp (world.dates[1], "20150830T123601Z") == 0 && strcmp (world.dates[2], "20150830T123603Z") == 0
              && strcmp (world.authorizations[0], world.authorizations[1]) != 0
              && strcmp (world.authorizations[1], world.authorizations[2]) != 0,
          "each attempt is signed afresh with a new X-Amz-Date");
  outcome_release (&out);

  /* Always throttled: five attempts, four pauses doubling to the cap. */
  static const struct reply always[] = {
    {503, "ec2-error-throttled.xml"}, {503, "ec2-error-throttled.xml"}, {503, "ec2-error-throttled.xml"},
    {503, "ec2-error-throttled.xml"}, {503, "ec2-error-throttled.xml"}, {200, "ec2-describe-images.xml"}};
  out = run_scripted ("ec2", "DescribeImages", always, 6, &o);
  tap_ok (out.ret < 0 && world.n_requests == 5 && out.ae.attempts == 5 && world.n_delays == 4
              && world.delays[0] == 1000 && world.delays[1] == 2000 && world.delays[2] == 4000
              && world.delays[3] == 8000 && out.kind == KILN_ERR_REMOTE
              && strcmp (out.message, "ec2 DescribeImages: RequestLimitExceeded: Request limit exceeded. "
                                      "(gave up after 5 attempts)")
                     == 0,
          "max attempts respected, delays grow to the cap: %s", out.message);
  outcome_release (&out);

  /* The cap holds with more attempts; u = 0.25 scales every pause. */
  struct kiln_aws_client_options capped = {.retry = {.max_attempts = 6, .base_delay_ms = 1000, .max_delay_ms = 3000}};
  out = run_scripted ("ec2", "DescribeImages", always, 6, &capped);
  bool capped_ok = world.n_delays == 5 && world.delays[0] == 1000 && world.delays[1] == 2000
                   && world.delays[2] == 3000 && world.delays[3] == 3000 && world.delays[4] == 3000;
  tap_ok (capped_ok, "pauses never exceed max_delay_ms");
  outcome_release (&out);

  /* Every retryable kind is retried once with max_attempts 2; every other
   * client error returns at once. */
  struct kiln_aws_client_options two = {.retry = {.max_attempts = 2, .base_delay_ms = 10, .max_delay_ms = 10}};
  struct {
    const char *service;
    struct reply first;
    bool retried;
  } kinds[] = {
    {"ec2", {503, "ec2-error-throttled.xml"}, true},
    {"ec2", {500, NULL, "<Response><Errors><Error><Code>InternalError</Code></Error></Errors></Response>"}, true},
    {"ec2", {503, "ec2-error-unavailable.html"}, true},
    {"ec2", {502, NULL, ""}, true},
    {"ec2", {504, NULL, ""}, true},
    {"ec2", {400, NULL, "<Response><Errors><Error><Code>RequestTimeout</Code></Error></Errors></Response>"}, true},
    {"ssm", {400, "ssm-error-throttling.json"}, true},
    {"ssm", {400, NULL, "{\"__type\":\"TooManyRequestsException\"}"}, true},
    {"ssm", {500, NULL, "{\"__type\":\"InternalServerError\",\"message\":\"oops\"}"}, true},
    {"ec2", {0, NULL, NULL, NULL, KILN_ERR_IO}, true},
    {"ec2", {0, NULL, NULL, NULL, KILN_ERR_TIMEOUT}, true},
    {"ec2", {400, "ec2-error-invalid-ami.xml"}, false},
    {"ec2", {400, "ec2-error-incorrect-state.xml"}, false},
    {"ec2", {401, NULL, "<Response><Errors><Error><Code>AuthFailure</Code></Error></Errors></Response>"}, false},
    {"ec2", {403, NULL, "<Response><Errors><Error><Code>UnauthorizedOperation</Code></Error></Errors></Response>"},
     false},
    {"ec2", {404, NULL, ""}, false},
    {"ssm", {400, "ssm-error-parameter.json"}, false},
    {"ssm", {400, NULL, "{\"__type\":\"ValidationException\",\"message\":\"bad\"}"}, false},
    {"ec2", {0, NULL, NULL, NULL, KILN_ERR_INVALID}, false},
  };
  bool all = true;
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    {
      struct reply script[2] = {kinds[i].first,
                                {200, strcmp (kinds[i].service, "ec2") == 0 ? "ec2-describe-images.xml"
                                                                            : "ssm-get-parameter.json"}};
      out = run_scripted (kinds[i].service, strcmp (kinds[i].service, "ec2") == 0 ? "DescribeImages" : "GetParameter",
                          script, 2, &two);
      bool good = kinds[i].retried ? (out.ret == 0 && world.n_requests == 2 && world.n_delays == 1)
                                   : (out.ret < 0 && world.n_requests == 1 && world.n_delays == 0
                                      && out.ae.attempts == 1);
      if (!good)
        {
          printf ("# case %zu (%s HTTP %ld %s): ret %d, %d requests: %s\n", i, kinds[i].service,
                  kinds[i].first.status, kinds[i].first.file ? kinds[i].first.file : "", out.ret, world.n_requests,
                  out.message ? out.message : "");
          all = false;
        }
      outcome_release (&out);
    }
  tap_ok (all, "throttling, 5xx and transport failures retried; other client errors returned at once");

  /* Transport failures that persist: the transport's message and code. */
  static const struct reply down[] = {{0, NULL, NULL, NULL, KILN_ERR_IO}, {0, NULL, NULL, NULL, KILN_ERR_IO}};
  out = run_scripted ("ec2", "DescribeRegions", down, 2, &two);
  tap_ok (out.ret < 0 && out.kind == KILN_ERR_IO && out.ae.http_status == 0 && out.ae.attempts == 2
              && strstr (out.message,
                         "ec2 DescribeRegions: POST https://ec2.us-east-1.amazonaws.com/: Couldn't connect")
              && strstr (out.message, "(gave up after 2 attempts)"),
          "persistent transport failure: %s", out.message);
  outcome_release (&out);

  struct kiln_aws_client_options one = {.retry = {.max_attempts = 1}};
  out = run_scripted ("ec2", "DescribeImages", always, 6, &one);
  tap_ok (out.ret < 0 && world.n_requests == 1 && world.n_delays == 0
              && strcmp (out.message, "ec2 DescribeImages: RequestLimitExceeded: Request limit exceeded.") == 0,
          "max_attempts 1 never retries");
  outcome_release (&out);

  /* The real jitter source: pauses stay within [0, ceiling] and vary. */
  struct kiln_aws_hooks real_random = fake_hooks;
  real_random.random = NULL;
  struct kiln_aws_client_options jitter = {
    .retry = {.max_attempts = 6, .base_delay_ms = 1000, .max_delay_ms = 6000}, .hooks = &real_random};
  bool within = true, varied = false;
  long first = -1;
  for (int round = 0; round < 20; round++)
    {
      out = run_scripted ("ec2", "DescribeImages", always, 6, &jitter);
      long ceil[] = {1000, 2000, 4000, 6000, 6000};
      within &= world.n_delays == 5;
      for (int k = 0; k < world.n_delays; k++)
        {
          within &= world.delays[k] >= 0 && world.delays[k] <= ceil[k];
          if (first < 0)
            first = world.delays[k];
          else if (world.delays[k] != first)
            varied = true;
        }
      outcome_release (&out);
    }
  tap_ok (within && varied, "full jitter from the real random source stays within the ceilings");
}

/* ---- client construction ---- */

static void
test_client_new (void)
{
  _cleanup_error_ kiln_error *e = NULL;
  static const struct fake_env no_region = {
    {"HOME=/nonexistent/kiln-test", "AWS_ACCESS_KEY_ID=a", "AWS_SECRET_ACCESS_KEY=b"}};
  struct kiln_aws_client *c = client_from ("ec2", &no_region, NULL, &e);
  tap_ok (c == NULL && e && e->code == KILN_ERR_INVALID && strncmp (e->message, "ec2: no region", 14) == 0,
          "no region: %s", kiln_error_message (e));
  kiln_error_freep (&e);

  static const struct fake_env no_creds = {{"HOME=/nonexistent/kiln-test", "AWS_REGION=us-east-1"}};
  c = client_from ("ssm", &no_creds, NULL, &e);
  tap_ok (c == NULL && e && e->code == KILN_ERR_NOT_FOUND && strncmp (e->message, "ssm: ", 5) == 0,
          "no credentials: %s", kiln_error_message (e));
  kiln_error_freep (&e);

  static const struct fake_env endpoints = {
    {"HOME=/nonexistent/kiln-test", "AWS_ACCESS_KEY_ID=a", "AWS_SECRET_ACCESS_KEY=b", "AWS_REGION=ap-south-1",
     "AWS_ENDPOINT_URL=http://all.example:4566", "AWS_ENDPOINT_URL_EC2=http://ec2.example:1"}};
  c = client_from ("ec2", &endpoints, NULL, &e);
  tap_ok (c && strcmp (kiln_aws_client_endpoint (c), "http://ec2.example:1") == 0
              && strcmp (kiln_aws_client_service (c), "ec2") == 0
              && strcmp (kiln_aws_client_region (c), "ap-south-1") == 0,
          "AWS_ENDPOINT_URL_EC2 wins over AWS_ENDPOINT_URL");
  kiln_aws_client_free (c);
  c = client_from ("ssm", &endpoints, NULL, &e);
  tap_ok (c && strcmp (kiln_aws_client_endpoint (c), "http://all.example:4566") == 0,
          "AWS_ENDPOINT_URL for a service without its own variable");
  kiln_aws_client_free (c);
  struct kiln_aws_client_options flag = {.endpoint_url = "http://flag.example:2"};
  c = client_from ("ec2", &endpoints, &flag, &e);
  tap_ok (c && strcmp (kiln_aws_client_endpoint (c), "http://flag.example:2") == 0, "--endpoint-url wins over both");
  kiln_aws_client_free (c);
  c = client_from ("imagebuilder", &example_env, NULL, &e);
  tap_ok (c && strcmp (kiln_aws_client_signing_name (c), "imagebuilder") == 0
              && strcmp (kiln_aws_client_endpoint (c), "https://imagebuilder.us-east-1.amazonaws.com") == 0,
          "imagebuilder: signing name and default endpoint");
  kiln_aws_client_free (c);
  c = client_from ("EC2", &example_env, NULL, &e);
  tap_ok (c == NULL && e && e->code == KILN_ERR_INVALID, "service ids are lowercase: %s", kiln_error_message (e));
  kiln_error_freep (&e);
}

/* ---- secrets stay out of logs and messages ---- */

static void
test_secrets (void)
{
  static const char secret[] = "SeCrEtKeYdOnOtLeAk0123456789abcdefghijk";
  static const char token[] = "ToKeNdOnOtLeAkIQoJb3JpZ2luX2VjEJr";
  static const struct fake_env env = {{"HOME=/nonexistent/kiln-test", "AWS_ACCESS_KEY_ID=AKIDSECRETTEST",
                                       "AWS_SECRET_ACCESS_KEY=SeCrEtKeYdOnOtLeAk0123456789abcdefghijk",
                                       "AWS_SESSION_TOKEN=ToKeNdOnOtLeAkIQoJb3JpZ2luX2VjEJr", "AWS_REGION=us-east-1"}};
  _cleanup_free_ char *log_path = NULL;
  _cleanup_close_ int log_fd = kiln_make_temp_file ("kiln-aws-log", &log_path, NULL);
  int saved_stderr = dup (STDERR_FILENO);
  enum kiln_log_level saved_level = kiln_log_get_level ();
  if (log_fd < 0 || saved_stderr < 0)
    {
      tap_ok (false, "capture stderr");
      return;
    }
  fflush (stderr);
  dup2 (log_fd, STDERR_FILENO);
  kiln_log_set_level (KILN_LOG_DEBUG);

  struct kiln_buf messages = KILN_BUF_INIT;
  struct kiln_buf sent = KILN_BUF_INIT;
  static const struct reply script[] = {{503, "ec2-error-throttled.xml"},
                                        {0, NULL, NULL, NULL, KILN_ERR_IO},
                                        {403, NULL,
                                         "<Response><Errors><Error><Code>SignatureDoesNotMatch</Code><Message>The "
                                         "request signature we calculated does not match</Message></Error></Errors>"
                                         "</Response>"}};
  world_reset (script, 3);
  struct kiln_aws_client_options o = {.retry = {.max_attempts = 3}};
  _cleanup_error_ kiln_error *e = NULL;
  struct kiln_aws_client *c = client_from ("ec2", &env, &o, &e);
  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "InstanceId.1", "i-1");
  xmlDoc *doc = NULL;
  struct kiln_aws_error ae = {0};
  int r = c ? kiln_aws_ec2_call (c, "DescribeInstances", &p, &doc, &ae, &e) : 0;
  kiln_buf_printf (&messages, "%s\n%s\n", kiln_error_message (e), ae.message ? ae.message : "");
  for (int i = 0; i < world.n_requests; i++)
    kiln_buf_puts (&sent, world.requests[i]);
  kiln_aws_error_release (&ae);
  kiln_aws_params_release (&p);
  kiln_aws_client_free (c);
  kiln_error_freep (&e);
  /* A client that cannot be made must not say why with the secret either. */
  static const struct fake_env bad_endpoint = {
    {"HOME=/nonexistent/kiln-test", "AWS_ACCESS_KEY_ID=AKIDSECRETTEST",
     "AWS_SECRET_ACCESS_KEY=SeCrEtKeYdOnOtLeAk0123456789abcdefghijk", "AWS_REGION=us-east-1",
     "AWS_ENDPOINT_URL_EC2=ftp://nowhere"}};
  c = client_from ("ec2", &bad_endpoint, NULL, &e);
  kiln_buf_printf (&messages, "%s\n", kiln_error_message (e));
  kiln_aws_client_free (c);

  fflush (stderr);
  dup2 (saved_stderr, STDERR_FILENO);
  close (saved_stderr);
  kiln_log_set_level (saved_level);
  struct kiln_buf logged = KILN_BUF_INIT;
  kiln_read_file (log_path, &logged, NULL);
  unlink (log_path);

  const char *all_sent = kiln_buf_str (&sent);
  tap_ok (r < 0 && world.n_requests == 3 && strstr (all_sent, token) != NULL
              && strstr (all_sent, "X-Amz-Security-Token: ToKeNdOnOtLeAk") != NULL
              && strstr (all_sent, secret) == NULL,
          "the session token is sent as X-Amz-Security-Token; the secret never leaves");
  /* Every signature sent, and the secret and token, are absent from what a
   * user can read. */
  bool clean = true;
  const char *texts[] = {kiln_buf_str (&messages), kiln_buf_str (&logged)};
  for (int t = 0; t < 2; t++)
    {
      if (strstr (texts[t], secret) || strstr (texts[t], token) || strstr (texts[t], "Signature=")
          || strstr (texts[t], "Authorization"))
        clean = false;
      for (int i = 0; i < world.n_requests; i++)
        {
          const char *sig = world.authorizations[i] ? strstr (world.authorizations[i], "Signature=") : NULL;
          if (sig && strstr (texts[t], sig + 10))
            clean = false;
        }
    }
  tap_ok (clean && strstr (kiln_buf_str (&logged), "RequestLimitExceeded") != NULL,
          "logs (retries were logged) and error messages hold no secret, token or signature");
  if (!clean)
    printf ("# messages: %s# log: %s", kiln_buf_str (&messages), kiln_buf_str (&logged));
  kiln_buf_release (&messages);
  kiln_buf_release (&sent);
  kiln_buf_release (&logged);
}

/* ---- against a real kiln-emulator ---- */

static char *tmp;
static pid_t emulator_pid = -1;

static void
stop_emulator (void)
{
  if (emulator_pid > 0)
    {
      kill (emulator_pid, SIGTERM);
      if (kiln_process_wait_exit (emulator_pid, 10000, NULL) == 0)
        {
          kill (emulator_pid, SIGKILL);
          kiln_process_wait_exit (emulator_pid, -1, NULL);
        }
      emulator_pid = -1;
    }
}

static void
cleanup_tmp (void)
{
  stop_emulator ();
  if (tmp)
    {
      kiln_remove_tree (tmp, NULL);
      free (tmp);
      tmp = NULL;
    }
}

static char *
path_in_tmp (const char *name)
{
  char *p = NULL;
  p = kiln_xasprintf ("%s/%s", tmp, name);
  return p;
}

/* Runs argv to completion; its stdout (trimmed) in *out when asked. */
static bool
run_tool (char *const *argv, char **out)
{
  struct kiln_process_spec spec = {.argv = argv, .timeout_ms = 60000};
  struct kiln_process_result res = {0};
  _cleanup_error_ kiln_error *e = NULL;
  bool ok = kiln_process_run (&spec, &res, &e) == 0 && res.exit_code == 0;
  if (!ok)
    printf ("# %s: %s%s\n", argv[0], e ? kiln_error_message (e) : "exit status",
            e ? "" : kiln_buf_str (&res.err));
  if (ok && out)
    {
      char *s = kiln_buf_steal (&res.out);
      size_t l = strlen (s);
      while (l > 0 && (s[l - 1] == '\n' || s[l - 1] == ' '))
        s[--l] = '\0';
      *out = s;
    }
  kiln_process_result_release (&res);
  return ok;
}

static bool
have_program (const char *name)
{
  const char *path = getenv ("PATH");
  _cleanup_free_ char *copy = kiln_xstrdup (path ? path : "/usr/bin:/bin");
  char *save = NULL;
  for (char *dir = strtok_r (copy, ":", &save); dir; dir = strtok_r (NULL, ":", &save))
    {
      _cleanup_free_ char *p = NULL;
      p = kiln_xasprintf ("%s/%s", dir, name);
      if (access (p, X_OK) == 0)
        return true;
    }
  return false;
}

/* Starts the emulator on a kernel-chosen port and reads the port from its
 * first line: "kiln-emulator: listening on http://127.0.0.1:PORT (...)". */
static int
start_emulator (const char *emulator, const char *state_dir)
{
  _cleanup_free_ char *out_path = path_in_tmp ("emulator.out");
  _cleanup_strv_ char **argv
      = kiln_strv_new (emulator, "--instances", "mock", "--listen", "127.0.0.1:0", "--state-dir", state_dir, NULL);
  struct kiln_process_spawn_spec spec = {.argv = argv, .stdout_path = out_path};
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_process_spawn (&spec, &emulator_pid, &e) < 0)
    {
      printf ("# %s\n", kiln_error_message (e));
      return -1;
    }
  double deadline = seconds_now () + 30;
  while (seconds_now () < deadline)
    {
      struct kiln_buf b = KILN_BUF_INIT;
      int port = -1;
      if (kiln_read_file (out_path, &b, NULL) == 0 && strchr (kiln_buf_str (&b), '\n'))
        {
          const char *at = strstr (kiln_buf_str (&b), "listening on http://127.0.0.1:");
          port = at ? atoi (at + strlen ("listening on http://127.0.0.1:")) : 0;
        }
      kiln_buf_release (&b);
      if (port >= 0)
        return port > 0 ? port : -1;
      if (kiln_process_wait_exit (emulator_pid, 0, NULL) == 1)
        {
          emulator_pid = -1;
          printf ("# the emulator exited before listening\n");
          return -1;
        }
      struct timespec ts = {0, 20 * 1000 * 1000};
      nanosleep (&ts, NULL);
    }
  printf ("# the emulator printed no port within 30 s\n");
  return -1;
}

static void
test_against_emulator (const char *emulator)
{
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_make_temp_dir ("kiln-aws-client-test", &tmp, &e) < 0)
    {
      tap_ok (false, "temporary directory: %s", kiln_error_message (e));
      return;
    }
  atexit (cleanup_tmp);
  _cleanup_free_ char *disk = path_in_tmp ("base.qcow2"), *state = path_in_tmp ("state");
  _cleanup_strv_ char **mk = kiln_strv_new ("qemu-img", "create", "-q", "-f", "qcow2", disk, "64M", NULL);
  _cleanup_strv_ char **import
      = kiln_strv_new (emulator, "import-image", disk, "--name", "kiln-client-test", "--state-dir", state, NULL);
  _cleanup_free_ char *ami = NULL;
  bool imported = run_tool (mk, NULL) && run_tool (import, &ami) && strncmp (ami, "ami-", 4) == 0;
  tap_ok (imported, "import-image made %s", ami ? ami : "nothing");
  if (!imported)
    return;
  int port = start_emulator (emulator, state);
  tap_ok (port > 0, "kiln-emulator listening on port %d", port);
  if (port <= 0)
    return;
  char endpoint[64];
  snprintf (endpoint, sizeof endpoint, "http://127.0.0.1:%d", port);

  /* The real world: libcurl, the clock, nanosleep. */
  static const struct kiln_aws_hooks real = {0};
  static const struct fake_env env = {
    {"HOME=/nonexistent/kiln-test", "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=us-east-1"}};
  struct kiln_aws_client_options o = {.endpoint_url = endpoint, .hooks = &real, .timeout_seconds = 30};
  struct kiln_aws_client *ec2 = client_from ("ec2", &env, &o, &e);
  struct kiln_aws_client *ssm = ec2 ? client_from ("ssm", &env, &o, &e) : NULL;
  tap_ok (ec2 && ssm, "clients for ec2 and ssm%s%s", e ? ": " : "", e ? kiln_error_message (e) : "");
  if (!ec2 || !ssm)
    {
      kiln_aws_client_free (ec2);
      return;
    }

  xmlDoc *doc = NULL;
  struct kiln_aws_error ae = {0};
  kiln_error_freep (&e);
  int r = kiln_aws_ec2_call (ec2, "DescribeRegions", NULL, &doc, &ae, &e);
  bool found = false;
  for (xmlNode *i = kiln_aws_xml_find (kiln_aws_xml_root (doc), "regionInfo/item"); i; i = kiln_aws_xml_next (i))
    {
      _cleanup_free_ char *name = kiln_aws_xml_text (i, "regionName");
      found |= name && strcmp (name, "us-east-1") == 0;
    }
  tap_ok (r == 0 && found && ae.request_id && *ae.request_id, "DescribeRegions lists us-east-1%s%s",
          r ? ": " : "", r ? kiln_error_message (e) : "");
  xmlFreeDoc (doc);
  doc = NULL;

  struct kiln_aws_params p = KILN_AWS_PARAMS_INIT;
  kiln_aws_params_add (&p, "ImageId", ami);
  kiln_aws_params_add (&p, "InstanceType", "t3.micro");
  kiln_aws_params_addf (&p, "MinCount", "%d", 1);
  kiln_aws_params_addf (&p, "MaxCount", "%d", 1);
  kiln_aws_params_add (&p, "ClientToken", "kiln-aws-client-test");
  const struct kiln_aws_tag tags[] = {{"Name", "kiln client & test"}, {"kiln:build", "t1"}};
  kiln_aws_params_add_tag_specification (&p, "instance", tags, 2);
  kiln_error_freep (&e);
  r = kiln_aws_ec2_call (ec2, "RunInstances", &p, &doc, &ae, &e);
  kiln_aws_params_release (&p);
  _cleanup_free_ char *instance = kiln_aws_xml_text (kiln_aws_xml_root (doc), "instancesSet/item/instanceId");
  tap_ok (r == 0 && instance && strncmp (instance, "i-", 2) == 0, "RunInstances launched %s%s%s",
          instance ? instance : "nothing", r ? ": " : "", r ? kiln_error_message (e) : "");
  xmlFreeDoc (doc);
  doc = NULL;

  kiln_aws_params_add (&p, "InstanceId.1", instance ? instance : "i-00000000000000000");
  kiln_error_freep (&e);
  r = kiln_aws_ec2_call (ec2, "DescribeInstances", &p, &doc, &ae, &e);
  kiln_aws_params_release (&p);
  xmlNode *inst = kiln_aws_xml_find (kiln_aws_xml_root (doc), "reservationSet/item/instancesSet/item");
  _cleanup_free_ char *described = kiln_aws_xml_text (inst, "instanceId");
  _cleanup_free_ char *state_name = kiln_aws_xml_text (inst, "instanceState/name");
  _cleanup_free_ char *tag = kiln_aws_xml_tag (inst, "Name");
  tap_ok (r == 0 && described && instance && strcmp (described, instance) == 0 && state_name
              && (strcmp (state_name, "pending") == 0 || strcmp (state_name, "running") == 0) && tag
              && strcmp (tag, "kiln client & test") == 0,
          "DescribeInstances: %s is %s, tagged '%s'", described ? described : "?", state_name ? state_name : "?",
          tag ? tag : "?");
  xmlFreeDoc (doc);
  doc = NULL;

  /* A filter the emulator evaluates. */
  const char *tagv[] = {"t1"};
  kiln_aws_params_add_filter (&p, "tag:kiln:build", tagv, 1);
  kiln_error_freep (&e);
  r = kiln_aws_ec2_call (ec2, "DescribeInstances", &p, &doc, &ae, &e);
  kiln_aws_params_release (&p);
  size_t n_filtered = kiln_aws_xml_count (
      kiln_aws_xml_find (kiln_aws_xml_root (doc), "reservationSet/item/instancesSet/item"));
  tap_ok (r == 0 && n_filtered == 1, "DescribeInstances with a tag filter: %zu instance(s)%s%s", n_filtered,
          r ? ": " : "", r ? kiln_error_message (e) : "");
  xmlFreeDoc (doc);
  doc = NULL;

  kiln_aws_params_add (&p, "InstanceId.1", "i-0123456789abcdef0");
  kiln_error_freep (&e);
  r = kiln_aws_ec2_call (ec2, "DescribeInstances", &p, &doc, &ae, &e);
  kiln_aws_params_release (&p);
  tap_ok (r < 0 && doc == NULL && kiln_aws_error_is (&ae, "InvalidInstanceID.NotFound") && ae.http_status == 400
              && ae.attempts == 1 && e && e->code == KILN_ERR_NOT_FOUND
              && strncmp (e->message, "ec2 DescribeInstances: InvalidInstanceID.NotFound: ", 51) == 0,
          "unknown instance: %s", kiln_error_message (e));

  _cleanup_json_ json_t *put = json_pack ("{s:s, s:s, s:s, s:b}", "Name", "/kiln/test/base-ami", "Value", ami,
                                          "Type", "String", "Overwrite", 1);
  json_t *out = NULL;
  kiln_error_freep (&e);
  r = kiln_aws_json_call (ssm, "AmazonSSM.PutParameter", put, &out, &ae, &e);
  tap_ok (r == 0 && json_integer_value (json_object_get (out, "Version")) >= 1, "SSM PutParameter%s%s",
          r ? ": " : "", r ? kiln_error_message (e) : "");
  json_decref (out);
  out = NULL;
  _cleanup_json_ json_t *get = json_pack ("{s:s}", "Name", "/kiln/test/base-ami");
  kiln_error_freep (&e);
  r = kiln_aws_json_call (ssm, "GetParameter", get, &out, &ae, &e);
  const char *value = json_string_value (json_object_get (json_object_get (out, "Parameter"), "Value"));
  tap_ok (r == 0 && value && strcmp (value, ami) == 0, "SSM GetParameter returns %s%s%s", value ? value : "nothing",
          r ? ": " : "", r ? kiln_error_message (e) : "");
  json_decref (out);
  out = NULL;
  json_object_set_new (get, "Name", json_string ("/kiln/test/missing"));
  kiln_error_freep (&e);
  r = kiln_aws_json_call (ssm, "AmazonSSM.GetParameter", get, &out, &ae, &e);
  tap_ok (r < 0 && out == NULL && kiln_aws_error_is (&ae, "ParameterNotFound") && e && e->code == KILN_ERR_NOT_FOUND,
          "SSM GetParameter of a missing name: %s", kiln_error_message (e));

  if (instance)
    {
      kiln_aws_params_add (&p, "InstanceId.1", instance);
      kiln_error_freep (&e);
      r = kiln_aws_ec2_call (ec2, "TerminateInstances", &p, &doc, &ae, &e);
      kiln_aws_params_release (&p);
      _cleanup_free_ char *now = kiln_aws_xml_text (kiln_aws_xml_root (doc), "instancesSet/item/currentState/name");
      tap_ok (r == 0 && now && (strcmp (now, "shutting-down") == 0 || strcmp (now, "terminated") == 0),
              "TerminateInstances: %s", now ? now : kiln_error_message (e));
      xmlFreeDoc (doc);
      doc = NULL;
    }
  kiln_aws_client_free (ec2);
  kiln_aws_client_free (ssm);

  /* A wrong secret is refused by the emulator's SigV4 check, once. */
  static const struct fake_env wrong = {{"HOME=/nonexistent/kiln-test", "AWS_ACCESS_KEY_ID=test",
                                         "AWS_SECRET_ACCESS_KEY=not-the-secret", "AWS_REGION=us-east-1"}};
  ec2 = client_from ("ec2", &wrong, &o, NULL);
  kiln_error_freep (&e);
  r = ec2 ? kiln_aws_ec2_call (ec2, "DescribeRegions", NULL, &doc, &ae, &e) : 0;
  tap_ok (r < 0 && ae.attempts == 1 && ae.code && (ae.http_status == 401 || ae.http_status == 403) && e
              && !strstr (e->message, "not-the-secret"),
          "wrong secret: %s", kiln_error_message (e));
  kiln_aws_client_free (ec2);

  /* With the emulator gone, connection failures are retried, then reported. */
  stop_emulator ();
  struct kiln_aws_hooks quick = {.sleep_ms = fake_sleep_ms};
  struct kiln_aws_client_options gone = {.endpoint_url = endpoint, .hooks = &quick, .retry = {.max_attempts = 3}};
  world_reset (NULL, 0);
  ec2 = client_from ("ec2", &env, &gone, NULL);
  kiln_error_freep (&e);
  r = ec2 ? kiln_aws_ec2_call (ec2, "DescribeRegions", NULL, &doc, &ae, &e) : 0;
  tap_ok (r < 0 && ae.attempts == 3 && ae.http_status == 0 && world.n_delays == 2 && e && e->code == KILN_ERR_IO
              && strstr (e->message, "ec2 DescribeRegions: POST http://127.0.0.1:"),
          "connection refused, retried: %s", kiln_error_message (e));
  kiln_aws_client_free (ec2);
  kiln_aws_error_release (&ae);
}

int
main (int argc, char **argv)
{
  if (argc < 2 || argc > 3)
    {
      fprintf (stderr, "usage: %s DATA_DIR [KILN_EMULATOR]\n", argv[0]);
      return 2;
    }
  data_dir = argv[1];
  const char *regen = getenv ("KILN_REGENERATE");
  regenerate = regen && strcmp (regen, "1") == 0;
  /* A proxy from the environment must not intercept loopback traffic. */
  unsetenv ("http_proxy");
  unsetenv ("HTTP_PROXY");
  unsetenv ("https_proxy");
  unsetenv ("HTTPS_PROXY");
  unsetenv ("all_proxy");
  unsetenv ("ALL_PROXY");

  test_params_and_form ();
  test_golden_requests ();
  test_parse_replies ();
  test_error_replies ();
  test_retry_pure ();
  test_retries ();
  test_client_new ();
  test_secrets ();
  world_reset (NULL, 0);

  if (argc < 3 || access (argv[2], X_OK) != 0)
    tap_ok (true, "# SKIP no kiln-emulator given");
  else if (!have_program ("qemu-img"))
    tap_ok (true, "# SKIP qemu-img is not available to make an image for the emulator");
  else
    test_against_emulator (argv[2]);
  return tap_done ();
}
