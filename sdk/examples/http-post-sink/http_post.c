/* http_post: a Plexus sink that POSTs each delivery as JSON to a configured URL.
 *
 * A third-party plugin built only against the installed SDK (<plexus/sdk.h> + jansson): see
 * README.md. The body is the pipeline's mapped `with` (params) or, without one, an envelope of the
 * event ({"id", "type", "source", "time_ms", "payload"}). The answer decides the delivery:
 *   2xx                      PX_OK
 *   408, 429, 5xx, no answer PX_ERETRY, after Retry-After (seconds or an HTTP date) when given
 *   any other status         PX_EREJECT (to the dead letters, with the status and body start)
 * Every request carries Idempotency-Key: <event id>, so a receiver can drop the repeat that an
 * at-least-once retry may send.
 *
 * Lifecycle: there is no stop() (the host sends no new deliveries after stop anyway); drain()
 * waits for the requests in flight and then calls host->drained(); destroy() frees the state.
 * When the host's drain timeout passes first, it cancels the requests still in flight before
 * destroy: their callbacks run then (status < 0), so nothing is left for destroy to orphan.
 */
#define _GNU_SOURCE /* strptime, timegm */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <plexus/sdk.h>

static const px_host_api *host; /* valid for the life of the process */

typedef struct post_state post_state;

/* One request in flight. Owned by the plugin; freed by the response callback. */
typedef struct post {
    post_state *s;
    px_delivery *d;     /* valid until complete */
    struct post *prev, *next;
} post;

struct post_state {
    px_plugin_ctx *ctx;      /* owned by the host; valid until destroy returns */
    const json_t *config;    /* borrowed, valid until destroy returns; strings below point in */
    const char *url, *body_mode;
    char **headers;          /* owned: NULL-terminated "Name: value" lines */
    uint32_t timeout_ms;
    uint64_t max_retry_after_ms;
    post *inflight;          /* requests waiting for their answer */
    int draining;
};

static const px_option options[] = {
    {"url", PX_OPT_STRING, PX_OPT_REQUIRED, NULL, "endpoint every delivery is POSTed to"},
    {"body", PX_OPT_STRING, 0, "auto",
     "auto (params when the pipeline maps a `with`, else the event), params or event"},
    {"headers", PX_OPT_LIST, 0, NULL, "extra request headers, \"Name: value\""},
    {"token", PX_OPT_STRING, PX_OPT_SECRET, NULL, "sent as Authorization: Bearer <token>"},
    {"timeout", PX_OPT_DURATION, 0, "10s", "time allowed for one request"},
    {"max_retry_after", PX_OPT_DURATION, 0, "10m", "cap on a server's Retry-After"},
    {NULL, 0, 0, NULL, NULL},
};

/* Milliseconds a Retry-After value asks for (delta-seconds or an IMF-fixdate), capped; 0 when
 * absent or unreadable (the pipeline's backoff applies then). */
static uint64_t retry_after_ms(const char *v, uint64_t cap)
{
    uint64_t ms = 0;
    if (!v) {
        return 0;
    }
    while (*v == ' ') {
        v++;
    }
    if (isdigit((unsigned char)*v)) {
        char *end;
        unsigned long long sec = strtoull(v, &end, 10);
        ms = sec > cap / 1000 ? cap : (uint64_t)sec * 1000;
    } else {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        if (strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm)) {
            time_t at = timegm(&tm), now = time(NULL);
            ms = at > now ? (uint64_t)(at - now) * 1000 : 0;
        }
    }
    return ms > cap ? cap : ms;
}

static void unlink_post(post_state *s, post *p)
{
    if (p->prev) {
        p->prev->next = p->next;
    } else {
        s->inflight = p->next;
    }
    if (p->next) {
        p->next->prev = p->prev;
    }
}

static void count(post_state *s, const char *result)
{
    char labels[64];
    snprintf(labels, sizeof(labels), "result=\"%s\"", result);
    host->counter_add(s->ctx, "posts_total", labels, 1);
}

/* The answer (resp valid for this call only). */
static void on_response(int status, const px_http_response *resp, const char *error, void *arg)
{
    post *p = arg;
    post_state *s = p->s;
    unlink_post(s, p);
    px_delivery *d = p->d;
    free(p);
    char reason[320];
    if (status >= 200 && status < 300) {
        snprintf(reason, sizeof(reason), "status=%d", status);
        count(s, "ok");
        host->complete(d, PX_OK, reason, 0);
    } else if (status < 0 || status == 408 || status == 429 || status >= 500) {
        uint64_t wait = status > 0 ? retry_after_ms(host->http_resp_header(resp, "Retry-After"),
                                                     s->max_retry_after_ms)
                                   : 0;
        if (status < 0) {
            snprintf(reason, sizeof(reason), "no answer: %s", error ? error : "error");
        } else {
            snprintf(reason, sizeof(reason), "status=%d retry_after_ms=%llu", status,
                     (unsigned long long)wait);
        }
        count(s, "retry");
        host->complete(d, PX_ERETRY, reason, wait);
    } else {
        size_t len = 0;
        const char *body = host->http_resp_body(resp, &len);
        snprintf(reason, sizeof(reason), "status=%d body=%.*s", status,
                 (int)(len > 200 ? 200 : len), body);
        count(s, "reject");
        host->complete(d, PX_EREJECT, reason, 0);
    }
    if (s->draining && !s->inflight) {
        host->drained(s->ctx);
    }
}

