/* Unit tests for the notification plugin's pure parts: NotificationQueue message building and
 * validation, e-mail checks, EventBridge envelope recognition (with the seed's seven events),
 * basic.publish frame encoding and the one-write sending of a burst. */
#include "../../plugins/notification/frames.c"
#include "../../plugins/notification/message.c"

#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

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
    int rc = notification_build(p, &out, why, n);
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
        if (!notification_email_ok(good[i])) {
            fprintf(stderr, "refused %s\n", good[i]);
        }
        PX_ASSERT(notification_email_ok(good[i]));
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (notification_email_ok(bad[i])) {
            fprintf(stderr, "accepted %s\n", bad[i]);
        }
        PX_ASSERT(!notification_email_ok(bad[i]));
    }
    PX_ASSERT(!notification_email_ok(NULL));
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
        int rc = notification_envelope_type(env, type, sizeof(type), why, sizeof(why));
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
        int rc = notification_envelope_type(env, type, sizeof(type), why, sizeof(why));
        json_decref(env);
        PX_ASSERT_INT_EQ(rc, -1);
        PX_ASSERT_STR_HAS(why, cases[i][1]);
    }
    /* Another producer's detail-type keeps its path; odd characters become '_'. */
    json_t *env = parse("{\"id\":\"1\",\"detail-type\":\"Order Placed/v1\",\"source\":\"shop\","
                        "\"detail\":{}}");
    char type[64], why[200];
    PX_ASSERT_INT_EQ(notification_envelope_type(env, type, sizeof(type), why, sizeof(why)), 0);
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

/* --- notification_body against jansson ----------------------------------------------------- */

/* A fixed-seed generator (xorshift64*), so a failing case can be replayed. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static size_t rnd_below(uint64_t *s, size_t n)
{
    return (size_t)(rnd(s) % n);
}

/* Appends code point cp as UTF-8 to out; returns the bytes written (1 to 4). */
static size_t put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    } else if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    } else if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* One random code point: control characters (NUL too when nul_ok), the characters JSON escapes,
 * '/', DEL, plain ASCII and 2-, 3- and 4-byte UTF-8 (never a surrogate). */
static uint32_t rnd_code_point(uint64_t *s, int nul_ok)
{
    static const char special[] = "\"\\/\b\f\n\r\t\x7f";
    switch (rnd_below(s, 7)) {
    case 0:
        return (uint32_t)(nul_ok ? rnd_below(s, 0x20) : 1 + rnd_below(s, 0x1f));
    case 1:
        return (uint32_t)(unsigned char)special[rnd_below(s, sizeof(special) - 1)];
    case 2:
    case 3:
        return (uint32_t)(0x20 + rnd_below(s, 0x5f));
    case 4:
        return (uint32_t)(0x80 + rnd_below(s, 0x800 - 0x80));
    case 5: {
        uint32_t cp = (uint32_t)(0x800 + rnd_below(s, 0x10000 - 0x800));
        return cp >= 0xd800 && cp <= 0xdfff ? 0xfffd : cp;
    }
    default:
        return (uint32_t)(0x10000 + rnd_below(s, 0x110000 - 0x10000));
    }
}

/* A random valid UTF-8 text of up to max_cp code points into buf (at least 4 * max_cp + 1 bytes);
 * returns its length in bytes. Mostly short, sometimes long (beyond the plugin's 2 KiB buffer). */
static size_t rnd_text(uint64_t *s, char *buf, size_t max_cp, int nul_ok)
{
    size_t cps = rnd_below(s, 8) == 0 ? rnd_below(s, max_cp + 1) : rnd_below(s, 24);
    size_t len = 0;
    for (size_t i = 0; i < cps; i++) {
        len += put_utf8(buf + len, rnd_code_point(s, nul_ok));
    }
    buf[len] = '\0';
    return len;
}

#define RND_MAX_CP 1200
static char rnd_buf[4 * RND_MAX_CP + 1];

static json_t *rnd_string(uint64_t *s)
{
    size_t n = rnd_text(s, rnd_buf, RND_MAX_CP, 1);
    return json_stringn(rnd_buf, n);
}

