/* Deliveries to sinks: in-memory window per sink, retries, timeouts, dead letters. */
#include "clock.h"
#include "dispatch.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "crash.h"
#include "err.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"

/* The window of pending deliveries kept in memory per sink: refilled from the spool when it falls
 * under the low mark. Bounded so a backlog of millions costs disk, not memory. */
#define WINDOW_MAX 2048
#define WINDOW_LOW 512
#define SWEEP_MS 100
/* Every this many sweeps (1 s), each sink served here adopts deliveries whose host died. */
#define ADOPT_EVERY 10
/* Every this many sweeps (0.5 s), each ordered sink on a shared store renews or asks for its lead
 * (a lease of the store's lease_ms). */
#define LEAD_EVERY 5

struct px_sinkq {
    char *name;
    px_dispatch *disp;
    int ordered;      /* an ordered sink on a store shared by several hosts: delivered by the
                         host that leads it, read back from the store in commit order */
    int leader;       /* ordered: this host leads the sink (px_store_lead at the latest tick) */
    int64_t tail_seq; /* ordered: the highest place in the commit order placed in memory */
    px_delivery *ready_head, *ready_tail; /* ascending id */
    size_t nready;
    px_delivery *infl_head, *infl_tail;   /* dispatch order */
    size_t ninflight;
    int64_t tail_id;  /* highest id ever placed in memory by claim (this host's own) */
    int64_t adopted_hi; /* highest id adopted from a host that died (0 = none) */
    int spilled;      /* the spool holds ids > tail_id that are not in memory */
    int failing;      /* the last outcome was a retry: one delivery at a time until one succeeds */
    char *last_error; /* the last failed outcome, masked (owned); NULL since a success */
    size_t awaited;   /* deliveries to be added once their put commits (px_dispatch_await) */
    int commit_first; /* px_dispatch_wait_for_commits */
    int pumping, repump;
    uv_timer_t wake;  /* the head's next_at */
    int64_t wake_at;
    px_sinkq *next;
};

/* Deliveries a plugin holds, by handle: open addressing with linear probing, at most half full. */
typedef struct handle_table {
    px_delivery **slot; /* cap entries (a power of two), NULL = free */
    size_t cap, n;
    uintptr_t last;     /* the last handle given out */
} handle_table;

struct px_dispatch {
    uv_loop_t *loop;
    px_store *store;
    px_sink_directory dir;
    px_sinkq *queues;
    uv_timer_t sweep;
    unsigned sweeps;      /* sweep ticks so far: adoption runs every ADOPT_EVERY of them */
    int leased;           /* px_store_leased at the latest tick */
    px_delivery *orphans; /* timed-out or reclaimed deliveries their plugin still holds */
    px_dispatch_stats stats;
    px_tap *tap; /* never NULL: the directory's, else one nobody opens */
    int closing;
};

/* The hub of a dispatcher whose directory has none: never open, so the hooks stay one branch. */
static px_tap no_tap;

static void pump(px_sinkq *q);

/* --- handles ------------------------------------------------------------------------------
 * complete() frees the delivery, and a plugin that answers twice (or reads the delivery after
 * answering) would otherwise use freed memory, or, once malloc has given the address to a new
 * delivery, finish somebody else's. So a plugin never gets the address: it gets a handle, a
 * number from a counter that never goes back (one per hand-over, so a retried delivery's old
 * handle is dead too), passed as a pointer value the plugin cannot dereference. The deliveries
 * handed over are found by handle in a table, and a handle not in it is refused. Keeping a
 * tombstone per completed delivery would detect a second complete as well, but only by keeping
 * memory for every delivery a generation ever saw; the table holds only those still open.
 * (With a 32-bit uintptr_t the counter wraps after 2^32 hand-overs: a handle held that long
 * could then name a newer delivery.) The SDK's complete() names a delivery by its handle alone, so
 * the table is the process's: a handle leads to its delivery, and the delivery to its dispatcher.
 */

/* Every delivery handed to a plugin and not yet freed. */
static handle_table open_handles;

static size_t handle_home(const handle_table *t, uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (size_t)h & (t->cap - 1);
}

static size_t handle_find(const handle_table *t, uint64_t h)
{
    if (!h || !t->cap) {
        return SIZE_MAX;
    }
    for (size_t i = handle_home(t, h); t->slot[i]; i = (i + 1) & (t->cap - 1)) {
        if (t->slot[i]->handle == h) {
            return i;
        }
    }
    return SIZE_MAX;
}

static void handle_insert(handle_table *t, px_delivery *dl)
{
    size_t i = handle_home(t, dl->handle);
    while (t->slot[i]) {
        i = (i + 1) & (t->cap - 1);
    }
    t->slot[i] = dl;
    t->n++;
}

