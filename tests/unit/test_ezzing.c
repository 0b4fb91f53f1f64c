/* ezzing plugin tests: the envelope parser and per-topic checks on the 16 seed fixtures and on
 * the documented quirks; the SQS client's framing, error parsing and batch failures; and the
 * plugin's flow against a fake host (delete only after persist, dead letters, hints, one log
 * line per change of SQS health, drain). */
#include "../../plugins/common/sigv4.c"
#include "../../plugins/common/sqs.c"
#include "../../plugins/common/sqs_answer.c"
#include "../../plugins/ezzing/envelope.c"
#include "../../plugins/ezzing/ezzing.c"

#include <stdarg.h>

#include "test.h"

#define FIXTURES PX_TEST_DATA_DIR "/../../fixtures/ezzing"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = '\0';
    *len = got;
    return buf;
}

static char *fixture(const char *topic, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.json", FIXTURES, topic);
    return slurp(path, len);
}

static int parse_str(const char *s, ezzing_envelope *e, char *why, size_t n)
{
    return ezzing_envelope_parse(s, strlen(s), e, why, n);
}

/* --- Envelope ------------------------------------------------------------------------------ */

static void test_every_seed_example_parses_and_validates(void)
{
    const char *const *names;
    size_t n = ezzing_known_topics(&names);
    PX_ASSERT_INT_EQ(n, 16);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        char *body = fixture(names[i], &len);
        PX_ASSERT(body != NULL);
        ezzing_envelope e;
        char why[256] = "";
        int rc = ezzing_envelope_parse(body, len, &e, why, sizeof(why));
        free(body);
        if (rc != EZZING_OK) {
            fprintf(stderr, "%s: %s\n", names[i], why);
        }
        PX_ASSERT_INT_EQ(rc, EZZING_OK);
        PX_ASSERT_STR_EQ(e.topic, names[i]);
        PX_ASSERT(e.uuid && strlen(e.uuid) == 36);
        PX_ASSERT_INT_EQ(e.max_tries, 5);
        PX_ASSERT_INT_EQ(e.max_exceptions, -1);
        PX_ASSERT_INT_EQ(e.timeout_s, 60);
        PX_ASSERT_INT_EQ(e.nbackoff, 0);
        PX_ASSERT_INT_EQ(e.retry_until, -1);
        PX_ASSERT_INT_EQ(e.fail_on_timeout, strncmp(names[i], "user_", 5) != 0);
        PX_ASSERT(json_is_object(e.data));
        rc = ezzing_envelope_validate(&e, why, sizeof(why));
        if (rc != EZZING_VALID) {
            fprintf(stderr, "%s: %s\n", names[i], why);
        }
        ezzing_envelope_deinit(&e);
        PX_ASSERT_INT_EQ(rc, EZZING_VALID);
    }
}

/* Replaces data.<key> of a fixture with `value` (JSON text; NULL deletes it) and validates. */
static int validate_with(const char *topic, const char *key, const char *value, char *why,
                         size_t n)
{
    size_t len;
    char *body = fixture(topic, &len);
    json_t *root = json_loadb(body, len, 0, NULL);
    free(body);
    json_t *data = json_object_get(root, "data");
    if (value) {
        json_object_set_new(data, key, json_loads(value, JSON_DECODE_ANY, NULL));
    } else {
        json_object_del(data, key);
    }
    char *text = json_dumps(root, 0);
    json_decref(root);
    ezzing_envelope e;
    int rc = parse_str(text, &e, why, n);
    free(text);
    if (rc != EZZING_OK) {
        return 100 + rc;
    }
    rc = ezzing_envelope_validate(&e, why, n);
    ezzing_envelope_deinit(&e);
    return rc;
}

static void test_quirks_are_accepted(void)
{
    char why[256];
    /* ids: numbers or digit strings */
    PX_ASSERT_INT_EQ(validate_with("offer_created", "opportunity_id", "19", why, 256),
                     EZZING_VALID);
    PX_ASSERT_INT_EQ(validate_with("offer_created", "opportunity_id", "\"19\"", why, 256),
                     EZZING_VALID);
    /* coordinates: numbers or numeric strings, or null */
    PX_ASSERT_INT_EQ(validate_with("opportunity_created", "latitude", "\"55.86222400\"", why,
                                   256), EZZING_VALID);
    PX_ASSERT_INT_EQ(validate_with("opportunity_status_opened", "latitude", "0.82", why, 256),
                     EZZING_VALID);
    PX_ASSERT_INT_EQ(validate_with("lead_has_been_registered", "longitude", "null", why, 256),
                     EZZING_VALID);
    /* both timestamp formats */
    PX_ASSERT_INT_EQ(validate_with("incidence_created", "created_at", "\"2022-11-12 12:54:51\"",
                                   why, 256), EZZING_VALID);
    PX_ASSERT_INT_EQ(validate_with("offer_created", "created_at",
                                   "\"2021-03-24T15:44:38.000000Z\"", why, 256), EZZING_VALID);
    PX_ASSERT(ezzing_is_timestamp("2021-03-24 15:44:38"));
    PX_ASSERT(ezzing_is_timestamp("2022-11-15T12:54:51.000000Z"));
    PX_ASSERT(ezzing_is_timestamp("2022-11-15T12:54:51+02:00"));
    PX_ASSERT(!ezzing_is_timestamp("2022-11-15"));
    PX_ASSERT(!ezzing_is_timestamp("2022-13-15 12:54:51"));
    PX_ASSERT(!ezzing_is_timestamp("2022-11-15 12:54:51Z"));
    PX_ASSERT(!ezzing_is_timestamp("yesterday at noon!!"));
}

static void test_missing_or_wrong_fields_are_invalid(void)
{
    char why[256];
    PX_ASSERT_INT_EQ(validate_with("offer_created", "id", NULL, why, 256), EZZING_INVALID);
    PX_ASSERT_STR_EQ(why, "data.id: missing");
    PX_ASSERT_INT_EQ(validate_with("offer_created", "id", "\"14a\"", why, 256), EZZING_INVALID);
    PX_ASSERT_STR_HAS(why, "data.id: must be an id");
    PX_ASSERT_INT_EQ(validate_with("opportunity_updated", "longitude", "\"east\"", why, 256),
                     EZZING_INVALID);
    PX_ASSERT_INT_EQ(validate_with("incidence_updated", "updated_at", "\"12/11/2022\"", why, 256),
                     EZZING_INVALID);
    PX_ASSERT_STR_HAS(why, "data.updated_at: must be a timestamp");
    PX_ASSERT_INT_EQ(validate_with("user_created", "email", "42", why, 256), EZZING_INVALID);
    PX_ASSERT_INT_EQ(validate_with("opportunity_status_closed", "closed_status", NULL, why, 256),
                     EZZING_INVALID);
    PX_ASSERT_STR_EQ(why, "data.closed_status: missing");
    PX_ASSERT_INT_EQ(validate_with("generated_reports", "files",
                                   "[{\"file_id\": 1, \"file_name\": \"a.pdf\"}, {\"file_id\": "
                                   "\"x\", \"file_name\": \"b.pdf\"}]", why, 256), EZZING_INVALID);
    PX_ASSERT_STR_EQ(why, "data.files[1].file_id: must be an id (number or digit string)");
    PX_ASSERT_INT_EQ(validate_with("incidence_status_opened", "opened_status",
                                   "{\"slug\": \"open\", \"action\": \"opened\"}", why, 256),
                     EZZING_INVALID);
    PX_ASSERT_STR_EQ(why, "data.opened_status.incidence_status_id: missing");
}

