/* amocrm client: raw HTTP requests owned by the instance, the OAuth2 token pair and its refresh,
 * and the rate-limited queue every amoCRM API call goes through. A refresh token works once, and
 * several hosts may run this instance on one shared store, so a refresh runs under the instance's
 * cluster lock "token-refresh": the holder reads the stored pair again (versioned) and refreshes
 * only when that pair still needs it, stores the new pair (the newest amoCRM issued, whatever
 * was stored) before any request uses it, then lets the lock go; a host that finds a newer pair
 * adopts it instead. Every request re-reads the stored pair first (one versioned read). A
 * refused refresh marks the account stale instead of trying again. The rate limit is this
 * instance's across the cluster: each host sends rate / live hosts requests per second. Tokens
 * never reach a log line. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

struct amocrm_http {
    amocrm *a; /* NULL once the instance is destroyed: the callback then only frees this */
    amocrm_http_cb cb;
    void *arg;
    px_http_call *call;
    amocrm_http *prev, *next;
};

struct amocrm_call {
    amocrm *a;
    char *method, *path, *body;
    int connecting, retried;
    uint64_t gen; /* token generation the request was sent with */
    int64_t queued_ms;
    amocrm_call_cb cb;
    void *arg;
    amocrm_call *next;
};

typedef struct refresh_ctx {
    char *used; /* the refresh token sent */
} refresh_ctx;

enum {
    REFRESH_LOCK_TTL_MS = 1500,  /* a crashed holder frees it after this */
    CLUSTER_READ_EVERY_MS = 2000 /* how often the live hosts are counted */
};

static void pump(amocrm *a);
static void refresh_start(amocrm *a, const char *why);

/* --- raw HTTP ------------------------------------------------------------------------------ */

static void on_http(int status, const px_http_response *resp, const char *err, void *arg)
{
    amocrm_http *h = arg;
    amocrm *a = h->a;
    if (!a) {
        free(h);
        return;
    }
    if (h->prev) {
        h->prev->next = h->next;
    } else {
        a->http = h->next;
    }
    if (h->next) {
        h->next->prev = h->prev;
    }
    amocrm_http_cb cb = h->cb;
    void *cbarg = h->arg;
    free(h);
    if (status < 0 && a->stopping) {
        a->closing = 1; /* cancelled by the host: send nothing new */
    }
    cb(a, status, resp, err, cbarg);
}

int amocrm_http_start(amocrm *a, const char *method, const char *url, const char *const *headers,
                      const char *body, amocrm_http_cb cb, void *arg)
{
    amocrm_http *h = calloc(1, sizeof(*h));
    if (!h) {
        return PX_EINVAL;
    }
    h->a = a;
    h->cb = cb;
    h->arg = arg;
    px_http_options o = {
        .size = sizeof(o),
        .method = method,
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .timeout_ms = (uint32_t)a->timeout_ms,
    };
    int rc = amocrm_host->http_request(a->ctx, &o, on_http, h, &h->call);
    if (rc < 0) {
        free(h);
        return rc;
    }
    h->next = a->http;
    if (a->http) {
        a->http->prev = h;
    }
    a->http = h;
    return 0;
}

char *amocrm_base_url(amocrm *a, const char *host)
{
    char sub[256];
    size_t n = strcspn(host, ".");
    snprintf(sub, sizeof(sub), "%.*s", (int)(n < 255 ? n : 255), host);
    size_t cap = strlen(a->base_url) + 1;
    for (const char *p = a->base_url; (p = strchr(p, '{')); p++) {
        cap += strlen(host) + strlen(sub);
    }
    char *out = malloc(cap);
    size_t o = 0;
    for (const char *p = a->base_url; *p;) {
        if (strncmp(p, "{host}", 6) == 0) {
            o += (size_t)sprintf(out + o, "%s", host);
            p += 6;
        } else if (strncmp(p, "{subdomain}", 11) == 0) {
            o += (size_t)sprintf(out + o, "%s", sub);
            p += 11;
        } else {
            out[o++] = *p++;
        }
    }
    while (o > 0 && out[o - 1] == '/') {
        o--;
    }
    out[o] = '\0';
    return out;
}

/* --- account state ------------------------------------------------------------------------- */

int amocrm_is_stale(amocrm *a)
{
    return a->account && json_is_true(json_object_get(a->account, "stale"));
}

