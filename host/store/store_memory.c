/* The in-memory store: the store interface kept in plain lists on the loop thread, for tests and
 * the plugin test kit. A put is applied at once (a claim sees it) and reported persisted at the
 * next loop turn, with every other put of this turn, as a group commit would. Nothing survives
 * the close. Lookups by id walk a list: sized for tests, not for production backlogs.
 * Several handles may share one cluster state (px_store_open_memory_shared): the state, its
 * versions and the named leases are common to them, and each is a member with its own host id;
 * the spool stays each handle's own. */
#include "store.h"
#include "store_local.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "err.h"
#include "mem.h"

#define DEFAULT_MAX_QUEUE 65536

typedef struct mem_event {
    int refs; /* deliveries and dead letters that point at it */
    char *id, *type, *source, *payload, *meta, *hints;
    size_t payload_len;
    int64_t time_ms;
} mem_event;

/* A pending delivery or a dead letter. */
static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

typedef struct mem_row {
    int64_t id;
    mem_event *ev;
    char *pipeline, *sink, *action, *params;
    uint32_t attempts, crashes;
    int64_t next_at_ms;
    char *last_error; /* NULL until an attempt failed */
    json_t *history;  /* [{attempt, at, error}] in attempt order */
    char *reason;     /* dead letters */
    int64_t died_at;  /* dead letters */
    struct mem_row *next;
} mem_row;

typedef struct completion {
    px_store_put_cb cb;
    void *arg;
    int status;
} completion;

/* What the handles of one cluster share; freed with the last of them. */
typedef struct mem_shared {
    int refs;
    json_t *kv;           /* "instance\x1fkey" -> JSON text */
    json_t *kv_version;   /* "instance\x1fkey" -> version (integer) */
    int64_t last_version; /* the latest version given */
    json_t *locks;        /* the named leases (px_store_local.locks of every handle) */
    struct mem_store *hosts; /* the handles open on it */
} mem_shared;

typedef struct mem_store {
    px_store base;
    mem_shared *sh;
    struct mem_store *next_host; /* in sh->hosts */
    uv_idle_t turn; /* runs the completions of the puts of the previous turn */
    px_store_options opt;
    int64_t next_id;
    mem_row *pending, *pending_tail; /* ascending id */
    mem_row *dead;                   /* any order */
    json_t *dedupe;                  /* "source\x1fkey" -> expiry (ms since the epoch) */
    px_store_local local;
    json_t *counts;                  /* sink -> pending deliveries */
    completion *done;
    size_t ndone, capdone;
    px_store_stats stats;
} mem_store;

static mem_store *ms(void *b)
{
    return b;
}

static char *mem_dup_or_empty(const char *s)
{
    return px_xstrdup(s ? s : "");
}

static char *mem_dup_or_null(const char *s)
{
    return s ? px_xstrdup(s) : NULL;
}

static char *mem_dup_n(const char *p, size_t n)
{
    char *c = px_xmalloc(n + 1);
    if (n) {
        memcpy(c, p, n);
    }
    c[n] = '\0';
    return c;
}

/* "a\x1fb" (owned by caller). */
static char *mem_pair_key(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *k = px_xmalloc(la + lb + 2);
    memcpy(k, a, la);
    k[la] = '\x1f';
    memcpy(k + la + 1, b, lb + 1);
    return k;
}

static mem_event *mem_event_new(const px_store_event *e)
{
    mem_event *ev = px_xcalloc(1, sizeof(*ev));
    ev->id = mem_dup_or_empty(e->id);
    ev->type = mem_dup_or_empty(e->type);
    ev->source = mem_dup_or_empty(e->source);
    ev->payload = mem_dup_n(e->payload ? e->payload : "", e->payload ? e->payload_len : 0);
    ev->payload_len = e->payload ? e->payload_len : 0;
    ev->meta = mem_dup_or_null(e->meta);
    ev->hints = mem_dup_or_null(e->hints);
    ev->time_ms = e->time_ms;
    return ev;
}

static void mem_event_unref(mem_event *ev)
{
    if (ev && --ev->refs == 0) {
        free(ev->id);
        free(ev->type);
        free(ev->source);
        free(ev->payload);
        free(ev->meta);
        free(ev->hints);
        free(ev);
    }
}

