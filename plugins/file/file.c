/* file: a sink that appends each delivery as one JSON line to a file. The line is the mapped
 * `with` params when the pipeline gives any, else the event ({"id","type","source","time",
 * "payload"}). fsync policy: never, every delivery, or every N ms; rotation by size keeps
 * `keep` old files (path.1, path.2, ...). Interval flushes run on a thread of the plugin, on a
 * duplicate of the descriptor, so the loop keeps writing (and answering) while the disk syncs;
 * every few MiB written that thread also starts the writeback of what is dirty, so each flush
 * has little left to do and the disk work is spread instead of coming in one burst. A line is
 * whole or absent: a write that fails part way (disk full) is cut back before the retry, and so
 * is a partial last line found at open (a process killed in the middle of a write). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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
    /* the flusher thread: syncs sync_fd (a dup, which it closes) when it is >= 0; with
     * sync_start only starts its writeback */
    pthread_t flusher;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int sync_fd, sync_start, syncing, quit, has_flusher;
    int64_t unstarted; /* bytes written since the last writeback started */
    int torn;          /* the file may end in part of a line: cut it before the next write */
} fsink;

/* Writeback is started every this many bytes written (with fsync: interval). */
#define START_WRITEBACK_BYTES (4 << 20)

/* The tail of the file is read back in blocks of this size to find its last line break. */
#define TAIL_BLOCK 4096

static const px_option options[] = {
    {"path", PX_OPT_STRING, PX_OPT_REQUIRED, NULL, "file to append to (created if missing)"},
    {"fsync", PX_OPT_STRING, 0, "interval", "never, always (each delivery) or interval"},
    {"fsync_interval", PX_OPT_DURATION, 0, "1s", "with fsync: interval, flush this often"},
    {"max_size", PX_OPT_SIZE, 0, "0", "rotate when the file reaches this size (0 = never)"},
    {"keep", PX_OPT_INT, 0, "5", "rotated files to keep"},
    {NULL, 0, 0, NULL, NULL},
};

/* Cuts a regular file back to just after its last line break (to empty when it has none), so
 * that what follows starts a line of its own. The part cut was never reported done: a line is
 * done only once write() took all of it. The tail is found by reading it, not from a remembered
 * offset, so lines appended meanwhile by another generation of the instance (the same file, also
 * O_APPEND) are never cut. Returns 0, or -1 with errno set. */
static int cut_to_last_line(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        return 0; /* a pipe or a terminal: nothing to read back or cut */
    }
    char buf[TAIL_BLOCK];
    off_t end = st.st_size;
    while (end > 0) {
        off_t from = end > TAIL_BLOCK ? end - TAIL_BLOCK : 0;
        ssize_t n = pread(fd, buf, (size_t)(end - from), from);
        if (n < 0) {
            return -1;
        }
        if (n != end - from) {
            errno = EIO; /* the file shrank under us: look again next time */
            return -1;
        }
        char *nl = memrchr(buf, '\n', (size_t)n);
        if (nl) {
            end = from + (nl - buf) + 1;
            break;
        }
        end = from;
    }
    return end == st.st_size ? 0 : ftruncate(fd, end);
}

/* Cuts a partial last line (a write cut short, or a process killed in the middle of one) so the
 * next line is not glued to it. Returns 0, or -1 (logged; f->torn stays set: writing waits). */
static int repair_tail(fsink *f)
{
    if (cut_to_last_line(f->fd) < 0) {
        host->log(f->ctx, PX_LOG_ERROR, "cannot cut a partial last line path=%s: %s", f->path,
                  strerror(errno));
        f->torn = 1;
        return -1;
    }
    struct stat st;
    f->size = fstat(f->fd, &st) == 0 ? st.st_size : 0;
    f->torn = 0;
    return 0;
}

