/* accel.h - which accelerator a local guest runs under, decided by trying.
 *
 * /dev/kvm that opens is no proof of a KVM that runs guests: under nested
 * virtualization without hardware support QEMU aborts ("failed to set MSR
 * 0x10a") or the guest crawls (GRUB never finishes).  So `auto` runs a probe:
 * QEMU boots a few bytes of kiln's own firmware that count down a loop and
 * write to the isa-debug-exit port, once under TCG (-cpu max) and once under
 * KVM (-cpu host; when QEMU refuses a CPU feature, e.g. the MSR of
 * arch-capabilities, again without it).  KVM is chosen only when its probe
 * finishes and is not slower than TCG's.
 *
 * The probe's results are cached per host boot (the kernel's boot id) and
 * QEMU binary (path, inode, size, mtime) under kiln's cache directory, so it
 * costs well under a second once, not per build.  A guest that still fails
 * to start under KVM after a good probe demotes the cached verdict.
 *
 * The pieces that decide are pure (mode parsing, the decision, the cache key,
 * the cache record's JSON) and unit-tested; accel_probe.c runs QEMU and keeps
 * the cache; kiln_accel_resolve() puts them together for the drivers. */
#ifndef KILN_DRIVERS_ACCEL_H
#define KILN_DRIVERS_ACCEL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include <jansson.h>

#include "error.h"

/* What a guest runs under. */
enum kiln_accel {
  KILN_ACCEL_TCG,  /* software emulation: works everywhere, slowly */
  KILN_ACCEL_KVM,  /* hardware virtualization through /dev/kvm */
};

/* What the user asked for (--accel, KILN_ACCEL). */
enum kiln_accel_mode {
  KILN_ACCEL_MODE_AUTO,  /* KVM when the probe says it works and is faster, else TCG */
  KILN_ACCEL_MODE_KVM,   /* KVM, or an error saying why it is unusable */
  KILN_ACCEL_MODE_TCG,   /* TCG; /dev/kvm is never touched */
};

const char *kiln_accel_name (enum kiln_accel accel);          /* "kvm", "tcg" */
const char *kiln_accel_mode_name (enum kiln_accel_mode mode); /* "auto", "kvm", "tcg" */
/* Parses "auto", "kvm" or "tcg".  NULL or "" means $KILN_ACCEL, and when that
 * is unset or empty, auto.  Fails with KILN_ERR_INVALID naming the value
 * (and KILN_ACCEL when it came from there). */
int kiln_accel_mode_parse (const char *text, enum kiln_accel_mode *out, kiln_error **err);

/* The QEMU system emulator kiln runs: $KILN_QEMU when set (tests point it at
 * a wrapper), else "qemu-system-x86_64" (looked up on $PATH). */
const char *kiln_accel_qemu_binary (void);

/* --- the probe's results (input to the decision) -------------------------- */

enum kiln_accel_outcome {
  KILN_ACCEL_PROBE_NOT_RUN = 0,
  KILN_ACCEL_PROBE_FINISHED,   /* the probe guest reached its exit */
  KILN_ACCEL_PROBE_FAILED,     /* QEMU did not start, or ended otherwise (abort, error) */
  KILN_ACCEL_PROBE_TIMED_OUT,  /* still running at the deadline, and killed */
};

struct kiln_accel_attempt {
  enum kiln_accel_outcome outcome;
  int64_t ms;          /* wall time from exec to exit (or to the deadline) */
  int64_t deadline_ms; /* the deadline it had */
  char cpu[64];        /* the -cpu it ran with */
  char detail[240];    /* why it failed: QEMU's complaint, "killed by signal 6" */
};

#define KILN_ACCEL_MAX_KVM_ATTEMPTS 4

struct kiln_accel_probe {
  bool kvm_device;                /* /dev/kvm opened for reading and writing */
  char kvm_device_error[120];     /* why not ("/dev/kvm: No such file or directory") */
  struct kiln_accel_attempt tcg;  /* -cpu max */
  /* -cpu host, then with each feature QEMU refused dropped, in order. */
  struct kiln_accel_attempt kvm[KILN_ACCEL_MAX_KVM_ATTEMPTS];
  int n_kvm;
  /* Set when a guest failed to start under KVM after this probe had passed
   * (kiln_accel_demote): the verdict is then TCG, for this reason. */
  char demoted[240];
};

/* The CPU feature to drop after QEMU failed with this complaint under KVM
 * ("failed to set MSR 0x10a" -> "arch-capabilities"), or NULL when the
 * complaint names none kiln knows how to do without. */
const char *kiln_accel_feature_to_drop (const char *qemu_stderr);

/* --- the decision ---------------------------------------------------------- */

struct kiln_accel_choice {
  enum kiln_accel accel;
  char cpu[96];        /* the -cpu model: the override, or host[,-feature...] / max */
  char reason[640];    /* why this accelerator, for the manifest and the user */
  bool fallback;       /* auto chose TCG: worth telling the user once */
};

/* Decides from what the user asked and the probe's results.  cpu_override
 * (--cpu), when non-NULL, replaces the model the accelerator would use.
 * With mode TCG the probe is not consulted (and need not have run).  Fails
 * (KILN_ERR_UNSUPPORTED) with mode KVM when KVM is unusable, saying why, and
 * with mode AUTO when neither accelerator ran the probe guest. */
int kiln_accel_decide (enum kiln_accel_mode mode, const struct kiln_accel_probe *probe, const char *cpu_override,
                       struct kiln_accel_choice *out, kiln_error **err);

/* --- the cache ------------------------------------------------------------- */

/* The identity a cached probe is valid for: the host's boot and the QEMU
 * binary (its resolved path and file identity).  malloc'd. */
char *kiln_accel_cache_key (const char *boot_id, const char *binary_path, const struct stat *binary_st);

/* The probe as the cache file's JSON (with its key), and back.  from_json
 * fails (KILN_ERR_INVALID) on a record that is not one. */
json_t *kiln_accel_probe_to_json (const struct kiln_accel_probe *probe, const char *key);
int kiln_accel_probe_from_json (json_t *record, struct kiln_accel_probe *probe, char **key, kiln_error **err);

/* --- putting it together (accel_probe.c) ----------------------------------- */

/* The choice for a guest started with binary (NULL: kiln_accel_qemu_binary)
 * in mode: the cached probe when its key still matches, else a fresh probe,
 * cached.  Computed once per process and binary (safe from several threads);
 * a fallback to TCG is said once per process on stderr.  *from_cache tells
 * whether the probe was read back (may be NULL). */
int kiln_accel_resolve (enum kiln_accel_mode mode, const char *binary, const char *cpu_override,
                        struct kiln_accel_choice *out, bool *from_cache, kiln_error **err);

/* Runs the probe now (no cache), for `kiln doctor` and kiln_accel_resolve. */
int kiln_accel_probe_run (const char *binary, struct kiln_accel_probe *out, kiln_error **err);

/* A guest failed to start under KVM although the probe had passed: the
 * cached verdict (file and this process's) becomes TCG, for reason. */
void kiln_accel_demote (const char *binary, const char *reason);

/* The probe results this process resolved with for binary (NULL: the
 * default), for `kiln doctor`; false when it has none (no resolution yet, or
 * /dev/kvm did not open, so nothing was probed). */
bool kiln_accel_memo (const char *binary, struct kiln_accel_probe *out);

/* Forgets the cached verdict for binary (file and process): the next
 * resolution probes again (`kiln doctor --reprobe`). */
void kiln_accel_forget (const char *binary);

#endif
