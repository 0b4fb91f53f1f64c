/* A running host: runtime, admin API, signals, plugin watcher (see run.h). */
#include "run.h"

#include <signal.h>
#include <unistd.h>

#include "admin.h"
#include "crash.h"
#include "lifecycle.h"
#include "log.h"
#include "reload.h"

typedef struct px_host_run {
    px_runtime *rt;
    px_admin *admin;            /* owned; may be NULL */
    px_plugin_watch watch;
    uv_signal_t sigint, sigterm, sighup;
    int signals_open;
} px_host_run;

static int reload_for_admin(void *arg, const char *instance, char *err, size_t errlen)
{
    px_host_run *r = arg;
    return px_reload(r->rt, r->admin, instance, err, errlen);
}

static void on_signal(uv_signal_t *s, int signum)
{
    px_host_run *r = s->data;
    if (signum == SIGHUP) {
        char err[1024];
        PX_LOG_INFO("host", "SIGHUP: reloading configuration %s", r->rt->cfg->path);
        px_reload(r->rt, r->admin, NULL, err, sizeof(err));
        return;
    }
    if (r->rt->stopping) {
        PX_LOG_WARN("host", "second stop signal: exiting now; the spool keeps every "
                    "acknowledged event");
        _exit(1);
    }
    PX_LOG_INFO("host", "stop requested signal=%d", signum);
    px_runtime_shutdown(r->rt);
}

static void start_signals(px_host_run *r, uv_loop_t *loop)
{
    uv_signal_init(loop, &r->sigint);
    uv_signal_init(loop, &r->sigterm);
    uv_signal_init(loop, &r->sighup);
    r->sigint.data = r->sigterm.data = r->sighup.data = r;
    uv_signal_start(&r->sigint, on_signal, SIGINT);
    uv_signal_start(&r->sigterm, on_signal, SIGTERM);
    uv_signal_start(&r->sighup, on_signal, SIGHUP);
    r->signals_open = 1;
}

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

/* The runtime closes: what run added around it goes first. */
static void on_runtime_close(void *arg)
{
    px_host_run *r = arg;
    px_plugin_watch_stop(&r->watch);
    px_admin_close(r->admin);
    r->admin = NULL;
    if (r->signals_open) {
        uv_close((uv_handle_t *)&r->sigint, on_handle_closed);
        uv_close((uv_handle_t *)&r->sigterm, on_handle_closed);
        uv_close((uv_handle_t *)&r->sighup, on_handle_closed);
        r->signals_open = 0;
    }
}

/* The previous run crashed in a delivery made before its commit: make that sink wait for
 * commits, so that a crash on the same input again is charged to a stored delivery. */
static void on_unstored_crash(const char *instance, void *arg)
{
    px_runtime *rt = arg;
    px_dispatch_wait_for_commits(rt->dispatch, instance);
}

int px_run(uv_loop_t *loop, px_config *cfg)
{
    px_host_run r = {0};
    char err[1024];
    int rc = px_runtime_create(loop, cfg, &r.rt, err, sizeof(err));
    if (rc < 0) {
        PX_LOG_ERR("host", "%s", err);
        return rc;
    }
    px_runtime *rt = r.rt;
    rt->on_close = on_runtime_close;
    rt->on_close_arg = &r;
    px_admin_create(rt, reload_for_admin, &r, &r.admin); /* a failure is logged; runs without */
    int exit_code = 0;
    /* Before any delivery is read back: charge the previous run's crash to its delivery. */
    px_crash_recover(rt->store, rt->cfg->data_dir, rt->cfg->max_crashes, on_unstored_crash, rt);
    if (px_runtime_start(rt, err, sizeof(err)) < 0) {
        PX_LOG_ERR("host", "%s", err);
        exit_code = 1;
        px_runtime_shutdown(rt);
    } else {
        start_signals(&r, loop);
        px_plugin_watch_start(&r.watch, rt, r.admin);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    px_runtime_destroy(rt);
    return exit_code;
}