static mem_row *mem_row_new(int64_t id, mem_event *ev, const char *pipeline, const char *sink,
                        const char *action, char *params /* steals */)
{
    mem_row *r = px_xcalloc(1, sizeof(*r));
    r->id = id;
    r->ev = ev;
    ev->refs++;
    r->pipeline = mem_dup_or_empty(pipeline);
    r->sink = mem_dup_or_empty(sink);
    r->action = mem_dup_or_empty(action);
    r->params = params;
    r->history = json_array();
    return r;
}

static void mem_row_free(mem_row *r)
{
    mem_event_unref(r->ev);
    free(r->pipeline);
    free(r->sink);
    free(r->action);
    free(r->params);
    free(r->last_error);
    free(r->reason);
    json_decref(r->history);
    free(r);
}

static void mem_count_add(mem_store *s, const char *sink, int64_t delta)
{
    json_t *c = json_object_get(s->counts, sink);
    int64_t n = (c ? json_integer_value(c) : 0) + delta;
    if (n > 0) {
        json_object_set_new(s->counts, sink, json_integer(n));
    } else {
        json_object_del(s->counts, sink);
    }
}

static void mem_pending_append(mem_store *s, mem_row *r)
{
    if (s->pending_tail) {
        s->pending_tail->next = r;
    } else {
        s->pending = r;
    }
    s->pending_tail = r;
    mem_count_add(s, r->sink, 1);
}

/* Unlinks and returns the pending delivery id, or NULL. */
static mem_row *mem_pending_take(mem_store *s, int64_t id)
{
    mem_row *prev = NULL;
    for (mem_row *r = s->pending; r; prev = r, r = r->next) {
        if (r->id != id) {
            continue;
        }
        if (prev) {
            prev->next = r->next;
        } else {
            s->pending = r->next;
        }
        if (s->pending_tail == r) {
            s->pending_tail = prev;
        }
        r->next = NULL;
        mem_count_add(s, r->sink, -1);
        return r;
    }
    return NULL;
}

static mem_row *mem_pending_find(mem_store *s, int64_t id)
{
    for (mem_row *r = s->pending; r; r = r->next) {
        if (r->id == id) {
            return r;
        }
    }
    return NULL;
}

/* Adds attempt `attempt` to r's history; an existing one is replaced only when `replace`. */
static void mem_history_put(mem_row *r, uint32_t attempt, const char *error, int replace)
{
    size_t i;
    json_t *a;
    json_array_foreach(r->history, i, a)
    {
        if (json_integer_value(json_object_get(a, "attempt")) == (json_int_t)attempt) {
            if (replace) {
                json_object_set_new(a, "at", json_integer(px_now_ms()));
                json_object_set_new(a, "error", error ? json_string(error) : json_null());
            }
            return;
        }
    }
    json_array_append_new(r->history,
                          json_pack("{s:I,s:I,s:o}", "attempt", (json_int_t)attempt, "at",
                                    (json_int_t)px_now_ms(), "error",
                                    error ? json_string(error) : json_null()));
}

/* --- completions at the next loop turn --------------------------------------------------- */

static void mem_run_completions(mem_store *s)
{
    while (s->ndone) {
        completion *batch = s->done;
        size_t n = s->ndone;
        s->done = NULL;
        s->ndone = s->capdone = 0;
        s->stats.commits++;
        s->stats.rows_committed += n;
        s->stats.last_batch = n;
        if (n > s->stats.max_batch) {
            s->stats.max_batch = n;
        }
        for (size_t i = 0; i < n; i++) {
            batch[i].cb(batch[i].status, batch[i].arg);
        }
        free(batch);
    }
}

static void mem_on_turn(uv_idle_t *h)
{
    mem_store *s = h->data;
    uv_idle_stop(h);
    mem_run_completions(s);
}

static void mem_complete_later(mem_store *s, px_store_put_cb cb, void *arg, int status)
{
    if (s->ndone == s->capdone) {
        s->capdone = s->capdone ? s->capdone * 2 : 16;
        s->done = px_xrealloc(s->done, s->capdone * sizeof(*s->done));
    }
    s->done[s->ndone++] = (completion){cb, arg, status};
    uv_idle_start(&s->turn, mem_on_turn);
}

