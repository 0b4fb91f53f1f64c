/* Crash records: which plugin call was running when the process died of a fatal signal. Around
 * each call into a plugin the loop thread pushes a frame (call, instance, delivery) that lives on
 * the caller's stack; a handler for SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT appends the
 * innermost frame as one line to DATA_DIR/crash.marker with async-signal-safe calls only
 * (open/write/close, path formatted at install) and re-raises the signal with its default action
 * (core dump as configured). At the next start px_crash_recover reads the marker, logs every
 * record, charges each crash to its delivery in the spool (which dead-letters a delivery that
 * caused max_crashes crashes instead of crash-looping on it) and removes the marker. */
#ifndef PX_CRASH_H
#define PX_CRASH_H

#include <stddef.h>
#include <stdint.h>

typedef struct px_store px_store;

#define PX_CRASH_NAME_MAX 96 /* instance names and event ids are cut to this (NUL included) */
#define PX_CRASH_MARKER "crash.marker"

/* One plugin call in progress. Caller's memory, usually a local of the function that calls the
 * plugin; it must stay alive until px_crash_leave. */
typedef struct px_crash_frame {
    struct px_crash_frame *prev; /* the call this one runs inside of, or NULL */
    const char *call;            /* static storage: "deliver", "init", "timer", "http"... */
    char instance[PX_CRASH_NAME_MAX];
    char event[PX_CRASH_NAME_MAX];
    int64_t delivery_id;         /* 0 when the call is not a delivery */
    const void *owner;           /* the generation called (only compared), or NULL */
    uint64_t cause;              /* handle of the delivery the call runs for (dispatch.h), or 0 */
} px_crash_frame;

/* Pushes f for a call into instance `instance` (borrowed, copied; NULL = ""). call (static
 * storage) names the callback; delivery_id and event_id (borrowed, copied; NULL = "") say which
 * delivery it handles, 0 / NULL otherwise. Loop thread (frames on other threads are kept apart
 * per thread). Cheap: two bounded copies. */
void px_crash_enter(px_crash_frame *f, const char *call, const char *instance,
                    int64_t delivery_id, const char *event_id);
/* Pops f (the innermost frame). */
void px_crash_leave(px_crash_frame *f);
/* Says that f (entered) is a call into `owner` (borrowed, only compared) made for the delivery
 * with handle `cause` (0 = none), so that what the plugin sets up during the call (a timer, an
 * HTTP request, a post) can be charged to that delivery when its callback runs. */
void px_crash_set_cause(px_crash_frame *f, const void *owner, uint64_t cause);
/* The cause of this thread's innermost frame when that frame is a call into `owner`, else 0 (also
 * on a thread with no frame, such as a plugin's worker). Any thread. */
uint64_t px_crash_cause(const void *owner);
/* The instance of this thread's innermost frame (valid until it is left), or "" outside plugin
 * calls: who is calling when a host function refuses a plugin's request. */
const char *px_crash_instance(void);

/* Installs the fatal-signal handlers (with an alternate signal stack, so a stack overflow is
 * recorded too) writing to DATA_DIR/crash.marker, data_dir borrowed and copied. Marks the
 * calling thread as the loop thread. Returns 0, or PX_EINVAL when the path is too long. */
int px_crash_install(const char *data_dir);
/* Restores the default actions. */
void px_crash_uninstall(void);

/* One line of the marker. */
typedef struct px_crash_record {
    int signo;
    int64_t pid, at_ms;
    int loop_thread;    /* 1 when the loop thread died, 0 for another thread */
    char call[32];      /* "" when no plugin call was in progress */
    char instance[PX_CRASH_NAME_MAX];
    char event[PX_CRASH_NAME_MAX];
    int64_t delivery_id;
} px_crash_record;

/* Parses one marker line (borrowed, NUL-terminated, with or without its newline) into *out
 * (caller's memory). Returns 0 or PX_EINVAL for a line that is not a crash record. */
int px_crash_parse_line(const char *line, px_crash_record *out);

/* "SIGSEGV"... for the fatal signals, "signal" otherwise (static storage). */
const char *px_crash_signame(int signo);

/* The reason a crash is recorded with: "crash: SIGSEGV in deliver of instance X" (owned by
 * caller; free). */
char *px_crash_reason(const px_crash_record *r);

/* At start-up, before any delivery is read back: reads DATA_DIR/crash.marker (data_dir
 * borrowed) when it exists, logs each record (instance, call, delivery, signal), charges each
 * delivery crash to the store with px_store_note_crash (dead letter after max_crashes, 0 = 3),
 * then removes the marker. A crash in a delivery the spool does not hold (a first attempt made
 * before its event was committed) cannot be charged: unstored(instance (valid during the call),
 * arg) is called instead (may be NULL), so the host can make that sink wait for commits and
 * charge the next crash. Returns the number of records handled (0 when there was no marker), or
 * < 0 when the marker could not be read or charged (it is kept then, for the next start). */
int px_crash_recover(px_store *s, const char *data_dir, uint32_t max_crashes,
                     void (*unstored)(const char *instance, void *arg), void *arg);

#endif
