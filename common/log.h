/* log.h - leveled diagnostics on stderr.
 *
 * kiln prints progress and results itself; this is for what a user reads when
 * something goes wrong or when they ask for more (`-v`, KILN_LOG=debug).
 * Messages are single lines prefixed "kiln: <level>: ". */
#ifndef KILN_COMMON_LOG_H
#define KILN_COMMON_LOG_H

enum kiln_log_level {
  KILN_LOG_ERROR = 0,
  KILN_LOG_WARN,
  KILN_LOG_INFO,
  KILN_LOG_DEBUG,
};

void kiln_log_set_level (enum kiln_log_level level);
enum kiln_log_level kiln_log_get_level (void);
/* Parses "error", "warn", "info", "debug"; returns -1 for anything else. */
int kiln_log_level_parse (const char *name);
/* Applies KILN_LOG from the environment when it names a level. */
void kiln_log_init_from_env (void);

void kiln_log (enum kiln_log_level level, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

#define kiln_log_error(...) kiln_log (KILN_LOG_ERROR, __VA_ARGS__)
#define kiln_log_warn(...) kiln_log (KILN_LOG_WARN, __VA_ARGS__)
#define kiln_log_info(...) kiln_log (KILN_LOG_INFO, __VA_ARGS__)
#define kiln_log_debug(...) kiln_log (KILN_LOG_DEBUG, __VA_ARGS__)

#endif
