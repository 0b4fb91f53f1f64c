/* crashsink: a sink that takes the whole process down on deliveries whose payload has
 * "crash": true (abort() or SIGSEGV, by `mode`, or the payload's "crash_mode"), and otherwise
 * records every delivery as a JSON line in `file` ({"event","seq","attempt","outcome","pid"}),
 * like testsink. Before dying it records the attempt with outcome "crashing", so a test can count
 * how often each delivery brought the host down. */
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
} csink;

static const px_option options[] = {
    {"file", PX_OPT_STRING, PX_OPT_REQUIRED, NULL, "JSON lines of every delivery attempt"},
    {"mode", PX_OPT_STRING, 0, "abort", "how to die: abort or segv"},
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
        abort();
    }
    record(s, d, "ok");
    host->complete(d, PX_OK, "recorded", 0);
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
    *state = s;
    return 0;
}

static void cs_destroy(void *state)
{
    csink *s = state;
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
