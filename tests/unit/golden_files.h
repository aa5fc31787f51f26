/* golden_files.h - what the golden-file unit tests share: the cases in a
 * data folder, and showing a mismatch as TAP diagnostics.  Header-only, as
 * tap.h: every test is a program of its own. */
#ifndef KILN_TESTS_UNIT_GOLDEN_FILES_H
#define KILN_TESTS_UNIT_GOLDEN_FILES_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "process.h"
#include "xalloc.h"

static int
golden_compare_names (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

/* The names (without suffix) of the files in dir ending in suffix, sorted,
 * as a NULL-terminated vector (kiln_strv_free); NULL when dir cannot be
 * read. */
static inline char **
golden_stems (const char *dir, const char *suffix)
{
  DIR *d = opendir (dir);
  if (d == NULL)
    return NULL;
  char **names = kiln_xcalloc (1, sizeof *names);
  size_t m = strlen (suffix);
  struct dirent *e;
  while ((e = readdir (d)) != NULL)
    {
      size_t len = strlen (e->d_name);
      if (len > m && strcmp (e->d_name + len - m, suffix) == 0)
        {
          char *stem = kiln_xstrndup (e->d_name, len - m);
          kiln_strv_push (&names, stem);
          free (stem);
        }
    }
  closedir (d);
  size_t n = kiln_strv_length (names);
  if (n > 1)
    qsort (names, n, sizeof *names, golden_compare_names);
  return names;
}

/* text as "# " lines under a "# --- label:" line. */
static inline void
golden_print_lines (const char *label, const char *text)
{
  printf ("# --- %s:\n", label);
  for (const char *p = text; *p;)
    {
      size_t n = strcspn (p, "\n");
      printf ("#   %.*s\n", (int) n, p);
      p += n + (p[n] == '\n');
    }
}

static inline void
golden_print_diff (const char *got, const char *want)
{
  golden_print_lines ("got", got);
  golden_print_lines ("want", want);
}

#endif
