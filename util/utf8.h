/* UTF-8 well-formedness (RFC 3629; the Unicode standard's table 3-7), for the code that checks or
 * repairs text before it goes into JSON, logs or metrics. Part of pxutil (see util/meson.build).
 * Pure functions; any thread. */
#ifndef PX_UTF8_H
#define PX_UTF8_H

#include <stddef.h>

/* Length (1..4) of the well-formed UTF-8 sequence at p (borrowed; `left` bytes readable), or 0
 * when the bytes there start none: a continuation byte or 0xC0, 0xC1, 0xF5..0xFF first, an
 * overlong form, a surrogate (U+D800..U+DFFF), a code point above U+10FFFF, or a sequence cut
 * short by `left`. Any ASCII byte, NUL included, is 1. left 0 gives 0. */
size_t px_utf8_len(const unsigned char *p, size_t left);

/* 1 when the n bytes at s (borrowed) are all well-formed UTF-8 (n 0 included), 0 otherwise. */
int px_utf8_valid(const char *s, size_t n);

#endif
