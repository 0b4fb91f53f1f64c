/* amocrm core: small helpers every layer of the plugin uses (clocks, JSON integers, answers and
 * query strings of admin requests) and the list of admin requests held for a later answer. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"
#include "url.h"

const px_host_api *amocrm_host;

/* --- helpers ---------------------------------------------------------------------------------- */

int64_t amocrm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t amocrm_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int amocrm_json_int(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    const char *s = json_string_value(v);
    if (!s || !*s) {
        return -1;
    }
    char *end = NULL;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    if (errno || *end || !(isdigit((unsigned char)s[0]) || s[0] == '-')) {
        return -1;
    }
    *out = n;
    return 0;
}

void amocrm_iso_time(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void amocrm_respond_json(px_http_request *req, int status, const json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    amocrm_host->http_respond(req, status, "application/json", text, text ? strlen(text) : 0);
    free(text);
}

void amocrm_respond_msg(px_http_request *req, int status, const char *msg)
{
    json_t *s = json_string(msg);
    amocrm_respond_json(req, status, s);
    json_decref(s);
}

/* --- the shared store ------------------------------------------------------------------------ */

enum { SHARED_READ_EVERY_MS = 1000, UPDATE_TRIES = 16 };

int amocrm_kv_reread(amocrm *a, const char *key, json_t **slot, int64_t *version)
{
    int64_t v = 0;
    json_t *cur = amocrm_host->kv_get_versioned(a->ctx, key, &v);
    if (!cur || v == *version) {
        json_decref(cur);
        return 0;
    }
    json_decref(*slot);
    *slot = cur;
    *version = v;
    return 1;
}

int amocrm_kv_update(amocrm *a, const char *key, json_t *(*fn)(const json_t *cur, void *arg),
                     void *arg, json_t **out, int64_t *version)
{
    for (int i = 0; i < UPDATE_TRIES; i++) {
        int64_t v = 0;
        json_t *cur = amocrm_host->kv_get_versioned(a->ctx, key, &v);
        json_t *next = fn(cur, arg);
        json_decref(cur);
        if (!next) {
            return 1;
        }
        int64_t nv = 0;
        int rc = amocrm_host->kv_cas(a->ctx, key, v, next, &nv);
        if (rc == PX_ECONFLICT) {
            json_decref(next);
            continue; /* another host wrote in between: redo on its value */
        }
        if (rc < 0) {
            json_decref(next);
            return rc;
        }
        if (version) {
            *version = nv;
        }
        if (out) {
            *out = next;
        } else {
            json_decref(next);
        }
        return 0;
    }
    amocrm_host->log(a->ctx, PX_LOG_WARN, "state key=%s kept changing; not stored", key);
    return PX_ECONFLICT;
}

int amocrm_shared_sync(amocrm *a, int force)
{
    int64_t now = amocrm_mono_ms();
    if (!force && now - a->shared_read_ms < SHARED_READ_EVERY_MS) {
        return 0;
    }
    a->shared_read_ms = now;
    static const char *const cache_key[AMOCRM_C_COUNT] = {
        "cache.users", "cache.pipelines", "cache.steps", "cache.fields", "cache.tags"};
    for (int c = 0; c < AMOCRM_C_COUNT; c++) {
        amocrm_kv_reread(a, cache_key[c], &a->cache[c], &a->ver_cache[c]);
    }
    amocrm_kv_reread(a, "rules", &a->rules, &a->ver_rules);
    return amocrm_kv_reread(a, "account", &a->account, &a->ver_account);
}

/* --- query strings ---------------------------------------------------------------------------- */

/* Decodes n bytes of s (borrowed) into a new string (owned by caller; free). */
static char *decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    px_url_decode(s, n, out, n + 1);
    return out;
}

char *amocrm_query_get(const char *query, const char *name)
{
    size_t nlen = strlen(name);
    const char *p = query;
    while (p && *p) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        char *key = decode(p, klen);
        int hit = strlen(key) == nlen && memcmp(key, name, nlen) == 0;
        free(key);
        if (hit) {
            return eq ? decode(eq + 1, len - klen - 1) : strdup("");
        }
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

/* --- held admin requests ---------------------------------------------------------------------- */

static void hold_unlink(amocrm *a, amocrm_hold *h)
{
    if (h->prev) {
        h->prev->next = h->next;
    } else if (a->holds == h) {
        a->holds = h->next;
    }
    if (h->next) {
        h->next->prev = h->prev;
    }
    h->prev = h->next = NULL;
}

amocrm_hold *amocrm_hold_req(amocrm *a, px_http_request *req)
{
    amocrm_hold *h = calloc(1, sizeof(*h));
    h->req = req;
    h->next = a->holds;
    if (a->holds) {
        a->holds->prev = h;
    }
    a->holds = h;
    return h;
}

void amocrm_hold_answer(amocrm *a, amocrm_hold *h, int status, const char *msg)
{
    if (h->req) {
        hold_unlink(a, h);
        amocrm_respond_msg(h->req, status, msg);
    }
    free(h);
}

void amocrm_hold_drop(amocrm *a, amocrm_hold *h)
{
    if (h->req) {
        hold_unlink(a, h);
    }
    free(h);
}

void amocrm_hold_release_all(amocrm *a)
{
    while (a->holds) {
        amocrm_hold *h = a->holds;
        hold_unlink(a, h);
        px_http_request *req = h->req;
        h->req = NULL;
        amocrm_respond_msg(req, 503, "shutting down: try again");
    }
}
