/* ebs_protocol.c - rest-json as the EBS direct APIs speak it (ebs.h): the
 * operation is named by method and path, its input comes from URI labels,
 * query parameters, headers and a JSON body, its output is a JSON body (or,
 * for GetSnapshotBlock, the block's bytes) with headers, and an error is
 * the x-amzn-ErrorType header plus {"Message", "Reason"}.
 *
 * The route table below is the botocore model's (ebs 2019-11-02): each
 * operation's http method, requestUri and responseCode, and where each
 * input member travels.  Decoding checks what the model states about a
 * member (required, integer, boolean, min/max) so handlers read c->input
 * with its types already right.  Error bodies carry "Message" (the member's
 * name in the model, so botocore fills both Error.Message and the modeled
 * e.response["Message"]) and "Reason" when the error has one. */
#include "ebs.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "cleanup.h"
#include "utf8.h"
#include "xalloc.h"

enum member_location { IN_URI, IN_QUERY, IN_HEADER, IN_BODY };
enum member_type { T_STRING, T_INTEGER, T_BOOLEAN, T_TAGS };

struct member {
  const char *name;          /* the model's member name: the key in c->input */
  enum member_location loc;
  const char *wire;          /* URI label, query parameter, header or body key */
  enum member_type type;
  bool required;
  bool ranged;               /* min and max apply */
  long long min, max;
};

#define MAX_MEMBERS 9

struct route {
  const char *method;
  const char *path;          /* literal segments and {labels} */
  const char *operation;
  int status;                /* the model's responseCode */
  struct member members[MAX_MEMBERS];
};

#define RANGE(lo, hi) .ranged = true, .min = (lo), .max = (hi)

static const struct route routes[] = {
  {"POST", "/snapshots", "StartSnapshot", 201, {
    {"VolumeSize", IN_BODY, "VolumeSize", T_INTEGER, .required = true},
    {"ParentSnapshotId", IN_BODY, "ParentSnapshotId", T_STRING},
    {"Tags", IN_BODY, "Tags", T_TAGS},
    {"Description", IN_BODY, "Description", T_STRING},
    {"ClientToken", IN_BODY, "ClientToken", T_STRING},
    {"Encrypted", IN_BODY, "Encrypted", T_BOOLEAN},
    {"KmsKeyArn", IN_BODY, "KmsKeyArn", T_STRING},
    {"Timeout", IN_BODY, "Timeout", T_INTEGER, RANGE (10, 4320)},
  }},
  {"PUT", "/snapshots/{snapshotId}/blocks/{blockIndex}", "PutSnapshotBlock", 201, {
    {"SnapshotId", IN_URI, "snapshotId", T_STRING, .required = true},
    {"BlockIndex", IN_URI, "blockIndex", T_INTEGER, .required = true, RANGE (0, LLONG_MAX)},
    {"DataLength", IN_HEADER, "x-amz-Data-Length", T_INTEGER, .required = true},
    {"Progress", IN_HEADER, "x-amz-Progress", T_INTEGER, RANGE (0, 100)},
    {"Checksum", IN_HEADER, "x-amz-Checksum", T_STRING, .required = true},
    {"ChecksumAlgorithm", IN_HEADER, "x-amz-Checksum-Algorithm", T_STRING, .required = true},
  }},
  {"POST", "/snapshots/completion/{snapshotId}", "CompleteSnapshot", 202, {
    {"SnapshotId", IN_URI, "snapshotId", T_STRING, .required = true},
    {"ChangedBlocksCount", IN_HEADER, "x-amz-ChangedBlocksCount", T_INTEGER, .required = true, RANGE (0, LLONG_MAX)},
    {"Checksum", IN_HEADER, "x-amz-Checksum", T_STRING},
    {"ChecksumAlgorithm", IN_HEADER, "x-amz-Checksum-Algorithm", T_STRING},
    {"ChecksumAggregationMethod", IN_HEADER, "x-amz-Checksum-Aggregation-Method", T_STRING},
  }},
  {"GET", "/snapshots/{snapshotId}/blocks/{blockIndex}", "GetSnapshotBlock", 200, {
    {"SnapshotId", IN_URI, "snapshotId", T_STRING, .required = true},
    {"BlockIndex", IN_URI, "blockIndex", T_INTEGER, .required = true, RANGE (0, LLONG_MAX)},
    {"BlockToken", IN_QUERY, "blockToken", T_STRING, .required = true},
  }},
  {"GET", "/snapshots/{snapshotId}/blocks", "ListSnapshotBlocks", 200, {
    {"SnapshotId", IN_URI, "snapshotId", T_STRING, .required = true},
    {"NextToken", IN_QUERY, "pageToken", T_STRING},
    {"MaxResults", IN_QUERY, "maxResults", T_INTEGER, RANGE (100, 10000)},
    {"StartingBlockIndex", IN_QUERY, "startingBlockIndex", T_INTEGER, RANGE (0, LLONG_MAX)},
  }},
  {"GET", "/snapshots/{secondSnapshotId}/changedblocks", "ListChangedBlocks", 200, {
    {"SecondSnapshotId", IN_URI, "secondSnapshotId", T_STRING, .required = true},
    {"FirstSnapshotId", IN_QUERY, "firstSnapshotId", T_STRING},
    {"NextToken", IN_QUERY, "pageToken", T_STRING},
    {"MaxResults", IN_QUERY, "maxResults", T_INTEGER, RANGE (100, 10000)},
    {"StartingBlockIndex", IN_QUERY, "startingBlockIndex", T_INTEGER, RANGE (0, LLONG_MAX)},
  }},
};