static void test_bad_bodies_and_job_names(void)
{
    ezzing_envelope e;
    char why[256];
    PX_ASSERT_INT_EQ(parse_str("hello, not json", &e, why, sizeof(why)), EZZING_ENOTJSON);
    PX_ASSERT_STR_HAS(why, "not JSON");
    PX_ASSERT_INT_EQ(parse_str("[1, 2]", &e, why, sizeof(why)), EZZING_ENOTJSON);
    PX_ASSERT_INT_EQ(parse_str("", &e, why, sizeof(why)), EZZING_ENOTJSON);
    PX_ASSERT_INT_EQ(parse_str("{\"uuid\": \"x\", \"data\": {}}", &e, why, sizeof(why)),
                     EZZING_ENOJOB);
    PX_ASSERT_STR_EQ(why, "no job");
    PX_ASSERT_INT_EQ(parse_str("{\"job\": \"\"}", &e, why, sizeof(why)), EZZING_ENOJOB);
    PX_ASSERT_INT_EQ(parse_str("{\"job\": 12}", &e, why, sizeof(why)), EZZING_ENOJOB);
    /* Class-based Laravel jobs: the topic comes from displayName, else data.commandName. */
    PX_ASSERT_INT_EQ(parse_str("{\"job\": \"Illuminate\\\\Queue\\\\CallQueuedHandler@call\", "
                               "\"displayName\": \"App\\\\Jobs\\\\LeadHasBeenRegistered\"}",
                               &e, why, sizeof(why)), EZZING_OK);
    PX_ASSERT_STR_EQ(e.topic, "lead_has_been_registered");
    ezzing_envelope_deinit(&e);
    PX_ASSERT_INT_EQ(parse_str("{\"job\": \"Illuminate\\\\Queue\\\\CallQueuedHandler@call\", "
                               "\"data\": {\"commandName\": \"App\\\\Jobs\\\\UserDeleted\"}}",
                               &e, why, sizeof(why)), EZZING_OK);
    PX_ASSERT_STR_EQ(e.topic, "user_deleted");
    ezzing_envelope_deinit(&e);
    PX_ASSERT_INT_EQ(parse_str("{\"job\": \"a job with spaces\"}", &e, why, sizeof(why)),
                     EZZING_EBADJOB);
    PX_ASSERT_STR_HAS(why, "names no topic");
    /* An unknown plain job is fine for the parser and reported by the validator. */
    PX_ASSERT_INT_EQ(parse_str("{\"job\": \"invoice_paid\", \"uuid\": 7}", &e, why, sizeof(why)),
                     EZZING_OK);
    PX_ASSERT(e.uuid == NULL);
    PX_ASSERT_INT_EQ(ezzing_envelope_validate(&e, why, sizeof(why)), EZZING_UNKNOWN);
    ezzing_envelope_deinit(&e);
}

static void test_retry_fields(void)
{
    ezzing_envelope e;
    PX_ASSERT_INT_EQ(parse_str("{\"job\": \"x\", \"backoff\": \"1,5, 10\", \"maxTries\": \"3\", "
                               "\"maxExceptions\": 2, \"timeout\": 120.0, \"retryUntil\": "
                               "1700000000, \"failOnTimeout\": true}", &e, NULL, 0), EZZING_OK);
    PX_ASSERT_INT_EQ(e.nbackoff, 3);
    PX_ASSERT_INT_EQ(e.backoff_s[0], 1);
    PX_ASSERT_INT_EQ(e.backoff_s[1], 5);
    PX_ASSERT_INT_EQ(e.backoff_s[2], 10);
    PX_ASSERT_INT_EQ(e.max_tries, 3);
    PX_ASSERT_INT_EQ(e.max_exceptions, 2);
    PX_ASSERT_INT_EQ(e.timeout_s, 120);
    PX_ASSERT_INT_EQ(e.retry_until, 1700000000);
    PX_ASSERT_INT_EQ(e.fail_on_timeout, 1);
    ezzing_envelope_deinit(&e);
    PX_ASSERT_INT_EQ(parse_str("{\"job\": \"x\", \"backoff\": 30}", &e, NULL, 0), EZZING_OK);
    PX_ASSERT_INT_EQ(e.nbackoff, 1);
    PX_ASSERT_INT_EQ(e.backoff_s[0], 30);
    PX_ASSERT_INT_EQ(e.max_tries, -1);
    PX_ASSERT_INT_EQ(e.fail_on_timeout, 0);
    ezzing_envelope_deinit(&e);
    PX_ASSERT_INT_EQ(parse_str("{\"job\": \"x\", \"backoff\": [2, 4]}", &e, NULL, 0), EZZING_OK);
    PX_ASSERT_INT_EQ(e.nbackoff, 2);
    PX_ASSERT_INT_EQ(e.backoff_s[1], 4);
    ezzing_envelope_deinit(&e);
    PX_ASSERT_INT_EQ(parse_str("{\"job\": \"x\", \"backoff\": \"soon\"}", &e, NULL, 0), EZZING_OK);
    PX_ASSERT_INT_EQ(e.nbackoff, 0);
    ezzing_envelope_deinit(&e);
    PX_ASSERT_INT_EQ(parse_str("{\"job\": \"x\", \"backoff\": null}", &e, NULL, 0), EZZING_OK);
    PX_ASSERT_INT_EQ(e.nbackoff, 0);
    ezzing_envelope_deinit(&e);
}

/* --- SQS helpers --------------------------------------------------------------------------- */

static void test_sqs_classify_and_backoff(void)
{
    PX_ASSERT_INT_EQ(px_sqs_classify(200, NULL), PX_SQS_OK);
    PX_ASSERT_INT_EQ(px_sqs_classify(-111, NULL), PX_SQS_ENET);
    PX_ASSERT_INT_EQ(px_sqs_classify(400, "ThrottlingException"), PX_SQS_ETHROTTLE);
    PX_ASSERT_INT_EQ(px_sqs_classify(403, "RequestThrottled"), PX_SQS_ETHROTTLE);
    PX_ASSERT_INT_EQ(px_sqs_classify(429, ""), PX_SQS_ETHROTTLE);
    PX_ASSERT_INT_EQ(px_sqs_classify(503, "ServiceUnavailable"), PX_SQS_ESERVER);
    PX_ASSERT_INT_EQ(px_sqs_classify(500, NULL), PX_SQS_ESERVER);
    PX_ASSERT_INT_EQ(px_sqs_classify(400, "QueueDoesNotExist"), PX_SQS_ECLIENT);
    PX_ASSERT_INT_EQ(px_sqs_classify(403, "AccessDenied"), PX_SQS_ECLIENT);
    for (uint32_t r = 0; r < 1000; r += 37) {
        PX_ASSERT_INT_EQ(px_sqs_backoff_ms(1, 200, 30000, 0), 100);
        uint64_t a1 = px_sqs_backoff_ms(1, 200, 30000, r);
        uint64_t a4 = px_sqs_backoff_ms(4, 200, 30000, r * 7919u);
        uint64_t a30 = px_sqs_backoff_ms(30, 200, 30000, r * 104729u);
        PX_ASSERT(a1 >= 100 && a1 <= 200);
        PX_ASSERT(a4 >= 800 && a4 <= 1600);
        PX_ASSERT(a30 >= 15000 && a30 <= 30000);
    }
    PX_ASSERT(px_sqs_backoff_ms(1000000, 1, UINT64_MAX / 2, 5) > 0); /* no overflow */
}

/* --- A fake host --------------------------------------------------------------------------- */

struct px_event {
    char type[128], id[80], dedupe[128], subject[128];
    json_t *payload, *meta;
    int64_t max_attempts, timeout_ms, backoff[8], deadline_ms;
    int nbackoff, fail_on_timeout;
};

struct px_timer {
    void (*cb)(void *);
    void *arg;
    uint64_t ms;
    int active;
};

struct px_http_response {
    const char *body;
    const char *query_error;
};

typedef struct fake_call {
    px_http_response_cb cb;
    void *arg;
    char url[256], sigv4[64], target[96], token[96], host[128], date[32], auth[512];
    char *body;
    int answered, cancelled;
} fake_call;

typedef struct fake_out {
    px_event *ev;
    px_persisted_cb cb;
    void *arg;
    char *raw; /* dead letters */
    size_t raw_len;
    char reason[256];
    json_t *meta;
} fake_out;

static struct {
    fake_call calls[64];
    size_t ncalls;
    struct px_timer timers[64];
    size_t ntimers;
    fake_out outs[64];
    size_t nouts;
    char logs[64][512];
    size_t nlogs;
    int emit_rc;
    int drained;
    double unknown_count;
    int raw_set; /* event_set_raw calls */
    int old_hints_only; /* event_set_hint refuses the hints after PX_HINT_BACKOFF_MS */
} F;

static void fake_reset(void)
{
    for (size_t i = 0; i < F.ncalls; i++) {
        free(F.calls[i].body);
    }
    for (size_t i = 0; i < F.nouts; i++) {
        if (F.outs[i].ev) {
            json_decref(F.outs[i].ev->payload);
            json_decref(F.outs[i].ev->meta);
            free(F.outs[i].ev);
        }
        free(F.outs[i].raw);
        json_decref(F.outs[i].meta);
    }
    memset(&F, 0, sizeof(F));
}

static void f_log(px_plugin_ctx *ctx, int level, const char *fmt, ...)
{
    (void)ctx, (void)level;
    va_list ap;
    va_start(ap, fmt);
    if (F.nlogs < 64) {
        vsnprintf(F.logs[F.nlogs++], sizeof(F.logs[0]), fmt, ap);
    }
    va_end(ap);
}

static size_t logs_with(const char *s)
{
    size_t n = 0;
    for (size_t i = 0; i < F.nlogs; i++) {
        n += strstr(F.logs[i], s) != NULL;
    }
    return n;
}

static px_event *f_event_create(px_plugin_ctx *ctx, const char *type, json_t *payload)
{
    (void)ctx;
    px_event *ev = calloc(1, sizeof(*ev));
    snprintf(ev->type, sizeof(ev->type), "%s", type);
    snprintf(ev->id, sizeof(ev->id), "host-generated");
    ev->payload = payload;
    return ev;
}

