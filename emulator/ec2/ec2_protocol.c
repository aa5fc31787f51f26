/* ec2_protocol.c - EC2's Query protocol: reading the flattened parameters,
 * filters and pagination of a request, and writing the XML reply (ec2.h).
 *
 * Parameters arrive sorted by name (emulator.c sorts them once), so a lookup
 * is a binary search and the members of a list are a contiguous run. */
#include "ec2.h"
#include "store.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"
#include "digest.h"
#include "utf8.h"
#include "xalloc.h"
#include "xml_doc.h"

const char *
emu_param (struct emu_call *c, const char *name)
{
  size_t lo = 0, hi = c->n_params;
  while (lo < hi)
    {
      size_t mid = (lo + hi) / 2;
      int cmp = strcmp (c->params[mid].name, name);
      if (cmp == 0)
        return c->params[mid].value;
      if (cmp < 0)
        lo = mid + 1;
      else
        hi = mid;
    }
  return NULL;
}

const char *
emu_paramf (struct emu_call *c, const char *fmt, ...)
{
  char name[256];
  va_list ap;
  va_start (ap, fmt);
  int n = vsnprintf (name, sizeof name, fmt, ap);
  va_end (ap);
  if (n < 0 || (size_t) n >= sizeof name)
    return NULL;
  return emu_param (c, name);
}

int
emu_param_required (struct emu_call *c, const char *name, const char **out)
{
  *out = emu_param (c, name);
  if (*out == NULL)
    return emu_fail (c, 400, "MissingParameter", "The request must contain the parameter %s", name);
  return 0;
}

/* The index N of "PREFIX.N<rest>" when name has that shape (N a positive
 * decimal), with *rest pointing after N; else 0. */
static long
member_index (const char *name, const char *prefix, size_t prefix_len, const char **rest)
{
  if (strncmp (name, prefix, prefix_len) != 0 || name[prefix_len] != '.' || !isdigit ((unsigned char) name[prefix_len + 1]))
    return 0;
  char *end;
  errno = 0;
  long n = strtol (name + prefix_len + 1, &end, 10);
  if (errno || n <= 0 || n > 100000)
    return 0;
  *rest = end;
  return n;
}

/* A list member found among the parameters: its index and value. */
struct member {
  long k;
  const char *value;
};

static int
compare_member (const void *a, const void *b)
{
  long x = ((const struct member *) a)->k, y = ((const struct member *) b)->k;
  return (x > y) - (x < y);
}

/* The distinct indices N of PREFIX.N names; when whole, only names that end
 * at N (list members), else only names that continue with '.' (structures).
 * When values is non-NULL and whole, (*values)[i] is the value of member
 * idx[i], taken from the parameter itself: never a second lookup that could
 * miss.  Names are canonical (decode_params), so each N appears once. */
static long *
collect_indices (struct emu_call *c, const char *prefix, bool whole, size_t *n_out, const char ***values)
{
  size_t prefix_len = strlen (prefix);
  struct member *found = NULL;
  size_t n = 0;
  for (size_t i = 0; i < c->n_params; i++)
    {
      const char *rest;
      long k = member_index (c->params[i].name, prefix, prefix_len, &rest);
      if (k == 0 || (whole ? *rest != '\0' : *rest != '.'))
        continue;
      found = realloc (found, (n + 1) * sizeof *found);
      if (found == NULL)
        abort ();
      found[n++] = (struct member){k, c->params[i].value};
    }
  if (n > 1)
    qsort (found, n, sizeof *found, compare_member);
  long *idx = kiln_xcalloc (n + 1, sizeof *idx);
  if (values)
    *values = kiln_xcalloc (n + 1, sizeof **values);
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    if (m == 0 || idx[m - 1] != found[i].k)
      {
        if (values)
          (*values)[m] = found[i].value;
        idx[m++] = found[i].k;
      }
  free (found);
  *n_out = m;
  return idx;
}

