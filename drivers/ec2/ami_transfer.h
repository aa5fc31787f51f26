/* ami_transfer.h - disks into AMIs and back, for the EC2 driver's
 * import_image and export_image slots.
 *
 * Import: the disk goes into a new snapshot by one of two methods:
 *   ebs  the EBS direct APIs (common/aws/ebs_direct.h), raw and qcow2 read in
 *        place, optionally incremental over a parent snapshot or image;
 *   s3   staged in an S3 bucket (a streamOptimized VMDK unless it is
 *        already VMDK, VHD or VHDX), ImportSnapshot, the task waited for,
 *        the staged object removed whatever happened.
 * EC2 waits for the snapshot to be completed, RegisterImage makes it an AMI
 * (root device /dev/xvda, ENA, hvm, the boot mode asked for), kiln waits for
 * the AMI to be available, then shares it.  Whatever fails or is
 * interrupted after the snapshot exists, the AMI (if registered) is
 * deregistered and the snapshot deleted; an import task still running is
 * cancelled: nothing half-made is left.
 * Export: the AMI's root device snapshot comes back block by block into a
 * sparse raw file. */
#ifndef KILN_DRIVERS_EC2_AMI_TRANSFER_H
#define KILN_DRIVERS_EC2_AMI_TRANSFER_H

#include "aws_client.h"
#include "driver.h"
#include "error.h"

int kiln_ec2_ami_import (const struct kiln_aws_config *cfg, const struct kiln_aws_client_options *copts,
                         struct kiln_aws_client *ec2, const char *path, struct kiln_image_transfer *t,
                         kiln_error **err);
int kiln_ec2_ami_export (const struct kiln_aws_config *cfg, const struct kiln_aws_client_options *copts,
                         struct kiln_aws_client *ec2, const char *image_id, const char *raw_path,
                         struct kiln_image_transfer *t, kiln_error **err);

#endif
