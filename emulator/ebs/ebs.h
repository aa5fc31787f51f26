/* ebs.h - what the EBS direct APIs of kiln-emulator share (service `ebs`,
 * rest-json, API 2019-11-02).
 *
 * ebs_protocol.c routes a request by method and path to an operation of
 * emu_ebs_snapshot_ops (ebs_snapshots.c), having decoded its URI labels,
 * query parameters, headers and JSON body into c->input under the model's
 * member names (SnapshotId, BlockIndex, DataLength, VolumeSize, ...), with
 * integers as JSON integers.  A handler fills c->output (the JSON body) and
 * may add response headers or replace the body with binary data
 * (GetSnapshotBlock); the HTTP status is the operation's (201, 202, 200).
 *
 * Errors are rest-json's: an x-amzn-ErrorType header naming the code and a
 * body {"Message": ..., "Reason": ...}; ebs_fail records the Reason (one of
 * the model's enum values, a string literal) beside emu_fail's code.
 *
 * Blocks live in the snapshot's disk file (ebs_blocks.c): a sparse raw file
 * DATA_DIR/disks/<snapshot-id>.raw of the volume's size, block N at offset
 * N * EBS_BLOCK_SIZE, which is what an AMI registered from the snapshot
 * boots from. */
#ifndef KILN_EMULATOR_EBS_H
#define KILN_EMULATOR_EBS_H

#include <stdint.h>

#include "emulator.h"

/* rest-json (ebs_protocol.c): the operation named by method and path; the
 * error recorded on c in rest-json's shape. */
void emu_ebs_serve (struct emu_call *c, struct emu_response *resp);
void emu_ebs_error_reply (struct emu_call *c, struct emu_response *resp);
/* Pending EBS direct snapshots whose Timeout has passed go to error
 * (ebs_snapshots.c); the service table's tick, run before every request, so
 * what any API shows is current. */
void emu_ebs_expire (struct kiln_emu *emu, time_t now);

#define EBS_BLOCK_SIZE 524288
#define EBS_BLOCKS_PER_GIB 2048LL
#define EBS_GIB (1024ULL * 1024 * 1024)

typedef int (*ebs_handler_fn) (struct emu_call *c, struct emu_response *resp);

struct ebs_operation {
  const char *name;
  ebs_handler_fn fn;
};

/* StartSnapshot, PutSnapshotBlock, CompleteSnapshot, GetSnapshotBlock,
 * ListSnapshotBlocks, ListChangedBlocks; ended by {NULL, NULL}. */
extern const struct ebs_operation emu_ebs_snapshot_ops[];

/* emu_fail with the error's Reason (NULL: none), for the rest-json body. */
int ebs_fail (struct emu_call *c, int status, const char *code, const char *reason, const char *fmt, ...)
    __attribute__ ((format (printf, 5, 6)));
#define ebs_fail_validation(c, reason, ...) ebs_fail ((c), 400, "ValidationException", (reason), __VA_ARGS__)

/* ---- block storage (ebs_blocks.c) ---- */

/* Creates path (which must not exist) as a sparse raw disk of size bytes:
 * a copy of parent (a disk file in parent_format: raw is cloned or copied
 * sparsely, anything else converted by qemu-img), grown to size, or empty
 * when parent is NULL.  Fails when the parent is larger than size. */
int ebs_disk_create (const char *path, const char *parent, const char *parent_format, uint64_t size,
                     kiln_error **err);

/* The indices of the blocks of a disk file that hold data, increasing
 * (*out malloc'd, NULL when *n is 0).  Raw: allocated extents
 * (SEEK_DATA/SEEK_HOLE) whose bytes are not all zero.  Other formats:
 * clusters `qemu-img map` reports as data and not zero. */
int ebs_disk_data_blocks (const char *path, const char *format, long long **out, size_t *n, kiln_error **err);

/* Reads block index of snapshot_id's disk file into buf (EBS_BLOCK_SIZE
 * bytes; zeros past the end of the disk).  Raw files are read directly.
 * Other formats are read from a sparse raw conversion of the whole disk
 * (`qemu-img convert -f format`), made on the snapshot's first read as
 * cache_dir/<snapshot_id>.raw and kept for the next; it is made again when
 * the disk file is not the one it was made from (identity and times), so
 * it is never stale.  cache_dir is emptied when the process first uses it
 * and removed when the process exits. */
int ebs_disk_read_block (const char *path, const char *format, long long index, const char *cache_dir,
                         const char *snapshot_id, unsigned char *buf, kiln_error **err);

/* Removes snapshot_id's raw conversion under cache_dir, if there is one
 * (the snapshot is going).  Never waits for a conversion in progress. */
void ebs_cache_drop (const char *cache_dir, const char *snapshot_id);

/* Writes block index of a raw disk; an all-zero block is deallocated
 * (a hole) rather than written when the file system can. */
int ebs_disk_write_block (const char *path, long long index, const unsigned char *data, kiln_error **err);

/* fsync of the file and of the directory holding it. */
int ebs_disk_sync (const char *path, kiln_error **err);

/* Whether n bytes are all zero. */
bool ebs_all_zero (const unsigned char *p, size_t n);

#endif
