/* Crash records: the current-plugin-call frames, the fatal-signal handler that writes them to the
 * crash marker, and the start-up recovery that reads it back (see crash.h). */
#include "crash.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "mem.h"
#include "store.h"

#define DEFAULT_MAX_CRASHES 3
#define ALT_STACK_SIZE (64 * 1024)

/* Frames are per thread: a crash on a worker thread must not be blamed on whatever plugin call
 * the loop thread happens to be in. The executable's own TLS is safe to read in a handler. */
static _Thread_local px_crash_frame *top;
static _Thread_local int on_loop_thread;

static char marker_path[4096];
static volatile sig_atomic_t handling;
static int installed;
static char *alt_stack;
static const int fatal_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
#define NFATAL (sizeof(fatal_signals) / sizeof(fatal_signals[0]))

/* Copies src into dst (PX_CRASH_NAME_MAX bytes) keeping only characters that need no quoting in
 * the marker's one-line key=value records and in a JSON log line. */
static void copy_safe(char *dst, const char *src)
{
    size_t i = 0;
    if (src) {
        for (; src[i] && i < PX_CRASH_NAME_MAX - 1; i++) {
            unsigned char c = (unsigned char)src[i];
            dst[i] = (c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == '=') ? '_' : (char)c;
        }
    }
    dst[i] = '\0';
}

void px_crash_enter(px_crash_frame *f, const char *call, const char *instance,
                    int64_t delivery_id, const char *event_id)
{
    f->call = call ? call : "";
    copy_safe(f->instance, instance);
    copy_safe(f->event, event_id);
    f->delivery_id = delivery_id;
    f->owner = NULL;
    f->cause = 0;
    f->prev = top;
    top = f;
}

void px_crash_set_cause(px_crash_frame *f, const void *owner, uint64_t cause)
{
    f->owner = owner;
    f->cause = cause;
}

uint64_t px_crash_cause(const void *owner)
{
    return top && owner && top->owner == owner ? top->cause : 0;
}

const char *px_crash_instance(void)
{
    return top ? top->instance : "";
}

void px_crash_leave(px_crash_frame *f)
{
    /* Frames are strictly nested; a mismatch would only mean a missing leave further in. */
    top = f->prev;
}

const char *px_crash_signame(int signo)
{
    switch (signo) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGABRT: return "SIGABRT";
    default: return "signal";
    }
}

/* --- the handler: async-signal-safe calls only -------------------------------------------- */

typedef struct sbuf {
    char b[768];
    size_t n;
} sbuf;

static void sb_put(sbuf *s, const char *p)
{
    while (p && *p && s->n < sizeof(s->b) - 1) {
        s->b[s->n++] = *p++;
    }
}

static void sb_int(sbuf *s, int64_t v)
{
    char tmp[24];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u && n < sizeof(tmp));
    if (v < 0 && s->n < sizeof(s->b) - 1) {
        s->b[s->n++] = '-';
    }
    while (n && s->n < sizeof(s->b) - 1) {
        s->b[s->n++] = tmp[--n];
    }
}

