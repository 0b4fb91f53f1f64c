/* Helpers shared by the bundled plugins (see the headers next to this file). */
#include "common.h"

#include <string.h>

int px_common_consttime_eq(const char *a, const char *b)
{
    if (!a || !b) {
        return 0;
    }
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    /* Compare over the expected length only, so timing does not depend on where they differ. */
    for (size_t i = 0; i < lb; i++) {
        unsigned char ca = i < la ? (unsigned char)a[i] : 0;
        diff |= (unsigned char)(ca ^ (unsigned char)b[i]);
    }
    return diff == 0;
}
