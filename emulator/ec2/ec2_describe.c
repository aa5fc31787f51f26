/* ec2_describe.c - the one Describe pipeline of EC2 (ec2.h): every
 * Describe* call is emu_describe run over a struct emu_describe_kind.
 *
 * Describe calls share one shape: ids (InstanceId.N ...), filters
 * (Filter.N.Name / Value.M), MaxResults / NextToken, an error naming the
 * ids that do not exist, and a set of items in the reply.  Running them all
 * here keeps that shape, and the order in which a request's errors are
 * found, the same across resources, so a new resource is a table entry and
 * an item writer.  The stages run in the order ec2.h lists; what differs
 * between resources (the ids' error codes, whether ids may be paged,
 * Owner.N and the like) is a field or a hook of the kind, never a copy of
 * the loop.
 *
 * A run reads its rows once and selects from them in memory: the tables
 * behind Describe calls are an account's resources in one region, small
 * enough that one query beats one per id, and the ids' existence checks
 * see the same rows the reply is made of. */
#include "ec2.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cleanup.h"
#include "store.h"
#include "xalloc.h"

size_t
emu_id_digits (const char *id, const char *prefix)
{
  size_t n = strlen (prefix);
  if (strncmp (id, prefix, n) != 0 || id[n] != '-')
    return 0;
  const char *hex = id + n + 1;
  size_t len = strspn (hex, "0123456789abcdef");
  return hex[len] == '\0' ? len : 0;
}

bool
emu_id_well_formed (const char *id, const char *prefix)
{
  size_t len = emu_id_digits (id, prefix);
  return len == 8 || len == 17;
}

/* Fails the call with e about the bad ids (n of them, joined). */
static int
fail_ids (struct emu_call *c, const struct emu_describe_error *e, const char *joined, size_t n)
{
  const char *text = n > 1 && e->many ? e->many : e->one;
  const char *at = strstr (text, "%s");
  if (at == NULL)
    return emu_fail (c, 400, e->code, "%s", text);
  return emu_fail (c, 400, e->code, "%.*s%s%s", (int) (at - text), text, joined, at + 2);
}

/* Collects the bad ids of one list as e reports them; *n counts them.
 * bad(i) says whether ids[i] is bad.  Returns true when the collection is
 * complete (e reports the first only and one was found). */
struct bad_ids {
  struct kiln_buf joined;
  size_t n;
};

static bool
bad_ids_add (struct bad_ids *b, const struct emu_describe_error *e, const char *const *ids, size_t i)
{
  if (e->report == EMU_REPORT_EACH_ONCE)
    for (size_t k = 0; k < i; k++)
      if (strcmp (ids[k], ids[i]) == 0)
        return false;
  kiln_buf_printf (&b->joined, "%s%s", b->n++ ? ", " : "", ids[i]);
  return e->report == EMU_REPORT_FIRST;
}

static int
bad_ids_fail (struct emu_call *c, const struct emu_describe_error *e, struct bad_ids *b)
{
  int r = b->n ? fail_ids (c, e, kiln_buf_str (&b->joined), b->n) : 0;
  kiln_buf_release (&b->joined);
  return r;
}

static bool
row_named (json_t *rows, const char *column, const char *id)
{
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    if (strcmp (emu_row_str (row, column), id) == 0)
      return true;
  return false;
}

int
emu_describe_ids_found (struct emu_call *c, const struct emu_describe_error *e, json_t *rows, const char *column,
                        const char *const *ids, size_t n)
{
  struct bad_ids b = {KILN_BUF_INIT, 0};
  for (size_t i = 0; i < n; i++)
    if (!row_named (rows, column, ids[i]) && bad_ids_add (&b, e, ids, i))
      break;
  return bad_ids_fail (c, e, &b);
}

static int
ids_well_formed (struct emu_call *c, const struct emu_describe_ids *p, const char *const *ids, size_t n)
{
  if (p->malformed.code == NULL)
    return 0;
  struct bad_ids b = {KILN_BUF_INIT, 0};
  for (size_t i = 0; i < n; i++)
    {
      bool ok = p->valid ? p->valid (c, p, ids[i]) : p->prefix == NULL || emu_id_well_formed (ids[i], p->prefix);
      if (!ok && bad_ids_add (&b, &p->malformed, ids, i))
        break;
    }
  return bad_ids_fail (c, &p->malformed, &b);
}

static void
describe_call_release (struct emu_describe_call *d)
{
  for (size_t i = 0; i < EMU_DESCRIBE_ID_LISTS; i++)
    free (d->ids[i]);
  emu_filters_release (&d->filters);
  json_decref (d->tags);
  json_decref (d->options);
}

static int
parse_filters (struct emu_call *c, struct emu_describe_call *d)
{
  const struct emu_describe_kind *k = d->kind;
  return emu_filters_parse_named (c, k->filter_param ? k->filter_param : "Filter", k->filter_names, &d->filters);
}

static size_t
ids_asked (const struct emu_describe_call *d)
{
  size_t n = 0;
  for (size_t i = 0; i < EMU_DESCRIBE_ID_LISTS; i++)
    n += d->n_ids[i];
  return n;
}

