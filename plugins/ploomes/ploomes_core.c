/* ploomes core: clock and allocation helpers shared by the plugin's files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ploomes_core.h"

const px_host_api *ploomes_host;

int64_t ploomes_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void *ploomes_xcalloc(size_t n, size_t size)
{
    void *m = calloc(n ? n : 1, size ? size : 1);
    if (!m) {
        fprintf(stderr, "ploomes: out of memory\n");
        abort();
    }
    return m;
}

char *ploomes_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = ploomes_xcalloc(1, n);
    memcpy(d, s, n);
    return d;
}