static int f_event_set(px_event *ev, int field, const char *v)
{
    char *slot = field == PX_EVENT_ID ? ev->id : field == PX_EVENT_DEDUPE_KEY ? ev->dedupe
                                                                               : ev->subject;
    snprintf(slot, 80, "%s", v);
    return 0;
}

static int f_event_set_hint(px_event *ev, int hint, int64_t v)
{
    if (hint > PX_HINT_BACKOFF_MS && F.old_hints_only) {
        return PX_EINVAL; /* a host from before these hints */
    }
    if (hint == PX_HINT_DEADLINE_MS) {
        ev->deadline_ms = v;
    } else if (hint == PX_HINT_FAIL_ON_TIMEOUT) {
        ev->fail_on_timeout = (int)v;
    } else if (hint == PX_HINT_MAX_ATTEMPTS) {
        ev->max_attempts = v;
    } else if (hint == PX_HINT_TIMEOUT_MS) {
        ev->timeout_ms = v;
    } else if (ev->nbackoff < 8) {
        ev->backoff[ev->nbackoff++] = v;
    }
    return 0;
}

static int f_event_set_meta(px_event *ev, const char *k, const char *v)
{
    if (!ev->meta) {
        ev->meta = json_object();
    }
    json_object_set_new(ev->meta, k, json_string(v));
    return 0;
}

static int f_emit(px_plugin_ctx *ctx, px_event *ev, px_persisted_cb cb, void *arg)
{
    (void)ctx;
    if (F.emit_rc < 0) {
        json_decref(ev->payload);
        json_decref(ev->meta);
        free(ev);
        return F.emit_rc;
    }
    F.outs[F.nouts++] = (fake_out){.ev = ev, .cb = cb, .arg = arg};
    return 0;
}

static int f_dead_letter(px_plugin_ctx *ctx, const char *raw, size_t len, const json_t *meta,
                         const char *reason, px_persisted_cb cb, void *arg)
{
    (void)ctx;
    fake_out *o = &F.outs[F.nouts++];
    *o = (fake_out){.cb = cb, .arg = arg, .raw_len = len, .meta = json_deep_copy(meta)};
    o->raw = malloc(len + 1);
    memcpy(o->raw, raw, len);
    o->raw[len] = '\0';
    snprintf(o->reason, sizeof(o->reason), "%s", reason);
    return 0;
}

static int f_timer_start(px_plugin_ctx *ctx, uint64_t ms, uint64_t rep, void (*cb)(void *),
                         void *arg, px_timer **out)
{
    (void)ctx, (void)rep;
    px_timer *t = &F.timers[F.ntimers++];
    *t = (struct px_timer){.cb = cb, .arg = arg, .ms = ms, .active = 1};
    *out = t;
    return 0;
}

static void f_timer_stop(px_timer *t)
{
    t->active = 0;
}

/* Fires every active timer once (as if their time had come). Returns how many fired. */
static size_t fire_timers(void)
{
    size_t n = 0, end = F.ntimers;
    for (size_t i = 0; i < end; i++) {
        if (F.timers[i].active) {
            F.timers[i].cb(F.timers[i].arg);
            n++;
        }
    }
    return n;
}

static int f_http_request(px_plugin_ctx *ctx, const px_http_options *o, px_http_response_cb cb,
                          void *arg, px_http_call **out)
{
    (void)ctx;
    fake_call *c = &F.calls[F.ncalls++];
    memset(c, 0, sizeof(*c));
    c->cb = cb;
    c->arg = arg;
    snprintf(c->url, sizeof(c->url), "%s", o->url);
    snprintf(c->sigv4, sizeof(c->sigv4), "%s", o->aws_sigv4 ? o->aws_sigv4 : "");
    for (size_t i = 0; o->headers && o->headers[i]; i++) {
        if (strncmp(o->headers[i], "X-Amz-Target: ", 14) == 0) {
            snprintf(c->target, sizeof(c->target), "%s", o->headers[i] + 14);
        } else if (strncmp(o->headers[i], "X-Amz-Security-Token: ", 22) == 0) {
            snprintf(c->token, sizeof(c->token), "%s", o->headers[i] + 22);
        } else if (strncmp(o->headers[i], "Host: ", 6) == 0) {
            snprintf(c->host, sizeof(c->host), "%s", o->headers[i] + 6);
        } else if (strncmp(o->headers[i], "X-Amz-Date: ", 12) == 0) {
            snprintf(c->date, sizeof(c->date), "%s", o->headers[i] + 12);
        } else if (strncmp(o->headers[i], "Authorization: ", 15) == 0) {
            snprintf(c->auth, sizeof(c->auth), "%s", o->headers[i] + 15);
        } else if (strcmp(o->headers[i], "Content-Type: application/x-amz-json-1.0") != 0) {
            return PX_EINVAL;
        }
    }
    c->body = malloc(o->body_len + 1);
    memcpy(c->body, o->body, o->body_len);
    c->body[o->body_len] = '\0';
    *out = (px_http_call *)c;
    return 0;
}

static void f_http_cancel(px_http_call *call)
{
    ((fake_call *)call)->cancelled = 1;
}

static const char *f_resp_header(const px_http_response *r, const char *name)
{
    return strcasecmp(name, "x-amzn-query-error") == 0 ? r->query_error : NULL;
}

static const char *f_resp_body(const px_http_response *r, size_t *len)
{
    *len = r->body ? strlen(r->body) : 0;
    return r->body;
}

static void f_counter_add(px_plugin_ctx *ctx, const char *name, const char *labels, double d)
{
    (void)ctx, (void)labels;
    if (strcmp(name, "unknown_jobs") == 0) {
        F.unknown_count += d;
    }
}

static void f_drained(px_plugin_ctx *ctx)
{
    (void)ctx;
    F.drained++;
}

static int f_event_set_raw(px_event *ev, const char *json, size_t len)
{
    (void)ev, (void)json, (void)len;
    F.raw_set++;
    return 0;
}

static px_host_api fake_api = {
    .abi_major = PX_SDK_ABI_MAJOR, .abi_minor = PX_SDK_ABI_MINOR, .size = sizeof(px_host_api),
    .log = f_log, .event_create = f_event_create, .event_set = f_event_set,
    .event_set_hint = f_event_set_hint, .event_set_meta = f_event_set_meta, .emit = f_emit,
    .dead_letter = f_dead_letter, .timer_start = f_timer_start, .timer_stop = f_timer_stop,
    .http_request = f_http_request, .http_cancel = f_http_cancel,
    .http_resp_header = f_resp_header, .http_resp_body = f_resp_body,
    .counter_add = f_counter_add, .drained = f_drained, .event_set_raw = f_event_set_raw,
};

static void answer(size_t i, int status, const char *body, const char *qerr)
{
    fake_call *c = &F.calls[i];
    c->answered = 1;
    if (status < 0) {
        c->cb(status, NULL, "Connection refused", c->arg);
        return;
    }
    struct px_http_response r = {.body = body, .query_error = qerr};
    c->cb(status, &r, NULL, c->arg);
}

/* Answers every cancelled call still unanswered, as the host does later on the loop. */
static void answer_cancelled(void)
{
    for (size_t i = 0; i < F.ncalls; i++) {
        if (F.calls[i].cancelled && !F.calls[i].answered) {
            F.calls[i].answered = 1;
            F.calls[i].cb(-125, NULL, "cancelled", F.calls[i].arg);
        }
    }
}

static json_t *call_body(size_t i)
{
    return json_loads(F.calls[i].body, 0, NULL);
}

/* --- SQS client on the fake host ----------------------------------------------------------- */

static void on_recv_test(const px_sqs_error *err, const px_sqs_message *m, size_t n, void *arg)
{
    json_t *out = arg;
    json_object_set_new(out, "kind", json_integer(err->kind));
    json_object_set_new(out, "code", json_string(err->code));
    json_object_set_new(out, "message", json_string(err->message));
    json_object_set_new(out, "n", json_integer((json_int_t)n));
    if (n) {
        json_object_set_new(out, "id0", json_string(m[0].message_id));
        json_object_set_new(out, "body0", json_stringn(m[0].body, m[0].body_len));
        json_object_set(out, "attrs0", m[0].attributes ? m[0].attributes : json_null());
    }
}