/* Gives dl a new handle and records it. Returns the handle. */
static uint64_t handle_add(handle_table *t, px_delivery *dl)
{
    if ((t->n + 1) * 2 > t->cap) {
        handle_table bigger = {px_xcalloc(t->cap ? t->cap * 2 : 64, sizeof(px_delivery *)),
                               t->cap ? t->cap * 2 : 64, 0, t->last};
        for (size_t i = 0; i < t->cap; i++) {
            if (t->slot[i]) {
                handle_insert(&bigger, t->slot[i]);
            }
        }
        free(t->slot);
        *t = bigger;
    }
    if (++t->last == 0) {
        t->last = 1; /* 0 is NULL: never a handle */
    }
    dl->handle = t->last;
    handle_insert(t, dl);
    return dl->handle;
}

/* Forgets dl's handle: from now on it names nothing. A retried delivery is handed over again
 * under a new one. */
static void handle_remove(handle_table *t, px_delivery *dl)
{
    size_t i = handle_find(t, dl->handle);
    dl->handle = 0;
    if (i == SIZE_MAX) {
        return;
    }
    t->slot[i] = NULL;
    t->n--;
    /* Close the gap: move back every entry of the run after it that may not stay behind it. */
    size_t mask = t->cap - 1;
    for (size_t j = (i + 1) & mask; t->slot[j]; j = (j + 1) & mask) {
        size_t home = handle_home(t, t->slot[j]->handle);
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            t->slot[i] = t->slot[j];
            t->slot[j] = NULL;
            i = j;
        }
    }
}

static px_delivery *handle_ptr(uint64_t handle)
{
    return (px_delivery *)(uintptr_t)handle;
}

static void delivery_free(px_delivery *dl)
{
    if (dl->handle) {
        handle_remove(&open_handles, dl);
    }
    px_event_unref(dl->event);
    free(dl->pipeline);
    free(dl->sink);
    free(dl->action);
    json_decref(dl->params);
    free(dl);
}

/* --- lists ------------------------------------------------------------------------------- */

static void list_append(px_delivery **head, px_delivery **tail, px_delivery *dl)
{
    dl->next = NULL;
    dl->prev = *tail;
    if (*tail) {
        (*tail)->next = dl;
    } else {
        *head = dl;
    }
    *tail = dl;
}

static void list_remove(px_delivery **head, px_delivery **tail, px_delivery *dl)
{
    if (dl->prev) {
        dl->prev->next = dl->next;
    } else {
        *head = dl->next;
    }
    if (dl->next) {
        dl->next->prev = dl->prev;
    } else {
        *tail = dl->prev;
    }
    dl->prev = dl->next = NULL;
}

/* Inserts into the ready list keeping ids ascending (retries go back near the front). */
static void ready_insert(px_sinkq *q, px_delivery *dl)
{
    px_delivery *at = q->ready_head;
    while (at && at->order < dl->order) {
        at = at->next;
    }
    if (!at) {
        list_append(&q->ready_head, &q->ready_tail, dl);
    } else {
        dl->next = at;
        dl->prev = at->prev;
        if (at->prev) {
            at->prev->next = dl;
        } else {
            q->ready_head = dl;
        }
        at->prev = dl;
    }
    q->nready++;
}

/* --- queues ------------------------------------------------------------------------------ */

static void on_wake(uv_timer_t *t)
{
    px_sinkq *q = t->data;
    q->wake_at = 0;
    pump(q);
}

static px_sinkq *queue_get(px_dispatch *disp, const char *sink)
{
    for (px_sinkq *q = disp->queues; q; q = q->next) {
        if (strcmp(q->name, sink) == 0) {
            return q;
        }
    }
    px_sinkq *q = px_xcalloc(1, sizeof(*q));
    q->name = px_xstrdup(sink);
    q->disp = disp;
    uv_timer_init(disp->loop, &q->wake);
    q->wake.data = q;
    q->next = disp->queues;
    disp->queues = q;
    return q;
}

static void policy_narrow(px_retry_policy *p, const px_event *ev)
{
    if (ev->max_attempts && ev->max_attempts < p->attempts) {
        p->attempts = ev->max_attempts;
    }
    if (ev->timeout_ms && ev->timeout_ms < p->timeout_ms) {
        p->timeout_ms = ev->timeout_ms;
    }
    if (p->attempts == 0) {
        p->attempts = 1;
    }
}

static px_delivery *delivery_new(px_sinkq *q, int64_t id, px_event *ev, const char *pipeline,
                                 const char *action, json_t *params, const px_retry_policy *pol)
{
    px_delivery *dl = px_xcalloc(1, sizeof(*dl));
    dl->id = id;
    dl->order = id;
    dl->event = ev;
    dl->pipeline = px_xstrdup(pipeline ? pipeline : "");
    dl->sink = px_xstrdup(q->name);
    dl->action = px_xstrdup(action ? action : "");
    dl->params = params;
    dl->policy = *pol;
    policy_narrow(&dl->policy, ev);
    dl->q = q;
    return dl;
}

/* --- refill from the spool --------------------------------------------------------------- */

