/* aws_config.c - AWS credentials, region and endpoint resolution (see
 * aws_config.h).
 *
 * Everything is read once by kiln_aws_config_load: the environment variables
 * that matter are copied out of the injected getenv, and both files are parsed
 * into kiln_aws_ini tables, so later questions (credentials, region, endpoint
 * of a service) are answered from memory and consistently. */
#include "aws_config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "cleanup.h"
#include "fsutil.h"
#include "sigv4.h"
#include "xalloc.h"

/* ---- INI ---- */

struct ini_entry {
  char *section;
  char *key;
  char *value;
};

struct kiln_aws_ini {
  struct ini_entry *entries;
  size_t n, cap;
  char **sections; /* NULL-terminated */
  size_t n_sections;
};



static bool
is_blank (char c)
{
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* [s, s+len) without surrounding blanks, as a new string. */
static char *
trim_dup (const char *s, size_t len)
{
  while (len > 0 && is_blank (*s))
    s++, len--;
  while (len > 0 && is_blank (s[len - 1]))
    len--;
  return kiln_xstrndup (s, len);
}

/* Length of the line before an inline comment: '#' or ';' after a blank. */
static size_t
strip_inline_comment (const char *s, size_t len)
{
  for (size_t i = 1; i < len; i++)
    if ((s[i] == '#' || s[i] == ';') && is_blank (s[i - 1]))
      return i;
  return len;
}

static void
ini_add_section (struct kiln_aws_ini *ini, const char *name)
{
  if (kiln_aws_ini_has_section (ini, name))
    return;
  char **v = realloc (ini->sections, (ini->n_sections + 2) * sizeof *v);
  if (v == NULL)
    abort ();
  v[ini->n_sections++] = kiln_xstrdup (name);
  v[ini->n_sections] = NULL;
  ini->sections = v;
}

/* Sets section/key, replacing an earlier value (takes ownership of value). */
static void
ini_set (struct kiln_aws_ini *ini, const char *section, const char *key, char *value)
{
  for (size_t i = 0; i < ini->n; i++)
    if (strcmp (ini->entries[i].section, section) == 0 && strcmp (ini->entries[i].key, key) == 0)
      {
        free (ini->entries[i].value);
        ini->entries[i].value = value;
        return;
      }
  if (ini->n == ini->cap)
    {
      ini->cap = ini->cap ? ini->cap * 2 : 16;
      struct ini_entry *e = realloc (ini->entries, ini->cap * sizeof *e);
      if (e == NULL)
        abort ();
      ini->entries = e;
    }
  ini->entries[ini->n++] = (struct ini_entry){kiln_xstrdup (section), kiln_xstrdup (key), value};
}

static struct ini_entry *
ini_find (const struct kiln_aws_ini *ini, const char *section, const char *key)
{
  for (size_t i = 0; i < ini->n; i++)
    if (strcmp (ini->entries[i].section, section) == 0 && strcmp (ini->entries[i].key, key) == 0)
      return &ini->entries[i];
  return NULL;
}

void
kiln_aws_ini_free (struct kiln_aws_ini *ini)
{
  if (ini == NULL)
    return;
  for (size_t i = 0; i < ini->n; i++)
    {
      free (ini->entries[i].section);
      free (ini->entries[i].key);
      if (ini->entries[i].value)
        explicit_bzero (ini->entries[i].value, strlen (ini->entries[i].value));
      free (ini->entries[i].value);
    }
  free (ini->entries);
  kiln_strv_free (ini->sections);
  free (ini);
}

bool
kiln_aws_ini_has_section (const struct kiln_aws_ini *ini, const char *section)
{
  for (size_t i = 0; ini && i < ini->n_sections; i++)
    if (strcmp (ini->sections[i], section) == 0)
      return true;
  return false;
}

const char *
kiln_aws_ini_get (const struct kiln_aws_ini *ini, const char *section, const char *key)
{
  if (ini == NULL)
    return NULL;
  struct ini_entry *e = ini_find (ini, section, key);
  return e ? e->value : NULL;
}

/* Section names with inner whitespace runs collapsed to one space. */
static char *
normalize_section (const char *s, size_t len)
{
  _cleanup_free_ char *t = trim_dup (s, len);
  struct kiln_buf b = KILN_BUF_INIT;
  bool space = false;
  for (const char *p = t; *p; p++)
    {
      if (is_blank (*p))
        {
          space = true;
          continue;
        }
      if (space)
        kiln_buf_puts (&b, " ");
      space = false;
      kiln_buf_append (&b, p, 1);
    }
  return kiln_buf_steal (&b);
}

static void
lowercase (char *s)
{
  for (; *s; s++)
    *s = (char) tolower ((unsigned char) *s);
}

int
kiln_aws_ini_parse (const char *text, const char *origin, struct kiln_aws_ini **out, kiln_error **err)
{
  struct kiln_aws_ini *ini = calloc (1, sizeof *ini);
  if (ini == NULL)
    abort ();
  _cleanup_free_ char *section = NULL;
  /* The last top-level key of the current section, and whether its value was
   * empty (then indented lines are nested keys, else continuations). */
  _cleanup_free_ char *parent = NULL;
  bool parent_empty = false;
  int lineno = 0;
  const char *p = text;
  while (*p)
    {
      lineno++;
      const char *nl = strchr (p, '\n');
      size_t len = nl ? (size_t) (nl - p) : strlen (p);
      const char *line = p;
      p += len + (nl ? 1 : 0);

      size_t i = 0;
      while (i < len && is_blank (line[i]))
        i++;
      if (i == len || line[i] == '#' || line[i] == ';')
        continue;
      bool indented = i > 0;
      size_t clen = strip_inline_comment (line, len);

      if (!indented && line[0] == '[')
        {
          const char *close = memchr (line, ']', clen);
          if (close == NULL)
            goto malformed;
          for (const char *t = close + 1; t < line + clen; t++)
            if (!is_blank (*t))
              goto malformed;
          free (section);
          section = normalize_section (line + 1, (size_t) (close - line - 1));
          if (*section == '\0')
            goto malformed;
          ini_add_section (ini, section);
          free (parent);
          parent = NULL;
          continue;
        }
      if (section == NULL)
        {
          kiln_error_set (err, KILN_ERR_INVALID, 0, "%s line %d: a setting before any [section]", origin, lineno);
          goto fail;
        }
      const char *eq = memchr (line, '=', clen);
      if (indented && parent != NULL)
        {
          if (parent_empty)
            {
              /* A nested key: "  endpoint_url = http://..." under "s3 =". */
              if (eq == NULL)
                goto malformed;
              _cleanup_free_ char *sub = trim_dup (line, (size_t) (eq - line));
              if (*sub == '\0')
                goto malformed;
              lowercase (sub);
              _cleanup_free_ char *key = NULL;
              key = kiln_xasprintf ("%s.%s", parent, sub);
              ini_set (ini, section, key, trim_dup (eq + 1, (size_t) (line + clen - eq - 1)));
            }
          else
            {
              struct ini_entry *e = ini_find (ini, section, parent);
              _cleanup_free_ char *more = trim_dup (line, clen);
              char *joined = NULL;
              joined = kiln_xasprintf ("%s\n%s", e->value, more);
              explicit_bzero (e->value, strlen (e->value));
              free (e->value);
              e->value = joined;
            }
          continue;
        }
      if (eq == NULL || indented)
        goto malformed;
      char *key = trim_dup (line, (size_t) (eq - line));
      if (*key == '\0')
        {
          free (key);
          goto malformed;
        }
      lowercase (key);
      char *value = trim_dup (eq + 1, (size_t) (line + clen - eq - 1));
      parent_empty = *value == '\0';
      ini_set (ini, section, key, value);
      free (parent);
      parent = key;
      continue;

    malformed:
      /* The line itself is not quoted: it may hold a secret. */
      kiln_error_set (err, KILN_ERR_INVALID, 0, "%s line %d: expected [section] or key = value", origin, lineno);
      goto fail;
    }
  *out = ini;
  return 0;
fail:
  kiln_aws_ini_free (ini);
  return -1;
}

/* ---- configuration ---- */

/* The variables this module reads, copied at load time. */
enum env_var {
  ENV_ACCESS_KEY_ID,
  ENV_SECRET_ACCESS_KEY,
  ENV_SESSION_TOKEN,
  ENV_PROFILE,
  ENV_REGION,
  ENV_DEFAULT_REGION,
  ENV_CONFIG_FILE,
  ENV_CREDENTIALS_FILE,
  ENV_ENDPOINT_URL,
  ENV_IGNORE_ENDPOINTS,
  ENV_HOME,
  ENV_COUNT,
};

static const char *const env_names[ENV_COUNT] = {
  "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
  "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
  "AWS_ENDPOINT_URL", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "HOME",
};

struct kiln_aws_config {
  struct kiln_aws_env env;
  bool use_process_env;
  char *vars[ENV_COUNT];       /* NULL when unset or empty */
  char *profile;
  bool profile_explicit_arg;   /* given as an argument (not AWS_PROFILE) */
  char *config_path;
  char *credentials_path;
  struct kiln_aws_ini *config;      /* NULL when the file is missing */
  struct kiln_aws_ini *credentials; /* NULL when the file is missing */
  char *config_section;             /* "default" or "profile NAME" */
  char *region;
};

static const char *
lookup_env (const struct kiln_aws_config *c, const char *name)
{
  const char *v = c->use_process_env ? getenv (name) : c->env.getenv (name, c->env.opaque);
  return v && *v ? v : NULL;
}

static char *
expand_home (const char *path, const char *home, kiln_error **err)
{
  char *r = NULL;
  if (path[0] == '~' && (path[1] == '/' || path[1] == '\0'))
    {
      if (home == NULL)
        {
          kiln_error_set (err, KILN_ERR_INVALID, 0, "cannot expand '%s': HOME is not set", path);
          return NULL;
        }
      r = kiln_xasprintf ("%s%s", home, path + 1);
      return r;
    }
  return kiln_xstrdup (path);
}

/* Parses path into *out; a missing file leaves *out NULL. */
static int
load_ini (const char *path, struct kiln_aws_ini **out, kiln_error **err)
{
  *out = NULL;
  struct kiln_buf text = KILN_BUF_INIT;
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_read_file (path, &text, &e) < 0)
    {
      kiln_buf_release (&text);
      if (e->errnum == ENOENT)
        return 0;
      kiln_error_move (err, &e);
      return -1;
    }
  _cleanup_free_ char *origin = NULL;
  origin = kiln_xasprintf ("'%s'", path);
  int r = kiln_aws_ini_parse (kiln_buf_str (&text), origin, out, err);
  if (text.data)
    explicit_bzero (text.data, text.len);
  kiln_buf_release (&text);
  return r;
}

