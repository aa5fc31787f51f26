/* accel_decide.c - the accelerator decision as pure functions of the probe's
 * results (see accel.h): mode parsing, which CPU feature to drop after QEMU
 * refused one, the choice and its reason, the cache key and the cache
 * record's JSON.  Nothing here runs QEMU or touches a file, so every case
 * (KVM aborts, times out, is slower, faster, absent, demoted) is a unit test. */
#include "accel.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "xalloc.h"

const char *
kiln_accel_name (enum kiln_accel accel)
{
  return accel == KILN_ACCEL_KVM ? "kvm" : "tcg";
}

const char *
kiln_accel_mode_name (enum kiln_accel_mode mode)
{
  switch (mode)
    {
    case KILN_ACCEL_MODE_KVM:
      return "kvm";
    case KILN_ACCEL_MODE_TCG:
      return "tcg";
    default:
      return "auto";
    }
}

int
kiln_accel_mode_parse (const char *text, enum kiln_accel_mode *out, kiln_error **err)
{
  const char *source = "--accel";
  if (text == NULL || *text == '\0')
    {
      text = getenv ("KILN_ACCEL");
      source = "KILN_ACCEL";
      if (text == NULL || *text == '\0')
        {
          *out = KILN_ACCEL_MODE_AUTO;
          return 0;
        }
    }
  static const enum kiln_accel_mode modes[] = {KILN_ACCEL_MODE_AUTO, KILN_ACCEL_MODE_KVM, KILN_ACCEL_MODE_TCG};
  for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
    if (strcmp (text, kiln_accel_mode_name (modes[i])) == 0)
      {
        *out = modes[i];
        return 0;
      }
  return kiln_fail_invalid (err, "%s is auto, kvm or tcg, not '%s'", source, text);
}

const char *
kiln_accel_qemu_binary (void)
{
  const char *b = getenv ("KILN_QEMU");
  return b && *b ? b : "qemu-system-x86_64";
}

/* QEMU names the MSR it could not set under KVM; each is owned by one CPU
 * feature that -cpu host passes through and that a guest boots without. */
static const struct {
  const char *msr;
  const char *feature;
} refused_msrs[] = {
  {"0x10a", "arch-capabilities"},  /* IA32_ARCH_CAPABILITIES */
  {"0x48", "spec-ctrl"},           /* IA32_SPEC_CTRL */
  {"0x122", "tsx-ctrl"},           /* IA32_TSX_CTRL */
  {"0x1b01", "pks"},               /* IA32_PKRS */
};

const char *
kiln_accel_feature_to_drop (const char *qemu_stderr)
{
  if (qemu_stderr == NULL)
    return NULL;
  const char *p = strstr (qemu_stderr, "failed to set MSR ");
  if (p == NULL)
    return NULL;
  p += strlen ("failed to set MSR ");
  size_t len = strcspn (p, " \n");
  for (size_t i = 0; i < sizeof refused_msrs / sizeof refused_msrs[0]; i++)
    if (strlen (refused_msrs[i].msr) == len && strncasecmp (p, refused_msrs[i].msr, len) == 0)
      return refused_msrs[i].feature;
  return NULL;
}

static double
seconds (int64_t ms)
{
  return (double) ms / 1000.0;
}

/* One KVM attempt, as a clause of a reason. */
static void
describe_attempt (struct kiln_buf *b, const struct kiln_accel_attempt *a, const struct kiln_accel_attempt *tcg)
{
  switch (a->outcome)
    {
    case KILN_ACCEL_PROBE_FAILED:
      kiln_buf_printf (b, "QEMU failed with -cpu %s: %s", a->cpu, a->detail);
      break;
    case KILN_ACCEL_PROBE_TIMED_OUT:
      kiln_buf_printf (b, "with -cpu %s the probe guest did not finish in %.2f s", a->cpu, seconds (a->ms));
      if (tcg->outcome == KILN_ACCEL_PROBE_FINISHED)
        kiln_buf_printf (b, " (tcg: %.2f s)", seconds (tcg->ms));
      break;
    case KILN_ACCEL_PROBE_FINISHED:
      kiln_buf_printf (b, "with -cpu %s the probe guest took %.2f s", a->cpu, seconds (a->ms));
      if (tcg->outcome == KILN_ACCEL_PROBE_FINISHED)
        kiln_buf_printf (b, ", tcg %.2f s", seconds (tcg->ms));
      break;
    default:
      kiln_buf_printf (b, "the probe did not run with -cpu %s", a->cpu);
      break;
    }
}

