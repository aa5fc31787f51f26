/* test_yaml_tree.c - the positioned YAML loader (common/yaml_tree.c). */
#include <stdio.h>
#include <string.h>

#include "cleanup.h"
#include "yaml_tree.h"
#include "tap.h"

static int
load (const char *text, struct kiln_yaml_doc **doc, kiln_error **err)
{
  return kiln_yaml_load_string ("t.yml", text, strlen (text), doc, err);
}

static void
expect_error (const char *name, const char *text, const char *want)
{
  struct kiln_yaml_doc *doc = NULL;
  _cleanup_error_ kiln_error *e = NULL;
  int r = load (text, &doc, &e);
  tap_ok (r < 0 && strstr (kiln_error_message (e), want) != NULL, "%s", name);
  if (r == 0 || strstr (kiln_error_message (e), want) == NULL)
    printf ("  # got: %s\n", r < 0 ? kiln_error_message (e) : "success");
  kiln_yaml_doc_free (doc);
}

int
main (void)
{
  printf ("TAP version 13\n");
  {
    struct kiln_yaml_doc *doc = NULL;
    _cleanup_error_ kiln_error *e = NULL;
    int r = load ("a: 1\nlist:\n  - x\n  - 'y z'\nmap: {k: v}\n", &doc, &e);
    tap_ok (r == 0 && doc->root && doc->root->kind == KILN_YAML_MAPPING, "loads a mapping");
    const struct kiln_yaml_node *list = kiln_yaml_map_get (doc->root, "list");
    tap_ok (list && list->kind == KILN_YAML_SEQUENCE && list->n_items == 2, "sequence items");
    tap_ok (list && list->line == 3 && list->column == 3, "sequence position 3:3");
    tap_ok (list && list->items[1]->line == 4 && list->items[1]->column == 5 && !list->items[1]->plain,
            "quoted scalar position 4:5 and style");
    const struct kiln_yaml_node *a = kiln_yaml_map_get (doc->root, "a");
    long l = 0;
    tap_ok (a && a->plain && kiln_yaml_as_long (a, &l) == 0 && l == 1, "integer scalar");
    const struct kiln_yaml_node *map = kiln_yaml_map_get (doc->root, "map");
    tap_ok (map && strcmp (kiln_yaml_map_get (map, "k")->value, "v") == 0 && map->line == 5 && map->column == 6,
            "flow mapping at 5:6");
    struct kiln_yaml_node *key = kiln_yaml_map_key_of (doc->root, list);
    tap_ok (key && key->line == 2 && key->column == 1, "key position 2:1");
    kiln_yaml_doc_free (doc);
  }
  {
    struct kiln_yaml_doc *doc = NULL;
    _cleanup_error_ kiln_error *e = NULL;
    tap_ok (load ("", &doc, &e) == 0 && doc->root == NULL, "empty stream has no root");
    kiln_yaml_doc_free (doc);
  }
  {
    struct kiln_yaml_doc *doc = NULL;
    _cleanup_error_ kiln_error *e = NULL;
    int r = load ("base: &b {x: 1}\nuse: *b\n", &doc, &e);
    tap_ok (r == 0 && kiln_yaml_map_get (doc->root, "use") == kiln_yaml_map_get (doc->root, "base"),
            "alias resolves to its anchor");
    kiln_yaml_doc_free (doc);
  }
  {
    struct kiln_yaml_doc *doc = NULL;
    _cleanup_error_ kiln_error *e = NULL;
    bool b = false;
    load ("t: true\nf: 'true'\nn: ~\n", &doc, &e);
    tap_ok (kiln_yaml_as_bool (kiln_yaml_map_get (doc->root, "t"), &b) == 0 && b, "plain true is a bool");
    tap_ok (kiln_yaml_as_bool (kiln_yaml_map_get (doc->root, "f"), &b) < 0, "quoted 'true' is a string");
    tap_ok (kiln_yaml_is_null (kiln_yaml_map_get (doc->root, "n")), "~ is null");
    kiln_yaml_doc_free (doc);
  }
  expect_error ("duplicate key", "a: 1\nb: 2\na: 3\n", "t.yml:3:1: duplicate key 'a' (first at line 1)");
  expect_error ("unknown alias", "a: *nope\n", "t.yml:1:4: unknown alias '*nope'");
  expect_error ("syntax error has a position", "a: [1, 2\n", "t.yml:2:1:");
  expect_error ("tab indentation", "a:\n\t- b\n", "t.yml:2:1:");
  expect_error ("two documents", "a: 1\n---\nb: 2\n", "t.yml:2:1: only one YAML document");
  expect_error ("complex key", "? [a]\n: b\n", "mapping keys must be scalars");
  expect_error ("alias bomb",
                "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
                "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
                "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n",
                "expands to more than");
  {
    /* Deep nesting is refused before the stack is. */
    char deep[4096];
    size_t n = 0;
    for (int i = 0; i < 1000; i++)
      deep[n++] = '[';
    deep[n] = '\0';
    expect_error ("deep nesting", deep, "nesting deeper than");
  }
  return tap_done ();
}
