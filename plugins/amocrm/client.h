/* amocrm client: raw HTTP requests, the OAuth2 token pair and its refresh, and the rate-limited
 * queue every amoCRM API call goes through. Above core.h; used by every file above it. */
#ifndef PX_AMOCRM_CLIENT_H
#define PX_AMOCRM_CLIENT_H

#include "core.h"

/* A raw outgoing HTTP request's answer: status as px_http_response_cb, or AMO_ESTOP; resp is
 * borrowed for the call (NULL when status < 0). */
typedef void (*amo_http_cb)(amo *a, int status, const px_http_response *resp, const char *err,
                            void *arg);

/* An amoCRM API answer. status: HTTP status or AMO_E*. body: the parsed JSON (borrowed for the
 * call; NULL for 204, a body that is not JSON, or status < 0). retry_after_ms: from a 429's
 * Retry-After. err (borrowed): a short text for status < 0. */
typedef void (*amo_call_cb)(amo *a, int status, json_t *body, uint64_t retry_after_ms,
                            const char *err, void *arg);

/* Starts a raw request (every pointer borrowed). Returns 0, or < 0 without calling cb. */
int amo_http_start(amo *a, const char *method, const char *url, const char *const *headers,
                   const char *body, amo_http_cb cb, void *arg);
/* Base URL for the account host `host` (borrowed), e.g. https://example.amocrm.ru; a new string
 * owned by the caller (free). */
char *amo_base_url(amo *a, const char *host);
/* 1 when tokens exist and the account is usable (connected, not deleted, not stale). */
int amo_connected(amo *a);
int amo_is_stale(amo *a);
/* Queues an API call: `method`, `path` (e.g. "/api/v4/users?page=1", both borrowed), body
 * (borrowed, may be NULL). cb runs exactly once, never inside amo_call_start. With `connecting`
 * set the call only needs tokens (used while the account is being created). */
void amo_call_start(amo *a, const char *method, const char *path, const char *body,
                    int connecting, amo_call_cb cb, void *arg);
/* Replaces the tokens with `tok` (borrowed; {access_token, refresh_token, expires_in, ...} as
 * amoCRM answers) for account host `host`; stores them before returning. 0 or < 0. */
int amo_tokens_set(amo *a, const json_t *tok, const char *host);
/* Forgets the tokens (kv too) and fails queued calls with AMO_ENOACCOUNT. */
void amo_tokens_drop(amo *a);
/* (Re)schedules the refresh timer from the tokens' expiry. */
void amo_refresh_schedule(amo *a);
/* Publishes the account gauges. */
void amo_gauges(amo *a);
/* Stops timers (stop()). */
void amo_client_stop(amo *a);
/* Ends every queued/in-flight call with AMO_ESTOP (destroy()). */
void amo_client_destroy(amo *a);

#endif