static void test_sqs_request_framing_and_errors(void)
{
    fake_reset();
    px_sqs *c = NULL;
    px_sqs_config bad = {.region = "eu-west-1", .access_key = "AK"};
    PX_ASSERT_INT_EQ(px_sqs_create(&fake_api, NULL, &bad, &c), PX_EINVAL);
    px_sqs_config cfg = {.region = "eu-west-1", .access_key = "AK", .secret_key = "SK",
                         .session_token = "TOKEN"};
    PX_ASSERT_INT_EQ(px_sqs_create(&fake_api, NULL, &cfg, &c), 0);
    PX_ASSERT_STR_EQ(px_sqs_endpoint(c), "https://sqs.eu-west-1.amazonaws.com/");
    json_t *out = json_object();
    px_sqs_receive_opts o = {.queue_url = "https://sqs.eu-west-1.amazonaws.com/1/q",
                             .max_messages = 50, .wait_seconds = 99, .visibility_timeout = 30,
                             .all_attributes = 1};
    PX_ASSERT_INT_EQ(px_sqs_receive(c, &o, on_recv_test, out, NULL), 0);
    PX_ASSERT_INT_EQ(px_sqs_pending(c), 1);
    PX_ASSERT_STR_EQ(F.calls[0].url, "https://sqs.eu-west-1.amazonaws.com/");
    PX_ASSERT_STR_EQ(F.calls[0].target, "AmazonSQS.ReceiveMessage");
    PX_ASSERT_STR_EQ(F.calls[0].token, "TOKEN");
    /* Signed here, not by the HTTP client: every header sent but Authorization is signed, the
     * body sent is the body hashed, Host is the endpoint's. */
    PX_ASSERT_STR_EQ(F.calls[0].sigv4, "");
    PX_ASSERT_STR_EQ(F.calls[0].host, "sqs.eu-west-1.amazonaws.com");
    PX_ASSERT_INT_EQ(strlen(F.calls[0].date), PX_SIGV4_DATE_LEN);
    {
        char expect[512], prefix[160];
        snprintf(prefix, sizeof(prefix),
                 "AWS4-HMAC-SHA256 Credential=AK/%.8s/eu-west-1/sqs/aws4_request, "
                 "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, "
                 "Signature=", F.calls[0].date);
        PX_ASSERT(strncmp(F.calls[0].auth, prefix, strlen(prefix)) == 0);
        px_sigv4 s;
        PX_ASSERT_INT_EQ(px_sigv4_init(&s, "AK", "SK", "eu-west-1", "sqs"), 0);
        const char *sent[] = {"Content-Type: application/x-amz-json-1.0",
                              "X-Amz-Target: AmazonSQS.ReceiveMessage",
                              "X-Amz-Security-Token: TOKEN", NULL};
        PX_ASSERT_INT_EQ(px_sigv4_sign(&s, "POST", "sqs.eu-west-1.amazonaws.com", "/", sent,
                                       F.calls[0].body, strlen(F.calls[0].body),
                                       F.calls[0].date, expect, sizeof(expect)), 0);
        PX_ASSERT_STR_EQ(F.calls[0].auth, expect);
        px_sigv4_deinit(&s);
    }
    json_t *b = call_body(0);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(b, "QueueUrl")), o.queue_url);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(b, "MaxNumberOfMessages")), 10);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(b, "WaitTimeSeconds")), 20);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(b, "VisibilityTimeout")), 30);
    PX_ASSERT(json_is_array(json_object_get(b, "MessageSystemAttributeNames")));
    json_decref(b);
    answer(0, 200,
           "{\"Messages\":[{\"MessageId\":\"m-1\",\"ReceiptHandle\":\"rh-1\",\"Body\":\"{}\","
           "\"Attributes\":{\"ApproximateReceiveCount\":\"2\"}},{\"MessageId\":\"m-2\"}]}",
           NULL);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(out, "kind")), PX_SQS_OK);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(out, "n")), 1); /* m-2 has no handle */
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(out, "id0")), "m-1");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(out, "body0")), "{}");
    PX_ASSERT_INT_EQ(px_sqs_pending(c), 0);

    /* Errors: the code after '#', the message under either spelling. */
    PX_ASSERT_INT_EQ(px_sqs_receive(c, &o, on_recv_test, out, NULL), 0);
    answer(1, 400,
           "{\"__type\":\"com.amazonaws.sqs#QueueDoesNotExist\",\"message\":\"no such queue\"}",
           NULL);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(out, "kind")), PX_SQS_ECLIENT);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(out, "code")), "QueueDoesNotExist");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(out, "message")), "no such queue");
    PX_ASSERT_INT_EQ(px_sqs_receive(c, &o, on_recv_test, out, NULL), 0);
    answer(2, 400, "{\"Message\":\"slow down\"}", "AWS.SimpleQueueService.RequestThrottled;Sender");
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(out, "kind")), PX_SQS_ETHROTTLE);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(out, "message")), "slow down");
    PX_ASSERT_INT_EQ(px_sqs_receive(c, &o, on_recv_test, out, NULL), 0);
    answer(3, -111, NULL, NULL);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(out, "kind")), PX_SQS_ENET);
    PX_ASSERT_INT_EQ(px_sqs_receive(c, &o, on_recv_test, out, NULL), 0);
    answer(4, 502, "<html>bad gateway</html>", NULL);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(out, "kind")), PX_SQS_ESERVER);
    PX_ASSERT_INT_EQ(px_sqs_receive(c, &o, on_recv_test, out, NULL), 0);
    answer(5, 200, "not json", NULL);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(out, "kind")), PX_SQS_ESERVER);

    /* Cancel: the callback says so. Destroy: calls in flight are dropped without callback. */
    px_sqs_call *call = NULL;
    PX_ASSERT_INT_EQ(px_sqs_receive(c, &o, on_recv_test, out, &call), 0);
    px_sqs_cancel(call);
    answer_cancelled();
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(out, "kind")), PX_SQS_ECANCELLED);
    json_object_set_new(out, "kind", json_integer(99));
    PX_ASSERT_INT_EQ(px_sqs_receive(c, &o, on_recv_test, out, NULL), 0);
    px_sqs_destroy(c);
    PX_ASSERT(F.calls[7].cancelled);
    answer_cancelled();
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(out, "kind")), 99);
    json_decref(out);

    /* An endpoint: the "/" path is added; the queue URL stays in the body only. */
    cfg.endpoint = "http://127.0.0.1:4566";
    cfg.session_token = NULL;
    PX_ASSERT_INT_EQ(px_sqs_create(&fake_api, NULL, &cfg, &c), 0);
    PX_ASSERT_STR_EQ(px_sqs_endpoint(c), "http://127.0.0.1:4566/");
    px_sqs_destroy(c);
    cfg.endpoint = "ftp://127.0.0.1";
    PX_ASSERT_INT_EQ(px_sqs_create(&fake_api, NULL, &cfg, &c), PX_EINVAL);
    fake_reset();
}

/* The signer against the published AWS Signature Version 4 test suite (credentials AKIDEXAMPLE,
 * 2015-08-30 12:36:00 UTC, us-east-1, service "service"): post-vanilla, post-vanilla-query and
 * post-x-www-form-urlencoded. */
