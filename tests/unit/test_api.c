/* The host table as plugins get it (px_api_init): its ABI 1.2 helpers work without a plugin
 * context and give the known answers: SHA-256 (FIPS 180-2), HMAC-SHA256 (RFC 4231), the
 * constant-time compare, Retry-After in both forms; the 1.2 calls that need a context refuse
 * NULL. Links pxcore. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "event.h"
#include "test.h"

static px_host_api api;

static void hex(const uint8_t *d, char out[2 * PX_SHA256_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < PX_SHA256_LEN; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * PX_SHA256_LEN] = '\0';
}

static void test_table_is_1_2(void)
{
    PX_ASSERT_INT_EQ(api.abi_minor, 2);
    PX_ASSERT(PX_HAS(px_host_api, &api, delivery_params_const));
    /* Every slot is filled: a plugin that finds a function by PX_HAS may call it. */
    void *const *slot = (void *const *)(const void *)&api.log;
    size_t n = (sizeof(api) - offsetof(px_host_api, log)) / sizeof(void *);
    for (size_t i = 0; i < n; i++) {
        if (!slot[i]) {
            fprintf(stderr, "  slot %zu is NULL\n", i);
        }
        PX_ASSERT(slot[i] != NULL);
    }
}

static void test_sha256_and_hmac_vectors(void)
{
    uint8_t d[PX_SHA256_LEN];
    char h[2 * PX_SHA256_LEN + 1];
    api.sha256("abc", 3, d);
    hex(d, h);
    PX_ASSERT_STR_EQ(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    api.sha256(NULL, 0, d);
    hex(d, h);
    PX_ASSERT_STR_EQ(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* RFC 4231 test case 1 and 2. */
    uint8_t key1[20];
    memset(key1, 0x0b, sizeof(key1));
    api.hmac_sha256(key1, sizeof(key1), "Hi There", 8, d);
    hex(d, h);
    PX_ASSERT_STR_EQ(h, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    api.hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, d);
    hex(d, h);
    PX_ASSERT_STR_EQ(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

static void test_ct_equal(void)
{
    PX_ASSERT(api.ct_equal("sha256=abcd", 11, "sha256=abcd", 11));
    PX_ASSERT(!api.ct_equal("sha256=abce", 11, "sha256=abcd", 11));
    PX_ASSERT(!api.ct_equal("sha256=abc", 10, "sha256=abcd", 11));
}

static void test_retry_after_both_forms(void)
{
    PX_ASSERT_INT_EQ(api.retry_after_ms("30"), 30000);
    PX_ASSERT_INT_EQ(api.retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT"), 0); /* past */
    time_t later = time(NULL) + 3600;
    struct tm tm;
    gmtime_r(&later, &tm);
    char date[64];
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm); /* C locale: English */
    int64_t ms = api.retry_after_ms(date);
    PX_ASSERT(ms > 3500 * 1000 && ms <= 3600 * 1000);
    PX_ASSERT_INT_EQ(api.retry_after_ms("later"), -1);
    PX_ASSERT_INT_EQ(api.retry_after_ms(NULL), -1);
}

static void test_context_calls_refuse_null(void)
{
    int64_t v = 7;
    PX_ASSERT(api.kv_get_versioned(NULL, "k", &v) == NULL);
    PX_ASSERT_INT_EQ(v, 0);
    PX_ASSERT_INT_EQ(api.kv_cas(NULL, "k", 0, NULL, NULL), PX_EINVAL);
    PX_ASSERT_INT_EQ(api.lock_acquire(NULL, "duty", 1000, NULL, NULL), PX_EINVAL);
    PX_ASSERT_INT_EQ(api.lock_release(NULL, "duty"), PX_EINVAL);
    px_cluster_info ci = {.size = sizeof(ci)};
    PX_ASSERT_INT_EQ(api.cluster(NULL, &ci), PX_EINVAL);
    api.set_error(NULL, "no context %d", 1); /* logged, nothing kept */
}

/* The metadata and hints texts the spool stores are what json_dumps(JSON_COMPACT) writes for the
 * same objects: plain strings written directly, anything else through jansson. */
static void test_meta_and_hints_text(void)
{
    static const char *const metas[][2] = {
        {"MessageId", "0a1b2c3d-4e5f"}, {"x-header", "v a l u e / 1"}, {"utf8", "ma\xc3\xb1" "ana"},
        {"quote", "say \"hi\""}, {"back", "a\\b"}, {"ctl", "tab\there"}, {"", ""},
        {"del", "\x7f"}, {"nl", "line\n"},
    };
    size_t nm = sizeof(metas) / sizeof(metas[0]);
    for (size_t upto = 0; upto <= nm; upto++) { /* 0..all of them, the odd ones joining late */
        px_event *ev = px_event_create("src", "t.x", json_object());
        for (size_t i = 0; i < upto; i++) {
            PX_ASSERT_INT_EQ(px_event_set_meta(ev, metas[i][0], metas[i][1]), 0);
        }
        char *got = px_event_meta_json(ev);
        char *want = upto ? json_dumps(ev->meta, JSON_COMPACT) : NULL;
        PX_ASSERT((got == NULL) == (want == NULL));
        if (want) {
            PX_ASSERT_STR_EQ(got, want);
        }
        free(got);
        free(want);
        px_event_unref(ev);
    }

    px_event *ev = px_event_create("src", "t.x", json_object());
    PX_ASSERT(px_event_hints_json(ev) == NULL);
    for (int step = 0; step < 6; step++) {
        switch (step) {
        case 0: ev->fail_on_timeout = 1; break;
        case 1: ev->deadline_ms = 1700000000123; break;
        case 2: ev->max_attempts = 4294967295u; break;
        case 3: ev->timeout_ms = 60000; break;
        case 4:
            ev->backoff_ms = calloc(3, sizeof(uint32_t));
            ev->backoff_ms[0] = 1;
            ev->backoff_ms[1] = 4294967295u;
            ev->nbackoff = 3;
            break;
        default: ev->fail_on_timeout = 0; break;
        }
        json_t *h = json_object();
        if (ev->max_attempts) {
            json_object_set_new(h, "max_attempts", json_integer(ev->max_attempts));
        }
        if (ev->timeout_ms) {
            json_object_set_new(h, "timeout_ms", json_integer(ev->timeout_ms));
        }
        if (ev->nbackoff) {
            json_t *a = json_array();
            for (size_t i = 0; i < ev->nbackoff; i++) {
                json_array_append_new(a, json_integer(ev->backoff_ms[i]));
            }
            json_object_set_new(h, "backoff_ms", a);
        }
        if (ev->deadline_ms) {
            json_object_set_new(h, "deadline_ms", json_integer(ev->deadline_ms));
        }
        if (ev->fail_on_timeout) {
            json_object_set_new(h, "fail_on_timeout", json_true());
        }
        char *want = json_dumps(h, JSON_COMPACT), *got = px_event_hints_json(ev);
        PX_ASSERT_STR_EQ(got, want);
        free(want);
        free(got);
        json_decref(h);
    }
    px_event_unref(ev);
}

int main(int argc, char **argv)
{
    px_api_init(&api);
    static const px_test_case cases[] = {
        PX_TEST(test_table_is_1_2), PX_TEST(test_sha256_and_hmac_vectors),
        PX_TEST(test_ct_equal), PX_TEST(test_retry_after_both_forms),
        PX_TEST(test_context_calls_refuse_null), PX_TEST(test_meta_and_hints_text)};
    return px_test_run(cases, sizeof(cases) / sizeof(cases[0]), argc, argv);
}