const char **
emu_param_list (struct emu_call *c, const char *prefix, size_t *n)
{
  size_t count = 0;
  const char **out = NULL;
  _cleanup_free_ long *idx = collect_indices (c, prefix, true, &count, &out);
  if (n)
    *n = count;
  return out;
}

int *
emu_param_indices (struct emu_call *c, const char *prefix, size_t *n)
{
  size_t count = 0;
  _cleanup_free_ long *idx = collect_indices (c, prefix, false, &count, NULL);
  int *out = kiln_xcalloc (count + 1, sizeof *out);
  for (size_t i = 0; i < count; i++)
    out[i] = (int) idx[i];
  *n = count;
  return out;
}

int
emu_param_int (struct emu_call *c, const char *name, long long def, long long min, long long max, long long *out)
{
  const char *v = emu_param (c, name);
  if (v == NULL)
    {
      *out = def;
      return 0;
    }
  char *end;
  errno = 0;
  long long n = strtoll (v, &end, 10);
  if (*v == '\0' || *end != '\0' || errno)
    return emu_fail_param (c, "Value (%s) for parameter %s is invalid. Expected a number.", v, name);
  if (n < min || n > max)
    return emu_fail_param (c, "Value (%s) for parameter %s is invalid. Expected a value between %lld and %lld.", v,
                           name, min, max);
  *out = n;
  return 0;
}

int
emu_param_bool (struct emu_call *c, const char *name, bool def, bool *out)
{
  const char *v = emu_param (c, name);
  if (v == NULL)
    *out = def;
  else if (strcasecmp (v, "true") == 0)
    *out = true;
  else if (strcasecmp (v, "false") == 0)
    *out = false;
  else
    return emu_fail_param (c, "Value (%s) for parameter %s is invalid. Expected: 'true' or 'false'.", v, name);
  return 0;
}

bool
emu_list_contains (const char *const *list, size_t n, const char *s)
{
  for (size_t i = 0; i < n; i++)
    if (list[i] && strcmp (list[i], s) == 0)
      return true;
  return false;
}

/* ---- filters ---- */

static bool
filter_name_known (const char *name, const char *const *known)
{
  for (size_t i = 0; known[i]; i++)
    {
      if (strcmp (known[i], name) == 0)
        return true;
      if (strcmp (known[i], "tag:*") == 0 && strncmp (name, "tag:", 4) == 0 && name[4] != '\0')
        return true;
    }
  return false;
}

int
emu_filters_parse (struct emu_call *c, const char *const *known, struct emu_filters *out)
{
  return emu_filters_parse_named (c, "Filter", known, out);
}

int
emu_filters_parse_named (struct emu_call *c, const char *list, const char *const *known, struct emu_filters *out)
{
  memset (out, 0, sizeof *out);
  size_t n = 0;
  _cleanup_free_ int *idx = emu_param_indices (c, list, &n);
  if (n == 0)
    return 0;
  out->items = kiln_xcalloc (n, sizeof *out->items);
  for (size_t i = 0; i < n; i++)
    {
      const char *name = emu_paramf (c, "%s.%d.Name", list, idx[i]);
      if (name == NULL)
        {
          emu_filters_release (out);
          return emu_fail (c, 400, "MissingParameter", "The request must contain the parameter %s.%d.Name", list,
                           idx[i]);
        }
      if (!filter_name_known (name, known))
        {
          emu_filters_release (out);
          return emu_fail_param (c, "The filter '%s' is invalid", name);
        }
      char prefix[64];
      snprintf (prefix, sizeof prefix, "%s.%d.Value", list, idx[i]);
      struct emu_filter *f = &out->items[out->n++];
      f->name = kiln_xstrdup (name);
      f->values = emu_param_list (c, prefix, &f->n_values);
    }
  return 0;
}

void
emu_filters_release (struct emu_filters *f)
{
  for (size_t i = 0; i < f->n; i++)
    {
      free (f->items[i].name);
      free (f->items[i].values);
    }
  free (f->items);
  memset (f, 0, sizeof *f);
}

