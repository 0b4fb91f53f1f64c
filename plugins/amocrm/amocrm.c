/* amocrm: a sink (action create_lead) that turns quiz results into amoCRM leads following the
 * connected account's rule for the quiz, and a source of "amocrm.rule.saved" events. The instance
 * serves the admin API of the quiz integration (account connection through OAuth2, cached amoCRM
 * lists, rules) on the host's HTTP listener. This file holds the descriptor, the life cycle and
 * the sink. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "api.h"
#include "cache.h"
#include "client.h"
#include "lead.h"
#include "rules.h"

static const px_option options[] = {
    {"client_id", PX_OPT_STRING, PX_OPT_REQUIRED, NULL, "integration ID (OAuth client_id)"},
    {"client_secret", PX_OPT_STRING, PX_OPT_REQUIRED | PX_OPT_SECRET, NULL,
     "integration secret key"},
    {"redirect_uri", PX_OPT_STRING, PX_OPT_REQUIRED, NULL,
     "redirect URI registered on the integration (this instance's .../webhook/create)"},
    {"api_token", PX_OPT_STRING, PX_OPT_REQUIRED | PX_OPT_SECRET, NULL,
     "bearer token the admin API requires"},
    {"api_prefix", PX_OPT_STRING, 0, "/amocrm",
     "path prefix of the admin API (\"/\" or \"\" = the root)"},
    {"auth_url", PX_OPT_STRING, 0, "https://www.amocrm.ru/oauth",
     "amoCRM authorisation page the connect link points to"},
    {"base_url", PX_OPT_STRING, 0, "https://{host}",
     "amoCRM API base; {host} = account host from the callback, {subdomain} its first label"},
    {"allowed_hosts", PX_OPT_LIST, 0, "[\"*.amocrm.ru\", \"*.amocrm.com\", \"*.kommo.com\"]",
     "account hosts (globs) a callback's referer may name"},
    {"account_id", PX_OPT_STRING, 0, NULL, "our account id (AccountAmo.accountID); default: "
     "the instance name"},
    {"rate_limit", PX_OPT_NUMBER, 0, "6", "requests per second to amoCRM (documented limit: 7)"},
    {"refresh_before", PX_OPT_DURATION, 0, "1h",
     "renew the access token this long before it expires (at most half its lifetime)"},
    {"stale_retry", PX_OPT_DURATION, 0, "5m",
     "retry delay of deliveries while no account is connected or it is stale"},
    {"timeout", PX_OPT_DURATION, 0, "20s", "limit on one request to amoCRM"},
    {"queue_timeout", PX_OPT_DURATION, 0, "20s",
     "a lead waiting longer than this for a rate-limit slot is retried later"},
    {"page_limit", PX_OPT_INT, 0, "250", "items per page when reading lists (max 250)"},
    {"sync_on_connect", PX_OPT_BOOL, 0, "true", "fill the caches when an account connects"},
    {NULL, 0, 0, NULL, NULL},
};

/* --- sink ---------------------------------------------------------------------------------- */

typedef struct lead_job {
    px_delivery *d;
    int64_t quiz;
} lead_job;

/* A delivery finished: reports drained once the last one did during drain. */
static void delivery_done(amocrm *a)
{
    if (a->deliveries > 0) {
        a->deliveries--;
    }
    if (a->draining && a->deliveries == 0) {
        a->draining = 0;
        amocrm_host->drained(a->ctx);
    }
}

static void finish(amocrm *a, px_delivery *d, int status, const char *reason, uint64_t after)
{
    amocrm_host->complete(d, status, reason, after);
    delivery_done(a);
}

/* amoCRM's problem+json, with its validation errors, as one line. */
static void problem_text(int status, const json_t *body, char *out, size_t len)
{
    const char *detail = json_string_value(json_object_get(body, "detail"));
    const char *title = json_string_value(json_object_get(body, "title"));
    size_t o = (size_t)snprintf(out, len, "amocrm %d %s", status,
                                detail ? detail : title ? title : "error");
    json_t *groups = json_object_get(body, "validation-errors");
    size_t i, j;
    json_t *g, *e;
    json_array_foreach(groups, i, g) {
        json_array_foreach(json_object_get(g, "errors"), j, e) {
            if (o >= len) {
                return;
            }
            const char *path = json_string_value(json_object_get(e, "path"));
            const char *code = json_string_value(json_object_get(e, "code"));
            const char *det = json_string_value(json_object_get(e, "detail"));
            o += (size_t)snprintf(out + o, len - o, "%s %s: %s (%s)", o ? ";" : "",
                                  path ? path : "-", code ? code : "-", det ? det : "");
        }
    }
}

