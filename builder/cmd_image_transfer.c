/* cmd_image_transfer.c - `kiln image convert | import | export`: disks
 * between formats, and between files and a cloud driver's images.
 *
 *   kiln image convert IN OUT [--format F] [--compress]
 *   kiln image import FILE --name NAME [--driver ec2] [--share ACCOUNT]...
 *                     [--boot-mode legacy-bios|uefi] [--architecture x86_64|arm64]
 *                     [--description TEXT] [--workers N]
 *                     [--method ebs [--parent SNAPSHOT|IMAGE] | --method s3 --bucket B]
 *                     [--endpoint-url URL] [--region R] [--profile P]
 *   kiln image export IMAGE OUT [--format F] [--driver ec2] [--workers N] [...]
 *
 * Import prints the new image's id on stdout; the driver reads the disk in
 * place where it can (raw, qcow2) and writes any conversion it needs into
 * the command's run directory.  Export writes OUT under a
 * temporary name and renames it when complete.  Both remove what they made
 * on every ending (the run directory, a half-made image or snapshot). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "cli.h"
#include "disk_image.h"
#include "distribution.h"
#include "driver.h"
#include "process.h"
#include "rundir.h"
#include "xalloc.h"

#define MIB (1024.0 * 1024.0)


static int
interrupted_status (void)
{
  return 128 + (kiln_cli_signal ? kiln_cli_signal : 2);
}

/* "sent 120.0 MiB of 4096.0 MiB, 35.2 MiB/s" on one line when stderr is a
 * terminal, else a line every few seconds. */
static void
show_progress (uint64_t done, uint64_t total, double seconds, void *opaque)
{
  const char *verb = opaque;
  static double last;
  bool tty = isatty (STDERR_FILENO);
  if (!tty && seconds - last < 5 && done < total)
    return;
  last = seconds;
  fprintf (stderr, "%s%s %.1f MiB of %.1f MiB, %.1f MiB/s%s", tty ? "\r" : "", verb, (double) done / MIB,
           (double) total / MIB, seconds > 0 ? (double) done / MIB / seconds : 0.0, tty ? "" : "\n");
  fflush (stderr);
}

