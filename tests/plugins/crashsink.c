/* crashsink: a sink that takes the whole process down on deliveries whose payload has
 * "crash": true, and otherwise records every delivery as a JSON line in `file`
 * ({"event","seq","attempt","outcome","pid"}), like testsink. How it dies is `mode`, or the
 * payload's "crash_mode": "abort" or "segv" inside deliver, or SIGSEGV (as a NULL dereference
 * would raise it) in a callback the delivery set up: "http" (the response of a POST of the
 * payload to `url`), "timer", "post" (posted from deliver) or "thread_post" (posted from a worker
 * thread). Before dying it records the attempt with outcome "crashing", so a test can count how
 * often each delivery brought the host down. A payload with "complete_twice": true is completed
 * twice, the second time with PX_EREJECT, which the host must refuse. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <plexus/sdk.h>

static const px_host_api *host;

typedef struct csink {
    px_plugin_ctx *ctx;
    FILE *out;
    char *mode;
    const char *url; /* in cfg, kept by the host until destroy */
    px_timer *timer;
} csink;

static const px_option options[] = {
    {"file", PX_OPT_STRING, PX_OPT_REQUIRED, NULL, "JSON lines of every delivery attempt"},
    {"mode", PX_OPT_STRING, 0, "abort", "how to die: abort, segv, http, timer, post, thread_post"},
    {"url", PX_OPT_STRING, 0, NULL, "where mode http posts the payload"},
    {NULL, 0, 0, NULL, NULL},
};

static void record(csink *s, px_delivery *d, const char *outcome)
{
    const px_event *ev = host->delivery_event(d);
    const json_t *payload = host->event_payload(ev);
    json_t *line = json_object();
    json_object_set_new(line, "event", json_string(host->event_id(ev)));
    json_t *seq = json_object_get(payload, "seq");
    json_object_set(line, "seq", seq ? seq : json_null());
    json_object_set_new(line, "attempt", json_integer(host->delivery_attempt(d)));
    json_object_set_new(line, "outcome", json_string(outcome));
    json_object_set_new(line, "pid", json_integer((json_int_t)getpid()));
    char *text = json_dumps(line, JSON_COMPACT);
    fprintf(s->out, "%s\n", text);
    fflush(s->out);
    free(text);
    json_decref(line);
}

static void die(void *arg)
{
    (void)arg;
    raise(SIGSEGV);
}

static void on_response(int status, const px_http_response *resp, const char *error, void *arg)
{
    (void)status, (void)resp, (void)error;
    die(arg);
}

static void *post_from_thread(void *arg)
{
    csink *s = arg;
    host->post(s->ctx, die, s);
    return NULL;
}

/* Sets up the callback that dies for mode `mode`; returns 0, or -1 for a mode that dies here. */
static int arm(csink *s, px_delivery *d, const char *mode)
{
    if (strcmp(mode, "http") == 0) {
        const char *text = host->event_payload_text(host->delivery_event(d), NULL);
        px_http_options opt = {.size = sizeof(opt), .method = "POST", .url = s->url,
                               .body = text, .body_len = strlen(text), .timeout_ms = 10000};
        return host->http_request(s->ctx, &opt, on_response, s, NULL) < 0 ? -1 : 0;
    }
    if (strcmp(mode, "timer") == 0) {
        return host->timer_start(s->ctx, 1, 0, die, s, &s->timer) < 0 ? -1 : 0;
    }
    if (strcmp(mode, "post") == 0) {
        return host->post(s->ctx, die, s) < 0 ? -1 : 0;
    }
    if (strcmp(mode, "thread_post") == 0) {
        pthread_t t;
        if (pthread_create(&t, NULL, post_from_thread, s) != 0) {
            return -1;
        }
        pthread_detach(t);
        return 0;
    }
    return -1;
}

static void cs_deliver(void *state, px_delivery *d)
{
    csink *s = state;
    const json_t *payload = host->event_payload(host->delivery_event(d));
    if (json_is_true(json_object_get(payload, "crash"))) {
        const char *mode = json_string_value(json_object_get(payload, "crash_mode"));
        if (!mode) {
            mode = s->mode;
        }
        record(s, d, "crashing");
        if (strcmp(mode, "segv") == 0) {
            raise(SIGSEGV);
        }
        if (strcmp(mode, "abort") == 0 || arm(s, d, mode) < 0) {
            abort();
        }
        return; /* the delivery stays open until the callback takes the process down */
    }
    record(s, d, "ok");
    host->complete(d, PX_OK, "recorded", 0);
    if (json_is_true(json_object_get(payload, "complete_twice"))) {
        host->complete(d, PX_EREJECT, "second answer", 0);
    }
}

static int cs_init(px_plugin_ctx *ctx, const json_t *cfg, void **state)
{
    csink *s = calloc(1, sizeof(*s));
    if (!s) {
        return PX_EINVAL;
    }
    s->ctx = ctx;
    const char *file = json_string_value(json_object_get(cfg, "file"));
    s->out = fopen(file, "a");
    if (!s->out) {
        host->log(ctx, PX_LOG_ERROR, "cannot open file=%s", file);
        free(s);
        return PX_EINVAL;
    }
    const char *mode = json_string_value(json_object_get(cfg, "mode"));
    s->mode = strdup(mode ? mode : "abort");
    s->url = json_string_value(json_object_get(cfg, "url"));
    *state = s;
    return 0;
}

static void cs_destroy(void *state)
{
    csink *s = state;
    host->timer_stop(s->timer);
    fclose(s->out);
    free(s->mode);
    free(s);
}

static px_plugin_desc desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SINK,
    .name = "crashsink",
    .version = "1.0.0",
    .description = "test sink: crashes the process on deliveries marked \"crash\": true",
    .options = options,
    .init = cs_init,
    .deliver = cs_deliver,
    .destroy = cs_destroy,
};

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    host = h;
    return &desc;
}
