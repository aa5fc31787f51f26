/* error.h - the error object every kiln function reports through.
 *
 * Functions that can fail return 0 (or a non-negative value) on success and a
 * negative value on failure, and fill a `kiln_error` naming what failed
 * ("open '/x': No such file or directory").  Callers that add context use
 * kiln_error_prefix(), which turns "X" into "context: X", so the message a user
 * reads is a chain from the outermost operation down to the system call.
 *
 * Contract: an error pointer passed in as `kiln_error **err` is either NULL
 * (the caller does not want details) or points to a NULL kiln_error* that the
 * callee may fill once.  The caller owns and frees what it receives. */
#ifndef KILN_COMMON_ERROR_H
#define KILN_COMMON_ERROR_H

#include <stdarg.h>

/* Broad classes that let callers react without parsing messages. */
enum kiln_error_code {
  KILN_ERR_FAILED = 1,   /* generic failure */
  KILN_ERR_INVALID,      /* bad input from the user (documents, flags) */
  KILN_ERR_NOT_FOUND,    /* a named thing does not exist */
  KILN_ERR_UNSUPPORTED,  /* a valid request this build or target cannot do */
  KILN_ERR_TIMEOUT,      /* a deadline passed */
  KILN_ERR_IO,           /* a system call failed */
  KILN_ERR_REMOTE,       /* a peer (HTTP server, guest agent) answered with an error */
  KILN_ERR_CANCELLED,    /* stopped by a signal or a user request */
};

typedef struct kiln_error {
  int code;      /* enum kiln_error_code */
  int errnum;    /* errno of the failed system call, 0 if none */
  char *message; /* full message, context first */
} kiln_error;

/* Fill *err (if err is non-NULL) and return -1.  When errnum is non-zero the
 * message ends with ": strerror(errnum)".  An error already present in *err is
 * replaced. */
int kiln_error_set (kiln_error **err, int code, int errnum, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));
int kiln_error_setv (kiln_error **err, int code, int errnum, const char *fmt, va_list ap);

#define kiln_fail(err, ...) kiln_error_set ((err), KILN_ERR_FAILED, 0, __VA_ARGS__)
#define kiln_fail_errno(err, errnum, ...) kiln_error_set ((err), KILN_ERR_IO, (errnum), __VA_ARGS__)
#define kiln_fail_invalid(err, ...) kiln_error_set ((err), KILN_ERR_INVALID, 0, __VA_ARGS__)

/* Prepend context: "<fmt>: <old message>".  Returns -1 so callers can write
 * `return kiln_error_prefix (err, "load '%s'", path);`.  With no error in *err
 * it creates one holding only the context. */
int kiln_error_prefix (kiln_error **err, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

/* Move an error from *src into *dst (freeing what *dst held). */
void kiln_error_move (kiln_error **dst, kiln_error **src);

void kiln_error_free (kiln_error *e);
void kiln_error_freep (kiln_error **e);

/* The message or "unknown error" when e is NULL. */
const char *kiln_error_message (const kiln_error *e);

#endif
