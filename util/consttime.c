/* Constant-time comparison (see consttime.h). */
#include "consttime.h"

#include <string.h>

int px_ct_equal(const void *given, size_t glen, const void *want, size_t wlen)
{
    const unsigned char *g = given, *w = want;
    /* volatile: the compiler may not turn the loop into one that stops at the first difference. */
    volatile unsigned char diff = (unsigned char)(glen != wlen);
    for (size_t i = 0; i < wlen; i++) {
        unsigned char c = i < glen ? g[i] : 0;
        diff |= (unsigned char)(c ^ w[i]);
    }
    return diff == 0;
}

int px_ct_streq(const char *given, const char *want)
{
    if (!given || !want) {
        return 0;
    }
    return px_ct_equal(given, strlen(given), want, strlen(want));
}
