/* amocrm account: the connected amoCRM account (the seed's AccountAmo, kv "account"), the OAuth2
 * connection (connect link with a single-use state, the redirect callback that exchanges the
 * code at the account's own host) and the disconnect hook amoCRM calls when an admin removes
 * the integration (HMAC-signed). */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "account.h"
#include "cache.h"
#include "client.h"
#include "sha256.h"
#include "consttime.h"
#include "url.h"

#define STATE_TTL_MS (3600 * 1000)
#define STATE_MAX 16

void amocrm_account_load(amocrm *a)
{
    a->account = amocrm_host->kv_get_versioned(a->ctx, "account", &a->ver_account);
    if (a->account && !json_is_object(a->account)) {
        json_decref(a->account);
        a->account = NULL;
    }
    a->tokens = amocrm_host->kv_get_versioned(a->ctx, "tokens", &a->ver_tokens);
    if (a->tokens && !json_is_object(a->tokens)) {
        json_decref(a->tokens);
        a->tokens = NULL;
    }
}

static int account_live(amocrm *a)
{
    return a->account && !json_is_true(json_object_get(a->account, "deleted"));
}

static void soft_delete(amocrm *a, const char *why)
{
    json_object_set_new(a->account, "deleted", json_true());
    json_object_set_new(a->account, "stale", json_false());
    if (amocrm_host->kv_set(a->ctx, "account", a->account) < 0) {
        amocrm_host->log(a->ctx, PX_LOG_ERROR, "cannot store the deleted account");
    }
    amocrm_host->log(a->ctx, PX_LOG_INFO, "account deleted amo_id=%lld by=%s",
                     (long long)json_integer_value(json_object_get(a->account, "amoID")), why);
    amocrm_tokens_drop(a);
}

/* --- POST/GET/DELETE /account -------------------------------------------------------------- */

static void new_state(char out[33])
{
    unsigned char raw[16];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        /* getrandom on Linux does not fail for 16 bytes once the pool is ready */
        memset(raw, 0, sizeof(raw));
    }
    for (int i = 0; i < 16; i++) {
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    }
}

/* The stored states (cur, borrowed; NULL = none) without the expired ones, plus arg's new one:
 * a new reference. Compare-and-set: states other hosts add meanwhile are kept. */
static json_t *states_plus(const json_t *cur, void *arg)
{
    const char *state = arg;
    int64_t now = amocrm_now_ms();
    json_t *states = json_array();
    size_t i;
    json_t *s;
    json_array_foreach(cur, i, s) {
        if (json_integer_value(json_object_get(s, "at")) + STATE_TTL_MS > now) {
            json_array_append(states, s);
        }
    }
    while (json_array_size(states) >= STATE_MAX) {
        json_array_remove(states, 0);
    }
    json_array_append_new(states, json_pack("{s:s, s:I}", "state", state, "at", (json_int_t)now));
    return states;
}

static void connect_link(amocrm *a, px_http_request *req)
{
    char state[33];
    new_state(state);
    if (amocrm_kv_update(a, "oauth_states", states_plus, state, NULL, NULL) != 0) {
        amocrm_respond_msg(req, 500, "cannot store the authorisation state");
        return;
    }
    size_t cap = strlen(a->auth_url) + 3 * strlen(a->client_id) + 96;
    char *link = malloc(cap);
    size_t o = (size_t)snprintf(link, cap, "%s%sclient_id=", a->auth_url,
                                strchr(a->auth_url, '?') ? "&" : "?");
    /* cap holds the whole encoding (3 bytes per byte at most) and the rest: nothing is cut */
    o += px_url_encode(a->client_id, NULL, link + o, cap - o);
    snprintf(link + o, cap - o, "&state=%s&mode=post_message", state);
    json_t *body = json_pack("{s:s}", "link", link);
    amocrm_respond_json(req, 200, body);
    json_decref(body);
    free(link);
}

