/* services.h - the table of kiln-emulator's services, as redis has a
 * command table and libvirt a driver table.
 *
 * Each service fills one struct by field name: how it claims a request, how
 * it serves one, the shape of its errors (authentication failures included)
 * and its request id, and an optional tick run before every authenticated
 * request.  kiln_emu_handle (dispatch.c) routes by the table alone: a
 * request goes to the service its endpoint (Host) names; failing that, to
 * the service its credential scope names if that service would take the
 * request's shape; failing that, to the service whose shape it clearly has;
 * failing that, to the scope's service (nothing contradicts the client);
 * and last to the service that claims it at all.  Only then is the scope checked against the service, so an EC2
 * request signed for ssm gets EC2's error, not SSM's. */
#ifndef KILN_EMULATOR_SERVICES_H
#define KILN_EMULATOR_SERVICES_H

#include <stdbool.h>
#include <time.h>

#include "emulator.h"

/* How surely a service takes a request, weakest first. */
enum emu_claim {
  EMU_CLAIM_NONE,      /* not this service's */
  EMU_CLAIM_FALLBACK,  /* could be, when nothing else takes it */
  EMU_CLAIM_SHAPE,     /* this service's shape (its header, parameters or paths) */
  EMU_CLAIM_ENDPOINT,  /* sent to this service's host name */
};

struct emu_service {
  const char *name;    /* the credential scope's service: "ec2", "ssm", ... */
  enum emu_claim (*claim) (const struct emu_request *req);
  /* Serves an authenticated call (c->account, region, service set); errors
   * are recorded on c (emu_fail) and shaped by error_reply. */
  void (*serve) (struct emu_call *c, struct emu_response *resp);
  void (*error_reply) (struct emu_call *c, struct emu_response *resp);
  /* The status and code of an authentication failure, in this service's
   * terms. */
  void (*auth_error) (enum emu_auth_failure kind, bool presigned, int *status, const char **code);
  const char *request_id_header;
  /* Optional: run before every authenticated request of any service, so
   * what any API shows is current (EBS snapshots past their Timeout). */
  void (*tick) (struct kiln_emu *emu, time_t now);
  /* Optional: bodies taken as they arrive instead of in memory (S3 object
   * data, up to 5 GiB).  body_streams says whether head's body is one (it
   * is then authenticated from its head before a byte is read, as any
   * costly body); body_begin starts taking it (never NULL when
   * body_streams said yes), body_feed takes each piece, body_finish marks
   * the end of a body that arrived whole, body_free releases it (removing
   * what was not published).  The handler finds it in req->upload. */
  bool (*body_streams) (const struct emu_request *head);
  struct emu_upload *(*body_begin) (struct kiln_emu *emu, const struct emu_request *head);
  void (*body_feed) (struct emu_upload *u, const void *data, size_t len);
  void (*body_finish) (struct emu_upload *u);
  void (*body_free) (struct emu_upload *u);
  /* Optional: run once at start, after the store opened and the VM host
   * brought its instances in line, before the first request: the service
   * recovers work an earlier run left (queues it again, or fails it with a
   * reason) and sweeps its leftovers.  A failure stops the emulator. */
  int (*start) (struct kiln_emu *emu, kiln_error **err);
  /* Optional: an instance was terminated; what the service had for it that
   * can no longer happen ends now (SSM: invocations Undeliverable). */
  void (*instance_ended) (struct kiln_emu *emu, const char *instance_id);
  /* Optional, object stores (S3): stores len bytes as object bucket/key
   * of account in region, as PutObject would; 0 stored, 1 refused (*why:
   * the bucket "does not exist", is another account's ...), -1 on error.
   * Other services use it to write where the API says they write (SSM's
   * command output in OutputS3BucketName). */
  int (*store_object) (struct kiln_emu *emu, const char *account, const char *region, const char *bucket,
                       const char *key, const void *data, size_t len, const char *content_type, time_t now,
                       const char **why, kiln_error **err);
};

/* NULL-terminated, in the order ties are broken. */
extern const struct emu_service *const emu_services[];

/* The service req goes to, given the service its credential scope names
 * (NULL when unsigned or unreadable).  Never NULL: EC2 takes what nothing
 * claims, as it answers unsigned requests on a bare endpoint. */
const struct emu_service *emu_service_route (const struct emu_request *req, const char *scope_service);

/* The service called name ("s3"), or NULL. */
const struct emu_service *emu_service_find (const char *name);
/* Every service's start slot, in table order; stops at the first failure. */
int emu_services_start (struct kiln_emu *emu, kiln_error **err);
/* Every service's instance_ended slot. */
void emu_services_instance_ended (struct kiln_emu *emu, const char *instance_id);

/* The service that takes head's body as it arrives, or NULL (in memory). */
const struct emu_service *emu_service_streaming (const struct emu_request *head);

#endif