static size_t mem_max_queue(const mem_store *s)
{
    return s->opt.max_queue ? s->opt.max_queue : DEFAULT_MAX_QUEUE;
}

/* --- operations -------------------------------------------------------------------------- */

/* 1 when (source, key) is a repeat within the window; records it otherwise. */
static int mem_dedupe_seen(mem_store *s, const px_store_event *ev)
{
    if (!ev->dedupe_key || s->opt.dedupe_window_ms == 0) {
        return 0;
    }
    char *k = mem_pair_key(ev->source ? ev->source : "", ev->dedupe_key);
    int64_t now = px_now_ms();
    json_t *exp = json_object_get(s->dedupe, k);
    int seen = exp && json_integer_value(exp) > now;
    if (!seen) {
        json_object_set_new(s->dedupe, k,
                            json_integer(now + (int64_t)s->opt.dedupe_window_ms));
    }
    free(k);
    return seen;
}

static int m_put(void *b, const px_store_event *ev, px_store_row *rows, size_t n,
                 px_store_put_cb cb, void *arg)
{
    mem_store *s = ms(b);
    if (!ev || (n > 0 && !rows) || !cb) {
        return PX_EINVAL;
    }
    if (s->ndone >= mem_max_queue(s)) {
        s->stats.busy_refusals++;
        return PX_EBUSY;
    }
    for (size_t i = 0; i < n; i++) {
        rows[i].id = s->next_id++;
    }
    if (mem_dedupe_seen(s, ev)) {
        s->stats.duplicates++;
        mem_complete_later(s, cb, arg, PX_STORE_DUPLICATE);
        return 0;
    }
    if (n > 0) {
        mem_event *e = mem_event_new(ev);
        for (size_t i = 0; i < n; i++) {
            const px_store_row *r = &rows[i];
            char *params = r->params ? mem_dup_n(r->params, r->params_len) : px_xstrdup("{}");
            mem_pending_append(s, mem_row_new(r->id, e, r->pipeline, r->sink, r->action, params));
        }
    }
    mem_complete_later(s, cb, arg, PX_STORE_STORED);
    return 0;
}

static void mem_dead_add(mem_store *s, mem_row *r, const char *reason, uint32_t attempts)
{
    free(r->reason);
    r->reason = mem_dup_or_empty(reason);
    r->attempts = attempts;
    r->died_at = px_now_ms();
    r->next = s->dead;
    s->dead = r;
}

static int m_dead_raw(void *b, const px_store_event *ev, const char *pipeline, const char *sink,
                      const char *reason, px_store_put_cb cb, void *arg)
{
    mem_store *s = ms(b);
    if (!ev || !cb) {
        return PX_EINVAL;
    }
    if (s->ndone >= mem_max_queue(s)) {
        s->stats.busy_refusals++;
        return PX_EBUSY;
    }
    mem_event *e = mem_event_new(ev);
    mem_row *r = mem_row_new(s->next_id++, e, pipeline, sink, "", px_xstrdup("{}"));
    mem_dead_add(s, r, reason, 0);
    mem_complete_later(s, cb, arg, PX_STORE_STORED);
    return 0;
}

static void m_mark_done(void *b, int64_t id, uint32_t attempts)
{
    (void)attempts;
    mem_row *r = mem_pending_take(ms(b), id);
    if (r) {
        mem_row_free(r);
    }
}

static void m_mark_retry(void *b, int64_t id, uint32_t attempts, int64_t next_at_ms,
                         const char *error)
{
    mem_row *r = mem_pending_find(ms(b), id);
    if (!r) {
        return;
    }
    r->attempts = attempts;
    r->next_at_ms = next_at_ms;
    free(r->last_error);
    r->last_error = mem_dup_or_null(error);
    mem_history_put(r, attempts, error, 1);
}

static void m_mark_dead(void *b, int64_t id, uint32_t attempts, const char *reason)
{
    mem_store *s = ms(b);
    mem_row *r = mem_pending_take(s, id);
    if (!r) {
        return;
    }
    if (attempts > 0) { /* the final attempt, unless mark_retry recorded it already */
        mem_history_put(r, attempts, reason, 0);
    }
    mem_dead_add(s, r, reason, attempts);
}

