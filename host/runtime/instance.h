/* Plugin instances and their generations. An instance is a named use of a plugin (config key
 * under `plugins:`); a generation is one loaded copy of its plugin with its own state. The
 * generation is what the SDK calls px_plugin_ctx: every loop resource a plugin holds (timers,
 * posts, routes, HTTP calls, deliveries in flight) is recorded on it, so the host can prove a
 * generation let go of everything before dlclose. Loop thread only, except px_gen_post. */
#ifndef PX_INSTANCE_H
#define PX_INSTANCE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <plexus/sdk.h>
#include <uv.h>

#include "crash.h"
#include "defer.h"
#include "loader.h"

typedef struct px_instance px_instance;

/* What generations need from the runtime that holds them: filled in by the runtime before the
 * first instance is created, and outliving every generation. The hooks run on the loop thread. */
typedef struct px_gen_host {
    uv_loop_t *loop;
    const px_host_api *api;   /* the table handed to plugins */
    px_defer *defer;          /* drain checks run from here, never inside a plugin's call */
    void *owner;              /* the runtime, passed to the hooks (and found by the host API) */
    /* Enters crash frame f for a callback into gen (see px_gen_crash_enter). */
    void (*crash_enter)(void *owner, px_crash_frame *f, px_plugin_ctx *gen, const char *call,
                        uint64_t cause);
    /* gen is about to be destroyed: take back its deliveries, routes, requests and calls. */
    void (*closing)(void *owner, px_plugin_ctx *gen);
    /* gen was destroyed: forget what it still held, and whatever destroy registered. */
    void (*destroyed)(void *owner, px_plugin_ctx *gen);
    /* Optional (NULL in the daemon): a checker told of each step of a generation's life and
     * each call into its plugin, before it (after 0) and after it (after 1, rc the result for
     * init and start, else 0): "init", "start" and "stop" (told even when the plugin has no such
     * callback: the generation starts or stops all the same), "drain" and "destroy" (when the
     * plugin has them), "deliver" (before only; `what` is the delivery handle, else NULL). The
     * test kit keeps its rule checks with it. Loop thread. */
    void (*watch)(void *watch_arg, px_plugin_ctx *gen, const char *call, const void *what,
                  int after, int rc);
    void *watch_arg;
    size_t gens_open;         /* generations not yet freed */
} px_gen_host;

enum px_gen_state {
    PX_GEN_LOADED = 0, /* init done, not started */
    PX_GEN_RUNNING,
    PX_GEN_STOPPING,   /* stop called, draining */
    PX_GEN_DRAINED,    /* in-flight work done (or drain timed out) */
    PX_GEN_DESTROYED,
};

typedef struct px_post_item {
    void (*cb)(void *arg);
    void *arg;
    uint64_t cause;         /* px_crash_cause when posted (0 from a plugin's thread) */
    struct px_post_item *next;
} px_post_item;

struct px_timer {
    uv_timer_t handle;
    px_plugin_ctx *gen;
    void (*cb)(void *arg);
    void *arg;
    uint64_t cause;         /* px_crash_cause when started */
    struct px_timer *prev, *next; /* the generation's live timers */
};

struct px_plugin_ctx {
    px_instance *inst;
    px_plugin_lib *lib;     /* owned */
    char *copy_path;        /* private copy of the .so (owned; unlinked at close), or NULL */
    void *state;            /* the plugin's */
    json_t *config;         /* the options init got (a reference): valid until destroy */
    uint32_t generation;
    int state_code;         /* enum px_gen_state */
    int64_t loaded_at_ms;
    size_t inflight;        /* deliveries handed to deliver() and not completed */
    size_t pending_emits;   /* emits waiting for their persisted callback */
    int drain_reported;     /* plugin called drained() (or has no drain) */
    int drain_deferred;     /* a drain check is queued */
    int init_failed;        /* init returned an error: destroy is not called */
    px_timer *timers;       /* live timers */
    uv_async_t post_async;  /* wakes the loop for post() */
    pthread_mutex_t post_lock;
    px_post_item *post_head, *post_tail;
    int post_closed;        /* set under post_lock once post() must fail */
    uv_timer_t drain_timer; /* bounds the drain */
    void (*on_drained)(px_plugin_ctx *gen, void *arg);
    void *on_drained_arg;
    int handles_open;       /* uv handles not yet closed (post_async, drain_timer) */
    int handles_closed;     /* all closed: freed as soon as pending_emits is 0 */
    struct px_route_rec *routes; /* HTTP routes this generation registered (net.c) */
    void (*on_closed)(px_plugin_ctx *gen);
    char *error;            /* the reason set_error gave during init/start (owned), or NULL */
    struct px_lock_rec *locks; /* named leases this generation asked for (locks.c) */
};

