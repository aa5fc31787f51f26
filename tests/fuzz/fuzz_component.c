/* fuzz_component.c - libFuzzer target for the component document parser and
 * validator: any input must give a document or an error, never a crash, a
 * leak or undefined behaviour. */
#include <stddef.h>
#include <stdint.h>

#include "cleanup.h"
#include "component.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct kiln_component *c = NULL;
  _cleanup_error_ kiln_error *e = NULL;
  if (kiln_component_load_text ("fuzz.yml", (const char *) data, size, NULL, &c, &e) == 0)
    kiln_component_free (c);
  return 0;
}
