/* ssm.h - the SSM service of kiln-emulator (awsJson1_1): ssm_protocol.c
 * finds the operation X-Amz-Target names in the tables of ssm_commands.c
 * (Run Command: the commands run in guests through the VM host) and
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

#endif
