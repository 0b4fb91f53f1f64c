/* ploomes: incoming webhooks and their registration. A webhook POST is checked (validation key in
 * constant time, size, JSON with Action and Entity), emitted as ploomes.<Entity>.<Action> with
 * the whole body as payload, and answered 200 only once the spool holds it. A registration pass
 * lists the account's webhooks page by page and creates the configured subscriptions that are
 * missing (or fixes a stale validation key), so running it twice changes nothing. Several hosts
 * may run one instance on a shared store: a pass runs under the instance's cluster lock
 * "webhook-sync", so hosts starting at once list and create one after the other, and the later
 * ones find the subscriptions present (one subscription per entity/action, not one per host). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <plexus/sdk.h>

#include "consttime.h"
#include "ploomes_api.h"
#include "ploomes_hooks.h"

#define host ploomes_host
#define MAX_TOKEN 64
#define BUSY_RETRY_AFTER "5"
#define MAX_SYNC_BACKOFF_MS (10 * 60 * 1000)
#define SYNC_LOCK "webhook-sync"
#define SYNC_LOCK_TTL_MS 3000 /* waiting hosts ask again every third of it */

/* A webhook waiting for the spool. */
struct ploomes_ack {
    ploomes *p;            /* borrowed; NULL once the instance is gone (the callback only frees) */
    px_http_request *req;  /* valid until answered */
    ploomes_ack *prev, *next;
};

/* A sync request waiting for the end of a pass. */
struct ploomes_waiter {
    px_http_request *req;
    ploomes_waiter *next;
};

static void respond_json(px_http_request *req, int status, const char *fmt, const char *arg)
{
    char body[512];
    snprintf(body, sizeof(body), fmt, arg ? arg : "");
    host->http_respond(req, status, NULL, body, strlen(body));
}

/* JSON object {"error": msg} with msg escaped. */
static void respond_error(px_http_request *req, int status, const char *msg)
{
    /* A message that is not valid UTF-8 (e.g. relayed from upstream) cannot be packed: answer
     * with the status and a fixed reason rather than a NULL body. */
    json_t *j = json_pack("{s:s}", "error", msg ? msg : "");
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    const char *body = text ? text : "{\"error\":\"request refused\"}";
    host->http_respond(req, status, NULL, body, strlen(body));
    free(text);
    json_decref(j);
}

/* Checks the validation key header; answers 401 and returns 0 when it is missing or wrong. */
static int authorized(ploomes *p, px_http_request *req, const char *what)
{
    const char *got = host->http_req_header(req, "X-Ploomes-Validation-Key");
    const char *why = NULL;
    if (!got) {
        why = "missing_key";
    } else if (!px_ct_streq(got, p->validation_key)) {
        why = "wrong_key";
    }
    if (!why) {
        return 1;
    }
    char labels[64];
    snprintf(labels, sizeof(labels), "reason=\"%s\"", why);
    host->counter_add(p->ctx, "webhooks_refused", labels, 1);
    host->log(p->ctx, PX_LOG_WARN, "%s refused reason=%s path=%s", what, why,
              host->http_req_path(req));
    respond_error(req, 401,
                  got ? "invalid X-Ploomes-Validation-Key" : "missing X-Ploomes-Validation-Key");
    return 0;
}

static void refuse(ploomes *p, px_http_request *req, int status, const char *why, const char *msg)
{
    char labels[64];
    snprintf(labels, sizeof(labels), "reason=\"%s\"", why);
    host->counter_add(p->ctx, "webhooks_refused", labels, 1);
    host->log(p->ctx, PX_LOG_WARN, "webhook refused reason=%s detail=\"%s\"", why, msg);
    respond_error(req, status, msg);
}

/* A name safe inside an event type: letters, digits, '_' and '-', 1..MAX_TOKEN long. */
static int token_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        if (!isalnum((unsigned char)s[n]) && s[n] != '_' && s[n] != '-') {
            return 0;
        }
    }
    return n > 0 && n <= MAX_TOKEN;
}

