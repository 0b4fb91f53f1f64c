/* A fast JSON validator that agrees with jansson: checks that a text is one JSON text that
 * json_loadb would accept, without building a tree, so a body can be accepted cheaply and parsed
 * with jansson only when something needs its values. It is one-sided: PX_JSON_OK means jansson
 * is certain to accept the text; anything it cannot be sure of (invalid input, or a rare valid
 * form such as a huge integer or a \u0000 escape) is PX_JSON_UNSURE and left to jansson.
 * Pure function: no allocation, no global state; safe from any thread. */
#ifndef PX_JSON_CHECK_H
#define PX_JSON_CHECK_H

#include <stddef.h>

enum { PX_JSON_OK = 0, PX_JSON_UNSURE = 1 };

/* Checks that text[0..len) (borrowed, not NUL-terminated) is one JSON text that
 * json_loadb(text, len, flags, &err) would accept. flags: 0, JSON_REJECT_DUPLICATES and/or
 * JSON_DECODE_ANY (any other flag bit -> PX_JSON_UNSURE). Returns PX_JSON_OK only when jansson
 * is certain to accept it with those flags; otherwise PX_JSON_UNSURE (invalid, or a case this
 * checker leaves to jansson: integers of more than 18 digits, reals with an exponent of more
 * than 2 digits or more than 100 mantissa digits, \u escapes of U+0000 or of a lone surrogate,
 * nesting deeper than 512, and with JSON_REJECT_DUPLICATES an object with more than 64 keys or a
 * key holding a backslash). The caller then parses with jansson, which decides and gives the
 * exact error message. text == NULL is PX_JSON_UNSURE. */
int px_json_check(const char *text, size_t len, size_t flags);

#endif
