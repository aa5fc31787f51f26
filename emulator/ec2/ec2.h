/* ec2.h - what every EC2 handler shares: reading Query parameters, filters,
 * pagination, writing the XML reply (ec2_protocol.c), and tags
 * (ec2_tags.c).
 *
 * Parameters are EC2 Query's flattened names: "ImageId", lists "InstanceId.1",
 * "InstanceId.2", structures "TagSpecification.1.Tag.2.Key".  Readers that
 * validate fail the call with the error EC2 gives (MissingParameter,
 * InvalidParameterValue) and return -1. */
#ifndef KILN_EMULATOR_EC2_H
#define KILN_EMULATOR_EC2_H

#include <signal.h>

#include "aws_instance_types.h"
#include "emulator.h"
#include "query.h"

/* Handler tables, one per area, each ended by {NULL, NULL}. */
extern const struct emu_operation emu_ec2_instance_ops[];
extern const struct emu_operation emu_ec2_image_ops[];
extern const struct emu_operation emu_ec2_snapshot_ops[];
extern const struct emu_operation emu_ec2_tag_ops[];
extern const struct emu_operation emu_ec2_keypair_ops[];
extern const struct emu_operation emu_ec2_region_ops[];
extern const struct emu_operation emu_ec2_import_ops[];
extern const struct emu_operation emu_ec2_export_ops[];

/* EC2 Query (ec2_protocol.c): decodes c->req's parameters, runs the operation
 * named by Action and encodes its XML reply into resp; the error recorded on
 * c (emu_fail) in EC2's shape. */
void emu_ec2_serve (struct emu_call *c, struct emu_response *resp);
void emu_ec2_error_reply (struct emu_call *c, struct emu_response *resp);

/* ---- filters: Filter.N.Name, Filter.N.Value.M ---- */

struct emu_filter {
  char *name;
  const char **values;    /* borrowed from the call's parameters, NULL-terminated */
  size_t n_values;
};

struct emu_filters {
  struct emu_filter *items;
  size_t n;
};

/* Parses the call's filters; a name not in known (NULL-terminated; "tag:*"
 * admits "tag:<key>") fails with InvalidParameterValue, as EC2 does. */
int emu_filters_parse (struct emu_call *c, const char *const *known, struct emu_filters *out);
/* The same for operations whose model names the list otherwise
 * (DescribeImportImageTasks: "Filters.N.Name", "Filters.N.Value.M"). */
int emu_filters_parse_named (struct emu_call *c, const char *prefix, const char *const *known,
                             struct emu_filters *out);
void emu_filters_release (struct emu_filters *f);
/* Whether a resource passes every filter: fields maps a filter name to the
 * resource's value (a string) or values (an array of strings); "tag:K",
 * "tag-key" and "tag-value" are answered from tags (key -> value).  Values
 * match with EC2's wildcards, '*' and '?'. */
bool emu_filters_match (const struct emu_filters *f, json_t *fields, json_t *tags);

/* ---- pagination: MaxResults / NextToken ---- */

/* The slice [*start, *start + *count) of total items to return, from
 * NextToken (an offset this emulator handed out) and MaxResults
 * (min_results..1000; absent: everything).  *next_token is set to the token
 * for the following page (malloc'd) or NULL when this is the last. */
int emu_page (struct emu_call *c, size_t total, long long min_results, size_t *start, size_t *count,
              char **next_token);

/* ---- XML output ---- */

/* <name><item><key>K</key><value>V</value></item>...</name>, for tags
 * (key -> value); an empty set writes nothing, as EC2 does. */
void emu_xml_tag_set (struct emu_call *c, const char *name, json_t *tags);

/* ---- the Describe pipeline (ec2_describe.c) ---- */

/* Every Describe* call is one run of emu_describe over a table entry, a
 * struct emu_describe_kind, filled by field name in the file of its
 * resource.  The run, in this order (the order EC2 reports a request's
 * first error by):
 *   filters (when filters_first) - read - ids with MaxResults - malformed
 *   ids - check - filters (otherwise) - rows - ids not found - tags -
 *   selection (ids, keep, filters) - page - reply.
 * The differences between resources that AWS has too (Owners, ExecutableBy,
 * RestorableBy, IncludeAllInstances ...) live in the read/check/keep hooks;
 * a hook fails the call itself and returns -1. */

