/* query.c - the Query protocols' input and XML output (query.h): EC2
 * Query, and awsQuery (STS, IAM), which read the same flattened form
 * parameters and answer in XML.
 *
 * The parameters (query string and form body) are decoded once, their list
 * indices made canonical and sorted by name, so a lookup is a binary search
 * and the members of a list are a contiguous run. */
#include "query.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"
#include "xalloc.h"
#include "xml_doc.h"

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

int
emu_query_decode (struct emu_call *c, const char *protocol)
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
        return emu_fail (c, 400, "InvalidParameterValue", "%s requests are sent as "
                         "application/x-www-form-urlencoded, not '%s'.", protocol, type);
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

/* ---- Query replies ---- */

xmlTextWriterPtr
emu_xml_document_begin (xmlBufferPtr *buf)
{
  *buf = xmlBufferCreate ();
  xmlTextWriterPtr w = xmlNewTextWriterMemory (*buf, 0);
  xmlTextWriterStartDocument (w, "1.0", "UTF-8", NULL);
  return w;
}

void
emu_xml_document_finish (xmlTextWriterPtr w, xmlBufferPtr buf, struct emu_response *resp, int status,
                         const char *content_type)
{
  xmlTextWriterEndDocument (w);
  xmlFreeTextWriter (w);
  kiln_buf_reset (&resp->body);
  kiln_buf_append (&resp->body, xmlBufferContent (buf), (size_t) xmlBufferLength (buf));
  xmlBufferFree (buf);
  resp->status = status;
  free (resp->content_type);
  resp->content_type = kiln_xstrdup (content_type);
}

void
emu_query_run (struct emu_call *c, struct emu_response *resp, const char *action, emu_handler_fn fn,
               const struct emu_query_style *style)
{
  xmlBufferPtr buf;
  c->xml = emu_xml_document_begin (&buf);
  _cleanup_free_ char *root = kiln_xasprintf ("%sResponse", action);
  xmlTextWriterStartElement (c->xml, BAD_CAST root);
  xmlTextWriterWriteAttribute (c->xml, BAD_CAST "xmlns", BAD_CAST style->xmlns);
  if (style->result_wrapper)
    {
      _cleanup_free_ char *result = kiln_xasprintf ("%sResult", action);
      xmlTextWriterStartElement (c->xml, BAD_CAST result);
    }
  else
    emu_xml_text (c, "requestId", c->request_id);
  int r = fn (c);
  if (r == 0 && c->error_code == NULL)
    {
      if (style->result_wrapper)
        {
          xmlTextWriterEndElement (c->xml);
          emu_xml_start (c, "ResponseMetadata");
          emu_xml_text (c, "RequestId", c->request_id);
          emu_xml_end (c);
        }
      emu_xml_document_finish (c->xml, buf, resp, 200, style->content_type);
      c->xml = NULL;
      return;
    }
  xmlFreeTextWriter (c->xml);
  c->xml = NULL;
  xmlBufferFree (buf);
  if (c->error_code == NULL)
    emu_fail (c, 500, style->internal_code, "%s failed without saying why", action);
}
