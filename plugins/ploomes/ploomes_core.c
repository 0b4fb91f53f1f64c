/* ploomes core: the clock shared by the plugin's files. */
#include <time.h>

#include "ploomes_core.h"

const px_host_api *ploomes_host;

int64_t ploomes_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