static int m_note_crash(void *b, int64_t id, const char *reason, uint32_t max_crashes)
{
    mem_store *s = ms(b);
    mem_row *r = mem_pending_find(s, id);
    if (!r) {
        return PX_ENOENT;
    }
    reason = reason ? reason : "crash";
    r->attempts++;
    r->crashes++;
    free(r->last_error);
    r->last_error = px_xstrdup(reason);
    mem_history_put(r, r->attempts, reason, 0);
    int crashes = (int)r->crashes;
    if (r->crashes >= (max_crashes ? max_crashes : 3)) {
        char why[512];
        snprintf(why, sizeof(why), "crashed the host %d times; last: %s", crashes, reason);
        m_mark_dead(b, id, r->attempts, why);
    }
    return crashes;
}

static int m_claim(void *b, const char *sink, int64_t after_id, size_t max,
                   void (*cb)(const px_store_delivery *d, void *arg), void *arg)
{
    int n = 0;
    for (mem_row *r = ms(b)->pending; r && (size_t)n < max; r = r->next) {
        if (r->id <= after_id || strcmp(r->sink, sink) != 0) {
            continue;
        }
        px_store_delivery d = {
            .id = r->id,
            .pipeline = r->pipeline,
            .sink = r->sink,
            .action = r->action,
            .params = r->params,
            .attempts = r->attempts,
            .next_at_ms = r->next_at_ms,
            .last_error = r->last_error,
            .ev = {.id = r->ev->id,
                   .type = r->ev->type,
                   .source = r->ev->source,
                   .time_ms = r->ev->time_ms,
                   .payload = r->ev->payload,
                   .payload_len = r->ev->payload_len,
                   .meta = r->ev->meta,
                   .hints = r->ev->hints},
        };
        cb(&d, arg);
        n++;
    }
    return n;
}

static int64_t m_pending(void *b, const char *sink)
{
    return json_integer_value(json_object_get(ms(b)->counts, sink));
}

static int m_pending_counts(void *b, void (*cb)(const char *sink, int64_t n, void *arg),
                            void *arg)
{
    const char *sink;
    json_t *c;
    int n = 0;
    json_object_foreach(ms(b)->counts, sink, c)
    {
        cb(sink, json_integer_value(c), arg);
        n++;
    }
    return n;
}

/* --- dead letters ------------------------------------------------------------------------ */

static json_t *mem_dead_json(const mem_row *r)
{
    return json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:I}", "id", (json_int_t)r->id,
                     "event_id", r->ev->id, "type", r->ev->type, "source", r->ev->source,
                     "pipeline", r->pipeline, "sink", r->sink, "action", r->action, "reason",
                     r->reason, "attempts", (json_int_t)r->attempts, "died_at",
                     (json_int_t)r->died_at);
}

static int mem_latest_first(const void *a, const void *b)
{
    const mem_row *x = *(mem_row *const *)a, *y = *(mem_row *const *)b;
    if (x->died_at != y->died_at) {
        return x->died_at < y->died_at ? 1 : -1;
    }
    return x->id < y->id ? 1 : x->id > y->id ? -1 : 0;
}

/* 1 when text contains part, ASCII case ignored. */
static int contains_nocase(const char *text, const char *part)
{
    size_t n = strlen(part);
    for (; text && *text; text++) {
        size_t i = 0;
        while (i < n && text[i] && ascii_lower(text[i]) == ascii_lower(part[i])) {
            i++;
        }
        if (i == n) {
            return 1;
        }
    }
    return n == 0;
}

static int dlq_matches(const mem_row *r, const px_dlq_query *q)
{
    return (!q->sink || strcmp(r->sink, q->sink) == 0) &&
           (!q->pipeline || strcmp(r->pipeline ? r->pipeline : "", q->pipeline) == 0) &&
           (!q->reason || contains_nocase(r->reason ? r->reason : "", q->reason)) &&
           r->died_at >= q->since_ms && (q->until_ms <= 0 || r->died_at < q->until_ms);
}