int amocrm_connected(amocrm *a)
{
    return a->tokens && a->account && !json_is_true(json_object_get(a->account, "deleted")) &&
           !amocrm_is_stale(a);
}

void amocrm_gauges(amocrm *a)
{
    int live = a->account && !json_is_true(json_object_get(a->account, "deleted"));
    amocrm_host->gauge_set(a->ctx, "amocrm_account_connected", NULL, live && a->tokens ? 1 : 0);
    amocrm_host->gauge_set(a->ctx, "amocrm_account_stale", NULL,
                           live && amocrm_is_stale(a) ? 1 : 0);
}

/* Marks the account stale or fresh: kv, gauge, and queued calls. */
static void set_stale(amocrm *a, int stale)
{
    if (a->account) {
        json_object_set_new(a->account, "stale", json_boolean(stale));
        if (amocrm_host->kv_set(a->ctx, "account", a->account) < 0) {
            amocrm_host->log(a->ctx, PX_LOG_ERROR, "cannot store account state stale=%d", stale);
        }
    }
    if (stale && a->refresh_timer) {
        amocrm_host->timer_stop(a->refresh_timer);
        a->refresh_timer = NULL;
    }
    amocrm_gauges(a);
    pump(a);
}

static int64_t tokens_expire_at(amocrm *a)
{
    return a->tokens ? json_integer_value(json_object_get(a->tokens, "expires_at")) : 0;
}

static json_t *pair_as_is(const json_t *cur, void *arg)
{
    (void)cur; /* a pair amoCRM just issued replaces whatever is stored */
    return json_incref((json_t *)arg);
}

/* Takes the stored pair when another host (or generation) stored a newer one. 1 when it did. */
static int tokens_reread(amocrm *a)
{
    if (!amocrm_kv_reread(a, "tokens", &a->tokens, &a->ver_tokens)) {
        return 0;
    }
    a->token_gen++;
    a->refresh_failures = 0;
    return 1;
}

int amocrm_tokens_set(amocrm *a, const json_t *tok, const char *host)
{
    const char *access = json_string_value(json_object_get(tok, "access_token"));
    const char *refresh = json_string_value(json_object_get(tok, "refresh_token"));
    int64_t expires_in = 0;
    if (!access || !refresh || !*access || !*refresh || !host ||
        amocrm_json_int(json_object_get(tok, "expires_in"), &expires_in) < 0 || expires_in <= 0) {
        return PX_EINVAL;
    }
    int64_t now = amocrm_now_ms();
    json_t *t = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "access_token", access,
                          "refresh_token", refresh, "token_type", "Bearer", "expires_at",
                          (json_int_t)(now + expires_in * 1000), "updated_at", (json_int_t)now,
                          "host", host);
    /* One write of one object: the pair is replaced atomically, and stored before any use. */
    int rc = amocrm_kv_update(a, "tokens", pair_as_is, t, NULL, &a->ver_tokens);
    if (rc != 0) {
        amocrm_host->log(a->ctx, PX_LOG_ERROR, "cannot store the new token pair rc=%d", rc);
    }
    json_decref(a->tokens);
    a->tokens = t;
    a->token_gen++;
    a->refresh_failures = 0;
    return 0;
}

void amocrm_tokens_drop(amocrm *a)
{
    amocrm_host->kv_set(a->ctx, "tokens", NULL);
    json_decref(a->tokens);
    a->tokens = NULL;
    a->ver_tokens = 0;
    a->token_gen++;
    if (a->refresh_timer) {
        amocrm_host->timer_stop(a->refresh_timer);
        a->refresh_timer = NULL;
    }
    amocrm_gauges(a);
    pump(a);
}

/* --- refresh ------------------------------------------------------------------------------- */

static void on_refresh_timer(void *arg)
{
    amocrm *a = arg;
    amocrm_host->timer_stop(a->refresh_timer);
    a->refresh_timer = NULL;
    refresh_start(a, "before expiry");
    pump(a);
}

static void refresh_in(amocrm *a, int64_t ms)
{
    if (a->refresh_timer) {
        amocrm_host->timer_stop(a->refresh_timer);
        a->refresh_timer = NULL;
    }
    if (a->stopping || a->destroying || !a->tokens || amocrm_is_stale(a)) {
        return;
    }
    amocrm_host->timer_start(a->ctx, (uint64_t)(ms > 0 ? ms : 1), 0, on_refresh_timer, a,
                             &a->refresh_timer);
}

