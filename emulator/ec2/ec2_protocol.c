/* ec2_protocol.c - EC2's Query protocol: reading the flattened parameters,
 * filters and pagination of a request, and writing the XML reply (ec2.h).
 *
 * The parameters are read through the Query protocols' accessors
 * (query.h), shared with the other services that speak Query. */
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

void
emu_ec2_error_reply (struct emu_call *c, struct emu_response *resp)
{
  xmlBufferPtr buf;
  xmlTextWriterPtr w = emu_xml_document_begin (&buf);
  xmlTextWriterStartElement (w, BAD_CAST "Response");
  xmlTextWriterStartElement (w, BAD_CAST "Errors");
  xmlTextWriterStartElement (w, BAD_CAST "Error");
  xmlTextWriterWriteElement (w, BAD_CAST "Code", BAD_CAST c->error_code);
  kiln_xml_write_text_element (w, "Message", c->error_message ? c->error_message : "");
  xmlTextWriterEndElement (w);
  xmlTextWriterEndElement (w);
  xmlTextWriterWriteElement (w, BAD_CAST "RequestID", BAD_CAST c->request_id);
  xmlTextWriterEndElement (w);
  emu_xml_document_finish (w, buf, resp, c->error_status, "text/xml;charset=UTF-8");
}

void
emu_ec2_serve (struct emu_call *c, struct emu_response *resp)
{
  if (emu_query_decode (c, "EC2 Query") < 0)
    goto out;
  const char *action = emu_param (c, "Action");
  if (action == NULL || *action == '\0')
    {
      emu_fail (c, 400, "MissingAction", "The request must contain the parameter Action");
      goto out;
    }
  c->operation = action;
  emu_handler_fn fn = emu_operation_find (ec2_tables, action);
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

  static const struct emu_query_style ec2_style = {
    .xmlns = EC2_XMLNS, .content_type = "text/xml;charset=UTF-8", .internal_code = "InternalError",
  };
  emu_query_run (c, resp, action, fn, &ec2_style);

out:
  if (c->error_code)
    emu_ec2_error_reply (c, resp);
  emu_params_free (c);
}