static int m_dlq_list(void *b, const px_dlq_query *q, json_t **out, int64_t *total)
{
    size_t n = 0;
    for (mem_row *r = ms(b)->dead; r; r = r->next) {
        n++;
    }
    mem_row **sel = px_xcalloc(n ? n : 1, sizeof(*sel));
    size_t k = 0;
    for (mem_row *r = ms(b)->dead; r; r = r->next) {
        if (dlq_matches(r, q)) {
            sel[k++] = r;
        }
    }
    qsort(sel, k, sizeof(*sel), mem_latest_first);
    json_t *list = json_array();
    for (size_t i = q->offset; i < k && (q->limit == 0 || i - q->offset < q->limit); i++) {
        json_array_append_new(list, mem_dead_json(sel[i]));
    }
    free(sel);
    if (total) {
        *total = (int64_t)k;
    }
    *out = list;
    return 0;
}

static json_t *mem_text_json(const char *p, size_t len)
{
    return px__store_json_or_text(p && len ? p : NULL, len);
}

static int m_dlq_show(void *b, int64_t id, json_t **out)
{
    for (mem_row *r = ms(b)->dead; r; r = r->next) {
        if (r->id != id) {
            continue;
        }
        json_t *o = mem_dead_json(r);
        json_object_set_new(o, "time", json_integer(r->ev->time_ms));
        json_object_set_new(o, "payload", mem_text_json(r->ev->payload, r->ev->payload_len));
        json_object_set_new(o, "params", mem_text_json(r->params, strlen(r->params)));
        json_object_set_new(o, "meta",
                            mem_text_json(r->ev->meta, r->ev->meta ? strlen(r->ev->meta) : 0));
        json_object_set_new(o, "hints",
                            mem_text_json(r->ev->hints, r->ev->hints ? strlen(r->ev->hints) : 0));
        json_object_set_new(o, "history", json_deep_copy(r->history));
        *out = o;
        return 0;
    }
    return PX_ENOENT;
}

static int m_dlq_count(void *b, int64_t *n)
{
    int64_t c = 0;
    for (mem_row *r = ms(b)->dead; r; r = r->next) {
        c++;
    }
    *n = c;
    return 0;
}

/* 1 when dead letter r is mem_selected by ids / sink. */
static int mem_selected(const mem_row *r, const int64_t *ids, size_t n, const char *sink)
{
    if (ids && n > 0) {
        for (size_t i = 0; i < n; i++) {
            if (ids[i] == r->id) {
                return 1;
            }
        }
        return 0;
    }
    return !sink || strcmp(r->sink, sink) == 0;
}

/* Unlinks the mem_selected dead letters that pass keep(), oldest id first, into *out (an array the
 * caller frees). Returns their number. */
