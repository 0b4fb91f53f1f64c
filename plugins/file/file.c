/* file: a sink that appends each delivery as one JSON line to a file. The line is the mapped
 * `with` params when the pipeline gives any, else the event ({"id","type","source","time",
 * "payload"}). fsync policy: never, every delivery, or every N ms; rotation by size keeps
 * `keep` old files (path.1, path.2, ...). Interval flushes run on a thread of the plugin, on a
 * duplicate of the descriptor, so the loop keeps writing (and answering) while the disk syncs;
 * every few MiB written that thread also starts the writeback of what is dirty, so each flush
 * has little left to do and the disk work is spread instead of coming in one burst. A line is
 * whole or absent: a write that fails part way (disk full) is cut back before the retry, and so
 * is a partial last line found at open (a process killed in the middle of a write).
 * The lines of the deliveries that arrive in one turn of the loop are written together with one
 * write at the start of the next turn (or at once when they reach BATCH_BYTES or the rotation
 * size), and each delivery is completed only after its whole line was written, so a burst costs
 * one system call (and, with fsync: always, one sync) instead of one per delivery. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
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
    /* lines not written yet and their deliveries: line i ends at ends[i] in batch */
    char *batch;
    size_t batch_len, batch_cap;
    px_delivery **waiting;
    size_t *ends;
    size_t nwaiting, waiting_cap;
    px_timer *kick; /* the 0 ms timer that writes the batch on the next turn, or NULL */
} fsink;

/* A batch this large is written at once instead of waiting for the next turn. */
#define BATCH_BYTES (64u << 10)

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

/* Room for n more bytes in the batch. Returns 0, or -1 when out of memory. */
static int batch_reserve(fsink *f, size_t n)
{
    if (f->batch_len + n <= f->batch_cap) {
        return 0;
    }
    size_t cap = f->batch_cap ? f->batch_cap : 16384;
    while (cap < f->batch_len + n) {
        cap *= 2;
    }
    char *p = realloc(f->batch, cap);
    if (!p) {
        return -1;
    }
    f->batch = p;
    f->batch_cap = cap;
    return 0;
}

static void batch_add(fsink *f, const char *s, size_t n)
{
    memcpy(f->batch + f->batch_len, s, n);
    f->batch_len += n;
}

/* A string JSON writes as it is between quotes: printable ASCII without '"' and '\\'. */
static int plain_string(const char *s, size_t *len)
{
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') {
            return 0;
        }
    }
    *len = n;
    return 1;
}

/* Copies n bytes, line breaks turned into spaces. */
static void break_lines(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dst[i] = src[i] == '\n' || src[i] == '\r' ? ' ' : src[i];
    }
}

/* 0x80 in each byte of x that is zero, 0 in the others. */
static uint64_t zero_bytes(uint64_t x)
{
    const uint64_t lows = 0x7f7f7f7f7f7f7f7fu;
    return ~(((x & lows) + lows) | x | lows);
}

/* Appends the payload text: its line breaks (only whitespace between tokens in JSON text)
 * become spaces, so the line stays one line. Eight bytes at a time, without branches: a mask of
 * the bytes that are '\n' or '\r' picks a space for them. Room is reserved by the caller. */
static void batch_add_payload(fsink *f, const char *text, size_t len)
{
    const uint64_t ones = 0x0101010101010101u;
    char *p = f->batch + f->batch_len;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, text + i, 8);
        uint64_t hit = zero_bytes(w ^ (ones * '\n')) | zero_bytes(w ^ (ones * '\r'));
        uint64_t mask = (hit >> 7) * 0xff;
        w = (w & ~mask) | ((ones * ' ') & mask);
        memcpy(p + i, &w, 8);
    }
    break_lines(p + i, text + i, len - i);
    f->batch_len += len;
}

/* The envelope {"id","type","source","time","payload"} written directly, as json_dumps would
 * write it, when its strings need no escaping. Returns 1 when appended, 0 when the caller must
 * take the general way, -1 when out of memory. */
static int add_plain_envelope(fsink *f, const px_event *ev, const char *ptext, size_t plen)
{
    const char *id = host->event_id(ev), *type = host->event_type(ev);
    const char *source = host->event_source(ev);
    size_t idn, typen, sourcen;
    if (!id || !type || !source || !plain_string(id, &idn) || !plain_string(type, &typen) ||
        !plain_string(source, &sourcen)) {
        return 0;
    }
    char time[32];
    int tn = snprintf(time, sizeof(time), "%lld", (long long)host->event_time_ms(ev));
    if (batch_reserve(f, idn + typen + sourcen + (size_t)tn + plen + 64) < 0) {
        return -1;
    }
    batch_add(f, "{\"id\":\"", 7);
    batch_add(f, id, idn);
    batch_add(f, "\",\"type\":\"", 10);
    batch_add(f, type, typen);
    batch_add(f, "\",\"source\":\"", 12);
    batch_add(f, source, sourcen);
    batch_add(f, "\",\"time\":", 9);
    batch_add(f, time, (size_t)tn);
    batch_add(f, ",\"payload\":", 11);
    batch_add_payload(f, ptext, plen);
    batch_add(f, "}\n", 2);
    return 1;
}

/* Appends the line for delivery d, newline included, to the batch. The mapped params when the
 * pipeline has a `with`; else the event envelope, its payload written as the text the source
 * gave (no serialisation). Returns 0, or -1 when out of memory (the batch is as it was). */