/* Every KVM attempt, "A; then B". */
static void
describe_kvm (struct kiln_buf *b, const struct kiln_accel_probe *p)
{
  if (p->demoted[0])
    {
      kiln_buf_puts (b, p->demoted);
      return;
    }
  if (!p->kvm_device)
    {
      kiln_buf_puts (b, p->kvm_device_error[0] ? p->kvm_device_error : "/dev/kvm did not open");
      return;
    }
  if (p->n_kvm == 0)
    {
      kiln_buf_puts (b, "the KVM probe did not run");
      return;
    }
  for (int i = 0; i < p->n_kvm; i++)
    {
      if (i > 0)
        kiln_buf_puts (b, "; then ");
      describe_attempt (b, &p->kvm[i], &p->tcg);
    }
}

static void
copy_text (char *dst, size_t size, const char *src)
{
  snprintf (dst, size, "%s", src ? src : "");
}

int
kiln_accel_decide (enum kiln_accel_mode mode, const struct kiln_accel_probe *p, const char *cpu_override,
                   struct kiln_accel_choice *out, kiln_error **err)
{
  *out = (struct kiln_accel_choice){0};
  struct kiln_buf why = KILN_BUF_INIT;
  const struct kiln_accel_attempt *kvm = p->n_kvm > 0 ? &p->kvm[p->n_kvm - 1] : NULL;
  bool kvm_runs = p->kvm_device && !p->demoted[0] && kvm && kvm->outcome == KILN_ACCEL_PROBE_FINISHED;
  bool tcg_runs = p->tcg.outcome == KILN_ACCEL_PROBE_FINISHED;
  int r = 0;

  if (mode == KILN_ACCEL_MODE_TCG)
    {
      out->accel = KILN_ACCEL_TCG;
      kiln_buf_puts (&why, "tcg: asked for");
    }
  else if (mode == KILN_ACCEL_MODE_KVM)
    {
      if (!kvm_runs)
        {
          describe_kvm (&why, p);
          r = kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0, "--accel kvm: KVM is unusable here: %s",
                              kiln_buf_str (&why));
          kiln_buf_release (&why);
          return r;
        }
      out->accel = KILN_ACCEL_KVM;
      kiln_buf_printf (&why, "kvm: asked for; the probe guest ran in %.2f s", seconds (kvm->ms));
    }
  else if (kvm_runs && (!tcg_runs || kvm->ms <= p->tcg.ms))
    {
      out->accel = KILN_ACCEL_KVM;
      kiln_buf_printf (&why, "kvm: the probe guest ran in %.2f s", seconds (kvm->ms));
      if (tcg_runs)
        kiln_buf_printf (&why, " (tcg: %.2f s)", seconds (p->tcg.ms));
      else if (p->tcg.outcome != KILN_ACCEL_PROBE_NOT_RUN)
        kiln_buf_printf (&why, " (tcg failed: %s)", p->tcg.detail);
    }
  else if (!tcg_runs && p->tcg.outcome != KILN_ACCEL_PROBE_NOT_RUN)
    {
      describe_kvm (&why, p);
      r = kiln_error_set (err, KILN_ERR_UNSUPPORTED, 0,
                          "QEMU ran the probe guest neither under kvm (%s) nor under tcg (%s)", kiln_buf_str (&why),
                          p->tcg.outcome == KILN_ACCEL_PROBE_TIMED_OUT ? "it did not finish in time" : p->tcg.detail);
      kiln_buf_release (&why);
      return r;
    }
  else
    {
      out->accel = KILN_ACCEL_TCG;
      out->fallback = true;
      kiln_buf_printf (&why, "kvm: %s here (", p->kvm_device ? "unusable" : "unavailable");
      describe_kvm (&why, p);
      kiln_buf_puts (&why, "), using tcg");
    }

  /* KVM runs with the model the probe settled on (host, less what QEMU
   * refused); TCG with max, every feature TCG can emulate. */
  if (out->accel == KILN_ACCEL_KVM)
    {
      copy_text (out->cpu, sizeof out->cpu, kvm->cpu);
      if (p->n_kvm > 1)
        kiln_buf_printf (&why, "; -cpu %s because QEMU refused -cpu %s", kvm->cpu, p->kvm[0].cpu);
    }
  else
    copy_text (out->cpu, sizeof out->cpu, "max");
  if (cpu_override && *cpu_override)
    {
      copy_text (out->cpu, sizeof out->cpu, cpu_override);
      kiln_buf_printf (&why, "; -cpu %s as asked", cpu_override);
    }
  copy_text (out->reason, sizeof out->reason, kiln_buf_str (&why));
  kiln_buf_release (&why);
  return 0;
}