void
kiln_aws_config_free (struct kiln_aws_config *c)
{
  if (c == NULL)
    return;
  for (int i = 0; i < ENV_COUNT; i++)
    {
      if (c->vars[i])
        explicit_bzero (c->vars[i], strlen (c->vars[i]));
      free (c->vars[i]);
    }
  free (c->profile);
  free (c->config_path);
  free (c->credentials_path);
  kiln_aws_ini_free (c->config);
  kiln_aws_ini_free (c->credentials);
  free (c->config_section);
  free (c->region);
  free (c);
}

static char *
file_path (struct kiln_aws_config *c, enum env_var var, const char *default_rel, kiln_error **err)
{
  if (c->vars[var])
    return expand_home (c->vars[var], c->vars[ENV_HOME], err);
  if (c->vars[ENV_HOME] == NULL)
    return NULL; /* no HOME: no default file */
  char *r = NULL;
  r = kiln_xasprintf ("%s/%s", c->vars[ENV_HOME], default_rel);
  return r;
}

int
kiln_aws_config_load (const struct kiln_aws_env *env, const char *profile, struct kiln_aws_config **out,
                      kiln_error **err)
{
  struct kiln_aws_config *c = calloc (1, sizeof *c);
  if (c == NULL)
    abort ();
  c->use_process_env = env == NULL || env->getenv == NULL;
  if (!c->use_process_env)
    c->env = *env;
  for (int i = 0; i < ENV_COUNT; i++)
    {
      const char *v = lookup_env (c, env_names[i]);
      c->vars[i] = v ? kiln_xstrdup (v) : NULL;
    }
  c->profile_explicit_arg = profile && *profile;
  bool explicit_profile = c->profile_explicit_arg || c->vars[ENV_PROFILE];
  c->profile = kiln_xstrdup (c->profile_explicit_arg ? profile : c->vars[ENV_PROFILE] ? c->vars[ENV_PROFILE] : "default");
  if (strcmp (c->profile, "default") == 0)
    c->config_section = kiln_xstrdup ("default");
  else
    c->config_section = kiln_xasprintf ("profile %s", c->profile);

  kiln_error *e = NULL;
  c->config_path = file_path (c, ENV_CONFIG_FILE, ".aws/config", &e);
  if (e == NULL)
    c->credentials_path = file_path (c, ENV_CREDENTIALS_FILE, ".aws/credentials", &e);
  if (e)
    {
      kiln_error_move (err, &e);
      goto fail;
    }
  if (c->config_path && load_ini (c->config_path, &c->config, err) < 0)
    goto fail;
  if (c->credentials_path && load_ini (c->credentials_path, &c->credentials, err) < 0)
    goto fail;

  /* The SDKs also accept "[profile default]" in the config file. */
  if (strcmp (c->profile, "default") == 0 && !kiln_aws_ini_has_section (c->config, "default")
      && kiln_aws_ini_has_section (c->config, "profile default"))
    {
      free (c->config_section);
      c->config_section = kiln_xstrdup ("profile default");
    }

  if (explicit_profile && strcmp (c->profile, "default") != 0
      && !kiln_aws_ini_has_section (c->config, c->config_section)
      && !kiln_aws_ini_has_section (c->credentials, c->profile))
    {
      kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "AWS profile '%s' is not defined in '%s' or '%s'", c->profile,
                      c->config_path ? c->config_path : "(no config file)",
                      c->credentials_path ? c->credentials_path : "(no credentials file)");
      goto fail;
    }

  const char *region = c->vars[ENV_REGION]                                  ? c->vars[ENV_REGION]
                       : c->vars[ENV_DEFAULT_REGION]                        ? c->vars[ENV_DEFAULT_REGION]
                                                                            : kiln_aws_config_profile_value (c, "region");
  c->region = region && *region ? kiln_xstrdup (region) : NULL;
  *out = c;
  return 0;