static void on_lead(amocrm *a, int status, json_t *body, uint64_t retry_after, const char *err,
                    void *arg)
{
    lead_job *j = arg;
    px_delivery *d = j->d;
    int64_t quiz = j->quiz;
    free(j);
    if (status == AMOCRM_ESTOP) {
        return; /* the host takes the delivery back */
    }
    char reason[1600];
    if (status >= 200 && status < 300) {
        json_t *first = json_array_get(body, 0);
        snprintf(reason, sizeof(reason), "lead_id=%lld contact_id=%lld company_id=%lld",
                 (long long)json_integer_value(json_object_get(first, "id")),
                 (long long)json_integer_value(json_object_get(first, "contact_id")),
                 (long long)json_integer_value(json_object_get(first, "company_id")));
        amocrm_host->counter_add(a->ctx, "amocrm_leads_created", NULL, 1);
        amocrm_host->log(a->ctx, PX_LOG_DEBUG, "lead created quiz=%lld %s", (long long)quiz,
                         reason);
        finish(a, d, PX_OK, reason, 0);
    } else if (status == 429) {
        finish(a, d, PX_ERETRY, "amocrm 429 too many requests", retry_after);
    } else if (status == AMOCRM_ESTALE || status == AMOCRM_ENOACCOUNT) {
        finish(a, d, PX_ERETRY, err, (uint64_t)a->stale_retry_ms);
    } else if (status < 0) {
        snprintf(reason, sizeof(reason), "amocrm unreachable: %s", err ? err : "-");
        finish(a, d, PX_ERETRY, reason, 0);
    } else if (status == 401) {
        finish(a, d, PX_ERETRY, "amocrm 401 even after a token refresh", 0);
    } else if (status == 402 || status == 403) {
        problem_text(status, body, reason, sizeof(reason));
        amocrm_host->log(a->ctx, PX_LOG_WARN, "amocrm refuses access status=%d", status);
        finish(a, d, PX_ERETRY, reason, (uint64_t)a->stale_retry_ms);
    } else if (status >= 400 && status < 500) {
        problem_text(status, body, reason, sizeof(reason));
        amocrm_host->counter_add(a->ctx, "amocrm_leads_rejected", NULL, 1);
        finish(a, d, PX_EREJECT, reason, 0);
    } else {
        problem_text(status, body, reason, sizeof(reason));
        finish(a, d, PX_ERETRY, reason, 0);
    }
}

static void amocrm_deliver(void *state, px_delivery *d)
{
    amocrm *a = state;
    a->deliveries++;
    char why[512];
    const char *action = amocrm_host->delivery_action(d);
    if (action && *action && strcmp(action, "create_lead") != 0) {
        snprintf(why, sizeof(why), "unknown action \"%s\" (amocrm knows create_lead)", action);
        finish(a, d, PX_EREJECT, why, 0);
        return;
    }
    json_t *params = amocrm_host->delivery_params(d);
    int64_t quiz = 0;
    if (amocrm_json_int(json_object_get(params, "quiz_id"), &quiz) < 0) {
        finish(a, d, PX_EREJECT, "with.quiz_id: expected a quiz id (integer)", 0);
        return;
    }
    /* Another host may have connected, refreshed or changed something meanwhile. */
    amocrm_shared_sync(a, !amocrm_connected(a));
    if (!amocrm_connected(a)) {
        amocrm_client_reread(a);
    }
    /* Without a usable account nothing can be decided (rules belong to an account): wait. */
    if (!amocrm_connected(a)) {
        finish(a, d, PX_ERETRY,
               amocrm_is_stale(a) && a->tokens ? "amoCRM account is stale: reconnect it"
                                               : "no amoCRM account connected",
               (uint64_t)a->stale_retry_ms);
        return;
    }
    json_t *rule = amocrm_rule_get(a, quiz);
    if (!rule) {
        amocrm_shared_sync(a, 1); /* saved on another host a moment ago? */
        rule = amocrm_rule_get(a, quiz);
    }
    if (!rule) {
        snprintf(why, sizeof(why), "no rule for quiz %lld", (long long)quiz);
        finish(a, d, PX_EREJECT, why, 0);
        return;
    }
    const px_event *ev = amocrm_host->delivery_event(d);
    json_t *body = amocrm_lead_build(a, rule, params, amocrm_host->event_id(ev), why, sizeof(why));
    if (!body) {
        finish(a, d, PX_EREJECT, why, 0);
        return;
    }
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    lead_job *j = calloc(1, sizeof(*j));
    j->d = d;
    j->quiz = quiz;
    amocrm_call_start(a, "POST", "/api/v4/leads/complex", text, 0, on_lead, j);
    free(text);
}

/* --- life cycle ---------------------------------------------------------------------------- */

static char *opt_str(const json_t *cfg, const char *name)
{
    const char *s = json_string_value(json_object_get(cfg, name));
    return s ? strdup(s) : NULL;
}

/* The api_prefix as request paths are matched against: "" for the root, else "/a/b". Leading
 * slash added, repeated slashes collapsed and trailing ones trimmed, so "/" and "" both mean the
 * root and "<prefix>" + "/account" never holds "//". New string (owned by caller; free). */