static void test_sigv4_matches_the_aws_test_suite(void)
{
    px_sigv4 s;
    PX_ASSERT_INT_EQ(px_sigv4_init(&s, "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                                   "us-east-1", "service"), 0);
    char date[PX_SIGV4_DATE_LEN + 1], auth[512];
    px_sigv4_date((time_t)1440938160, date);
    PX_ASSERT_STR_EQ(date, "20150830T123600Z");
    const char *scope = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
                        "aws4_request, ";
    char expect[512];

    PX_ASSERT_INT_EQ(px_sigv4_sign(&s, "POST", "example.amazonaws.com", "/", NULL, NULL, 0, date,
                                   auth, sizeof(auth)), 0);
    snprintf(expect, sizeof(expect), "%sSignedHeaders=host;x-amz-date, Signature="
             "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b", scope);
    PX_ASSERT_STR_EQ(auth, expect);

    PX_ASSERT_INT_EQ(px_sigv4_sign(&s, "POST", "example.amazonaws.com", "/?Param1=value1", NULL,
                                   NULL, 0, date, auth, sizeof(auth)), 0);
    snprintf(expect, sizeof(expect), "%sSignedHeaders=host;x-amz-date, Signature="
             "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11", scope);
    PX_ASSERT_STR_EQ(auth, expect);

    const char *form[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    PX_ASSERT_INT_EQ(px_sigv4_sign(&s, "POST", "example.amazonaws.com", "/", form,
                                   "Param1=value1", 13, date, auth, sizeof(auth)), 0);
    snprintf(expect, sizeof(expect), "%sSignedHeaders=content-type;host;x-amz-date, Signature="
             "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a", scope);
    PX_ASSERT_STR_EQ(auth, expect);

    /* The key is kept per day: another day derives another, and signs differently. */
    PX_ASSERT_STR_EQ(s.day, "20150830");
    px_sigv4_date((time_t)1440938160 + 86400, date);
    PX_ASSERT_INT_EQ(px_sigv4_sign(&s, "POST", "example.amazonaws.com", "/", form,
                                   "Param1=value1", 13, date, auth, sizeof(auth)), 0);
    PX_ASSERT_STR_EQ(s.day, "20150831");
    PX_ASSERT(strstr(auth, "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7") == NULL);
    /* Too small a buffer is refused rather than cut. */
    PX_ASSERT_INT_EQ(px_sigv4_sign(&s, "POST", "example.amazonaws.com", "/", NULL, NULL, 0, date,
                                   auth, 100), -1);
    px_sigv4_deinit(&s);
}

static void on_del_test(const px_sqs_error *err, const px_sqs_batch_failure *f, size_t n,
                        void *arg)
{
    json_t *out = arg;
    json_object_set_new(out, "kind", json_integer(err->kind));
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(list, json_pack("{s:i, s:b, s:s}", "index", (int)f[i].index,
                                              "sender", f[i].sender_fault, "code", f[i].code));
    }
    json_object_set_new(out, "failed", list);
}

static void test_sqs_delete_batch_partial_failure(void)
{
    fake_reset();
    px_sqs *c = NULL;
    px_sqs_config cfg = {.region = "us-east-1", .endpoint = "http://127.0.0.1:9/",
                         .access_key = "AK", .secret_key = "SK"};
    PX_ASSERT_INT_EQ(px_sqs_create(&fake_api, NULL, &cfg, &c), 0);
    const char *h[] = {"a", "b", "c"};
    json_t *out = json_object();
    PX_ASSERT_INT_EQ(px_sqs_delete_batch(c, "q", h, 0, on_del_test, out, NULL), PX_EINVAL);
    PX_ASSERT_INT_EQ(px_sqs_delete_batch(c, "q", h, 3, on_del_test, out, NULL), 0);
    PX_ASSERT_STR_EQ(F.calls[0].target, "AmazonSQS.DeleteMessageBatch");
    json_t *b = call_body(0);
    PX_ASSERT_INT_EQ(json_array_size(json_object_get(b, "Entries")), 3);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(
                         json_array_get(json_object_get(b, "Entries"), 2), "ReceiptHandle")),
                     "c");
    json_decref(b);
    answer(0, 200,
           "{\"Successful\":[{\"Id\":\"e0\"}],\"Failed\":[{\"Id\":\"e1\",\"SenderFault\":true,"
           "\"Code\":\"ReceiptHandleIsInvalid\",\"Message\":\"x\"}]}",
           NULL);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(out, "kind")), PX_SQS_OK);
    json_t *f = json_object_get(out, "failed");
    PX_ASSERT_INT_EQ(json_array_size(f), 2);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(json_array_get(f, 0), "index")), 1);
    PX_ASSERT(json_is_true(json_object_get(json_array_get(f, 0), "sender")));
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(json_array_get(f, 1), "index")), 2);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(f, 1), "code")), "Missing");
    json_decref(out);
    px_sqs_destroy(c);
    fake_reset();
}

/* The messages of a receive callback as JSON, every string kept byte for byte. */
static void keep_messages(const px_sqs_error *err, const px_sqs_message *m, size_t n, void *arg)
{
    PX_ASSERT_INT_EQ(err->kind, PX_SQS_OK);
    json_t *list = arg;
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_object();
        json_object_set_new(x, "id", json_string(m[i].message_id));
        json_object_set_new(x, "handle", json_string(m[i].receipt_handle));
        json_object_set_new(x, "md5", json_string(m[i].md5_of_body));
        json_object_set_new(x, "body", json_stringn(m[i].body, m[i].body_len));
        json_object_set(x, "attrs", m[i].attributes ? m[i].attributes : json_null());
        json_object_set(x, "mattrs", m[i].message_attributes ? m[i].message_attributes
                                                             : json_null());
        json_array_append_new(list, x);
    }
}

/* What the one-pass reading gives, or NULL when it is unsure. */
static json_t *read_fast(const char *text)
{
    px_sqs_answer a;
    if (px_sqs_answer_read(text, strlen(text), &a) < 0) {
        return NULL;
    }
    json_t *list = json_array();
    px_sqs_error ok = {.kind = PX_SQS_OK, .code = "", .message = ""};
    keep_messages(&ok, a.msgs, a.n, list);
    px_sqs_answer_deinit(&a);
    return list;
}

/* What the jansson reading gives. */
static json_t *read_tree(const char *text)
{
    json_t *root = json_loadb(text, strlen(text), JSON_ALLOW_NUL, NULL);
    json_t *list = json_array();
    if (!json_is_object(root)) {
        fprintf(stderr, "%s:%d: not a JSON object: %s\n", __FILE__, __LINE__, text);
        px_test_failed = 1;
        json_decref(root);
        return list;
    }
    px_sqs_call call = {.kind = CALL_RECEIVE, .receive_cb = keep_messages, .arg = list};
    px_sqs_error ok = {.kind = PX_SQS_OK, .code = "", .message = ""};
    deliver_receive(&call, &ok, root);
    json_decref(root);
    return list;
}

static void test_sqs_answer_read_in_one_pass_as_jansson_reads_it(void)
{
    static const char *same[] = {
        /* SQS's layout: the body a JSON text in a string, every escape form in it */
        "{\"Messages\":[{\"MessageId\":\"m-1\",\"ReceiptHandle\":\"AQEB+x/y==\",\"MD5OfBody\":"
        "\"0123abcd\",\"Body\":\"{\\\"uuid\\\":\\\"u\\\\/1\\\",\\\"job\\\":\\\"a\\\\\\\\b\\\","
        "\\\"t\\\":\\\"\\\\t\\\\n\\\"}\\n\\r\\t\\b\\f\\/ \\u00e9\\u20ac\\ud83d\\ude00 \xc3\xa9"
        "\xe2\x82\xac\xf0\x9f\x98\x80 nul:\\u0000.\",\"Attributes\":{\"SentTimestamp\":"
        "\"1700000000000\",\"ApproximateReceiveCount\":\"1\"},\"MessageAttributes\":{\"k\":"
        "{\"DataType\":\"String\",\"StringValue\":\"v\"},\"n\":{\"DataType\":\"Number\","
        "\"StringValue\":\"5\"}}},{\"ReceiptHandle\":\"rh-2\",\"Body\":\"\"}]}",
        /* white space anywhere, unknown members of any type, the last of duplicate keys */
        " { \"Other\" : [1, -2.5e+10, true, false, null, {\"a\": [[]]}, \"s\"] ,\n \"Messages\""
        " : [ { \"Body\" : \"first\" , \"Extra\" : {\"x\": 0.25} , \"Body\" : \"second\" ,"
        " \"ReceiptHandle\" : \"rh\" , \"Attributes\" : \"not an object\" } ] } \n",
        /* left out: no handle, an empty or non-string handle; a non-string body reads as "" */
        "{\"Messages\":[{\"MessageId\":\"m-2\"},{\"ReceiptHandle\":\"\"},{\"ReceiptHandle\":7},"
        "{\"ReceiptHandle\":\"rh-3\",\"Body\":{\"a\":1},\"MessageId\":null}]}",
        "{\"Messages\":[]}",
        "{}",
    };
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        json_t *fast = read_fast(same[i]), *tree = read_tree(same[i]);
        PX_ASSERT(fast != NULL);
        PX_ASSERT(json_equal(fast, tree));
        json_decref(fast);
        json_decref(tree);
    }
    /* The escapes decoded byte for byte, \u0000 included. */
    json_t *fast = read_fast(same[0]);
    size_t blen = json_string_length(json_object_get(json_array_get(fast, 0), "body"));
    const char *body = json_string_value(json_object_get(json_array_get(fast, 0), "body"));
    static const char want[] = "{\"uuid\":\"u\\/1\",\"job\":\"a\\\\b\",\"t\":\"\\t\\n\"}\n\r\t\b"
                               "\f/ \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 \xc3\xa9\xe2\x82\xac"
                               "\xf0\x9f\x98\x80 nul:\0.";
    PX_ASSERT_INT_EQ(blen, sizeof(want) - 1);
    PX_ASSERT(memcmp(body, want, blen) == 0);
    json_decref(fast);
    fast = read_fast(same[2]); /* only rh-3 is kept */
    PX_ASSERT_INT_EQ(json_array_size(fast), 1);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(fast, 0), "handle")), "rh-3");
    json_decref(fast);

    /* Anything else is left to jansson. */
    static const char *unsure[] = {
        "not json", "", "{\"Messages\":[]} x", "{\"Messages\":{}}", "[]",
        "{\"Messages\":[{\"ReceiptHandle\":\"a\\ud800\"}]}",      /* a lone surrogate */
        "{\"Messages\":[{\"ReceiptHandle\":\"a\\x\"}]}",          /* a bad escape */
        "{\"Messages\":[{\"Receipt\\u0048andle\":\"a\"}]}",       /* a key with an escape */
        "{\"Messages\":[{\"ReceiptHandle\":\"a\xff\"}]}",         /* not UTF-8 */
        "{\"Messages\":[{\"ReceiptHandle\":\"a\tb\"}]}",          /* a raw control character */
        "{\"N\":12345678901234567890,\"Messages\":[]}",          /* a huge integer */
        "{\"N\":01,\"Messages\":[]}", "{\"Messages\":[],}", "{\"Messages\":[],\"Messages\":[]}",
        "{\"Messages\":[{\"ReceiptHandle\":\"a\"}]", "{\"Messages\":[{\"Body\":\"a}]}",
    };
    for (size_t i = 0; i < sizeof(unsure) / sizeof(unsure[0]); i++) {
        json_t *got = read_fast(unsure[i]);
        if (got) {
            fprintf(stderr, "read, not unsure: %s\n", unsure[i]);
        }
        PX_ASSERT(got == NULL);
    }
}

