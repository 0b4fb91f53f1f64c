/* Fuzz target for one bundled plugin, built once per plugin with -DFUZZ_<NAME> and the plugin's
 * sources: the plugin runs in the real runtime (fuzzhost.h) with a scenario of its own, and the
 * input is what arrives from outside: the body of a request on one of its routes (webhooks,
 * EventBridge destinations, admin API) or the body of the answers to its outgoing requests (SQS
 * receives, Ploomes and amoCRM API responses).
 *
 * Input: byte 0 chooses: bit 0 route (0) or responses (1); bit 1 persisted callbacks report
 * PX_EBUSY; bits 2-4 which request path (and, for responses, which delivery is made too); bits
 * 5-7 which response status. The rest is the body: of the route call, or of every answer. Each
 * run is a whole life cycle of a runtime: init, start, input, stop, drain, destroy. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzhost.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct scenario {
    const char *name;
    const char *config;       /* the instance's options, JSON */
    const char *kv;           /* its key/value state at start, JSON or NULL */
    const char *headers[6];   /* sent with every route call */
    const char *paths[8];     /* "METHOD /path" of route calls; none = each route as registered */
    const char *actions[8];   /* "action params-json" deliveries made before the responses */
    int statuses[8];          /* response statuses (<0 = transport error) */
} scenario;

#if defined(FUZZ_PLOOMES)
static const scenario sc = {
    "ploomes",
    "{\"validation_key\":\"vk-fuzz-1\",\"path\":\"/ploomes\",\"user_key\":\"uk-fuzz-1\","
    "\"base_url\":\"http://127.0.0.1:9\",\"rate_limit\":0,\"callback_url\":"
    "\"https://plexus.example.com/ploomes\",\"subscriptions\":[\"Contact.Create\","
    "\"Deal.Win\"]}",
    NULL,
    {"X-Ploomes-Validation-Key: vk-fuzz-1", "Content-Type: application/json", NULL},
    {"POST /ploomes", "POST /ploomes/sync", NULL},
    {"create_contact {\"Name\":\"A\",\"Email\":\"a@example.com\"}",
     "update_contact {\"id\":500,\"Name\":\"B\"}",
     "create_deal {\"Title\":\"T\",\"ContactId\":5,\"Amount\":10}",
     "update_deal {\"id\":\"700\",\"Amount\":1}", "win_deal {\"id\":7}",
     "lose_deal {\"id\":7,\"reason\":3}", "request {\"method\":\"GET\",\"path\":\"/Contacts\"}",
     NULL},
    {200, 201, 400, 401, 404, 429, 500, -1},
};
#elif defined(FUZZ_EZZING)
static const scenario sc = {
    "ezzing",
    "{\"queue_url\":\"http://127.0.0.1:9/000000000000/ezzing\",\"endpoint\":"
    "\"http://127.0.0.1:9\",\"access_key_id\":\"AKIDFUZZ\","
    "\"secret_access_key\":\"sk-fuzz-secret\",\"pollers\":1,\"wait_time\":1000}",
    NULL,
    {NULL},
    {NULL},
    {NULL},
    {200, 200, 200, 400, 403, 500, 503, -1},
};
#elif defined(FUZZ_NOTIFICATION)
static const scenario sc = {
    "notification",
    "{\"http_path\":\"/eventbridge\",\"api_key\":\"key-fuzz-1\",\"sqs_queue_url\":"
    "\"http://127.0.0.1:9/000000000000/events\",\"sqs_endpoint\":\"http://127.0.0.1:9\","
    "\"aws_access_key_id\":\"AKIDFUZZ\",\"aws_secret_access_key\":\"sk-fuzz-secret\","
    "\"sqs_wait\":1000}",
    NULL,
    {"x-api-key: key-fuzz-1", "Content-Type: application/json", NULL},
    {"POST /eventbridge", NULL},
    {NULL},
    {200, 200, 200, 400, 403, 500, 503, -1},
};
#elif defined(FUZZ_AMOCRM)
static const scenario sc = {
    "amocrm",
    "{\"client_id\":\"cid\",\"client_secret\":\"csecret-fuzz\",\"redirect_uri\":"
    "\"https://quiz.example.com/amocrm/webhook/create\",\"api_token\":\"tok-fuzz-1\",\"base_url\":"
    "\"http://127.0.0.1:9\",\"rate_limit\":0,\"sync_on_connect\":false}",
    "{\"tokens\":{\"access_token\":\"acc\",\"refresh_token\":\"ref\",\"token_type\":\"Bearer\","
    "\"expires_at\":4102444800000,\"updated_at\":1700000000000,\"host\":\"example.amocrm.ru\"},"
    "\"account\":{\"id\":1,\"accountID\":\"fuzzed\",\"amoID\":123,\"name\":\"A\","
    "\"deleted\":false,\"stale\":false,\"subdomain\":\"example\"}}",
    {"Authorization: Bearer tok-fuzz-1", "Content-Type: application/json", NULL},
    {"PATCH /amocrm/users", "PATCH /amocrm/pipelines", "PATCH /amocrm/fields",
     "PATCH /amocrm/tags", "POST /amocrm/rules/42", "PATCH /amocrm/rules/42",
     "GET /amocrm/webhook/delete", "POST /amocrm/account"},
    {"create_lead {\"quiz_id\":42,\"answers\":{\"1\":\"a\"},\"contact\":{\"name\":\"N\","
     "\"phone\":\"+100\"}}",
     NULL},
    {200, 200, 204, 400, 401, 429, 500, -1},
};
#elif defined(FUZZ_WEBHOOK)
static const scenario sc = {
    "webhook",
    "{\"path\":\"/hook\",\"type_pointer\":\"/type\",\"id_pointer\":\"/id\",\"dedupe_pointer\":"
    "\"/key\",\"meta_headers\":[\"x-request-id\"]}",
    NULL,
    {"Content-Type: application/json", "X-Request-Id: r1", NULL},
    {"POST /hook", NULL},
    {NULL},
    {200},
};
#else
#error "build with -DFUZZ_<PLUGIN>"
#endif

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *host);