fail:
  kiln_aws_config_free (c);
  return -1;
}

const char *
kiln_aws_config_profile (const struct kiln_aws_config *c)
{
  return c->profile;
}

const char *
kiln_aws_config_profile_value (const struct kiln_aws_config *c, const char *key)
{
  return kiln_aws_ini_get (c->config, c->config_section, key);
}

const char *
kiln_aws_config_region (const struct kiln_aws_config *c)
{
  return c->region;
}

void
kiln_aws_credentials_release (struct kiln_aws_credentials *cr)
{
  if (cr == NULL)
    return;
  if (cr->secret_access_key)
    explicit_bzero (cr->secret_access_key, strlen (cr->secret_access_key));
  if (cr->session_token)
    explicit_bzero (cr->session_token, strlen (cr->session_token));
  free (cr->access_key_id);
  free (cr->secret_access_key);
  free (cr->session_token);
  free (cr->source);
  memset (cr, 0, sizeof *cr);
}

/* Static keys from one section of one file: 1 when found, 0 when the section
 * has none, -1 when only half of a key pair is there. */
static int
keys_from (const struct kiln_aws_ini *ini, const char *section, const char *path, const char *profile,
           struct kiln_aws_credentials *out, kiln_error **err)
{
  const char *ak = kiln_aws_ini_get (ini, section, "aws_access_key_id");
  const char *sk = kiln_aws_ini_get (ini, section, "aws_secret_access_key");
  if ((ak == NULL || *ak == '\0') && (sk == NULL || *sk == '\0'))
    return 0;
  if (ak == NULL || *ak == '\0' || sk == NULL || *sk == '\0')
    return kiln_error_set (err, KILN_ERR_INVALID, 0, "AWS profile '%s' in '%s' has %s but not %s", profile, path,
                           ak && *ak ? "aws_access_key_id" : "aws_secret_access_key",
                           ak && *ak ? "aws_secret_access_key" : "aws_access_key_id");
  const char *tok = kiln_aws_ini_get (ini, section, "aws_session_token");
  out->access_key_id = kiln_xstrdup (ak);
  out->secret_access_key = kiln_xstrdup (sk);
  out->session_token = tok && *tok ? kiln_xstrdup (tok) : NULL;
  out->source = kiln_xasprintf ("profile '%s' in '%s'", profile, path);
  return 1;
}

