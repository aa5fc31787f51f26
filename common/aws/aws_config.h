/* aws_config.h - AWS credentials, region and endpoints, found the way the AWS
 * SDKs and CLI find them.
 *
 * Sources, each consulted through a struct kiln_aws_env so tests (and callers
 * that must not read the process environment) can inject them:
 *   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
 *   AWS_PROFILE (default "default")
 *   AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials): sections "[NAME]"
 *   AWS_CONFIG_FILE (~/.aws/config): "[default]" and "[profile NAME]",
 *     "[services NAME]" with nested per-service keys
 *   AWS_REGION > AWS_DEFAULT_REGION > the profile's `region`
 *   endpoints: explicit override > AWS_ENDPOINT_URL_<SERVICE> >
 *     AWS_ENDPOINT_URL > the profile's services section > the profile's
 *     `endpoint_url` > https://<service>.<region>.amazonaws.com;
 *     AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true (or the profile's
 *     ignore_configured_endpoint_urls = true) skips the environment and
 *     configuration files, never the explicit override.
 *   HOME, for "~".
 *
 * Only static keys are supported: a profile that asks for role assumption,
 * SSO or a credential process is reported as unsupported rather than
 * silently skipped.
 *
 * Secrets (secret keys, session tokens) never appear in error messages or
 * logs; configuration-file errors name the file and line, not its text. */
#ifndef KILN_COMMON_AWS_CONFIG_H
#define KILN_COMMON_AWS_CONFIG_H

#include <stdbool.h>

#include "error.h"

/* Where environment variables come from.  A NULL struct pointer, or a NULL
 * getenv member, means the process environment.  Most variables are read once
 * by kiln_aws_config_load, but AWS_ENDPOINT_URL_<SERVICE> is looked up when an
 * endpoint is asked for, so the callback and its opaque data must stay valid
 * as long as the loaded configuration. */
struct kiln_aws_env {
  /* The variable's value, or NULL when unset. */
  const char *(*getenv) (const char *name, void *opaque);
  void *opaque;
};

struct kiln_aws_credentials {
  char *access_key_id;
  char *secret_access_key;
  char *session_token;    /* NULL when the credentials are not temporary */
  /* Where they came from, for messages: "environment", or
   * "profile 'p' in '/home/u/.aws/credentials'". */
  char *source;
};

/* Frees the strings, wiping the secret and token first.  A zeroed struct is
 * empty. */
void kiln_aws_credentials_release (struct kiln_aws_credentials *c);

struct kiln_aws_endpoint {
  char *url;        /* "https://s3.eu-west-1.amazonaws.com", no trailing '/' */
  /* True when configured (override, environment or files) rather than AWS's
   * own: an emulator or a private endpoint, where S3 needs path-style
   * addressing. */
  bool custom;
  char *source;     /* "override", "AWS_ENDPOINT_URL_S3", "services section 'x' in '/f'", "default", ... */
};

void kiln_aws_endpoint_release (struct kiln_aws_endpoint *e);

/* The parts of an endpoint's URL, each malloc'd (also when it fails part
 * way: the caller frees what was set): the scheme lowercased, the authority
 * (host[:port]) and the base path, decoded and without a trailing '/' (""
 * when none).  A URL without a host, with user information, a query or a
 * fragment is refused, naming where the endpoint came from. */
int kiln_aws_endpoint_split (const struct kiln_aws_endpoint *ep, char **scheme, char **authority, char **base_path,
                             kiln_error **err);

/* The loaded configuration of one profile. */
struct kiln_aws_config;

/* Reads the configuration and credentials files for profile (NULL: AWS_PROFILE
 * or "default").  Missing files are fine; unreadable or malformed ones are
 * errors, as is a profile named explicitly (argument or AWS_PROFILE) that
 * neither file defines ("default" may be undefined).  An explicit profile
 * argument also makes credentials come from that profile, not the
 * environment, as `aws --profile` does. */
int kiln_aws_config_load (const struct kiln_aws_env *env, const char *profile, struct kiln_aws_config **out,
                          kiln_error **err);
void kiln_aws_config_free (struct kiln_aws_config *c);

/* The profile name in use. */
const char *kiln_aws_config_profile (const struct kiln_aws_config *c);
/* A key of the profile's section in the config file ("region", "output"),
 * or NULL. */
const char *kiln_aws_config_profile_value (const struct kiln_aws_config *c, const char *key);

/* Environment credentials (unless an explicit profile was given), else the
 * credentials file's profile, else the config file's.  KILN_ERR_NOT_FOUND when
 * there are none, KILN_ERR_UNSUPPORTED when the profile only names a provider
 * kiln does not implement (role_arn, sso_*, credential_process). */
int kiln_aws_config_credentials (const struct kiln_aws_config *c, struct kiln_aws_credentials *out,
                                 kiln_error **err);

/* AWS_REGION, AWS_DEFAULT_REGION or the profile's region; NULL when none. */
const char *kiln_aws_config_region (const struct kiln_aws_config *c);

/* The endpoint URL for service_id ("s3", "ec2", "ssm", "ebs", "imagebuilder";
 * matched as the SDKs do: AWS_ENDPOINT_URL_<ID uppercased, spaces and '-' as
 * '_'>, services-section key <id lowercased, spaces as '_'>).  override, when
 * non-NULL and non-empty, wins.  region is used for the default endpoint (NULL:
 * kiln_aws_config_region); without any region the default cannot be formed
 * and that is a KILN_ERR_INVALID error.  URLs must be http:// or https://. */
int kiln_aws_config_endpoint (const struct kiln_aws_config *c, const char *service_id, const char *override,
                              const char *region, struct kiln_aws_endpoint *out, kiln_error **err);

/* https://<service>.<region>.amazonaws.com (".amazonaws.com.cn" for cn-*
 * regions); malloc'd. */
char *kiln_aws_default_endpoint (const char *service_id, const char *region);

/* ---- The INI dialect of the AWS files, exposed for tests and reuse ----
 *
 * "[section]" headers (inner whitespace collapsed: "[profile  x]" is
 * "profile x"); "key = value" (keys lowercased, both sides trimmed); comment
 * lines starting with '#' or ';', and inline comments where '#' or ';' follows
 * whitespace; an indented "sub = value" line under a key whose value is empty
 * is the nested key "key.sub"; other indented lines continue the previous
 * value (joined with '\n').  Later keys and repeated sections override and
 * merge. */
struct kiln_aws_ini;

/* origin names the text in errors ("'/root/.aws/config' line 3: ..."). */
int kiln_aws_ini_parse (const char *text, const char *origin, struct kiln_aws_ini **out, kiln_error **err);
void kiln_aws_ini_free (struct kiln_aws_ini *ini);
bool kiln_aws_ini_has_section (const struct kiln_aws_ini *ini, const char *section);
/* The value of key (lowercase; "s3.endpoint_url" for a nested key) in
 * section, or NULL. */
const char *kiln_aws_ini_get (const struct kiln_aws_ini *ini, const char *section, const char *key);

#endif
