/* utf8.h - UTF-8 validity, and text made safe for XML 1.0.
 *
 * What a client sends may be any bytes; what kiln-emulator writes into XML
 * must be well-formed, or the client cannot read the reply at all (a key or
 * an error message that echoes invalid UTF-8 made whole replies unreadable).
 * Validity here is RFC 3629's: shortest forms only, no surrogates, nothing
 * past U+10FFFF. */
#ifndef KILN_COMMON_UTF8_H
#define KILN_COMMON_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Whether the NUL-terminated s is valid UTF-8. */
bool kiln_utf8_valid (const char *s);

/* Whether s can go into XML 1.0 text as it is: valid UTF-8 without the
 * characters XML forbids (C0 controls but tab, newline and carriage return;
 * U+FFFE, U+FFFF). */
bool kiln_utf8_xml_safe (const char *s);

/* A malloc'd copy of s in which every invalid byte and every character XML
 * forbids is U+FFFD, the replacement character. */
char *kiln_utf8_for_xml (const char *s);

#endif
