/* Wall-clock time in milliseconds since the epoch, as stored in the spool and shown to users. */
#ifndef PX_CLOCK_H
#define PX_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t px_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