void amocrm_api_account(amocrm *a, px_http_request *req, const char *method)
{
    if (strcmp(method, "POST") == 0) {
        connect_link(a, req);
    } else if (strcmp(method, "GET") == 0) {
        if (!account_live(a)) {
            amocrm_respond_msg(req, 404, "no amoCRM account connected");
            return;
        }
        amocrm_respond_json(req, 200, a->account);
    } else {
        if (account_live(a)) {
            soft_delete(a, "api");
        }
        amocrm_respond_msg(req, 200, "Success");
    }
}

/* --- /webhook/create: the OAuth redirect ------------------------------------------------- */

typedef struct connect_ctx {
    amocrm_hold *hold;
    char *host;
} connect_ctx;

static void connect_free(connect_ctx *c)
{
    free(c->host);
    free(c);
}

/* Answers the callback's request and frees c. */
static void connect_end(amocrm *a, connect_ctx *c, int status, const char *msg)
{
    amocrm_hold_answer(a, c->hold, status, msg);
    connect_free(c);
}

/* The stored states (cur, borrowed) without the live one equal to arg, as a new reference; NULL
 * when there is none (used or expired). Compare-and-set: of two hosts taking one state at once,
 * one finds it gone. */
static json_t *states_minus(const json_t *cur, void *arg)
{
    const char *state = arg;
    int64_t now = amocrm_now_ms();
    size_t i;
    json_t *s;
    json_array_foreach(cur, i, s) {
        const char *v = json_string_value(json_object_get(s, "state"));
        if (v && px_ct_streq(state, v) &&
            json_integer_value(json_object_get(s, "at")) + STATE_TTL_MS > now) {
            json_t *rest = json_deep_copy(cur);
            json_array_remove(rest, i);
            return rest;
        }
    }
    return NULL;
}

/* 1 when state was live, and is now used up (single use, across hosts). */
static int take_state(amocrm *a, const char *state)
{
    return amocrm_kv_update(a, "oauth_states", states_minus, (void *)state, NULL, NULL) == 0;
}

static int host_allowed(amocrm *a, const char *host)
{
    if (!*host || strlen(host) > 253) {
        return 0;
    }
    for (const char *p = host; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == ':')) {
            return 0;
        }
    }
    size_t i;
    json_t *g;
    json_array_foreach(a->allowed_hosts, i, g) {
        if (fnmatch(json_string_value(g), host, FNM_CASEFOLD) == 0) {
            return 1;
        }
    }
    return 0;
}

