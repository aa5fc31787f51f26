/* xml_doc.c - reading XML that came from outside (see xml_doc.h). */
#include "xml_doc.h"

#include <pthread.h>
#include <stdint.h>

#include <libxml/parser.h>

#include "cleanup.h"
#include "utf8.h"

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

static void
xml_init_once (void)
{
  xmlInitParser ();
}

void
kiln_xml_init (void)
{
  pthread_once (&xml_once, xml_init_once);
}

xmlDoc *
kiln_xml_parse_untrusted (const char *body, size_t len, const char *name)
{
  kiln_xml_init ();
  if (body == NULL || len == 0 || len > (size_t) INT32_MAX)
    return NULL;
  xmlDoc *doc = xmlReadMemory (body, (int) len, name, NULL, XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  if (doc && (doc->intSubset || doc->extSubset))
    {
      xmlFreeDoc (doc);
      return NULL;
    }
  return doc;
}

void
kiln_xml_write_text_element (xmlTextWriterPtr w, const char *name, const char *value)
{
  if (value == NULL)
    value = "";
  _cleanup_free_ char *safe = kiln_utf8_xml_safe (value) ? NULL : kiln_utf8_for_xml (value);
  xmlTextWriterWriteElement (w, BAD_CAST name, BAD_CAST (safe ? safe : value));
}