/* A random value: nested objects and lists down to depth, strings, integers, true, false, null. */
static json_t *rnd_value(uint64_t *s, int depth)
{
    static const json_int_t ints[] = {0, -1, 1, 9007199254740993LL, INT64_MAX, INT64_MIN};
    switch (rnd_below(s, depth > 0 ? 8 : 6)) {
    case 0:
    case 1:
        return rnd_string(s);
    case 2:
        return json_integer(rnd_below(s, 2) ? ints[rnd_below(s, 6)] : (json_int_t)rnd(s));
    case 3:
        return json_true();
    case 4:
        return json_false();
    case 5:
        return json_null();
    case 6: {
        json_t *a = json_array();
        for (size_t i = rnd_below(s, 5); i > 0; i--) {
            json_array_append_new(a, rnd_value(s, depth - 1));
        }
        return a;
    }
    default: {
        json_t *o = json_object();
        for (size_t i = rnd_below(s, 5); i > 0; i--) {
            rnd_text(s, rnd_buf, 40, 0); /* object keys never hold NUL */
            json_object_set_new(o, rnd_buf, rnd_value(s, depth - 1));
        }
        return o;
    }
    }
}

/* notification_body writes msg exactly as json_dumps(msg, JSON_COMPACT) does, whole and cut short
 * to a random size (it then reports the whole length and holds the prefix). */