static void on_account_info(amocrm *a, int status, json_t *body, uint64_t ra, const char *err,
                            void *arg)
{
    (void)ra;
    connect_ctx *c = arg;
    if (status == AMOCRM_ESTOP) {
        amocrm_hold_drop(a, c->hold);
        connect_free(c);
        return;
    }
    int64_t amo_id = 0;
    if (status != 200 || amocrm_json_int(json_object_get(body, "id"), &amo_id) < 0) {
        amocrm_host->log(a->ctx, PX_LOG_WARN, "cannot read the amoCRM account status=%d err=%s",
                         status, err ? err : "-");
        connect_end(a, c, 500, "cannot read the amoCRM account");
        return;
    }
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *sub = json_string_value(json_object_get(body, "subdomain"));
    const char *country = json_string_value(json_object_get(body, "country"));
    const char *drive = json_string_value(json_object_get(body, "drive_url"));
    amocrm_shared_sync(a, 1); /* another host may have connected or deleted one meanwhile */
    json_t *acc = a->account;
    int same = acc && json_integer_value(json_object_get(acc, "amoID")) == amo_id;
    if (acc && !(same && account_live(a))) {
        /* A new account record: keep the old one in the history. */
        json_t *hist = amocrm_host->kv_get(a->ctx, "accounts.history");
        if (!json_is_array(hist)) {
            json_decref(hist);
            hist = json_array();
        }
        json_t *old = json_deep_copy(acc);
        json_object_set_new(old, "deleted", json_true());
        json_array_append_new(hist, old);
        amocrm_host->kv_set(a->ctx, "accounts.history", hist);
        json_decref(hist);
        int64_t next = json_integer_value(json_object_get(acc, "id")) + 1;
        if (!same) {
            amocrm_cache_clear(a); /* rules stay: each belongs to its AccountID */
        }
        a->account = NULL;
        json_decref(acc);
        acc = NULL;
        char when[32];
        amocrm_iso_time(amocrm_now_ms(), when, sizeof(when));
        a->account = json_pack("{s:I, s:s, s:I, s:s, s:b, s:s}", "id", (json_int_t)next,
                               "accountID", a->account_ref, "amoID", (json_int_t)amo_id,
                               "name", "", "deleted", 0, "createdAt", when);
    } else if (!acc) {
        char when[32];
        amocrm_iso_time(amocrm_now_ms(), when, sizeof(when));
        a->account = json_pack("{s:I, s:s, s:I, s:s, s:b, s:s}", "id", (json_int_t)1,
                               "accountID", a->account_ref, "amoID", (json_int_t)amo_id,
                               "name", "", "deleted", 0, "createdAt", when);
    }
    acc = a->account;
    json_object_set_new(acc, "name", json_string(name ? name : ""));
    json_object_set_new(acc, "subdomain", json_string(sub ? sub : ""));
    json_object_set_new(acc, "country", json_string(country ? country : ""));
    json_object_set_new(acc, "driveURL", json_string(drive ? drive : ""));
    json_object_set_new(acc, "deleted", json_false());
    json_object_set_new(acc, "stale", json_false());
    /* Compare-and-set against the record read above: two hosts connecting at once make one
     * record (the other answers 500 and the user retries). */
    int rc = amocrm_host->kv_cas(a->ctx, "account", a->ver_account, acc, &a->ver_account);
    if (rc < 0) {
        amocrm_host->log(a->ctx, PX_LOG_WARN, "account not stored rc=%d", rc);
        a->ver_account = 0; /* read it again */
        amocrm_shared_sync(a, 1);
        connect_end(a, c, 500, rc == PX_ECONFLICT ? "the account was changed meanwhile: "
                                                    "connect again"
                                                  : "cannot store the account");
        return;
    }
    amocrm_host->log(a->ctx, PX_LOG_INFO, "account connected amo_id=%lld subdomain=%s host=%s",
                     (long long)amo_id, sub ? sub : "-", c->host);
    amocrm_gauges(a);
    amocrm_refresh_schedule(a);
    connect_end(a, c, 200, "Success");
    if (a->sync_on_connect) {
        amocrm_sync_start(a, AMOCRM_SYNC_ALL, NULL, NULL);
    }
}

static void on_code_exchange(amocrm *a, int status, const px_http_response *resp, const char *err,
                             void *arg)
{
    connect_ctx *c = arg;
    if (status == AMOCRM_ESTOP) {
        amocrm_hold_drop(a, c->hold);
        connect_free(c);
        return;
    }
    json_t *body = NULL;
    if (resp) {
        size_t len = 0;
        const char *text = amocrm_host->http_resp_body(resp, &len);
        body = len ? json_loadb(text, len, 0, NULL) : NULL;
    }
    if (status != 200 || amocrm_tokens_set(a, body, c->host) < 0) {
        amocrm_host->log(a->ctx, PX_LOG_WARN, "code exchange failed status=%d host=%s err=%s",
                         status, c->host, err ? err : "-");
        int refused = status >= 400 && status < 500;
        json_decref(body);
        connect_end(a, c, refused ? 400 : 500,
                    refused ? "authorization code refused by amoCRM"
                            : "amoCRM token endpoint unreachable");
        return;
    }
    json_decref(body);
    amocrm_call_start(a, "GET", "/api/v4/account?with=drive_url", NULL, 1, on_account_info, c);
}

