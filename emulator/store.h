/* store.h - kiln-emulator's state: one SQLite database.
 *
 * With a state directory the database is STATE_DIR/emulator.db in WAL mode
 * with synchronous=FULL, so a change a client saw acknowledged survives a
 * crash or restart (relaxed transactions, below, survive the process being
 * killed but not a power loss until the next ordinary commit), and
 * `kiln-emulator import-image` may write to it while the server runs (busy
 * timeout).  Without one it lives in memory.
 *
 * One connection, serialized by emu->db_lock (recursive, so a handler can
 * hold it across a transaction made of several calls).  Every value is bound
 * as text or NULL; SQLite's column affinity stores numbers as numbers.  Rows
 * come back as a JSON array of objects, column name -> its text (numbers
 * as SQLite formats them) or null. */
#ifndef KILN_EMULATOR_STORE_H
#define KILN_EMULATOR_STORE_H

#include <jansson.h>

#include "emulator.h"

int emu_store_open (struct kiln_emu *emu, kiln_error **err);
void emu_store_close (struct kiln_emu *emu);

/* Runs sql with args[0..n) bound to its '?'s (NULL binds SQL NULL).  Returns
 * the number of rows changed, or -1. */
int emu_db_exec_args (struct kiln_emu *emu, kiln_error **err, const char *sql, size_t n, const char *const *args);
/* The rows sql returns, or NULL on error. */
json_t *emu_db_query_args (struct kiln_emu *emu, kiln_error **err, const char *sql, size_t n,
                           const char *const *args);

#define EMU_DB_ARGS(...) (sizeof ((const char *[]){__VA_ARGS__}) / sizeof (const char *)), (const char *[]){__VA_ARGS__}
/* emu_db_exec (emu, &err, "UPDATE t SET a = ? WHERE id = ?", a, id) */
#define emu_db_exec(emu, err, sql, ...) emu_db_exec_args ((emu), (err), (sql), EMU_DB_ARGS (__VA_ARGS__))
#define emu_db_query(emu, err, sql, ...) emu_db_query_args ((emu), (err), (sql), EMU_DB_ARGS (__VA_ARGS__))
/* For statements without parameters. */
#define emu_db_exec0(emu, err, sql) emu_db_exec_args ((emu), (err), (sql), 0, NULL)
#define emu_db_query0(emu, err, sql) emu_db_query_args ((emu), (err), (sql), 0, NULL)

/* For background work, which has nobody to report to but the log: runs
 * sql and logs a failure as "emulator: WHAT: why" (returns nothing). */
void emu_db_exec_logged_args (struct kiln_emu *emu, const char *what, const char *sql, size_t n,
                              const char *const *args);
#define emu_db_update(emu, what, sql, ...) \
  emu_db_exec_logged_args ((emu), (what), (sql), EMU_DB_ARGS (__VA_ARGS__))

/* The first row of a query (a new reference), NULL when there is none (*err
 * untouched) or on error (*err set). */
json_t *emu_db_query_one_args (struct kiln_emu *emu, kiln_error **err, const char *sql, size_t n,
                               const char *const *args);
#define emu_db_query_one(emu, err, sql, ...) emu_db_query_one_args ((emu), (err), (sql), EMU_DB_ARGS (__VA_ARGS__))

/* Transactions: begin takes the lock and starts an IMMEDIATE transaction;
 * end commits when commit is true (else rolls back) and releases the lock.
 * Returns -1 when the commit failed (the changes are rolled back). */
int emu_db_begin (struct kiln_emu *emu, kiln_error **err);
int emu_db_end (struct kiln_emu *emu, bool commit, kiln_error **err);
/* The same for a transaction whose commit need only survive the emulator
 * process being killed, not a power loss: its commit does not sync the
 * disk (synchronous=NORMAL for that one transaction; every other stays
 * FULL).  It becomes durable with the next ordinary commit that writes
 * anything.  For writes that many requests make in a row and that a later
 * ordinary commit seals (EBS PutSnapshotBlock, then CompleteSnapshot). */
int emu_db_begin_relaxed (struct kiln_emu *emu, kiln_error **err);
int emu_db_end_relaxed (struct kiln_emu *emu, bool commit, kiln_error **err);

/* The next value of the creation-order counter (as text, for binding). */
int emu_db_next_seq (struct kiln_emu *emu, char out[24], kiln_error **err);

/* Field access on a row object: the text of a column ("" for null), an
 * integer (0 for null or text that is not a number). */
const char *emu_row_str (json_t *row, const char *column);
long long emu_row_int (json_t *row, const char *column);
/* NULL when the column is null. */
const char *emu_row_str_or_null (json_t *row, const char *column);

#endif