int
ebs_fail (struct emu_call *c, int status, const char *code, const char *reason, const char *fmt, ...)
{
  if (c->error_code)
    return -1;
  c->error_reason = reason;
  va_list ap;
  va_start (ap, fmt);
  _cleanup_free_ char *message = NULL;
  message = kiln_xvasprintf (fmt, ap);
  va_end (ap);
  return emu_fail (c, status, code, "%s", message);
}

/* ---- routing ---- */

/* Whether path matches pattern segment by segment; labels' values go into
 * labels[] (malloc'd) in pattern order. */
static bool
path_matches (const char *pattern, const char *path, char *labels[MAX_MEMBERS], const char *names[MAX_MEMBERS],
              size_t *n_labels)
{
  *n_labels = 0;
  const char *p = pattern, *s = path;
  bool ok = true;
  while (ok && *p && *s)
    {
      if (*p != '/' || *s != '/')
        {
          ok = false;
          break;
        }
      p++, s++;
      size_t plen = strcspn (p, "/"), slen = strcspn (s, "/");
      if (plen > 2 && p[0] == '{' && p[plen - 1] == '}')
        {
          if (slen == 0 || *n_labels == MAX_MEMBERS)
            ok = false;
          else
            {
              names[*n_labels] = p;
              labels[(*n_labels)++] = kiln_xstrndup (s, slen);
            }
        }
      else if (plen != slen || strncmp (p, s, plen) != 0)
        ok = false;
      p += plen, s += slen;
    }
  ok = ok && *p == '\0' && *s == '\0';
  if (!ok)
    {
      for (size_t i = 0; i < *n_labels; i++)
        free (labels[i]);
      *n_labels = 0;
    }
  return ok;
}

static bool
label_is (const char *pattern_segment, const char *label)
{
  size_t n = strlen (label);
  return pattern_segment[0] == '{' && strncmp (pattern_segment + 1, label, n) == 0 && pattern_segment[n + 1] == '}';
}

static ebs_handler_fn
find_handler (const char *operation)
{
  for (const struct ebs_operation *op = emu_ebs_snapshot_ops; op->name; op++)
    if (strcmp (op->name, operation) == 0)
      return op->fn;
  return NULL;
}

/* ---- decoding ---- */

/* A whole decimal integer (optional '-'), or false. */
static bool
parse_integer (const char *s, long long *out)
{
  if (*s == '\0' || (s[0] == '-' && s[1] == '\0'))
    return false;
  if (strspn (s + (s[0] == '-'), "0123456789") != strlen (s + (s[0] == '-')))
    return false;
  errno = 0;
  char *end;
  long long v = strtoll (s, &end, 10);
  if (errno || *end)
    return false;
  *out = v;
  return true;
}

static int
fail_member (struct emu_call *c, const struct member *m, const char *value, const char *constraint)
{
  if (value)
    return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "1 validation error detected: Value '%s' at '%s' "
                                "failed to satisfy constraint: %s", value, m->wire, constraint);
  return ebs_fail_validation (c, "INVALID_PARAMETER_VALUE", "1 validation error detected: Value null at '%s' failed "
                              "to satisfy constraint: %s", m->wire, constraint);
}

