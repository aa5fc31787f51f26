/* cmd_doctor.c - `kiln doctor`: what kiln finds on this host, for a newcomer
 * whose first build failed and for bug reports.
 *
 *   kiln doctor [--accel auto|kvm|tcg] [--cpu MODEL] [--reprobe]
 *
 * Prints one line per fact: the QEMU and qemu-img it runs (with versions),
 * /dev/kvm, the accelerator a build would use in the given mode and why
 * (with each probe attempt, and whether the verdict came from the cache),
 * whether libvirt, libguestfs, skopeo and debootstrap are there, and kiln's
 * cache and runtime directories.  --reprobe forgets the cached verdict
 * first.  Exit status 0 when kiln can start guests here (an accelerator was
 * chosen), 1 when it cannot (QEMU missing or failing), 2 on usage errors. */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "accel/accel.h"
#include "cleanup.h"
#include "cli.h"
#include "fsutil.h"
#include "process.h"
#include "rundir.h"
#include "xalloc.h"

static void
doctor_usage (FILE *out)
{
  fputs ("usage: kiln doctor [--accel auto|kvm|tcg] [--cpu MODEL] [--reprobe]\n"
         "Prints what kiln finds on this host: QEMU, the accelerator builds use and why,\n"
         "libvirt, libguestfs, skopeo, and kiln's cache and runtime directories.\n"
         "--reprobe forgets the cached accelerator verdict and probes again.\n",
         out);
}

/* The first line `program ARG` prints (stdout, else stderr), or why not. */
static char *
first_line_of (const char *program, const char *arg)
{
  _cleanup_free_ char *found = kiln_find_program (program);
  if (found == NULL)
    return kiln_xasprintf ("not installed (no %s on PATH)", program);
  char *argv[] = {(char *) found, (char *) arg, NULL};
  struct kiln_process_spec spec = {.argv = argv, .timeout_ms = 10000, .capture_limit = 4096};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_process_run (&spec, &res, &e) < 0)
    return kiln_xasprintf ("%s: %s", found, kiln_error_message (e));
  const char *text = res.out.len ? kiln_buf_str (&res.out) : kiln_buf_str (&res.err);
  text += strspn (text, "\n ");
  char *line = kiln_xasprintf ("%s (%.*s)%s", found, (int) strcspn (text, "\n"), text,
                               res.timed_out ? ", did not answer in 10 s" : res.exit_code ? ", failed" : "");
  kiln_process_result_release (&res);
  return line;
}

static const char *const outcome_words[] = {"not run", "finished", "failed", "did not finish"};

static void
print_attempt (const char *accel, const struct kiln_accel_attempt *a)
{
  printf ("  probe:       %s -cpu %s: %s in %.2f s", accel, a->cpu, outcome_words[a->outcome], (double) a->ms / 1000.0);
  if (a->outcome == KILN_ACCEL_PROBE_TIMED_OUT)
    printf (" (deadline %.2f s)", (double) a->deadline_ms / 1000.0);
  if (a->detail[0])
    printf (": %s", a->detail);
  putchar ('\n');
}