int
kiln_cmd_image_convert (int argc, char **argv)
{
  static const struct option options[] = {
    {"format", required_argument, NULL, 'f'},
    {"compress", no_argument, NULL, 'c'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  const char *format = NULL;
  bool compress = false;
  int opt;
  optind = 1;
  while ((opt = getopt_long (argc, argv, "f:h", options, NULL)) != -1)
    switch (opt)
      {
      case 'f':
        format = optarg;
        break;
      case 'c':
        compress = true;
        break;
      case 'h':
        puts ("usage: kiln image convert IN OUT [--format qcow2|raw|vmdk|vhd|vhdx] [--compress]\n"
              "The format defaults to OUT's extension.  --compress makes a compressed qcow2 or a\n"
              "streamOptimized vmdk.");
        return KILN_EXIT_OK;
      default:
        return KILN_EXIT_USAGE;
      }
  if (optind != argc - 2)
    {
      fputs ("usage: kiln image convert IN OUT [--format qcow2|raw|vmdk|vhd|vhdx] [--compress]\n", stderr);
      return KILN_EXIT_USAGE;
    }
  const char *in = argv[optind], *out = argv[optind + 1];
  if (format == NULL)
    {
      const char *dot = strrchr (out, '.');
      format = dot ? dot + 1 : "";
    }
  _cleanup_error_ kiln_error *e = NULL;
  enum kiln_image_format fmt;
  if (kiln_image_format_parse (format, &fmt, &e) < 0)
    {
      fprintf (stderr, "kiln image convert: %s (give --format)\n", kiln_error_message (e));
      return KILN_EXIT_USAGE;
    }
  if (compress && fmt != KILN_IMAGE_QCOW2 && fmt != KILN_IMAGE_VMDK)
    {
      fputs ("kiln image convert: --compress applies to qcow2 and vmdk (streamOptimized) only\n", stderr);
      return KILN_EXIT_USAGE;
    }
  _cleanup_free_ char *tmp = NULL;
  tmp = kiln_xasprintf ("%s.tmp-%d", out, (int) getpid ());
  if (kiln_disk_convert (in, tmp, kiln_image_format_name (fmt), compress, &kiln_cli_cancel, &e) < 0
      || (rename (tmp, out) < 0 && kiln_fail_errno (&e, errno, "rename '%s' to '%s'", tmp, out)))
    {
      unlink (tmp);
      fprintf (stderr, "kiln image convert: %s\n", kiln_error_message (e));
      return kiln_cli_cancel ? interrupted_status () : KILN_EXIT_FAILED;
    }
  return KILN_EXIT_OK;
}

/* Options import and export share. */
struct transfer_cli {
  const char *driver_name;
  struct kiln_cloud_settings cloud;
  struct kiln_image_transfer t;
  char **share;
};

enum {
  OPT_DRIVER = 1000,
  OPT_ENDPOINT,
  OPT_REGION,
  OPT_PROFILE,
  OPT_WORKERS,
  OPT_NAME,
  OPT_DESCRIPTION,
  OPT_SHARE,
  OPT_BOOT_MODE,
  OPT_ARCH,
  OPT_METHOD,
  OPT_BUCKET,
  OPT_PARENT,
  OPT_FORMAT,
};

/* The options transfer_option() parses, for each command's table. */
#define TRANSFER_OPTIONS                                                                                             \
  {"driver", required_argument, NULL, OPT_DRIVER}, {"endpoint-url", required_argument, NULL, OPT_ENDPOINT},           \
      {"region", required_argument, NULL, OPT_REGION}, {"profile", required_argument, NULL, OPT_PROFILE},             \
      {"workers", required_argument, NULL, OPT_WORKERS}

/* Parses one shared option; 1 if it was one, 0 if not, -1 on a bad value. */
static int
transfer_option (struct transfer_cli *c, int opt, const char *arg)
{
  switch (opt)
    {
    case OPT_DRIVER:
      c->driver_name = arg;
      return 1;
    case OPT_ENDPOINT:
      c->cloud.endpoint_url = arg;
      return 1;
    case OPT_REGION:
      c->cloud.region = arg;
      return 1;
    case OPT_PROFILE:
      c->cloud.profile = arg;
      return 1;
    case OPT_WORKERS:
      {
        char *end = NULL;
        long v = strtol (arg, &end, 10);
        if (*arg == '\0' || *end != '\0' || v < 1 || v > 64)
          {
            fprintf (stderr, "kiln image: --workers takes a number from 1 to 64, not '%s'\n", arg);
            return -1;
          }
        c->t.workers = (int) v;
        return 1;
      }
    default:
      return 0;
    }
}

static int
run_transfer (struct transfer_cli *c, const char *what, const char *image_id, const char *raw_path,
              kiln_error **err)
{
  const struct kiln_driver *driver = kiln_driver_find (c->driver_name);
  if (driver == NULL || !driver->cloud_images)
    return kiln_fail_invalid (err, "driver '%s' keeps no images to %s (use a cloud driver: ec2)", c->driver_name,
                              what);
  struct kiln_instance_spec spec = {.name = what, .image = NULL, .cancel = &kiln_cli_cancel, .cloud = &c->cloud};
  c->t.cancel = &kiln_cli_cancel;
  c->t.share_user_ids = (const char *const *) c->share;
  return image_id ? kiln_image_export (driver, &spec, image_id, raw_path, &c->t, err)
                  : kiln_image_import (driver, &spec, raw_path, &c->t, err);
}

int
kiln_cmd_image_import (int argc, char **argv)
{
  static const struct option options[] = {
    TRANSFER_OPTIONS,
    {"name", required_argument, NULL, OPT_NAME},
    {"description", required_argument, NULL, OPT_DESCRIPTION},
    {"share", required_argument, NULL, OPT_SHARE},
    {"boot-mode", required_argument, NULL, OPT_BOOT_MODE},
    {"architecture", required_argument, NULL, OPT_ARCH},
    {"method", required_argument, NULL, OPT_METHOD},
    {"bucket", required_argument, NULL, OPT_BUCKET},
    {"parent", required_argument, NULL, OPT_PARENT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  static const char usage[]
      = "usage: kiln image import FILE --name NAME [--share ACCOUNT]... [--boot-mode legacy-bios|uefi]\n"
        "                         [--architecture x86_64|arm64] [--description TEXT]\n"
        "                         [--method ebs [--parent SNAPSHOT|IMAGE] | --method s3 --bucket BUCKET]\n"
        "                         [--workers N] [--driver ec2] [--endpoint-url URL] [--region R] [--profile P]\n";
  struct transfer_cli c = {.driver_name = "ec2"};
  _cleanup_strv_ char **share = NULL;
  int opt, r;
  optind = 1;
  while ((opt = getopt_long (argc, argv, "h", options, NULL)) != -1)
    {
      if ((r = transfer_option (&c, opt, optarg)) < 0)
        return KILN_EXIT_USAGE;
      if (r == 1)
        continue;
      switch (opt)
        {
        case OPT_NAME:
          c.t.name = optarg;
          break;
        case OPT_DESCRIPTION:
          c.t.description = optarg;
          break;
        case OPT_SHARE:
          if (strlen (optarg) != 12 || strspn (optarg, "0123456789") != 12)
            {
              fprintf (stderr, "kiln image import: --share takes a 12-digit account id, not '%s'\n", optarg);
              return KILN_EXIT_USAGE;
            }
          kiln_strv_push (&share, optarg);
          break;
        case OPT_BOOT_MODE:
          if (strcmp (optarg, "legacy-bios") != 0 && strcmp (optarg, "uefi") != 0)
            {
              fprintf (stderr, "kiln image import: --boot-mode is legacy-bios or uefi, not '%s'\n", optarg);
              return KILN_EXIT_USAGE;
            }
          c.t.boot_mode = optarg;
          break;
        case OPT_ARCH:
          if (strcmp (optarg, "x86_64") != 0 && strcmp (optarg, "arm64") != 0)
            {
              fprintf (stderr, "kiln image import: --architecture is x86_64 or arm64, not '%s'\n", optarg);
              return KILN_EXIT_USAGE;
            }
          c.t.architecture = optarg;
          break;
        case OPT_METHOD:
          if (strcmp (optarg, "ebs") != 0 && strcmp (optarg, "s3") != 0)
            {
              fprintf (stderr, "kiln image import: --method is ebs (the EBS direct APIs) or s3 (S3, then "
                       "ImportSnapshot), not '%s'\n", optarg);
              return KILN_EXIT_USAGE;
            }
          c.t.method = optarg;
          break;
        case OPT_BUCKET:
          c.t.bucket = optarg;
          break;
        case OPT_PARENT:
          c.t.parent = optarg;
          break;
        case 'h':
          fputs (usage, stdout);
          return KILN_EXIT_OK;
        default:
          fputs (usage, stderr);
          return KILN_EXIT_USAGE;
        }
    }
  if (optind != argc - 1 || c.t.name == NULL)
    {
      fputs (usage, stderr);
      return KILN_EXIT_USAGE;
    }
  bool by_s3 = c.t.method && strcmp (c.t.method, "s3") == 0;
  if (by_s3 != (c.t.bucket != NULL) || (by_s3 && c.t.parent))
    {
      fputs (by_s3 ? (c.t.parent ? "kiln image import: --parent works with --method ebs only\n"
                                 : "kiln image import: --method s3 needs --bucket, where the disk is staged\n")
                   : "kiln image import: --bucket goes with --method s3\n",
             stderr);
      return KILN_EXIT_USAGE;
    }
  c.share = share;
  const char *file = argv[optind];
  _cleanup_error_ kiln_error *e = NULL;
  /* A name EC2 would refuse is refused before any data moves. */
  _cleanup_free_ char *checked = NULL;
  if (strstr (c.t.name, "{{") != NULL)
    {
      fprintf (stderr, "kiln image import: --name '%s': templates belong in a distribution file\n", c.t.name);
      return KILN_EXIT_USAGE;
    }
  if (kiln_ami_name_expand (c.t.name, "", "", &checked, &e) < 0)
    {
      fprintf (stderr, "kiln image import: --name: %s\n", kiln_error_message (e));
      return KILN_EXIT_USAGE;
    }
  kiln_rundir_reap_stale (kiln_drivers_reap, NULL);
  struct kiln_rundir *rd = NULL;
  if (kiln_rundir_create ("import", &rd, &e) < 0)
    {
      fprintf (stderr, "kiln image import: %s\n", kiln_error_message (e));
      return KILN_EXIT_FAILED;
    }
  /* Conversions the driver needs (raw, a streamOptimized VMDK) land in the
   * run directory, removed whatever the ending. */
  c.t.scratch_dir = rd->path;
  int status = KILN_EXIT_OK;
  struct timespec t0, t1;
  clock_gettime (CLOCK_MONOTONIC, &t0);
  c.t.progress = show_progress;
  c.t.progress_opaque = (void *) (c.t.method && strcmp (c.t.method, "s3") == 0 ? "kiln image import: staged"
                                                                                : "kiln image import: read");
  if (run_transfer (&c, "import", NULL, file, &e) < 0)
    status = kiln_cli_cancel ? interrupted_status () : KILN_EXIT_FAILED;
  clock_gettime (CLOCK_MONOTONIC, &t1);
  if (isatty (STDERR_FILENO))
    fputc ('\n', stderr);
  if (status == KILN_EXIT_OK)
    {
      double s = (double) (t1.tv_sec - t0.tv_sec) + (double) (t1.tv_nsec - t0.tv_nsec) / 1e9;
      fprintf (stderr,
               "kiln image import: %s from snapshot %s: read %.1f MiB, sent %.1f MiB (%llu zero blocks skipped, "
               "%llu unchanged) in %.1f s\n",
               c.t.image_id, c.t.snapshot_id, (double) c.t.bytes_read / MIB, (double) c.t.bytes_sent / MIB,
               (unsigned long long) c.t.blocks_skipped, (unsigned long long) c.t.blocks_unchanged, s);
      printf ("%s\n", c.t.image_id);
    }
  if (status != KILN_EXIT_OK && e)
    fprintf (stderr, "kiln image import: %s\n", kiln_error_message (e));
  kiln_image_transfer_release (&c.t);
  kiln_rundir_release (rd, false);
  return status;
}

int
kiln_cmd_image_export (int argc, char **argv)
{
  static const struct option options[] = {
    TRANSFER_OPTIONS,
    {"format", required_argument, NULL, OPT_FORMAT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  static const char usage[]
      = "usage: kiln image export IMAGE OUT [--format qcow2|raw|vmdk|vhd|vhdx] [--workers N]\n"
        "                         [--driver ec2] [--endpoint-url URL] [--region R] [--profile P]\n"
        "The format defaults to OUT's extension, else raw.\n";
  struct transfer_cli c = {.driver_name = "ec2"};
  const char *format = NULL;
  int opt, r;
  optind = 1;
  while ((opt = getopt_long (argc, argv, "h", options, NULL)) != -1)
    {
      if ((r = transfer_option (&c, opt, optarg)) < 0)
        return KILN_EXIT_USAGE;
      if (r == 1)
        continue;
      if (opt == OPT_FORMAT)
        format = optarg;
      else if (opt == 'h')
        {
          fputs (usage, stdout);
          return KILN_EXIT_OK;
        }
      else
        {
          fputs (usage, stderr);
          return KILN_EXIT_USAGE;
        }
    }
  if (optind != argc - 2)
    {
      fputs (usage, stderr);
      return KILN_EXIT_USAGE;
    }
  const char *image = argv[optind], *out = argv[optind + 1];
  _cleanup_error_ kiln_error *e = NULL;
  enum kiln_image_format fmt = KILN_IMAGE_RAW;
  if (format == NULL)
    {
      const char *dot = strrchr (out, '.');
      if (dot && kiln_image_format_parse (dot + 1, &fmt, NULL) < 0)
        fmt = KILN_IMAGE_RAW;
    }
  else if (kiln_image_format_parse (format, &fmt, &e) < 0)
    {
      fprintf (stderr, "kiln image export: %s\n", kiln_error_message (e));
      return KILN_EXIT_USAGE;
    }
  kiln_rundir_reap_stale (kiln_drivers_reap, NULL);
  struct kiln_rundir *rd = NULL;
  if (kiln_rundir_create ("export", &rd, &e) < 0)
    {
      fprintf (stderr, "kiln image export: %s\n", kiln_error_message (e));
      return KILN_EXIT_FAILED;
    }
  /* The raw disk lands in the run directory; OUT is written under a
   * temporary name beside it and renamed when complete. */
  _cleanup_free_ char *raw = NULL;
  _cleanup_free_ char *tmp = NULL;
  raw = kiln_xasprintf ("%s/disk.raw", rd->path);
  tmp = kiln_xasprintf ("%s.tmp-%d", out, (int) getpid ());
  c.t.progress = show_progress;
  c.t.progress_opaque = (void *) "kiln image export: fetched";
  int status = KILN_EXIT_OK;
  if (kiln_rundir_track (rd, tmp, &e) < 0 || run_transfer (&c, "export", image, raw, &e) < 0)
    status = kiln_cli_cancel ? interrupted_status () : KILN_EXIT_FAILED;
  if (isatty (STDERR_FILENO))
    fputc ('\n', stderr);
  if (status == KILN_EXIT_OK && fmt == KILN_IMAGE_RAW && rename (raw, out) == 0)
    ;
  else if (status == KILN_EXIT_OK)
    {
      /* Another format, or another file system: qemu-img copies sparsely. */
      if (kiln_disk_convert (raw, tmp, kiln_image_format_name (fmt), false, &kiln_cli_cancel, &e) < 0
          || (rename (tmp, out) < 0 && kiln_fail_errno (&e, errno, "rename '%s' to '%s'", tmp, out)))
        status = kiln_cli_cancel ? interrupted_status () : KILN_EXIT_FAILED;
    }
  unlink (tmp);
  kiln_rundir_release (rd, false);
  if (status == KILN_EXIT_OK)
    fprintf (stderr, "kiln image export: %s (snapshot %s) to %s: %.1f MiB of data\n", image, c.t.snapshot_id, out,
             (double) c.t.bytes_sent / MIB);
  else
    fprintf (stderr, "kiln image export: %s\n", kiln_error_message (e));
  kiln_image_transfer_release (&c.t);
  return status;
}