static int
check_range (struct emu_call *c, const struct member *m, long long v)
{
  if (!m->ranged || (v >= m->min && v <= m->max))
    return 0;
  char value[32], constraint[96];
  snprintf (value, sizeof value, "%lld", v);
  if (v < m->min)
    snprintf (constraint, sizeof constraint, "Member must have value greater than or equal to %lld", m->min);
  else
    snprintf (constraint, sizeof constraint, "Member must have value less than or equal to %lld", m->max);
  return fail_member (c, m, value, constraint);
}

/* A value that came as text (URI, query, header) into c->input.  Text that
 * is not UTF-8 is refused here: JSON (and so every handler) holds only
 * UTF-8, and a member that silently went missing reached a handler as NULL. */
static int
decode_text (struct emu_call *c, const struct member *m, const char *text)
{
  if (!kiln_utf8_valid (text))
    return fail_member (c, m, "(not UTF-8)", "Member must be valid UTF-8");
  switch (m->type)
    {
    case T_INTEGER:
      {
        long long v;
        if (!parse_integer (text, &v))
          return fail_member (c, m, text, "Member must be an integer");
        if (check_range (c, m, v) < 0)
          return -1;
        json_object_set_new (c->input, m->name, json_integer (v));
        return 0;
      }
    case T_BOOLEAN:
      if (strcmp (text, "true") != 0 && strcmp (text, "false") != 0)
        return fail_member (c, m, text, "Member must be true or false");
      json_object_set_new (c->input, m->name, json_boolean (strcmp (text, "true") == 0));
      return 0;
    case T_STRING:
    case T_TAGS:
      break;
    }
  json_object_set_new (c->input, m->name, json_string (text));
  return 0;
}

/* fail_member with a JSON value shown as JSON. */
static int
fail_json_member (struct emu_call *c, const struct member *m, json_t *v, const char *constraint)
{
  _cleanup_free_ char *text = json_dumps (v, JSON_ENCODE_ANY | JSON_COMPACT);
  return fail_member (c, m, text ? text : "?", constraint);
}

static int
decode_tags (struct emu_call *c, const struct member *m, json_t *v)
{
  if (!json_is_array (v))
    return fail_json_member (c, m, v, "Member must be a list of {\"Key\", \"Value\"}");
  size_t i;
  json_t *tag;
  json_array_foreach (v, i, tag)
    {
      json_t *key = json_object_get (tag, "Key"), *value = json_object_get (tag, "Value");
      if (!json_is_object (tag) || (key && !json_is_string (key)) || (value && !json_is_string (value)))
        return fail_json_member (c, m, tag, "Member must be a list of {\"Key\": string, \"Value\": string}");
    }
  json_object_set (c->input, m->name, v);
  return 0;
}

static int
decode_json (struct emu_call *c, const struct member *m, json_t *v)
{
  switch (m->type)
    {
    case T_INTEGER:
      if (!json_is_integer (v))
        return fail_json_member (c, m, v, "Member must be an integer");
      if (check_range (c, m, json_integer_value (v)) < 0)
        return -1;
      break;
    case T_BOOLEAN:
      if (!json_is_boolean (v))
        return fail_json_member (c, m, v, "Member must be a boolean");
      break;
    case T_STRING:
      if (!json_is_string (v))
        return fail_json_member (c, m, v, "Member must be a string");
      break;
    case T_TAGS:
      return decode_tags (c, m, v);
    }
  json_object_set (c->input, m->name, v);
  return 0;
}

static bool
route_has_body (const struct route *r)
{
  for (size_t i = 0; i < MAX_MEMBERS && r->members[i].name; i++)
    if (r->members[i].loc == IN_BODY)
      return true;
  return false;
}

/* Fills c->input from the request as the route describes it. */
static int
decode_input (struct emu_call *c, const struct route *r, char *labels[], const char *names[], size_t n_labels)
{
  _cleanup_json_ json_t *body = NULL;
  if (route_has_body (r))
    {
      json_error_t jerr;
      body = c->req->body_len ? json_loadb (c->req->body, c->req->body_len, 0, &jerr) : json_object ();
      if (body == NULL)
        return ebs_fail (c, 400, "SerializationException", NULL, "The request body is not JSON: line %d column "
                         "%d: %s", jerr.line, jerr.column, jerr.text);
      if (!json_is_object (body))
        return ebs_fail (c, 400, "SerializationException", NULL, "The request body must be a JSON object.");
    }
  for (size_t i = 0; i < MAX_MEMBERS && r->members[i].name; i++)
    {
      const struct member *m = &r->members[i];
      const char *text = NULL;
      json_t *value = NULL;
      switch (m->loc)
        {
        case IN_URI:
          for (size_t k = 0; k < n_labels; k++)
            if (label_is (names[k], m->wire))
              text = labels[k];
          break;
        case IN_QUERY:
          text = emu_request_query (c->req, m->wire);
          break;
        case IN_HEADER:
          text = emu_request_header (c->req, m->wire);
          break;
        case IN_BODY:
          value = json_object_get (body, m->wire);
          if (json_is_null (value))
            value = NULL;
          break;
        }
      int rc = 0;
      if (text)
        rc = decode_text (c, m, text);
      else if (value)
        rc = decode_json (c, m, value);
      else if (m->required)
        rc = fail_member (c, m, NULL, "Member must not be null");
      if (rc < 0)
        return -1;
    }
  return 0;
}