static char *prefix_normalise(const char *in)
{
    char *out = malloc(strlen(in) + 2);
    size_t o = 0;
    for (const char *s = in; *s; s++) {
        if (*s != '/') {
            if (o == 0) {
                out[o++] = '/';
            }
            out[o++] = *s;
        } else if (o > 0 && out[o - 1] != '/') {
            out[o++] = '/';
        }
    }
    while (o > 0 && out[o - 1] == '/') {
        o--;
    }
    out[o] = '\0';
    return out;
}

static void amocrm_free(amocrm *a)
{
    free(a->client_id);
    free(a->client_secret);
    free(a->redirect_uri);
    free(a->api_token);
    free(a->prefix);
    free(a->auth_url);
    free(a->base_url);
    free(a->account_ref);
    json_decref(a->allowed_hosts);
    json_decref(a->account);
    json_decref(a->tokens);
    for (int c = 0; c < AMOCRM_C_COUNT; c++) {
        json_decref(a->cache[c]);
    }
    json_decref(a->rules);
    free(a);
}

static int amocrm_init(px_plugin_ctx *ctx, const json_t *cfg, void **state)
{
    amocrm *a = calloc(1, sizeof(*a));
    if (!a) {
        return PX_EINVAL;
    }
    a->ctx = ctx;
    a->client_id = opt_str(cfg, "client_id");
    a->client_secret = opt_str(cfg, "client_secret");
    a->redirect_uri = opt_str(cfg, "redirect_uri");
    a->api_token = opt_str(cfg, "api_token");
    const char *prefix = json_string_value(json_object_get(cfg, "api_prefix"));
    a->prefix = prefix_normalise(prefix ? prefix : "");
    a->auth_url = opt_str(cfg, "auth_url");
    a->base_url = opt_str(cfg, "base_url");
    a->account_ref = opt_str(cfg, "account_id");
    if (!a->account_ref) {
        a->account_ref = strdup(amocrm_host->instance_name(ctx));
    }
    a->allowed_hosts = json_incref(json_object_get(cfg, "allowed_hosts"));
    a->rate = json_number_value(json_object_get(cfg, "rate_limit"));
    a->rate_share = a->rate;
    a->refresh_before_ms = json_integer_value(json_object_get(cfg, "refresh_before"));
    a->stale_retry_ms = json_integer_value(json_object_get(cfg, "stale_retry"));
    a->timeout_ms = json_integer_value(json_object_get(cfg, "timeout"));
    a->queue_timeout_ms = json_integer_value(json_object_get(cfg, "queue_timeout"));
    a->page_limit = json_integer_value(json_object_get(cfg, "page_limit"));
    a->sync_on_connect = json_is_true(json_object_get(cfg, "sync_on_connect"));

    const char *bad = NULL;
    if (strncmp(a->base_url, "http://", 7) != 0 && strncmp(a->base_url, "https://", 8)) {
        bad = "base_url must start with http:// or https://";
    } else if (a->rate < 0) {
        bad = "rate_limit must not be negative";
    } else if (a->page_limit < 1 || a->page_limit > 250) {
        bad = "page_limit must be 1..250";
    } else if (a->timeout_ms <= 0 || a->queue_timeout_ms <= 0) {
        bad = "timeout and queue_timeout must be positive";
    }
    if (bad) {
        amocrm_host->log(ctx, PX_LOG_ERROR, "%s", bad);
        amocrm_free(a);
        return PX_EINVAL;
    }
    amocrm_account_load(a);
    amocrm_cache_load(a);
    amocrm_rules_load(a);
    if (amocrm_api_register(a) < 0) {
        amocrm_host->log(ctx, PX_LOG_WARN, "admin API not served (host.http.listen is needed "
                         "to connect an account) prefix=%s", a->prefix[0] ? a->prefix : "/");
    }
    *state = a;
    return 0;
}

static int amocrm_start(void *state)
{
    amocrm *a = state;
    amocrm_gauges(a);
    amocrm_client_start(a);
    if (amocrm_connected(a)) {
        amocrm_refresh_schedule(a);
    }
    return 0;
}

static void amocrm_stop(void *state)
{
    amocrm *a = state;
    a->stopping = 1;
    amocrm_client_stop(a);
    amocrm_hold_release_all(a);
}

static void amocrm_drain(void *state)
{
    amocrm *a = state;
    if (a->deliveries == 0) {
        amocrm_host->drained(a->ctx);
    } else {
        a->draining = 1;
    }
}

static void amocrm_destroy(void *state)
{
    amocrm *a = state;
    amocrm_client_destroy(a);
    amocrm_sync_destroy(a);
    amocrm_free(a);
}

static const px_plugin_desc desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SINK | PX_KIND_SOURCE,
    .name = "amocrm",
    .version = "1.0.0",
    .description = "quiz results become amoCRM leads; OAuth2 accounts, cached lists, rules",
    .options = options,
    .init = amocrm_init,
    .start = amocrm_start,
    .deliver = amocrm_deliver,
    .stop = amocrm_stop,
    .drain = amocrm_drain,
    .destroy = amocrm_destroy,
};

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    amocrm_host = h;
    return &desc;
}
