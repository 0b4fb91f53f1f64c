/* Unit tests for the notification plugin's pure parts: NotificationQueue message building and
 * validation, e-mail checks, EventBridge envelope recognition (with the seed's seven events). */
#include "../../plugins/notification/message.c"

#include <stdlib.h>

#include "test.h"

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j) {
        fprintf(stderr, "bad test JSON: %s: %s\n", e.text, text);
        abort();
    }
    return j;
}

/* Builds from params text; returns the compact JSON text (caller frees) or NULL with why. */
static char *build(const char *params, char *why, size_t n)
{
    json_t *p = parse(params), *out = NULL;
    int rc = px_nq_build(p, &out, why, n);
    json_decref(p);
    if (rc < 0) {
        return NULL;
    }
    char *text = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    return text;
}

static void test_short_form_user_invite(void)
{
    char why[300] = "";
    char *t = build("{\"name\":\"USER_INVITEUSER\",\"to\":\"ana@example.com\",\"to_name\":\"Ana\","
                    "\"macros\":{\"FNAME\":\"Ana\",\"SEQ\":7,\"VIP\":true,\"GONE\":null}}",
                    why, sizeof(why));
    PX_ASSERT(t != NULL);
    PX_ASSERT_STR_EQ(t, "{\"notification\":[{\"name\":\"USER_INVITEUSER\",\"recipients\":[{"
                        "\"tos\":[{\"email\":\"ana@example.com\",\"name\":\"Ana\"}],"
                        "\"macros\":{\"FNAME\":\"Ana\",\"SEQ\":\"7\",\"VIP\":\"true\"}}]}]}");
    free(t);
}

static void test_short_form_all_channels(void)
{
    char why[300] = "";
    char *t = build("{\"name\":\"N\",\"tos\":[\"a@example.com\",{\"email\":\"b@example.org\","
                    "\"name\":\"B\"},null,\"\"],\"ccs\":\"c@example.com\",\"bccs\":[{\"email\":"
                    "\"d@example.com\"}],\"phone\":\"+1 409-685-4167\",\"pushId\":\"hj7sdf67sqc9\","
                    "\"locale\":\"en_US\"}",
                    why, sizeof(why));
    PX_ASSERT(t != NULL);
    PX_ASSERT_STR_EQ(t, "{\"notification\":[{\"name\":\"N\",\"recipients\":[{\"phone\":"
                        "\"+1 409-685-4167\",\"pushId\":\"hj7sdf67sqc9\",\"tos\":[{\"email\":"
                        "\"a@example.com\"},{\"email\":\"b@example.org\",\"name\":\"B\"}],\"ccs\":"
                        "[{\"email\":\"c@example.com\"}],\"bccs\":[{\"email\":\"d@example.com\"}],"
                        "\"locale\":\"en_US\"}]}]}");
    free(t);
}

static void test_full_form_passes_through(void)
{
    char why[300] = "";
    char *t = build("{\"notification\":[{\"name\":\"A\",\"recipients\":[{\"phone\":9876543210}]},"
                    "{\"name\":\"B\",\"recipients\":[{\"pushId\":\"p1\"},{\"email\":"
                    "\"x@example.com\"}]}]}",
                    why, sizeof(why));
    PX_ASSERT(t != NULL);
    PX_ASSERT_STR_EQ(t, "{\"notification\":[{\"name\":\"A\",\"recipients\":[{\"phone\":"
                        "\"9876543210\"}]},{\"name\":\"B\",\"recipients\":[{\"pushId\":\"p1\"},"
                        "{\"tos\":[{\"email\":\"x@example.com\"}]}]}]}");
    free(t);
    /* A single notification object is accepted as a list of one. */
    t = build("{\"notification\":{\"name\":\"A\",\"recipients\":[{\"pushId\":\"p\"}]}}", why,
              sizeof(why));
    PX_ASSERT(t != NULL);
    PX_ASSERT_STR_HAS(t, "\"notification\":[{\"name\":\"A\"");
    free(t);
}

static void expect_reject(const char *params, const char *reason_part)
{
    char why[300] = "";
    char *t = build(params, why, sizeof(why));
    if (t) {
        fprintf(stderr, "accepted: %s -> %s\n", params, t);
        free(t);
    }
    PX_ASSERT(t == NULL);
    PX_ASSERT_STR_HAS(why, reason_part);
}

