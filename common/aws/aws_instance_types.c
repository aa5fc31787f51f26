/* aws_instance_types.c - the EC2 instance-type table (see
 * aws_instance_types.h).  Adding a type here adds it to kiln-emulator's
 * DescribeInstanceTypes and RunInstances too, so only add types whose
 * figures are EC2's own. */
#include "aws_instance_types.h"

#include <stddef.h>
#include <string.h>

const struct kiln_aws_instance_type kiln_aws_instance_types[] = {
  {"t2.nano", 1, 512},    {"t2.micro", 1, 1024},    {"t2.small", 1, 2048},    {"t2.medium", 2, 4096},
  {"t2.large", 2, 8192},  {"t3.nano", 2, 512},      {"t3.micro", 2, 1024},    {"t3.small", 2, 2048},
  {"t3.medium", 2, 4096}, {"t3.large", 2, 8192},    {"t3.xlarge", 4, 16384},  {"t3.2xlarge", 8, 32768},
  {"m5.large", 2, 8192},  {"m5.xlarge", 4, 16384},  {"m5.2xlarge", 8, 32768}, {"c5.large", 2, 4096},
  {"c5.xlarge", 4, 8192}, {"c5.2xlarge", 8, 16384}, {"r5.large", 2, 16384},   {"r5.xlarge", 4, 32768},
  {NULL, 0, 0},
};

const struct kiln_aws_instance_type *
kiln_aws_instance_type_find (const char *name)
{
  for (const struct kiln_aws_instance_type *t = kiln_aws_instance_types; name && t->name; t++)
    if (strcmp (t->name, name) == 0)
      return t;
  return NULL;
}