typedef struct refill_ctx {
    px_sinkq *q;
    size_t n;
} refill_ctx;

/* A delivery read back from the store, in memory (not yet in any list). NULL when its payload
 * cannot be read. */
static px_delivery *delivery_from_row(px_sinkq *q, const px_store_delivery *row)
{
    /* parsed only if the sink asks for the payload as JSON */
    px_event *ev = px_event_create_text(row->ev.source, row->ev.type, row->ev.payload,
                                        row->ev.payload_len, JSON_DECODE_ANY);
    if (!ev) {
        return NULL;
    }
    px_event_set(ev, PX_EVENT_ID, row->ev.id);
    ev->time_ms = row->ev.time_ms;
    if (row->ev.meta) {
        ev->meta = json_loads(row->ev.meta, 0, NULL);
    }
    px_event_hints_parse(ev, row->ev.hints);
    ev->emitted = 1;
    json_t *params = json_loads(row->params ? row->params : "{}", 0, NULL);
    if (!params) {
        params = json_object();
    }
    const px_retry_policy *pol = q->disp->dir.policy(q->disp->dir.owner, row->pipeline);
    px_delivery *dl = delivery_new(q, row->id, ev, row->pipeline, row->action, params, pol);
    dl->attempt = row->attempts;
    dl->next_at_ms = row->next_at_ms;
    return dl;
}

/* 1 when delivery `id` is in q's memory (ready or in flight). Linear: only asked for ids at or
 * under q->adopted_hi, which adoption alone makes possible. */
static int in_memory(const px_sinkq *q, int64_t id)
{
    for (const px_delivery *d = q->ready_head; d; d = d->next) {
        if (d->id == id) {
            return 1;
        }
    }
    for (const px_delivery *d = q->infl_head; d; d = d->next) {
        if (d->id == id) {
            return 1;
        }
    }
    return 0;
}

static void on_loaded(const px_store_delivery *row, void *arg)
{
    refill_ctx *rc = arg;
    px_sinkq *q = rc->q;
    rc->n++;
    if (row->id <= q->tail_id) {
        return;
    }
    q->tail_id = row->id;
    if (row->id <= q->adopted_hi && in_memory(q, row->id)) {
        return; /* adopted from another host before the cursor reached it */
    }
    px_delivery *dl = delivery_from_row(q, row);
    if (dl) {
        list_append(&q->ready_head, &q->ready_tail, dl);
        q->nready++;
    }
}

/* A delivery adopted from a host that died: older than most of the window, so placed in order. */
static void on_adopted(const px_store_delivery *row, void *arg)
{
    px_sinkq *q = arg;
    if (row->id <= q->adopted_hi && in_memory(q, row->id)) {
        return;
    }
    px_delivery *dl = delivery_from_row(q, row);
    if (!dl) {
        return;
    }
    if (row->id > q->adopted_hi) {
        q->adopted_hi = row->id;
    }
    ready_insert(q, dl);
    q->disp->stats.adopted++;
}

/* A delivery of an ordered sink read back by its leader, in commit order. */
static void on_loaded_ordered(const px_store_delivery *row, void *arg)
{
    refill_ctx *rc = arg;
    px_sinkq *q = rc->q;
    rc->n++;
    if (row->seq <= q->tail_seq) {
        return;
    }
    q->tail_seq = row->seq;
    for (const px_delivery *d = q->infl_head; d; d = d->next) {
        if (d->id == row->id) {
            return; /* still in flight from before this host lost the lead and took it again */
        }
    }
    px_delivery *dl = delivery_from_row(q, row);
    if (dl) {
        dl->order = row->seq;
        list_append(&q->ready_head, &q->ready_tail, dl);
        q->nready++;
    }
}

static void refill(px_sinkq *q)
{
    size_t want = WINDOW_MAX - q->nready;
    refill_ctx rc = {q, 0};
    int n = q->ordered ? px_store_claim_ordered(q->disp->store, q->name, q->tail_seq, want,
                                                on_loaded_ordered, &rc)
                       : px_store_claim(q->disp->store, q->name, q->tail_id, want, on_loaded, &rc);
    if (n < 0) {
        PX_LOG_WARN("dispatch", "spool read failed sink=%s: %s", q->name, px_strerror(n));
        return;
    }
    if ((size_t)n < want) {
        q->spilled = 0;
    }
}

/* --- dispatching ------------------------------------------------------------------------- */

static px_plugin_ctx *sink_gen(px_sinkq *q, uint32_t *max_inflight)
{
    px_instance *inst = q->disp->dir.instance(q->disp->dir.owner, q->name);
    if (!inst || !inst->gen || inst->gen->state_code != PX_GEN_RUNNING ||
        !(inst->kind & PX_KIND_SINK)) {
        return NULL;
    }
    *max_inflight = inst->max_inflight ? inst->max_inflight : 1;
    q->ordered = inst->ordered && q->disp->store->ops->shared;
    return inst->gen;
}

