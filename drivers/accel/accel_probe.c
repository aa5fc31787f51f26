/* accel_probe.c - running the accelerator probe and keeping its verdict (see
 * accel.h).
 *
 * The probe guest is 64 KiB of firmware made here: x86 starts at the reset
 * vector (the last 16 bytes of the BIOS image) in real mode, where a jump
 * leads to a loop counting PROBE_LOOPS down, then a write of 0x10 to the
 * isa-debug-exit port, which makes QEMU exit with status (0x10 << 1) | 1.
 * Any other ending (an abort at start, a deadline) is a failed attempt.  Under
 * a working KVM the loop takes milliseconds, under TCG about 0.1 s, and under
 * a KVM that emulates instead of virtualizing it does not finish in seconds:
 * the comparison is what tells a usable KVM from a present one.
 *
 * The verdict is cached as JSON under <cache>/accel/, one file per QEMU
 * binary, valid while the key (boot id, binary identity) matches; /dev/kvm
 * itself is opened anew each time (a namespace may hide it).  In a process
 * the first resolution is kept (under a mutex: kiln-emulator starts guests
 * from several threads). */
#include "accel.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "cleanup.h"
#include "digest.h"
#include "fsutil.h"
#include "log.h"
#include "process.h"
#include "xalloc.h"
#include "clock.h"

#define FIRMWARE_SIZE 65536
#define PROBE_LOOPS 20000000u
#define DEBUG_EXIT_PORT 0xf4
#define DEBUG_EXIT_VALUE 0x10
#define PROBE_EXIT_STATUS ((DEBUG_EXIT_VALUE << 1) | 1)
/* TCG gets this long (it needs about 0.2 s; QEMU itself may be slow to load). */
#define TCG_DEADLINE_MS 20000
/* KVM must not be slower than TCG; it gets twice TCG's time, at least this,
 * so a slower KVM is measured rather than only cut off. */
#define KVM_MIN_DEADLINE_MS 300
/* Without a TCG figure to compare with (TCG failed). */
#define KVM_DEADLINE_ALONE_MS 5000

static void
write_u32le (unsigned char *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char) (v >> (8 * i));
}

/* The firmware image: hlt everywhere, the loop at offset 0xF000 (CS base
 * 0xFFFF0000 at reset, so IP 0xF000), a near jump to it at the reset vector
 * (offset 0xFFF0). */
static void
make_firmware (unsigned char image[FIRMWARE_SIZE])
{
  memset (image, 0xF4, FIRMWARE_SIZE);
  unsigned char *code = image + 0xF000;
  size_t n = 0;
  code[n++] = 0x66; /* mov ecx, PROBE_LOOPS */
  code[n++] = 0xB9;
  write_u32le (code + n, PROBE_LOOPS);
  n += 4;
  code[n++] = 0x66; /* loop: dec ecx */
  code[n++] = 0x49;
  code[n++] = 0x75; /* jnz loop */
  code[n++] = 0xFC;
  code[n++] = 0xB0; /* mov al, DEBUG_EXIT_VALUE */
  code[n++] = DEBUG_EXIT_VALUE;
  code[n++] = 0xE6; /* out DEBUG_EXIT_PORT, al */
  code[n++] = DEBUG_EXIT_PORT;
  code[n++] = 0xF4; /* hlt */
  code[n++] = 0xEB; /* jmp $ */
  code[n++] = 0xFE;
  uint16_t rel = (uint16_t) (0xF000 - (0xFFF0 + 3));
  image[0xFFF0] = 0xE9; /* jmp near rel16 */
  image[0xFFF1] = (unsigned char) (rel & 0xff);
  image[0xFFF2] = (unsigned char) (rel >> 8);
}

/* QEMU's complaint: its first line that says "error", else its first line. */
static void
complaint (const char *text, char *out, size_t size)
{
  const char *line = strstr (text, "error");
  if (line)
    while (line > text && line[-1] != '\n')
      line--;
  else
    line = text + strspn (text, "\n");
  size_t len = strcspn (line, "\n");
  const char *prefix = "qemu-system-x86_64: ";
  if (strncmp (line, prefix, strlen (prefix)) == 0)
    {
      line += strlen (prefix);
      len -= strlen (prefix);
    }
  if (strncmp (line, "error: ", 7) == 0)
    {
      line += 7;
      len -= 7;
    }
  snprintf (out, size, "%.*s", (int) len, line);
}

