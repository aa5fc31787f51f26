/* registry.c - the table of action modules, looked up by the name a
 * document's `action:` gives (exact, case-sensitive, as AWSTOE does). */
#include <stdlib.h>
#include <string.h>

#include "actions.h"
#include "buf.h"

static const struct kiln_action *const registry[] = {
  &kiln_action_execute_bash,
  &kiln_action_execute_binary,
  &kiln_action_execute_document,
  &kiln_action_create_file,
  &kiln_action_append_file,
  &kiln_action_copy_file,
  &kiln_action_move_file,
  &kiln_action_delete_file,
  &kiln_action_read_file,
  &kiln_action_list_files,
  &kiln_action_set_file_encoding,
  &kiln_action_create_folder,
  &kiln_action_copy_folder,
  &kiln_action_move_folder,
  &kiln_action_delete_folder,
  &kiln_action_create_symlink,
  &kiln_action_set_file_owner,
  &kiln_action_set_folder_owner,
  &kiln_action_set_file_permissions,
  &kiln_action_set_folder_permissions,
  &kiln_action_web_download,
  &kiln_action_s3_download,
  &kiln_action_s3_upload,
  &kiln_action_update_os,
  &kiln_action_reboot,
  &kiln_action_assert,
  &kiln_action_execute_powershell,
  &kiln_action_install_msi,
  &kiln_action_uninstall_msi,
  &kiln_action_set_registry,
  NULL,
};

const struct kiln_action *
kiln_action_find (const char *name)
{
  for (const struct kiln_action *const *a = registry; *a; a++)
    if (strcmp ((*a)->name, name) == 0)
      return *a;
  return NULL;
}

bool
kiln_action_has_output (const struct kiln_action *a, const char *name)
{
  for (const char *const *o = a->outputs; o && *o; o++)
    if (strcmp (*o, name) == 0)
      return true;
  return false;
}

const char *
kiln_action_names (void)
{
  static char *names;
  if (names == NULL)
    {
      struct kiln_buf b = KILN_BUF_INIT;
      for (const struct kiln_action *const *a = registry; *a; a++)
        if (!(*a)->windows_only)
          kiln_buf_printf (&b, "%s%s", a == registry ? "" : ", ", (*a)->name);
      names = kiln_buf_steal (&b);
    }
  return names;
}