/* Whether any of the filter's values matches s (EC2 wildcards). */
static bool
filter_matches_string (const struct emu_filter *f, const char *s)
{
  for (size_t i = 0; i < f->n_values; i++)
    if (fnmatch (f->values[i], s, 0) == 0)
      return true;
  return false;
}

/* Whether the filter matches any of the values v holds (a string, a number
 * or an array of them). */
static bool
filter_matches_json (const struct emu_filter *f, json_t *v)
{
  if (json_is_array (v))
    {
      size_t i;
      json_t *item;
      json_array_foreach (v, i, item)
        if (filter_matches_json (f, item))
          return true;
      return false;
    }
  if (json_is_string (v))
    return filter_matches_string (f, json_string_value (v));
  if (json_is_integer (v))
    {
      char num[32];
      snprintf (num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value (v));
      return filter_matches_string (f, num);
    }
  if (json_is_boolean (v))
    return filter_matches_string (f, json_is_true (v) ? "true" : "false");
  return false;
}

bool
emu_filters_match (const struct emu_filters *f, json_t *fields, json_t *tags)
{
  for (size_t i = 0; i < f->n; i++)
    {
      const struct emu_filter *flt = &f->items[i];
      bool ok = false;
      if (strncmp (flt->name, "tag:", 4) == 0)
        {
          json_t *v = tags ? json_object_get (tags, flt->name + 4) : NULL;
          ok = v && filter_matches_json (flt, v);
        }
      else if (strcmp (flt->name, "tag-key") == 0 || strcmp (flt->name, "tag-value") == 0)
        {
          bool keys = flt->name[4] == 'k';
          const char *key;
          json_t *value;
          json_object_foreach (tags, key, value)
            if (keys ? filter_matches_string (flt, key) : filter_matches_json (flt, value))
              {
                ok = true;
                break;
              }
        }
      else
        {
          json_t *v = json_object_get (fields, flt->name);
          ok = v && filter_matches_json (flt, v);
        }
      if (!ok)
        return false;
    }
  return true;
}

/* ---- pagination ---- */

int
emu_page (struct emu_call *c, size_t total, long long min_results, size_t *start, size_t *count, char **next_token)
{
  *next_token = NULL;
  *start = 0;
  *count = total;
  long long max_results;
  if (emu_param_int (c, "MaxResults", -1, min_results, 1000, &max_results) < 0)
    return -1;
  const char *token = emu_param (c, "NextToken");
  if (token)
    {
      /* Tokens are "kiln-<offset>": anything else is not one of ours. */
      char *end;
      errno = 0;
      unsigned long long off = strncmp (token, "kiln-", 5) == 0 ? strtoull (token + 5, &end, 10) : 0;
      if (strncmp (token, "kiln-", 5) != 0 || *end != '\0' || errno || token[5] == '\0')
        return emu_fail (c, 400, "InvalidNextToken", "The token '%s' is invalid.", token);
      *start = off > total ? total : (size_t) off;
      *count = total - *start;
    }
  if (max_results > 0 && (size_t) max_results < *count)
    {
      *count = (size_t) max_results;
      *next_token = kiln_xasprintf ("kiln-%zu", *start + *count);
    }
  return 0;
}

/* ---- XML ---- */

void
emu_xml_start (struct emu_call *c, const char *name)
{
  xmlTextWriterStartElement (c->xml, BAD_CAST name);
}

void
emu_xml_end (struct emu_call *c)
{
  xmlTextWriterFullEndElement (c->xml);
}

void
emu_xml_text (struct emu_call *c, const char *name, const char *value)
{
  if (value)
    kiln_xml_write_text_element (c->xml, name, value);
}

void
emu_xml_textf (struct emu_call *c, const char *name, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  _cleanup_free_ char *s = kiln_xvasprintf (fmt, ap);
  va_end (ap);
  emu_xml_text (c, name, s);
}