static void test_rejections_name_the_place(void)
{
    expect_reject("{}", "no parameters");
    expect_reject("{\"to\":\"a@example.com\"}", "with.name: missing notification name");
    expect_reject("{\"name\":\"N\"}", "with: a recipient needs at least one of tos, phone or "
                                      "pushId");
    expect_reject("{\"name\":\"N\",\"to\":null,\"phone\":\"\"}", "at least one of");
    expect_reject("{\"name\":\"N\",\"to\":\"not-an-email\"}",
                  "with.to: \"not-an-email\" is not an e-mail address");
    expect_reject("{\"name\":\"N\",\"tos\":[\"a@example.com\",\"b@\"]}",
                  "with.tos[1]: \"b@\" is not an e-mail address");
    expect_reject("{\"name\":\"N\",\"phone\":\"call me\"}", "is not a phone number");
    expect_reject("{\"name\":\"N\",\"pushId\":\"p\",\"colour\":\"red\"}",
                  "unknown key \"colour\"");
    expect_reject("{\"name\":\"N\",\"pushId\":\"p\",\"macros\":{\"A\":{\"b\":1}}}",
                  "with.macros.A: expected a text value");
    expect_reject("{\"name\":\"N\",\"pushId\":\"p\",\"macros\":[1]}", "with.macros: expected");
    expect_reject("{\"notification\":[{\"name\":\"A\",\"recipients\":[{\"pushId\":\"p\"},"
                  "{\"ccs\":\"c@example.com\"}]}]}",
                  "notification[0].recipients[1]: a recipient needs");
    expect_reject("{\"notification\":[]}", "expected an object or a non-empty list");
    expect_reject("{\"notification\":[{\"name\":\"A\",\"recipients\":[]}]}",
                  "notification[0].recipients: expected a non-empty list");
    expect_reject("{\"notification\":[{\"name\":\"A\"}],\"name\":\"B\"}", "no other key");
    expect_reject("{\"name\":7,\"pushId\":\"p\"}", "with.name: expected a string");
}

static void test_email_check(void)
{
    static const char *const good[] = {"a@example.com", "first.last+tag@sub.example.co.uk",
                                       "externalevents1709786394020@gmail.com", "x_y@a-b.io"};
    static const char *const bad[] = {"",           "a",           "@example.com", "a@",
                                      "a@b",        "a@b.c",       "a@@b.com",     "a b@c.com",
                                      "a@c .com",   ".a@b.com",    "a.@b.com",     "a..b@c.com",
                                      "a@-b.com",   "a@b-.com",    "a@b..com",     "a@b.123",
                                      "a<b>@c.com", "a@b.com,c@d.com"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (!px_nq_email_ok(good[i])) {
            fprintf(stderr, "refused %s\n", good[i]);
        }
        PX_ASSERT(px_nq_email_ok(good[i]));
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (px_nq_email_ok(bad[i])) {
            fprintf(stderr, "accepted %s\n", bad[i]);
        }
        PX_ASSERT(!px_nq_email_ok(bad[i]));
    }
    PX_ASSERT(!px_nq_email_ok(NULL));
}

static json_t *load_fixture(const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/../../fixtures/notification/%s", PX_TEST_DATA_DIR, name);
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    if (!j) {
        fprintf(stderr, "cannot load %s: %s\n", path, e.text);
    }
    return j;
}