/* The JSON document to send for d: a new string (free). */
static char *body_for(post_state *s, px_delivery *d)
{
    json_t *params = host->delivery_params(d); /* borrowed */
    int use_params = strcmp(s->body_mode, "params") == 0 ||
                     (strcmp(s->body_mode, "auto") == 0 && json_object_size(params) > 0);
    if (use_params) {
        return json_dumps(params, JSON_COMPACT);
    }
    const px_event *ev = host->delivery_event(d);
    json_t *env = json_pack("{s:s,s:s,s:s,s:I,s:O}", "id", host->event_id(ev), "type",
                            host->event_type(ev), "source", host->event_source(ev), "time_ms",
                            (json_int_t)host->event_time_ms(ev), "payload",
                            host->event_payload(ev));
    char *text = env ? json_dumps(env, JSON_COMPACT) : NULL;
    json_decref(env);
    return text;
}

static void post_deliver(void *state, px_delivery *d)
{
    post_state *s = state;
    char *body = body_for(s, d);
    if (!body) {
        host->complete(d, PX_EREJECT, "the event cannot be written as JSON", 0);
        return;
    }
    const px_event *ev = host->delivery_event(d);
    size_t n = 0;
    while (s->headers[n]) {
        n++;
    }
    char idem[200], attempt[40];
    snprintf(idem, sizeof(idem), "Idempotency-Key: %s", host->event_id(ev));
    snprintf(attempt, sizeof(attempt), "X-Plexus-Attempt: %u", host->delivery_attempt(d));
    const char **headers = calloc(n + 3, sizeof(*headers));
    post *p = calloc(1, sizeof(*p));
    if (!headers || !p) {
        free(headers);
        free(p);
        free(body);
        host->complete(d, PX_ERETRY, "out of memory", 0);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        headers[i] = s->headers[i];
    }
    headers[n] = idem;
    headers[n + 1] = attempt;
    px_http_options opt = {
        .size = sizeof(opt),
        .method = "POST",
        .url = s->url,
        .headers = headers,
        .body = body,
        .body_len = strlen(body),
        .timeout_ms = s->timeout_ms,
    };
    p->s = s;
    p->d = d;
    /* Every pointer in opt is borrowed for this call only: freed right after. */
    int rc = host->http_request(s->ctx, &opt, on_response, p, NULL);
    free(headers);
    free(body);
    if (rc < 0) {
        free(p);
        host->complete(d, PX_ERETRY, "the request could not start", 0);
        return;
    }
    p->next = s->inflight;
    if (s->inflight) {
        s->inflight->prev = p;
    }
    s->inflight = p;
}

static void free_headers(char **h)
{
    for (size_t i = 0; h && h[i]; i++) {
        free(h[i]);
    }
    free(h);
}

static int post_init(px_plugin_ctx *ctx, const json_t *config, void **state)
{
    post_state *s = calloc(1, sizeof(*s));
    if (!s) {
        return PX_EINVAL;
    }
    s->ctx = ctx;
    s->config = config;
    s->url = json_string_value(json_object_get(config, "url"));
    s->body_mode = json_string_value(json_object_get(config, "body"));
    s->timeout_ms = (uint32_t)json_integer_value(json_object_get(config, "timeout"));
    s->max_retry_after_ms = (uint64_t)json_integer_value(json_object_get(config,
                                                                         "max_retry_after"));
    if (strncmp(s->url, "http://", 7) != 0 && strncmp(s->url, "https://", 8) != 0) {
        host->log(ctx, PX_LOG_ERROR, "url must start with http:// or https:// url=%s", s->url);
        free(s);
        return PX_EINVAL;
    }
    if (strcmp(s->body_mode, "auto") != 0 && strcmp(s->body_mode, "params") != 0 &&
        strcmp(s->body_mode, "event") != 0) {
        host->log(ctx, PX_LOG_ERROR, "body must be auto, params or event, not %s", s->body_mode);
        free(s);
        return PX_EINVAL;
    }
    const json_t *extra = json_object_get(config, "headers");
    const char *token = json_string_value(json_object_get(config, "token"));
    size_t n = json_array_size(extra);
    s->headers = calloc(n + 3, sizeof(char *));
    if (!s->headers) {
        free(s);
        return PX_EINVAL;
    }
    size_t k = 0;
    s->headers[k++] = strdup("Content-Type: application/json");
    for (size_t i = 0; i < n; i++) {
        const char *h = json_string_value(json_array_get(extra, i));
        if (!h || !strchr(h, ':')) {
            host->log(ctx, PX_LOG_ERROR, "header %zu is not \"Name: value\"", i);
            free_headers(s->headers);
            free(s);
            return PX_EINVAL;
        }
        s->headers[k++] = strdup(h);
    }
    if (token && token[0]) {
        size_t len = strlen(token) + 32;
        s->headers[k] = malloc(len);
        if (s->headers[k]) {
            snprintf(s->headers[k], len, "Authorization: Bearer %s", token);
        }
        k++;
    }
    for (size_t i = 0; i < k; i++) {
        if (!s->headers[i]) {
            free_headers(s->headers);
            free(s);
            return PX_EINVAL;
        }
    }
    host->log(ctx, PX_LOG_INFO, "posting to url=%s body=%s", s->url, s->body_mode);
    *state = s;
    return 0;
}

static void post_drain(void *state)
{
    post_state *s = state;
    s->draining = 1;
    if (!s->inflight) {
        host->drained(s->ctx);
    }
}

static void post_destroy(void *state)
{
    post_state *s = state; /* no request is in flight any more: see the top of the file */
    free_headers(s->headers);
    free(s);
}

static const px_plugin_desc desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SINK,
    .name = "http_post",
    .version = "1.0.0",
    .description = "POSTs each delivery as JSON to a URL; retries on 408/429/5xx",
    .options = options,
    .init = post_init,
    .deliver = post_deliver,
    .drain = post_drain,
    .destroy = post_destroy,
};

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    host = h;
    return &desc;
}