static size_t mem_dead_take(mem_store *s, const int64_t *ids, size_t n, const char *sink,
                        int replay, int64_t before_ms, mem_row ***out)
{
    size_t cap = 0, k = 0;
    mem_row **taken = NULL;
    for (mem_row **pp = &s->dead; *pp;) {
        mem_row *r = *pp;
        int skip = !mem_selected(r, ids, n, sink) || (replay && r->sink[0] == '\0') ||
                   (!replay && before_ms > 0 && r->died_at >= before_ms);
        if (skip) {
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        r->next = NULL;
        if (k == cap) {
            cap = cap ? cap * 2 : 16;
            taken = px_xrealloc(taken, cap * sizeof(*taken));
        }
        taken[k++] = r;
    }
    for (size_t i = 1; i < k; i++) { /* insertion sort by id: dead letters are few */
        mem_row *r = taken[i];
        size_t j = i;
        for (; j > 0 && taken[j - 1]->id > r->id; j--) {
            taken[j] = taken[j - 1];
        }
        taken[j] = r;
    }
    *out = taken;
    return k;
}

static int m_dlq_replay(void *b, const int64_t *ids, size_t n, const char *sink,
                        void (*cb)(int64_t id, const char *sink, void *arg), void *arg)
{
    mem_store *s = ms(b);
    mem_row **taken;
    size_t k = mem_dead_take(s, ids, n, sink, 1, 0, &taken);
    for (size_t i = 0; i < k; i++) {
        mem_row *d = taken[i];
        mem_row *r = mem_row_new(s->next_id++, d->ev, d->pipeline, d->sink, d->action, d->params);
        d->params = NULL;
        mem_row_free(d);
        mem_pending_append(s, r);
        if (cb) {
            cb(r->id, r->sink, arg);
        }
    }
    free(taken);
    return (int)k;
}

static int m_dlq_purge(void *b, const int64_t *ids, size_t n, const char *sink,
                       int64_t before_ms)
{
    mem_row **taken;
    size_t k = mem_dead_take(ms(b), ids, n, sink, 0, before_ms, &taken);
    for (size_t i = 0; i < k; i++) {
        mem_row_free(taken[i]);
    }
    free(taken);
    return (int)k;
}

/* --- state ------------------------------------------------------------------------------- */

static json_t *m_kv_get(void *b, const char *instance, const char *key)
{
    if (!instance || !key) {
        return NULL;
    }
    char *k = mem_pair_key(instance, key);
    json_t *text = json_object_get(ms(b)->sh->kv, k);
    free(k);
    return text ? json_loads(json_string_value(text), JSON_DECODE_ANY, NULL) : NULL;
}

/* Values are kept as their JSON text, so what is read back is what a database would give. */
static int m_kv_set(void *b, const char *instance, const char *key, const json_t *value)
{
    if (!instance || !key) {
        return PX_EINVAL;
    }
    char *text = NULL;
    if (value) {
        text = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
        if (!text) {
            return PX_EINVAL;
        }
    }
    char *k = mem_pair_key(instance, key);
    if (text) {
        json_object_set_new(ms(b)->sh->kv, k, json_string(text));
        json_object_set_new(ms(b)->sh->kv_version, k, json_integer(++ms(b)->sh->last_version));
    } else {
        json_object_del(ms(b)->sh->kv, k);
        json_object_del(ms(b)->sh->kv_version, k);
    }
    free(k);
    free(text);
    return 0;
}

static void m_get_stats(void *b, px_store_stats *st)
{
    *st = ms(b)->stats;
    st->writable = 1;
    st->queued = ms(b)->ndone;
}

static int m_writable(void *b)
{
    (void)b;
    return 1;
}

/* --- open / close ------------------------------------------------------------------------ */

static void mem_free_rows(mem_row *r)
{
    while (r) {
        mem_row *next = r->next;
        mem_row_free(r);
        r = next;
    }
}

static void mem_on_closed(uv_handle_t *h)
{
    mem_store *s = h->data;
    mem_free_rows(s->pending);
    mem_free_rows(s->dead);
    json_decref(s->dedupe);
    mem_shared *sh = s->sh;
    for (mem_store **p = &sh->hosts; *p; p = &(*p)->next_host) {
        if (*p == s) {
            *p = s->next_host;
            break;
        }
    }
    if (--sh->refs == 0) {
        json_decref(sh->kv);
        json_decref(sh->kv_version);
        json_decref(sh->locks);
        free(sh);
    }
    px_store_local_free(&s->local);
    json_decref(s->counts);
    free(s->done);
    free(s);
}

static void m_close(void *b)
{
    mem_store *s = ms(b);
    mem_run_completions(s);
    uv_close((uv_handle_t *)&s->turn, mem_on_closed);
}

static json_t *m_kv_get_versioned(void *b, const char *instance, const char *key,
                                  int64_t *version)
{
    *version = 0;
    json_t *v = m_kv_get(b, instance, key);
    if (v) {
        char *k = mem_pair_key(instance, key);
        *version = json_integer_value(json_object_get(ms(b)->sh->kv_version, k));
        free(k);
    }
    return v;
}

static int m_kv_cas(void *b, const char *instance, const char *key, int64_t expected,
                    const json_t *value, int64_t *version)
{
    if (!instance || !key || expected < 0 || (!value && expected == 0)) {
        return PX_EINVAL;
    }
    char *k = mem_pair_key(instance, key);
    int64_t cur = json_integer_value(json_object_get(ms(b)->sh->kv_version, k));
    free(k);
    if (cur != expected) {
        return PX_ECONFLICT;
    }
    int rc = m_kv_set(b, instance, key, value);
    if (rc == 0 && version) {
        *version = value ? ms(b)->sh->last_version : 0;
    }
    return rc;
}

/* One host: nothing is ever orphaned. */
static int m_adopt(void *b, const char *sink, size_t max,
                   void (*cb)(const px_store_delivery *d, void *arg), void *arg)
{
    (void)b, (void)sink, (void)max, (void)cb, (void)arg;
    return 0;
}

static int m_leased(void *b)
{
    (void)b;
    return 1;
}

/* Every handle of the cluster, this one marked "self". */
static int m_members(void *b, json_t **out)
{
    json_t *all = json_array();
    for (mem_store *h = ms(b)->sh->hosts; h; h = h->next_host) {
        json_t *one = NULL;
        if (px_store_local_members(&h->local, &one) < 0) {
            json_decref(all);
            return PX_ESPOOL;
        }
        json_t *m = json_array_get(one, 0);
        json_object_set_new(m, "self", json_boolean(h == ms(b)));
        json_array_append(all, m);
        json_decref(one);
    }
    *out = all;
    return 0;
}

static void m_announce(void *b, const char *config_hash)
{
    px_store_local_announce(&ms(b)->local, config_hash);
}

static int m_lock(void *b, const char *name, const char *holder, uint32_t ttl_ms)
{
    return px_store_local_lock(&ms(b)->local, name, holder, ttl_ms);
}

static int m_unlock(void *b, const char *name, const char *holder)
{
    return px_store_local_unlock(&ms(b)->local, name, holder);
}

static int m_lead(void *b, const char *sink)
{
    (void)b;
    (void)sink;
    return 1; /* one host leads every ordered sink */
}

static int m_claim_ordered(void *b, const char *sink, int64_t after_seq, size_t max,
                    void (*cb)(const px_store_delivery *d, void *arg), void *arg)
{
    return px_store_local_claim_ordered(b, m_claim, sink, after_seq, max, cb, arg);
}

static const px_store_ops memory_ops = {
    .name = "memory",
    .close = m_close,
    .put = m_put,
    .dead_raw = m_dead_raw,
    .mark_done = m_mark_done,
    .mark_retry = m_mark_retry,
    .mark_dead = m_mark_dead,
    .note_crash = m_note_crash,
    .claim = m_claim,
    .pending = m_pending,
    .pending_counts = m_pending_counts,
    .dlq_list = m_dlq_list,
    .dlq_show = m_dlq_show,
    .dlq_count = m_dlq_count,
    .dlq_replay = m_dlq_replay,
    .dlq_purge = m_dlq_purge,
    .kv_get = m_kv_get,
    .kv_set = m_kv_set,
    .get_stats = m_get_stats,
    .writable = m_writable,
    .adopt = m_adopt,
    .leased = m_leased,
    .members = m_members,
    .announce = m_announce,
    .kv_get_versioned = m_kv_get_versioned,
    .kv_cas = m_kv_cas,
    .lock = m_lock,
    .unlock = m_unlock,
    .lead = m_lead,
    .claim_ordered = m_claim_ordered,
};

int px_store_open_memory_shared(uv_loop_t *loop, px_store *with, const px_store_options *opt,
                                px_store **out)
{
    mem_store *s = px_xcalloc(1, sizeof(*s));
    if (opt) {
        s->opt = *opt;
    }
    s->next_id = 1;
    s->dedupe = json_object();
    px_store_local_init(&s->local, opt);
    mem_shared *sh = with ? ms(with->impl)->sh : NULL;
    if (!sh) {
        sh = px_xcalloc(1, sizeof(*sh));
        sh->kv = json_object();
        sh->kv_version = json_object();
        sh->locks = json_object();
    }
    sh->refs++;
    json_decref(s->local.locks);
    s->local.locks = json_incref(sh->locks);
    s->sh = sh;
    mem_store **tail = &sh->hosts;
    while (*tail) {
        tail = &(*tail)->next_host;
    }
    *tail = s;
    s->counts = json_object();
    uv_idle_init(loop, &s->turn);
    s->turn.data = s;
    s->base.ops = &memory_ops;
    s->base.impl = s;
    *out = &s->base;
    return 0;
}

int px_store_open_memory(uv_loop_t *loop, const px_store_options *opt, px_store **out)
{
    return px_store_open_memory_shared(loop, NULL, opt, out);
}