static int add_line(fsink *f, px_delivery *d)
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
        if (ptext) {
            int rc = add_plain_envelope(f, ev, ptext, plen);
            if (rc != 0) {
                return rc > 0 ? 0 : -1;
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
        return -1;
    }
    size_t n = strlen(text);
    static const char key[] = ",\"payload\":";
    if (batch_reserve(f, n + sizeof(key) + plen + 2) < 0) {
        free(text);
        return -1;
    }
    if (!ptext) {
        batch_add(f, text, n);
        batch_add(f, "\n", 1);
    } else {
        /* {"id":...,"time":N} -> {"id":...,"time":N,"payload":TEXT}\n */
        batch_add(f, text, n - 1);
        batch_add(f, key, sizeof(key) - 1);
        batch_add_payload(f, ptext, plen);
        batch_add(f, "}\n", 2);
    }
    free(text);
    return 0;
}

/* Writes all len bytes of text, continuing after a short write. Returns len, or -1 with errno
 * set (ENOSPC for a write that made no progress); *done says how many bytes reached the file. */
static ssize_t write_all(int fd, const char *text, size_t len, size_t *done_out)
{
    size_t done = 0;
    *done_out = 0;
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
        *done_out = done;
    }
    return (ssize_t)len;
}

/* Writes the batch and completes its deliveries: those whose whole line reached the file with
 * PX_OK, the others (a write that failed part way: the partial line is cut) with PX_ERETRY.
 * Completing may bring new deliveries, which start a new batch. */
static void flush_batch(fsink *f)
{
    if (f->kick) {
        host->timer_stop(f->kick);
        f->kick = NULL;
    }
    if (f->nwaiting == 0) {
        return;
    }
    char *batch = f->batch;
    size_t len = f->batch_len, cap = f->batch_cap, n = f->nwaiting, wcap = f->waiting_cap;
    px_delivery **waiting = f->waiting;
    size_t *ends = f->ends;
    f->batch = NULL;
    f->batch_len = f->batch_cap = 0;
    f->waiting = NULL;
    f->ends = NULL;
    f->nwaiting = f->waiting_cap = 0;

    const char *failed = NULL;
    char why[128];
    size_t done = 0;
    if (f->fd < 0 && open_file(f) < 0) {
        failed = "cannot open output file";
    } else if (f->torn && repair_tail(f) < 0) {
        failed = "cannot cut a partial last line";
    } else if (write_all(f->fd, batch, len, &done) < 0) {
        snprintf(why, sizeof(why), "%s", strerror(errno));
        failed = why;
        repair_tail(f);
    } else {
        f->size += (int64_t)len;
        if (f->fsync_each) {
            fdatasync(f->fd);
        } else {
            f->dirty = 1;
            f->unstarted += (int64_t)len;
            if (f->has_flusher && f->unstarted >= START_WRITEBACK_BYTES &&
                hand_to_flusher(f, 1) == 0) {
                f->unstarted = 0;
            }
        }
        if (f->max_size > 0 && f->size >= f->max_size) {
            rotate(f);
        }
    }
    if (failed && done > 0 && f->fsync_each && f->fd >= 0) {
        fdatasync(f->fd); /* the whole lines written before the failure are reported done */
    } else if (failed && done > 0) {
        f->dirty = 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (failed && ends[i] > done) {
            host->complete(waiting[i], PX_ERETRY, failed, 0);
        } else {
            host->complete(waiting[i], PX_OK, NULL, 0);
        }
    }
    /* keep the buffers for the next batch unless completing started one */
    if (!f->batch && !f->waiting) {
        f->batch = batch;
        f->batch_cap = cap;
        f->waiting = waiting;
        f->ends = ends;
        f->waiting_cap = wcap;
    } else {
        free(batch);
        free(waiting);
        free(ends);
    }
}

static void on_kick(void *arg)
{
    flush_batch(arg);
}

static void file_deliver(void *state, px_delivery *d)
{
    fsink *f = state;
    if (f->nwaiting == f->waiting_cap) {
        size_t cap = f->waiting_cap ? f->waiting_cap * 2 : 64;
        px_delivery **w = realloc(f->waiting, cap * sizeof(*w));
        if (w) {
            f->waiting = w;
        }
        size_t *e = w ? realloc(f->ends, cap * sizeof(*e)) : NULL;
        if (e) {
            f->ends = e;
        }
        if (!w || !e) {
            host->complete(d, PX_ERETRY, "out of memory", 0);
            return;
        }
        f->waiting_cap = cap;
    }
    if (add_line(f, d) < 0) {
        host->complete(d, PX_ERETRY, "out of memory", 0);
        return;
    }
    f->waiting[f->nwaiting] = d;
    f->ends[f->nwaiting] = f->batch_len;
    f->nwaiting++;
    /* at once when large, or when it reaches the rotation size (a file is rotated right after
     * the line that takes it to max_size); else on the next turn */
    if (f->batch_len >= BATCH_BYTES ||
        (f->max_size > 0 && f->size + (int64_t)f->batch_len >= f->max_size)) {
        flush_batch(f);
    } else if (!f->kick && host->timer_start(f->ctx, 0, 0, on_kick, f, &f->kick) < 0) {
        f->kick = NULL;
        flush_batch(f);
    }
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
    flush_batch(f);
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
    free(f->batch);
    free(f->waiting);
    free(f->ends);
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
