/* webhook: a source that turns each JSON POST on a configured path into one event. Optional
 * bearer-token and HMAC-SHA256 signature checks (the signature covers a timestamp bounded by a
 * tolerance, so a captured request cannot be replayed, or the body alone for senders that sign
 * only that); event type from a header, a JSON pointer into
 * the body or a fixed name; event id and dedupe key from JSON pointers. The request is answered
 * only once the host reports the event persisted (2xx), or refused (503 with Retry-After), so a
 * 2xx always means the event is safe. The body is parsed once and handed over as the payload. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <plexus/sdk.h>

#include "consttime.h"
#include "sha256.h"

static const px_host_api *host;

#define MAX_TYPE_LEN 256
#define MAX_KEY_LEN 512
#define MAX_TIMESTAMP_DIGITS 12 /* unix seconds: enough for 30 000 years */

typedef struct hook {
    px_plugin_ctx *ctx;
    const char *path;
    char *token;            /* owned; NULL = no bearer check */
    char *hmac_secret;      /* owned; NULL = no signature check */
    size_t hmac_secret_len;
    const char *sig_header; /* borrowed from the config, which outlives the instance */
    int hmac_body;          /* 1: the signature covers the body only (hmac_mode: hmac_body) */
    const char *ts_header;  /* hmac mode: header with the signature's unix time (borrowed) */
    int64_t tolerance_s;    /* hmac mode: largest distance of that time from now */
    const char *type_header, *type_pointer, *type, *id_pointer, *dedupe_pointer;
    int require_json_ct;
    int ok_status;
    char retry_after[24];
    json_t *meta_headers; /* new reference: array of header names copied into event meta */
    json_t *config;       /* new reference: keeps every borrowed string above alive */
    int stopped, draining;
    int64_t outstanding; /* requests waiting for their persisted callback */
    struct waiting *waiting;
} hook;

/* One request waiting for the spool; linked so destroy can free what is left. */
typedef struct waiting {
    hook *h;
    px_http_request *req;
    struct waiting *prev, *next;
    char id[]; /* the event id, for the answer */
} waiting;

static const px_option options[] = {
    {"path", PX_OPT_STRING, 0, "/webhook", "URL path to accept POSTs on"},
    {"token", PX_OPT_STRING, PX_OPT_SECRET, NULL,
     "require \"Authorization: Bearer <token>\" when set"},
    {"hmac_secret", PX_OPT_STRING, PX_OPT_SECRET, NULL,
     "require an HMAC-SHA256 signature under this key when set (see hmac_mode)"},
    {"hmac_mode", PX_OPT_STRING, 0, "hmac",
     "hmac: the signature covers timestamp + \".\" + body and the timestamp must be within "
     "tolerance; hmac_body: the raw body only (GitHub)"},
    {"signature_header", PX_OPT_STRING, 0, "X-Signature-256",
     "header carrying \"sha256=<hex>\" (with hmac_secret)"},
    {"timestamp_header", PX_OPT_STRING, 0, "X-Signature-Timestamp",
     "hmac mode: header carrying the unix time (seconds) the sender signed at"},
    {"tolerance", PX_OPT_DURATION, 0, "5m",
     "hmac mode: refuse a timestamp further than this from now, in the past or the future"},
    {"type_header", PX_OPT_STRING, 0, "X-Event-Type",
     "header giving the event type (\"\" = ignore headers)"},
    {"type_pointer", PX_OPT_STRING, 0, NULL,
     "JSON pointer (RFC 6901) to the event type in the body, when the header is absent"},
    {"type", PX_OPT_STRING, 0, "webhook.event",
     "event type when neither header nor pointer gives one"},
    {"id_pointer", PX_OPT_STRING, 0, NULL, "JSON pointer to a value used as the event id"},
    {"dedupe_pointer", PX_OPT_STRING, 0, NULL,
     "JSON pointer to a value used as the dedupe key (repeats within the window are dropped)"},
    {"require_json_content_type", PX_OPT_BOOL, 0, "false",
     "answer 415 unless Content-Type is application/json or application/*+json"},
    {"status", PX_OPT_INT, 0, "202", "status of a persisted request: 200 or 202"},
    {"retry_after", PX_OPT_DURATION, 0, "1s", "Retry-After given with 503 (back-pressure)"},
    {"meta_headers", PX_OPT_LIST, 0, NULL,
     "request headers copied into the event metadata (key: lowercase header name)"},
    {NULL, 0, 0, NULL, NULL},
};

