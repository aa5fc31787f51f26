/* test_aws_config.c - credentials, region and endpoint resolution, table-driven.
 *
 * Fixture config and credentials files are written under a temporary HOME;
 * each table row is a set of environment variables (served through the
 * injected getenv, so the real environment is never read or changed), an
 * optional explicit profile, and what must come out: credentials or the error
 * class, the region, and the endpoints of some services.  The INI dialect is
 * checked directly at the end.  Output is TAP. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws_config.h"
#include "cleanup.h"
#include "fsutil.h"
#include "tap.h"
#include "xalloc.h"

static bool
streq (const char *a, const char *b)
{
  if (a == NULL || b == NULL)
    return a == b;
  return strcmp (a, b) == 0;
}

/* ---- fixtures ---- */

static const char config_text[] =
  "# kiln test fixture\n"
  "[default]\n"
  "region = us-west-2\n"
  "output=json ; inline comment\n"
  "\n"
  "[profile dev]\n"
  "region = eu-west-1\n"
  "aws_access_key_id = AKIDCONFIGDEV\n"
  "aws_secret_access_key = configdevsecret\n"
  "endpoint_url = http://localhost:4566/\n"
  "\n"
  "[profile emu]\n"
  "services = local-emu\n"
  "endpoint_url = http://profile-endpoint:9000\n"
  "\n"
  "; the services section: nested keys under an empty value\n"
  "[services local-emu]\n"
  "s3 =\n"
  "  endpoint_url = http://localhost:9000\n"
  "ec2 =\n"
  "\tendpoint_url = http://localhost:5000 # where the emulator listens\n"
  "\n"
  "[profile  spaced ]\n"
  "region=ap-south-1\n"
  "\n"
  "[profile role]\n"
  "role_arn = arn:aws:iam::123456789012:role/x\n"
  "source_profile = default\n"
  "\n"
  "[profile ignore]\n"
  "ignore_configured_endpoint_urls = true\n"
  "endpoint_url = http://ignored:1\n"
  "\n"
  "[profile half]\n"
  "aws_access_key_id = AKIDHALF\n"
  "\n"
  "[profile cfgkeys]\n"
  "aws_access_key_id = AKIDCFGONLY\n"
  "aws_secret_access_key = cfgonlysecret\n";

static const char credentials_text[] =
  "[default]\n"
  "aws_access_key_id = AKIDDEFAULT\n"
  "aws_secret_access_key = defaultsecret\n"
  "\n"
  "[dev]\n"
  "aws_access_key_id = AKIDCREDSDEV\n"
  "aws_secret_access_key = credsdevsecret\n"
  "aws_session_token = devtoken\n"
  "\n"
  "[emu]\n"
  "aws_access_key_id=test\n"
  "aws_secret_access_key=test\n";

static char *home;

/* ---- the injected environment ---- */

#define MAX_ENV 8

struct fake_env {
  const char *vars[MAX_ENV]; /* "NAME=VALUE"; "HOME=@" means the fixture home */
};

static const char *
fake_getenv (const char *name, void *opaque)
{
  const struct fake_env *fe = opaque;
  size_t l = strlen (name);
  for (int i = 0; i < MAX_ENV && fe->vars[i]; i++)
    if (strncmp (fe->vars[i], name, l) == 0 && fe->vars[i][l] == '=')
      {
        const char *v = fe->vars[i] + l + 1;
        return strcmp (v, "@") == 0 ? home : v;
      }
  return NULL;
}

/* ---- the table ---- */

struct endpoint_check {
  const char *service;
  const char *override;
  const char *url;      /* expected; NULL when an error is expected */
  bool custom;
  int err_code;         /* expected error class when url is NULL */
  const char *region;   /* explicit region argument, or NULL */
};

/* A full initializer, so no field is left to chance. */
#define EP(service, override, url, custom, err) {service, override, url, custom, err, NULL}

