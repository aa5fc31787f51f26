/* test_accel.c - the accelerator decision and its cache (TAP output).
 *
 * Usage: test_accel DATA_DIR (tests/data/accel).
 *
 * Golden cases: each NAME.json there holds {"mode", "cpu", "probe"}, the
 * probe in the cache file's format; the decision is compared with NAME.out
 * ("accel=... cpu=... fallback=..." and the reason, or "error: ...").
 * KILN_REGENERATE=1 rewrites the .out files (review the diff).
 *
 * Then the pure helpers (mode parsing with KILN_ACCEL, which CPU feature to
 * drop, the cache key, the record's JSON round trip), and the cache through
 * kiln_accel_resolve with a QEMU stand-in (a shell script that logs its
 * arguments and plays a fast KVM): a matching record is used without running
 * QEMU, a record made stale by a changed binary is not, and a fresh probe is
 * cached.  That part needs /dev/kvm to open (the cache is only consulted
 * then) and is skipped where it does not. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "accel/accel.h"
#include "buf.h"
#include "cleanup.h"
#include "fsutil.h"
#include "golden_files.h"
#include "process.h"
#include "tap.h"
#include "xalloc.h"

static bool regenerate;

static bool
golden_case (const char *dir, const char *name)
{
  _cleanup_free_ char *in_path = kiln_xasprintf ("%s/%s.json", dir, name);
  _cleanup_free_ char *out_path = kiln_xasprintf ("%s/%s.out", dir, name);
  json_error_t je;
  _cleanup_json_ json_t *c = json_load_file (in_path, 0, &je);
  if (c == NULL)
    {
      printf ("# %s: %s\n", in_path, je.text);
      return false;
    }
  enum kiln_accel_mode mode;
  struct kiln_accel_probe probe;
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_accel_mode_parse (json_string_value (json_object_get (c, "mode")), &mode, &e) < 0
      || kiln_accel_probe_from_json (json_object_get (c, "probe"), &probe, NULL, &e) < 0)
    {
      printf ("# %s: %s\n", in_path, kiln_error_message (e));
      return false;
    }
  struct kiln_accel_choice choice;
  struct kiln_buf got = KILN_BUF_INIT;
  if (kiln_accel_decide (mode, &probe, json_string_value (json_object_get (c, "cpu")), &choice, &e) < 0)
    kiln_buf_printf (&got, "error: %s\n", kiln_error_message (e));
  else
    kiln_buf_printf (&got, "accel=%s cpu=%s fallback=%d\nreason: %s\n", kiln_accel_name (choice.accel), choice.cpu,
                     choice.fallback, choice.reason);
  bool ok;
  if (regenerate)
    ok = kiln_write_file_atomic (out_path, got.data, got.len, 0644, NULL) == 0;
  else
    {
      struct kiln_buf want = KILN_BUF_INIT;
      ok = kiln_read_file (out_path, &want, NULL) == 0 && strcmp (kiln_buf_str (&got), kiln_buf_str (&want)) == 0;
      if (!ok)
        golden_print_diff (kiln_buf_str (&got), kiln_buf_str (&want));
      kiln_buf_release (&want);
    }
  kiln_buf_release (&got);
  return ok;
}

static void
golden_cases (const char *dir)
{
  _cleanup_strv_ char **names = golden_stems (dir, ".json");
  if (!tap_ok (names != NULL, "open %s", dir))
    return;
  size_t n = kiln_strv_length (names);
  for (size_t i = 0; i < n; i++)
    tap_ok (golden_case (dir, names[i]), "decide: %s", names[i]);
  tap_ok (n >= 12, "at least twelve golden decisions (%zu)", n);
}

static void
mode_parsing (void)
{
  enum kiln_accel_mode m = KILN_ACCEL_MODE_TCG;
  _cleanup_error_ kiln_error *e = NULL;
  unsetenv ("KILN_ACCEL");
  tap_ok (kiln_accel_mode_parse (NULL, &m, NULL) == 0 && m == KILN_ACCEL_MODE_AUTO, "mode: unset means auto");
  tap_ok (kiln_accel_mode_parse ("kvm", &m, NULL) == 0 && m == KILN_ACCEL_MODE_KVM, "mode: kvm");
  setenv ("KILN_ACCEL", "tcg", 1);
  tap_ok (kiln_accel_mode_parse (NULL, &m, NULL) == 0 && m == KILN_ACCEL_MODE_TCG, "mode: KILN_ACCEL=tcg");
  tap_ok (kiln_accel_mode_parse ("auto", &m, NULL) == 0 && m == KILN_ACCEL_MODE_AUTO, "mode: --accel wins over KILN_ACCEL");
  setenv ("KILN_ACCEL", "fast", 1);
  bool refused = kiln_accel_mode_parse ("", &m, &e) < 0;
  tap_ok (refused && e->code == KILN_ERR_INVALID
              && strstr (kiln_error_message (e), "KILN_ACCEL is auto, kvm or tcg, not 'fast'"),
          "mode: a bad KILN_ACCEL is named (%s)", e ? kiln_error_message (e) : "no error");
  kiln_error_freep (&e);
  unsetenv ("KILN_ACCEL");
  refused = kiln_accel_mode_parse ("KVM", &m, &e) < 0;
  tap_ok (refused && strstr (kiln_error_message (e), "--accel is auto, kvm or tcg, not 'KVM'"),
          "mode: a bad --accel is named (%s)", e ? kiln_error_message (e) : "no error");
}

static void
features (void)
{
  tap_ok (kiln_accel_feature_to_drop ("qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\nqemu: assert")
              && strcmp (kiln_accel_feature_to_drop ("error: failed to set MSR 0x10a to 0x69"), "arch-capabilities") == 0,
          "drop: MSR 0x10a is arch-capabilities");
  tap_ok (kiln_accel_feature_to_drop ("failed to set MSR 0x10A to 0x1") != NULL, "drop: hex case does not matter");
  tap_ok (kiln_accel_feature_to_drop ("failed to set MSR 0x999 to 0x1") == NULL, "drop: an unknown MSR names nothing");
  tap_ok (kiln_accel_feature_to_drop ("failed to set MSR 0x10ab to 0x1") == NULL, "drop: a longer number is another MSR");
  tap_ok (kiln_accel_feature_to_drop ("Could not access KVM kernel module") == NULL && !kiln_accel_feature_to_drop (NULL),
          "drop: other failures name nothing");
}

static bool
same_attempt (const struct kiln_accel_attempt *a, const struct kiln_accel_attempt *b)
{
  return a->outcome == b->outcome && a->ms == b->ms && a->deadline_ms == b->deadline_ms
         && strcmp (a->cpu, b->cpu) == 0 && strcmp (a->detail, b->detail) == 0;
}

static void
cache_key (void)
{
  struct stat st = {.st_dev = 1, .st_ino = 2, .st_size = 3};
  st.st_mtim.tv_sec = 4;
  _cleanup_free_ char *k1 = kiln_accel_cache_key ("boot-a", "/usr/bin/q", &st);
  _cleanup_free_ char *k2 = kiln_accel_cache_key ("boot-a", "/usr/bin/q", &st);
  tap_ok (strcmp (k1, k2) == 0, "key: the same host and binary give the same key");
  _cleanup_free_ char *other_boot = kiln_accel_cache_key ("boot-b", "/usr/bin/q", &st);
  tap_ok (strcmp (k1, other_boot) != 0, "key: another boot gives another key");
  struct stat changed = st;
  changed.st_mtim.tv_nsec = 1;
  _cleanup_free_ char *k_mtime = kiln_accel_cache_key ("boot-a", "/usr/bin/q", &changed);
  changed = st;
  changed.st_size = 4;
  _cleanup_free_ char *k_size = kiln_accel_cache_key ("boot-a", "/usr/bin/q", &changed);
  changed = st;
  changed.st_ino = 9;
  _cleanup_free_ char *k_ino = kiln_accel_cache_key ("boot-a", "/usr/bin/q", &changed);
  tap_ok (strcmp (k1, k_mtime) != 0 && strcmp (k1, k_size) != 0 && strcmp (k1, k_ino) != 0,
          "key: a QEMU binary changed in place (mtime, size) or replaced (inode) gives another key");

  struct kiln_accel_probe p = {.kvm_device = true, .n_kvm = 2};
  p.tcg = (struct kiln_accel_attempt){.outcome = KILN_ACCEL_PROBE_FINISHED, .ms = 100, .deadline_ms = 20000};
  snprintf (p.tcg.cpu, sizeof p.tcg.cpu, "max");
  p.kvm[0] = (struct kiln_accel_attempt){.outcome = KILN_ACCEL_PROBE_FAILED, .ms = 40, .deadline_ms = 300};
  snprintf (p.kvm[0].cpu, sizeof p.kvm[0].cpu, "host");
  snprintf (p.kvm[0].detail, sizeof p.kvm[0].detail, "failed to set MSR 0x10a");
  p.kvm[1] = (struct kiln_accel_attempt){.outcome = KILN_ACCEL_PROBE_TIMED_OUT, .ms = 300, .deadline_ms = 300};
  snprintf (p.kvm[1].cpu, sizeof p.kvm[1].cpu, "host,-arch-capabilities");
  _cleanup_json_ json_t *j = kiln_accel_probe_to_json (&p, k1);
  struct kiln_accel_probe back;
  _cleanup_free_ char *key = NULL;
  bool same = kiln_accel_probe_from_json (j, &back, &key, NULL) == 0 && strcmp (key, k1) == 0
              && back.kvm_device && back.n_kvm == 2 && same_attempt (&back.tcg, &p.tcg)
              && same_attempt (&back.kvm[0], &p.kvm[0]) && same_attempt (&back.kvm[1], &p.kvm[1]);
  tap_ok (same, "record: the probe survives its JSON round trip");
  json_object_set_new (j, "kvm", json_string ("no"));
  _cleanup_error_ kiln_error *e = NULL;
  bool refused = kiln_accel_probe_from_json (j, &back, NULL, &e) < 0;
  tap_ok (refused && e->code == KILN_ERR_INVALID,
          "record: a damaged record is refused (%s)", e ? kiln_error_message (e) : "accepted");
}

/* A QEMU stand-in: logs its arguments; "kvm" finishes at once, "tcg" after
 * 0.2 s, both with the probe's exit status. */
