/* ploomes: outgoing calls to the Ploomes REST API. Every call carries the User-Key header and
 * waits its turn in one FIFO per instance: calls start at least 60000/rate_limit ms apart (the
 * account allows 120 per minute), and a 429 pauses the queue for its Retry-After. The sink
 * actions map a delivery to one call and its answer to done / retry / reject. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <plexus/sdk.h>

#include "ploomes_api.h"
#include "url.h"

#define host ploomes_host

struct ploomes_call {
    ploomes *p;         /* borrowed; NULL once the instance is gone (the callback only frees) */
    char *method;       /* owned */
    char *url;          /* owned */
    char *body;         /* owned; NULL = none */
    ploomes_call_cb cb; /* API users other than the sink */
    void *arg;
    px_delivery *d;     /* sink calls: the delivery to complete, NULL otherwise */
    const char *action; /* sink calls: static action name, for logs */
    int64_t id;         /* sink calls: the entity id in the path, 0 = none */
    uint64_t retry_ms;  /* after a 429: the wait it asked for */
    px_http_call *hc;   /* owned by the host while active */
    ploomes_call *prev, *next;
};

static void call_free(ploomes_call *c)
{
    free(c->method);
    free(c->url);
    free(c->body);
    free(c);
}

/* Appends c to a list with a tail pointer, or pushes it in front when tail is NULL. */
static void list_push(ploomes_call **head, ploomes_call **tail, ploomes_call *c)
{
    if (tail) {
        c->next = NULL;
        c->prev = *tail;
        if (*tail) {
            (*tail)->next = c;
        } else {
            *head = c;
        }
        *tail = c;
        return;
    }
    c->prev = NULL;
    c->next = *head;
    if (*head) {
        (*head)->prev = c;
    }
    *head = c;
}

static void list_remove(ploomes_call **head, ploomes_call **tail, ploomes_call *c)
{
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        *head = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    } else if (tail) {
        *tail = c->prev;
    }
    c->prev = c->next = NULL;
}

/* --------------------------------------------------------------------------------------- */
/* Response helpers */

uint64_t ploomes_retry_after(const char *value)
{
    if (!value) {
        return 0;
    }
    while (*value == ' ') {
        value++;
    }
    if (isdigit((unsigned char)*value)) {
        char *end;
        unsigned long long s = strtoull(value, &end, 10);
        while (*end == ' ') {
            end++;
        }
        if (*end) {
            return 0;
        }
        if (s > 86400) {
            s = 86400;
        }
        return (uint64_t)s * 1000;
    }
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end) {
        return 0;
    }
    time_t at = timegm(&tm), now = time(NULL);
    if (at <= now) {
        return 1; /* already past: retry at once, but as a retry-after */
    }
    return (uint64_t)(at - now > 86400 ? 86400 : at - now) * 1000;
}

/* Copies at most `max` bytes of text into a new string, blanks for control characters. */
static char *clean_text(const char *s, size_t len, size_t max)
{
    if (len > max) {
        len = max;
    }
    char *out = px_xcalloc(1, len + 1);
    for (size_t i = 0; i < len; i++) {
        out[i] = (unsigned char)s[i] < 0x20 ? ' ' : s[i];
    }
    return out;
}

char *ploomes_error_message(const char *body, size_t len)
{
    if (!body || len == 0) {
        return px_xstrdup("(empty body)");
    }
    json_t *j = json_loadb(body, len, 0, NULL);
    const char *msg = NULL;
    if (json_is_object(j)) {
        json_t *e = json_object_get(j, "error");
        static const char *const keys[] = {"message", "Message", "error_description", "detail"};
        if (json_is_object(e)) {
            msg = json_string_value(json_object_get(e, "message"));
            if (!msg) {
                msg = json_string_value(json_object_get(e, "Message"));
            }
        } else if (json_is_string(e)) {
            msg = json_string_value(e);
        }
        for (size_t i = 0; !msg && i < sizeof(keys) / sizeof(keys[0]); i++) {
            msg = json_string_value(json_object_get(j, keys[i]));
        }
    }
    char *out = msg ? clean_text(msg, strlen(msg), 300) : clean_text(body, len, 300);
    json_decref(j);
    return out;
}