static void hand_over(px_sinkq *q, px_delivery *dl, px_plugin_ctx *gen)
{
    int64_t now = px_now_ms();
    dl->gen = gen;
    dl->attempt++;
    dl->started_ms = now;
    dl->deadline_ms = dl->policy.timeout_ms ? now + (int64_t)dl->policy.timeout_ms : 0;
    list_append(&q->infl_head, &q->infl_tail, dl);
    q->ninflight++;
    gen->inflight++;
    uint64_t handle = handle_add(&open_handles, dl);
    /* Should the plugin take the process down, the crash marker names this delivery; so it does
     * when a callback the plugin sets up now does (px_dispatch_blame). */
    px_crash_frame cf;
    px_crash_enter(&cf, "deliver", q->name, dl->id, dl->event->id);
    px_crash_set_cause(&cf, gen, handle);
    px_gen_watch(gen, "deliver", handle_ptr(handle), 0, 0);
    gen->lib->desc->deliver(gen->state, handle_ptr(handle));
    px_crash_leave(&cf);
}

/* 1 when the event's retry deadline (a source hint, e.g. Laravel's retryUntil) is before `at`. */
static int past_deadline(const px_delivery *dl, int64_t at)
{
    return dl->event->deadline_ms > 0 && at > dl->event->deadline_ms;
}

static void finish_dead(px_delivery *dl, const char *reason);

static void pump(px_sinkq *q)
{
    if (q->pumping) {
        q->repump = 1;
        return;
    }
    if (q->disp->closing) {
        return;
    }
    q->pumping = 1;
    do {
        q->repump = 0;
        uint32_t limit = 0;
        px_plugin_ctx *gen = sink_gen(q, &limit);
        if (!gen) {
            break;
        }
        if (q->failing) {
            limit = 1;
        }
        if (!q->disp->leased) {
            break; /* this host's lease on the store lapsed: on_sweep resumes */
        }
        if (q->ordered && !q->leader) {
            break; /* another host delivers this sink: watch_lead takes over when it stops */
        }
        int64_t now = px_now_ms();
        while (q->ninflight < limit) {
            if (q->spilled && q->nready < WINDOW_LOW) {
                refill(q);
            }
            px_delivery *head = q->ready_head;
            if (!head) {
                break;
            }
            if (head->next_at_ms > now) {
                if (!q->wake_at || q->wake_at > head->next_at_ms) {
                    q->wake_at = head->next_at_ms;
                    uv_timer_start(&q->wake, on_wake, (uint64_t)(head->next_at_ms - now), 0);
                }
                break;
            }
            list_remove(&q->ready_head, &q->ready_tail, head);
            q->nready--;
            if (head->attempt > 0 && past_deadline(head, now)) {
                /* a retry due after the deadline (e.g. the host was down meanwhile) */
                px_metrics_delivery(head->pipeline, head->sink, "dead", 0);
                finish_dead(head, "retry deadline passed before the retry started");
                continue;
            }
            hand_over(q, head, gen);
            if (gen->state_code != PX_GEN_RUNNING) {
                break;
            }
        }
    } while (q->repump);
    q->pumping = 0;
}

uint64_t px_dispatch_backoff(const px_retry_policy *p, const uint32_t *hints, size_t nhints,
                             uint32_t attempt)
{
    uint64_t ms;
    if (attempt < 1) {
        attempt = 1;
    }
    if (nhints) {
        ms = hints[attempt - 1 < nhints ? attempt - 1 : nhints - 1];
    } else {
        ms = p->backoff_ms;
        for (uint32_t i = 1; i < attempt && ms < p->max_backoff_ms; i++) {
            ms *= 2;
        }
    }
    if (p->max_backoff_ms && ms > p->max_backoff_ms) {
        ms = p->max_backoff_ms;
    }
    return ms;
}

static uint64_t with_jitter(uint64_t ms, double jitter)
{
    if (jitter <= 0 || ms == 0) {
        return ms;
    }
    /* Spread retries of many deliveries over [ms*(1-j), ms*(1+j)]: random() is enough here. */
    double f = 1.0 + jitter * (2.0 * ((double)random() / (double)RAND_MAX) - 1.0);
    return (uint64_t)((double)ms * f);
}

/* What status shows for the sink: its last failure, until a delivery succeeds. */
static void note_outcome(px_sinkq *q, int status, const char *reason)
{
    free(q->last_error);
    q->last_error = NULL;
    if (status != PX_OK) {
        q->last_error = px_xasprintf("%s: %s", status == PX_ERETRY ? "retry" : "rejected",
                                     *reason ? reason : px_strerror(status));
    }
}