/* One run of the probe guest; its full stderr goes to *stderr_text. */
static void
run_attempt (const char *binary, enum kiln_accel accel, const char *firmware, int deadline_ms,
             struct kiln_accel_attempt *a, struct kiln_buf *stderr_text)
{
  _cleanup_strv_ char **argv = kiln_strv_new (binary, "-nodefaults", "-no-user-config", "-display", "none",
                                              "-machine", "q35", "-accel", kiln_accel_name (accel), "-cpu", a->cpu,
                                              "-m", "16", "-bios", firmware, "-device",
                                              "isa-debug-exit,iobase=0xf4,iosize=0x04", NULL);
  struct kiln_process_spec spec = {.argv = argv, .timeout_ms = deadline_ms, .capture_limit = 65536};
  struct kiln_process_result res;
  _cleanup_error_ kiln_error *e = NULL;
  a->deadline_ms = deadline_ms;
  int64_t t0 = kiln_monotonic_ms ();
  int r = kiln_process_run (&spec, &res, &e);
  a->ms = kiln_monotonic_ms () - t0;
  if (r < 0)
    {
      a->outcome = KILN_ACCEL_PROBE_FAILED;
      snprintf (a->detail, sizeof a->detail, "%s", kiln_error_message (e));
      return;
    }
  kiln_buf_puts (stderr_text, kiln_buf_str (&res.err));
  if (res.timed_out)
    a->outcome = KILN_ACCEL_PROBE_TIMED_OUT;
  else if (res.term_signal == 0 && res.exit_code == PROBE_EXIT_STATUS)
    a->outcome = KILN_ACCEL_PROBE_FINISHED;
  else
    {
      a->outcome = KILN_ACCEL_PROBE_FAILED;
      char said[160];
      complaint (kiln_buf_str (&res.err), said, sizeof said);
      if (res.term_signal)
        snprintf (a->detail, sizeof a->detail, "%s%s(QEMU was killed by signal %d)", said, said[0] ? " " : "",
                  res.term_signal);
      else
        snprintf (a->detail, sizeof a->detail, "%s%s(QEMU exited with status %d)", said, said[0] ? " " : "",
                  res.exit_code);
    }
  kiln_process_result_release (&res);
}

static void
check_kvm_device (struct kiln_accel_probe *p)
{
  int fd = open ("/dev/kvm", O_RDWR | O_CLOEXEC);
  p->kvm_device = fd >= 0;
  if (fd >= 0)
    close (fd);
  else
    snprintf (p->kvm_device_error, sizeof p->kvm_device_error, "/dev/kvm: %s", strerror (errno));
}

int
kiln_accel_probe_run (const char *binary, struct kiln_accel_probe *p, kiln_error **err)
{
  *p = (struct kiln_accel_probe){0};
  if (binary == NULL)
    binary = kiln_accel_qemu_binary ();
  check_kvm_device (p);

  static unsigned char image[FIRMWARE_SIZE];
  make_firmware (image);
  _cleanup_unlink_ char *firmware = NULL;
  _cleanup_close_ int fd = kiln_make_temp_file ("kiln-accel-probe", &firmware, err);
  if (fd < 0)
    return kiln_error_prefix (err, "accelerator probe");
  if (kiln_write_all (fd, image, sizeof image) < 0)
    return kiln_fail_errno (err, errno, "accelerator probe: write '%s'", firmware);

  struct kiln_buf said = KILN_BUF_INIT;
  snprintf (p->tcg.cpu, sizeof p->tcg.cpu, "max");
  run_attempt (binary, KILN_ACCEL_TCG, firmware, TCG_DEADLINE_MS, &p->tcg, &said);
  kiln_buf_release (&said);
  if (!p->kvm_device)
    return 0;

  int deadline = KVM_DEADLINE_ALONE_MS;
  if (p->tcg.outcome == KILN_ACCEL_PROBE_FINISHED)
    deadline = p->tcg.ms * 2 > KVM_MIN_DEADLINE_MS ? (int) (p->tcg.ms * 2) : KVM_MIN_DEADLINE_MS;
  char cpu[sizeof p->kvm[0].cpu] = "host";
  while (p->n_kvm < KILN_ACCEL_MAX_KVM_ATTEMPTS)
    {
      struct kiln_accel_attempt *a = &p->kvm[p->n_kvm++];
      snprintf (a->cpu, sizeof a->cpu, "%s", cpu);
      run_attempt (binary, KILN_ACCEL_KVM, firmware, deadline, a, &said);
      const char *drop = a->outcome == KILN_ACCEL_PROBE_FAILED ? kiln_accel_feature_to_drop (kiln_buf_str (&said))
                                                               : NULL;
      kiln_buf_reset (&said);
      _cleanup_free_ char *minus = drop ? kiln_xasprintf (",-%s", drop) : NULL;
      if (drop == NULL || strstr (cpu, minus) || strlen (cpu) + strlen (minus) >= sizeof cpu)
        break;
      strcat (cpu, minus);
    }
  kiln_buf_release (&said);
  return 0;
}