struct emu_describe_call;

/* How bad ids are reported: code (NULL: no such check), the message for one
 * id and, optionally, for several; "%s" in it stands for the id or the ids
 * joined by ", " (the only directive: the text is no printf format). */
enum emu_describe_report {
  EMU_REPORT_FIRST,      /* the first bad id alone */
  EMU_REPORT_EACH_ONCE,  /* every bad id, once, in the order asked */
  EMU_REPORT_EVERY,      /* every bad id as often as asked */
};

struct emu_describe_error {
  const char *code;
  const char *one, *many;        /* many NULL: one */
  enum emu_describe_report report;
};

/* One list of ids a call may name its resources by (PARAM.1, PARAM.2 ...);
 * a row is named by the id its column holds. */
struct emu_describe_ids {
  const char *param;             /* NULL: none */
  const char *column;
  const char *prefix;            /* for valid: "ami", "import-snap" ... */
  /* Whether an id is well formed; NULL with a prefix: EC2's id shape
   * (emu_id_well_formed); NULL without one: any id is. */
  bool (*valid) (struct emu_call *c, const struct emu_describe_ids *ids, const char *id);
  struct emu_describe_error malformed, not_found;
};

#define EMU_DESCRIBE_ID_LISTS 2

/* <element>the row's column</element> ("" when null). */
struct emu_describe_text {
  const char *element, *column;
};

struct emu_describe_kind {
  /* Ids: rows named by any id of any list are selected (the union), and
   * every id must name a row (not_found).  With ids_exclude_paging (the
   * ids' set name in EC2's message, "instancesSet"), ids and MaxResults
   * together fail with InvalidParameterCombination. */
  struct emu_describe_ids ids[EMU_DESCRIBE_ID_LISTS];
  const char *ids_exclude_paging;

  /* Filters: filter_param.N.Name / .Value.M (NULL: "Filter"), the names
   * known (as emu_filters_parse takes them) and a row's values for them (a
   * new object, as emu_filters_match takes it; built only when a filter is
   * given).  filters_first: parsed before anything else is checked. */
  const char *filter_param;
  const char *const *filter_names;
  json_t *(*fields) (struct emu_call *c, json_t *row);
  bool filters_first;

  /* Rows: query, with ?1 the caller's account and ?2 its region, or rows
   * (a new array; NULL with *err), in the order they are listed. */
  const char *query;
  json_t *(*rows) (struct emu_call *c, struct emu_describe_call *d, kiln_error **err);
  /* Tags: resource id -> {key -> value} from emu_tags_all, looked up by a
   * row's tags_column (NULL: "id"), unless untagged or rows set d->tags. */
  bool untagged;
  const char *tags_column;

  /* The kind's own parameters: read before the ids are checked, check
   * after; keep decides on a row the ids and filters selected (and may
   * add what its writer shows). */
  int (*read) (struct emu_call *c, struct emu_describe_call *d);
  int (*check) (struct emu_call *c, struct emu_describe_call *d);
  bool (*keep) (struct emu_call *c, struct emu_describe_call *d, json_t *row);

  /* Paging: MaxResults (page_min..1000) and NextToken, and nextToken in
   * the reply; page_min 0: the call does not page. */
  long long page_min;

  /* The reply: <set><item>texts write</item>...</set>, texts (ended by
   * {NULL}) the item's first elements, each a column's text, write (may be
   * NULL) the rest.  With group_column, rows
   * are grouped by that column in order of first appearance, each group
   * <item>group_head<group_set><item>write</item>...</group_set></item>
   * (DescribeInstances' reservations). */
  const char *set;
  const struct emu_describe_text *texts;
  void (*write) (struct emu_call *c, json_t *row, json_t *tags);
  const char *group_column, *group_set;
  void (*group_head) (struct emu_call *c, json_t *row);
};

/* One run, for the hooks. */
struct emu_describe_call {
  const struct emu_describe_kind *kind;
  const char **ids[EMU_DESCRIBE_ID_LISTS];   /* borrowed values, NULL-terminated */
  size_t n_ids[EMU_DESCRIBE_ID_LISTS];
  struct emu_filters filters;
  json_t *tags;
  json_t *options;               /* what read/check took from the call, by name */
};

