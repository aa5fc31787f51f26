/* xml_doc.h - reading XML that came from outside (AWS replies in the client,
 * request bodies in kiln-emulator) through libxml2, safely.
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

/* Initialises libxml2 (once; later calls do nothing).  Parsing does it too,
 * but libxml2 would rather be initialised before threads parse. */
void kiln_xml_init (void);

/* The parsed document, or NULL when body is empty, not well-formed, larger
 * than 2 GiB or has a DTD.  name is what libxml2 calls the document. */
xmlDoc *kiln_xml_parse_untrusted (const char *body, size_t len, const char *name);

#endif