/* ---- small helpers ----------------------------------------------------------------------- */

static const char *opt_str(const json_t *cfg, const char *key)
{
    const char *v = json_string_value(json_object_get(cfg, key));
    return v && *v ? v : NULL;
}

/* Resolves RFC 6901 pointer `ptr` in `root` (both borrowed). Returns a borrowed value or NULL. */
static json_t *pointer_get(json_t *root, const char *ptr)
{
    if (*ptr == '\0') {
        return root;
    }
    if (*ptr != '/') {
        return NULL;
    }
    json_t *cur = root;
    char tok[MAX_KEY_LEN];
    const char *p = ptr + 1;
    for (;;) {
        size_t n = 0;
        while (*p && *p != '/') {
            char c = *p++;
            if (c == '~') {
                if (*p == '0') {
                    c = '~';
                } else if (*p == '1') {
                    c = '/';
                } else {
                    return NULL;
                }
                p++;
            }
            if (n + 1 >= sizeof(tok)) {
                return NULL;
            }
            tok[n++] = c;
        }
        tok[n] = '\0';
        if (json_is_object(cur)) {
            cur = json_object_getn(cur, tok, n);
        } else if (json_is_array(cur)) {
            /* Array index: digits only, no leading zero (RFC 6901 section 4). */
            if (n == 0 || (n > 1 && tok[0] == '0') || n > 9) {
                return NULL;
            }
            size_t idx = 0;
            for (size_t i = 0; i < n; i++) {
                if (!isdigit((unsigned char)tok[i])) {
                    return NULL;
                }
                idx = idx * 10 + (size_t)(tok[i] - '0');
            }
            cur = json_array_get(cur, idx);
        } else {
            return NULL;
        }
        if (!cur) {
            return NULL;
        }
        if (*p == '\0') {
            return cur;
        }
        p++; /* skip '/' */
    }
}

/* A string or integer at `ptr` as text in buf (bufsize bytes). Returns 1 when found. */
static int pointer_text(json_t *root, const char *ptr, char *buf, size_t bufsize)
{
    json_t *v = pointer_get(root, ptr);
    if (json_is_string(v)) {
        size_t len = json_string_length(v);
        if (len == 0 || len >= bufsize || memchr(json_string_value(v), '\0', len)) {
            return 0;
        }
        memcpy(buf, json_string_value(v), len + 1);
        return 1;
    }
    if (json_is_integer(v)) {
        snprintf(buf, bufsize, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return 1;
    }
    return 0;
}

/* An event type: printable ASCII without spaces, at most MAX_TYPE_LEN - 1 bytes. */
static int valid_type(const char *t)
{
    size_t n = 0;
    for (; t[n]; n++) {
        if (t[n] <= ' ' || t[n] >= 0x7f || n + 1 >= MAX_TYPE_LEN) {
            return 0;
        }
    }
    return n > 0;
}

/* application/json or application/<x>+json, parameters (charset...) ignored. */
static int is_json_content_type(const char *ct)
{
    if (!ct) {
        return 0;
    }
    while (*ct == ' ' || *ct == '\t') {
        ct++;
    }
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) {
        n--;
    }
    if (n < 12 || strncasecmp(ct, "application/", 12) != 0) {
        return 0;
    }
    const char *sub = ct + 12;
    size_t sn = n - 12;
    if (sn == 4 && strncasecmp(sub, "json", 4) == 0) {
        return 1;
    }
    return sn > 5 && strncasecmp(sub + sn - 5, "+json", 5) == 0;
}

/* Writes s (borrowed) as a JSON string body into buf. Only the event id and short fixed reasons
 * pass through here, so escaping control characters, quotes and backslashes is enough. */