int emu_describe (struct emu_call *c, const struct emu_describe_kind *kind);
/* Defines the handler NAME of the Describe operation over KIND. */
#define EMU_DESCRIBE_HANDLER(name, kind)                                                                      \
  static int name (struct emu_call *c)                                                                        \
  {                                                                                                           \
    return emu_describe (c, &(kind));                                                                         \
  }

/* EC2's id shape: prefix, '-', 8 or 17 lowercase hex digits. */
bool emu_id_well_formed (const char *id, const char *prefix);
/* How many lowercase hex digits follow prefix and '-' to the end of id; 0
 * when id is not of that shape. */
size_t emu_id_digits (const char *id, const char *prefix);
/* Fails the call with e when some id (of n) is the column of no row;
 * 0 when every one is. */
int emu_describe_ids_found (struct emu_call *c, const struct emu_describe_error *e, json_t *rows,
                            const char *column, const char *const *ids, size_t n);

/* ---- tags (ec2_tags.c) ---- */

/* The tags of one resource as an object key -> value (new reference; empty
 * object when none, NULL on a database error after failing the call). */
json_t *emu_tags_of (struct emu_call *c, const char *resource_id);
/* Tags of every resource of the caller's account and region, resource id ->
 * {key -> value}; for describing many resources at once. */
json_t *emu_tags_all (struct emu_call *c);
/* Validates TagSpecification.N for the given resource types (the create
 * call's resources, e.g. {"instance", "volume", NULL}); unknown types fail
 * the call. */
int emu_tag_specs_check (struct emu_call *c, const char *const *allowed_types);
/* Stores the tags TagSpecification.N gives resource_type on resource_id. */
int emu_tag_specs_apply (struct emu_call *c, const char *resource_type, const char *resource_id);
/* Sets one tag (replacing its value). */
int emu_tag_set (struct emu_call *c, const char *resource_id, const char *resource_type, const char *key,
                 const char *value);
/* The resource type EC2 names an id's kind by ("instance", "image",
 * "snapshot", "key-pair", "reservation", "volume"), or NULL when the prefix is
 * unknown. */
const char *emu_resource_type_of (const char *id);

/* ---- images (ec2_images.c) ---- */

/* The image row (images table) for image_id if the caller may use it (owns
 * it, or it is shared with the caller's account or with all) and it is not
 * deregistered; otherwise fails the call with InvalidAMIID.Malformed or
 * InvalidAMIID.NotFound and returns NULL.  New reference. */
json_t *emu_image_lookup (struct emu_call *c, const char *image_id);

/* Registers a local disk image file as an available AMI (for
 * `kiln-emulator import-image`): converts it to qcow2 under the data
 * directory as a completed snapshot, owned by account in region, public when
 * asked.  Works while a server runs on the same state directory.  *image_id
 * is malloc'd. */
int emu_image_import (struct kiln_emu *emu, const char *file, const char *name, const char *region,
                      const char *account, bool is_public, char **image_id, kiln_error **err);

/* Rows of an image and of a snapshot, as every maker of AMIs inserts them
 * (CreateImage, RegisterImage, CopyImage, import-image, ImportImage,
 * ImportSnapshot).  Call inside the transaction that makes them; a disk
 * file named by a snapshot row gets its final name inside that same
 * transaction (see ec2_images.c). */
struct emu_image_spec {
  const char *id, *account, *region, *name, *description, *state;
  const char *architecture, *root_device_name, *root_snapshot;
  long long volume_size;      /* GiB; 0: unknown (NULL) */
  time_t creation_date;
  const char *source_instance, *source_image, *source_region;
  const char *virtualization_type, *boot_mode;
  bool ena_support, delete_on_termination;
};

struct emu_snapshot_spec {
  const char *id, *account, *region, *state, *progress, *description, *disk, *disk_format;
  long long volume_size;      /* GiB */
  time_t start_time;
};

int emu_image_insert (struct kiln_emu *emu, const struct emu_image_spec *s, kiln_error **err);
int emu_snapshot_insert (struct kiln_emu *emu, const struct emu_snapshot_spec *s, kiln_error **err);

/* ---- CreateImage's capture (ec2_capture.c) ---- */

/* Queues the capture of the instance's disk into snapshot_id's disk file on
 * the instance's job queue; the snapshot ends completed and the image
 * available, or both failed.  Unless no_reboot, a running guest is shut
 * down first and started again after, as CreateImage does. */
