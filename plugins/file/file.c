/* file: a sink that appends each delivery as one JSON line to a file. The line is the mapped
 * `with` params when the pipeline gives any, else the event ({"id","type","source","time",
 * "payload"}). fsync policy: never, every delivery, or every N ms; rotation by size keeps
 * `keep` old files (path.1, path.2, ...). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <plexus/sdk.h>

static const px_host_api *host;

typedef struct fsink {
    px_plugin_ctx *ctx;
    char *path;
    int fd;
    int64_t size, max_size, keep;
    int fsync_each;
    int64_t fsync_ms;
    int dirty;
    px_timer *flush;
} fsink;

static const px_option options[] = {
    {"path", PX_OPT_STRING, PX_OPT_REQUIRED, NULL, "file to append to (created if missing)"},
    {"fsync", PX_OPT_STRING, 0, "interval", "never, always (each delivery) or interval"},
    {"fsync_interval", PX_OPT_DURATION, 0, "1s", "with fsync: interval, flush this often"},
    {"max_size", PX_OPT_SIZE, 0, "0", "rotate when the file reaches this size (0 = never)"},
    {"keep", PX_OPT_INT, 0, "5", "rotated files to keep"},
    {NULL, 0, 0, NULL, NULL},
};

static int open_file(fsink *f)
{
    f->fd = open(f->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (f->fd < 0) {
        host->log(f->ctx, PX_LOG_ERROR, "cannot open path=%s: %s", f->path, strerror(errno));
        return -1;
    }
    struct stat st;
    f->size = fstat(f->fd, &st) == 0 ? st.st_size : 0;
    return 0;
}

static void rotate(fsink *f)
{
    close(f->fd);
    f->fd = -1;
    size_t n = strlen(f->path) + 24;
    char *from = malloc(n), *to = malloc(n);
    for (int64_t i = f->keep; i >= 1; i--) {
        snprintf(to, n, "%s.%lld", f->path, (long long)i);
        if (i == 1) {
            snprintf(from, n, "%s", f->path);
        } else {
            snprintf(from, n, "%s.%lld", f->path, (long long)(i - 1));
        }
        rename(from, to);
    }
    if (f->keep < 1) {
        unlink(f->path);
    }
    free(from);
    free(to);
    open_file(f);
}

static void on_flush(void *arg)
{
    fsink *f = arg;
    if (f->dirty && f->fd >= 0) {
        fdatasync(f->fd);
        f->dirty = 0;
    }
}

static void file_deliver(void *state, px_delivery *d)
{
    fsink *f = state;
    if (f->fd < 0 && open_file(f) < 0) {
        host->complete(d, PX_ERETRY, "cannot open output file", 0);
        return;
    }
    json_t *params = host->delivery_params(d);
    json_t *line;
    if (json_object_size(params) > 0) {
        line = json_incref(params);
    } else {
        const px_event *ev = host->delivery_event(d);
        line = json_pack("{s:s, s:s, s:s, s:I, s:O}", "id", host->event_id(ev), "type",
                         host->event_type(ev), "source", host->event_source(ev), "time",
                         (json_int_t)host->event_time_ms(ev), "payload", host->event_payload(ev));
    }
    char *text = json_dumps(line, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(line);
    size_t len = strlen(text);
    text[len++] = '\n'; /* json_dumps leaves room: replace the terminator, write len bytes */
    ssize_t w = write(f->fd, text, len);
    free(text);
    if (w != (ssize_t)len) {
        host->complete(d, PX_ERETRY, w < 0 ? strerror(errno) : "short write", 0);
        return;
    }
    f->size += w;
    if (f->fsync_each) {
        fdatasync(f->fd);
    } else {
        f->dirty = 1;
    }
    if (f->max_size > 0 && f->size >= f->max_size) {
        rotate(f);
    }
    host->complete(d, PX_OK, NULL, 0);
}

static int file_init(px_plugin_ctx *ctx, const json_t *cfg, void **state)
{
    fsink *f = calloc(1, sizeof(*f));
    f->ctx = ctx;
    f->path = strdup(json_string_value(json_object_get(cfg, "path")));
    const char *mode = json_string_value(json_object_get(cfg, "fsync"));
    if (strcmp(mode, "always") == 0) {
        f->fsync_each = 1;
    } else if (strcmp(mode, "interval") == 0) {
        f->fsync_ms = json_integer_value(json_object_get(cfg, "fsync_interval"));
    } else if (strcmp(mode, "never") != 0) {
        host->log(ctx, PX_LOG_ERROR, "fsync must be never, always or interval, not \"%s\"", mode);
        free(f->path);
        free(f);
        return PX_EINVAL;
    }
    f->max_size = json_integer_value(json_object_get(cfg, "max_size"));
    f->keep = json_integer_value(json_object_get(cfg, "keep"));
    if (open_file(f) < 0) {
        free(f->path);
        free(f);
        return PX_EINVAL;
    }
    *state = f;
    return 0;
}

static int file_start(void *state)
{
    fsink *f = state;
    if (f->fsync_ms > 0) {
        host->timer_start(f->ctx, (uint64_t)f->fsync_ms, (uint64_t)f->fsync_ms, on_flush, f,
                          &f->flush);
    }
    return 0;
}

static void file_stop(void *state)
{
    fsink *f = state;
    if (f->flush) {
        host->timer_stop(f->flush);
        f->flush = NULL;
    }
    on_flush(f);
}

static void file_destroy(void *state)
{
    fsink *f = state;
    file_stop(f);
    if (f->fd >= 0) {
        close(f->fd);
    }
    free(f->path);
    free(f);
}

static const px_plugin_desc desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SINK,
    .name = "file",
    .version = "1.0.0",
    .description = "appends deliveries to a file as JSON lines",
    .options = options,
    .init = file_init,
    .start = file_start,
    .deliver = file_deliver,
    .stop = file_stop,
    .destroy = file_destroy,
};

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    host = h;
    return &desc;
}