void
emu_xml_bool (struct emu_call *c, const char *name, bool value)
{
  emu_xml_text (c, name, value ? "true" : "false");
}

void
emu_xml_time (struct emu_call *c, const char *name, time_t t)
{
  char s[32];
  emu_format_time (t, s);
  emu_xml_text (c, name, s);
}

void
emu_xml_tag_set (struct emu_call *c, const char *name, json_t *tags)
{
  if (tags == NULL || json_object_size (tags) == 0)
    return;
  emu_xml_start (c, name);
  const char *key;
  json_t *value;
  json_object_foreach (tags, key, value)
    {
      emu_xml_start (c, "item");
      emu_xml_text (c, "key", key);
      emu_xml_text (c, "value", json_string_value (value) ? json_string_value (value) : "");
      emu_xml_end (c);
    }
  emu_xml_end (c);
}

/* ---- requests and replies ---- */

#define EC2_XMLNS "http://ec2.amazonaws.com/doc/2016-11-15/"

static const struct emu_operation *const ec2_tables[] = {
  emu_ec2_instance_ops, emu_ec2_image_ops, emu_ec2_snapshot_ops, emu_ec2_tag_ops,
  emu_ec2_keypair_ops, emu_ec2_region_ops, emu_ec2_import_ops, emu_ec2_export_ops, NULL,
};

static emu_handler_fn
ec2_find (const char *action)
{
  for (size_t t = 0; ec2_tables[t]; t++)
    for (const struct emu_operation *op = ec2_tables[t]; op->name; op++)
      if (strcmp (op->name, action) == 0)
        return op->fn;
  return NULL;
}

/* Rewrites a parameter name's list indices to canonical decimal in place:
 * "Filter.01.Value.007" becomes "Filter.1.Value.7" (and "Owner.00" becomes
 * "Owner.0", which no list accepts).  AWS's Query protocol reads a member
 * index as a number, so ".01" is member 1; doing it here, once, keeps every
 * handler's lookups ("Owner.%d") in agreement with the indices it was given. */
static void
canonical_member_name (char *name)
{
  char *out = name;
  for (const char *seg = name;;)
    {
      size_t len = strcspn (seg, ".");
      bool digits = len > 0 && strspn (seg, "0123456789") == len;
      if (digits)
        while (len > 1 && *seg == '0')
          seg++, len--;
      memmove (out, seg, len);
      out += len;
      seg += len;
      if (*seg == '\0')
        break;
      *out++ = *seg++;
    }
  *out = '\0';
}

static int
compare_param (const void *a, const void *b)
{
  return strcmp (((const struct emu_param *) a)->name, ((const struct emu_param *) b)->name);
}

static int
decode_params (struct emu_call *c)
{
  const struct emu_request *req = c->req;
  if (req->raw_query)
    {
      if (emu_form_parse (c, req->raw_query, strlen (req->raw_query)) < 0)
        return -1;
    }
  else
    for (size_t i = 0; i < req->n_query; i++)
      emu_params_add (c, kiln_xstrdup (req->query[i].name),
                 kiln_xstrdup (req->query[i].value ? req->query[i].value : ""));
  if (req->body_len > 0)
    {
      const char *type = NULL;
      for (size_t i = 0; i < req->n_headers; i++)
        if (strcasecmp (req->headers[i].name, "Content-Type") == 0)
          type = req->headers[i].value;
      if (type && strncasecmp (type, "application/x-www-form-urlencoded", 33) != 0)
        return emu_fail (c, 400, "InvalidParameterValue", "EC2 Query requests are sent as "
                         "application/x-www-form-urlencoded, not '%s'.", type);
      if (emu_form_parse (c, req->body, req->body_len) < 0)
        return -1;
    }
  for (size_t i = 0; i < c->n_params; i++)
    canonical_member_name (c->params[i].name);
  if (c->n_params > 1)
    qsort (c->params, c->n_params, sizeof *c->params, compare_param);
  for (size_t i = 1; i < c->n_params; i++)
    if (strcmp (c->params[i - 1].name, c->params[i].name) == 0)
      return emu_fail (c, 400, "MalformedQueryString", "The parameter '%s' is given more than once.",
                       c->params[i].name);
  return 0;
}

