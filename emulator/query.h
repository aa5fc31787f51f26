/* query.h - the Query protocols' input and XML output (query.c), shared by
 * the services that speak EC2 Query or awsQuery (ec2, sts). */
#ifndef KILN_EMULATOR_QUERY_H
#define KILN_EMULATOR_QUERY_H

#include "emulator.h"

/* Decodes c->req's parameters (query string, then a form-encoded body) into
 * c->params: list indices canonical ("Filter.01" is "Filter.1"), sorted by
 * name, each name at most once (else MalformedQueryString); a body of
 * another content type fails the call, naming protocol ("EC2 Query"). */
int emu_query_decode (struct emu_call *c, const char *protocol);

/* The value of a parameter, or NULL. */
const char *emu_param (struct emu_call *c, const char *name);
const char *emu_paramf (struct emu_call *c, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
/* The value, or fails with MissingParameter. */
int emu_param_required (struct emu_call *c, const char *name, const char **out);
/* Values of PREFIX.1, PREFIX.2, ... in index order (borrowed; the array is
 * malloc'd, NULL-terminated).  *n may be NULL. */
const char **emu_param_list (struct emu_call *c, const char *prefix, size_t *n);
/* The distinct N of parameters named PREFIX.N.<anything>, increasing;
 * malloc'd. */
int *emu_param_indices (struct emu_call *c, const char *prefix, size_t *n);
/* An integer in [min, max], def when absent. */
int emu_param_int (struct emu_call *c, const char *name, long long def, long long min, long long max,
                   long long *out);
/* "true" / "false" (any case), def when absent. */
int emu_param_bool (struct emu_call *c, const char *name, bool def, bool *out);

/* Whether s is one of the n strings of list (NULL entries skipped). */
bool emu_list_contains (const char *const *list, size_t n, const char *s);


/* ---- XML output, into c->xml ---- */

void emu_xml_start (struct emu_call *c, const char *name);
void emu_xml_end (struct emu_call *c);
/* <name>value</name>; nothing when value is NULL. */
void emu_xml_text (struct emu_call *c, const char *name, const char *value);
void emu_xml_textf (struct emu_call *c, const char *name, const char *fmt, ...) __attribute__ ((format (printf, 3, 4)));
void emu_xml_bool (struct emu_call *c, const char *name, bool value);
void emu_xml_time (struct emu_call *c, const char *name, time_t t);

/* ---- Query replies ---- */

/* How a Query service wraps an operation's output: EC2 Query writes
 * <ActionResponse xmlns><requestId>...output; awsQuery (STS, IAM) writes
 * <ActionResponse xmlns><ActionResult>output</ActionResult>
 * <ResponseMetadata><RequestId>. */
struct emu_query_style {
  const char *xmlns;
  bool result_wrapper;       /* awsQuery */
  const char *content_type;
  const char *internal_code; /* the code of a handler that failed without saying why */
};

/* Runs the operation fn with c->xml open where its output goes; on success
 * resp holds the reply (HTTP 200), else the error stays recorded on c for
 * the service's error_reply. */
void emu_query_run (struct emu_call *c, struct emu_response *resp, const char *action, emu_handler_fn fn,
                    const struct emu_query_style *style);

/* An XML document written in memory: begin gives the writer (document
 * started), finish ends it and makes it resp's body with status and
 * content type (replacing any body), freeing the writer. */
xmlTextWriterPtr emu_xml_document_begin (xmlBufferPtr *buf);
void emu_xml_document_finish (xmlTextWriterPtr w, xmlBufferPtr buf, struct emu_response *resp, int status,
                              const char *content_type);

#endif