static void test_sqs_delete_batch_body_is_what_jansson_writes(void)
{
    const char *h[] = {"AQEB+x/y==", "quo\"te back\\slash", "ctl\x01\x1f\n\t\r\b\f",
                       "\xc3\xa9\xe2\x82\xac", "", "e5", "e6", "e7", "e8", "last"};
    json_t *entries = json_array();
    for (size_t i = 0; i < 10; i++) {
        char id[8];
        snprintf(id, sizeof(id), "e%zu", i);
        json_array_append_new(entries, json_pack("{s:s, s:s}", "Id", id, "ReceiptHandle", h[i]));
    }
    json_t *p = json_pack("{s:s, s:o}", "QueueUrl", "http://127.0.0.1:9/000/q\"x", "Entries",
                          entries);
    char *want = json_dumps(p, JSON_COMPACT);
    char *got = delete_batch_body("http://127.0.0.1:9/000/q\"x", h, 10);
    PX_ASSERT_STR_EQ(got, want);
    free(got);
    free(want);
    json_decref(p);
    const char *bad[] = {"ok", "\xff"};
    PX_ASSERT(delete_batch_body("q", bad, 2) == NULL); /* jansson refuses it too */
}

/* --- The plugin on the fake host ----------------------------------------------------------- */

static void *start_plugin(const char *extra)
{
    fake_reset();
    PX_PLUGIN_ENTRY(&fake_api);
    char text[512];
    snprintf(text, sizeof(text),
             "{\"queue_url\": \"http://sqs.us-east-1.localhost/0/q\", \"region\": "
             "\"us-east-1\", \"endpoint\": \"http://127.0.0.1:9\", \"access_key_id\": \"AK\", "
             "\"secret_access_key\": \"SK\", \"session_token\": null, \"pollers\": 2, "
             "\"wait_time\": 20000, \"max_messages\": 10, \"visibility_timeout\": 60000, "
             "\"backoff\": 100, \"max_backoff\": 2000, \"max_message_size\": 1000, "
             "\"on_invalid\": \"dead_letter\", \"hints\": true %s}",
             extra ? extra : "");
    json_t *cfg = json_loads(text, 0, NULL);
    void *state = NULL;
    int rc = desc.init(NULL, cfg, &state);
    json_decref(cfg);
    if (rc < 0) {
        return NULL;
    }
    desc.start(state);
    return state;
}

static char *receive_answer(const char *const *bodies, size_t n)
{
    json_t *msgs = json_array();
    for (size_t i = 0; i < n; i++) {
        char id[32], rh[32];
        snprintf(id, sizeof(id), "msg-%zu", i);
        snprintf(rh, sizeof(rh), "rh-%zu", i);
        json_array_append_new(msgs, json_pack("{s:s, s:s, s:s, s:{s:s, s:s}, s:{s:{s:s, s:s}}}",
                                              "MessageId", id, "ReceiptHandle", rh, "Body",
                                              bodies[i], "Attributes",
                                              "ApproximateReceiveCount", "1", "SentTimestamp",
                                              "1700000000000", "MessageAttributes", "tenant",
                                              "DataType", "String", "StringValue", "acme"));
    }
    json_t *root = json_pack("{s:o}", "Messages", msgs);
    char *s = json_dumps(root, 0);
    json_decref(root);
    return s;
}

static void test_plugin_emits_dead_letters_and_deletes_after_persist(void)
{
    void *st = start_plugin(NULL);
    PX_ASSERT(st != NULL);
    PX_ASSERT_INT_EQ(F.ncalls, 2); /* two pollers */
    PX_ASSERT_STR_EQ(F.calls[0].target, "AmazonSQS.ReceiveMessage");
    PX_ASSERT_STR_EQ(F.calls[0].url, "http://127.0.0.1:9/");
    size_t len;
    char *user_body = fixture("user_created", &len);
    char big[1200];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    const char *bodies[] = {user_body, "not json at all", "{\"job\": \"invoice_paid\", \"uuid\": "
                            "\"u-9\", \"backoff\": \"1,5\", \"maxTries\": 0}",
                            "{\"uuid\": \"u-3\"}", big,
                            "{\"job\": \"user_deleted\", \"data\": {\"name\": \"n\"}}"};
    char *ans = receive_answer(bodies, 6);
    answer(0, 200, ans, NULL);
    free(ans);
    free(user_body);
    PX_ASSERT_INT_EQ(F.nouts, 6);
    /* 0: the seed's user_created */
    px_event *ev = F.outs[0].ev;
    PX_ASSERT(ev != NULL);
    PX_ASSERT_STR_EQ(ev->type, "ezzing.user_created");
    PX_ASSERT_STR_EQ(ev->id, "msg-0");
    PX_ASSERT_STR_EQ(ev->dedupe, "msg-0");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(ev->meta, "uuid")),
                     "19ee5546-a52a-410c-b834-32165c0280b7");
    PX_ASSERT_INT_EQ(ev->max_attempts, 5);
    PX_ASSERT_INT_EQ(ev->timeout_ms, 60000);
    PX_ASSERT_INT_EQ(ev->nbackoff, 0);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(ev->payload, "data"),
                                                       "company_name")), "Company Name");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(ev->meta, "MessageId")), "msg-0");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(ev->meta, "ApproximateReceiveCount")),
                     "1");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(ev->meta, "attr.tenant")), "acme");
    /* 1: not JSON -> dead letter, raw body kept, SQS attributes as meta */
    PX_ASSERT(F.outs[1].ev == NULL);
    PX_ASSERT_STR_EQ(F.outs[1].raw, "not json at all");
    PX_ASSERT_STR_HAS(F.outs[1].reason, "not JSON");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(F.outs[1].meta, "MessageId")), "msg-1");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(F.outs[1].meta, "SentTimestamp")),
                     "1700000000000");
    /* 2: unknown job: emitted anyway and counted; backoff hints; maxTries 0 = no narrowing */
    PX_ASSERT(F.outs[2].ev != NULL);
    PX_ASSERT_STR_EQ(F.outs[2].ev->type, "ezzing.invoice_paid");
    PX_ASSERT_INT_EQ(F.outs[2].ev->nbackoff, 2);
    PX_ASSERT_INT_EQ(F.outs[2].ev->backoff[1], 5000);
    PX_ASSERT_INT_EQ(F.outs[2].ev->max_attempts, 0);
    PX_ASSERT(F.unknown_count == 1);
    PX_ASSERT_INT_EQ(logs_with("unknown job emitted as is job=invoice_paid"), 1);
    /* 3: no job; 4: too large; 5: a known job missing fields */
    PX_ASSERT_STR_EQ(F.outs[3].reason, "no job");
    PX_ASSERT_STR_HAS(F.outs[4].reason, "body too large: 1199 bytes");
    PX_ASSERT_INT_EQ(F.outs[4].raw_len, 1199);
    PX_ASSERT_STR_EQ(F.outs[5].reason, "invalid user_deleted: data.email: missing");

    /* Nothing deleted before the host reports the outcomes. */
    PX_ASSERT_INT_EQ(F.ncalls, 3); /* the poller polls again meanwhile */
    PX_ASSERT_STR_EQ(F.calls[2].target, "AmazonSQS.ReceiveMessage");
    for (size_t i = 0; i < 6; i++) {
        F.outs[i].cb(i == 2 ? PX_EBUSY : PX_OK, F.outs[i].arg);
    }
    PX_ASSERT_INT_EQ(F.ncalls, 4);
    PX_ASSERT_STR_EQ(F.calls[3].target, "AmazonSQS.DeleteMessageBatch");
    json_t *b = call_body(3);
    json_t *entries = json_object_get(b, "Entries");
    PX_ASSERT_INT_EQ(json_array_size(entries), 5); /* not the refused one */
    for (size_t i = 0; i < 5; i++) {
        const char *rh = json_string_value(json_object_get(json_array_get(entries, i),
                                                           "ReceiptHandle"));
        PX_ASSERT(rh && strcmp(rh, "rh-2") != 0);
    }
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(b, "QueueUrl")),
                     "http://sqs.us-east-1.localhost/0/q");
    json_decref(b);
    PX_ASSERT_INT_EQ(logs_with("back-pressure"), 1);
    answer(3, 200, "{\"Successful\":[{\"Id\":\"e0\"},{\"Id\":\"e1\"},{\"Id\":\"e2\"},"
                   "{\"Id\":\"e3\"},{\"Id\":\"e4\"}]}", NULL);

    /* stop + drain: long polls are cancelled; drained once they have answered. */
    desc.stop(st);
    desc.drain(st);
    PX_ASSERT_INT_EQ(F.drained, 0);
    answer_cancelled();
    PX_ASSERT_INT_EQ(F.drained, 1);
    PX_ASSERT_INT_EQ(F.ncalls, 4); /* no poll after stop */
    desc.destroy(st);
    fake_reset();
}