static void write_full(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void on_fatal(int signo, siginfo_t *si, void *uctx)
{
    (void)si, (void)uctx;
    int saved = errno;
    if (!handling) {
        handling = 1;
        const px_crash_frame *f = top;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        sbuf rec = {.n = 0};
        sb_put(&rec, "crash v=1 signal=");
        sb_int(&rec, signo);
        sb_put(&rec, " pid=");
        sb_int(&rec, (int64_t)getpid());
        sb_put(&rec, " at_ms=");
        sb_int(&rec, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
        sb_put(&rec, on_loop_thread ? " thread=loop" : " thread=other");
        sb_put(&rec, " call=");
        sb_put(&rec, f ? f->call : "");
        sb_put(&rec, " instance=");
        sb_put(&rec, f ? f->instance : "");
        sb_put(&rec, " delivery=");
        sb_int(&rec, f ? f->delivery_id : 0);
        sb_put(&rec, " event=");
        sb_put(&rec, f ? f->event : "");
        sb_put(&rec, "\n");
        int fd = open(marker_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd >= 0) {
            write_full(fd, rec.b, rec.n);
            fsync(fd);
            close(fd);
        }
        /* One line for the log reader too, in the log's JSON shape. */
        sbuf msg = {.n = 0};
        sb_put(&msg, "{\"level\":\"error\",\"module\":\"host\",\"msg\":\"fatal signal ");
        sb_put(&msg, px_crash_signame(signo));
        if (f) {
            sb_put(&msg, " in plugin call=");
            sb_put(&msg, f->call);
            sb_put(&msg, " instance=");
            sb_put(&msg, f->instance);
            if (f->delivery_id) {
                sb_put(&msg, " delivery=");
                sb_int(&msg, f->delivery_id);
            }
        } else {
            sb_put(&msg, on_loop_thread ? " outside plugin calls" : " on a worker thread");
        }
        sb_put(&msg, "; crash recorded in ");
        sb_put(&msg, PX_CRASH_MARKER);
        sb_put(&msg, "\"}\n");
        write_full(STDERR_FILENO, msg.b, msg.n);
    }
    /* Default action now; the signal is blocked while we run, so it lands when we return (and a
     * faulting instruction faults again under the default action anyway). */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(signo, &sa, NULL);
    raise(signo);
    errno = saved;
}

int px_crash_install(const char *data_dir)
{
    int n = snprintf(marker_path, sizeof(marker_path), "%s/%s", data_dir ? data_dir : ".",
                     PX_CRASH_MARKER);
    if (n < 0 || (size_t)n >= sizeof(marker_path)) {
        marker_path[0] = '\0';
        return PX_EINVAL;
    }
    on_loop_thread = 1;
    if (!alt_stack) {
        alt_stack = px_xmalloc(ALT_STACK_SIZE);
        stack_t ss = {.ss_sp = alt_stack, .ss_size = ALT_STACK_SIZE, .ss_flags = 0};
        if (sigaltstack(&ss, NULL) != 0) {
            free(alt_stack);
            alt_stack = NULL;
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_fatal;
    sa.sa_flags = SA_SIGINFO | (alt_stack ? SA_ONSTACK : 0);
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < NFATAL; i++) {
        sigaction(fatal_signals[i], &sa, NULL);
    }
    installed = 1;
    return 0;
}

void px_crash_uninstall(void)
{
    if (!installed) {
        return;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < NFATAL; i++) {
        sigaction(fatal_signals[i], &sa, NULL);
    }
    if (alt_stack) {
        stack_t ss = {.ss_sp = NULL, .ss_size = 0, .ss_flags = SS_DISABLE};
        sigaltstack(&ss, NULL);
        free(alt_stack);
        alt_stack = NULL;
    }
    installed = 0;
}

/* --- reading the marker back ---------------------------------------------------------------- */

static int parse_i64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) {
        return PX_EINVAL;
    }
    *out = v;
    return 0;
}

static void copy_field(char *dst, size_t cap, const char *v)
{
    size_t n = strlen(v);
    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(dst, v, n);
    dst[n] = '\0';
}

int px_crash_parse_line(const char *line, px_crash_record *out)
{
    if (strncmp(line, "crash v=1 ", 10) != 0) {
        return PX_EINVAL;
    }
    px_crash_record r;
    memset(&r, 0, sizeof(r));
    char *copy = px_xstrdup(line + 10);
    size_t len = strlen(copy);
    while (len && (copy[len - 1] == '\n' || copy[len - 1] == '\r')) {
        copy[--len] = '\0';
    }
    int rc = 0, have_signal = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, " ", &save); tok && rc == 0;
         tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            rc = PX_EINVAL;
            break;
        }
        *eq = '\0';
        const char *k = tok, *v = eq + 1;
        int64_t n = 0;
        if (strcmp(k, "signal") == 0) {
            rc = parse_i64(v, &n);
            r.signo = (int)n;
            have_signal = rc == 0;
        } else if (strcmp(k, "pid") == 0) {
            rc = parse_i64(v, &r.pid);
        } else if (strcmp(k, "at_ms") == 0) {
            rc = parse_i64(v, &r.at_ms);
        } else if (strcmp(k, "thread") == 0) {
            r.loop_thread = strcmp(v, "loop") == 0;
        } else if (strcmp(k, "call") == 0) {
            copy_field(r.call, sizeof(r.call), v);
        } else if (strcmp(k, "instance") == 0) {
            copy_field(r.instance, sizeof(r.instance), v);
        } else if (strcmp(k, "delivery") == 0) {
            rc = parse_i64(v, &r.delivery_id);
        } else if (strcmp(k, "event") == 0) {
            copy_field(r.event, sizeof(r.event), v);
        } /* unknown keys: written by a newer build, ignored */
    }
    free(copy);
    if (rc < 0 || !have_signal || r.delivery_id < 0) {
        return PX_EINVAL;
    }
    *out = r;
    return 0;
}

char *px_crash_reason(const px_crash_record *r)
{
    if (r->call[0]) {
        return px_xasprintf("crash: %s in %s of instance %s", px_crash_signame(r->signo), r->call,
                            r->instance);
    }
    return px_xasprintf("crash: %s outside plugin calls", px_crash_signame(r->signo));
}

