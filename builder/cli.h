/* cli.h - the kiln command's subcommands, one file each (cmd_*.c); main.c
 * picks one by name.  Each returns the process exit status. */
#ifndef KILN_BUILDER_CLI_H
#define KILN_BUILDER_CLI_H

#include <signal.h>

/* Raised by SIGINT/SIGTERM; long operations poll it and stop cleanly. */
extern volatile sig_atomic_t kiln_cli_cancel;
extern volatile sig_atomic_t kiln_cli_signal;

int kiln_cmd_validate (int argc, char **argv);
int kiln_cmd_component (int argc, char **argv);
int kiln_cmd_build (int argc, char **argv);
int kiln_cmd_image (int argc, char **argv);
int kiln_cmd_image_convert (int argc, char **argv);
int kiln_cmd_image_import (int argc, char **argv);
int kiln_cmd_image_export (int argc, char **argv);
int kiln_cmd_doctor (int argc, char **argv);

/* Exit statuses shared by the subcommands. */
#define KILN_EXIT_OK 0
#define KILN_EXIT_FAILED 1
#define KILN_EXIT_USAGE 2
#define KILN_EXIT_REBOOT 194

#endif