/* Whether the row is one the ids name (every row when there are none). */
static bool
named_by_ids (const struct emu_describe_call *d, json_t *row)
{
  if (ids_asked (d) == 0)
    return true;
  for (size_t i = 0; i < EMU_DESCRIBE_ID_LISTS; i++)
    if (d->n_ids[i] && emu_list_contains (d->ids[i], d->n_ids[i], emu_row_str (row, d->kind->ids[i].column)))
      return true;
  return false;
}

/* The rows the ids, keep and the filters select, in the rows' order. */
static json_t *
select_rows (struct emu_call *c, struct emu_describe_call *d, json_t *rows)
{
  const struct emu_describe_kind *k = d->kind;
  const char *tags_column = k->tags_column ? k->tags_column : "id";
  _cleanup_json_ json_t *no_tags = json_object ();
  json_t *selected = json_array ();
  size_t i;
  json_t *row;
  json_array_foreach (rows, i, row)
    {
      if (!named_by_ids (d, row) || (k->keep && !k->keep (c, d, row)))
        continue;
      if (d->filters.n > 0)
        {
          json_t *tags = json_object_get (d->tags, emu_row_str (row, tags_column));
          _cleanup_json_ json_t *fields = k->fields (c, row);
          if (!emu_filters_match (&d->filters, fields, tags ? tags : no_tags))
            continue;
        }
      json_array_append (selected, row);
    }
  return selected;
}

static void
write_item (struct emu_call *c, const struct emu_describe_call *d, json_t *row, json_t *no_tags)
{
  const struct emu_describe_kind *k = d->kind;
  json_t *tags = json_object_get (d->tags, emu_row_str (row, k->tags_column ? k->tags_column : "id"));
  emu_xml_start (c, "item");
  for (const struct emu_describe_text *t = k->texts; t && t->element; t++)
    emu_xml_text (c, t->element, emu_row_str (row, t->column));
  if (k->write)
    k->write (c, row, tags ? tags : no_tags);
  emu_xml_end (c);
}

/* rows[start, end) as the kind's set: items, or groups of items. */
static void
write_set (struct emu_call *c, const struct emu_describe_call *d, json_t *rows, size_t start, size_t end)
{
  const struct emu_describe_kind *k = d->kind;
  _cleanup_json_ json_t *no_tags = json_object ();
  emu_xml_start (c, k->set);
  if (k->group_column == NULL)
    for (size_t i = start; i < end; i++)
      write_item (c, d, json_array_get (rows, i), no_tags);
  else
    {
      _cleanup_json_ json_t *done = json_object ();
      for (size_t i = start; i < end; i++)
        {
          json_t *first = json_array_get (rows, i);
          const char *group = emu_row_str (first, k->group_column);
          if (json_object_get (done, group))
            continue;
          json_object_set_new (done, group, json_true ());
          emu_xml_start (c, "item");
          k->group_head (c, first);
          emu_xml_start (c, k->group_set);
          for (size_t m = i; m < end; m++)
            if (strcmp (emu_row_str (json_array_get (rows, m), k->group_column), group) == 0)
              write_item (c, d, json_array_get (rows, m), no_tags);
          emu_xml_end (c);
          emu_xml_end (c);
        }
    }
  emu_xml_end (c);
}

int
emu_describe (struct emu_call *c, const struct emu_describe_kind *k)
{
  __attribute__ ((cleanup (describe_call_release))) struct emu_describe_call d = {.kind = k};
  d.options = json_object ();
  for (size_t i = 0; i < EMU_DESCRIBE_ID_LISTS; i++)
    if (k->ids[i].param)
      d.ids[i] = emu_param_list (c, k->ids[i].param, &d.n_ids[i]);

  if (k->filters_first && parse_filters (c, &d) < 0)
    return -1;
  if (k->read && k->read (c, &d) < 0)
    return -1;
  if (k->ids_exclude_paging && d.n_ids[0] && emu_param (c, "MaxResults"))
    return emu_fail (c, 400, "InvalidParameterCombination", "The parameter %s cannot be used with the parameter "
                     "maxResults", k->ids_exclude_paging);
  for (size_t i = 0; i < EMU_DESCRIBE_ID_LISTS; i++)
    if (ids_well_formed (c, &k->ids[i], d.ids[i], d.n_ids[i]) < 0)
      return -1;
  if (k->check && k->check (c, &d) < 0)
    return -1;
  if (!k->filters_first && parse_filters (c, &d) < 0)
    return -1;

  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_json_ json_t *rows = k->rows ? k->rows (c, &d, &err)
                                        : emu_db_query (c->emu, &err, k->query, c->account, c->region);
  if (rows == NULL)
    return emu_fail_internal (c, err);
  for (size_t i = 0; i < EMU_DESCRIBE_ID_LISTS; i++)
    if (k->ids[i].not_found.code
        && emu_describe_ids_found (c, &k->ids[i].not_found, rows, k->ids[i].column, d.ids[i], d.n_ids[i]) < 0)
      return -1;
  if (d.tags == NULL && !k->untagged && (d.tags = emu_tags_all (c)) == NULL)
    return -1;

  _cleanup_json_ json_t *selected = select_rows (c, &d, rows);
  size_t start = 0, count = json_array_size (selected);
  _cleanup_free_ char *next_token = NULL;
  if (k->page_min > 0 && emu_page (c, count, k->page_min, &start, &count, &next_token) < 0)
    return -1;
  write_set (c, &d, selected, start, start + count);
  if (k->page_min > 0)
    emu_xml_text (c, "nextToken", next_token);
  return 0;
}
