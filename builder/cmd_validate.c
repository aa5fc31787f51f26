/* cmd_validate.c - `kiln validate FILE...`: full validation of component
 * documents without running anything.  Each error is one line
 * "FILE:LINE:COL: message" on stderr; the status is 1 when any document is
 * invalid. */
#include <stdio.h>
#include <string.h>

#include "cleanup.h"
#include "cli.h"
#include "component.h"

int
kiln_cmd_validate (int argc, char **argv)
{
  if (argc < 2 || strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0)
    {
      fputs ("usage: kiln validate FILE...\n", argc < 2 ? stderr : stdout);
      return argc < 2 ? KILN_EXIT_USAGE : KILN_EXIT_OK;
    }
  int status = KILN_EXIT_OK;
  for (int i = 1; i < argc; i++)
    {
      struct kiln_component *c = NULL;
      _cleanup_error_ kiln_error *e = NULL;
      if (kiln_component_load (argv[i], NULL, &c, &e) < 0)
        {
          fprintf (stderr, "%s\n", kiln_error_message (e));
          status = KILN_EXIT_FAILED;
          continue;
        }
      printf ("%s: valid\n", argv[i]);
      kiln_component_free (c);
    }
  return status;
}