void ec2_capture_queue (struct kiln_emu *emu, const char *instance_id, const char *image_id,
                        const char *snapshot_id, bool no_reboot);
/* EC2's start slot (services.h): captures an earlier run left under way
 * fail, and VM import/export tasks are recovered (emu_tasks_recover). */
int ec2_start (struct kiln_emu *emu, kiln_error **err);

/* ---- VM import/export tasks (ec2_import.c, ec2_export.c) ---- */

/* ImportSnapshot, ImportImage and ExportImage make a row of
 * conversion_tasks each and queue it; the tasks run one at a time in order
 * (ec2_import.c's task table, on one job queue) through qemu-img and write
 * their outcome.  emu_tasks_recover (EC2's start slot) brings tasks an
 * earlier run left behind to a clear state: active ones run again from the
 * start, deleting ones become deleted.  A task interrupted by shutdown
 * stays active, for the next start. */
int emu_tasks_recover (struct kiln_emu *emu, kiln_error **err);
void emu_task_queue (struct kiln_emu *emu, const char *task_id);

/* For the task kinds' runners, in the worker thread. */
/* Sets an active task's statusMessage and progress (percent; < 0: none). */
void emu_task_progress (struct kiln_emu *emu, const char *task_id, const char *message, int progress);
/* Runs qemu-img with argv (argv[0] "qemu-img"); returns its exit status,
 * or -1 when it could not be run or was cancelled (*err says which).  Its
 * stderr, trimmed, is in *stderr_text (malloc'd) when that is non-NULL.
 * When progress_task is non-NULL, `-p` output moves that task's progress
 * from lo to hi percent. */
int emu_qemu_img (struct kiln_emu *emu, char *const *argv, volatile sig_atomic_t *cancel, char **stderr_text,
                  const char *progress_task, int lo, int hi, kiln_error **err);
/* ExportImage's runner (ec2_export.c): 0 when the task's object is stored,
 * -1 with *err (KILN_ERR_INVALID: the caller's problem, reported as a
 * ClientError; KILN_ERR_CANCELLED: cancelled). */
int emu_export_run (struct kiln_emu *emu, json_t *task, volatile sig_atomic_t *cancel, kiln_error **err);

/* Task ids: prefix ("import-snap", "import-ami", "export-ami"), '-', 17
 * lowercase hex digits. */
bool emu_task_id_well_formed (const char *id, const char *prefix);

/* For the handlers.  A new task: the columns of its row (NULL: none). */
struct emu_task_spec {
  const char *id, *kind, *tag_type;     /* tag_type: TagSpecification's ResourceType */
  const char *status_message, *progress; /* NULL: "pending", none */
  const char *description, *client_token, *format, *bucket, *object_key, *url, *disk_description, *device_name;
  const char *role_name, *architecture, *platform, *boot_mode, *license_type, *image_id;
};
/* The caller's task of kind made with ClientToken token (a new reference),
 * NULL when none or token is NULL; *failed when the lookup failed the call. */
json_t *emu_task_by_token (struct emu_call *c, const char *kind, const char *token, bool *failed);
/* Inserts the task (active) with its TagSpecification tags and queues it;
 * returns its row, or the row of the task a concurrent call made with the
 * same client token.  NULL after failing the call. */
json_t *emu_task_create (struct emu_call *c, const struct emu_task_spec *s);

/* What the Describe calls over tasks share (ec2_import.c): the filters
 * they take (task-state, tags), each task's values for them, and the
 * check of a task id against its kind's prefix (the describe ids' prefix). */
extern const char *const emu_task_filter_names[];
json_t *emu_task_filter_fields (struct emu_call *c, json_t *task);
bool emu_task_id_valid (struct emu_call *c, const struct emu_describe_ids *ids, const char *id);
/* <progress> while the task has one. */
void emu_task_xml_progress (struct emu_call *c, json_t *task);
/* Cancels an active task (state deleting; the worker ends it deleted with
 * reason, or a default message); *previous gets its state before (malloc'd).
 * A task that has ended fails the call with IncorrectState. */
int emu_task_cancel (struct emu_call *c, json_t *task, const char *reason, char **previous);

/* Instance types: common/aws/aws_instance_types.h (kiln_aws_instance_type_find),
 * one table with kiln's local builds; DescribeInstanceTypes is in
 * ec2_regions.c. */

#endif
