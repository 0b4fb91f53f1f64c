/* The host's asynchronous HTTP client: one libcurl multi handle driven by the host's libuv loop
 * (a uv_poll_t per socket curl asks to watch, one uv_timer_t for curl's timeouts). Connections
 * are reused (keep-alive, HTTP/2 multiplexing where the server offers it), bursts queue behind a
 * per-host connection cap, TLS verification is on unless a request says otherwise, and AWS
 * Signature V4 is done by curl. Loop thread only: no function here may be called elsewhere.
 */
#ifndef PX_HTTP_CLIENT_H
#define PX_HTTP_CLIENT_H

#include <stddef.h>

#include <plexus/sdk.h>
#include <uv.h>

/* Connections open at once to one host (scheme + name + port); requests beyond wait in a queue. */
#define PX_HTTP_CLIENT_MAX_HOST_CONNECTIONS 64
/* Idle keep-alive connections kept for reuse, over all hosts. */
#define PX_HTTP_CLIENT_MAX_CACHED_CONNECTIONS 256
/* Default cap on a response body; a longer body fails the request (status < 0). */
#define PX_HTTP_CLIENT_MAX_BODY (64u * 1024u * 1024u)
/* Timeout of a request whose options give none (timeout_ms == 0). */
#define PX_HTTP_CLIENT_DEFAULT_TIMEOUT_MS 30000u

typedef struct px_http_client px_http_client;

/* Runs once px_http_client_close() has released every loop handle; the client is gone by then. */
typedef void (*px_http_client_close_cb)(void *arg);

/* Creates a client on `loop` (borrowed; must outlive the client). On success returns 0 and
 * stores the client in *out (owned by caller; release with px_http_client_close). Returns
 * PX_EHTTP when curl cannot be initialised; *out is then untouched. */
int px_http_client_create(uv_loop_t *loop, px_http_client **out);

/* Cancels every request still in flight and closes the client. The callbacks of the cancelled
 * requests run before this returns (or, when called from inside a response callback, right after
 * that callback returns), with status UV_ECANCELED and error "cancelled". Requests started after
 * this call fail with PX_ESTATE. cb (may be NULL) runs on the loop once every uv handle is
 * closed; `c` is freed just before, so uv_loop_close() can succeed after it. Call once. */
void px_http_client_close(px_http_client *c, px_http_client_close_cb cb, void *arg);

/* Sets the response body cap for requests started from now on (0 = PX_HTTP_CLIENT_MAX_BODY). */
void px_http_client_set_max_body(px_http_client *c, size_t max_body);

/* Starts a request described by `opt` (borrowed for the call: method, URL, headers, body and
 * credentials are copied). Only the fields that fit in opt->size are read; url is required.
 * Same contract as px_host_api.http_request:
 * - cb (may be NULL) runs exactly once, on the loop, never inside this function: status is the
 *   HTTP status (any, 1xx-5xx) with resp valid for the callback only, or < 0 when no answer came,
 *   with resp NULL and error (valid for the callback only) saying why: UV_ETIMEDOUT,
 *   UV_ECONNREFUSED (or another connect errno), UV_EAI_NONAME, UV_ECANCELED, or PX_EHTTP for
 *   anything else (TLS failure, body over the cap, malformed answer...).
 * - *out (may be NULL) receives the call (owned by the client), valid until cb has started; it
 *   is only for px_http_cancel.
 * - Redirects are not followed. TLS peers are verified unless opt->flags has PX_HTTP_INSECURE.
 *   With opt->aws_sigv4 set, curl signs the request with aws_key / aws_secret.
 * Returns 0, or without starting anything and without calling cb: PX_EINVAL for a bad option
 * (size too small, no URL, a header without ':', CR/LF in the URL, a header or the method, SigV4
 * without key or secret), PX_ESTATE after close, PX_EHTTP when this libcurl refuses an option. */
int px_http_client_request(px_http_client *c, const px_http_options *opt, px_http_response_cb cb,
                           void *arg, px_http_call **out);

/* px_http_client_request() that also tags the call with `owner` (borrowed, only compared; e.g.
 * the plugin generation that started it) for px_http_client_cancel_owner(). */
int px_http_client_request_owned(px_http_client *c, const void *owner, const px_http_options *opt,
                                 px_http_response_cb cb, void *arg, px_http_call **out);

/* Cancels every call tagged `owner` and returns how many were still in flight. Their callbacks
 * (and any other callback already due) run before this returns (or, from inside a response
 * callback, right after it returns), so once it returns no callback of `owner` will run again:
 * the host calls it before unloading a plugin generation. */
size_t px_http_client_cancel_owner(px_http_client *c, const void *owner);

/* Cancels `call` (from px_http_client_request's *out, before its callback ran). The callback
 * runs later on the loop, never inside this function, with status UV_ECANCELED and error
 * "cancelled" unless the call had already finished, in which case it gets its real outcome.
 * Calling it again before the callback runs does nothing. NULL is a no-op. */
void px_http_cancel(px_http_call *call);

/* Value of response header `name` (borrowed; case-insensitive); when the header came several
 * times, the last one. Returns NULL when absent. Valid for the response callback only. */
const char *px_http_resp_header(const px_http_response *resp, const char *name);

/* The response body (valid for the response callback only; NUL-terminated, "" when empty) and
 * its length in *len (len may be NULL). */
const char *px_http_resp_body(const px_http_response *resp, size_t *len);

/* Number of requests started and not yet handed to their callback. */
size_t px_http_client_pending(const px_http_client *c);

#endif
