/* Hot reload of a running runtime (runtime.h): a new generation of one instance, or the whole
 * configuration file applied as a difference; and the watcher of the plugin path that reloads an
 * instance whose plugin file was rebuilt. Loop thread only. */
#ifndef PX_RELOAD_H
#define PX_RELOAD_H

#include <stddef.h>

#include <uv.h>

#include "admin.h"
#include "runtime.h"

/* Reloads instance `instance` (borrowed) with a new generation of its plugin file, or, with
 * instance NULL, the whole configuration file: parse and validate all of it, then apply only the
 * difference (changed instances get a new generation, removed ones stop and drain, added ones
 * start, pipelines swap, admin (may be NULL) takes its new settings). A failure changes nothing
 * and is reported in err. Returns 0 or < 0. The old generations drain in the background after
 * this returns. */
int px_reload(px_runtime *rt, px_admin *admin, const char *instance, char *err, size_t errlen);

/* host.watch_plugins: watches the plugin path and reloads instances whose file changed. Caller's
 * memory, zeroed before start; it must stay put until the loop closed its handles. */
typedef struct px_plugin_watch {
    px_runtime *rt;             /* borrowed */
    px_admin *admin;            /* borrowed, may be NULL */
    uv_fs_event_t *watchers;    /* one per plugin_path directory */
    size_t nwatchers;
    uv_timer_t timer;           /* debounces file events */
    int timer_open;
} px_plugin_watch;

/* Starts watching when rt's config sets host.watch_plugins (else does nothing). */
void px_plugin_watch_start(px_plugin_watch *w, px_runtime *rt, px_admin *admin);
void px_plugin_watch_stop(px_plugin_watch *w);

#endif
