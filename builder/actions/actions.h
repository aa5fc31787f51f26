/* actions.h - every action module kiln knows, one definition each, gathered
 * into the table in registry.c.  One file per family of modules. */
#ifndef KILN_BUILDER_ACTIONS_H
#define KILN_BUILDER_ACTIONS_H

#include "action.h"

/* exec.c */
extern const struct kiln_action kiln_action_execute_bash;
extern const struct kiln_action kiln_action_execute_binary;
/* document.c */
extern const struct kiln_action kiln_action_execute_document;
/* files.c */
extern const struct kiln_action kiln_action_create_file;
extern const struct kiln_action kiln_action_append_file;
extern const struct kiln_action kiln_action_copy_file;
extern const struct kiln_action kiln_action_move_file;
extern const struct kiln_action kiln_action_delete_file;
extern const struct kiln_action kiln_action_read_file;
extern const struct kiln_action kiln_action_list_files;
extern const struct kiln_action kiln_action_set_file_encoding;
/* folders.c */
extern const struct kiln_action kiln_action_create_folder;
extern const struct kiln_action kiln_action_copy_folder;
extern const struct kiln_action kiln_action_move_folder;
extern const struct kiln_action kiln_action_delete_folder;
extern const struct kiln_action kiln_action_create_symlink;
/* ownership.c */
extern const struct kiln_action kiln_action_set_file_owner;
extern const struct kiln_action kiln_action_set_folder_owner;
extern const struct kiln_action kiln_action_set_file_permissions;
extern const struct kiln_action kiln_action_set_folder_permissions;
/* web_download.c */
extern const struct kiln_action kiln_action_web_download;
/* s3.c */
extern const struct kiln_action kiln_action_s3_download;
extern const struct kiln_action kiln_action_s3_upload;
/* system.c */
extern const struct kiln_action kiln_action_update_os;
extern const struct kiln_action kiln_action_reboot;
/* assert.c */
extern const struct kiln_action kiln_action_assert;
/* windows.c: recognised, refused on Linux */
extern const struct kiln_action kiln_action_execute_powershell;
extern const struct kiln_action kiln_action_install_msi;
extern const struct kiln_action kiln_action_uninstall_msi;
extern const struct kiln_action kiln_action_set_registry;

#endif