static void finish_dead(px_delivery *dl, const char *reason)
{
    px_dispatch *disp = dl->q->disp;
    px_store_mark_dead(disp->store, dl->id, dl->attempt, reason);
    disp->stats.dead++;
    if (px_tap_on(disp->tap)) {
        px_tap_delivery(disp->tap, dl->event, dl->pipeline, dl->sink, dl->action, dl->id,
                        dl->attempt, "dead", reason, 0);
    }
    PX_LOG_WARN("dispatch", "dead letter id=%lld sink=%s pipeline=%s event=%s reason=%s",
                (long long)dl->id, dl->sink, dl->pipeline, dl->event->id, reason);
    delivery_free(dl);
}

/* Dead after a failed attempt (a retry asked for, or a timeout): the reason says which rule
 * ended it. A delivery with attempts left dies only through an event hint: fail on timeout, or a
 * next try that would start after the retry deadline. */
static void finish_dead_why(px_delivery *dl, const char *error, int timed_out)
{
    char *why;
    if (dl->attempt >= dl->policy.attempts) {
        why = px_xasprintf("attempts exhausted (%u): %s", dl->attempt, error);
    } else if (timed_out && dl->event->fail_on_timeout) {
        why = px_xasprintf("failed on timeout (attempt %u): %s", dl->attempt, error);
    } else {
        why = px_xasprintf("retry deadline passed (attempt %u): %s", dl->attempt, error);
    }
    finish_dead(dl, why);
    free(why);
}

px_delivery *px_dispatch_resolve(px_delivery *handle)
{
    size_t i = handle_find(&open_handles, (uint64_t)(uintptr_t)handle);
    return i == SIZE_MAX ? NULL : open_handles.slot[i];
}

px_delivery *px_dispatch_blame(px_dispatch *disp, px_plugin_ctx *gen, uint64_t cause)
{
    if (cause) {
        px_delivery *dl = px_dispatch_resolve(handle_ptr(cause));
        return dl && dl->gen == gen ? dl : NULL;
    }
    if (gen->inflight != 1) {
        return NULL;
    }
    for (px_sinkq *q = disp->queues; q; q = q->next) {
        if (strcmp(q->name, gen->inst->name) != 0) {
            continue;
        }
        for (px_delivery *dl = q->infl_head; dl; dl = dl->next) {
            if (dl->gen == gen) {
                return dl;
            }
        }
    }
    for (px_delivery *dl = disp->orphans; dl; dl = dl->next) {
        if (dl->gen == gen) {
            return dl;
        }
    }
    return NULL;
}

void px_dispatch_crash_enter(px_dispatch *disp, px_crash_frame *f, px_plugin_ctx *gen,
                             const char *call, uint64_t cause)
{
    px_delivery *dl = disp ? px_dispatch_blame(disp, gen, cause) : NULL;
    px_crash_enter(f, call, gen->inst->name, dl ? dl->id : 0, dl ? dl->event->id : NULL);
    px_crash_set_cause(f, gen, dl ? dl->handle : 0);
}

void px_dispatch_complete(px_delivery *handle, int status, const char *reason,
                          uint64_t retry_after_ms)
{
    px_delivery *dl = px_dispatch_resolve(handle);
    if (!dl) {
        PX_LOG_ERR("dispatch", "complete refused: the delivery is already complete or unknown "
                   "instance=%s handle=%llu status=%d", px_crash_instance(),
                   (unsigned long long)(uintptr_t)handle, status);
        return;
    }
    px_sinkq *q = dl->q;
    px_dispatch *disp = q->disp;
    px_plugin_ctx *gen = dl->gen;
    if (gen && gen->inflight > 0) {
        gen->inflight--;
    }
    if (dl->orphan) {
        /* Already retried elsewhere: this late answer changes nothing. */
        list_remove(&disp->orphans, &(px_delivery *){NULL}, dl);
        delivery_free(dl);
        if (gen) {
            px_gen_check_drained(gen);
        }
        return;
    }
    list_remove(&q->infl_head, &q->infl_tail, dl);
    q->ninflight--;
    dl->gen = NULL;
    handle_remove(&open_handles, dl); /* this attempt is over, even if the delivery goes on */
    if (!reason) {
        reason = "";
    }
    /* Reasons are kept in the spool and shown by `dlq`: a secret a plugin quoted is masked. */
    char *masked = px_log_redact(reason);
    if (masked) {
        reason = masked;
    }
    note_outcome(q, status, reason);

    if (status == PX_OK) {
        px_store_mark_done(disp->store, dl->id, dl->attempt);
        disp->stats.delivered++;
        px_metrics_delivery(dl->pipeline, dl->sink, "done", dl->event->time_ms);
        if (px_tap_on(disp->tap)) {
            px_tap_delivery(disp->tap, dl->event, dl->pipeline, dl->sink, dl->action, dl->id,
                            dl->attempt, "ok", reason, 0);
        }
        q->failing = 0;
        PX_LOG_DEBUG("dispatch", "delivered id=%lld sink=%s event=%s attempt=%u%s%s",
                     (long long)dl->id, dl->sink, dl->event->id, dl->attempt,
                     *reason ? " result=" : "", reason);
        delivery_free(dl);
    } else if (status == PX_ERETRY) {
        disp->stats.retried++;
        q->failing = 1;
        const char *error = *reason ? reason : "retry";
        uint64_t wait = 0;
        int64_t next_at = 0;
        if (dl->attempt < dl->policy.attempts) {
            wait = retry_after_ms ? retry_after_ms
                                  : with_jitter(px_dispatch_backoff(&dl->policy,
                                                                    dl->event->backoff_ms,
                                                                    dl->event->nbackoff,
                                                                    dl->attempt),
                                                dl->policy.jitter);
            next_at = px_now_ms() + (int64_t)wait;
        }
        int dead = dl->attempt >= dl->policy.attempts || past_deadline(dl, next_at);
        px_metrics_delivery(dl->pipeline, dl->sink, dead ? "dead" : "retry", 0);
        if (dead) {
            finish_dead_why(dl, error, 0);
        } else {
            dl->next_at_ms = next_at;
            px_store_mark_retry(disp->store, dl->id, dl->attempt, dl->next_at_ms, reason);
            if (px_tap_on(disp->tap)) {
                px_tap_delivery(disp->tap, dl->event, dl->pipeline, dl->sink, dl->action, dl->id,
                                dl->attempt, "retry", error, wait);
            }
            PX_LOG_INFO("dispatch", "retry id=%lld sink=%s attempt=%u in_ms=%llu reason=%s",
                        (long long)dl->id, dl->sink, dl->attempt, (unsigned long long)wait,
                        reason);
            ready_insert(q, dl);
        }
    } else {
        disp->stats.rejected++;
        px_metrics_delivery(dl->pipeline, dl->sink, "rejected", 0);
        char *why = px_xasprintf("rejected: %s", *reason ? reason : px_strerror(status));
        finish_dead(dl, why);
        free(why);
    }
    free(masked);
    if (gen) {
        px_gen_check_drained(gen);
    }
    pump(q);
}