/* Id of the created/updated entity: {"value": [{"Id": n}]} or {"Id": n}; 0 when none. */
static int64_t response_id(const px_http_response *resp)
{
    size_t len = 0;
    const char *body = host->http_resp_body(resp, &len);
    if (!body || len == 0) {
        return 0;
    }
    json_t *j = json_loadb(body, len, 0, NULL);
    json_t *e = j;
    if (json_is_object(j) && json_is_array(json_object_get(j, "value"))) {
        e = json_array_get(json_object_get(j, "value"), 0);
    } else if (json_is_array(j)) {
        e = json_array_get(j, 0);
    }
    json_t *id = json_object_get(e, "Id");
    int64_t v = json_is_integer(id) ? (int64_t)json_integer_value(id) : 0;
    json_decref(j);
    return v;
}

/* --------------------------------------------------------------------------------------- */
/* Queue and rate limiter */

static void pump(ploomes *p);

static void on_pump(void *arg)
{
    ploomes *p = arg;
    host->timer_stop(p->pump);
    p->pump = NULL;
    pump(p);
}

/* Wakes the queue in `us` microseconds (sooner wins over a later wake-up already set). */
static void wake(ploomes *p, int64_t us)
{
    if (p->pump) {
        host->timer_stop(p->pump);
        p->pump = NULL;
    }
    uint64_t ms = us <= 0 ? 0 : (uint64_t)((us + 999) / 1000);
    if (host->timer_start(p->ctx, ms, 0, on_pump, p, &p->pump) < 0) {
        p->pump = NULL;
    }
}

static void on_http(int status, const px_http_response *resp, const char *error, void *arg);

static void end_call(ploomes_call *c, int status, const px_http_response *resp, const char *error);

static void start_call(ploomes *p, ploomes_call *c)
{
    size_t klen = strlen(p->user_key) + sizeof("User-Key: ");
    char *key_header = px_xcalloc(1, klen);
    snprintf(key_header, klen, "User-Key: %s", p->user_key);
    const char *headers[] = {key_header, "Accept: application/json",
                             c->body ? "Content-Type: application/json" : NULL, NULL};
    px_http_options o = {
        .size = sizeof(o),
        .method = c->method,
        .url = c->url,
        .headers = headers,
        .body = c->body,
        .body_len = c->body ? strlen(c->body) : 0,
        .timeout_ms = (uint32_t)p->timeout_ms,
    };
    int rc = host->http_request(p->ctx, &o, on_http, c, &c->hc);
    memset(key_header, 0, klen);
    free(key_header);
    if (rc < 0) {
        c->hc = NULL;
        end_call(c, rc, NULL, "request not started");
    }
}

static void pump(ploomes *p)
{
    while (p->queue_head) {
        int64_t now = ploomes_now_us();
        int64_t at = p->next_start_us > p->paused_until_us ? p->next_start_us : p->paused_until_us;
        if (now < at) {
            wake(p, at - now);
            return;
        }
        ploomes_call *c = p->queue_head;
        list_remove(&p->queue_head, &p->queue_tail, c);
        list_push(&p->active, NULL, c);
        p->next_start_us = p->rate_limit > 0 ? now + 60000000 / p->rate_limit : now;
        /* The limiter's schedule as it decided it (monotonic clock), for tests and debugging. */
        host->log(p->ctx, PX_LOG_DEBUG, "ploomes call start method=%s at_us=%lld next_us=%lld",
                  c->method, (long long)now, (long long)p->next_start_us);
        start_call(p, c);
    }
}

