/* `plexus run`: the runtime (lifecycle.h) with what a running host adds around it: the admin API,
 * the signals (SIGINT/SIGTERM: graceful stop, a second one exits at once; SIGHUP: reload) and the
 * plugin path watcher. Loop thread only. */
#ifndef PX_RUN_H
#define PX_RUN_H

#include <uv.h>

#include "config.h"

/* Runs the host of cfg (stolen) on loop until it stopped and everything closed: charges the
 * previous run's crash first, then starts. Returns < 0 (logged) when the host could not be
 * built, else the exit status: 0, or 1 when it failed to start. */
int px_run(uv_loop_t *loop, px_config *cfg);

#endif
