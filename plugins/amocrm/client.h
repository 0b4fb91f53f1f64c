/* amocrm client: raw HTTP requests, the OAuth2 token pair and its refresh, and the rate-limited
 * queue every amoCRM API call goes through. Above core.h; used by every file above it. */
#ifndef AMOCRM_CLIENT_H
#define AMOCRM_CLIENT_H

#include "core.h"

/* A raw outgoing HTTP request's answer: status as px_http_response_cb, or AMOCRM_ESTOP; resp is
 * borrowed for the call (NULL when status < 0). */
typedef void (*amocrm_http_cb)(amocrm *a, int status, const px_http_response *resp, const char *err,
                               void *arg);

/* An amoCRM API answer. status: HTTP status or AMOCRM_E*. body: the parsed JSON (borrowed for the
 * call; NULL for 204, a body that is not JSON, or status < 0). retry_after_ms: from a 429's
 * Retry-After. err (borrowed): a short text for status < 0. */
typedef void (*amocrm_call_cb)(amocrm *a, int status, json_t *body, uint64_t retry_after_ms,
                               const char *err, void *arg);

/* Starts a raw request (every pointer borrowed). Returns 0, or < 0 without calling cb. */
int amocrm_http_start(amocrm *a, const char *method, const char *url, const char *const *headers,
                      const char *body, amocrm_http_cb cb, void *arg);
/* Base URL for the account host `host` (borrowed), e.g. https://example.amocrm.ru; a new string
 * owned by the caller (free). */
char *amocrm_base_url(amocrm *a, const char *host);
/* 1 when tokens exist and the account is usable (connected, not deleted, not stale). */
int amocrm_connected(amocrm *a);
int amocrm_is_stale(amocrm *a);
/* Queues an API call: `method`, `path` (e.g. "/api/v4/users?page=1", both borrowed), body
 * (borrowed, may be NULL). cb runs exactly once, never inside amocrm_call_start. With `connecting`
 * set the call only needs tokens (used while the account is being created). */
void amocrm_call_start(amocrm *a, const char *method, const char *path, const char *body,
                       int connecting, amocrm_call_cb cb, void *arg);
/* Replaces the tokens with `tok` (borrowed; {access_token, refresh_token, expires_in, ...} as
 * amoCRM answers) for account host `host`; stores them before returning. 0 or < 0. */
int amocrm_tokens_set(amocrm *a, const json_t *tok, const char *host);
/* Forgets the tokens (kv too) and fails queued calls with AMOCRM_ENOACCOUNT. */
void amocrm_tokens_drop(amocrm *a);
/* (Re)schedules the refresh timer from the tokens' expiry. */
void amocrm_refresh_schedule(amocrm *a);
/* Publishes the account gauges. */
void amocrm_gauges(amocrm *a);
/* Reads the stored token pair again (another host may have connected the account or refreshed
 * it); on a newer pair, updates the gauges and the refresh timer. */
void amocrm_client_reread(amocrm *a);
/* Starts the periodic look at the cluster (start()): live hosts, and the account, tokens, rules
 * and caches other hosts changed. */
void amocrm_client_start(amocrm *a);
/* Stops timers (stop()). */
void amocrm_client_stop(amocrm *a);
/* Ends every queued/in-flight call with AMOCRM_ESTOP (destroy()). */
void amocrm_client_destroy(amocrm *a);

#endif