/* Takes an in-flight delivery back: the plugin keeps the original (orphaned) until it completes
 * or its generation is destroyed; a copy goes back to the ready list. Its next attempt has the
 * next number either way (the sink may have acted on this one: delivery_attempt tells the
 * receiver it is a repeat), but an attempt cut short by an unload (count_attempt 0: a drain
 * that timed out) costs none of the policy's attempts. */
static void take_back(px_sinkq *q, px_delivery *dl, const char *why, int count_attempt)
{
    px_dispatch *disp = q->disp;
    list_remove(&q->infl_head, &q->infl_tail, dl);
    q->ninflight--;
    px_delivery *copy = delivery_new(q, dl->id, px_event_ref(dl->event), dl->pipeline, dl->action,
                                     json_incref(dl->params), &dl->policy);
    copy->attempt = dl->attempt;
    if (!count_attempt) {
        copy->policy.attempts++;
    }
    dl->orphan = 1;
    px_delivery *tail = NULL;
    for (tail = disp->orphans; tail && tail->next; tail = tail->next) {
    }
    list_append(&disp->orphans, &tail, dl);
    if (count_attempt) {
        disp->stats.timeouts++;
        int64_t next_at = 0;
        if (copy->attempt < copy->policy.attempts) {
            uint64_t wait = with_jitter(px_dispatch_backoff(&copy->policy,
                                                            copy->event->backoff_ms,
                                                            copy->event->nbackoff, copy->attempt),
                                        copy->policy.jitter);
            next_at = px_now_ms() + (int64_t)wait;
        }
        int dead = copy->attempt >= copy->policy.attempts || copy->event->fail_on_timeout ||
                   past_deadline(copy, next_at);
        px_metrics_delivery(copy->pipeline, copy->sink, dead ? "dead" : "timeout", 0);
        if (dead) {
            finish_dead_why(copy, why, 1);
            return;
        }
        copy->next_at_ms = next_at;
        px_store_mark_retry(disp->store, copy->id, copy->attempt, copy->next_at_ms, why);
        if (px_tap_on(disp->tap)) {
            px_tap_delivery(disp->tap, copy->event, copy->pipeline, copy->sink, copy->action,
                            copy->id, copy->attempt, "retry", why,
                            (uint64_t)(next_at > px_now_ms() ? next_at - px_now_ms() : 0));
        }
        q->failing = 1;
        note_outcome(q, PX_ERETRY, why);
    }
    ready_insert(q, copy);
}

/* The lead of an ordered sink on a shared store: taken or renewed every LEAD_EVERY sweeps. The
 * leader reads what every host put, in commit order, at every sweep (deliveries put by other hosts
 * reach it no other way); a host that loses the lead forgets what it had read (the new leader
 * reads it) and lets what is in flight finish (its marks are refused once the new leader claimed
 * them). */