char *
kiln_accel_cache_key (const char *boot_id, const char *binary_path, const struct stat *st)
{
  return kiln_xasprintf ("boot=%s qemu=%s dev=%ju ino=%ju size=%jd mtime=%jd.%09ld", boot_id ? boot_id : "",
                         binary_path ? binary_path : "", (uintmax_t) st->st_dev, (uintmax_t) st->st_ino,
                         (intmax_t) st->st_size, (intmax_t) st->st_mtim.tv_sec, (long) st->st_mtim.tv_nsec);
}

static const char *const outcome_names[] = {"not-run", "finished", "failed", "timed-out"};

static json_t *
attempt_to_json (const struct kiln_accel_attempt *a)
{
  return json_pack ("{s:s, s:I, s:I, s:s, s:s}", "outcome", outcome_names[a->outcome], "ms", (json_int_t) a->ms,
                    "deadlineMs", (json_int_t) a->deadline_ms, "cpu", a->cpu, "detail", a->detail);
}

static int
attempt_from_json (json_t *j, struct kiln_accel_attempt *a, kiln_error **err)
{
  const char *outcome = NULL, *cpu = NULL, *detail = NULL;
  json_int_t ms = 0, deadline = 0;
  json_error_t je;
  if (json_unpack_ex (j, &je, JSON_STRICT, "{s:s, s:I, s:I, s:s, s:s}", "outcome", &outcome, "ms", &ms,
                      "deadlineMs", &deadline, "cpu", &cpu, "detail", &detail)
      < 0)
    return kiln_fail_invalid (err, "probe attempt: %s", je.text);
  for (size_t i = 0; i < sizeof outcome_names / sizeof outcome_names[0]; i++)
    if (strcmp (outcome, outcome_names[i]) == 0)
      {
        a->outcome = (enum kiln_accel_outcome) i;
        a->ms = ms;
        a->deadline_ms = deadline;
        copy_text (a->cpu, sizeof a->cpu, cpu);
        copy_text (a->detail, sizeof a->detail, detail);
        return 0;
      }
  return kiln_fail_invalid (err, "probe attempt: unknown outcome '%s'", outcome);
}

json_t *
kiln_accel_probe_to_json (const struct kiln_accel_probe *p, const char *key)
{
  json_t *kvm = json_array ();
  for (int i = 0; i < p->n_kvm; i++)
    json_array_append_new (kvm, attempt_to_json (&p->kvm[i]));
  return json_pack ("{s:s, s:b, s:s, s:o, s:o, s:s}", "key", key ? key : "", "kvmDevice", p->kvm_device,
                    "kvmDeviceError", p->kvm_device_error, "tcg", attempt_to_json (&p->tcg), "kvm", kvm, "demoted",
                    p->demoted);
}

int
kiln_accel_probe_from_json (json_t *record, struct kiln_accel_probe *p, char **key, kiln_error **err)
{
  *p = (struct kiln_accel_probe){0};
  const char *k = NULL, *device_error = NULL, *demoted = NULL;
  int device = 0;
  json_t *tcg = NULL, *kvm = NULL;
  json_error_t je;
  if (json_unpack_ex (record, &je, JSON_STRICT, "{s:s, s:b, s:s, s:o, s:o, s:s}", "key", &k, "kvmDevice", &device,
                      "kvmDeviceError", &device_error, "tcg", &tcg, "kvm", &kvm, "demoted", &demoted)
      < 0)
    return kiln_fail_invalid (err, "accelerator probe record: %s", je.text);
  if (!json_is_array (kvm) || json_array_size (kvm) > KILN_ACCEL_MAX_KVM_ATTEMPTS)
    return kiln_fail_invalid (err, "accelerator probe record: 'kvm' is not a list of at most %d attempts",
                              KILN_ACCEL_MAX_KVM_ATTEMPTS);
  p->kvm_device = device;
  copy_text (p->kvm_device_error, sizeof p->kvm_device_error, device_error);
  copy_text (p->demoted, sizeof p->demoted, demoted);
  if (attempt_from_json (tcg, &p->tcg, err) < 0)
    return kiln_error_prefix (err, "accelerator probe record: tcg");
  size_t i;
  json_t *a;
  json_array_foreach (kvm, i, a)
    {
      if (attempt_from_json (a, &p->kvm[i], err) < 0)
        return kiln_error_prefix (err, "accelerator probe record: kvm[%zu]", i);
      p->n_kvm++;
    }
  if (key)
    *key = kiln_xstrdup (k);
  return 0;
}
