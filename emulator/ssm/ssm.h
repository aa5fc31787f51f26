/* ssm.h - the SSM service of kiln-emulator (awsJson1_1): ssm_protocol.c
 * finds the operation X-Amz-Target names in the tables of ssm_commands.c
 * (Run Command; ssm_run.c runs the invocations in guests, on the
 * instances' job queues) and
 * ssm_parameters.c (Parameter Store). */
#ifndef KILN_EMULATOR_SSM_H
#define KILN_EMULATOR_SSM_H

#include "emulator.h"

extern const struct emu_operation emu_ssm_command_ops[];
extern const struct emu_operation emu_ssm_parameter_ops[];

/* The operation named by X-Amz-Target, its JSON reply into resp; the error
 * recorded on c (emu_fail) as {"__type", "message"}. */
void emu_ssm_serve (struct emu_call *c, struct emu_response *resp);
void emu_ssm_error_reply (struct emu_call *c, struct emu_response *resp);

/* ---- invocations run in guests (ssm_run.c) ---- */

/* Queues the invocation (command_id, instance_id), which is Pending, on the
 * instance's job queue. */
void ssm_run_queue (struct kiln_emu *emu, const char *command_id, const char *instance_id);
/* Stops the invocation if it is running (a queued one is skipped when its
 * turn comes, since its status is no longer Pending). */
void ssm_run_cancel (struct kiln_emu *emu, const char *command_id, const char *instance_id);
/* SSM's instance_ended slot: the instance's Pending and Delayed
 * invocations fail as Undeliverable. */
void ssm_instance_ended (struct kiln_emu *emu, const char *instance_id);
/* SSM's start slot: invocations under way when the emulator stopped fail;
 * Pending ones are queued again. */
int ssm_start (struct kiln_emu *emu, kiln_error **err);

#endif
