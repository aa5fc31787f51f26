/* ebs_direct.h - moving a disk into and out of an EBS snapshot with the EBS
 * direct APIs (StartSnapshot, PutSnapshotBlock, CompleteSnapshot,
 * ListSnapshotBlocks, GetSnapshotBlock), the way `kiln image import` and
 * `kiln image export` reach AMIs without S3.
 *
 * Upload reads a raw or qcow2 disk file in place: only the extents
 * `qemu-img map` says hold data are read (for raw, the file system's
 * SEEK_DATA; for qcow2, its allocated clusters, read where they sit in the
 * file), and a 512 KiB block that reads as all zeros is not sent (a new
 * snapshot reads as zeros wherever nothing was written).  Over a parent
 * snapshot (ParentSnapshotId), only blocks that differ from the parent's are
 * sent: each block the parent holds is fetched and its checksum compared,
 * and a block the source has zeroed is written as zeros.  Blocks go out from a bounded pool of workers, each with its own
 * client, each block with its SHA-256; a block is retried by the client's
 * retry policy.  CompleteSnapshot carries the count and the linear
 * aggregate checksum (SHA-256 over the blocks' SHA-256 digests in index
 * order).  Download lists the snapshot's blocks, fetches them with the same
 * pool, checks each against the checksum EBS sends, and writes them into a
 * sparse raw file of the volume's size.
 *
 * Neither waits for the snapshot to become `completed` nor deletes it when
 * something fails: both are EC2 calls (DescribeSnapshots, DeleteSnapshot),
 * the caller's. */
#ifndef KILN_COMMON_AWS_EBS_DIRECT_H
#define KILN_COMMON_AWS_EBS_DIRECT_H

#include <signal.h>
#include <stdint.h>

#include "aws_client.h"
#include "error.h"

#define KILN_EBS_BLOCK_SIZE 524288

struct kiln_ebs_stats {
  uint64_t bytes_read;         /* from the source disk (upload) or EBS (download) */
  uint64_t bytes_sent;         /* block data sent (upload) or written (download) */
  uint64_t blocks;             /* blocks sent or fetched */
  uint64_t zero_blocks;        /* read as zeros and not sent (upload) */
  uint64_t unchanged_blocks;   /* the same as the parent's and not sent (upload) */
  uint64_t volume_bytes;       /* the volume's size */
};

/* How often, at most, progress is called: with the stats so far. */
typedef void (*kiln_ebs_progress) (const struct kiln_ebs_stats *st, void *opaque);

struct kiln_ebs_options {
  /* Where and as whom: each worker makes its own "ebs" client from these. */
  const struct kiln_aws_config *config;
  const struct kiln_aws_client_options *client;
  int workers;                 /* 0: 8 */
  /* Upload: the new snapshot is incremental over this one (whose volume
   * may not be larger than the disk), or NULL. */
  const char *parent_snapshot_id;
  volatile sig_atomic_t *cancel;
  kiln_ebs_progress progress;  /* or NULL */
  void *progress_opaque;
};

/* Starts a snapshot of a volume as large as the disk at path (format:
 * qemu-img's name, "raw" or "qcow2"; the size rounded up to a whole GiB),
 * sends its data and completes it.  A disk whose data is not stored plainly
 * in the file (compressed qcow2 clusters) fails with KILN_ERR_UNSUPPORTED
 * before any snapshot exists: convert it to raw first.  *snapshot_id is set
 * as soon as the snapshot exists, also when a later step fails, so the
 * caller can delete it.  tags: key, value, ..., NULL. */
int kiln_ebs_upload (const struct kiln_ebs_options *o, const char *path, const char *format, const char *description,
                     const char *const *tags, char **snapshot_id, struct kiln_ebs_stats *stats, kiln_error **err);

/* Writes the snapshot's volume into raw_path (created or truncated; sparse
 * where the snapshot holds nothing), each block checked against its
 * checksum. */
int kiln_ebs_download (const struct kiln_ebs_options *o, const char *snapshot_id, const char *raw_path,
                       struct kiln_ebs_stats *stats, kiln_error **err);

#endif
