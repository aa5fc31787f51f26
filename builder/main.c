/* main.c - the `kiln` command: global options, signal handling, and the
 * dispatch to subcommands (cmd_*.c). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "log.h"

volatile sig_atomic_t kiln_cli_cancel;
volatile sig_atomic_t kiln_cli_signal;

static void
on_signal (int sig)
{
  kiln_cli_cancel = 1;
  kiln_cli_signal = sig;
}

static void
usage (FILE *out)
{
  fputs ("usage: kiln [-v|--verbose] COMMAND [ARGS]\n"
         "\n"
         "commands:\n"
         "  validate FILE...            check component documents (AWSTOE schema 1.0)\n"
         "  component run --documents F[,F...] [--parameters k=v[,k=v...]] [--phases p[,p...]]\n"
         "                [--log-directory DIR] [--state-directory DIR] [--execution-id ID]\n"
         "                              run component documents on this host, as awstoe run does\n"
         "  build RECIPE [--driver qemu] [--output DIR] [--format qcow2|raw|vmdk|vhd|vhdx]\n"
         "               [--keep-on-failure] [--json] [--accel auto|kvm|tcg] [--cpu MODEL]\n"
         "                              build an image from an Image Builder recipe\n"
         "  image bootstrap NAME [--output FILE]\n"
         "                              build a base image from images/NAME\n"
         "  doctor [--accel auto|kvm|tcg] [--reprobe]\n"
         "                              what kiln finds on this host: QEMU, the accelerator and why,\n"
         "                              libvirt, libguestfs, skopeo, cache and runtime directories\n"
         "  version                     print kiln's version\n"
         "\n"
         "Set KILN_LOG=debug|info|warn|error for more or fewer diagnostics, and\n"
         "KILN_ACCEL=auto|kvm|tcg for the accelerator guests run under (as --accel).\n",
         out);
}

int
main (int argc, char **argv)
{
  kiln_log_init_from_env ();
  struct sigaction sa;
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  /* A child that closes its stdin early must not kill kiln. */
  signal (SIGPIPE, SIG_IGN);

  int i = 1;
  for (; i < argc && argv[i][0] == '-'; i++)
    {
      if (strcmp (argv[i], "-v") == 0 || strcmp (argv[i], "--verbose") == 0)
        kiln_log_set_level (kiln_log_get_level () < KILN_LOG_DEBUG ? kiln_log_get_level () + 1 : KILN_LOG_DEBUG);
      else if (strcmp (argv[i], "-h") == 0 || strcmp (argv[i], "--help") == 0)
        {
          usage (stdout);
          return KILN_EXIT_OK;
        }
      else if (strcmp (argv[i], "--version") == 0)
        {
          puts ("kiln " KILN_VERSION);
          return KILN_EXIT_OK;
        }
      else
        {
          fprintf (stderr, "kiln: unknown option '%s'\n", argv[i]);
          usage (stderr);
          return KILN_EXIT_USAGE;
        }
    }
  if (i == argc)
    {
      usage (stderr);
      return KILN_EXIT_USAGE;
    }
  const char *cmd = argv[i];
  int sub_argc = argc - i;
  char **sub_argv = argv + i;
  if (strcmp (cmd, "validate") == 0)
    return kiln_cmd_validate (sub_argc, sub_argv);
  if (strcmp (cmd, "component") == 0)
    return kiln_cmd_component (sub_argc, sub_argv);
  if (strcmp (cmd, "build") == 0)
    return kiln_cmd_build (sub_argc, sub_argv);
  if (strcmp (cmd, "image") == 0)
    return kiln_cmd_image (sub_argc, sub_argv);
  if (strcmp (cmd, "doctor") == 0)
    return kiln_cmd_doctor (sub_argc, sub_argv);
  if (strcmp (cmd, "version") == 0)
    {
      puts ("kiln " KILN_VERSION);
      return KILN_EXIT_OK;
    }
  if (strcmp (cmd, "help") == 0)
    {
      usage (stdout);
      return KILN_EXIT_OK;
    }
  fprintf (stderr, "kiln: unknown command '%s'\n", cmd);
  usage (stderr);
  return KILN_EXIT_USAGE;
}