/* Persisted messages wait in one queue for their delete: at most `pollers` DeleteMessageBatch are
 * in flight (as many as the receives, so 2 x pollers requests at most), and what waited goes out
 * in full batches; a drain waits for the queue to empty. */
static void test_plugin_caps_deletes_in_flight_and_batches_what_waits(void)
{
    void *st = start_plugin(NULL); /* 2 pollers */
    PX_ASSERT(st != NULL);
    const char *bodies[] = {"x", "y", "z"}; /* not JSON: dead letters, deleted all the same */
    char *ans = receive_answer(bodies, 3);
    for (size_t i = 0; i < 4; i++) { /* receives 0 and 1, then each poller's next one */
        PX_ASSERT_STR_EQ(F.calls[i].target, "AmazonSQS.ReceiveMessage");
        answer(i, 200, ans, NULL);
    }
    free(ans);
    PX_ASSERT_INT_EQ(F.ncalls, 6); /* 2 receives in flight */
    PX_ASSERT_INT_EQ(F.nouts, 12);
    for (size_t i = 0; i < 12; i++) {
        F.outs[i].cb(PX_OK, F.outs[i].arg);
    }
    /* 4 batches persisted: 2 deletes sent, the 2 other batches wait. */
    PX_ASSERT_INT_EQ(F.ncalls, 8);
    PX_ASSERT_STR_EQ(F.calls[6].target, "AmazonSQS.DeleteMessageBatch");
    PX_ASSERT_STR_EQ(F.calls[7].target, "AmazonSQS.DeleteMessageBatch");
    desc.stop(st);
    desc.drain(st);
    answer_cancelled();
    PX_ASSERT_INT_EQ(F.drained, 0); /* deletes still to do */
    answer(6, 200, "{\"Successful\":[{\"Id\":\"e0\"},{\"Id\":\"e1\"},{\"Id\":\"e2\"}]}", NULL);
    PX_ASSERT_INT_EQ(F.ncalls, 9); /* what waited goes in one delete */
    PX_ASSERT_STR_EQ(F.calls[8].target, "AmazonSQS.DeleteMessageBatch");
    json_t *b = call_body(8);
    PX_ASSERT_INT_EQ(json_array_size(json_object_get(b, "Entries")), 6);
    json_decref(b);
    answer(7, 200, "{\"Successful\":[{\"Id\":\"e0\"},{\"Id\":\"e1\"},{\"Id\":\"e2\"}]}", NULL);
    PX_ASSERT_INT_EQ(F.drained, 0);
    answer(8, 200, "{\"Successful\":[{\"Id\":\"e0\"},{\"Id\":\"e1\"},{\"Id\":\"e2\"},"
                   "{\"Id\":\"e3\"},{\"Id\":\"e4\"},{\"Id\":\"e5\"}]}", NULL);
    PX_ASSERT_INT_EQ(logs_with("delete"), 0); /* nothing failed or abandoned */
    PX_ASSERT_INT_EQ(F.drained, 1);
    PX_ASSERT_INT_EQ(F.ncalls, 9);
    desc.destroy(st);
    fake_reset();
}

static void test_plugin_logs_once_per_health_change_and_backs_off(void)
{
    void *st = start_plugin(NULL);
    PX_ASSERT(st != NULL);
    /* Both pollers fail over and over: each waits a growing, jittered delay before retrying. */
    size_t answered = 0;
    uint64_t last_wait = 0;
    for (int round = 0; round < 6; round++) {
        size_t end = F.ncalls;
        for (; answered < end; answered++) {
            answer(answered, -111, NULL, NULL);
        }
        PX_ASSERT_INT_EQ(F.ncalls, end); /* never retried at once */
        last_wait = F.timers[F.ntimers - 1].ms;
        PX_ASSERT(last_wait >= 50);
        PX_ASSERT_INT_EQ(fire_timers(), 2);
    }
    PX_ASSERT(last_wait >= 1000 && last_wait <= 2000); /* capped at max_backoff */
    PX_ASSERT_INT_EQ(logs_with("sqs unreachable"), 1);
    /* A refusal is a new state: logged once too. */
    for (int round = 0; round < 3; round++) {
        size_t end = F.ncalls;
        for (; answered < end; answered++) {
            answer(answered, 400, "{\"__type\":\"com.amazonaws.sqs#QueueDoesNotExist\"}", NULL);
        }
        fire_timers();
    }
    PX_ASSERT_INT_EQ(logs_with("sqs refused the request status=400 code=QueueDoesNotExist"), 1);
    PX_ASSERT_INT_EQ(logs_with("reachable again"), 0);
    answer(answered++, 200, "{}", NULL);
    PX_ASSERT_INT_EQ(logs_with("sqs reachable again"), 1);
    PX_ASSERT_STR_HAS(F.logs[F.nlogs - 1], "failed_requests=18");
    answer(answered++, 200, "{\"Messages\":[]}", NULL);
    PX_ASSERT_INT_EQ(logs_with("sqs reachable again"), 1);
    PX_ASSERT_INT_EQ(logs_with("sqs unreachable"), 1);
    for (size_t i = 0; i < F.nlogs; i++) {
        PX_ASSERT(strstr(F.logs[i], "SK") == NULL); /* never the secret */
    }
    desc.stop(st);
    desc.drain(st);
    answer_cancelled();
    PX_ASSERT_INT_EQ(F.drained, 1);
    desc.destroy(st);
    fake_reset();
}

static void test_plugin_rejects_bad_options(void)
{
    fake_reset();
    PX_PLUGIN_ENTRY(&fake_api);
    json_t *cfg = json_pack("{s:s, s:s, s:n, s:s, s:s, s:n, s:i, s:i, s:i, s:i, s:i, s:i, s:i, "
                            "s:s, s:b}",
                            "queue_url", "q", "region", "eu-west-1", "endpoint",
                            "access_key_id", "AK", "secret_access_key", "SK", "session_token",
                            "pollers", 2, "wait_time", 20000, "max_messages", 11,
                            "visibility_timeout", 60000, "backoff", 100, "max_backoff", 1000,
                            "max_message_size", 1000, "on_invalid", "dead_letter", "hints", 1);
    void *st = NULL;
    PX_ASSERT(desc.init(NULL, cfg, &st) < 0);
    PX_ASSERT_INT_EQ(logs_with("max_messages must be between 1 and 10"), 1);
    json_object_set_new(cfg, "max_messages", json_integer(10));
    json_object_set_new(cfg, "on_invalid", json_string("ignore"));
    PX_ASSERT(desc.init(NULL, cfg, &st) < 0);
    PX_ASSERT_INT_EQ(logs_with("on_invalid must be"), 1);
    json_object_set_new(cfg, "on_invalid", json_string("emit"));
    json_object_set_new(cfg, "secret_access_key", json_null());
    unsetenv("AWS_SECRET_ACCESS_KEY");
    PX_ASSERT(desc.init(NULL, cfg, &st) < 0);
    PX_ASSERT_INT_EQ(logs_with("no AWS credentials"), 1);
    setenv("AWS_SECRET_ACCESS_KEY", "FROM-ENV", 1);
    PX_ASSERT_INT_EQ(desc.init(NULL, cfg, &st), 0);
    unsetenv("AWS_SECRET_ACCESS_KEY");
    desc.destroy(st);
    json_decref(cfg);
    fake_reset();
}

/* Starts the plugin and has its first poll receive `n` bodies: their outcomes are
 * F.outs[0..n-1]. Returns the plugin's state, NULL when it did not start. */
static void *emit_bodies(const char *const *bodies, size_t n)
{
    void *st = start_plugin(NULL);
    if (st) {
        char *ans = receive_answer(bodies, n);
        answer(0, 200, ans, NULL);
        free(ans);
    }
    return st;
}

static void finish_plugin(void *st)
{
    for (size_t i = 0; i < F.nouts; i++) {
        F.outs[i].cb(PX_OK, F.outs[i].arg);
    }
    for (size_t i = 0; i < F.ncalls; i++) {
        if (!F.calls[i].answered &&
            strcmp(F.calls[i].target, "AmazonSQS.DeleteMessageBatch") == 0) {
            json_t *req = call_body(i), *ok = json_array(), *entry;
            size_t k;
            json_array_foreach(json_object_get(req, "Entries"), k, entry) {
                json_array_append_new(ok, json_pack("{s:O}", "Id", json_object_get(entry, "Id")));
            }
            json_t *ans = json_pack("{s:o}", "Successful", ok);
            char *text = json_dumps(ans, JSON_COMPACT);
            answer(i, 200, text, NULL);
            free(text);
            json_decref(ans);
            json_decref(req);
        }
    }
    desc.stop(st);
    desc.drain(st);
    answer_cancelled();
    desc.destroy(st);
    fake_reset();
}