struct row {
  const char *name;
  struct fake_env env;
  const char *profile_arg;
  int load_err;            /* 0: load succeeds */
  const char *profile;     /* expected profile name */
  const char *ak;          /* expected access key; NULL: credentials error cred_err */
  const char *secret;
  const char *token;
  int cred_err;
  const char *region;
  struct endpoint_check ep[3];
};

#define HOME_ENV "HOME=@"
#define ENV_KEYS "AWS_ACCESS_KEY_ID=AKIDENV", "AWS_SECRET_ACCESS_KEY=envsecret"

static const struct row rows[] = {
  {.name = "defaults from the files",
   .env = {{HOME_ENV}},
   .profile = "default", .ak = "AKIDDEFAULT", .secret = "defaultsecret", .region = "us-west-2",
   .ep = {EP ("s3", NULL, "https://s3.us-west-2.amazonaws.com", false, 0),
          EP ("ec2", NULL, "https://ec2.us-west-2.amazonaws.com", false, 0)}},
  {.name = "environment keys win over the files",
   .env = {{HOME_ENV, ENV_KEYS, "AWS_SESSION_TOKEN=envtoken"}},
   .profile = "default", .ak = "AKIDENV", .secret = "envsecret", .token = "envtoken", .region = "us-west-2"},
  {.name = "AWS_PROFILE selects credentials-file keys before config-file keys",
   .env = {{HOME_ENV, "AWS_PROFILE=dev"}},
   .profile = "dev", .ak = "AKIDCREDSDEV", .secret = "credsdevsecret", .token = "devtoken", .region = "eu-west-1",
   .ep = {EP ("ec2", NULL, "http://localhost:4566", true, 0), EP ("ssm", NULL, "http://localhost:4566", true, 0)}},
  {.name = "config-file keys when the credentials file has none",
   .env = {{HOME_ENV, "AWS_PROFILE=cfgkeys"}},
   .profile = "cfgkeys", .ak = "AKIDCFGONLY", .secret = "cfgonlysecret",
   .ep = {EP ("s3", NULL, NULL, false, KILN_ERR_INVALID)}},
  {.name = "AWS_PROFILE does not outrank environment keys",
   .env = {{HOME_ENV, "AWS_PROFILE=dev", ENV_KEYS}},
   .profile = "dev", .ak = "AKIDENV", .secret = "envsecret", .region = "eu-west-1"},
  {.name = "an explicit profile argument outranks environment keys",
   .env = {{HOME_ENV, "AWS_PROFILE=emu", ENV_KEYS}}, .profile_arg = "dev",
   .profile = "dev", .ak = "AKIDCREDSDEV", .secret = "credsdevsecret", .token = "devtoken", .region = "eu-west-1"},
  {.name = "AWS_DEFAULT_REGION beats the profile",
   .env = {{HOME_ENV, "AWS_DEFAULT_REGION=ca-central-1"}},
   .profile = "default", .ak = "AKIDDEFAULT", .secret = "defaultsecret", .region = "ca-central-1",
   .ep = {EP ("ssm", NULL, "https://ssm.ca-central-1.amazonaws.com", false, 0)}},
  {.name = "AWS_REGION beats AWS_DEFAULT_REGION",
   .env = {{HOME_ENV, "AWS_DEFAULT_REGION=ca-central-1", "AWS_REGION=eu-central-1"}},
   .profile = "default", .ak = "AKIDDEFAULT", .secret = "defaultsecret", .region = "eu-central-1",
   .ep = {EP ("ebs", NULL, "https://ebs.eu-central-1.amazonaws.com", false, 0),
          EP ("s3", NULL, "https://s3.eu-central-1.amazonaws.com", false, 0),
          {.service = "ec2", .url = "https://ec2.eu-west-3.amazonaws.com", .region = "eu-west-3"}}},
  {.name = "services section, then the profile's endpoint_url",
   .env = {{HOME_ENV, "AWS_PROFILE=emu"}},
   .profile = "emu", .ak = "test", .secret = "test",
   .ep = {EP ("s3", NULL, "http://localhost:9000", true, 0), EP ("ec2", NULL, "http://localhost:5000", true, 0),
          EP ("ssm", NULL, "http://profile-endpoint:9000", true, 0)}},
  {.name = "AWS_ENDPOINT_URL beats the services section",
   .env = {{HOME_ENV, "AWS_PROFILE=emu", "AWS_ENDPOINT_URL=http://global:1"}},
   .profile = "emu", .ak = "test", .secret = "test",
   .ep = {EP ("s3", NULL, "http://global:1", true, 0), EP ("ssm", NULL, "http://global:1", true, 0)}},
  {.name = "AWS_ENDPOINT_URL_<SERVICE> beats AWS_ENDPOINT_URL",
   .env = {{HOME_ENV, "AWS_PROFILE=emu", "AWS_ENDPOINT_URL=http://global:1", "AWS_ENDPOINT_URL_S3=http://s3-only:2/",
            "AWS_ENDPOINT_URL_IMAGEBUILDER=https://ib:3"}},
   .profile = "emu", .ak = "test", .secret = "test",
   .ep = {EP ("s3", NULL, "http://s3-only:2", true, 0), EP ("ec2", NULL, "http://global:1", true, 0),
          EP ("imagebuilder", NULL, "https://ib:3", true, 0)}},
  {.name = "an explicit override beats everything",
   .env = {{HOME_ENV, "AWS_PROFILE=emu", "AWS_ENDPOINT_URL_S3=http://s3-only:2",
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true"}},
   .profile = "emu", .ak = "test", .secret = "test",
   .ep = {EP ("s3", "https://override.example/", "https://override.example", true, 0),
          EP ("s3", "", NULL, false, KILN_ERR_INVALID)}},
  {.name = "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS skips environment and files",
   .env = {{HOME_ENV, "AWS_PROFILE=emu", "AWS_ENDPOINT_URL=http://global:1",
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=TRUE", "AWS_REGION=us-east-1"}},
   .profile = "emu", .ak = "test", .secret = "test", .region = "us-east-1",
   .ep = {EP ("s3", NULL, "https://s3.us-east-1.amazonaws.com", false, 0),
          EP ("ec2", NULL, "https://ec2.us-east-1.amazonaws.com", false, 0)}},
  {.name = "ignore_configured_endpoint_urls in the profile",
   .env = {{HOME_ENV, "AWS_PROFILE=ignore", "AWS_REGION=eu-north-1"}},
   .profile = "ignore", .cred_err = KILN_ERR_NOT_FOUND, .region = "eu-north-1",
   .ep = {EP ("ec2", NULL, "https://ec2.eu-north-1.amazonaws.com", false, 0)}},
  {.name = "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=false outranks the profile",
   .env = {{HOME_ENV, "AWS_PROFILE=ignore", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=false"}},
   .profile = "ignore", .cred_err = KILN_ERR_NOT_FOUND,
   .ep = {EP ("ec2", NULL, "http://ignored:1", true, 0)}},
  {.name = "section names collapse whitespace",
   .env = {{HOME_ENV, "AWS_PROFILE=spaced"}},
   .profile = "spaced", .cred_err = KILN_ERR_NOT_FOUND, .region = "ap-south-1"},
  {.name = "role assumption is reported unsupported",
   .env = {{HOME_ENV, "AWS_PROFILE=role"}},
   .profile = "role", .cred_err = KILN_ERR_UNSUPPORTED},
  {.name = "half a key pair in a profile",
   .env = {{HOME_ENV, "AWS_PROFILE=half"}},
   .profile = "half", .cred_err = KILN_ERR_INVALID},
  {.name = "half a key pair in the environment",
   .env = {{HOME_ENV, "AWS_SECRET_ACCESS_KEY=envsecret"}},
   .profile = "default", .cred_err = KILN_ERR_INVALID, .region = "us-west-2"},
  {.name = "an undefined profile is an error", .env = {{HOME_ENV, "AWS_PROFILE=nope"}}, .load_err = KILN_ERR_NOT_FOUND},
  {.name = "an undefined profile argument is an error", .env = {{HOME_ENV}}, .profile_arg = "nope",
   .load_err = KILN_ERR_NOT_FOUND},
  {.name = "AWS_CONFIG_FILE with ~ and AWS_SHARED_CREDENTIALS_FILE",
   .env = {{HOME_ENV, "AWS_CONFIG_FILE=~/alt/config", "AWS_SHARED_CREDENTIALS_FILE=~/alt/credentials"}},
   .profile = "default", .ak = "AKIDALT", .secret = "altsecret", .region = "sa-east-1",
   .ep = {EP ("s3", NULL, "https://s3.sa-east-1.amazonaws.com", false, 0)}},
  {.name = "missing files are fine",
   .env = {{"HOME=/nonexistent/kiln-test", ENV_KEYS}},
   .profile = "default", .ak = "AKIDENV", .secret = "envsecret",
   .ep = {EP ("s3", NULL, NULL, false, KILN_ERR_INVALID)}},
  {.name = "AWS_PROFILE=default needs no section",
   .env = {{"HOME=/nonexistent/kiln-test", "AWS_PROFILE=default"}},
   .profile = "default", .cred_err = KILN_ERR_NOT_FOUND},
  {.name = "no HOME and no files",
   .env = {{"AWS_REGION=cn-north-1"}},
   .profile = "default", .cred_err = KILN_ERR_NOT_FOUND, .region = "cn-north-1",
   .ep = {EP ("ec2", NULL, "https://ec2.cn-north-1.amazonaws.com.cn", false, 0)}},
  {.name = "a malformed endpoint URL is an error",
   .env = {{HOME_ENV, "AWS_ENDPOINT_URL=ftp://x"}},
   .profile = "default", .ak = "AKIDDEFAULT", .secret = "defaultsecret", .region = "us-west-2",
   .ep = {EP ("s3", NULL, NULL, false, KILN_ERR_INVALID)}},
  {.name = "a malformed config file is an error",
   .env = {{HOME_ENV, "AWS_CONFIG_FILE=@/bad/config"}},
   .load_err = KILN_ERR_INVALID},
};

/* Error messages must never carry a secret value from the fixtures. */
static bool
no_secret_in (const kiln_error *e)
{
  static const char *const secrets[] = {"defaultsecret", "envsecret",  "credsdevsecret", "configdevsecret",
                                        "cfgonlysecret", "altsecret", "SECRETVALUE",    "devtoken",
                                        "envtoken"};
  const char *m = kiln_error_message (e);
  for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
    if (strstr (m, secrets[i]))
      return false;
  return true;
}

static void
run_row (const struct row *r)
{
  /* "@/x" in a value means the fixture home + "/x". */
  struct fake_env env = r->env;
  char *expanded[MAX_ENV] = {0};
  for (int i = 0; i < MAX_ENV && env.vars[i]; i++)
    {
      const char *at = strstr (env.vars[i], "=@/");
      if (at)
        {
          expanded[i] = kiln_xasprintf ("%.*s=%s%s", (int) (at - env.vars[i]), env.vars[i], home, at + 2);
          env.vars[i] = expanded[i];
        }
    }
  struct kiln_aws_env aenv = {fake_getenv, &env};
  struct kiln_aws_config *c = NULL;
  _cleanup_error_ kiln_error *e = NULL;
  int rc = kiln_aws_config_load (&aenv, r->profile_arg, &c, &e);
  if (r->load_err)
    {
      tap_ok (rc < 0 && e && e->code == r->load_err && no_secret_in (e), "%s: load fails (%s)", r->name,
              kiln_error_message (e));
      goto out;
    }
  if (rc < 0)
    {
      tap_ok (false, "%s: load: %s", r->name, kiln_error_message (e));
      goto out;
    }
  tap_ok (streq (kiln_aws_config_profile (c), r->profile), "%s: profile %s", r->name, kiln_aws_config_profile (c));

  struct kiln_aws_credentials cred = {0};
  kiln_error_freep (&e);
  rc = kiln_aws_config_credentials (c, &cred, &e);
  if (r->ak)
    tap_ok (rc == 0 && streq (cred.access_key_id, r->ak) && streq (cred.secret_access_key, r->secret)
                && streq (cred.session_token, r->token) && cred.source != NULL,
            "%s: credentials %s from %s%s%s", r->name, cred.access_key_id ? cred.access_key_id : "(none)",
            cred.source ? cred.source : "?", rc < 0 ? ": " : "", rc < 0 ? kiln_error_message (e) : "");
  else
    tap_ok (rc < 0 && e && e->code == r->cred_err && no_secret_in (e), "%s: credentials fail (%s)", r->name,
            kiln_error_message (e));
  kiln_aws_credentials_release (&cred);

  tap_ok (streq (kiln_aws_config_region (c), r->region), "%s: region %s", r->name,
          kiln_aws_config_region (c) ? kiln_aws_config_region (c) : "(none)");

  for (int i = 0; i < 3 && r->ep[i].service; i++)
    {
      const struct endpoint_check *x = &r->ep[i];
      struct kiln_aws_endpoint ep = {0};
      kiln_error_freep (&e);
      rc = kiln_aws_config_endpoint (c, x->service, x->override, x->region, &ep, &e);
      if (x->url)
        tap_ok (rc == 0 && streq (ep.url, x->url) && ep.custom == x->custom, "%s: %s endpoint %s (%s)%s%s", r->name,
                x->service, ep.url ? ep.url : "(none)", ep.source ? ep.source : "?", rc < 0 ? ": " : "",
                rc < 0 ? kiln_error_message (e) : "");
      else
        tap_ok (rc < 0 && e && e->code == x->err_code, "%s: %s endpoint fails (%s)", r->name, x->service,
                kiln_error_message (e));
      kiln_aws_endpoint_release (&ep);
    }
out:
  kiln_aws_config_free (c);
  for (int i = 0; i < MAX_ENV; i++)
    free (expanded[i]);
}

static void
write_fixture (const char *rel, const char *text)
{
  _cleanup_free_ char *path = NULL, *dir = NULL;
  path = kiln_xasprintf ("%s/%s", home, rel);
  dir = strdup (path);
  *strrchr (dir, '/') = '\0';
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_mkdir_p (dir, 0700, &e) < 0 || kiln_write_file_atomic (path, text, strlen (text), 0600, &e) < 0)
    {
      printf ("Bail out! %s\n", kiln_error_message (e));
      exit (1);
    }
}

static void
test_ini (void)
{
  struct kiln_aws_ini *ini = NULL;
  _cleanup_error_ kiln_error *e = NULL;
  const char *text = "[a]\r\n"
                     "Key = Value With  Spaces   \r\n"
                     "url = http://x/#frag\n"
                     "multi = first\n"
                     "  second line\n"
                     "nested =\n"
                     "  one = 1 ; comment\n"
                     "  Two=2\n"
                     "after = 3\n"
                     "  # indented comment\n"
                     "[a]\n"
                     "key = override\n"
                     "[ b ]\n"
                     "empty =\n";
  int r = kiln_aws_ini_parse (text, "'fixture'", &ini, &e);
  tap_ok (r == 0, "ini: parses%s%s", r < 0 ? ": " : "", r < 0 ? kiln_error_message (e) : "");
  if (r == 0)
    {
      tap_ok (streq (kiln_aws_ini_get (ini, "a", "key"), "override"), "ini: keys are lowercased, later ones win");
      tap_ok (streq (kiln_aws_ini_get (ini, "a", "url"), "http://x/#frag"),
              "ini: '#' not after whitespace is kept");
      tap_ok (streq (kiln_aws_ini_get (ini, "a", "multi"), "first\nsecond line"), "ini: continuation lines");
      tap_ok (streq (kiln_aws_ini_get (ini, "a", "nested"), "")
                  && streq (kiln_aws_ini_get (ini, "a", "nested.one"), "1")
                  && streq (kiln_aws_ini_get (ini, "a", "nested.two"), "2"),
              "ini: nested keys");
      tap_ok (streq (kiln_aws_ini_get (ini, "a", "after"), "3"), "ini: a top-level key ends the nesting");
      tap_ok (kiln_aws_ini_has_section (ini, "b") && streq (kiln_aws_ini_get (ini, "b", "empty"), ""),
              "ini: section names are trimmed; empty values");
      tap_ok (kiln_aws_ini_get (ini, "c", "key") == NULL && !kiln_aws_ini_has_section (ini, "c"),
              "ini: absent section");
    }
  kiln_aws_ini_free (ini);
  ini = NULL;

  static const struct {
    const char *text;
    int line;
  } bad[] = {
    {"key = before any section\n", 1},
    {"[a]\nno equals sign SECRETVALUE\n", 2},
    {"[a]\n[unclosed\n", 2},
    {"[a]\n = value\n", 2},
    {"[a]\nk =\n  no equals SECRETVALUE\n", 3},
    {"[]\n", 1},
    {"[a] trailing\n", 1},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    {
      kiln_error_freep (&e);
      r = kiln_aws_ini_parse (bad[i].text, "'f'", &ini, &e);
      char want[32];
      snprintf (want, sizeof want, "line %d:", bad[i].line);
      tap_ok (r < 0 && e && e->code == KILN_ERR_INVALID && strstr (e->message, want) && strstr (e->message, "'f'")
                  && !strstr (e->message, "SECRETVALUE"),
              "ini: malformed input %zu is rejected at %s (%s)", i, want, kiln_error_message (e));
      if (r == 0)
        kiln_aws_ini_free (ini);
      ini = NULL;
    }
}

int
main (void)
{
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_make_temp_dir ("kiln-aws-config", &home, &e) < 0)
    {
      printf ("Bail out! %s\n", kiln_error_message (e));
      return 1;
    }
  write_fixture (".aws/config", config_text);
  write_fixture (".aws/credentials", credentials_text);
  write_fixture ("alt/config", "[default]\nregion = sa-east-1\n");
  write_fixture ("alt/credentials", "[default]\naws_access_key_id = AKIDALT\naws_secret_access_key = altsecret\n");
  write_fixture ("bad/config", "[default]\naws_secret_access_key = SECRETVALUE\nthis is not a setting SECRETVALUE\n");

  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
    run_row (&rows[i]);

  /* The malformed file's error names the file and line, not the text. */
  {
    struct fake_env env = {{HOME_ENV, "AWS_CONFIG_FILE=~/bad/config"}};
    struct kiln_aws_env aenv = {fake_getenv, &env};
    struct kiln_aws_config *c = NULL;
    kiln_error_freep (&e);
    int r = kiln_aws_config_load (&aenv, NULL, &c, &e);
    tap_ok (r < 0 && strstr (kiln_error_message (e), "bad/config' line 3")
                && !strstr (kiln_error_message (e), "SECRET"),
            "malformed file error: %s", kiln_error_message (e));
    kiln_aws_config_free (c);
  }
  /* A NULL env reads the process environment (nothing asserted about it,
   * only that it does not crash and answers consistently). */
  {
    struct kiln_aws_config *c = NULL;
    kiln_error_freep (&e);
    int r = kiln_aws_config_load (NULL, NULL, &c, &e);
    tap_ok (r == 0 || e != NULL, "process environment loads or explains (%s)",
            r == 0 ? "loaded" : kiln_error_message (e));
    kiln_aws_config_free (c);
  }
  _cleanup_free_ char *d1 = kiln_aws_default_endpoint ("s3", "us-east-1");
  tap_ok (streq (d1, "https://s3.us-east-1.amazonaws.com"), "default endpoint %s", d1);

  test_ini ();

  kiln_error_freep (&e);
  kiln_remove_tree (home, &e);
  free (home);
  return tap_done ();
}
