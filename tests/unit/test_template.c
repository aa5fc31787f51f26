/* test_template.c - expression parsing and expansion (builder/template.c). */
#include <stdio.h>
#include <string.h>

#include "cleanup.h"
#include "template.h"
#include "tap.h"

static int
resolve (void *opaque, const struct kiln_ref *ref, struct kiln_buf *out, kiln_error **err)
{
  (void) opaque;
  switch (ref->kind)
    {
    case KILN_REF_VARIABLE:
      if (strcmp (ref->name, "Missing") == 0)
        return kiln_fail_invalid (err, "unknown variable '%s'", ref->name);
      kiln_buf_printf (out, "<var %s>", ref->name);
      return 0;
    case KILN_REF_LOOP:
      kiln_buf_printf (out, "<loop %s %s>", ref->name, ref->field);
      return 0;
    case KILN_REF_CHAIN:
      kiln_buf_printf (out, "<chain %s %s %s %ld %s>", ref->name, ref->step, ref->outputs ? "out" : "in", ref->index,
                       ref->field);
      return 0;
    }
  return -1;
}

static void
expect_expand (const char *in, const char *want)
{
  struct kiln_buf b = KILN_BUF_INIT;
  _cleanup_error_ kiln_error *e = NULL;
  int r = kiln_template_expand (in, resolve, NULL, &b, &e);
  char name[256];
  snprintf (name, sizeof name, "expand '%s'", in);
  tap_ok (r == 0 && strcmp (kiln_buf_str (&b), want) == 0, "%s", name);
  if (r == 0 && strcmp (kiln_buf_str (&b), want) != 0)
    printf ("  # got '%s'\n", kiln_buf_str (&b));
  if (r < 0)
    printf ("  # error: %s\n", kiln_error_message (e));
  kiln_buf_release (&b);
}

static void
expect_error (const char *in, const char *want_fragment)
{
  struct kiln_buf b = KILN_BUF_INIT;
  _cleanup_error_ kiln_error *e = NULL;
  int r = kiln_template_expand (in, resolve, NULL, &b, &e);
  char name[256];
  snprintf (name, sizeof name, "reject '%s'", in);
  tap_ok (r < 0 && strstr (kiln_error_message (e), want_fragment) != NULL, "%s", name);
  if (r == 0 || strstr (kiln_error_message (e), want_fragment) == NULL)
    printf ("  # got: %s\n", r < 0 ? kiln_error_message (e) : kiln_buf_str (&b));
  kiln_buf_release (&b);
}

int
main (void)
{
  printf ("TAP version 13\n");
  expect_expand ("plain text", "plain text");
  expect_expand ("", "");
  expect_expand ("{{Name}}", "<var Name>");
  expect_expand ("a {{  Name  }} b", "a <var Name> b");
  expect_expand ("{{ loop.index }}/{{ loop.value }}", "<loop loop index>/<loop loop value>");
  expect_expand ("{{ myLoop.value }}", "<loop myLoop value>");
  expect_expand ("{{ build.Step-1.outputs.stdout }}", "<chain build Step-1 out -1 stdout>");
  expect_expand ("{{ build.Dl.inputs[2].destination }}", "<chain build Dl in 2 destination>");
  expect_expand ("x }} y", "x }} y");
  expect_expand ("{{a}}{{b}}", "<var a><var b>");
  expect_error ("{{ Missing }}", "unknown variable 'Missing'");
  expect_error ("echo {{ Name", "unterminated '{{'");
  expect_error ("{{ }}", "empty expression");
  expect_error ("{{ a..b }}", "bad expression 'a..b'");
  expect_error ("{{ a.b.c }}", "bad expression");
  expect_error ("{{ a.b }}", "ends in .index or .value");
  expect_error ("{{ build.S.result.x }}", "expected phase.step.inputs.name");
  expect_error ("{{ build.S.inputs[x].y }}", "bad index");
  expect_error ("{{ build[0].S.inputs.y }}", "an index may only follow");
  expect_error ("{{ .Id }}", "bad expression");
  expect_error ("{{ a.b.c.d.e }}", "too many parts");
  tap_ok (kiln_template_has_expression ("a {{ b }}"), "has expression");
  tap_ok (!kiln_template_has_expression ("a { b }"), "has no expression");
  return tap_done ();
}