/* When the pair's refresh is due: refresh_before ahead of expiry, never more than half its
 * lifetime early. */
static int64_t refresh_due_at(amocrm *a)
{
    int64_t expires = tokens_expire_at(a);
    int64_t life = expires - json_integer_value(json_object_get(a->tokens, "updated_at"));
    int64_t lead = a->refresh_before_ms;
    if (life > 0 && lead > life / 2) {
        lead = life / 2;
    }
    return expires - lead;
}

void amocrm_refresh_schedule(amocrm *a)
{
    refresh_in(a, refresh_due_at(a) - amocrm_now_ms());
}

/* The refresh is over (done, adopted, refused or failed): lets the cluster lock go. */
static void refresh_end(amocrm *a)
{
    a->refreshing = 0;
    if (a->refresh_locked) {
        a->refresh_locked = 0;
        amocrm_host->lock_release(a->ctx, "token-refresh");
    }
}

static void on_refresh(amocrm *a, int status, const px_http_response *resp, const char *err,
                       void *arg)
{
    refresh_ctx *r = arg;
    if (status == AMOCRM_ESTOP) {
        free(r->used);
        free(r);
        return;
    }
    json_t *body = NULL;
    if (resp) {
        size_t len = 0;
        const char *text = amocrm_host->http_resp_body(resp, &len);
        body = len ? json_loadb(text, len, 0, NULL) : NULL;
    }
    const char *host = json_string_value(json_object_get(a->tokens, "host"));
    if (status == 200 && host && amocrm_tokens_set(a, body, host) == 0) {
        amocrm_host->counter_add(a->ctx, "amocrm_token_refreshes", "result=\"ok\"", 1);
        amocrm_host->log(a->ctx, PX_LOG_INFO, "access token refreshed expires_in=%lld",
                         (long long)json_integer_value(json_object_get(body, "expires_in")));
        refresh_end(a);
        amocrm_refresh_schedule(a);
    } else if (status == 400 || status == 401 || status == 403) {
        amocrm_host->counter_add(a->ctx, "amocrm_token_refreshes", "result=\"refused\"", 1);
        refresh_end(a);
        if (tokens_reread(a)) {
            amocrm_host->log(a->ctx, PX_LOG_INFO, "token pair was rotated elsewhere; using it");
            amocrm_refresh_schedule(a);
        } else {
            const char *hint = json_string_value(json_object_get(body, "hint"));
            amocrm_host->log(a->ctx, PX_LOG_WARN,
                             "refresh refused status=%d hint=%s; account stale until reconnected",
                             status, hint ? hint : "-");
            set_stale(a, 1);
        }
    } else {
        amocrm_host->counter_add(a->ctx, "amocrm_token_refreshes", "result=\"error\"", 1);
        refresh_end(a);
        a->refresh_failures++;
        int shift = a->refresh_failures < 6 ? a->refresh_failures : 6;
        int64_t wait = (int64_t)1000 << shift;
        amocrm_host->log(a->ctx, PX_LOG_WARN, "refresh failed status=%d err=%s retry_in_ms=%lld",
                         status, err ? err : "-", (long long)(wait < 60000 ? wait : 60000));
        refresh_in(a, wait < 60000 ? wait : 60000);
    }
    json_decref(body);
    free(r->used);
    free(r);
    pump(a);
}

/* Sends the refresh of the pair in a->tokens (the lock is held, or this host is alone). */
static void refresh_send(amocrm *a)
{
    const char *host = json_string_value(json_object_get(a->tokens, "host"));
    const char *rt = json_string_value(json_object_get(a->tokens, "refresh_token"));
    if (!host || !rt) {
        refresh_end(a);
        return;
    }
    json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:s}", "client_id", a->client_id,
                            "client_secret", a->client_secret, "grant_type", "refresh_token",
                            "refresh_token", rt, "redirect_uri", a->redirect_uri);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    char *base = amocrm_base_url(a, host);
    size_t ulen = strlen(base) + 32;
    char *url = malloc(ulen);
    snprintf(url, ulen, "%s/oauth2/access_token", base);
    static const char *const headers[] = {"Content-Type: application/json",
                                          "Accept: application/json", NULL};
    refresh_ctx *r = calloc(1, sizeof(*r));
    r->used = strdup(rt);
    amocrm_host->log(a->ctx, PX_LOG_INFO, "refreshing access token reason=%s", a->refresh_why);
    if (amocrm_http_start(a, "POST", url, headers, body, on_refresh, r) < 0) {
        refresh_end(a);
        free(r->used);
        free(r);
        a->refresh_failures++;
        refresh_in(a, 5000);
    }
    free(url);
    free(base);
    free(body);
}