static int open_file(fsink *f)
{
    /* read too: the tail of the file is read back to find its last complete line */
    f->fd = open(f->path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (f->fd < 0) {
        host->log(f->ctx, PX_LOG_ERROR, "cannot open path=%s: %s", f->path, strerror(errno));
        return -1;
    }
    repair_tail(f); /* on failure f->torn is set and deliveries retry until it works */
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

static void *flusher_main(void *arg)
{
    fsink *f = arg;
    /* Lowest priority: where the host shares a core with it, the loop is not preempted by it. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
    pthread_mutex_lock(&f->mu);
    for (;;) {
        while (f->sync_fd < 0 && !f->quit) {
            pthread_cond_wait(&f->cv, &f->mu);
        }
        if (f->sync_fd < 0) {
            break;
        }
        int fd = f->sync_fd, start_only = f->sync_start;
        f->sync_fd = -1;
        f->syncing = 1;
        pthread_mutex_unlock(&f->mu);
        if (start_only) {
            sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
        } else {
            fdatasync(fd);
        }
        close(fd);
        pthread_mutex_lock(&f->mu);
        f->syncing = 0;
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

/* Hands the flusher a duplicate of the file: to sync, or (start_only) to start its writeback.
 * One at a time; returns 0 when handed, -1 when the flusher is busy (try again later). */
static int hand_to_flusher(fsink *f, int start_only)
{
    int rc = -1;
    pthread_mutex_lock(&f->mu);
    if (f->sync_fd < 0 && !f->syncing) {
        f->sync_fd = dup(f->fd);
        if (f->sync_fd >= 0) {
            f->sync_start = start_only;
            pthread_cond_signal(&f->cv);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

/* Interval timer: the file is synced on the flusher; while a sync runs, the next tick tries
 * again. */
static void on_flush(void *arg)
{
    fsink *f = arg;
    if (f->dirty && f->fd >= 0 && hand_to_flusher(f, 0) == 0) {
        f->dirty = 0;
        f->unstarted = 0;
    }
}

/* The line for delivery d, newline included (*len bytes, owned: free), or NULL when out of
 * memory. The mapped params when the pipeline has a `with`; else the event envelope, its payload
 * written as the text the source gave (no serialisation). Line breaks in JSON text can only be
 * whitespace between tokens, so they become spaces and the line stays one line. */
static char *line_of(px_delivery *d, size_t *len)
{
    json_t *params = host->delivery_params(d);
    const px_event *ev = host->delivery_event(d);
    json_t *line;
    const char *ptext = NULL;
    size_t plen = 0;
    if (json_object_size(params) > 0) {
        line = json_incref(params);
    } else {
        if (PX_HAS(px_host_api, host, event_payload_text)) {
            ptext = host->event_payload_text(ev, &plen);
            while (ptext && plen > 0 && (ptext[plen - 1] == ' ' || ptext[plen - 1] == '\t' ||
                                         ptext[plen - 1] == '\r' || ptext[plen - 1] == '\n')) {
                plen--;
            }
        }
        line = json_pack("{s:s, s:s, s:s, s:I}", "id", host->event_id(ev), "type",
                         host->event_type(ev), "source", host->event_source(ev), "time",
                         (json_int_t)host->event_time_ms(ev));
        if (line && !ptext) {
            json_object_set(line, "payload", host->event_payload(ev));
        }
    }
    char *text = line ? json_dumps(line, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(line);
    if (!text) {
        return NULL;
    }
    size_t n = strlen(text);
    if (!ptext) {
        text[n++] = '\n'; /* json_dumps leaves room: replace the terminator */
        *len = n;
        return text;
    }
    /* {"id":...,"time":N} -> {"id":...,"time":N,"payload":TEXT}\n */
    static const char key[] = ",\"payload\":";
    size_t total = n - 1 + sizeof(key) - 1 + plen + 2;
    char *out = malloc(total);
    if (out) {
        memcpy(out, text, n - 1);
        memcpy(out + n - 1, key, sizeof(key) - 1);
        char *p = out + n - 1 + sizeof(key) - 1;
        memcpy(p, ptext, plen);
        for (char *nl = memchr(p, '\n', plen); nl; nl = memchr(nl, '\n', plen - (size_t)(nl - p))) {
            *nl = ' ';
        }
        for (char *cr = memchr(p, '\r', plen); cr; cr = memchr(cr, '\r', plen - (size_t)(cr - p))) {
            *cr = ' ';
        }
        memcpy(out + total - 2, "}\n", 2);
        *len = total;
    }
    free(text);
    return out;
}

/* Writes all len bytes of text, continuing after a short write. Returns len, or -1 with errno
 * set (ENOSPC for a write that made no progress); after -1 part of the text may be in the file. */
static ssize_t write_line(int fd, const char *text, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            if (w == 0) {
                errno = ENOSPC;
            }
            return -1;
        }
        done += (size_t)w;
    }
    return (ssize_t)len;
}

static void file_deliver(void *state, px_delivery *d)
{
    fsink *f = state;
    if (f->fd < 0 && open_file(f) < 0) {
        host->complete(d, PX_ERETRY, "cannot open output file", 0);
        return;
    }
    if (f->torn && repair_tail(f) < 0) {
        host->complete(d, PX_ERETRY, "cannot cut a partial last line", 0);
        return;
    }
    size_t len = 0;
    char *text = line_of(d, &len);
    if (!text) {
        host->complete(d, PX_ERETRY, "out of memory", 0);
        return;
    }
    ssize_t w = write_line(f->fd, text, len);
    free(text);
    if (w < 0) {
        int err = errno;
        repair_tail(f);
        host->complete(d, PX_ERETRY, strerror(err), 0);
        return;
    }
    f->size += w;
    if (f->fsync_each) {
        fdatasync(f->fd);
    } else {
        f->dirty = 1;
        f->unstarted += w;
        if (f->has_flusher && f->unstarted >= START_WRITEBACK_BYTES &&
            hand_to_flusher(f, 1) == 0) {
            f->unstarted = 0;
        }
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
    f->sync_fd = -1;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    if (f->fsync_ms > 0) {
        if (pthread_create(&f->flusher, NULL, flusher_main, f) != 0) {
            host->log(ctx, PX_LOG_ERROR, "cannot start the flush thread");
            close(f->fd);
            free(f->path);
            free(f);
            return PX_EINVAL;
        }
        f->has_flusher = 1;
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
    if (f->dirty && f->fd >= 0) {
        fdatasync(f->fd); /* the last flush before the generation goes */
        f->dirty = 0;
    }
}

static void file_destroy(void *state)
{
    fsink *f = state;
    file_stop(f);
    if (f->has_flusher) {
        pthread_mutex_lock(&f->mu);
        f->quit = 1;
        pthread_cond_signal(&f->cv);
        pthread_mutex_unlock(&f->mu);
        pthread_join(f->flusher, NULL); /* finishes a sync in progress (or pending) first */
    }
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
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