static const px_plugin_desc *desc;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    desc = fh_setup(sc.name, PX_PLUGIN_ENTRY, sc.actions);
    return 0;
}

static size_t count(const char *const *list, size_t max)
{
    size_t n = 0;
    while (n < max && list[n]) {
        n++;
    }
    return n;
}

static void route_call(unsigned pick, const char *body, size_t len)
{
    size_t np = count(sc.paths, 8);
    if (np == 0) {
        fh_call_routes(NULL, NULL, sc.headers, body, len);
        return;
    }
    const char *p = sc.paths[pick % np];
    char method[16];
    const char *sp = strchr(p, ' ');
    snprintf(method, sizeof(method), "%.*s", (int)(sp - p), p);
    fh_call_routes(method, sp + 1, sc.headers, body, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    unsigned sel = data[0];
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    if (fh_begin(sc.config, sc.kv, (sel & 2) != 0) < 0) {
        return 0;
    }
    fh_run(1);
    unsigned pick = (sel >> 2) & 7;
    size_t ns = 0;
    while (ns < 8 && sc.statuses[ns]) {
        ns++;
    }
    int status = ns ? sc.statuses[((sel >> 5) & 7) % ns] : 200;
    static const char *const resp_headers[] = {"Content-Type: application/json",
                                               "Retry-After: 1", NULL};
    if (!(sel & 1)) {
        route_call(pick, body, len);
        fh_run(2);
        /* what the route started (syncs, exchanges) meets plain answers */
        fh_answer_calls(200, resp_headers, "{}", 2);
        fh_run(2);
    } else {
        /* a route call and a delivery that make the plugin ask its API */
        if (count(sc.paths, 8)) {
            route_call(pick, "{}", 2);
        }
        size_t na = count(sc.actions, 8);
        if (na && desc->deliver) {
            fh_deliver(pick % na);
        }
        for (int round = 0; round < 3; round++) {
            fh_run(1);
            fh_answer_calls(status, resp_headers, body, len);
            fh_run(1);
        }
    }
    fh_end();
    return 0;
}
