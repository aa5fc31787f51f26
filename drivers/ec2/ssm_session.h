/* ssm_session.h - the executor's target operations on an EC2 instance,
 * carried by SSM Run Command (AWS-RunShellScript).
 *
 * No SSH and no open port: every operation is a SendCommand to the instance
 * and GetCommandInvocation polling (with backoff) until it ends.  SSM shows
 * at most 24,000 characters of a command's output, so nothing here relies on
 * that view for data: a command's stdout and stderr go to files on the
 * instance and come back in base64 chunks that fit, and files move in and out
 * the same way (chunks within SendCommand's parameter size).  Used by the
 * EC2 driver (driver_ec2.c); works against AWS and kiln-emulator alike. */
#ifndef KILN_DRIVERS_EC2_SSM_SESSION_H
#define KILN_DRIVERS_EC2_SSM_SESSION_H

#include <signal.h>
#include <stdbool.h>

#include "aws_client.h"
#include "buf.h"
#include "error.h"
#include "target.h"

struct kiln_ssm_session {
  struct kiln_aws_client *ssm;     /* borrowed */
  const char *instance_id;         /* borrowed */
  volatile sig_atomic_t *cancel;   /* raised: stop waiting, cancel the command, KILN_ERR_CANCELLED */
  /* Directory on the instance for the session's scratch files; NULL: /tmp. */
  const char *scratch_dir;
  /* GetCommandInvocation polling: first pause and cap, in milliseconds
   * (0: 200 and 2000). */
  int poll_initial_ms;
  int poll_max_ms;
};

/* One AWS-RunShellScript command: script runs under /bin/sh in cwd (NULL:
 * the agent's default) for at most timeout_seconds (<= 0: 3600).  *out gets
 * what GetCommandInvocation shows of stdout (at most 24,000 characters: for
 * small, known output only), *exit_code the ResponseCode.  Returns -1 when
 * the command could not be sent or did not end (delivery failure, timeout,
 * cancellation), with the invocation's status and stderr in the message. */
int kiln_ssm_shell (struct kiln_ssm_session *s, const char *script, const char *cwd, int timeout_seconds,
                    struct kiln_buf *out, int *exit_code, kiln_error **err);

/* The target operations (drivers/target.h semantics): run gives the full
 * stdout and stderr whatever their size, and res->timed_out when the
 * command's own timeout passed. */
int kiln_ssm_run (struct kiln_ssm_session *s, const struct kiln_target_command *cmd, struct kiln_target_result *res,
                  kiln_error **err);
int kiln_ssm_put_file (struct kiln_ssm_session *s, const char *local_path, const char *path, mode_t mode,
                       kiln_error **err);
int kiln_ssm_get_file (struct kiln_ssm_session *s, const char *path, const char *local_path, kiln_error **err);
int kiln_ssm_stat (struct kiln_ssm_session *s, const char *path, struct kiln_target_stat *st, kiln_error **err);

/* Shell-quotes s for /bin/sh (single quotes), malloc'd. */
char *kiln_shell_quote (const char *s);

#endif
