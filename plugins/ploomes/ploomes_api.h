/* ploomes api: outgoing calls to the Ploomes REST API through one rate-limited queue per
 * instance, and the sink actions. Above ploomes_core.h. */
#ifndef PLOOMES_API_H
#define PLOOMES_API_H

#include "ploomes_core.h"

/* Called once when an API call ends: status is the HTTP status, or < 0 when no answer came
 * (then resp is NULL and error says why). resp and error are valid for the call only. Never
 * called after the instance is destroyed. */
typedef void (*ploomes_call_cb)(ploomes *p, int status, const px_http_response *resp,
                                const char *error, void *arg);

/* Queues a call of `method` (borrowed) on `path` (borrowed, starting with '/', appended to
 * base_url) with `body` (borrowed; NULL = none). It starts when the rate limiter allows. cb runs
 * once, later (never inside this call). Returns 0, or PX_ESTATE without a user key. */
int ploomes_call_start(ploomes *p, const char *method, const char *path, const json_t *body,
                       ploomes_call_cb cb, void *arg);
/* Sinks: performs the delivery's action (see docs/plugins/ploomes.md). */
void ploomes_deliver(void *state, px_delivery *d);
/* Stop: drops queued calls that carry no delivery and cancels active ones; their callbacks run
 * with an error. */
void ploomes_api_stop(ploomes *p);
/* 1 when no call is queued or active. */
int ploomes_api_idle(ploomes *p);
/* Destroy: gives back every delivery still held (retry) and detaches active calls so their late
 * callbacks only free memory. */
void ploomes_api_destroy(ploomes *p);
/* Seconds or HTTP-date of a Retry-After header (borrowed) in ms; 0 when absent or unreadable. */
uint64_t ploomes_retry_after(const char *value);
/* The API's error message in a response body (borrowed), as a new string (free), never NULL. */
char *ploomes_error_message(const char *body, size_t len);

#endif
