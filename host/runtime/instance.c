/* Instances and generations: load, start, stop/drain, close (see instance.h). */
#include "clock.h"
#include "instance.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "crash.h"
#include "err.h"
#include "log.h"
#include "mem.h"

px_instance *px_instance_create(px_gen_host *host, const char *name, const char *plugin,
                                const char *file, const json_t *config, uint32_t max_inflight)
{
    px_instance *inst = px_xcalloc(1, sizeof(*inst));
    inst->host = host;
    inst->name = px_xstrdup(name);
    inst->plugin = px_xstrdup(plugin);
    inst->file = px_xstrdup(file);
    inst->config = json_incref((json_t *)config);
    inst->config_text = json_dumps(config, JSON_COMPACT | JSON_SORT_KEYS);
    inst->max_inflight = max_inflight ? max_inflight : 64;
    inst->next_generation = 1;
    return inst;
}

void px_instance_note_file(px_instance *inst)
{
    struct stat st;
    if (stat(inst->file, &st) == 0) {
        inst->file_dev = st.st_dev;
        inst->file_ino = st.st_ino;
        inst->file_size = (uint64_t)st.st_size;
        inst->file_mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    }
}

int px_instance_file_changed(const px_instance *inst)
{
    struct stat st;
    if (stat(inst->file, &st) != 0) {
        return 0; /* gone: nothing new to load */
    }
    return inst->file_dev != st.st_dev || inst->file_ino != st.st_ino ||
           inst->file_size != (uint64_t)st.st_size ||
           inst->file_mtime_ns != (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
}

void px_instance_destroy(px_instance *inst)
{
    if (!inst) {
        return;
    }
    free(inst->name);
    free(inst->plugin);
    free(inst->file);
    json_decref(inst->config);
    free(inst->config_text);
    free(inst->last_error);
    free(inst);
}

int px_gen_copy_dir_prepare(const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "plugin copies folder %s: cannot create: %s", dir, strerror(errno));
        return PX_EPLUGIN;
    }
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
        snprintf(err, errlen, "plugin copies folder %s: refused: not a folder owned by the user "
                 "running plexus (uid %u); fix: remove it, plexus creates it (mode 0700)", dir,
                 (unsigned)geteuid());
        return PX_EPLUGIN;
    }
    if ((st.st_mode & 07777) != 0700 && chmod(dir, 0700) != 0) {
        snprintf(err, errlen, "plugin copies folder %s: cannot make it private (mode 0700): %s",
                 dir, strerror(errno));
        return PX_EPLUGIN;
    }
    return 0;
}

/* Copies the plugin file so that dlopen sees a new path for every generation: dlopen returns the
 * already-loaded library for a path it knows, and a deployer may be rewriting the original. The
 * bytes copied are judged by `trust` from the open descriptor, so what is loaded is what was
 * checked. The copy is created new (O_EXCL) and never through a symlink (O_NOFOLLOW): whatever
 * sits at its name (a stale copy, or a link planted to make the host overwrite another file) is
 * unlinked first, which removes a link itself and never its target. */
static int copy_file(const char *from, const char *to, int trust, char *err, size_t errlen)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        snprintf(err, errlen, "plugin %s: cannot open: %s", from, strerror(errno));
        return PX_EPLUGIN;
    }
    if (trust != PX_TRUST_PERMISSIVE && px_loader_check_trust(from, in, err, errlen) < 0) {
        close(in);
        return PX_EPLUGIN;
    }
    if (unlink(to) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "plugin copy %s: cannot remove what is there: %s", to,
                 strerror(errno));
        close(in);
        return PX_EPLUGIN;
    }
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0700);
    if (out < 0) {
        snprintf(err, errlen, "plugin copy %s: cannot create: %s", to, strerror(errno));
        close(in);
        return PX_EPLUGIN;
    }
    char buf[65536];
    ssize_t n;
    int rc = 0;
    while ((n = read(in, buf, sizeof(buf))) > 0) {
        if (write(out, buf, (size_t)n) != n) {
            snprintf(err, errlen, "plugin copy %s: write failed: %s", to, strerror(errno));
            rc = PX_EPLUGIN;
            break;
        }
    }
    if (n < 0) {
        snprintf(err, errlen, "plugin %s: read failed: %s", from, strerror(errno));
        rc = PX_EPLUGIN;
    }
    close(in);
    close(out);
    if (rc < 0) {
        unlink(to);
    }
    return rc;
}

