/* dispatch.h - a request in, a response out: kiln-emulator as a function
 * (dispatch.c), and the start and stop of what runs beside requests.
 * server.c calls it for every request; tests call it directly with a fixed
 * clock. */
#ifndef KILN_EMULATOR_DISPATCH_H
#define KILN_EMULATOR_DISPATCH_H

#include "emulator.h"

/* The whole emulator: never fails, every problem is an AWS-shaped error
 * response.  Thread-safe.  For a req->head_only request it only
 * authenticates: resp->status stays 0 when the body may come, else resp is
 * the refusal to send at once. */
void kiln_emu_handle (struct kiln_emu *emu, const struct emu_request *req, struct emu_response *resp);

/* Starts what runs beside requests, once the store is open: the VM host
 * (its job runner, instances an earlier run left booted or ended again),
 * then every service's start slot (services.h).  emu_stop stops the guests
 * and the workers (disks kept); safe after a failed or no emu_start. */
int emu_start (struct kiln_emu *emu, kiln_error **err);
void emu_stop (struct kiln_emu *emu);

#endif