static void on_persisted(int status, void *arg)
{
    ploomes_ack *a = arg;
    ploomes *p = a->p;
    if (!p) {
        free(a); /* the host already answered the request when the instance went away */
        return;
    }
    if (a->prev) {
        a->prev->next = a->next;
    } else {
        p->acks = a->next;
    }
    if (a->next) {
        a->next->prev = a->prev;
    }
    if (status == PX_OK) {
        host->counter_add(p->ctx, "webhooks_accepted", NULL, 1);
        respond_json(a->req, 200, "{\"status\":\"accepted\"}", NULL);
    } else {
        host->counter_add(p->ctx, "webhooks_refused", "reason=\"busy\"", 1);
        host->log(p->ctx, PX_LOG_WARN, "webhook not persisted status=%d, asking for a retry",
                  status);
        host->http_set_header(a->req, "Retry-After", BUSY_RETRY_AFTER);
        respond_error(a->req, 503, "busy, retry later");
    }
    free(a);
}

/* Subject for logs: "<Entity> <id>" from New.Id, else Old.Id. */
static void set_subject(px_event *ev, const char *entity, const json_t *body)
{
    json_t *id = json_object_get(json_object_get(body, "New"), "Id");
    if (!json_is_integer(id)) {
        id = json_object_get(json_object_get(body, "Old"), "Id");
    }
    if (json_is_integer(id)) {
        char subject[MAX_TOKEN + 32];
        snprintf(subject, sizeof(subject), "%s %lld", entity, (long long)json_integer_value(id));
        host->event_set(ev, PX_EVENT_SUBJECT, subject);
    }
}

static void set_meta_int(px_event *ev, const char *key, const json_t *v)
{
    if (json_is_integer(v)) {
        char text[32];
        snprintf(text, sizeof(text), "%lld", (long long)json_integer_value(v));
        host->event_set_meta(ev, key, text);
    }
}

static void on_webhook(px_http_request *req, void *arg)
{
    ploomes *p = arg;
    if (!authorized(p, req, "webhook")) {
        return;
    }
    if (p->stopping) {
        host->http_set_header(req, "Retry-After", BUSY_RETRY_AFTER);
        respond_error(req, 503, "stopping, retry later");
        return;
    }
    size_t len = 0;
    const char *body = host->http_req_body(req, &len);
    if ((int64_t)len > p->max_body) {
        refuse(p, req, 413, "too_large", "body too large");
        return;
    }
    json_error_t jerr;
    json_t *j = json_loadb(body ? body : "", len, 0, &jerr);
    char msg[256];
    if (!j) {
        snprintf(msg, sizeof(msg), "invalid JSON at line %d column %d: %s", jerr.line,
                 jerr.column, jerr.text);
        refuse(p, req, 400, "bad_json", msg);
        return;
    }
    const char *action = json_string_value(json_object_get(j, "Action"));
    const char *entity = json_string_value(json_object_get(j, "Entity"));
    const char *bad = NULL;
    if (!json_is_object(j)) {
        bad = "payload must be a JSON object";
    } else if (!action || !entity) {
        bad = "payload needs string fields Action and Entity";
    } else if (!token_ok(action) || !token_ok(entity)) {
        bad = "Action and Entity must be 1-64 letters, digits, '_' or '-'";
    }
    if (bad) {
        refuse(p, req, 400, "bad_payload", bad);
        json_decref(j);
        return;
    }
    char type[2 * MAX_TOKEN + 16];
    snprintf(type, sizeof(type), "ploomes.%s.%s", entity, action);
    px_event *ev = host->event_create(p->ctx, type, json_incref(j));
    if (!ev) {
        json_decref(j);
        respond_error(req, 500, "cannot create event");
        return;
    }
    set_subject(ev, entity, j);
    set_meta_int(ev, "account_id", json_object_get(j, "AccountId"));
    set_meta_int(ev, "action_user_id", json_object_get(j, "ActionUserId"));
    json_decref(j);
    ploomes_ack *a = px_xcalloc(1, sizeof(*a));
    a->p = p;
    a->req = req;
    a->next = p->acks;
    if (p->acks) {
        p->acks->prev = a;
    }
    p->acks = a;
    int rc = host->emit(p->ctx, ev, on_persisted, a);
    if (rc < 0) {
        /* cb will not run: answer now so Ploomes tries again later. */
        on_persisted(rc, a);
    }
}