static int body_matches_jansson(uint64_t *s, const json_t *msg)
{
    char *want = json_dumps(msg, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t n = want ? strlen(want) : 0, cut = n ? rnd_below(s, n) : 0;
    char *got = malloc(n + 1), *part = malloc(cut + 1);
    int same = want && got && part && notification_body(msg, NULL, 0) == n &&
               notification_body(msg, got, n + 1) == n && memcmp(got, want, n) == 0 &&
               notification_body(msg, part, cut) == n && memcmp(part, want, cut) == 0;
    if (!same) {
        char *text = json_dumps(msg, JSON_COMPACT | JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
        fprintf(stderr, "notification_body differs from json_dumps for %.2000s\n",
                text ? text : "(undumpable)");
        free(text);
    }
    free(want);
    free(got);
    free(part);
    return same;
}

/* Random values of every kind, with strings of control characters, escapes, unicode and long
 * runs: byte for byte what jansson writes. */
static void test_body_matches_jansson_on_random_values(void)
{
    uint64_t seed = 0x6a09e667f3bcc908ULL;
    for (int round = 0; round < 3000; round++) {
        json_t *v = rnd_value(&seed, 4);
        int same = body_matches_jansson(&seed, v);
        json_decref(v);
        PX_ASSERT(same);
    }
    /* A real number is left to jansson: 0 means "not mine". */
    json_t *real = parse("{\"a\":[1,{\"b\":1.5}]}");
    size_t n = notification_body(real, NULL, 0);
    json_decref(real);
    PX_ASSERT_INT_EQ(n, 0);
}

/* Sets key of o to a random text, never empty (no NUL: the plugin's fields are C strings). */
static void set_rnd_text(uint64_t *s, json_t *o, const char *key, size_t max_cp)
{
    if (rnd_text(s, rnd_buf, max_cp, 0) == 0) {
        strcpy(rnd_buf, "x");
    }
    json_object_set_new(o, key, json_string(rnd_buf));
}

/* Short-form parameters with the recipient fields chosen by the bits of mask (tos with to_name,
 * ccs, bccs, phone, pushId, macros, locale), values random where the plugin allows any text. */
static json_t *rnd_short_form(uint64_t *s, unsigned mask)
{
    json_t *p = json_object();
    set_rnd_text(s, p, "name", 60);
    if (mask & 1) {
        json_object_set_new(p, "tos", json_pack("[s,{s:s,s:s}]", "a@example.com", "email",
                                                "b@example.org", "name", "B \"b\" \\ \x01"));
        set_rnd_text(s, p, "to_name", 300);
    }
    if (mask & 2) {
        json_object_set_new(p, "ccs", json_string("c@example.com"));
    }
    if (mask & 4) {
        json_object_set_new(p, "bccs", json_pack("[{s:s}]", "email", "d@example.net"));
    }
    if (mask & 8) {
        json_object_set_new(p, "phone", json_string("+1 409-685-4167"));
    }
    if (mask & 16) {
        set_rnd_text(s, p, "pushId", 200);
    }
    if (mask & 32) {
        json_t *m = json_object();
        for (size_t i = 1 + rnd_below(s, 6); i > 0; i--) {
            rnd_text(s, rnd_buf, 30, 0);
            char key[4 * 30 + 1];
            memcpy(key, rnd_buf, strlen(rnd_buf) + 1);
            json_t *v = rnd_below(s, 3) ? json_string((rnd_text(s, rnd_buf, 600, 0), rnd_buf))
                        : rnd_below(s, 2) ? json_integer((json_int_t)rnd(s))
                                          : json_boolean(rnd_below(s, 2));
            json_object_set_new(m, key, v);
        }
        json_object_set_new(p, "macros", m);
    }
    if (mask & 64) {
        set_rnd_text(s, p, "locale", 20);
    }
    return p;
}

/* Every combination of recipient fields, many times over with random texts, and the full form
 * with several notifications and recipients: the body of each message built is jansson's. */
static void test_body_matches_jansson_on_every_field_combination(void)
{
    uint64_t seed = 0xbb67ae8584caa73bULL;
    int built = 0;
    for (int round = 0; round < 20; round++) {
        for (unsigned mask = 0; mask < 128; mask++) {
            json_t *p = rnd_short_form(&seed, mask), *msg = NULL;
            char why[300] = "";
            int rc = notification_build(p, &msg, why, sizeof(why));
            json_decref(p);
            if (!(mask & (1 | 8 | 16))) {
                PX_ASSERT_INT_EQ(rc, -1); /* no tos, phone or pushId: nothing to send to */
                continue;
            }
            if (rc < 0) {
                fprintf(stderr, "mask %u: %s\n", mask, why);
            }
            PX_ASSERT_INT_EQ(rc, 0);
            int same = body_matches_jansson(&seed, msg);
            json_decref(msg);
            PX_ASSERT(same);
            built++;
        }
        /* The full form: two notifications, the second with two recipients. */
        json_t *a = rnd_short_form(&seed, 1 | 32 | 64), *b = rnd_short_form(&seed, 16 | 64);
        json_t *c = rnd_short_form(&seed, 8 | 32);
        json_t *name_a = json_incref(json_object_get(a, "name"));
        json_t *name_b = json_incref(json_object_get(b, "name"));
        json_object_del(a, "name");
        json_object_del(b, "name");
        json_object_del(c, "name");
        json_t *p = json_pack("{s:[{s:o,s:[o]},{s:o,s:[o,o]}]}", "notification", "name", name_a,
                              "recipients", a, "name", name_b, "recipients", b, c);
        json_t *msg = NULL;
        char why[300] = "";
        int rc = notification_build(p, &msg, why, sizeof(why));
        json_decref(p);
        if (rc < 0) {
            fprintf(stderr, "full form: %s\n", why);
        }
        PX_ASSERT_INT_EQ(rc, 0);
        int same = body_matches_jansson(&seed, msg);
        json_decref(msg);
        PX_ASSERT(same);
    }
    PX_ASSERT_INT_EQ(built, 20 * 112);
}

/* --- basic.publish frames ---------------------------------------------------------------- */

typedef struct frame_view {
    int type, channel;
    const uint8_t *payload;
    size_t len;
} frame_view;

static uint64_t get_be(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

/* Splits buf into frames (at most max); returns how many, or 0 when the bytes are not whole
 * frames each ending with the frame-end octet. */
static size_t split_frames(const uint8_t *buf, size_t len, frame_view *out, size_t max)
{
    size_t n = 0, off = 0;
    while (off < len) {
        if (len - off < 8 || n == max) {
            return 0;
        }
        frame_view *f = &out[n++];
        f->type = buf[off];
        f->channel = (int)get_be(buf + off + 1, 2);
        f->len = (size_t)get_be(buf + off + 3, 4);
        f->payload = buf + off + 7;
        if (off + 8 + f->len > len || buf[off + 7 + f->len] != AMQP_FRAME_END) {
            return 0;
        }
        off += 8 + f->len;
    }
    return n;
}

static void test_publish_frames_decode_back(void)
{
    notification_frames b = {0};
    char body[10000];
    for (size_t i = 0; i < sizeof(body); i++) {
        body[i] = (char)('a' + i % 26);
    }
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                   AMQP_BASIC_APP_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    props.app_id = amqp_cstring_bytes("plexus");
    props.timestamp = 1700000000;
    props.message_id = amqp_cstring_bytes("1a2498bd94d-02cd6-00000001");
    /* Two publishes in one buffer: a small body, and one split over three 4 KiB frames. */
    amqp_bytes_t small = {.len = 5, .bytes = "hello"};
    PX_ASSERT_INT_EQ(notification_frames_publish(&b, 3, 4096, amqp_cstring_bytes("ex"),
                                                 amqp_cstring_bytes("NotificationQueue"), 1,
                                                 &props, small),
                     0);
    amqp_bytes_t big = {.len = sizeof(body), .bytes = body};
    PX_ASSERT_INT_EQ(notification_frames_publish(&b, 3, 4096, amqp_empty_bytes,
                                                 amqp_cstring_bytes("q"), 0, &props, big),
                     0);
    frame_view f[8];
    size_t n = split_frames(b.data, b.len, f, 8);
    PX_ASSERT_INT_EQ(n, 3 + 2 + 3);
    int types[] = {1, 2, 3, 1, 2, 3, 3, 3};
    for (size_t i = 0; i < n; i++) {
        PX_ASSERT_INT_EQ(f[i].type, types[i]);
        PX_ASSERT_INT_EQ(f[i].channel, 3);
        PX_ASSERT(f[i].len <= 4096 - 8);
    }
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    for (int k = 0; k < 2; k++) {
        const frame_view *m = &f[k * 3], *h = &f[k * 3 + 1];
        PX_ASSERT_INT_EQ(get_be(m->payload, 4), AMQP_BASIC_PUBLISH_METHOD);
        void *decoded = NULL;
        amqp_bytes_t args = {.len = m->len - 4, .bytes = (void *)(m->payload + 4)};
        PX_ASSERT_INT_EQ(amqp_decode_method(AMQP_BASIC_PUBLISH_METHOD, &pool, args, &decoded), 0);
        amqp_basic_publish_t *pub = decoded;
        const char *ex = k == 0 ? "ex" : "", *key = k == 0 ? "NotificationQueue" : "q";
        PX_ASSERT_INT_EQ(pub->exchange.len, strlen(ex));
        PX_ASSERT(memcmp(pub->exchange.bytes, ex, strlen(ex)) == 0);
        PX_ASSERT_INT_EQ(pub->routing_key.len, strlen(key));
        PX_ASSERT(memcmp(pub->routing_key.bytes, key, strlen(key)) == 0);
        PX_ASSERT_INT_EQ(pub->mandatory, k == 0);
        PX_ASSERT_INT_EQ(pub->immediate, 0);
        PX_ASSERT_INT_EQ(get_be(h->payload, 2), AMQP_BASIC_CLASS);
        PX_ASSERT_INT_EQ(get_be(h->payload + 2, 2), 0);
        PX_ASSERT_INT_EQ(get_be(h->payload + 4, 8), k == 0 ? 5 : sizeof(body));
        amqp_bytes_t pb = {.len = h->len - 12, .bytes = (void *)(h->payload + 12)};
        PX_ASSERT_INT_EQ(amqp_decode_properties(AMQP_BASIC_CLASS, &pool, pb, &decoded), 0);
        amqp_basic_properties_t *got = decoded;
        PX_ASSERT_INT_EQ(got->_flags, props._flags);
        PX_ASSERT_INT_EQ(got->delivery_mode, 2);
        PX_ASSERT_INT_EQ(got->timestamp, 1700000000);
        PX_ASSERT_INT_EQ(got->message_id.len, 26);
        PX_ASSERT(memcmp(got->message_id.bytes, "1a2498bd94d-02cd6-00000001", 26) == 0);
        PX_ASSERT_INT_EQ(got->app_id.len, 6);
        PX_ASSERT_INT_EQ(got->content_type.len, 16);
    }
    PX_ASSERT_INT_EQ(f[2].len, 5);
    PX_ASSERT(memcmp(f[2].payload, "hello", 5) == 0);
    PX_ASSERT_INT_EQ(f[5].len, 4088);
    PX_ASSERT_INT_EQ(f[6].len, 4088);
    PX_ASSERT_INT_EQ(f[7].len, sizeof(body) - 2 * 4088);
    char joined[sizeof(body)];
    memcpy(joined, f[5].payload, 4088);
    memcpy(joined + 4088, f[6].payload, 4088);
    memcpy(joined + 2 * 4088, f[7].payload, f[7].len);
    PX_ASSERT(memcmp(joined, body, sizeof(body)) == 0);
    empty_amqp_pool(&pool);

    /* An exchange name no shortstr holds is refused, and the buffer stays as it was. */
    size_t before = b.len;
    char longname[300];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    PX_ASSERT(notification_frames_publish(&b, 1, 4096, amqp_cstring_bytes(longname),
                                          amqp_cstring_bytes("q"), 1, &props, small) < 0);
    PX_ASSERT_INT_EQ(b.len, before);
    notification_frames_free(&b);
}

typedef struct reader_arg {
    int fd;
    size_t got;
    uint8_t *into;
} reader_arg;

static void *drain_socket(void *arg)
{
    reader_arg *r = arg;
    for (;;) {
        ssize_t n = read(r->fd, r->into + r->got, 65536);
        if (n <= 0) {
            return NULL;
        }
        r->got += (size_t)n;
    }
}

static void test_frames_write_sends_everything_in_order(void)
{
    int sv[2];
    PX_ASSERT_INT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    PX_ASSERT_INT_EQ(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0); /* as rabbitmq-c leaves its socket */
    notification_frames b = {0};
    size_t total = 4 * 1024 * 1024; /* far more than a socket buffer: the write waits for room */
    PX_ASSERT_INT_EQ(reserve(&b, total), 0);
    for (size_t i = 0; i < total; i++) {
        b.data[i] = (uint8_t)(i * 7 + i / 251);
    }
    b.len = total;
    reader_arg r = {.fd = sv[1], .into = malloc(total + 65536)};
    pthread_t t;
    PX_ASSERT_INT_EQ(pthread_create(&t, NULL, drain_socket, &r), 0);
    PX_ASSERT_INT_EQ(notification_frames_write(&b, sv[0], 5000), 0);
    PX_ASSERT_INT_EQ(b.len, 0);
    shutdown(sv[0], SHUT_WR);
    pthread_join(t, NULL);
    PX_ASSERT_INT_EQ(r.got, total);
    int same = 1;
    for (size_t i = 0; i < total; i++) {
        same &= r.into[i] == (uint8_t)(i * 7 + i / 251);
    }
    PX_ASSERT(same);
    free(r.into);
    /* A peer gone: an error, not a signal, and the buffer is emptied. */
    close(sv[1]);
    memset(b.data, 0, 1000);
    b.len = 1000;
    PX_ASSERT(notification_frames_write(&b, sv[0], 5000) < 0);
    PX_ASSERT_INT_EQ(b.len, 0);
    close(sv[0]);
    notification_frames_free(&b);
}

/* --- notification_quick_body: the usual short form in one pass ----------------------------- */

/* 1 when quick_body agrees with notification_build + notification_body on params: the same bytes
 * (whole, cut short, and measured with no buffer), or 0 from it. Sets *taken to whether it
 * wrote the body itself. */
static int quick_agrees(uint64_t *s, const json_t *params, int *taken)
{
    size_t q = notification_quick_body(params, NULL, 0);
    *taken = q > 0;
    if (!q) {
        return 1;
    }
    json_t *msg = NULL;
    char why[300] = "";
    if (notification_build(params, &msg, why, sizeof(why)) < 0) {
        fprintf(stderr, "quick_body wrote a message notification_build refuses: %s\n", why);
        return 0;
    }
    size_t n = notification_body(msg, NULL, 0), cut = rnd_below(s, n);
    char *want = malloc(n), *got = malloc(n), *part = malloc(cut + 1);
    notification_body(msg, want, n);
    int same = q == n && notification_quick_body(params, got, n) == n &&
               memcmp(got, want, n) == 0 && notification_quick_body(params, part, cut) == n &&
               memcmp(part, want, cut) == 0;
    if (!same) {
        char *text = json_dumps(params, JSON_COMPACT | JSON_ENSURE_ASCII);
        fprintf(stderr, "quick_body differs for %.2000s\n", text ? text : "?");
        free(text);
    }
    json_decref(msg);
    free(want);
    free(got);
    free(part);
    return same;
}

static void test_quick_body_is_the_built_body(void)
{
    /* Hand-made cases: taken (1) or left to notification_build (0). */
    static const struct {
        const char *params;
        int taken;
    } cases[] = {
        {"{\"name\":\"USER_INVITEUSER\",\"to\":\"user1@example.com\",\"to_name\":\"Ana\","
         "\"macros\":{\"FNAME\":\"Ana\",\"SEQ\":\"1\"}}",
         1},
        {"{\"name\":\"N\",\"tos\":[\"a@example.com\",null,\"\",{\"email\":\"b@example.org\"},"
         "{\"email\":\"c@example.net\",\"name\":\"\"},{\"email\":null,\"name\":\"x\"},"
         "{\"email\":\"d@example.com\",\"name\":\"D\"}],\"to\":\"e@example.com\","
         "\"email\":[\"f@example.com\"],\"to_name\":\"T\",\"locale\":\"pt-BR\",\"macros\":{}}",
         1},
        {"{\"name\":\"N\",\"to\":\"a@example.com\",\"to_name\":\"\",\"macros\":\"\","
         "\"locale\":null}",
         1},
        {"{\"name\":\"N\",\"to\":\"a@example.com\",\"macros\":{\"A\":1}}", 0},
        {"{\"name\":\"N\",\"to\":\"not an address\"}", 0},
        {"{\"name\":\"N\",\"to\":null}", 0},
        {"{\"name\":\"N\",\"to\":\"a@example.com\",\"phone\":\"+1 409-685-4167\"}", 0},
        {"{\"name\":\"N\",\"to\":\"a@example.com\",\"ccs\":\"c@example.com\"}", 0},
        {"{\"name\":\"N\",\"to\":\"a@example.com\",\"unknown\":1}", 0},
        {"{\"name\":\"N\",\"to\":\"a@example.com\",\"collectionId\":7}", 0},
        {"{\"name\":\"N\",\"to\":[[\"a@example.com\"]]}", 0},
        {"{\"name\":\"N\",\"to\":{\"email\":\"a@example.com\",\"extra\":1}}", 0},
        {"{\"name\":\"N\",\"to\":{\"email\":\"a@example.com\",\"name\":5}}", 0},
        {"{\"name\":\"N\",\"to\":5}", 0},
        {"{\"name\":\"\",\"to\":\"a@example.com\"}", 0},
        {"{\"name\":7,\"to\":\"a@example.com\"}", 0},
        {"{\"name\":\"N\",\"to\":\"a@example.com\",\"locale\":3}", 0},
        {"{\"name\":\"N\",\"to\":\"a@example.com\",\"to_name\":4}", 0},
        {"{\"name\":\"N\",\"recipients\":[{\"to\":\"a@example.com\"}]}", 0},
        {"{\"notification\":{\"name\":\"N\",\"recipients\":[{\"to\":\"a@example.com\"}]}}", 0},
        {"[1]", 0},
    };
    uint64_t seed = 0x3c6ef372fe94f82bULL;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *p = parse(cases[i].params);
        int taken = -1, same = quick_agrees(&seed, p, &taken);
        json_decref(p);
        if (taken != cases[i].taken) {
            fprintf(stderr, "case %zu: taken %d, expected %d\n", i, taken, cases[i].taken);
        }
        PX_ASSERT(same);
        PX_ASSERT_INT_EQ(taken, cases[i].taken);
    }
    /* A name with a NUL inside is written whole; an address with one is left to the builder. */
    json_t *p = json_pack("{s:s#,s:s}", "name", "A\0B", (size_t)3, "to", "a@example.com");
    int taken = 0;
    PX_ASSERT(quick_agrees(&seed, p, &taken));
    PX_ASSERT_INT_EQ(taken, 1);
    json_decref(p);
    p = json_pack("{s:s,s:s#}", "name", "N", "to", "a@example.com\0x", (size_t)15);
    PX_ASSERT(quick_agrees(&seed, p, &taken));
    PX_ASSERT_INT_EQ(taken, 0);
    json_decref(p);
    /* Random texts in every field combination: whenever it writes, it writes the built body. */
    int taken_count = 0;
    for (int round = 0; round < 20; round++) {
        for (unsigned mask = 0; mask < 128; mask++) {
            json_t *r = rnd_short_form(&seed, mask);
            int same = quick_agrees(&seed, r, &taken);
            json_decref(r);
            PX_ASSERT(same);
            taken_count += taken;
        }
    }
    PX_ASSERT(taken_count >= 20 * 2); /* tos alone and with a locale, at least */
}

PX_TEST_MAIN(PX_TEST(test_short_form_user_invite), PX_TEST(test_short_form_all_channels),
             PX_TEST(test_full_form_passes_through), PX_TEST(test_rejections_name_the_place),
             PX_TEST(test_email_check), PX_TEST(test_seed_envelopes),
             PX_TEST(test_envelope_rejections),
             PX_TEST(test_collection_id_is_refused_with_the_reason),
             PX_TEST(test_body_matches_jansson_on_random_values),
             PX_TEST(test_body_matches_jansson_on_every_field_combination),
             PX_TEST(test_publish_frames_decode_back),
             PX_TEST(test_frames_write_sends_everything_in_order),
             PX_TEST(test_quick_body_is_the_built_body))