int
kiln_cmd_doctor (int argc, char **argv)
{
  static const struct option options[] = {
    {"accel", required_argument, NULL, 'a'},
    {"cpu", required_argument, NULL, 'c'},
    {"reprobe", no_argument, NULL, 'r'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  const char *accel = NULL, *cpu = NULL;
  bool reprobe = false;
  int opt;
  optind = 1;
  while ((opt = getopt_long (argc, argv, "h", options, NULL)) != -1)
    switch (opt)
      {
      case 'a':
        accel = optarg;
        break;
      case 'c':
        cpu = optarg;
        break;
      case 'r':
        reprobe = true;
        break;
      case 'h':
        doctor_usage (stdout);
        return KILN_EXIT_OK;
      default:
        doctor_usage (stderr);
        return KILN_EXIT_USAGE;
      }
  if (optind != argc)
    {
      doctor_usage (stderr);
      return KILN_EXIT_USAGE;
    }
  _cleanup_error_ kiln_error *e = NULL;
  enum kiln_accel_mode mode;
  if (kiln_accel_mode_parse (accel, &mode, &e) < 0)
    {
      fprintf (stderr, "kiln doctor: %s\n", kiln_error_message (e));
      return KILN_EXIT_USAGE;
    }

  printf ("kiln:        %s\n", KILN_VERSION);
  const char *qemu = kiln_accel_qemu_binary ();
  _cleanup_free_ char *qemu_line = first_line_of (qemu, "--version");
  _cleanup_free_ char *img_line = first_line_of ("qemu-img", "--version");
  printf ("QEMU:        %s%s\n", qemu_line, getenv ("KILN_QEMU") && *getenv ("KILN_QEMU") ? " [KILN_QEMU]" : "");
  printf ("qemu-img:    %s\n", img_line);
  int fd = open ("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd >= 0)
    {
      close (fd);
      printf ("/dev/kvm:    opens for reading and writing (whether KVM runs guests is the probe's to say)\n");
    }
  else
    printf ("/dev/kvm:    %m\n");

  if (reprobe)
    kiln_accel_forget (qemu);
  struct kiln_accel_choice choice;
  bool from_cache = false;
  int status = KILN_EXIT_OK;
  if (kiln_accel_resolve (mode, qemu, cpu, &choice, &from_cache, &e) < 0)
    {
      printf ("accelerator: none (--accel %s): %s\n", kiln_accel_mode_name (mode), kiln_error_message (e));
      status = KILN_EXIT_FAILED;
    }
  else
    printf ("accelerator: %s, -cpu %s (--accel %s): %s\n", kiln_accel_name (choice.accel), choice.cpu,
            kiln_accel_mode_name (mode), choice.reason);
  struct kiln_accel_probe probe;
  if (mode != KILN_ACCEL_MODE_TCG && kiln_accel_memo (qemu, &probe))
    {
      print_attempt ("tcg", &probe.tcg);
      for (int i = 0; i < probe.n_kvm; i++)
        print_attempt ("kvm", &probe.kvm[i]);
      if (probe.demoted[0])
        printf ("  demoted:     %s\n", probe.demoted);
      printf ("  verdict:     %s\n", from_cache ? "cached for this boot and QEMU binary (--reprobe to probe again)"
                                                : "probed now, and cached for this boot and QEMU binary");
    }

  _cleanup_free_ char *virsh = first_line_of ("virsh", "--version");
  _cleanup_free_ char *libvirtd = kiln_find_program ("libvirtd");
  printf ("libvirt:     virsh %s; libvirtd %s\n", virsh, libvirtd ? libvirtd : "not installed");
  _cleanup_free_ char *guestfish = first_line_of ("guestfish", "--version");
  printf ("libguestfs:  %s\n", guestfish);
  _cleanup_free_ char *skopeo = first_line_of ("skopeo", "--version");
  printf ("skopeo:      %s\n", skopeo);
  _cleanup_free_ char *debootstrap = kiln_find_program ("debootstrap");
  printf ("debootstrap: %s\n", debootstrap ? debootstrap : "not installed (kiln image bootstrap debian-12 needs it)");

  _cleanup_free_ char *cache = NULL;
  _cleanup_free_ char *runtime = NULL;
  kiln_error_freep (&e);
  if (kiln_cache_dir (&cache, &e) < 0)
    printf ("cache:       %s\n", kiln_error_message (e));
  else
    printf ("cache:       %s\n", cache);
  kiln_error_freep (&e);
  if (kiln_rundir_base (&runtime, &e) < 0)
    printf ("runtime:     %s\n", kiln_error_message (e));
  else
    printf ("runtime:     %s\n", runtime);
  return status;
}