/* --------------------------------------------------------------------------------------- */
/* Registration */

static void sync_step(ploomes *p);
static void sync_end(ploomes *p, int ok, const char *why);
static void list_page(ploomes *p);

/* Queues a call of the pass; ends the pass when it cannot be queued. */
static void sync_call(ploomes *p, const char *method, const char *path, const json_t *body,
                      ploomes_call_cb cb, void *arg)
{
    if (ploomes_call_start(p, method, path, body, cb, arg) < 0) {
        sync_end(p, 0, "cannot call the API now");
    }
}

static void answer_waiters(ploomes_waiter **list, int status, const char *body)
{
    ploomes_waiter *w = *list;
    *list = NULL;
    while (w) {
        ploomes_waiter *next = w->next;
        host->http_respond(w->req, status, NULL, body, strlen(body));
        free(w);
        w = next;
    }
}

static void on_retry_timer(void *arg)
{
    ploomes *p = arg;
    host->timer_stop(p->sync.retry);
    p->sync.retry = NULL;
    ploomes_sync_start(p);
}

/* Ends the running pass: ok, or failed because of `why` (then retried with backoff). */
static void sync_end(ploomes *p, int ok, const char *why)
{
    ploomes_sync *s = &p->sync;
    s->running = 0;
    if (s->locked) {
        s->locked = 0;
        host->lock_release(p->ctx, SYNC_LOCK);
    }
    json_decref(s->hooks);
    s->hooks = NULL;
    if (p->stopping) {
        answer_waiters(&s->waiting, 503, "{\"error\":\"stopping\"}");
        answer_waiters(&s->next_waiting, 503, "{\"error\":\"stopping\"}");
        return;
    }
    json_t *summary;
    if (ok) {
        s->failures = 0;
        host->log(p->ctx, PX_LOG_INFO,
                  "webhooks in sync created=%d updated=%d present=%d unresolved=%d", s->created,
                  s->updated, s->present, s->unresolved);
        summary = json_pack("{s:b, s:i, s:i, s:i, s:i}", "ok", 1, "created", s->created,
                            "updated", s->updated, "present", s->present, "unresolved",
                            s->unresolved);
    } else {
        uint64_t delay = (uint64_t)p->sync_retry_ms;
        for (unsigned i = 0; i < s->failures && delay < MAX_SYNC_BACKOFF_MS; i++) {
            delay *= 2;
        }
        if (delay > MAX_SYNC_BACKOFF_MS) {
            delay = MAX_SYNC_BACKOFF_MS;
        }
        if (s->retry_hint_ms > delay) {
            delay = s->retry_hint_ms;
        }
        s->failures++;
        host->counter_add(p->ctx, "webhook_sync_failures", NULL, 1);
        host->log(p->ctx, PX_LOG_WARN, "webhook sync failed attempt=%u retry_in_ms=%llu: %s",
                  s->failures, (unsigned long long)delay, why);
        if (!s->retry && !s->again) {
            host->timer_start(p->ctx, delay, 0, on_retry_timer, p, &s->retry);
        }
        summary = json_pack("{s:b, s:s, s:i, s:i}", "ok", 0, "error", why, "created", s->created,
                            "updated", s->updated);
    }
    if (!summary) { /* `why` quoted an API message that is not UTF-8 */
        summary = json_pack("{s:b, s:s}", "ok", 0, "error", "webhook sync failed");
    }
    char *text = json_dumps(summary, JSON_COMPACT);
    answer_waiters(&s->waiting, ok ? 200 : 502, text);
    free(text);
    json_decref(summary);
    if (s->again) {
        s->again = 0;
        s->waiting = s->next_waiting;
        s->next_waiting = NULL;
        ploomes_sync_start(p);
    }
}