static ploomes_call *call_new(ploomes *p, const char *method, const char *path, const json_t *body)
{
    ploomes_call *c = px_xcalloc(1, sizeof(*c));
    c->p = p;
    c->method = px_xstrdup(method);
    size_t n = strlen(p->base_url) + strlen(path) + 1;
    c->url = px_xcalloc(1, n);
    snprintf(c->url, n, "%s%s", p->base_url, path);
    if (body) {
        c->body = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    }
    return c;
}

static void enqueue(ploomes *p, ploomes_call *c)
{
    list_push(&p->queue_head, &p->queue_tail, c);
    if (!p->pump) {
        wake(p, 0); /* start from the loop, never inside the caller */
    }
}

int ploomes_call_start(ploomes *p, const char *method, const char *path, const json_t *body,
                       ploomes_call_cb cb, void *arg)
{
    if (!p->user_key || p->stopping) {
        return PX_ESTATE;
    }
    ploomes_call *c = call_new(p, method, path, body);
    c->cb = cb;
    c->arg = arg;
    enqueue(p, c);
    return 0;
}

static const char *status_class(int status)
{
    if (status < 0) {
        return "status=\"error\"";
    } else if (status == 429) {
        return "status=\"429\"";
    } else if (status < 300) {
        return "status=\"2xx\"";
    } else if (status < 500) {
        return "status=\"4xx\"";
    }
    return "status=\"5xx\"";
}

static void finish_delivery(ploomes *p, ploomes_call *c, int status, const px_http_response *resp,
                            const char *error);

static void end_call(ploomes_call *c, int status, const px_http_response *resp, const char *error)
{
    ploomes *p = c->p;
    list_remove(&p->active, NULL, c);
    host->counter_add(p->ctx, "api_requests", status_class(status), 1);
    if (status == 429) {
        c->retry_ms = ploomes_retry_after(host->http_resp_header(resp, "Retry-After"));
        if (!c->retry_ms) {
            c->retry_ms = p->retry_after_ms > 0 ? (uint64_t)p->retry_after_ms : 1000;
        }
        int64_t until = ploomes_now_us() + (int64_t)c->retry_ms * 1000;
        if (until > p->paused_until_us) {
            p->paused_until_us = until;
        }
        host->log(p->ctx, PX_LOG_WARN, "rate limited by ploomes method=%s retry_in_ms=%llu",
                  c->method, (unsigned long long)c->retry_ms);
    }
    if (c->d) {
        finish_delivery(p, c, status, resp, error);
    } else if (c->cb) {
        c->cb(p, status, resp, error, c->arg);
    }
    call_free(c);
    if (p->queue_head && !p->pump) {
        wake(p, 0);
    }
    p->call_ended(p);
}

static void on_http(int status, const px_http_response *resp, const char *error, void *arg)
{
    ploomes_call *c = arg;
    c->hc = NULL;
    if (!c->p) {
        call_free(c); /* the instance went away while this call was in flight */
        return;
    }
    end_call(c, status, resp, error ? error : "no answer");
}

void ploomes_api_stop(ploomes *p)
{
    /* Calls in flight finish (drain waits for deliveries; registration calls are cancelled).
     * Calls still waiting for the rate limiter are given back now: with a slow limit they could
     * wait longer than any drain, and the host keeps the deliveries for the next generation.
     * A pause the server asked for (429) goes with them; the limiter's own spacing does not. */
    int64_t now = ploomes_now_us();
    int64_t at = p->paused_until_us;
    uint64_t wait_ms = at > now ? (uint64_t)((at - now + 999) / 1000) : 0;
    ploomes_call *c;
    while ((c = p->queue_head)) {
        list_remove(&p->queue_head, &p->queue_tail, c);
        if (c->d) {
            host->complete(c->d, PX_ERETRY, "instance stopping before the call", wait_ms);
        } else if (c->cb) {
            c->cb(p, PX_ESTATE, NULL, "stopped", c->arg);
        }
        call_free(c);
    }
    if (p->pump) {
        host->timer_stop(p->pump);
        p->pump = NULL;
    }
    for (c = p->active; c; c = c->next) {
        if (!c->d && c->hc) {
            host->http_cancel(c->hc);
        }
    }
}

