/* server.h - kiln-emulator's HTTP listener (libmicrohttpd, a thread pool).
 *
 * Every request is read whole (bodies over EMU_MAX_BODY are refused with 413
 * without being stored) -- except S3 object data, streamed to a file as it
 * arrives (s3.h) -- turned into a struct emu_request with its raw query
 * decoded the way SigV4 wants it, and answered by kiln_emu_handle(). */
#ifndef KILN_EMULATOR_SERVER_H
#define KILN_EMULATOR_SERVER_H

#include "emulator.h"

struct emu_server;

/* Listens on listen ("HOST:PORT"; port 0 picks a free one) with threads
 * worker threads.  *url is "http://HOST:PORT" with the port bound
 * (malloc'd). */
int emu_server_start (struct kiln_emu *emu, const char *listen, unsigned threads, struct emu_server **out,
                      char **url, kiln_error **err);
/* Stops accepting, finishes requests under way, frees.  Safe on NULL. */
void emu_server_stop (struct emu_server *s);

#endif