void px_gen_watch(px_plugin_ctx *gen, const char *call, const void *what, int after, int rc)
{
    px_gen_host *host = gen->inst->host;
    if (host->watch) {
        host->watch(host->watch_arg, gen, call, what, after, rc);
    }
}

void px_gen_crash_enter(px_crash_frame *f, px_plugin_ctx *gen, const char *call, uint64_t cause)
{
    px_gen_host *host = gen->inst->host;
    host->crash_enter(host->owner, f, gen, call, cause);
}

static void on_post(uv_async_t *a)
{
    px_plugin_ctx *gen = a->data;
    pthread_mutex_lock(&gen->post_lock);
    px_post_item *it = gen->post_head;
    gen->post_head = gen->post_tail = NULL;
    pthread_mutex_unlock(&gen->post_lock);
    while (it) {
        px_post_item *next = it->next;
        if (gen->state_code != PX_GEN_DESTROYED) {
            px_crash_frame cf;
            px_gen_crash_enter(&cf, gen, "post", it->cause);
            it->cb(it->arg);
            px_crash_leave(&cf);
        }
        free(it);
        it = next;
    }
}

static void on_drain_timeout(uv_timer_t *t);

/* "<what>: <reason> (<rc>)", where reason is the last error the plugin logged during the call
 * (the code alone says little: "invalid argument"), or "<what>: <rc>" when it logged none. */
__attribute__((format(printf, 5, 6))) static void failure(char *err, size_t errlen, int rc,
                                                          const char *reason, const char *fmt,
                                                          ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (reason) {
        snprintf(err, errlen, "%s: %s (%s)", what, reason, px_strerror(rc));
    } else {
        snprintf(err, errlen, "%s: %s", what, px_strerror(rc));
    }
}

/* Why init or start failed, in the plugin's words: what it gave set_error (taken from gen),
 * else the last error it logged (`logged`, owned; freed here when not returned), else NULL.
 * Owned by caller. */
static char *plugin_reason(px_plugin_ctx *gen, char *logged)
{
    char *said = gen->error;
    gen->error = NULL;
    if (said) {
        free(logged);
        return said;
    }
    return logged;
}