int
kiln_aws_config_credentials (const struct kiln_aws_config *c, struct kiln_aws_credentials *out, kiln_error **err)
{
  memset (out, 0, sizeof *out);
  if (!c->profile_explicit_arg)
    {
      const char *ak = c->vars[ENV_ACCESS_KEY_ID], *sk = c->vars[ENV_SECRET_ACCESS_KEY];
      if (ak && sk)
        {
          out->access_key_id = kiln_xstrdup (ak);
          out->secret_access_key = kiln_xstrdup (sk);
          out->session_token = c->vars[ENV_SESSION_TOKEN] ? kiln_xstrdup (c->vars[ENV_SESSION_TOKEN]) : NULL;
          out->source = kiln_xstrdup ("environment");
          return 0;
        }
      if (ak || sk)
        return kiln_error_set (err, KILN_ERR_INVALID, 0, "%s is set but %s is not",
                               ak ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                               ak ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
    }
  int r = keys_from (c->credentials, c->profile, c->credentials_path, c->profile, out, err);
  if (r == 0)
    r = keys_from (c->config, c->config_section, c->config_path, c->profile, out, err);
  if (r > 0)
    return 0;
  if (r < 0)
    return -1;

  static const char *const unsupported[] = {"role_arn", "credential_process", "sso_session", "sso_start_url",
                                            "web_identity_token_file", "credential_source"};
  for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++)
    if (kiln_aws_ini_get (c->credentials, c->profile, unsupported[i])
        || kiln_aws_ini_get (c->config, c->config_section, unsupported[i]))
      return kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0,
                             "AWS profile '%s' uses %s, which kiln does not support; use static keys "
                             "(aws_access_key_id/aws_secret_access_key) or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
                             c->profile, unsupported[i]);
  return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0,
                         "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                         "aws_access_key_id and aws_secret_access_key in profile '%s' of '%s'",
                         c->profile, c->credentials_path ? c->credentials_path : "~/.aws/credentials");
}