void amocrm_api_webhook_create(amocrm *a, px_http_request *req)
{
    const char *q = amocrm_host->http_req_query(req);
    char *code = amocrm_query_get(q, "code");
    char *referer = amocrm_query_get(q, "referer");
    char *state = amocrm_query_get(q, "state");
    char *cid = amocrm_query_get(q, "client_id");
    const char *bad = NULL;
    if (!code || !*code || !referer || !*referer) {
        bad = "code and referer are required";
    } else if (cid && strcmp(cid, a->client_id) != 0) {
        bad = "client_id is not this integration's";
    } else if (!state || !take_state(a, state)) {
        bad = "unknown or expired state: start again from POST /account";
    } else if (!host_allowed(a, referer)) {
        bad = "referer is not an allowed amoCRM host";
    }
    if (bad) {
        amocrm_host->log(a->ctx, PX_LOG_WARN, "oauth callback refused: %s", bad);
        amocrm_respond_msg(req, 400, bad);
        goto out;
    }
    json_t *rq = json_pack("{s:s, s:s, s:s, s:s, s:s}", "client_id", a->client_id,
                           "client_secret", a->client_secret, "grant_type", "authorization_code",
                           "code", code, "redirect_uri", a->redirect_uri);
    char *body = json_dumps(rq, JSON_COMPACT);
    json_decref(rq);
    char *base = amocrm_base_url(a, referer);
    size_t ulen = strlen(base) + 32;
    char *url = malloc(ulen);
    snprintf(url, ulen, "%s/oauth2/access_token", base);
    static const char *const headers[] = {"Content-Type: application/json",
                                          "Accept: application/json", NULL};
    connect_ctx *c = calloc(1, sizeof(*c));
    c->hold = amocrm_hold_req(a, req);
    c->host = strdup(referer);
    if (amocrm_http_start(a, "POST", url, headers, body, on_code_exchange, c) < 0) {
        connect_end(a, c, 500, "cannot reach amoCRM");
    }
    free(url);
    free(base);
    free(body);
out:
    free(code);
    free(referer);
    free(state);
    free(cid);
}

/* --- /webhook/delete: amoCRM's disconnect hook ------------------------------------------- */

void amocrm_api_webhook_delete(amocrm *a, px_http_request *req)
{
    const char *q = amocrm_host->http_req_query(req);
    char *acc_id = amocrm_query_get(q, "account_id");
    char *uuid = amocrm_query_get(q, "client_uuid");
    char *sig = amocrm_query_get(q, "signature");
    int64_t id = 0;
    json_t *jid = acc_id ? json_string(acc_id) : NULL;
    int bad_id = !jid || amocrm_json_int(jid, &id) < 0;
    json_decref(jid);
    if (bad_id || !uuid || !sig) {
        amocrm_respond_msg(req, 400, "account_id, client_uuid and signature are required");
        goto out;
    }
    size_t mlen = strlen(uuid) + strlen(acc_id) + 2;
    char *msg = malloc(mlen);
    snprintf(msg, mlen, "%s|%s", uuid, acc_id);
    char want[65];
    uint8_t mac[PX_SHA256_LEN];
    px_hmac_sha256(a->client_secret, strlen(a->client_secret), msg, strlen(msg), mac);
    px_hex_encode(mac, sizeof(mac), want);
    free(msg);
    for (char *p = sig; *p; p++) {
        if (*p >= 'A' && *p <= 'F') {
            *p = (char)(*p - 'A' + 'a');
        }
    }
    if (strcmp(uuid, a->client_id) != 0 || !px_ct_streq(sig, want)) {
        amocrm_host->log(a->ctx, PX_LOG_WARN, "disconnect hook with a bad signature account_id=%s",
                         acc_id);
        amocrm_respond_msg(req, 401, "Unauthorized");
        goto out;
    }
    if (!account_live(a) || json_integer_value(json_object_get(a->account, "amoID")) != id) {
        amocrm_respond_msg(req, 404, "no such account");
        goto out;
    }
    soft_delete(a, "disconnect hook");
    amocrm_respond_msg(req, 200, "Success");
out:
    free(acc_id);
    free(uuid);
    free(sig);
}