int ploomes_api_idle(ploomes *p)
{
    return !p->queue_head && !p->active;
}

void ploomes_api_destroy(ploomes *p)
{
    if (p->pump) {
        host->timer_stop(p->pump);
        p->pump = NULL;
    }
    while (p->queue_head) {
        ploomes_call *c = p->queue_head;
        list_remove(&p->queue_head, &p->queue_tail, c);
        if (c->d) {
            host->complete(c->d, PX_ERETRY, "instance stopped before the call", 0);
        }
        call_free(c);
    }
    while (p->active) {
        ploomes_call *c = p->active;
        list_remove(&p->active, NULL, c);
        if (c->d) {
            host->complete(c->d, PX_ERETRY, "instance stopped during the call", 0);
            c->d = NULL;
        }
        c->p = NULL;
        if (c->hc) {
            host->http_cancel(c->hc); /* on_http frees c */
        } else {
            call_free(c);
        }
    }
}

/* --------------------------------------------------------------------------------------- */
/* Sink actions */

typedef struct action_def {
    const char *name;
    const char *method;
    const char *entity;
    int needs_id;
    const char *suffix;
} action_def;

static const action_def actions[] = {
    {"create_contact", "POST", "Contacts", 0, ""},
    {"update_contact", "PATCH", "Contacts", 1, ""},
    {"create_deal", "POST", "Deals", 0, ""},
    {"update_deal", "PATCH", "Deals", 1, ""},
    {"win_deal", "POST", "Deals", 1, "/Win"},
    {"lose_deal", "POST", "Deals", 1, "/Lose"},
    {"reopen_deal", "POST", "Deals", 1, "/Reopen"},
};

static void finish_delivery(ploomes *p, ploomes_call *c, int status, const px_http_response *resp,
                            const char *error)
{
    char reason[512];
    px_delivery *d = c->d;
    c->d = NULL;
    if (status < 0) {
        snprintf(reason, sizeof(reason), "request failed: %s", error);
        host->complete(d, PX_ERETRY, reason, 0);
        return;
    }
    if (status >= 200 && status < 300) {
        int64_t id = response_id(resp);
        if (!id) {
            id = c->id;
        }
        if (id) {
            snprintf(reason, sizeof(reason), "id=%lld", (long long)id);
        } else {
            snprintf(reason, sizeof(reason), "status=%d", status);
        }
        host->log(p->ctx, PX_LOG_DEBUG, "ploomes call done action=%s status=%d %s", c->action,
                  status, reason);
        host->complete(d, PX_OK, reason, 0);
        return;
    }
    if (status == 429) {
        snprintf(reason, sizeof(reason), "rate limited (http 429), retry in %llu ms",
                 (unsigned long long)c->retry_ms);
        host->complete(d, PX_ERETRY, reason, c->retry_ms);
        return;
    }
    size_t len = 0;
    const char *body = host->http_resp_body(resp, &len);
    char *msg = ploomes_error_message(body, len);
    if (status == 401) {
        snprintf(reason, sizeof(reason), "user key refused (http 401): %s", msg);
        host->log(p->ctx, PX_LOG_ERROR, "ploomes refused the user key action=%s", c->action);
        host->complete(d, PX_EREJECT, reason, 0);
    } else if (status == 408 || status >= 500) {
        snprintf(reason, sizeof(reason), "http %d: %s", status, msg);
        host->complete(d, PX_ERETRY, reason, 0);
    } else {
        snprintf(reason, sizeof(reason), "http %d: %s", status, msg);
        host->complete(d, PX_EREJECT, reason, 0);
    }
    free(msg);
}

/* The entity id from params `id` (or `Id`): a positive integer, or a string of digits. Removes
 * it from body. Returns 0 when absent or invalid. */