/* --- the cache ------------------------------------------------------------- */

/* The key for binary now, and the cache file for it; -1 when the binary
 * cannot be found (then there is nothing to cache either). */
static int
cache_identity (const char *binary, char **key, char **path, kiln_error **err)
{
  _cleanup_free_ char *found = kiln_find_program (binary);
  if (found == NULL)
    return kiln_error_set (err, KILN_ERR_NOT_FOUND, 0, "QEMU ('%s') is not installed or not on PATH", binary);
  char real[PATH_MAX];
  if (realpath (found, real) == NULL)
    return kiln_fail_errno (err, errno, "resolve '%s'", found);
  struct stat st;
  if (stat (real, &st) < 0)
    return kiln_fail_errno (err, errno, "stat '%s'", real);
  struct kiln_buf boot = KILN_BUF_INIT;
  _cleanup_error_ kiln_error *boot_err = NULL;
  if (kiln_read_file ("/proc/sys/kernel/random/boot_id", &boot, &boot_err) < 0)
    kiln_log_debug ("accel: %s: the cache is keyed without a boot id", kiln_error_message (boot_err));
  const char *id = kiln_buf_str (&boot);
  _cleanup_free_ char *boot_id = kiln_xstrndup (id, strcspn (id, "\n"));
  *key = kiln_accel_cache_key (boot_id, real, &st);
  kiln_buf_release (&boot);

  _cleanup_free_ char *dir = NULL;
  if (kiln_cache_dir (&dir, err) < 0)
    return -1;
  char hash[65];
  kiln_sha256_hex (real, strlen (real), hash);
  hash[16] = '\0';
  *path = kiln_xasprintf ("%s/accel/%s.json", dir, hash);
  return 0;
}

static bool
cache_read (const char *path, const char *key, struct kiln_accel_probe *p)
{
  struct kiln_buf text = KILN_BUF_INIT;
  if (kiln_read_file (path, &text, NULL) < 0)
    return false;
  _cleanup_json_ json_t *record = json_loads (kiln_buf_str (&text), 0, NULL);
  kiln_buf_release (&text);
  _cleanup_free_ char *cached_key = NULL;
  _cleanup_error_ kiln_error *e = NULL;
  if (record == NULL || kiln_accel_probe_from_json (record, p, &cached_key, &e) < 0)
    {
      kiln_log_debug ("accel: ignoring '%s': %s", path, e ? kiln_error_message (e) : "not JSON");
      return false;
    }
  return strcmp (cached_key, key) == 0 && p->kvm_device;
}

static void
cache_write (const char *path, const char *key, const struct kiln_accel_probe *p)
{
  _cleanup_json_ json_t *record = kiln_accel_probe_to_json (p, key);
  _cleanup_free_ char *text = json_dumps (record, JSON_INDENT (2) | JSON_PRESERVE_ORDER);
  _cleanup_free_ char *dir = kiln_xstrndup (path, (size_t) (strrchr (path, '/') - path));
  _cleanup_error_ kiln_error *e = NULL;
  /* A cache that cannot be written costs a probe per process, no more. */
  if (kiln_mkdir_p (dir, 0755, &e) < 0 || kiln_write_file_atomic (path, text, strlen (text), 0644, &e) < 0)
    kiln_log_warn ("accel: the probe's verdict is not cached: %s", kiln_error_message (e));
}

/* --- resolution, once per process ------------------------------------------ */