/* Fails the pass on a non-2xx answer. Returns 1 when the answer was a success. */
static int call_ok(ploomes *p, const char *step, int status, const px_http_response *resp,
                   const char *error)
{
    if (status >= 200 && status < 300) {
        return 1;
    }
    char why[400];
    if (status < 0) {
        snprintf(why, sizeof(why), "%s: %s", step, error);
    } else {
        size_t len = 0;
        const char *body = host->http_resp_body(resp, &len);
        char *msg = ploomes_error_message(body, len);
        snprintf(why, sizeof(why), "%s: http %d: %s", step, status, msg);
        free(msg);
        if (status == 429) {
            p->sync.retry_hint_ms =
                ploomes_retry_after(host->http_resp_header(resp, "Retry-After"));
        }
    }
    sync_end(p, 0, why);
    return 0;
}

static json_t *response_json(const px_http_response *resp)
{
    size_t len = 0;
    const char *body = host->http_resp_body(resp, &len);
    return body && len ? json_loadb(body, len, 0, NULL) : NULL;
}

static void lower_copy(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    for (; src[i] && i + 1 < cap; i++) {
        dst[i] = (char)tolower((unsigned char)src[i]);
    }
    dst[i] = '\0';
}

static void on_actions(ploomes *p, int status, const px_http_response *resp, const char *error,
                       void *arg)
{
    if (p->stopping) {
        sync_end(p, 0, "stopped");
        return;
    }
    ploomes_sync *s = &p->sync;
    if (status == 404 || status == 400 || status == 405) {
        /* No lookup on this server: the documented ids will do. */
        s->actions = json_object();
    } else if (!call_ok(p, "list actions", status, resp, error)) {
        return;
    } else {
        json_t *j = response_json(resp);
        json_t *list = json_is_array(json_object_get(j, "value")) ? json_object_get(j, "value") : j;
        s->actions = json_object();
        size_t i;
        json_t *it;
        json_array_foreach(list, i, it) {
            json_t *id = json_object_get(it, "Id");
            const char *name = json_string_value(json_object_get(it, "Name"));
            if (json_is_integer(id) && name) {
                char key[MAX_TOKEN + 1];
                lower_copy(key, sizeof(key), name);
                json_object_set(s->actions, key, id);
            }
        }
        json_decref(j);
    }
    s->skip = 0;
    list_page(p);
}

/* Id of a subscription's action: configured action_ids, then /Webhooks@Actions, then the
 * documented ids (Create 1, Update 2, Delete 3, Win 4, Lose 5). 0 = unknown. */
static int64_t action_id(ploomes *p, const char *name)
{
    char *end;
    long long v = strtoll(name, &end, 10);
    if (!*end && v > 0) {
        return v;
    }
    const char *key;
    json_t *val;
    json_object_foreach(p->action_ids, key, val) {
        if (strcasecmp(key, name) == 0 && json_is_integer(val)) {
            return (int64_t)json_integer_value(val);
        }
    }
    char lower[MAX_TOKEN + 1];
    lower_copy(lower, sizeof(lower), name);
    json_t *got = json_object_get(p->sync.actions, lower);
    if (json_is_integer(got)) {
        return (int64_t)json_integer_value(got);
    }
    static const char *const known[] = {"create", "update", "delete", "win", "lose"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (strcmp(lower, known[i]) == 0) {
            return (int64_t)i + 1;
        }
    }
    return 0;
}

/* True when some subscription's action is a name that the configuration does not map. */
static int needs_lookup(ploomes *p)
{
    for (size_t i = 0; i < p->nsubs; i++) {
        const char *name = p->subs[i].action;
        if (strspn(name, "0123456789") == strlen(name)) {
            continue;
        }
        int mapped = 0;
        const char *key;
        json_t *val;
        json_object_foreach(p->action_ids, key, val) {
            mapped |= strcasecmp(key, name) == 0 && json_is_integer(val);
        }
        if (!mapped) {
            return 1;
        }
    }
    return 0;
}