struct px_instance {
    px_gen_host *host;      /* borrowed: the runtime's */
    char *name;             /* owned */
    char *plugin;           /* plugin name (owned) */
    char *file;             /* resolved plugin file (owned) */
    json_t *config;         /* validated options (owned reference) */
    char *config_text;      /* compact JSON of config, to compare on reload (owned) */
    uint32_t max_inflight;
    int ordered;            /* px_instance_conf.ordered */
    uint32_t kind;          /* PX_KIND_* of the current generation */
    px_plugin_ctx *gen;     /* current generation, or NULL */
    uint32_t next_generation;
    char *last_error;       /* last load/start failure (owned), or NULL */
    uint64_t file_dev, file_ino, file_size; /* identity of `file` when last loaded, so a */
    int64_t file_mtime_ns;                  /* reload knows whether the binary changed */
    double rate_tokens;     /* max_events_per_second token bucket (ingest.c) */
    uint64_t rate_at_ms;    /* loop time of its last refill */
    int limited;            /* 1 while its emits are refused by a limit (ingest.c) */
    int limit_logged;       /* this refusal episode was logged */
    uint64_t limit_log_ms;  /* loop time of the last "refused by a limit" line */
};

/* Records the identity of inst->file now (after a successful load). */
void px_instance_note_file(px_instance *inst);
/* 1 when inst->file is no longer the file last loaded (replaced, rewritten). */
int px_instance_file_changed(const px_instance *inst);

/* Creates an instance record (nothing loaded). Strings and config borrowed (copied/increfed). */
px_instance *px_instance_create(px_gen_host *host, const char *name, const char *plugin,
                                const char *file, const json_t *config, uint32_t max_inflight);
void px_instance_destroy(px_instance *inst); /* the generation must be gone */

/* Makes `dir` (borrowed) the private folder of plugin copies: created mode 0700 when missing,
 * refused unless it is a real folder (not a symlink) owned by the running user, and set to 0700.
 * Returns 0 or PX_EPLUGIN with one line in err. */
int px_gen_copy_dir_prepare(const char *dir, char *err, size_t errlen);

/* Loads a new generation of inst from `file`: copies it to a private path under copy_dir when
 * copy_dir is non-NULL (dlopen caches by path; the copy is made new, never through a symlink),
 * judging the copied bytes by `trust` (enum px_plugin_trust), opens and checks it, calls init with
 * the instance's config. On success returns 0 and stores the generation in *out (not started, not
 * yet current). On failure returns < 0 with one line in err; nothing is left loaded. */
int px_gen_load(px_instance *inst, const char *file, const char *copy_dir, int trust,
                px_plugin_ctx **out, char *err, size_t errlen);
int px_gen_start(px_plugin_ctx *gen, char *err, size_t errlen);
/* Calls stop, then waits (on the loop) until deliveries and emits in flight are done and the
 * plugin reported drained, bounded by timeout_ms; then calls cb (on the loop, never inside). */
void px_gen_stop(px_plugin_ctx *gen, uint64_t timeout_ms,
                 void (*cb)(px_plugin_ctx *gen, void *arg), void *arg);
/* Re-checks the drain condition; called by the dispatcher and emit paths when counts drop. */
void px_gen_check_drained(px_plugin_ctx *gen);
/* Calls destroy, releases every resource the generation still holds, dlcloses and frees it once
 * its handles are closed (cb, may be NULL, runs then). */
void px_gen_close(px_plugin_ctx *gen, void (*cb)(px_plugin_ctx *gen));

/* An emit (or dead_letter) of gen has had its outcome: keeps the generation alive until its last
 * emit settled, even past destroy (its callback is then not called). */
void px_gen_emit_done(px_plugin_ctx *gen);

/* Enters crash frame f (caller's memory, left with px_crash_leave) for callback `call` (static
 * storage, one word: it is a field of the crash marker) into gen: charged to its instance and to
 * the delivery px_dispatch_blame names for `cause` (a px_crash_cause captured when the plugin set
 * the callback up; 0 when unknown). Whatever the callback sets up in turn inherits that delivery.
 * Every plugin callback the host runs outside init/start/stop/deliver/destroy goes through it. */
void px_gen_crash_enter(px_crash_frame *f, px_plugin_ctx *gen, const char *call, uint64_t cause);

/* Tells host->watch, when set, of a call into gen (see px_gen_host). */
void px_gen_watch(px_plugin_ctx *gen, const char *call, const void *what, int after, int rc);

/* Host table services bound to a generation. */
int px_gen_post(px_plugin_ctx *gen, void (*cb)(void *arg), void *arg); /* any thread */
int px_gen_timer_start(px_plugin_ctx *gen, uint64_t ms, uint64_t repeat_ms, void (*cb)(void *arg),
                       void *arg, px_timer **out);
void px_gen_timer_stop(px_timer *t);
/* Runs now, once, every timer of gen still pending (started and not stopped; a one-shot that
 * has fired is not pending), as if each were due: a one-shot is then no longer pending, a
 * repeating one keeps its schedule. Timers the callbacks start wait for the next call. For hosts
 * that drive time themselves (the fuzz targets); the daemon never calls it. Returns how many
 * ran. */
size_t px_gen_fire_timers(px_plugin_ctx *gen);

#endif