/* The cluster lock answered: with it held, read the stored pair again; refresh only when no
 * other host did meanwhile (the pair is unchanged, or the newer one is already due). */
static void on_refresh_lock(void *arg, int status)
{
    amocrm *a = arg;
    if (status == PX_OK && !a->refreshing && !a->destroying) {
        amocrm_host->lock_release(a->ctx, "token-refresh"); /* no longer wanted */
        return;
    }
    if (status != PX_OK || !a->refreshing || a->refresh_locked || a->destroying) {
        /* Lost while the refresh is in flight: its answer still lands in the store by
         * compare-and-set; nothing to stop here. */
        return;
    }
    a->refresh_locked = 1;
    int64_t had = a->ver_tokens;
    tokens_reread(a);
    int changed = a->ver_tokens != had || a->token_gen != a->refresh_gen;
    if (!a->tokens || amocrm_is_stale(a) || a->stopping ||
        (changed && refresh_due_at(a) > amocrm_now_ms())) {
        refresh_end(a); /* another host refreshed: use its pair */
        if (a->tokens && !a->stopping) {
            amocrm_refresh_schedule(a);
        }
        pump(a);
        return;
    }
    refresh_send(a);
}

static void refresh_start(amocrm *a, const char *why)
{
    if (a->refreshing || !a->tokens || amocrm_is_stale(a) || a->destroying) {
        return;
    }
    a->refreshing = 1;
    a->refresh_why = why;
    a->refresh_gen = a->token_gen;
    int rc = amocrm_host->lock_acquire(a->ctx, "token-refresh", REFRESH_LOCK_TTL_MS,
                                       on_refresh_lock, a);
    if (rc < 0) {
        amocrm_host->log(a->ctx, PX_LOG_WARN, "cannot ask for the refresh lock rc=%d", rc);
        a->refreshing = 0;
        a->refresh_failures++;
        refresh_in(a, 1000);
    }
}

/* --- rate-limited API calls --------------------------------------------------------------- */

static void call_free(amocrm_call *c)
{
    free(c->method);
    free(c->path);
    free(c->body);
    free(c);
}

static void call_finish(amocrm *a, amocrm_call *c, int status, json_t *body, uint64_t retry_after,
                        const char *err)
{
    c->cb(a, status, body, retry_after, err, c->arg);
    call_free(c);
}

static void on_pump_timer(void *arg)
{
    amocrm *a = arg;
    amocrm_host->timer_stop(a->pump_timer);
    a->pump_timer = NULL;
    pump(a);
}

static void pump_later(amocrm *a, int64_t ms)
{
    if (a->pump_timer || a->destroying) {
        return; /* one pending wake-up is enough: pump reschedules itself */
    }
    amocrm_host->timer_start(a->ctx, (uint64_t)(ms > 0 ? ms : 0), 0, on_pump_timer, a,
                             &a->pump_timer);
}

static uint64_t retry_after_ms(const px_http_response *resp)
{
    const char *ra = resp ? amocrm_host->http_resp_header(resp, "Retry-After") : NULL;
    char *end = NULL;
    long long s = ra ? strtoll(ra, &end, 10) : 0;
    if (!ra || end == ra || s <= 0) {
        return 1000;
    }
    return (uint64_t)(s > 3600 ? 3600 : s) * 1000;
}