static void on_list(ploomes *p, int status, const px_http_response *resp, const char *error,
                    void *arg)
{
    if (p->stopping) {
        sync_end(p, 0, "stopped");
        return;
    }
    if (!call_ok(p, "list webhooks", status, resp, error)) {
        return;
    }
    ploomes_sync *s = &p->sync;
    json_t *j = response_json(resp);
    json_t *list = json_is_array(json_object_get(j, "value")) ? json_object_get(j, "value") : j;
    if (!json_is_array(list)) {
        json_decref(j);
        sync_end(p, 0, "list webhooks: answer is not {\"value\": [...]}");
        return;
    }
    size_t n = json_array_size(list);
    json_array_extend(s->hooks, list);
    json_decref(j);
    s->skip += (int64_t)n;
    if ((int64_t)n >= p->page_size && s->skip < 100000) {
        list_page(p);
        return;
    }
    s->idx = 0;
    sync_step(p);
}

static void list_page(ploomes *p)
{
    char path[96];
    /* OData options with '$' percent-encoded, as the API expects in a query string. */
    snprintf(path, sizeof(path), "/Webhooks?%%24top=%lld&%%24skip=%lld", (long long)p->page_size,
             (long long)p->sync.skip);
    sync_call(p, "GET", path, NULL, on_list, NULL);
}

static void on_written(ploomes *p, int status, const px_http_response *resp, const char *error,
                       void *arg)
{
    if (p->stopping) {
        sync_end(p, 0, "stopped");
        return;
    }
    ploomes_sync *s = &p->sync;
    ploomes_sub *sub = &p->subs[s->idx];
    int created = arg != NULL;
    char step[160];
    snprintf(step, sizeof(step), "%s webhook %s", created ? "create" : "update", sub->text);
    if (!call_ok(p, step, status, resp, error)) {
        return;
    }
    host->log(p->ctx, PX_LOG_INFO, "webhook %s subscription=%s entity_id=%lld action_id=%lld",
              created ? "created" : "updated", sub->text, (long long)sub->entity_id,
              (long long)sub->action_id);
    if (created) {
        s->created++;
    } else {
        s->updated++;
    }
    s->idx++;
    sync_step(p);
}

static int int_eq(const json_t *v, int64_t want)
{
    return json_is_integer(v) && (int64_t)json_integer_value(v) == want;
}

/* Reconciles subscriptions from s->idx on; at most one write in flight. */
static void sync_step(ploomes *p)
{
    ploomes_sync *s = &p->sync;
    for (; s->idx < p->nsubs; s->idx++) {
        ploomes_sub *sub = &p->subs[s->idx];
        sub->action_id = action_id(p, sub->action);
        if (!sub->action_id) {
            s->unresolved++;
            host->log(p->ctx, PX_LOG_ERROR,
                      "subscription %s: unknown action %s; map it in action_ids", sub->text,
                      sub->action);
            continue;
        }
        json_t *found = NULL, *h;
        size_t i;
        json_array_foreach(s->hooks, i, h) {
            const char *url = json_string_value(json_object_get(h, "CallbackUrl"));
            if (int_eq(json_object_get(h, "EntityId"), sub->entity_id) &&
                int_eq(json_object_get(h, "ActionId"), sub->action_id) && url &&
                strcmp(url, p->callback_url) == 0) {
                found = h;
                /* Prefer one whose key is already right, if there are several. */
                const char *k = json_string_value(json_object_get(h, "ValidationKey"));
                if (!k || strcmp(k, p->validation_key) == 0) {
                    break;
                }
            }
        }
        if (found) {
            const char *k = json_string_value(json_object_get(found, "ValidationKey"));
            json_t *id = json_object_get(found, "Id");
            if (!k || strcmp(k, p->validation_key) == 0 || !json_is_integer(id)) {
                s->present++;
                continue;
            }
            char path[64];
            snprintf(path, sizeof(path), "/Webhooks(%lld)", (long long)json_integer_value(id));
            json_t *body = json_pack("{s:s}", "ValidationKey", p->validation_key);
            sync_call(p, "PATCH", path, body, on_written, NULL);
            json_decref(body);
            return;
        }
        json_t *body = json_pack("{s:I, s:I, s:s, s:s}", "EntityId", (json_int_t)sub->entity_id,
                                 "ActionId", (json_int_t)sub->action_id, "CallbackUrl",
                                 p->callback_url, "ValidationKey", p->validation_key);
        sync_call(p, "POST", "/Webhooks", body, on_written, (void *)1);
        json_decref(body);
        return;
    }
    sync_end(p, 1, NULL);
}