int px_gen_load(px_instance *inst, const char *file, const char *copy_dir, int trust,
                px_plugin_ctx **out, char *err, size_t errlen)
{
    px_gen_host *host = inst->host;
    uint32_t generation = inst->next_generation;
    char *copy = NULL;
    const char *path = file;
    if (copy_dir && !px_loader_is_builtin(file)) {
        int rc = px_gen_copy_dir_prepare(copy_dir, err, errlen);
        if (rc < 0) {
            return rc;
        }
        copy = px_xasprintf("%s/%s.%u.%d.so", copy_dir, inst->name, generation, (int)getpid());
        rc = copy_file(file, copy, trust, err, errlen);
        if (rc < 0) {
            free(copy);
            return rc;
        }
        path = copy;
    }
    px_plugin_lib *lib = NULL;
    int rc = px_loader_open(path, inst->plugin, host->api, trust, &lib, err, errlen);
    if (rc < 0) {
        if (copy) {
            /* Name the file the operator knows, not the private copy. */
            char *fixed = NULL;
            const char *at = strstr(err, copy);
            if (at) {
                fixed = px_xasprintf("%.*s%s%s", (int)(at - err), err, file, at + strlen(copy));
                snprintf(err, errlen, "%s", fixed);
                free(fixed);
            }
            unlink(copy);
            free(copy);
        }
        return rc;
    }
    px_plugin_ctx *gen = px_xcalloc(1, sizeof(*gen));
    gen->inst = inst;
    gen->lib = lib;
    gen->copy_path = copy;
    gen->generation = generation;
    gen->loaded_at_ms = px_now_ms();
    gen->state_code = PX_GEN_LOADED;
    pthread_mutex_init(&gen->post_lock, NULL);
    uv_async_init(host->loop, &gen->post_async, on_post);
    gen->post_async.data = gen;
    uv_unref((uv_handle_t *)&gen->post_async);
    uv_timer_init(host->loop, &gen->drain_timer);
    gen->drain_timer.data = gen;
    gen->handles_open = 2;
    host->gens_open++;

    void *state = NULL;
    gen->config = json_incref(inst->config);
    px_crash_frame cf;
    px_log_capture_begin(inst->name);
    px_gen_watch(gen, "init", NULL, 0, 0);
    px_crash_enter(&cf, "init", inst->name, 0, NULL);
    rc = lib->desc->init(gen, gen->config, &state);
    px_crash_leave(&cf);
    px_gen_watch(gen, "init", NULL, 1, rc);
    char *reason = plugin_reason(gen, px_log_capture_end());
    if (rc < 0) {
        failure(err, errlen, rc, reason, "plugin %s (instance %s): init failed", file, inst->name);
        free(reason);
        gen->state = NULL;
        gen->init_failed = 1;
        px_gen_close(gen, NULL);
        return PX_EPLUGIN;
    }
    free(reason);
    gen->state = state;
    inst->next_generation++;
    inst->kind = lib->desc->kind;
    *out = gen;
    return 0;
}

int px_gen_start(px_plugin_ctx *gen, char *err, size_t errlen)
{
    const px_plugin_desc *desc = gen->lib->desc;
    int rc = 0;
    px_gen_watch(gen, "start", NULL, 0, 0);
    if (desc->start) {
        free(gen->error);
        gen->error = NULL;
        px_crash_frame cf;
        px_log_capture_begin(gen->inst->name);
        px_crash_enter(&cf, "start", gen->inst->name, 0, NULL);
        rc = desc->start(gen->state);
        px_crash_leave(&cf);
        char *reason = plugin_reason(gen, px_log_capture_end());
        if (rc < 0) {
            failure(err, errlen, rc, reason, "instance %s: start failed", gen->inst->name);
        }
        free(reason);
    }
    if (rc == 0) {
        gen->state_code = PX_GEN_RUNNING;
    }
    px_gen_watch(gen, "start", NULL, 1, rc);
    return rc < 0 ? PX_EPLUGIN : 0;
}

static void finish_drain(px_plugin_ctx *gen)
{
    if (gen->state_code != PX_GEN_STOPPING) {
        return;
    }
    gen->state_code = PX_GEN_DRAINED;
    uv_timer_stop(&gen->drain_timer);
    if (gen->on_drained) {
        gen->on_drained(gen, gen->on_drained_arg);
    }
}

static void on_drained_deferred(void *arg)
{
    px_plugin_ctx *gen = arg;
    gen->drain_deferred = 0;
    if (gen->state_code == PX_GEN_STOPPING && gen->inflight == 0 && gen->pending_emits == 0 &&
        gen->drain_reported) {
        finish_drain(gen);
    }
}

void px_gen_check_drained(px_plugin_ctx *gen)
{
    if (gen->state_code != PX_GEN_STOPPING || gen->drain_deferred) {
        return;
    }
    if (gen->inflight == 0 && gen->pending_emits == 0 && gen->drain_reported) {
        /* Never finish inside the plugin's own call (complete, drained...). */
        gen->drain_deferred = 1;
        px_defer_push(gen->inst->host->defer, on_drained_deferred, gen);
    }
}

static void on_drain_timeout(uv_timer_t *t)
{
    px_plugin_ctx *gen = t->data;
    PX_LOG_WARN(gen->inst->name, "drain timed out generation=%u inflight=%zu emits=%zu",
                gen->generation, gen->inflight, gen->pending_emits);
    finish_drain(gen);
}

