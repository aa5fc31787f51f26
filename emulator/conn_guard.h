/* conn_guard.h - keeping slow clients from holding kiln-emulator's
 * connections (slowloris).
 *
 * libmicrohttpd's own timeout is an inactivity timeout: a client sending one
 * header byte a second keeps a connection forever, and 1,100 such clients
 * once left one request in twelve any room.  The guard tracks every
 * connection's state and cuts (shutdown(2): libmicrohttpd then closes it as
 * a connection the peer ended) those that take too long to send a request's
 * head:
 *   - a new connection has header_deadline_ms from connect to its last
 *     header line;
 *   - a keep-alive connection may stay idle idle_deadline_ms between
 *     requests, then has header_deadline_ms from its request line;
 *   - at most max_waiting connections wait for a head at once: a new one
 *     beyond that cuts the one that has waited longest, so requests that
 *     complete always find room.
 * A request whose head has arrived is no longer the guard's: its body and
 * reply have libmicrohttpd's timeout.  One thread checks the deadlines twice
 * a second.  Every call is thread-safe. */
#ifndef KILN_EMULATOR_CONN_GUARD_H
#define KILN_EMULATOR_CONN_GUARD_H

#include <stdint.h>

struct emu_conn_guard;
struct emu_conn;

struct emu_conn_limits {
  int64_t header_deadline_ms;
  int64_t idle_deadline_ms;
  unsigned max_waiting;
};

/* Starts the guard's thread; NULL if it could not be started. */
struct emu_conn_guard *emu_conn_guard_new (const struct emu_conn_limits *limits);
/* Stops the thread and forgets every connection (none is cut). */
void emu_conn_guard_free (struct emu_conn_guard *g);

/* A connection was accepted on fd; the handle goes back in the calls below
 * until emu_conn_closed, which must come before fd is closed. */
struct emu_conn *emu_conn_opened (struct emu_conn_guard *g, int fd);
void emu_conn_closed (struct emu_conn_guard *g, struct emu_conn *c);
/* A request line arrived (the head's deadline starts on a kept-alive
 * connection), the whole head arrived, the request was answered. */
void emu_conn_request_line (struct emu_conn_guard *g, struct emu_conn *c);
void emu_conn_head_done (struct emu_conn_guard *g, struct emu_conn *c);
void emu_conn_request_done (struct emu_conn_guard *g, struct emu_conn *c);

/* Connections cut so far (for logs and tests). */
uint64_t emu_conn_guard_cut_count (struct emu_conn_guard *g);

#endif