static int64_t take_id(json_t *body)
{
    const char *key = json_object_get(body, "id") ? "id" : "Id";
    json_t *v = json_object_get(body, key);
    int64_t id = 0;
    if (json_is_integer(v) && json_integer_value(v) > 0) {
        id = (int64_t)json_integer_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = strlen(s);
        if (n > 0 && n <= 18 && strspn(s, "0123456789") == n) {
            id = strtoll(s, NULL, 10);
        }
    }
    if (id > 0) {
        json_object_del(body, key);
    }
    return id;
}

/* Copies a `request` path: must start with '/' (it is appended to base_url, so the key never
 * goes to another host); blanks and other unsafe bytes are percent-encoded. NULL when invalid. */
static char *request_path(const char *in)
{
    if (!in || in[0] != '/' || in[1] == '/') {
        return NULL;
    }
    for (const unsigned char *s = (const unsigned char *)in; *s; s++) {
        if (*s < 0x20 || *s == 0x7f) {
            return NULL;
        }
    }
    /* Kept: the unreserved set and the reserved characters of RFC 3986, and '%' so that a path
     * already encoded stays as it is. Encoded: blanks, bytes >= 0x80 and " < > \ ^ ` { | } */
    size_t n = strlen(in);
    char *out = px_xcalloc(1, n * 3 + 1);
    px_url_encode(in, "!#$%&'()*+,/:;=?@[]", out, n * 3 + 1);
    return out;
}

static int method_ok(const char *m)
{
    static const char *const ok[] = {"GET", "POST", "PATCH", "PUT", "DELETE"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (strcmp(m, ok[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

void ploomes_deliver(void *state, px_delivery *d)
{
    ploomes *p = state;
    const char *action = host->delivery_action(d);
    json_t *params = host->delivery_params(d);
    char reason[256];
    if (!p->user_key) {
        host->complete(d, PX_EREJECT, "no user_key configured for this instance", 0);
        return;
    }
    if (p->stopping) {
        host->complete(d, PX_ERETRY, "instance stopping", 0);
        return;
    }
    if (!json_is_object(params)) {
        host->complete(d, PX_EREJECT, "with: must be an object", 0);
        return;
    }
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
        const action_def *a = &actions[i];
        if (strcmp(action, a->name) != 0) {
            continue;
        }
        json_t *body = json_copy(params);
        int64_t id = 0;
        char path[128];
        if (a->needs_id) {
            id = take_id(body);
            if (!id) {
                json_decref(body);
                snprintf(reason, sizeof(reason),
                         "%s needs with.id, the numeric id of the %s entity", a->name, a->entity);
                host->complete(d, PX_EREJECT, reason, 0);
                return;
            }
            snprintf(path, sizeof(path), "/%s(%lld)%s", a->entity, (long long)id, a->suffix);
        } else {
            snprintf(path, sizeof(path), "/%s", a->entity);
        }
        ploomes_call *c = call_new(p, a->method, path, body);
        json_decref(body);
        c->d = d;
        c->action = a->name;
        c->id = id;
        enqueue(p, c);
        return;
    }
    if (strcmp(action, "request") == 0) {
        const char *method = json_string_value(json_object_get(params, "method"));
        json_t *body = json_object_get(params, "body");
        if (json_is_null(body)) {
            body = NULL;
        }
        if (!method) {
            method = body ? "POST" : "GET";
        }
        char *path = request_path(json_string_value(json_object_get(params, "path")));
        if (!path || !method_ok(method)) {
            free(path);
            host->complete(d, PX_EREJECT,
                           "request needs with.path starting with '/' and with.method GET, POST, "
                           "PATCH, PUT or DELETE",
                           0);
            return;
        }
        ploomes_call *c = call_new(p, method, path, body);
        free(path);
        c->d = d;
        c->action = "request";
        enqueue(p, c);
        return;
    }
    snprintf(reason, sizeof(reason),
             "unknown action \"%.64s\" (create_contact, update_contact, create_deal, update_deal, "
             "win_deal, lose_deal, reopen_deal, request)",
             action);
    host->complete(d, PX_EREJECT, reason, 0);
}