void px_gen_stop(px_plugin_ctx *gen, uint64_t timeout_ms,
                 void (*cb)(px_plugin_ctx *gen, void *arg), void *arg)
{
    const px_plugin_desc *desc = gen->lib->desc;
    gen->on_drained = cb;
    gen->on_drained_arg = arg;
    if (gen->state_code == PX_GEN_RUNNING || gen->state_code == PX_GEN_LOADED) {
        gen->state_code = PX_GEN_STOPPING;
        px_crash_frame cf;
        px_crash_enter(&cf, "stop", gen->inst->name, 0, NULL);
        px_gen_watch(gen, "stop", NULL, 0, 0);
        if (desc->stop) {
            desc->stop(gen->state);
        }
        px_gen_watch(gen, "stop", NULL, 1, 0);
        cf.call = "drain";
        if (desc->drain) {
            px_gen_watch(gen, "drain", NULL, 0, 0);
            desc->drain(gen->state);
            px_gen_watch(gen, "drain", NULL, 1, 0);
        }
        px_crash_leave(&cf);
        if (!desc->drain) {
            gen->drain_reported = 1;
        }
    }
    uv_timer_start(&gen->drain_timer, on_drain_timeout, timeout_ms ? timeout_ms : 1, 0);
    px_gen_check_drained(gen);
}

/* Frees a generation once its handles are closed and no emit of it waits for the spool. */
static void gen_free(px_plugin_ctx *gen)
{
    px_gen_host *host = gen->inst->host;
    void (*cb)(px_plugin_ctx *) = gen->on_closed;
    /* Posts still queued are dropped: their callbacks live in the library being unloaded. */
    px_post_item *it = gen->post_head;
    while (it) {
        px_post_item *next = it->next;
        free(it);
        it = next;
    }
    pthread_mutex_destroy(&gen->post_lock);
    json_decref(gen->config);
    free(gen->error);
    if (cb) {
        cb(gen);
    }
    px_loader_close(gen->lib);
    if (gen->copy_path) {
        unlink(gen->copy_path);
        free(gen->copy_path);
    }
    free(gen);
    host->gens_open--;
}

static void on_gen_handle_closed(uv_handle_t *h)
{
    px_plugin_ctx *gen = h->data;
    if (--gen->handles_open > 0) {
        return;
    }
    gen->handles_closed = 1;
    if (gen->pending_emits == 0) {
        gen_free(gen);
    }
}