static size_t json_quote(char *buf, size_t size, const char *s)
{
    size_t o = 0;
    if (size < 3) {
        return 0;
    }
    buf[o++] = '"';
    for (; *s && o + 8 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(buf + o, size - o, "\\u%04x", c);
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return o;
}

static void respond_error(px_http_request *req, int status, const char *error, const char *reason)
{
    char body[1024], q[400];
    int n;
    json_quote(q, sizeof(q), error);
    if (reason) {
        char r[512];
        json_quote(r, sizeof(r), reason);
        n = snprintf(body, sizeof(body), "{\"error\":%s,\"reason\":%s}", q, r);
    } else {
        n = snprintf(body, sizeof(body), "{\"error\":%s}", q);
    }
    host->http_respond(req, status, NULL, body, (size_t)n);
}

static void respond_busy(hook *h, px_http_request *req)
{
    host->http_set_header(req, "Retry-After", h->retry_after);
    respond_error(req, 503, "busy, retry later", NULL);
}

/* ---- authentication -------------------------------------------------------------------- */

static int check_token(hook *h, px_http_request *req)
{
    const char *auth = host->http_req_header(req, "Authorization");
    if (!auth) {
        return 0;
    }
    /* The scheme is case-insensitive (RFC 7235); the credentials are not. */
    if (strncasecmp(auth, "Bearer ", 7) != 0) {
        return 0;
    }
    auth += 7;
    while (*auth == ' ') {
        auth++;
    }
    return px_ct_streq(auth, h->token);
}

/* The "sha256=<hex>" value of header `name` (either case of hex) lowercased into given. Returns
 * NULL when it is well formed, else the reason. */
static const char *signature_given(px_http_request *req, const char *name,
                                   char given[2 * PX_SHA256_LEN + 1])
{
    const char *sig = host->http_req_header(req, name);
    if (!sig) {
        return "no signature header";
    }
    if (strncasecmp(sig, "sha256=", 7) != 0 || strlen(sig + 7) != 2 * PX_SHA256_LEN) {
        return "the signature is not sha256=<64 hex digits>";
    }
    for (size_t i = 0; i < 2 * PX_SHA256_LEN; i++) {
        given[i] = (char)tolower((unsigned char)sig[7 + i]);
    }
    given[2 * PX_SHA256_LEN] = '\0';
    return NULL;
}

/* The timestamp header as unix seconds in *ts. Returns NULL when present and well formed, else
 * the reason. */
static const char *timestamp_given(hook *h, px_http_request *req, int64_t *ts)
{
    const char *t = host->http_req_header(req, h->ts_header);
    if (!t) {
        return "no timestamp header";
    }
    size_t n = strlen(t);
    if (n == 0 || n > MAX_TIMESTAMP_DIGITS || strspn(t, "0123456789") != n) {
        return "the timestamp is not unix seconds";
    }
    *ts = strtoll(t, NULL, 10);
    return NULL;
}

/* Checks the request's signature. Returns NULL when it holds, else the reason of the refusal
 * (static text, or written into why, whylen bytes). In hmac mode the signed bytes are the
 * timestamp header, a dot and the body; the timestamp is judged only once the signature holds,
 * so a "too old" answer always means a genuine request replayed (or a clock far off). */
static const char *check_signature(hook *h, px_http_request *req, const char *body, size_t len,
                                   char *why, size_t whylen)
{
    char given[2 * PX_SHA256_LEN + 1];
    const char *bad = signature_given(req, h->sig_header, given);
    int64_t ts = 0;
    if (!bad && !h->hmac_body) {
        bad = timestamp_given(h, req, &ts);
    }
    if (bad) {
        return bad;
    }
    uint8_t mac[PX_SHA256_LEN];
    char expect[2 * PX_SHA256_LEN + 1];
    if (h->hmac_body) {
        px_hmac_sha256(h->hmac_secret, h->hmac_secret_len, body, len, mac);
    } else {
        const char *t = host->http_req_header(req, h->ts_header);
        px_sha256_part parts[] = {{t, strlen(t)}, {".", 1}, {body, len}};
        px_hmac_sha256_parts(h->hmac_secret, h->hmac_secret_len, parts, 3, mac);
    }
    px_hex_encode(mac, sizeof(mac), expect);
    if (!px_ct_streq(given, expect)) {
        return "the signature does not match";
    }
    if (h->hmac_body) {
        return NULL;
    }
    int64_t now = (int64_t)time(NULL);
    if (ts < now - h->tolerance_s) {
        snprintf(why, whylen, "the timestamp is %llds old, beyond the tolerance of %llds",
                 (long long)(now - ts), (long long)h->tolerance_s);
        return why;
    }
    if (ts > now + h->tolerance_s) {
        snprintf(why, whylen, "the timestamp is %llds in the future, beyond the tolerance of %llds",
                 (long long)(ts - now), (long long)h->tolerance_s);
        return why;
    }
    return NULL;
}

/* ---- request path ------------------------------------------------------------------------ */

static void unlink_waiting(hook *h, waiting *w)
{
    if (w->prev) {
        w->prev->next = w->next;
    } else {
        h->waiting = w->next;
    }
    if (w->next) {
        w->next->prev = w->prev;
    }
}

static void on_persisted(int status, void *arg)
{
    waiting *w = arg;
    hook *h = w->h;
    unlink_waiting(h, w);
    h->outstanding--;
    if (status == PX_OK) {
        char body[MAX_KEY_LEN + 32];
        size_t n = (size_t)snprintf(body, sizeof(body), "{\"id\":");
        n += json_quote(body + n, sizeof(body) - n - 1, w->id);
        body[n++] = '}';
        host->http_respond(w->req, h->ok_status, NULL, body, n);
    } else {
        respond_busy(h, w->req);
    }
    free(w);
    if (h->draining && h->outstanding == 0) {
        host->drained(h->ctx);
    }
}

static void bad_json(hook *h, px_http_request *req, const json_error_t *jerr)
{
    char reason[300];
    snprintf(reason, sizeof(reason), "%s at line %d column %d", jerr->text, jerr->line,
             jerr->column);
    host->counter_add(h->ctx, "requests_rejected_total", "reason=\"json\"", 1);
    respond_error(req, 400, "malformed JSON", reason);
}

static void bad_type(hook *h, px_http_request *req)
{
    host->counter_add(h->ctx, "requests_rejected_total", "reason=\"type\"", 1);
    respond_error(req, 400, "invalid event type", "1 to 255 printable characters without spaces");
}

/* The event of a request body, or NULL when the request was answered with an error. When the
 * type is known without reading the body (a header, or the fixed type) and no id or dedupe key
 * is read from it, the host only checks the body now and parses it if a pipeline needs its
 * values; otherwise it is parsed here. Either way the body is the payload's exact text, which
 * the host stores without serialising it again. */
static px_event *build_event(hook *h, px_http_request *req, const char *body, size_t len)
{
    const char *type = h->type_header ? host->http_req_header(req, h->type_header) : NULL;
    const char *known = type ? type : h->type_pointer ? NULL : h->type;
    json_error_t jerr;
    if (known && valid_type(known) && !h->id_pointer && !h->dedupe_pointer &&
        PX_HAS(px_host_api, host, event_create_text)) {
        px_event *ev = host->event_create_text(h->ctx, known, body, len, JSON_REJECT_DUPLICATES,
                                               &jerr);
        if (!ev) {
            bad_json(h, req, &jerr);
        }
        return ev;
    }
    json_t *payload = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!payload) {
        bad_json(h, req, &jerr);
        return NULL;
    }
    char tbuf[MAX_TYPE_LEN];
    if (!type && h->type_pointer && pointer_text(payload, h->type_pointer, tbuf, sizeof(tbuf))) {
        type = tbuf;
    }
    if (!type) {
        type = h->type;
    }
    if (!valid_type(type)) {
        json_decref(payload);
        bad_type(h, req);
        return NULL;
    }
    char idbuf[MAX_KEY_LEN], keybuf[MAX_KEY_LEN];
    const char *id = NULL, *key = NULL;
    if (h->id_pointer && pointer_text(payload, h->id_pointer, idbuf, sizeof(idbuf))) {
        id = idbuf;
    }
    if (h->dedupe_pointer && pointer_text(payload, h->dedupe_pointer, keybuf, sizeof(keybuf))) {
        key = keybuf;
    }
    px_event *ev = host->event_create(h->ctx, type, payload); /* steals payload */
    if (!ev) {
        respond_error(req, 400, "invalid event", NULL);
        return NULL;
    }
    if ((id && host->event_set(ev, PX_EVENT_ID, id) < 0) ||
        (key && host->event_set(ev, PX_EVENT_DEDUPE_KEY, key) < 0)) {
        host->event_discard(ev);
        respond_error(req, 400, "invalid event id or dedupe key", NULL);
        return NULL;
    }
    if (PX_HAS(px_host_api, host, event_set_raw)) {
        host->event_set_raw(ev, body, len);
    }
    return ev;
}

