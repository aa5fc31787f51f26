/* main.c - the kiln-emulator command: serve (the default) and import-image.
 *
 *   kiln-emulator [--listen HOST:PORT] [--state-dir DIR] [--instances qemu|mock]
 *                 [--accounts FILE] [--threads N]
 *   kiln-emulator import-image FILE --name NAME --state-dir DIR [--region R]
 *                 [--account ID] [--public]
 *
 * Serving blocks SIGINT and SIGTERM in every thread and waits for them here,
 * so a signal stops the listener, then the guests (their disks are kept in
 * the state directory), then closes the database: nothing acknowledged is
 * lost and no QEMU outlives the emulator. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "dispatch.h"
#include "ec2.h"
#include "emulator.h"
#include "fsutil.h"
#include "log.h"
#include "server.h"
#include "store.h"
#include "accel/accel.h"
#include "process.h"
#include "xalloc.h"
#include "xml_doc.h"

static void
usage (FILE *f)
{
  fputs ("usage: kiln-emulator [--listen HOST:PORT] [--state-dir DIR] [--instances qemu|mock]\n"
         "                     [--accounts FILE] [--threads N] [--log-level LEVEL]\n"
         "                     [--accel auto|kvm|tcg] [--cpu MODEL]\n"
         "       kiln-emulator import-image FILE --name NAME --state-dir DIR [--region REGION]\n"
         "                     [--account ID] [--public]\n"
         "\n"
         "An offline AWS endpoint for EC2 and SSM (SigV4 checked) whose instances are QEMU\n"
         "guests.  Defaults: --listen " EMU_DEFAULT_LISTEN ", state in memory, --instances qemu\n"
         "when qemu-system-x86_64 is installed (else mock), accounts test/test (000000000000)\n"
         "and test2/test2 (111111111111).  --accel (default $KILN_ACCEL, else auto) and --cpu:\n"
         "what qemu instances run under, as for kiln build (auto: KVM only where a probe shows\n"
         "it runs guests faster than TCG).\n",
         f);
}

static void
emu_release (struct kiln_emu *emu)
{
  emu_store_close (emu);
  if (emu->own_data_dir && emu->data_dir)
    {
      _cleanup_error_ kiln_error *err = NULL;
      if (kiln_remove_tree (emu->data_dir, &err) < 0)
        kiln_log_warn ("%s", kiln_error_message (err));
    }
  for (size_t i = 0; i < emu->n_accounts; i++)
    {
      free (emu->accounts[i].id);
      free (emu->accounts[i].access_key_id);
      free (emu->accounts[i].secret_access_key);
    }
  free (emu->accounts);
  free (emu->state_dir);
  free (emu->data_dir);
}

static int
cmd_import_image (int argc, char **argv)
{
  static const struct option opts[] = {
    {"name", required_argument, NULL, 'n'},   {"state-dir", required_argument, NULL, 's'},
    {"region", required_argument, NULL, 'r'}, {"account", required_argument, NULL, 'a'},
    {"public", no_argument, NULL, 'p'},       {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  const char *name = NULL, *state_dir = NULL, *region = "us-east-1", *account = "000000000000";
  bool is_public = false;
  int c;
  optind = 1;
  while ((c = getopt_long (argc, argv, "", opts, NULL)) != -1)
    switch (c)
      {
      case 'n': name = optarg; break;
      case 's': state_dir = optarg; break;
      case 'r': region = optarg; break;
      case 'a': account = optarg; break;
      case 'p': is_public = true; break;
      case 'h': usage (stdout); return 0;
      default: usage (stderr); return 2;
      }
  if (optind + 1 != argc || name == NULL || state_dir == NULL)
    {
      fprintf (stderr, "kiln-emulator import-image: expected FILE, --name NAME and --state-dir DIR\n");
      return 2;
    }
  if (!emu_region_known (region))
    {
      fprintf (stderr, "kiln-emulator import-image: --region '%s' is not a region kiln-emulator serves\n", region);
      return 2;
    }
  struct kiln_emu emu = {.instances = EMU_INSTANCES_MOCK};
  _cleanup_error_ kiln_error *err = NULL;
  _cleanup_free_ char *image_id = NULL;
  int r = 1;
  if (kiln_mkdir_p (state_dir, 0755, &err) == 0)
    {
      emu.state_dir = realpath (state_dir, NULL);
      emu.data_dir = kiln_xstrdup (emu.state_dir);
      if (emu_store_open (&emu, &err) == 0
          && emu_image_import (&emu, argv[optind], name, region, account, is_public, &image_id, &err) == 0)
        {
          printf ("%s\n", image_id);
          r = 0;
        }
    }
  if (r != 0)
    fprintf (stderr, "kiln-emulator import-image: %s\n", kiln_error_message (err));
  emu_release (&emu);
  return r;
}

static int
serve (int argc, char **argv)
{
  static const struct option opts[] = {
    {"listen", required_argument, NULL, 'l'},    {"state-dir", required_argument, NULL, 's'},
    {"instances", required_argument, NULL, 'i'}, {"accounts", required_argument, NULL, 'a'},
    {"threads", required_argument, NULL, 't'},   {"log-level", required_argument, NULL, 'L'},
    {"help", no_argument, NULL, 'h'},            {"version", no_argument, NULL, 'V'},
    {"accel", required_argument, NULL, 'A'},     {"cpu", required_argument, NULL, 'C'},
    {NULL, 0, NULL, 0},
  };
  const char *listen = EMU_DEFAULT_LISTEN, *state_dir = NULL, *instances = NULL, *accounts = NULL;
  const char *accel = NULL, *cpu = NULL;
  unsigned threads = 4;
  int c;
  while ((c = getopt_long (argc, argv, "", opts, NULL)) != -1)
    switch (c)
      {
      case 'l': listen = optarg; break;
      case 's': state_dir = optarg; break;
      case 'i': instances = optarg; break;
      case 'a': accounts = optarg; break;
      case 'A': accel = optarg; break;
      case 'C': cpu = optarg; break;
      case 't':
        threads = (unsigned) strtoul (optarg, NULL, 10);
        if (threads == 0 || threads > 256)
          {
            fprintf (stderr, "kiln-emulator: --threads wants 1..256\n");
            return 2;
          }
        break;
      case 'L':
        {
          int level = kiln_log_level_parse (optarg);
          if (level < 0)
            {
              fprintf (stderr, "kiln-emulator: unknown --log-level '%s'\n", optarg);
              return 2;
            }
          kiln_log_set_level ((enum kiln_log_level) level);
          break;
        }
      case 'h': usage (stdout); return 0;
      case 'V': printf ("kiln-emulator %s\n", KILN_VERSION); return 0;
      default: usage (stderr); return 2;
      }
  if (optind != argc)
    {
      fprintf (stderr, "kiln-emulator: unexpected argument '%s'\n", argv[optind]);
      usage (stderr);
      return 2;
    }

  kiln_xml_init ();
  struct kiln_emu emu = {.accel = accel, .cpu_model = cpu};
  if (instances == NULL)
    {
      _cleanup_free_ char *qemu = kiln_find_program (kiln_accel_qemu_binary ());
      emu.instances = qemu ? EMU_INSTANCES_QEMU : EMU_INSTANCES_MOCK;
      if (emu.instances == EMU_INSTANCES_MOCK)
        kiln_log_warn ("%s is not installed: instances are mock (no guests)", kiln_accel_qemu_binary ());
    }
  else if (strcmp (instances, "qemu") == 0)
    emu.instances = EMU_INSTANCES_QEMU;
  else if (strcmp (instances, "mock") == 0)
    emu.instances = EMU_INSTANCES_MOCK;
  else
    {
      fprintf (stderr, "kiln-emulator: --instances is qemu or mock, not '%s'\n", instances);
      return 2;
    }
  /* The accelerator is decided before serving: the probe runs once, and
   * --accel kvm where KVM is unusable stops here, saying why. */
  struct kiln_accel_choice accel_choice = {0};
  {
    enum kiln_accel_mode mode;
    _cleanup_error_ kiln_error *accel_err = NULL;
    if (kiln_accel_mode_parse (accel, &mode, &accel_err) < 0)
      {
        fprintf (stderr, "kiln-emulator: %s\n", kiln_error_message (accel_err));
        return 2;
      }
    if (emu.instances == EMU_INSTANCES_QEMU
        && kiln_accel_resolve (mode, NULL, cpu, &accel_choice, NULL, &accel_err) < 0)
      {
        fprintf (stderr, "kiln-emulator: %s\n", kiln_error_message (accel_err));
        return 1;
      }
  }

  /* Signals are taken synchronously below; every thread started from here
   * on inherits the mask. */
  sigset_t stop;
  sigemptyset (&stop);
  sigaddset (&stop, SIGINT);
  sigaddset (&stop, SIGTERM);
  pthread_sigmask (SIG_BLOCK, &stop, NULL);
  signal (SIGPIPE, SIG_IGN);

  _cleanup_error_ kiln_error *err = NULL;
  struct emu_server *server = NULL;
  _cleanup_free_ char *url = NULL;
  int r = 1;
  if (emu_accounts_load (&emu, accounts, &err) < 0)
    goto out;
  if (state_dir)
    {
      if (kiln_mkdir_p (state_dir, 0755, &err) < 0)
        goto out;
      emu.state_dir = realpath (state_dir, NULL);
      emu.data_dir = kiln_xstrdup (emu.state_dir);
    }
  else
    {
      if (kiln_make_temp_dir ("kiln-emulator", &emu.data_dir, &err) < 0)
        goto out;
      emu.own_data_dir = true;
    }
  /* The VM host's instances, then each service's work an earlier run left
   * (and S3's leftovers from a killed emulator), before the first request. */
  if (emu_store_open (&emu, &err) < 0 || emu_start (&emu, &err) < 0)
    goto out;
  if (emu_server_start (&emu, listen, threads, &server, &url, &err) < 0)
    goto out;
  printf ("kiln-emulator: listening on %s (instances: %s%s%s, state: %s)\n", url,
          emu.instances == EMU_INSTANCES_QEMU ? "qemu" : "mock", emu.instances == EMU_INSTANCES_QEMU ? " under " : "",
          emu.instances == EMU_INSTANCES_QEMU ? kiln_accel_name (accel_choice.accel) : "",
          emu.state_dir ? emu.state_dir : "in memory");
  fflush (stdout);

  int sig = 0;
  while (sigwait (&stop, &sig) != 0)
    ;
  kiln_log_info ("kiln-emulator: %s: stopping", strsignal (sig));
  r = 0;

out:
  emu_server_stop (server);
  emu_stop (&emu);
  if (r != 0)
    fprintf (stderr, "kiln-emulator: %s\n", kiln_error_message (err));
  emu_release (&emu);
  return r;
}

int
main (int argc, char **argv)
{
  kiln_log_init_from_env ();
  if (argc > 1 && strcmp (argv[1], "import-image") == 0)
    return cmd_import_image (argc - 1, argv + 1);
  return serve (argc, argv);
}