static pthread_mutex_t memo_lock = PTHREAD_MUTEX_INITIALIZER;
static char *memo_binary;          /* the binary the memo is for, or NULL */
static struct kiln_accel_probe memo_probe;
static bool memo_from_cache;
static bool fallback_told;

int
kiln_accel_resolve (enum kiln_accel_mode mode, const char *binary, const char *cpu_override,
                    struct kiln_accel_choice *out, bool *from_cache, kiln_error **err)
{
  if (binary == NULL)
    binary = kiln_accel_qemu_binary ();
  if (from_cache)
    *from_cache = false;
  if (mode == KILN_ACCEL_MODE_TCG)
    {
      struct kiln_accel_probe none = {0};
      return kiln_accel_decide (mode, &none, cpu_override, out, err);
    }

  pthread_mutex_lock (&memo_lock);
  struct kiln_accel_probe p = {0};
  check_kvm_device (&p);
  int r = 0;
  if (!p.kvm_device)
    ; /* Nothing to probe: TCG, or an error for --accel kvm. */
  else if (memo_binary && strcmp (memo_binary, binary) == 0 && memo_probe.kvm_device)
    {
      p = memo_probe;
      if (from_cache)
        *from_cache = memo_from_cache;
    }
  else
    {
      _cleanup_free_ char *key = NULL;
      _cleanup_free_ char *path = NULL;
      _cleanup_error_ kiln_error *id_err = NULL;
      bool have_path = cache_identity (binary, &key, &path, &id_err) == 0;
      bool cached = have_path && cache_read (path, key, &p);
      if (!cached)
        {
          int64_t t0 = kiln_monotonic_ms ();
          r = kiln_accel_probe_run (binary, &p, err);
          kiln_log_debug ("accel: probed %s in %.2f s", binary, (double) (kiln_monotonic_ms () - t0) / 1000.0);
          if (r == 0 && have_path && p.tcg.outcome != KILN_ACCEL_PROBE_FAILED)
            cache_write (path, key, &p);
        }
      if (r == 0)
        {
          free (memo_binary);
          memo_binary = kiln_xstrdup (binary);
          memo_probe = p;
          memo_from_cache = cached;
          if (from_cache)
            *from_cache = cached;
        }
    }
  if (r == 0)
    r = kiln_accel_decide (mode, &p, cpu_override, out, err);
  if (r == 0 && out->fallback && !fallback_told)
    {
      fallback_told = true;
      kiln_log_warn ("%s", out->reason);
    }
  pthread_mutex_unlock (&memo_lock);
  return r;
}

void
kiln_accel_demote (const char *binary, const char *reason)
{
  if (binary == NULL)
    binary = kiln_accel_qemu_binary ();
  pthread_mutex_lock (&memo_lock);
  _cleanup_free_ char *key = NULL;
  _cleanup_free_ char *path = NULL;
  struct kiln_accel_probe p = {0};
  if (memo_binary && strcmp (memo_binary, binary) == 0)
    p = memo_probe;
  else
    check_kvm_device (&p);
  snprintf (p.demoted, sizeof p.demoted, "%s", reason);
  if (cache_identity (binary, &key, &path, NULL) == 0)
    cache_write (path, key, &p);
  free (memo_binary);
  memo_binary = kiln_xstrdup (binary);
  memo_probe = p;
  pthread_mutex_unlock (&memo_lock);
}

void
kiln_accel_forget (const char *binary)
{
  if (binary == NULL)
    binary = kiln_accel_qemu_binary ();
  pthread_mutex_lock (&memo_lock);
  _cleanup_free_ char *key = NULL;
  _cleanup_free_ char *path = NULL;
  if (cache_identity (binary, &key, &path, NULL) == 0)
    unlink (path);
  free (memo_binary);
  memo_binary = NULL;
  pthread_mutex_unlock (&memo_lock);
}

bool
kiln_accel_memo (const char *binary, struct kiln_accel_probe *out)
{
  if (binary == NULL)
    binary = kiln_accel_qemu_binary ();
  pthread_mutex_lock (&memo_lock);
  bool have = memo_binary && strcmp (memo_binary, binary) == 0;
  if (have)
    *out = memo_probe;
  pthread_mutex_unlock (&memo_lock);
  return have;
}
