/* windows.c - the Windows-only action modules.  kiln recognises their names
 * so a document written for Windows fails validation with a precise message
 * ("... is Windows-only and not supported on Linux") instead of "unknown
 * action"; they never run. */
#include "actions.h"

#define WINDOWS_ONLY(sym, action_name)                                                                                 \
  const struct kiln_action sym = {                                                                                     \
    .name = action_name,                                                                                               \
    .windows_only = true,                                                                                              \
    .shape = KILN_INPUTS_MAP,                                                                                          \
  }

WINDOWS_ONLY (kiln_action_execute_powershell, "ExecutePowerShell");
WINDOWS_ONLY (kiln_action_install_msi, "InstallMSI");
WINDOWS_ONLY (kiln_action_uninstall_msi, "UninstallMSI");
WINDOWS_ONLY (kiln_action_set_registry, "SetRegistry");