char *
kiln_aws_default_endpoint (const char *service_id, const char *region)
{
  char *r = NULL;
  bool china = strncmp (region, "cn-", 3) == 0;
  _cleanup_free_ char *host = kiln_xstrdup (service_id);
  lowercase (host);
  for (char *p = host; *p; p++)
    if (*p == ' ')
      *p = '-';
  r = kiln_xasprintf ("https://%s.%s.amazonaws.com%s", host, region, china ? ".cn" : "");
  return r;
}

void
kiln_aws_endpoint_release (struct kiln_aws_endpoint *e)
{
  if (e == NULL)
    return;
  free (e->url);
  free (e->source);
  memset (e, 0, sizeof *e);
}

static bool
is_true (const char *v)
{
  if (v == NULL)
    return false;
  _cleanup_free_ char *t = trim_dup (v, strlen (v));
  return strcasecmp (t, "true") == 0;
}

/* Validates and stores url (trailing slashes dropped). */
static int
set_endpoint (struct kiln_aws_endpoint *out, const char *url, bool custom, const char *source, kiln_error **err)
{
  _cleanup_free_ char *u = trim_dup (url, strlen (url));
  if (strncasecmp (u, "http://", 7) != 0 && strncasecmp (u, "https://", 8) != 0)
    return kiln_error_set (err, KILN_ERR_INVALID, 0, "endpoint URL '%s' from %s is not http:// or https://", u,
                           source);
  size_t l = strlen (u);
  while (l > 0 && u[l - 1] == '/')
    u[--l] = '\0';
  const char *host = strstr (u, "://") + 3;
  if (*host == '\0' || *host == '/')
    return kiln_error_set (err, KILN_ERR_INVALID, 0, "endpoint URL '%s' from %s has no host", u, source);
  out->url = kiln_steal_pointer (&u);
  out->custom = custom;
  out->source = kiln_xstrdup (source);
  return 0;
}