void
emu_ec2_error_reply (struct emu_call *c, struct emu_response *resp)
{
  xmlBufferPtr buf = xmlBufferCreate ();
  xmlTextWriterPtr w = xmlNewTextWriterMemory (buf, 0);
  xmlTextWriterStartDocument (w, "1.0", "UTF-8", NULL);
  xmlTextWriterStartElement (w, BAD_CAST "Response");
  xmlTextWriterStartElement (w, BAD_CAST "Errors");
  xmlTextWriterStartElement (w, BAD_CAST "Error");
  xmlTextWriterWriteElement (w, BAD_CAST "Code", BAD_CAST c->error_code);
  kiln_xml_write_text_element (w, "Message", c->error_message ? c->error_message : "");
  xmlTextWriterEndElement (w);
  xmlTextWriterEndElement (w);
  xmlTextWriterWriteElement (w, BAD_CAST "RequestID", BAD_CAST c->request_id);
  xmlTextWriterEndElement (w);
  xmlTextWriterEndDocument (w);
  xmlFreeTextWriter (w);
  kiln_buf_reset (&resp->body);
  kiln_buf_append (&resp->body, xmlBufferContent (buf), (size_t) xmlBufferLength (buf));
  xmlBufferFree (buf);
  resp->status = c->error_status;
  free (resp->content_type);
  resp->content_type = kiln_xstrdup ("text/xml;charset=UTF-8");
}

void
emu_ec2_serve (struct emu_call *c, struct emu_response *resp)
{
  if (decode_params (c) < 0)
    goto out;
  const char *action = emu_param (c, "Action");
  if (action == NULL || *action == '\0')
    {
      emu_fail (c, 400, "MissingAction", "The request must contain the parameter Action");
      goto out;
    }
  c->operation = action;
  emu_handler_fn fn = ec2_find (action);
  if (fn == NULL)
    {
      emu_fail (c, 400, "InvalidAction", "The action %s is not valid for this web service.", action);
      goto out;
    }

  /* DryRun asks whether the caller may do this: with no IAM here, always,
   * so no operation runs (the answer EC2 gives when permission is there). */
  bool dry;
  if (emu_param_bool (c, "DryRun", false, &dry) < 0)
    goto out;
  if (dry)
    {
      emu_fail (c, 412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.");
      goto out;
    }

  xmlBufferPtr buf = xmlBufferCreate ();
  c->xml = xmlNewTextWriterMemory (buf, 0);
  xmlTextWriterStartDocument (c->xml, "1.0", "UTF-8", NULL);
  {
    _cleanup_free_ char *root = NULL;
    root = kiln_xasprintf ("%sResponse", action);
    xmlTextWriterStartElement (c->xml, BAD_CAST root);
  }
  xmlTextWriterWriteAttribute (c->xml, BAD_CAST "xmlns", BAD_CAST EC2_XMLNS);
  emu_xml_text (c, "requestId", c->request_id);
  int r = fn (c);
  if (r == 0 && c->error_code == NULL)
    {
      xmlTextWriterEndDocument (c->xml);
      xmlFreeTextWriter (c->xml);
      c->xml = NULL;
      resp->status = 200;
      resp->content_type = kiln_xstrdup ("text/xml;charset=UTF-8");
      kiln_buf_append (&resp->body, xmlBufferContent (buf), (size_t) xmlBufferLength (buf));
    }
  else
    {
      xmlFreeTextWriter (c->xml);
      c->xml = NULL;
      if (c->error_code == NULL)
        emu_fail (c, 500, "InternalError", "%s failed without saying why", action);
    }
  xmlBufferFree (buf);

out:
  if (c->error_code)
    emu_ec2_error_reply (c, resp);
  emu_params_free (c);
}
