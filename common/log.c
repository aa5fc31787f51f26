/* log.c - leveled diagnostics on stderr (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static enum kiln_log_level current_level = KILN_LOG_WARN;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void
kiln_log_set_level (enum kiln_log_level level)
{
  current_level = level;
}

enum kiln_log_level
kiln_log_get_level (void)
{
  return current_level;
}

int
kiln_log_level_parse (const char *name)
{
  for (int i = 0; i < (int) (sizeof level_names / sizeof level_names[0]); i++)
    if (strcmp (name, level_names[i]) == 0)
      return i;
  return -1;
}

void
kiln_log_init_from_env (void)
{
  const char *v = getenv ("KILN_LOG");
  if (v && *v)
    {
      int l = kiln_log_level_parse (v);
      if (l >= 0)
        current_level = (enum kiln_log_level) l;
    }
}

void
kiln_log (enum kiln_log_level level, const char *fmt, ...)
{
  if (level > current_level)
    return;
  /* One write per message so lines from threads do not interleave. */
  char line[4096];
  int n = snprintf (line, sizeof line, "kiln: %s: ", level_names[level]);
  va_list ap;
  va_start (ap, fmt);
  int m = vsnprintf (line + n, sizeof line - (size_t) n - 1, fmt, ap);
  va_end (ap);
  size_t len = (size_t) n + (m < 0 ? 0 : (size_t) m);
  if (len > sizeof line - 2)
    len = sizeof line - 2;
  line[len++] = '\n';
  fwrite (line, 1, len, stderr);
}