static void watch_lead(px_sinkq *q)
{
    px_dispatch *disp = q->disp;
    uint32_t limit;
    if (!sink_gen(q, &limit) || !q->ordered) {
        return;
    }
    if (disp->sweeps % LEAD_EVERY == 0) {
        int rc = px_store_lead(disp->store, q->name);
        if (rc == 1 && !q->leader) {
            PX_LOG_INFO("dispatch", "leads ordered sink=%s: delivering for every host", q->name);
            q->leader = 1;
            q->tail_seq = 0;
        } else if (rc == 0 && q->leader) {
            PX_LOG_WARN("dispatch", "lost the lead of ordered sink=%s to another host", q->name);
            q->leader = 0;
            while (q->ready_head) {
                px_delivery *dl = q->ready_head;
                list_remove(&q->ready_head, &q->ready_tail, dl);
                delivery_free(dl);
            }
            q->nready = 0;
            q->tail_seq = 0;
        } else if (rc < 0 && rc != PX_EBUSY) {
            PX_LOG_WARN("dispatch", "lead failed sink=%s: %s", q->name, px_strerror(rc));
        }
    }
    if (q->leader) {
        q->spilled = 1;
        pump(q);
    }
}

/* The store's lease (several hosts): deliveries stop when it lapses and resume when it is back;
 * each sink running here adopts what hosts that died left claimed. */
static void watch_lease(px_dispatch *disp)
{
    int leased = px_store_leased(disp->store);
    if (leased != disp->leased) {
        disp->leased = leased;
        if (!leased) {
            PX_LOG_WARN("dispatch", "store lease lapsed: deliveries paused until it is renewed");
        } else {
            PX_LOG_INFO("dispatch", "store lease renewed: deliveries resume");
            px_dispatch_pump_all(disp);
        }
    }
    if (!leased) {
        return;
    }
    ++disp->sweeps;
    for (px_sinkq *q = disp->queues; q; q = q->next) {
        watch_lead(q);
    }
    if (disp->sweeps % ADOPT_EVERY != 0) {
        return;
    }
    for (px_sinkq *q = disp->queues; q; q = q->next) {
        uint32_t limit;
        if (!sink_gen(q, &limit) || q->nready >= WINDOW_MAX) {
            continue;
        }
        int n = px_store_adopt(disp->store, q->name, WINDOW_MAX - q->nready, on_adopted, q);
        if (n > 0) {
            PX_LOG_INFO("dispatch", "adopted deliveries of a host that stopped sink=%s count=%d",
                        q->name, n);
            pump(q);
        } else if (n < 0 && n != PX_EBUSY) {
            PX_LOG_WARN("dispatch", "adopt failed sink=%s: %s", q->name, px_strerror(n));
        }
    }
}

static void on_sweep(uv_timer_t *t)
{
    px_dispatch *disp = t->data;
    watch_lease(disp);
    int64_t now = px_now_ms();
    for (px_sinkq *q = disp->queues; q; q = q->next) {
        px_delivery *dl = q->infl_head;
        int touched = 0;
        while (dl) {
            px_delivery *next = dl->next;
            if (dl->deadline_ms && dl->deadline_ms <= now) {
                char why[96];
                snprintf(why, sizeof(why), "timeout after %llu ms",
                         (unsigned long long)dl->policy.timeout_ms);
                PX_LOG_WARN("dispatch", "delivery timed out id=%lld sink=%s attempt=%u",
                            (long long)dl->id, q->name, dl->attempt);
                take_back(q, dl, why, 1);
                touched = 1;
            }
            dl = next;
        }
        if (touched) {
            pump(q);
        }
    }
}

int px_dispatch_create(uv_loop_t *loop, px_store *store, const px_sink_directory *dir,
                       px_dispatch **out)
{
    px_dispatch *disp = px_xcalloc(1, sizeof(*disp));
    disp->loop = loop;
    disp->store = store;
    disp->dir = *dir;
    disp->tap = dir->tap ? dir->tap : &no_tap;
    disp->leased = px_store_leased(store);
    uv_timer_init(loop, &disp->sweep);
    disp->sweep.data = disp;
    uv_timer_start(&disp->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&disp->sweep);
    *out = disp;
    return 0;
}

static void on_queue_closed(uv_handle_t *h)
{
    px_sinkq *q = h->data;
    free(q->name);
    free(q->last_error);
    free(q);
}

static void on_disp_closed(uv_handle_t *h)
{
    free(h->data);
}

static void free_list(px_delivery *dl)
{
    while (dl) {
        px_delivery *next = dl->next;
        delivery_free(dl);
        dl = next;
    }
}

void px_dispatch_close(px_dispatch *disp)
{
    if (!disp) {
        return;
    }
    disp->closing = 1;
    px_sinkq *q = disp->queues;
    while (q) {
        px_sinkq *next = q->next;
        free_list(q->ready_head);
        free_list(q->infl_head);
        uv_close((uv_handle_t *)&q->wake, on_queue_closed);
        q = next;
    }
    free_list(disp->orphans);
    if (open_handles.n == 0) { /* every delivery of disp is freed: release the table */
        free(open_handles.slot);
        open_handles = (handle_table){NULL, 0, 0, open_handles.last};
    }
    uv_close((uv_handle_t *)&disp->sweep, on_disp_closed);
}

