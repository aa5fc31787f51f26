/* ec2_images.h - what the EC2 driver does with AMIs once they exist: wait
 * for them, list their snapshots, delete them with their snapshots, and
 * distribute them (copies to other regions, tags, launch permissions).
 *
 * Every function takes the EC2 client of the region the image is in, so the
 * same code serves the build region and every copy. */
#ifndef KILN_DRIVERS_EC2_IMAGES_H
#define KILN_DRIVERS_EC2_IMAGES_H

#include <signal.h>

#include "aws_client.h"
#include "driver.h"
#include "error.h"

/* Waits until image_id is available (EC2 may not know a fresh id yet);
 * failed, invalid, error or deregistered end the wait with the reason. */
int kiln_ec2_image_wait (struct kiln_aws_client *ec2, const char *image_id, int timeout_seconds,
                         volatile sig_atomic_t *cancel, kiln_error **err);
/* Waits until snapshot_id is completed; its error state ends the wait with
 * EC2's status message. */
int kiln_ec2_snapshot_wait (struct kiln_aws_client *ec2, const char *snapshot_id, int timeout_seconds,
                            volatile sig_atomic_t *cancel, kiln_error **err);
/* The snapshot ids of the image's block device mappings (NULL-terminated,
 * possibly empty). */
int kiln_ec2_image_snapshots (struct kiln_aws_client *ec2, const char *image_id, char ***out, kiln_error **err);
/* DeregisterImage, then DeleteSnapshot of each of its snapshots. */
int kiln_ec2_image_delete (struct kiln_aws_client *ec2, const char *image_id, kiln_error **err);

/* The driver's distribute slot, given the configuration and endpoint that
 * make clients for other regions (see driver.h's distribute).  tags are
 * the ones kiln puts on everything it makes (key, value, ..., NULL), added to
 * each target's own. */
int kiln_ec2_image_distribute (const struct kiln_aws_config *cfg, const char *endpoint_url,
                               struct kiln_aws_client *ec2, const char *image_id, const char *const *tags,
                               struct kiln_image_distribution *d, size_t n, volatile sig_atomic_t *cancel,
                               kiln_error **err);

#endif