int
kiln_aws_config_endpoint (const struct kiln_aws_config *c, const char *service_id, const char *override,
                          const char *region, struct kiln_aws_endpoint *out, kiln_error **err)
{
  memset (out, 0, sizeof *out);
  if (service_id == NULL || *service_id == '\0')
    return kiln_error_set (err, KILN_ERR_INVALID, 0, "no AWS service named for the endpoint");
  if (override && *override)
    return set_endpoint (out, override, true, "override", err);

  const char *ignore_env = c->vars[ENV_IGNORE_ENDPOINTS];
  bool ignore = ignore_env ? is_true (ignore_env) : is_true (kiln_aws_config_profile_value (c, "ignore_configured_endpoint_urls"));
  if (!ignore)
    {
      /* AWS_ENDPOINT_URL_<SERVICE>: uppercased, spaces and '-' as '_'. */
      _cleanup_free_ char *var = NULL;
      var = kiln_xasprintf ("AWS_ENDPOINT_URL_%s", service_id);
      for (char *p = var; *p; p++)
        *p = (*p == ' ' || *p == '-') ? '_' : (char) toupper ((unsigned char) *p);
      const char *v = lookup_env (c, var);
      if (v)
        return set_endpoint (out, v, true, var, err);
      if (c->vars[ENV_ENDPOINT_URL])
        return set_endpoint (out, c->vars[ENV_ENDPOINT_URL], true, "AWS_ENDPOINT_URL", err);

      const char *services = kiln_aws_config_profile_value (c, "services");
      if (services && *services)
        {
          _cleanup_free_ char *section = NULL, *key = NULL, *src = NULL;
          section = kiln_xasprintf ("services %s", services);
          key = kiln_xasprintf ("%s.endpoint_url", service_id);
          for (char *p = key; *p; p++)
            *p = *p == ' ' ? '_' : (char) tolower ((unsigned char) *p);
          const char *u = kiln_aws_ini_get (c->config, section, key);
          src = kiln_xasprintf ("services section '%s' in '%s'", services, c->config_path);
          if (u && *u)
            return set_endpoint (out, u, true, src, err);
        }
      const char *pu = kiln_aws_config_profile_value (c, "endpoint_url");
      if (pu && *pu)
        {
          _cleanup_free_ char *src = NULL;
          src = kiln_xasprintf ("endpoint_url of profile '%s' in '%s'", c->profile, c->config_path);
          return set_endpoint (out, pu, true, src, err);
        }
    }

  if (region == NULL || *region == '\0')
    region = c->region;
  if (region == NULL)
    return kiln_error_set (err, KILN_ERR_INVALID, 0,
                           "no AWS region for the %s endpoint: set AWS_REGION, or region in profile '%s'",
                           service_id, c->profile);
  for (const char *p = region; *p; p++)
    if (!(isalnum ((unsigned char) *p) || *p == '-'))
      return kiln_error_set (err, KILN_ERR_INVALID, 0, "AWS region '%s' is not a region name", region);
  out->url = kiln_aws_default_endpoint (service_id, region);
  out->custom = false;
  out->source = kiln_xstrdup ("default");
  return 0;
}

int
kiln_aws_endpoint_split (const struct kiln_aws_endpoint *ep, char **scheme, char **authority, char **base_path,
                         kiln_error **err)
{
  const char *sep = strstr (ep->url, "://");
  if (sep == NULL)
    return kiln_fail_invalid (err, "endpoint from %s is not a URL", ep->source);
  *scheme = kiln_xstrndup (ep->url, (size_t) (sep - ep->url));
  for (char *p = *scheme; *p; p++)
    *p = (char) tolower ((unsigned char) *p);
  const char *auth = sep + 3;
  size_t alen = strcspn (auth, "/?#");
  if (alen == 0)
    return kiln_fail_invalid (err, "endpoint from %s has no host", ep->source);
  *authority = kiln_xstrndup (auth, alen);
  /* User information would be a credential in a URL kiln shows in messages. */
  if (strchr (*authority, '@'))
    return kiln_fail_invalid (err, "endpoint from %s must not carry user information", ep->source);
  const char *path = auth + alen;
  size_t plen = strcspn (path, "?#");
  if (path[plen] != '\0')
    return kiln_fail_invalid (err, "endpoint from %s must not have a query or fragment", ep->source);
  /* Kept decoded, as sigv4 wants paths; trailing '/' dropped so "/" can be
   * appended. */
  *base_path = kiln_sigv4_uri_decode (path, plen, false, NULL);
  size_t bl = strlen (*base_path);
  while (bl > 0 && (*base_path)[bl - 1] == '/')
    (*base_path)[--bl] = '\0';
  return 0;
}