/* The cluster lock answered: with it held, run the pass (listing what another host may just
 * have created). Losing it mid-pass stops nothing in flight; the pass ends as it would. */
static void on_sync_lock(void *arg, int status)
{
    ploomes *p = arg;
    ploomes_sync *s = &p->sync;
    if (status != PX_OK || !s->running || s->locked) {
        return;
    }
    s->locked = 1;
    if (p->stopping) {
        sync_end(p, 0, "stopping");
        return;
    }
    s->created = s->updated = s->present = s->unresolved = 0;
    s->retry_hint_ms = 0;
    s->skip = 0;
    json_decref(s->hooks);
    s->hooks = json_array();
    if (!s->actions && needs_lookup(p)) {
        sync_call(p, "GET", "/Webhooks@Actions", NULL, on_actions, NULL);
        return;
    }
    list_page(p);
}

void ploomes_sync_start(ploomes *p)
{
    ploomes_sync *s = &p->sync;
    if (p->stopping || p->nsubs == 0) {
        return;
    }
    if (s->running) {
        s->again = 1;
        return;
    }
    if (s->retry) {
        host->timer_stop(s->retry);
        s->retry = NULL;
    }
    s->running = 1;
    int rc = host->lock_acquire(p->ctx, SYNC_LOCK, SYNC_LOCK_TTL_MS, on_sync_lock, p);
    if (rc < 0) {
        sync_end(p, 0, "cannot ask for the cluster lock");
    }
}

static void on_sync_request(px_http_request *req, void *arg)
{
    ploomes *p = arg;
    if (!authorized(p, req, "sync request")) {
        return;
    }
    if (p->nsubs == 0) {
        respond_error(req, 400, "no subscriptions configured");
        return;
    }
    if (p->stopping) {
        respond_error(req, 503, "stopping");
        return;
    }
    ploomes_waiter *w = px_xcalloc(1, sizeof(*w));
    w->req = req;
    ploomes_waiter **list = p->sync.running ? &p->sync.next_waiting : &p->sync.waiting;
    w->next = *list;
    *list = w;
    host->log(p->ctx, PX_LOG_INFO, "webhook sync requested");
    ploomes_sync_start(p);
}

int ploomes_hooks_route(ploomes *p)
{
    int rc = host->http_route(p->ctx, "POST", p->path, 0, on_webhook, p);
    if (rc == 0) {
        rc = host->http_route(p->ctx, "POST", p->sync_path, 0, on_sync_request, p);
    }
    if (rc < 0) {
        host->log(p->ctx, PX_LOG_ERROR,
                  "cannot route path=%s rc=%d (the webhook needs host.http.listen)", p->path, rc);
    }
    return rc;
}

void ploomes_hooks_stop(ploomes *p)
{
    ploomes_sync *s = &p->sync;
    if (s->retry) {
        host->timer_stop(s->retry);
        s->retry = NULL;
    }
    s->again = 0;
    answer_waiters(&s->next_waiting, 503, "{\"error\":\"stopping\"}");
    if (s->running && !s->locked) {
        /* Only waiting for the lock: give it up; no pass runs. */
        host->lock_release(p->ctx, SYNC_LOCK);
        s->running = 0;
    }
    if (!s->running) {
        answer_waiters(&s->waiting, 503, "{\"error\":\"stopping\"}");
    }
}

void ploomes_hooks_destroy(ploomes *p)
{
    ploomes_sync *s = &p->sync;
    answer_waiters(&s->waiting, 503, "{\"error\":\"stopping\"}");
    answer_waiters(&s->next_waiting, 503, "{\"error\":\"stopping\"}");
    json_decref(s->hooks);
    s->hooks = NULL;
    json_decref(s->actions);
    s->actions = NULL;
    for (ploomes_ack *a = p->acks; a; a = a->next) {
        a->p = NULL;
    }
    p->acks = NULL;
}