static const char fake_qemu[] = "#!/bin/sh\n"
                                "echo \"$*\" >> \"$FAKE_QEMU_LOG\"\n"
                                "case \" $* \" in *' kvm '*) exit 33;; esac\n"
                                "sleep 0.2\n"
                                "exit 33\n";

static int
count_lines (const char *path)
{
  struct kiln_buf b = KILN_BUF_INIT;
  int n = 0;
  if (kiln_read_file (path, &b, NULL) == 0)
    for (const char *p = kiln_buf_str (&b); *p; p++)
      n += *p == '\n';
  kiln_buf_release (&b);
  return n;
}

static void
cache_through_resolve (void)
{
  int fd = open ("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0)
    {
      tap_ok (true, "resolve: the cache # SKIP /dev/kvm does not open here");
      return;
    }
  close (fd);
  _cleanup_free_ char *tmp = NULL;
  if (!tap_ok (kiln_make_temp_dir ("kiln-test-accel", &tmp, NULL) == 0, "resolve: a scratch directory"))
    return;
  _cleanup_free_ char *script = kiln_xasprintf ("%s/fake-qemu", tmp);
  _cleanup_free_ char *link1 = kiln_xasprintf ("%s/qemu-a", tmp);
  _cleanup_free_ char *link2 = kiln_xasprintf ("%s/qemu-b", tmp);
  _cleanup_free_ char *link3 = kiln_xasprintf ("%s/qemu-c", tmp);
  _cleanup_free_ char *log = kiln_xasprintf ("%s/qemu.log", tmp);
  _cleanup_free_ char *cache = kiln_xasprintf ("%s/cache", tmp);
  kiln_write_file_atomic (script, fake_qemu, strlen (fake_qemu), 0755, NULL);
  if (symlink (script, link1) < 0 || symlink (script, link2) < 0 || symlink (script, link3) < 0)
    {
      tap_ok (false, "resolve: symlinks to the stand-in");
      return;
    }
  setenv ("XDG_CACHE_HOME", cache, 1);
  setenv ("FAKE_QEMU_LOG", log, 1);

  /* A fresh probe: both accelerators run, KVM wins, the verdict is cached. */
  struct kiln_accel_choice c;
  bool from_cache = true;
  _cleanup_error_ kiln_error *e = NULL;
  int r = kiln_accel_resolve (KILN_ACCEL_MODE_AUTO, link1, NULL, &c, &from_cache, &e);
  tap_ok (r == 0 && c.accel == KILN_ACCEL_KVM && strcmp (c.cpu, "host") == 0 && !from_cache
              && count_lines (log) == 2,
          "resolve: a fresh probe runs tcg and kvm and picks the faster kvm (%s; %d runs)",
          r == 0 ? c.reason : kiln_error_message (e), count_lines (log));

  /* Another process (here: another path to the same binary) reads it back. */
  unlink (log);
  r = kiln_accel_resolve (KILN_ACCEL_MODE_AUTO, link2, NULL, &c, &from_cache, &e);
  tap_ok (r == 0 && c.accel == KILN_ACCEL_KVM && from_cache && count_lines (log) == 0,
          "resolve: the cached verdict is used without running QEMU (%d runs)", count_lines (log));

  /* The binary changes: the cached verdict is stale, the probe runs again. */
  struct timespec times[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1000000000}};
  utimensat (AT_FDCWD, script, times, 0);
  r = kiln_accel_resolve (KILN_ACCEL_MODE_AUTO, link3, NULL, &c, &from_cache, &e);
  tap_ok (r == 0 && !from_cache && count_lines (log) == 2,
          "resolve: a changed QEMU binary makes the cache stale (%d runs)", count_lines (log));

  /* Demoted: the process and the cache say TCG from now on. */
  kiln_accel_demote (link3, "a guest did not start under kvm after the probe passed: test");
  r = kiln_accel_resolve (KILN_ACCEL_MODE_AUTO, link3, NULL, &c, &from_cache, &e);
  tap_ok (r == 0 && c.accel == KILN_ACCEL_TCG && c.fallback && strstr (c.reason, "after the probe passed: test"),
          "resolve: a demoted verdict is TCG (%s)", r == 0 ? c.reason : kiln_error_message (e));
  unlink (log);
  r = kiln_accel_resolve (KILN_ACCEL_MODE_AUTO, link2, NULL, &c, &from_cache, &e);
  tap_ok (r == 0 && c.accel == KILN_ACCEL_TCG && from_cache && count_lines (log) == 0,
          "resolve: the demotion is cached for the next process too");
  r = kiln_accel_resolve (KILN_ACCEL_MODE_TCG, link2, NULL, &c, &from_cache, &e);
  tap_ok (r == 0 && c.accel == KILN_ACCEL_TCG && strcmp (c.cpu, "max") == 0 && count_lines (log) == 0,
          "resolve: --accel tcg runs no probe");
  unsetenv ("XDG_CACHE_HOME");
  kiln_remove_tree (tmp, NULL);
}

int
main (int argc, char **argv)
{
  if (argc != 2)
    {
      fprintf (stderr, "usage: %s DATA_DIR\n", argv[0]);
      return 2;
    }
  const char *regen = getenv ("KILN_REGENERATE");
  regenerate = regen && strcmp (regen, "1") == 0;
  golden_cases (argv[1]);
  mode_parsing ();
  features ();
  cache_key ();
  cache_through_resolve ();
  return tap_done ();
}