static void on_request(px_http_request *req, void *arg)
{
    hook *h = arg;
    if (h->stopped) {
        respond_busy(h, req);
        return;
    }
    size_t len = 0;
    const char *body = host->http_req_body(req, &len);

    char why[160];
    const char *refused = h->token && !check_token(h, req) ? "" : NULL;
    if (!refused && h->hmac_secret) {
        refused = check_signature(h, req, body, len, why, sizeof(why));
    }
    if (refused) {
        host->counter_add(h->ctx, "requests_rejected_total", "reason=\"auth\"", 1);
        host->http_set_header(req, "WWW-Authenticate", h->token ? "Bearer" : "Signature");
        respond_error(req, 401, "unauthorized", *refused ? refused : NULL);
        return;
    }
    if (h->require_json_ct && !is_json_content_type(host->http_req_header(req, "Content-Type"))) {
        host->counter_add(h->ctx, "requests_rejected_total", "reason=\"content_type\"", 1);
        respond_error(req, 415, "unsupported media type", "expected application/json");
        return;
    }
    if (len == 0) {
        host->counter_add(h->ctx, "requests_rejected_total", "reason=\"json\"", 1);
        respond_error(req, 400, "malformed JSON", "empty body");
        return;
    }
    px_event *ev = build_event(h, req, body, len);
    if (!ev) {
        return; /* answered */
    }
    size_t nmeta = json_array_size(h->meta_headers);
    for (size_t i = 0; i < nmeta; i++) {
        const char *name = json_string_value(json_array_get(h->meta_headers, i));
        const char *v = name ? host->http_req_header(req, name) : NULL;
        if (v) {
            char lname[128];
            size_t n = 0;
            for (; name[n] && n + 1 < sizeof(lname); n++) {
                lname[n] = (char)tolower((unsigned char)name[n]);
            }
            lname[n] = '\0';
            host->event_set_meta(ev, lname, v);
        }
    }

    const char *eid = host->event_id(ev);
    size_t idlen = strlen(eid);
    waiting *w = malloc(sizeof(*w) + idlen + 1);
    if (!w) {
        host->event_discard(ev);
        respond_busy(h, req);
        return;
    }
    w->h = h;
    w->req = req;
    memcpy(w->id, eid, idlen + 1);
    int rc = host->emit(h->ctx, ev, on_persisted, w); /* steals ev */
    if (rc < 0) {
        free(w);
        respond_busy(h, req);
        return;
    }
    w->prev = NULL;
    w->next = h->waiting;
    if (h->waiting) {
        h->waiting->prev = w;
    }
    h->waiting = w;
    h->outstanding++;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static void hook_free(hook *h)
{
    if (h->token) {
        memset(h->token, 0, strlen(h->token));
        free(h->token);
    }
    if (h->hmac_secret) {
        memset(h->hmac_secret, 0, h->hmac_secret_len);
        free(h->hmac_secret);
    }
    json_decref(h->meta_headers);
    json_decref(h->config);
    free(h);
}

static int hook_init(px_plugin_ctx *ctx, const json_t *cfg, void **state)
{
    hook *h = calloc(1, sizeof(*h));
    if (!h) {
        return PX_EINVAL;
    }
    h->ctx = ctx;
    /* The host's config object outlives init only by contract of the call, so keep a copy. */
    h->config = json_deep_copy(cfg);
    if (!h->config) {
        goto fail;
    }
    h->path = opt_str(h->config, "path");
    if (!h->path || h->path[0] != '/') {
        host->log(ctx, PX_LOG_ERROR, "path must start with '/' path=%s", h->path ? h->path : "");
        goto fail;
    }
    const char *tok = opt_str(h->config, "token");
    const char *sec = opt_str(h->config, "hmac_secret");
    if (tok) {
        h->token = strdup(tok);
    }
    if (sec) {
        h->hmac_secret = strdup(sec);
        h->hmac_secret_len = strlen(sec);
    }
    if ((tok && !h->token) || (sec && !h->hmac_secret)) {
        goto fail;
    }
    h->sig_header = opt_str(h->config, "signature_header");
    if (h->hmac_secret && !h->sig_header) {
        host->log(ctx, PX_LOG_ERROR, "hmac_secret needs a signature_header");
        goto fail;
    }
    const char *mode = opt_str(h->config, "hmac_mode");
    if (!mode || (strcmp(mode, "hmac") != 0 && strcmp(mode, "hmac_body") != 0)) {
        host->log(ctx, PX_LOG_ERROR, "hmac_mode must be hmac (timestamp + \".\" + body, "
                  "replay-safe) or hmac_body (the body only), not \"%s\"", mode ? mode : "");
        goto fail;
    }
    h->hmac_body = strcmp(mode, "hmac_body") == 0;
    h->ts_header = opt_str(h->config, "timestamp_header");
    json_int_t tol_ms = json_integer_value(json_object_get(h->config, "tolerance"));
    h->tolerance_s = (int64_t)(tol_ms / 1000);
    if (h->hmac_secret && !h->hmac_body && (!h->ts_header || h->tolerance_s < 1)) {
        host->log(ctx, PX_LOG_ERROR, "hmac_mode hmac needs a timestamp_header and a tolerance of "
                  "at least 1s tolerance_ms=%lld", (long long)tol_ms);
        goto fail;
    }
    h->type_header = opt_str(h->config, "type_header");
    h->type_pointer = opt_str(h->config, "type_pointer");
    h->type = opt_str(h->config, "type");
    h->id_pointer = opt_str(h->config, "id_pointer");
    h->dedupe_pointer = opt_str(h->config, "dedupe_pointer");
    const char *ptrs[] = {h->type_pointer, h->id_pointer, h->dedupe_pointer};
    const char *ptr_names[] = {"type_pointer", "id_pointer", "dedupe_pointer"};
    for (int i = 0; i < 3; i++) {
        if (ptrs[i] && ptrs[i][0] != '/') {
            host->log(ctx, PX_LOG_ERROR, "%s must be a JSON pointer starting with '/' value=%s",
                      ptr_names[i], ptrs[i]);
            goto fail;
        }
    }
    if (!h->type || !valid_type(h->type)) {
        host->log(ctx, PX_LOG_ERROR, "type must be 1 to 255 printable characters without spaces");
        goto fail;
    }
    h->require_json_ct = json_is_true(json_object_get(h->config, "require_json_content_type"));
    h->ok_status = (int)json_integer_value(json_object_get(h->config, "status"));
    if (h->ok_status != 200 && h->ok_status != 202) {
        host->log(ctx, PX_LOG_ERROR, "status must be 200 or 202 status=%d", h->ok_status);
        goto fail;
    }
    json_int_t ra = json_integer_value(json_object_get(h->config, "retry_after"));
    snprintf(h->retry_after, sizeof(h->retry_after), "%lld",
             (long long)(ra <= 0 ? 1 : (ra + 999) / 1000));
    json_t *mh = json_object_get(h->config, "meta_headers");
    h->meta_headers = json_is_array(mh) ? json_incref(mh) : NULL;

    if (host->http_route(ctx, "POST", h->path, 0, on_request, h) < 0) {
        host->log(ctx, PX_LOG_ERROR, "cannot route path=%s (is host.http.listen set?)", h->path);
        goto fail;
    }
    *state = h;
    return 0;
fail:
    hook_free(h);
    return PX_EINVAL;
}

static int hook_start(void *state)
{
    hook *h = state;
    h->stopped = 0;
    host->log(h->ctx, PX_LOG_INFO, "accepting path=%s auth=%s", h->path,
              h->token && h->hmac_secret ? "token+hmac"
              : h->token                 ? "token"
              : h->hmac_secret           ? (h->hmac_body ? "hmac_body" : "hmac")
                                         : "none");
    return 0;
}

static void hook_stop(void *state)
{
    hook *h = state;
    h->stopped = 1;
}

static void hook_drain(void *state)
{
    hook *h = state;
    h->draining = 1;
    if (h->outstanding == 0) {
        host->drained(h->ctx);
    }
}

static void hook_destroy(void *state)
{
    hook *h = state;
    /* Requests still waiting are answered by the host (503) when it drops this generation's
     * requests; only the bookkeeping is ours to free. */
    while (h->waiting) {
        waiting *w = h->waiting;
        h->waiting = w->next;
        free(w);
    }
    hook_free(h);
}

static const px_plugin_desc desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SOURCE,
    .name = "webhook",
    .version = "1.0.0",
    .description = "generic JSON webhook source: POST on a path, token or HMAC auth",
    .options = options,
    .init = hook_init,
    .start = hook_start,
    .stop = hook_stop,
    .drain = hook_drain,
    .destroy = hook_destroy,
};

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    host = h;
    return &desc;
}