static void on_call(amocrm *a, int status, const px_http_response *resp, const char *err, void *arg)
{
    amocrm_call *c = arg;
    if (status == AMOCRM_ESTOP) {
        call_finish(a, c, AMOCRM_ESTOP, NULL, 0, "stopping");
        return;
    }
    if (status < 0) {
        call_finish(a, c, AMOCRM_ENET, NULL, 0, err ? err : "no answer");
        pump(a);
        return;
    }
    const char *rid = amocrm_host->http_resp_header(resp, "X-Request-Id");
    if (status >= 300) {
        amocrm_host->log(a->ctx, PX_LOG_DEBUG, "amocrm answered status=%d method=%s path=%s "
                         "request_id=%s", status, c->method, c->path, rid ? rid : "-");
    }
    if (status == 401 && !c->retried) {
        /* Refresh once (unless someone already did since this was sent) and send it again. */
        c->retried = 1;
        c->next = a->q_head;
        a->q_head = c;
        if (!a->q_tail) {
            a->q_tail = c;
        }
        if (c->gen == a->token_gen) {
            refresh_start(a, "401");
        }
        pump(a);
        return;
    }
    uint64_t ra = 0;
    if (status == 429) {
        ra = retry_after_ms(resp);
        a->paused_until_ms = amocrm_mono_ms() + (int64_t)ra;
    }
    size_t len = 0;
    const char *text = amocrm_host->http_resp_body(resp, &len);
    json_t *body = len ? json_loadb(text, len, 0, NULL) : NULL;
    call_finish(a, c, status, body, ra, NULL);
    json_decref(body);
    pump(a);
}

static void call_send(amocrm *a, amocrm_call *c)
{
    const char *host = json_string_value(json_object_get(a->tokens, "host"));
    const char *tok = json_string_value(json_object_get(a->tokens, "access_token"));
    if (!host || !tok) {
        call_finish(a, c, AMOCRM_ENOACCOUNT, NULL, 0, "no token");
        return;
    }
    char *base = amocrm_base_url(a, host);
    size_t ulen = strlen(base) + strlen(c->path) + 1;
    char *url = malloc(ulen);
    snprintf(url, ulen, "%s%s", base, c->path);
    size_t alen = strlen(tok) + 32;
    char *auth = malloc(alen);
    snprintf(auth, alen, "Authorization: Bearer %s", tok);
    const char *headers[] = {auth, "Content-Type: application/json", "Accept: application/json",
                             NULL};
    c->gen = a->token_gen;
    amocrm_host->counter_add(a->ctx, "amocrm_api_requests", NULL, 1);
    if (amocrm_http_start(a, c->method, url, headers, c->body, on_call, c) < 0) {
        call_finish(a, c, AMOCRM_ENET, NULL, 0, "request not started");
    }
    memset(auth, 0, alen);
    free(auth);
    free(url);
    free(base);
}

/* This host's part of the instance's rate: rate / live hosts, counted every few seconds. */
static void rate_share_update(amocrm *a)
{
    int64_t now = amocrm_mono_ms();
    if (a->cluster_read_ms && now - a->cluster_read_ms < CLUSTER_READ_EVERY_MS) {
        return;
    }
    a->cluster_read_ms = now;
    px_cluster_info info = {.size = sizeof(info)};
    uint32_t hosts = amocrm_host->cluster(a->ctx, &info) == PX_OK && info.live_hosts > 0
                         ? info.live_hosts
                         : 1;
    double share = a->rate / hosts;
    if (share != a->rate_share) {
        amocrm_host->log(a->ctx, PX_LOG_INFO, "rate limit per host=%.3g live_hosts=%u", share,
                         (unsigned)hosts);
    }
    a->rate_share = share;
    amocrm_host->gauge_set(a->ctx, "amocrm_rate_limit", NULL, share);
}

static amocrm_call *pop(amocrm *a)
{
    amocrm_call *c = a->q_head;
    a->q_head = c->next;
    if (!a->q_head) {
        a->q_tail = NULL;
    }
    c->next = NULL;
    return c;
}