/* Logs one record and charges its delivery. Returns 0, or < 0 when the spool could not take it. */
static int handle_record(px_store *s, const px_crash_record *r, uint32_t max_crashes,
                         void (*unstored)(const char *instance, void *arg), void *arg)
{
    int rc = 0;
    char *reason = px_crash_reason(r);
    if (!r->call[0]) {
        PX_LOG_ERR("host", "previous run died signal=%s pid=%lld thread=%s outside plugin calls",
                   px_crash_signame(r->signo), (long long)r->pid,
                   r->loop_thread ? "loop" : "other");
        free(reason);
        return 0;
    }
    if (!r->delivery_id) {
        PX_LOG_ERR("host", "previous run died signal=%s pid=%lld in plugin call=%s instance=%s",
                   px_crash_signame(r->signo), (long long)r->pid, r->call, r->instance);
        free(reason);
        return 0;
    }
    PX_LOG_ERR("host", "previous run died signal=%s pid=%lld in plugin call=%s instance=%s "
               "delivery=%lld event=%s", px_crash_signame(r->signo), (long long)r->pid, r->call,
               r->instance, (long long)r->delivery_id, r->event);
    int n = px_store_note_crash(s, r->delivery_id, reason, max_crashes);
    if (n == PX_ENOENT) {
        PX_LOG_WARN("host", "crashing delivery id=%lld is not in the spool (done, or tried before "
                    "its commit); deliveries to instance=%s now wait for their commit",
                    (long long)r->delivery_id, r->instance);
        if (unstored) {
            unstored(r->instance, arg);
        }
    } else if (n < 0) {
        PX_LOG_ERR("host", "cannot record the crash of delivery id=%lld: %s",
                   (long long)r->delivery_id, px_strerror(n));
        rc = n;
    } else if ((uint32_t)n >= max_crashes) {
        PX_LOG_WARN("host", "delivery dead-lettered after crashes=%d id=%lld instance=%s "
                    "event=%s", n, (long long)r->delivery_id, r->instance, r->event);
    } else {
        PX_LOG_WARN("host", "delivery crashed the host crashes=%d max_crashes=%u id=%lld "
                    "instance=%s; it will be retried", n, max_crashes,
                    (long long)r->delivery_id, r->instance);
    }
    free(reason);
    return rc;
}

int px_crash_recover(px_store *s, const char *data_dir, uint32_t max_crashes,
                     void (*unstored)(const char *instance, void *arg), void *arg)
{
    if (max_crashes == 0) {
        max_crashes = DEFAULT_MAX_CRASHES;
    }
    char *path = px_xasprintf("%s/%s", data_dir ? data_dir : ".", PX_CRASH_MARKER);
    FILE *f = fopen(path, "r");
    if (!f) {
        int err = errno;
        free(path);
        if (err == ENOENT) {
            return 0;
        }
        PX_LOG_ERR("host", "cannot read crash marker: %s", strerror(err));
        return PX_EINVAL;
    }
    int rc = 0, handled = 0;
    char *line = NULL, *keep = NULL; /* records the spool could not take: kept for next time */
    size_t cap = 0, nkeep = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0) {
        px_crash_record r;
        if (px_crash_parse_line(line, &r) < 0) {
            PX_LOG_WARN("host", "unreadable crash marker line ignored");
            continue;
        }
        int hr = handle_record(s, &r, max_crashes, unstored, arg);
        if (hr < 0) {
            rc = hr;
            keep = px_xrealloc(keep, nkeep + (size_t)len);
            memcpy(keep + nkeep, line, (size_t)len);
            nkeep += (size_t)len;
            continue;
        }
        handled++;
    }
    free(line);
    fclose(f);
    if (nkeep) {
        char *tmp = px_xasprintf("%s.tmp", path);
        FILE *out = fopen(tmp, "w");
        int ok = out != NULL;
        if (out) {
            ok = fwrite(keep, 1, nkeep, out) == nkeep;
            ok = fclose(out) == 0 && ok;
        }
        if (!ok || rename(tmp, path) != 0) {
            PX_LOG_WARN("host", "cannot rewrite crash marker: %s", strerror(errno));
            unlink(tmp);
        }
        free(tmp);
    } else if (unlink(path) != 0 && errno != ENOENT) {
        PX_LOG_WARN("host", "cannot remove crash marker: %s", strerror(errno));
    }
    free(keep);
    free(path);
    return rc < 0 ? rc : handled;
}
