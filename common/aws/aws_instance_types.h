/* aws_instance_types.h - the EC2 instance types kiln knows, with their vCPUs
 * and memory.
 *
 * One table for every part of kiln that turns an instance type into a
 * machine size: kiln-emulator answers DescribeInstanceTypes from it and sizes
 * its QEMU guests by it, and a local build sizes its guest by the
 * infrastructure configuration's instanceTypes[0].  The sizes are EC2's
 * published defaults (vCPUs as EC2 counts them, hyperthreads included). */
#ifndef KILN_COMMON_AWS_INSTANCE_TYPES_H
#define KILN_COMMON_AWS_INSTANCE_TYPES_H

struct kiln_aws_instance_type {
  const char *name; /* "t3.micro" */
  int vcpus;
  int memory_mib;
};

/* The table, in a fixed order (family, then size), ended by {NULL}. */
extern const struct kiln_aws_instance_type kiln_aws_instance_types[];

/* The entry named name, or NULL (also for a NULL name).  Names match
 * exactly, as EC2's do. */
const struct kiln_aws_instance_type *kiln_aws_instance_type_find (const char *name);

#endif
