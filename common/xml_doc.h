/* xml_doc.h - XML and the outside world through libxml2, safely: reading
 * what came from outside (AWS replies in the client, request bodies in
 * kiln-emulator), and writing text that came from outside into replies.
 *
 * Neither AWS replies nor AWS request bodies ever carry a DOCTYPE, so a
 * document with one is refused: its entities could expand without bound
 * when text is read out of the tree (one 100 KB entity referenced 2,000
 * times is 200 MB).  Nothing is fetched from the network and libxml2 prints
 * nothing.  libxml2 is initialised once, from whichever thread comes first. */
#ifndef KILN_COMMON_XML_DOC_H
#define KILN_COMMON_XML_DOC_H

#include <stddef.h>

#include <libxml/tree.h>
#include <libxml/xmlwriter.h>

#include "cleanup.h"

/* _cleanup_ (xmlFreeDoc) xmlDoc *doc = NULL; */
KILN_DEFINE_CLEANUP (xmlDoc, xmlFreeDoc)

/* Initialises libxml2 (once; later calls do nothing).  Parsing does it too,
 * but libxml2 would rather be initialised before threads parse. */
void kiln_xml_init (void);

/* The parsed document, or NULL when body is empty, not well-formed, larger
 * than 2 GiB or has a DTD.  name is what libxml2 calls the document. */
xmlDoc *kiln_xml_parse_untrusted (const char *body, size_t len, const char *name);

/* <name>value</name> on w, value made valid UTF-8 without the characters
 * XML forbids first when it needs to be (utf8.h): text a client sent may be
 * any bytes, and the reply must stay well-formed. */
void kiln_xml_write_text_element (xmlTextWriterPtr w, const char *name, const char *value);

#endif