void px_gen_emit_done(px_plugin_ctx *gen)
{
    if (gen->pending_emits > 0) {
        gen->pending_emits--;
    }
    if (gen->handles_closed) {
        if (gen->pending_emits == 0) {
            gen_free(gen);
        }
        return;
    }
    px_gen_check_drained(gen);
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void px_gen_close(px_plugin_ctx *gen, void (*cb)(px_plugin_ctx *gen))
{
    px_gen_host *host = gen->inst->host;
    gen->on_closed = cb;
    /* Run posts already queued while the plugin still exists, then refuse new ones. */
    on_post(&gen->post_async);
    /* Deliveries in flight, routes, unanswered requests and outgoing calls go first, while the
     * plugin still exists: a cancelled call's callback runs now, into live plugin state, never
     * after destroy. */
    host->closing(host->owner, gen);
    /* From here on post() fails: a worker still posting while destroy joins it drops its
     * result (sdk.h). */
    pthread_mutex_lock(&gen->post_lock);
    gen->post_closed = 1;
    pthread_mutex_unlock(&gen->post_lock);
    const px_plugin_desc *desc = gen->lib->desc;
    if (!gen->init_failed && desc->destroy) {
        px_crash_frame cf;
        px_gen_watch(gen, "destroy", NULL, 0, 0);
        px_crash_enter(&cf, "destroy", gen->inst->name, 0, NULL);
        desc->destroy(gen->state);
        px_crash_leave(&cf);
    }
    gen->state_code = PX_GEN_DESTROYED;
    if (!gen->init_failed && desc->destroy) {
        px_gen_watch(gen, "destroy", NULL, 1, 0);
    }
    /* Orphaned deliveries, and whatever the plugin registered during destroy. */
    host->destroyed(host->owner, gen);
    while (gen->timers) {
        px_gen_timer_stop(gen->timers);
    }
    uv_close((uv_handle_t *)&gen->post_async, on_gen_handle_closed);
    uv_close((uv_handle_t *)&gen->drain_timer, on_gen_handle_closed);
}

int px_gen_post(px_plugin_ctx *gen, void (*cb)(void *arg), void *arg)
{
    if (!gen || !cb) {
        return PX_EINVAL;
    }
    px_post_item *it = malloc(sizeof(*it));
    if (!it) {
        return UV_ENOMEM;
    }
    it->cb = cb;
    it->arg = arg;
    it->cause = px_crash_cause(gen); /* a frame of this thread: 0 on a plugin's own thread */
    it->next = NULL;
    pthread_mutex_lock(&gen->post_lock);
    if (gen->post_closed) {
        pthread_mutex_unlock(&gen->post_lock);
        free(it);
        return PX_ESTATE;
    }
    if (gen->post_tail) {
        gen->post_tail->next = it;
    } else {
        gen->post_head = it;
    }
    gen->post_tail = it;
    uv_async_send(&gen->post_async);
    pthread_mutex_unlock(&gen->post_lock);
    return 0;
}

static void on_timer(uv_timer_t *h)
{
    px_timer *t = h->data;
    px_crash_frame cf;
    px_gen_crash_enter(&cf, t->gen, "timer", t->cause);
    t->cb(t->arg);
    px_crash_leave(&cf);
}

int px_gen_timer_start(px_plugin_ctx *gen, uint64_t ms, uint64_t repeat_ms, void (*cb)(void *arg),
                       void *arg, px_timer **out)
{
    if (!gen || !cb || !out || gen->state_code == PX_GEN_DESTROYED) {
        return PX_EINVAL;
    }
    px_timer *t = px_xcalloc(1, sizeof(*t));
    t->gen = gen;
    t->cb = cb;
    t->arg = arg;
    t->cause = px_crash_cause(gen);
    uv_timer_init(gen->inst->host->loop, &t->handle);
    t->handle.data = t;
    uv_timer_start(&t->handle, on_timer, ms, repeat_ms);
    t->next = gen->timers;
    if (gen->timers) {
        gen->timers->prev = t;
    }
    gen->timers = t;
    *out = t;
    return 0;
}

size_t px_gen_fire_timers(px_plugin_ctx *gen)
{
    /* the pending ones now: a callback may stop any timer (its memory lives until the loop
     * closes the handle) or start new ones (at the head, not in this list) */
    enum { MAX_FIRED = 64 };
    px_timer *due[MAX_FIRED];
    size_t n = 0;
    for (px_timer *t = gen->timers; t && n < MAX_FIRED; t = t->next) {
        if (uv_is_active((uv_handle_t *)&t->handle)) {
            due[n++] = t;
        }
    }
    size_t fired = 0;
    for (size_t i = 0; i < n; i++) {
        px_timer *t = due[i];
        if (uv_is_closing((uv_handle_t *)&t->handle) || !uv_is_active((uv_handle_t *)&t->handle)) {
            continue; /* stopped by an earlier callback */
        }
        if (uv_timer_get_repeat(&t->handle) == 0) {
            uv_timer_stop(&t->handle); /* a one-shot fires once */
        }
        on_timer(&t->handle);
        fired++;
    }
    return fired;
}

void px_gen_timer_stop(px_timer *t)
{
    if (!t) {
        return;
    }
    px_plugin_ctx *gen = t->gen;
    if (t->prev) {
        t->prev->next = t->next;
    } else {
        gen->timers = t->next;
    }
    if (t->next) {
        t->next->prev = t->prev;
    }
    uv_timer_stop(&t->handle);
    uv_close((uv_handle_t *)&t->handle, on_timer_closed);
}