static void test_seed_envelopes(void)
{
    static const char *const cases[][3] = {
        {"action-create.json", "notification.action.create",
         "d02b9c9f-8ec1-4465-22db-df2608ac4f87"},
        {"event-create.json", "notification.event.create",
         "24db0910-b6b4-7f06-7188-97ae94fe4b32"},
        {"action-delete.json", "notification.action.delete",
         "4e5090b2-c63b-9066-2a4a-a03a2ada932a"},
        {"event-delete.json", "notification.event.delete",
         "fd3ca8ac-7a78-732d-e42b-e99428f0a0eb"},
        {"notifications-send.json", "notification.notifications.send",
         "91357c58-0b8c-57ec-0f79-038258af943a"},
        {"action-update.json", "notification.action.update",
         "69f8c9bf-5741-50a6-c65b-4b9ce3ceb6fb"},
        {"event-update.json", "notification.event.update",
         "9448e038-9c1a-7e6a-2db6-33a4f44d2fa6"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *env = load_fixture(cases[i][0]);
        PX_ASSERT(env != NULL);
        char type[128], why[200] = "";
        int rc = px_nq_envelope_type(env, type, sizeof(type), why, sizeof(why));
        const char *id = json_string_value(json_object_get(env, "id"));
        int id_ok = id && strcmp(id, cases[i][2]) == 0;
        json_decref(env);
        PX_ASSERT_INT_EQ(rc, 0);
        PX_ASSERT_STR_EQ(type, cases[i][1]);
        PX_ASSERT(id_ok);
    }
}

static void test_envelope_rejections(void)
{
    static const char *const cases[][2] = {
        {"[1,2]", "expected a JSON object"},
        {"{\"detail-type\":\"x\",\"source\":\"s\",\"detail\":{}}", "missing string \"id\""},
        {"{\"id\":\"\",\"detail-type\":\"x\",\"source\":\"s\",\"detail\":{}}",
         "missing string \"id\""},
        {"{\"id\":\"1\",\"source\":\"s\",\"detail\":{}}", "missing string \"detail-type\""},
        {"{\"id\":\"1\",\"detail-type\":\"x\",\"detail\":{}}", "missing string \"source\""},
        {"{\"id\":\"1\",\"detail-type\":\"x\",\"source\":\"s\",\"detail\":\"no\"}",
         "missing object \"detail\""},
        {"{\"id\":\"1\",\"detail-type\":\"notificationservice/\",\"source\":\"s\",\"detail\":{}}",
         "empty or too long"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *env = json_loads(cases[i][0], JSON_DECODE_ANY, NULL);
        PX_ASSERT(env != NULL);
        char type[64], why[200] = "";
        int rc = px_nq_envelope_type(env, type, sizeof(type), why, sizeof(why));
        json_decref(env);
        PX_ASSERT_INT_EQ(rc, -1);
        PX_ASSERT_STR_HAS(why, cases[i][1]);
    }
    /* Another producer's detail-type keeps its path; odd characters become '_'. */
    json_t *env = parse("{\"id\":\"1\",\"detail-type\":\"Order Placed/v1\",\"source\":\"shop\","
                        "\"detail\":{}}");
    char type[64], why[200];
    PX_ASSERT_INT_EQ(px_nq_envelope_type(env, type, sizeof(type), why, sizeof(why)), 0);
    json_decref(env);
    PX_ASSERT_STR_EQ(type, "notification.Order_Placed.v1");
}

/* The seed's queue description mentions a collection ID its payload model has no field for: the
 * key is refused with that reason, in either form, not as a typo. */
static void test_collection_id_is_refused_with_the_reason(void)
{
    const char *why = "has no collection ID field";
    expect_reject("{\"name\":\"N\",\"to\":\"a@example.com\",\"collectionId\":\"775\"}",
                  "with.collectionId: a NotificationQueue message has no collection ID field");
    expect_reject("{\"name\":\"N\",\"to\":\"a@example.com\",\"collection_id\":775}", why);
    expect_reject("{\"name\":\"N\",\"recipients\":[{\"pushId\":\"p\"}],\"collectionId\":7}",
                  why);
    expect_reject("{\"notification\":{\"name\":\"A\",\"collectionId\":775,"
                  "\"recipients\":[{\"pushId\":\"p\"}]}}",
                  "notification.collectionId: a NotificationQueue message has no collection");
    expect_reject("{\"notification\":{\"name\":\"A\",\"recipients\":[{\"pushId\":\"p\"}]},"
                  "\"collectionId\":775}", why);
}

PX_TEST_MAIN(PX_TEST(test_short_form_user_invite), PX_TEST(test_short_form_all_channels),
             PX_TEST(test_full_form_passes_through), PX_TEST(test_rejections_name_the_place),
             PX_TEST(test_email_check), PX_TEST(test_seed_envelopes),
             PX_TEST(test_envelope_rejections),
             PX_TEST(test_collection_id_is_refused_with_the_reason))