static void pump(amocrm *a)
{
    if (a->destroying) {
        return;
    }
    while (a->closing && a->q_head) {
        call_finish(a, pop(a), AMOCRM_ENET, NULL, 0, "instance unloading");
    }
    if (a->q_head && !a->refreshing) {
        tokens_reread(a); /* another host may have refreshed the pair */
        rate_share_update(a);
    }
    int64_t interval = a->rate_share > 0 ? (int64_t)ceil(1000.0 / a->rate_share) : 0;
    while (a->q_head) {
        amocrm_call *c = a->q_head;
        int64_t now = amocrm_mono_ms();
        if (!a->tokens) {
            call_finish(a, pop(a), AMOCRM_ENOACCOUNT, NULL, 0, "no amoCRM account connected");
            continue;
        }
        if (!c->connecting && !amocrm_connected(a)) {
            int stale = amocrm_is_stale(a);
            call_finish(a, pop(a), stale ? AMOCRM_ESTALE : AMOCRM_ENOACCOUNT, NULL, 0,
                        stale ? "amoCRM account is stale: reconnect it"
                              : "no amoCRM account connected");
            continue;
        }
        if (a->refreshing) {
            return; /* the refresh's answer pumps again */
        }
        if (tokens_expire_at(a) <= amocrm_now_ms()) {
            if (a->refresh_failures == 0) {
                refresh_start(a, "expired");
                if (a->refreshing) {
                    return; /* the lock's answer, then the refresh's, pumps again */
                }
            }
            call_finish(a, pop(a), AMOCRM_ENET, NULL, 0, "access token expired, refresh failing");
            continue;
        }
        if (now - c->queued_ms > a->queue_timeout_ms) {
            call_finish(a, pop(a), AMOCRM_EQUEUE, NULL, 0, "waited too long for a rate-limit slot");
            continue;
        }
        int64_t at = a->next_send_ms > a->paused_until_ms ? a->next_send_ms : a->paused_until_ms;
        if (now < at) {
            pump_later(a, at - now);
            return;
        }
        a->next_send_ms = now + interval;
        call_send(a, pop(a));
    }
}

void amocrm_call_start(amocrm *a, const char *method, const char *path, const char *body,
                       int connecting, amocrm_call_cb cb, void *arg)
{
    amocrm_call *c = calloc(1, sizeof(*c));
    c->a = a;
    c->method = strdup(method);
    c->path = strdup(path);
    c->body = body ? strdup(body) : NULL;
    c->connecting = connecting;
    c->queued_ms = amocrm_mono_ms();
    c->cb = cb;
    c->arg = arg;
    if (a->q_tail) {
        a->q_tail->next = c;
    } else {
        a->q_head = c;
    }
    a->q_tail = c;
    pump_later(a, 0); /* never answer inside amocrm_call_start */
}

static void on_cluster_timer(void *arg)
{
    amocrm *a = arg;
    a->cluster_read_ms = 0;
    rate_share_update(a);
    int changed = amocrm_shared_sync(a, 0);
    if (!a->refreshing && tokens_reread(a)) {
        changed = 1;
    }
    if (changed) {
        amocrm_gauges(a);
        if (amocrm_connected(a) && !a->refreshing) {
            amocrm_refresh_schedule(a);
        }
        pump(a);
    }
}

void amocrm_client_reread(amocrm *a)
{
    if (a->refreshing || !tokens_reread(a)) {
        return;
    }
    amocrm_gauges(a);
    if (amocrm_connected(a)) {
        amocrm_refresh_schedule(a);
    }
}

void amocrm_client_start(amocrm *a)
{
    a->rate_share = a->rate;
    rate_share_update(a);
    amocrm_host->timer_start(a->ctx, CLUSTER_READ_EVERY_MS, CLUSTER_READ_EVERY_MS,
                             on_cluster_timer, a, &a->cluster_timer);
}

void amocrm_client_stop(amocrm *a)
{
    if (a->cluster_timer) {
        amocrm_host->timer_stop(a->cluster_timer);
        a->cluster_timer = NULL;
    }
    if (a->refresh_timer) {
        amocrm_host->timer_stop(a->refresh_timer);
        a->refresh_timer = NULL;
    }
    if (a->refreshing && !a->refresh_locked) {
        /* Only waiting for the lock: let the next generation (or host) have it. A refresh in
         * flight keeps it until its answer is stored. */
        amocrm_host->lock_release(a->ctx, "token-refresh");
        a->refreshing = 0;
    }
}

void amocrm_client_destroy(amocrm *a)
{
    a->destroying = 1;
    amocrm_client_stop(a);
    if (a->pump_timer) {
        amocrm_host->timer_stop(a->pump_timer);
        a->pump_timer = NULL;
    }
    while (a->q_head) {
        call_finish(a, pop(a), AMOCRM_ESTOP, NULL, 0, "stopping");
    }
    while (a->http) {
        amocrm_http *h = a->http;
        a->http = h->next;
        /* The host cancels the call after destroy and runs on_http then: keep h until that. */
        h->a = NULL;
        h->cb(a, AMOCRM_ESTOP, NULL, "stopping", h->arg);
        amocrm_host->http_cancel(h->call);
    }
}
