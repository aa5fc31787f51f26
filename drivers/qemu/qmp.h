/* qmp.h - a QMP client (QEMU Machine Protocol) over a unix socket, and the
 * line channel it shares with the guest agent client (qga.h).
 *
 * QEMU speaks JSON objects, one per line, on a socket it listens on.  The
 * channel connects (retrying while QEMU has not yet created the socket),
 * sends with a deadline, and hands back whole lines however the reads were
 * split.  Every wait has a deadline: a QEMU that stops answering gives
 * KILN_ERR_TIMEOUT, never a hang.
 *
 * QMP on top: read the greeting, negotiate with qmp_capabilities, then
 * execute commands.  Each command carries an "id" and only the reply with
 * that id is taken, so a late reply to an earlier command that timed out is
 * skipped.  Asynchronous events ({"event": ...}) that arrive meanwhile are
 * kept in arrival order (the most recent KILN_QMP_MAX_EVENTS) for
 * kiln_qmp_wait_event(), which is how a caller learns of a guest's RESET or
 * SHUTDOWN. */
#ifndef KILN_DRIVERS_QEMU_QMP_H
#define KILN_DRIVERS_QEMU_QMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "buf.h"
#include "error.h"

/* --- the line channel ----------------------------------------------------- */

/* A line longer than this is refused (a guest-exec-status carrying 16 MiB of
 * output twice over, base64-encoded, still fits). */
#define KILN_QEMU_CHAN_MAX_LINE (64u * 1024 * 1024)

struct kiln_qemu_chan {
  int fd;              /* -1 when closed */
  char *peer;          /* "QMP", "guest agent": for messages */
  struct kiln_buf in;  /* received bytes; those before `start` are consumed */
  size_t start;
};

/* Deadlines below are on kiln_monotonic_ms's clock (clock.h).
 * now + timeout_ms, or 0 (no deadline) when timeout_ms < 0. */
int64_t kiln_qemu_deadline (int timeout_ms);

/* Connects to the unix socket at path, retrying while it is missing or
 * refuses connections, until timeout_ms has passed. */
int kiln_qemu_chan_connect (struct kiln_qemu_chan *c, const char *path, const char *peer, int timeout_ms,
                            kiln_error **err);
/* Adopts an already connected socket (tests use a socketpair). */
void kiln_qemu_chan_adopt (struct kiln_qemu_chan *c, int fd, const char *peer);
int kiln_qemu_chan_send (struct kiln_qemu_chan *c, const void *data, size_t len, int64_t deadline, kiln_error **err);
/* Sends the object as one line. */
int kiln_qemu_chan_send_json (struct kiln_qemu_chan *c, json_t *msg, int64_t deadline, kiln_error **err);
/* The next complete line, without its "\r\n"/"\n", valid until the next call.
 * Fails with KILN_ERR_TIMEOUT at the deadline, KILN_ERR_IO when the peer
 * closes the connection. */
int kiln_qemu_chan_read_line (struct kiln_qemu_chan *c, int64_t deadline, char **line, size_t *len,
                              kiln_error **err);
void kiln_qemu_chan_close (struct kiln_qemu_chan *c);

/* --- QMP ------------------------------------------------------------------ */

#define KILN_QMP_MAX_EVENTS 256

struct kiln_qmp;

/* Connects (see kiln_qemu_chan_connect), reads the greeting and leaves
 * capabilities negotiation, all within timeout_ms. */
int kiln_qmp_connect (const char *socket_path, int timeout_ms, struct kiln_qmp **out, kiln_error **err);
/* The same over an already connected socket; takes fd. */
int kiln_qmp_open_fd (int fd, int timeout_ms, struct kiln_qmp **out, kiln_error **err);

/* Runs command with arguments (borrowed; NULL for none).  On success *ret
 * (when ret is non-NULL) holds the "return" value, a new reference.  An error
 * reply gives KILN_ERR_REMOTE "QMP command 'X' failed: CLASS: desc". */
int kiln_qmp_execute (struct kiln_qmp *q, const char *command, json_t *arguments, json_t **ret, int timeout_ms,
                      kiln_error **err);

/* Waits for the event named name: the earliest one already received, else
 * the next to arrive.  It and the events received before it are removed from
 * the queue.  *event (when non-NULL) gets the whole event object. */
int kiln_qmp_wait_event (struct kiln_qmp *q, const char *name, int timeout_ms, json_t **event, kiln_error **err);
/* Forgets the events received so far (before starting what will cause the
 * one to wait for). */
void kiln_qmp_clear_events (struct kiln_qmp *q);
/* The queued events (borrowed array). */
json_t *kiln_qmp_events (struct kiln_qmp *q);
/* The greeting's "QMP" object (borrowed). */
json_t *kiln_qmp_greeting (struct kiln_qmp *q);

void kiln_qmp_close (struct kiln_qmp *q);

#endif