static void test_event_id_is_the_message_id_not_the_reused_uuid(void)
{
    size_t len;
    char *created = fixture("user_created", &len), *deleted = fixture("user_deleted", &len);
    const char *bodies[] = {created, deleted};
    void *st = emit_bodies(bodies, 2);
    free(created);
    free(deleted);
    PX_ASSERT(st != NULL);
    PX_ASSERT_INT_EQ(F.nouts, 2);
    px_event *a = F.outs[0].ev, *b = F.outs[1].ev;
    PX_ASSERT(a && b);
    PX_ASSERT_STR_EQ(a->type, "ezzing.user_created");
    PX_ASSERT_STR_EQ(b->type, "ezzing.user_deleted");
    /* The seed gives both jobs one uuid: it stays as metadata, the ids differ. */
    const char *ua = json_string_value(json_object_get(a->meta, "uuid"));
    const char *ub = json_string_value(json_object_get(b->meta, "uuid"));
    PX_ASSERT(ua && ub);
    PX_ASSERT_STR_EQ(ua, ub);
    PX_ASSERT_STR_EQ(ua, json_string_value(json_object_get(a->payload, "uuid")));
    PX_ASSERT_STR_EQ(a->id, "msg-0");
    PX_ASSERT_STR_EQ(b->id, "msg-1");
    PX_ASSERT_STR_EQ(a->dedupe, "msg-0");
    PX_ASSERT_STR_EQ(b->dedupe, "msg-1");
    PX_ASSERT_STR_EQ(a->subject, "msg-0");
    finish_plugin(st);
}

static void test_laravel_attempt_rules_become_hints(void)
{
    const char *bodies[] = {
        /* 0: retryUntil replaces maxTries: no attempt cap, a deadline at the end of that second */
        "{\"job\": \"x\", \"maxTries\": 5, \"retryUntil\": 1700000000}",
        /* 1: maxExceptions below maxTries caps the attempts */
        "{\"job\": \"x\", \"maxTries\": 5, \"maxExceptions\": 2}",
        /* 2: maxExceptions still applies with retryUntil */
        "{\"job\": \"x\", \"maxTries\": 5, \"maxExceptions\": 3, \"retryUntil\": \"1700000000\"}",
        /* 3: maxTries below maxExceptions wins */
        "{\"job\": \"x\", \"maxTries\": 2, \"maxExceptions\": 7, \"failOnTimeout\": false}",
        /* 4: failOnTimeout; maxExceptions 0 fails at the first exception */
        "{\"job\": \"x\", \"maxTries\": 0, \"maxExceptions\": 0, \"failOnTimeout\": true}",
        /* 5: the seed's form: maxTries 5, nothing else */
        "{\"job\": \"x\", \"maxTries\": 5, \"maxExceptions\": null, \"retryUntil\": null}",
    };
    void *st = emit_bodies(bodies, 6);
    PX_ASSERT(st != NULL);
    PX_ASSERT_INT_EQ(F.nouts, 6);
    px_event *e[6];
    for (size_t i = 0; i < 6; i++) {
        e[i] = F.outs[i].ev;
        PX_ASSERT(e[i] != NULL);
    }
    PX_ASSERT_INT_EQ(e[0]->max_attempts, 0);
    PX_ASSERT_INT_EQ(e[0]->deadline_ms, 1700000000999LL);
    PX_ASSERT_INT_EQ(e[1]->max_attempts, 2);
    PX_ASSERT_INT_EQ(e[1]->deadline_ms, 0);
    PX_ASSERT_INT_EQ(e[2]->max_attempts, 3);
    PX_ASSERT_INT_EQ(e[2]->deadline_ms, 1700000000999LL);
    PX_ASSERT_INT_EQ(e[3]->max_attempts, 2);
    PX_ASSERT_INT_EQ(e[3]->fail_on_timeout, 0);
    PX_ASSERT_INT_EQ(e[4]->max_attempts, 1);
    PX_ASSERT_INT_EQ(e[4]->fail_on_timeout, 1);
    PX_ASSERT_INT_EQ(e[5]->max_attempts, 5);
    PX_ASSERT_INT_EQ(e[5]->deadline_ms, 0);
    PX_ASSERT_INT_EQ(e[5]->fail_on_timeout, 0);
    finish_plugin(st);

    /* A host that does not know the new hints: the events still go, and it is said once. */
    F.old_hints_only = 1;
    st = start_plugin(NULL);
    F.old_hints_only = 1;
    char *ans = receive_answer(bodies, 6);
    answer(0, 200, ans, NULL);
    free(ans);
    PX_ASSERT_INT_EQ(F.nouts, 6);
    PX_ASSERT(F.outs[0].ev && F.outs[4].ev);
    PX_ASSERT_INT_EQ(logs_with("this host does not apply"), 1);
    finish_plugin(st);
}

static void test_class_based_jobs_check_what_they_carry(void)
{
    ezzing_envelope e;
    char why[256];
    /* Laravel's object payload: the business fields are inside the serialized command. */
    const char *object_job =
        "{\"uuid\": \"6f1c\", \"displayName\": \"App\\\\Jobs\\\\UserCreated\", "
        "\"job\": \"Illuminate\\\\Queue\\\\CallQueuedHandler@call\", \"maxTries\": 5, "
        "\"data\": {\"commandName\": \"App\\\\Jobs\\\\UserCreated\", "
        "\"command\": \"O:20:\\\"App\\\\Jobs\\\\UserCreated\\\":1:{s:5:\\\"email\\\";}\"}}";
    PX_ASSERT_INT_EQ(parse_str(object_job, &e, why, sizeof(why)), EZZING_OK);
    PX_ASSERT_STR_EQ(e.topic, "user_created");
    PX_ASSERT(e.class_based);
    PX_ASSERT_INT_EQ(ezzing_envelope_validate(&e, why, sizeof(why)), EZZING_VALID);
    ezzing_envelope_deinit(&e);
    /* ... and one without its command is still refused, naming the field. */
    PX_ASSERT_INT_EQ(parse_str("{\"job\": \"Illuminate\\\\Queue\\\\CallQueuedHandler@call\", "
                               "\"data\": {\"commandName\": \"App\\\\Jobs\\\\UserDeleted\"}}",
                               &e, why, sizeof(why)), EZZING_OK);
    PX_ASSERT_INT_EQ(ezzing_envelope_validate(&e, why, sizeof(why)), EZZING_INVALID);
    PX_ASSERT_STR_EQ(why, "data.command: missing");
    ezzing_envelope_deinit(&e);
    /* A string job (Queue::push('Class@method', $data)) carries its data as is: checked. */
    PX_ASSERT_INT_EQ(parse_str("{\"job\": \"App\\\\Jobs\\\\UserCreated@handle\", "
                               "\"displayName\": \"App\\\\Jobs\\\\UserCreated\", "
                               "\"data\": {\"name\": \"n\"}}", &e, why, sizeof(why)), EZZING_OK);
    PX_ASSERT_STR_EQ(e.topic, "user_created");
    PX_ASSERT(!e.class_based);
    PX_ASSERT_INT_EQ(ezzing_envelope_validate(&e, why, sizeof(why)), EZZING_INVALID);
    PX_ASSERT_STR_EQ(why, "data.email: missing");
    ezzing_envelope_deinit(&e);
}

PX_TEST_MAIN(PX_TEST(test_every_seed_example_parses_and_validates),
             PX_TEST(test_quirks_are_accepted),
             PX_TEST(test_missing_or_wrong_fields_are_invalid),
             PX_TEST(test_bad_bodies_and_job_names),
             PX_TEST(test_retry_fields),
             PX_TEST(test_sqs_classify_and_backoff),
             PX_TEST(test_sigv4_matches_the_aws_test_suite),
             PX_TEST(test_sqs_request_framing_and_errors),
             PX_TEST(test_sqs_delete_batch_partial_failure),
             PX_TEST(test_sqs_answer_read_in_one_pass_as_jansson_reads_it),
             PX_TEST(test_sqs_delete_batch_body_is_what_jansson_writes),
             PX_TEST(test_plugin_emits_dead_letters_and_deletes_after_persist),
             PX_TEST(test_plugin_caps_deletes_in_flight_and_batches_what_waits),
             PX_TEST(test_plugin_logs_once_per_health_change_and_backs_off),
             PX_TEST(test_plugin_rejects_bad_options),
             PX_TEST(test_event_id_is_the_message_id_not_the_reused_uuid),
             PX_TEST(test_laravel_attempt_rules_become_hints),
             PX_TEST(test_class_based_jobs_check_what_they_carry))
