/* launch_record.h - the note an EC2 instance leaves in its work directory so
 * that a kiln killed outright (SIGKILL) does not leave it running.
 *
 * Before RunInstances the driver writes ec2-launch.json into the instance's
 * work directory (inside kiln's run directory) with the client token of the
 * launch and where it goes (endpoint, region, profile); once EC2 answers it
 * adds the instance id; when the instance is terminated the note goes.  The
 * next kiln command reaps the run directory of a dead kiln (common/rundir.h)
 * and hands each work directory to kiln_ec2_launch_reap(), which terminates
 * what the note names: by instance id, or, when kiln died before EC2
 * answered, by the client token (DescribeInstances filter client-token). */
#ifndef KILN_DRIVERS_EC2_LAUNCH_RECORD_H
#define KILN_DRIVERS_EC2_LAUNCH_RECORD_H

#include "error.h"

struct kiln_ec2_launch {
  const char *client_token;
  const char *instance_id;     /* NULL before RunInstances answered */
  const char *region;
  const char *endpoint_url;    /* NULL: as AWS tools find it */
  const char *profile;         /* NULL: the default */
};

/* Writes (replaces) the note in work_dir, atomically. */
int kiln_ec2_launch_record (const char *work_dir, const struct kiln_ec2_launch *l, kiln_error **err);
/* Removes the note (the instance is gone). */
void kiln_ec2_launch_forget (const char *work_dir);
/* Terminates what the note in work_dir names, then removes it.  0 when there
 * is no note or nothing is left running. */
int kiln_ec2_launch_reap (const char *work_dir, kiln_error **err);

#endif