void px_dispatch_add(px_dispatch *disp, int64_t id, px_event *ev, const char *pipeline,
                     const char *sink, const char *action, json_t *params,
                     const px_retry_policy *policy)
{
    px_sinkq *q = queue_get(disp, sink);
    uint32_t limit;
    sink_gen(q, &limit);
    if (q->ordered) {
        /* held by no host until the leader reads it back in commit order: see watch_lead */
        q->spilled = 1;
        return;
    }
    if (id <= q->tail_id) {
        return; /* already read back from the spool */
    }
    /* In the spool (or about to be: a read waits for the writer); read back in order later.
     * Also while the sink is failing: its backlog may last hours, and read back from the spool an
     * event is only its text, a fraction of the parsed one in memory. */
    if (q->spilled || q->nready >= WINDOW_MAX || q->failing) {
        q->spilled = 1;
        pump(q);
        return;
    }
    px_delivery *dl = delivery_new(q, id, px_event_ref(ev), pipeline, action, json_incref(params),
                                   policy);
    list_append(&q->ready_head, &q->ready_tail, dl);
    q->nready++;
    q->tail_id = id;
    pump(q);
}

int px_dispatch_await(px_dispatch *disp, const char *sink, int delta)
{
    px_sinkq *q = queue_get(disp, sink);
    if (delta > 0) {
        q->awaited += (size_t)delta;
    } else if (delta < 0) {
        q->awaited -= q->awaited < (size_t)-delta ? q->awaited : (size_t)-delta;
    }
    return q->awaited == 0 && !q->commit_first;
}

void px_dispatch_wait_for_commits(px_dispatch *disp, const char *sink)
{
    queue_get(disp, sink)->commit_first = 1;
}

void px_dispatch_cancel(px_dispatch *disp, const char *sink, int64_t id)
{
    px_sinkq *q = NULL;
    for (q = disp->queues; q && strcmp(q->name, sink) != 0; q = q->next) {
    }
    if (!q) {
        return;
    }
    for (px_delivery *dl = q->ready_tail; dl; dl = dl->prev) {
        if (dl->id == id) {
            list_remove(&q->ready_head, &q->ready_tail, dl);
            q->nready--;
            delivery_free(dl);
            return;
        }
    }
    for (px_delivery *dl = q->infl_tail; dl; dl = dl->prev) {
        if (dl->id == id) {
            /* the plugin holds it: orphaned, its answer will change nothing */
            list_remove(&q->infl_head, &q->infl_tail, dl);
            q->ninflight--;
            dl->orphan = 1;
            px_delivery *tail = NULL;
            for (tail = disp->orphans; tail && tail->next; tail = tail->next) {
            }
            list_append(&disp->orphans, &tail, dl);
            pump(q);
            return;
        }
    }
}

void px_dispatch_kick(px_dispatch *disp, const char *sink)
{
    px_sinkq *q = queue_get(disp, sink);
    q->spilled = 1;
    pump(q);
}

void px_dispatch_serve(px_dispatch *disp, const char *sink)
{
    queue_get(disp, sink);
}

void px_dispatch_pump_all(px_dispatch *disp)
{
    for (px_sinkq *q = disp->queues; q; q = q->next) {
        pump(q);
    }
}

void px_dispatch_reclaim(px_dispatch *disp, px_plugin_ctx *gen)
{
    for (px_sinkq *q = disp->queues; q; q = q->next) {
        px_delivery *dl = q->infl_head;
        while (dl) {
            px_delivery *next = dl->next;
            if (dl->gen == gen) {
                take_back(q, dl, "generation stopped", 0);
            }
            dl = next;
        }
    }
}

void px_dispatch_forget(px_dispatch *disp, px_plugin_ctx *gen)
{
    px_delivery *dl = disp->orphans;
    while (dl) {
        px_delivery *next = dl->next;
        if (dl->gen == gen) {
            list_remove(&disp->orphans, &(px_delivery *){NULL}, dl);
            delivery_free(dl);
        }
        dl = next;
    }
    px_dispatch_pump_all(disp);
}

void px_dispatch_get_stats(px_dispatch *disp, px_dispatch_stats *st)
{
    *st = disp->stats;
}

void px_dispatch_foreach_sink(px_dispatch *disp,
                              void (*cb)(const char *sink, size_t ready, size_t inflight,
                                         int failing, void *arg),
                              void *arg)
{
    for (px_sinkq *q = disp->queues; q; q = q->next) {
        cb(q->name, q->nready, q->ninflight, q->failing, arg);
    }
}

const char *px_dispatch_sink_error(const px_dispatch *disp, const char *sink)
{
    for (const px_sinkq *q = disp ? disp->queues : NULL; q; q = q->next) {
        if (strcmp(q->name, sink) == 0) {
            return q->last_error;
        }
    }
    return NULL;
}
