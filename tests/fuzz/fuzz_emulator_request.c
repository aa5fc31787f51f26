/* fuzz_emulator_request.c - libFuzzer target for kiln-emulator as a whole:
 * one request (written as tests/support/request_text.h says) through
 * kiln_emu_handle, so every decoder (EC2 Query, awsJson1_1, rest-json,
 * rest-xml, S3 XML bodies, aws-chunked bodies) and every handler behind them
 * sees what the fuzzer makes.  A request with no Authorization and no
 * X-Kiln-Sign is signed as account test for the service its shape suggests,
 * so mutated requests still reach the handlers authenticated.  One emulator
 * (state in memory, mock instances, a fixed clock) serves the whole run, as
 * a real one serves many clients.  Seeds: the requests of
 * tests/data/emulator/*.req, one per file. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dispatch.h"
#include "emulator.h"
#include "fsutil.h"
#include "request_text.h"
#include "store.h"
#include "jobs.h"

#define FIXED_NOW 1767225600 /* 2026-01-01T00:00:00Z */

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static struct kiln_emu *
emulator (void)
{
  static struct kiln_emu emu = {.instances = EMU_INSTANCES_MOCK, .fixed_now = FIXED_NOW, .id_seed = 1};
  static bool ready;
  if (!ready)
    {
      kiln_error *err = NULL;
      if (emu_accounts_load (&emu, NULL, &err) < 0 || kiln_make_temp_dir ("kiln-fuzz-emu", &emu.data_dir, &err) < 0
          || emu_store_open (&emu, &err) < 0 || emu_start (&emu, &err) < 0)
        abort ();
      ready = true;
    }
  return &emu;
}

/* The service a request looks like it is for. */
static const char *
service_of (const struct request_text *r)
{
  const char *host = request_text_header (r, "Host");
  if (request_text_header (r, "X-Amz-Target"))
    return "ssm";
  if (host && strncasecmp (host, "ebs.", 4) == 0)
    return "ebs";
  if (host && strncasecmp (host, "ec2.", 4) == 0)
    return "ec2";
  return "s3";
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct kiln_emu *emu = emulator ();
  struct request_text r;
  if (!request_text_parse ((const char *) data, size, &r))
    return 0;
  if (request_text_header (&r, "Authorization") == NULL && request_text_header (&r, "X-Kiln-Sign") == NULL
      && r.n_headers < REQUEST_TEXT_MAX_HEADERS)
    {
      char sign[64];
      snprintf (sign, sizeof sign, "test test us-east-1 %s", service_of (&r));
      r.headers[r.n_headers].name = strdup ("X-Kiln-Sign");
      r.headers[r.n_headers].value = strdup (sign);
      r.n_headers++;
    }
  request_text_sign (&r, FIXED_NOW, NULL);
  struct emu_request req;
  request_text_view (&r, &req);
  struct emu_response resp;
  kiln_emu_handle (emu, &req, &resp);
  emu_jobs_wait_idle (emu);
  emu_response_release (&resp);
  request_text_release (&r);
  return 0;
}