/* ---- replies ---- */

void
emu_ebs_error_reply (struct emu_call *c, struct emu_response *resp)
{
  _cleanup_json_ json_t *body = json_pack ("{s:s}", "Message", c->error_message ? c->error_message : "");
  if (c->error_reason)
    json_object_set_new (body, "Reason", json_string (c->error_reason));
  _cleanup_free_ char *text = json_dumps (body, JSON_COMPACT);
  kiln_buf_reset (&resp->body);
  kiln_buf_puts (&resp->body, text);
  resp->status = c->error_status;
  free (resp->content_type);
  resp->content_type = kiln_xstrdup ("application/json");
  /* Headers a handler added before failing (a checksum) are not the error's. */
  kiln_sigv4_pairs_free (resp->headers, resp->n_headers);
  resp->headers = NULL;
  resp->n_headers = 0;
  emu_response_add_header (resp, "x-amzn-ErrorType", c->error_code);
}

void
emu_ebs_serve (struct emu_call *c, struct emu_response *resp)
{
  const struct route *route = NULL;
  char *labels[MAX_MEMBERS];
  const char *names[MAX_MEMBERS];
  size_t n_labels = 0;
  bool path_known = false;
  for (size_t i = 0; i < sizeof routes / sizeof routes[0] && route == NULL; i++)
    {
      if (!path_matches (routes[i].path, c->req->path, labels, names, &n_labels))
        continue;
      path_known = true;
      if (strcmp (routes[i].method, c->req->method) == 0)
        route = &routes[i];
      else
        {
          for (size_t k = 0; k < n_labels; k++)
            free (labels[k]);
          n_labels = 0;
        }
    }
  if (route == NULL)
    {
      if (path_known)
        ebs_fail (c, 405, "UnknownOperationException", NULL, "The EBS direct APIs have no operation for %s %s "
                  "(kiln-emulator serves StartSnapshot, PutSnapshotBlock, CompleteSnapshot, GetSnapshotBlock, "
                  "ListSnapshotBlocks and ListChangedBlocks).", c->req->method, c->req->path);
      else
        ebs_fail (c, 404, "UnknownOperationException", NULL, "The EBS direct APIs have no operation at %s %s "
                  "(kiln-emulator serves POST /snapshots, PUT|GET /snapshots/{id}/blocks/{index}, "
                  "POST /snapshots/completion/{id}, GET /snapshots/{id}/blocks and "
                  "GET /snapshots/{id}/changedblocks).", c->req->method, c->req->path);
      goto out;
    }
  c->operation = route->operation;
  ebs_handler_fn fn = find_handler (route->operation);
  if (fn == NULL)
    {
      ebs_fail (c, 501, "UnknownOperationException", NULL, "kiln-emulator does not implement %s.", route->operation);
      goto out;
    }
  c->input = json_object ();
  c->output = json_object ();
  if (decode_input (c, route, labels, names, n_labels) < 0)
    goto out;
  if (fn (c, resp) < 0 || c->error_code)
    {
      if (c->error_code == NULL)
        ebs_fail (c, 500, "InternalServerException", NULL, "%s failed without saying why", c->operation);
      goto out;
    }
  if (resp->content_type == NULL)
    {
      _cleanup_free_ char *text = json_dumps (c->output, JSON_COMPACT);
      kiln_buf_reset (&resp->body);
      kiln_buf_puts (&resp->body, text);
      resp->content_type = kiln_xstrdup ("application/json");
    }
  if (resp->status == 0)
    resp->status = route->status;

out:
  for (size_t k = 0; k < n_labels; k++)
    free (labels[k]);
  if (c->error_code)
    emu_ebs_error_reply (c, resp);
  json_decref (c->input);
  json_decref (c->output);
  c->input = c->output = NULL;
}
