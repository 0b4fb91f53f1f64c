/* The dry run of routing (see route_explain.h): the event description read from JSON, routed
 * with px_router_route, and each pipeline that did not take it explained with px_router_why_not. */
#include "route_explain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "errbuf.h"
#include "mem.h"

static const char *const INPUT_KEYS[] = {"source", "type", "id", "time", "payload", "metadata"};

static int input_fail(px_route_input *in, char *err, size_t errlen, const char *msg)
{
    px_route_input_clear(in);
    px_errf(err, errlen, "%s", msg);
    return PX_EINVAL;
}

/* A string member or NULL; -1 when present and not a string. */
static int opt_string(const json_t *doc, const char *key, char **out)
{
    const json_t *v = json_object_get(doc, key);
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v)) {
        return -1;
    }
    *out = px_xstrdup(json_string_value(v));
    return 0;
}

int px_route_input_parse(const json_t *doc, long long now_ms, px_route_input *in, char *err,
                         size_t errlen)
{
    memset(in, 0, sizeof(*in));
    if (!json_is_object(doc)) {
        return input_fail(in, err, errlen, "the event must be an object {\"source\", \"type\", "
                                           "\"payload\", ...}");
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)doc, key, v) {
        size_t i = 0;
        while (i < sizeof(INPUT_KEYS) / sizeof(INPUT_KEYS[0]) && strcmp(INPUT_KEYS[i], key)) {
            i++;
        }
        if (i == sizeof(INPUT_KEYS) / sizeof(INPUT_KEYS[0])) {
            char msg[320];
            snprintf(msg, sizeof(msg), "unknown member \"%.200s\" in the event (source, type, id, "
                     "time, payload, metadata)", key);
            return input_fail(in, err, errlen, msg);
        }
    }
    if (opt_string(doc, "source", &in->source) < 0) {
        return input_fail(in, err, errlen, "source: expected a string (an instance name)");
    }
    if (opt_string(doc, "type", &in->type) < 0) {
        return input_fail(in, err, errlen, "type: expected a string");
    }
    if (opt_string(doc, "id", &in->id) < 0) {
        return input_fail(in, err, errlen, "id: expected a string");
    }
    if (!in->type) {
        in->type = px_xstrdup("");
    }
    if (!in->id) {
        in->id = px_xstrdup("dry-run");
    }
    const json_t *t = json_object_get(doc, "time");
    if (t && !json_is_null(t) && !json_is_integer(t)) {
        return input_fail(in, err, errlen, "time: expected an integer (unix milliseconds)");
    }
    in->time_ms = t && json_is_integer(t) ? (long long)json_integer_value(t) : now_ms;
    const json_t *meta = json_object_get(doc, "metadata");
    if (meta && !json_is_null(meta)) {
        if (!json_is_object(meta)) {
            return input_fail(in, err, errlen, "metadata: expected an object of strings");
        }
        json_object_foreach((json_t *)meta, key, v) {
            if (!json_is_string(v)) {
                char msg[320];
                snprintf(msg, sizeof(msg), "metadata.%.200s: expected a string", key);
                return input_fail(in, err, errlen, msg);
            }
        }
        in->meta = json_deep_copy(meta);
    }
    const json_t *payload = json_object_get(doc, "payload");
    in->payload = payload ? json_deep_copy(payload) : json_object();
    return 0;
}

void px_route_input_clear(px_route_input *in)
{
    free(in->source);
    free(in->type);
    free(in->id);
    json_decref(in->payload);
    json_decref(in->meta);
    memset(in, 0, sizeof(*in));
}

/* A target's mapping error split into the `with:` field and, for a missing reference, its
 * pointer: "with.a.b: missing /p" -> field "with.a.b", pointer "/p". */
static void error_fields(json_t *o, const char *error)
{
    const char *colon = strstr(error, ": ");
    if (!colon) {
        return;
    }
    json_object_set_new(o, "field", json_stringn(error, (size_t)(colon - error)));
    const char *missing = ": missing ";
    if (strncmp(colon, missing, strlen(missing)) == 0) {
        json_object_set_new(o, "pointer", json_string(colon + strlen(missing)));
    }
}

static json_t *target_json(const px_route *rt)
{
    json_t *o = json_pack("{ss ss ss}", "pipeline", rt->pipeline, "sink", rt->sink, "action",
                          rt->action ? rt->action : "");
    if (rt->error) {
        json_object_set_new(o, "error", json_string(rt->error));
        error_fields(o, rt->error);
    } else {
        json_object_set(o, "with", rt->params ? rt->params : json_object());
    }
    return o;
}

json_t *px_route_explain(const px_router *r, const px_route_input *in)
{
    px_mapping_env env = {.payload = in->payload, .type = in->type, .id = in->id,
                          .source = in->source, .time_ms = in->time_ms};
    px_route *routes = NULL;
    size_t n = px_router_route(r, in->source, &env, &routes);

    json_t *event = json_pack("{so ss ss sI}", "source",
                              in->source ? json_string(in->source) : json_null(), "type",
                              in->type ? in->type : "", "id", in->id ? in->id : "", "time",
                              (json_int_t)in->time_ms);
    if (in->meta) {
        json_object_set(event, "metadata", in->meta);
    }
    json_t *targets = json_array();
    size_t errors = 0;
    for (size_t i = 0; i < n; i++) {
        errors += routes[i].error != NULL;
        json_array_append_new(targets, target_json(&routes[i]));
    }
    px_routes_free(routes, n);

    json_t *pipes = json_array();
    for (size_t i = 0; i < px_router_count(r); i++) {
        char why[512];
        const char *reason = px_router_why_not(r, i, in->source, &env, why, sizeof(why));
        json_t *p = json_pack("{ss sb}", "name", px_router_name(r, i), "matched", !reason);
        if (reason) {
            json_object_set_new(p, "reason", json_string(reason));
        }
        json_array_append_new(pipes, p);
    }
    return json_pack("{so sb sI so so}", "event", event, "routed", n > 0, "errors",
                     (json_int_t)errors, "targets", targets, "pipelines", pipes);
}
