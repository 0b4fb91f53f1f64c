/* UTF-8 well-formedness (see utf8.h). Checked on the bytes, by the ranges of the standard's table
 * of well-formed sequences, rather than by decoding a code point and checking it. */
#include "utf8.h"

size_t px_utf8_len(const unsigned char *p, size_t left)
{
    if (left == 0) {
        return 0;
    }
    unsigned c = p[0];
    if (c < 0x80) {
        return 1;
    }
    size_t n = c >= 0xC2 && c <= 0xDF   ? 2
               : c >= 0xE0 && c <= 0xEF ? 3
               : c >= 0xF0 && c <= 0xF4 ? 4
                                        : 0; /* 0x80..0xC1, 0xF5..0xFF never start one */
    if (n == 0 || left < n) {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            return 0;
        }
    }
    if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xF0 && p[1] < 0x90)) {
        return 0; /* overlong */
    }
    if ((c == 0xED && p[1] >= 0xA0) || (c == 0xF4 && p[1] >= 0x90)) {
        return 0; /* a surrogate, or above U+10FFFF */
    }
    return n;
}

int px_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t k = px_utf8_len(p + i, n - i);
        if (k == 0) {
            return 0;
        }
        i += k;
    }
    return 1;
}
