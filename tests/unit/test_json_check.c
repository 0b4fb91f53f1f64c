/* JSON validator tests: the fixtures and the bench payload take the fast path (PX_JSON_OK), every
 * rule rejects what jansson rejects, tricky valid texts pass, and a differential run over
 * mutated and random inputs checks that PX_JSON_OK always means json_loadb accepts. */
#include "../../host/core/json_check.c"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "test.h"

#define FIXTURES PX_TEST_DATA_DIR "/../../fixtures"
#define BENCH_PAYLOAD PX_TEST_DATA_DIR "/../../../bench/payloads/opportunity_created.json"

static const size_t all_flags[] = {0, JSON_REJECT_DUPLICATES, JSON_DECODE_ANY,
                                   JSON_REJECT_DUPLICATES | JSON_DECODE_ANY};
#define NFLAGS (sizeof(all_flags) / sizeof(all_flags[0]))

static int jansson_accepts(const char *text, size_t len, size_t flags)
{
    json_error_t e;
    json_t *j = json_loadb(text, len, flags, &e);
    json_decref(j);
    return j != NULL;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

/* The documents the differential run mutates: the bench payload and every fixture. */
#define MAX_DOCS 64
static char *docs[MAX_DOCS];
static size_t doc_len[MAX_DOCS];
static size_t ndocs;

static void load_docs(void)
{
    if (ndocs) {
        return;
    }
    docs[0] = read_file(BENCH_PAYLOAD, &doc_len[0]);
    ndocs = docs[0] ? 1 : 0;
    DIR *top = opendir(FIXTURES);
    struct dirent *d;
    while (top && (d = readdir(top)) != NULL) {
        if (d->d_name[0] == '.') {
            continue;
        }
        char dir[1024];
        snprintf(dir, sizeof(dir), "%s/%s", FIXTURES, d->d_name);
        DIR *sub = opendir(dir);
        struct dirent *f;
        while (sub && (f = readdir(sub)) != NULL) {
            size_t n = strlen(f->d_name);
            if (n < 5 || strcmp(f->d_name + n - 5, ".json") != 0 || ndocs == MAX_DOCS) {
                continue;
            }
            char path[2048];
            snprintf(path, sizeof(path), "%s/%s", dir, f->d_name);
            docs[ndocs] = read_file(path, &doc_len[ndocs]);
            if (docs[ndocs]) {
                ndocs++;
            }
        }
        if (sub) {
            closedir(sub);
        }
    }
    if (top) {
        closedir(top);
    }
}

static void test_fixtures_fast_path(void)
{
    load_docs();
    PX_ASSERT(docs[0] != NULL); /* the bench payload */
    PX_ASSERT(ndocs >= 20);
    for (size_t i = 0; i < ndocs; i++) {
        for (size_t f = 0; f < NFLAGS; f++) {
            PX_ASSERT(jansson_accepts(docs[i], doc_len[i], all_flags[f]));
            if (px_json_check(docs[i], doc_len[i], all_flags[f]) != PX_JSON_OK) {
                fprintf(stderr, "fixture %zu (%.60s...) flags %zu: not OK\n", i, docs[i],
                        all_flags[f]);
                PX_ASSERT(0);
            }
        }
    }
}

typedef struct sample {
    const char *text;
    size_t len; /* 0: strlen(text) */
    size_t flags;
} sample;

#define S(t) {t, sizeof(t) - 1, 0}
#define SF(t, f) {t, sizeof(t) - 1, f}

static const sample invalid[] = {
    /* whitespace, top level, end of input */
    S(""), S("   "), S("\f[]"), S("[]\f"), S("\v{}"), S("\xef\xbb\xbf[]"), S("\xc2\xa0[]"),
    S("1"), S("\"x\""), S("true"), S("null"), S("[] []"), S("{}x"), S("[]]"), S("[]\0"),
    S("\0[]"), S("[\0 1]"), S("[1 \0]"), S("{\"a\"\0:1}"), SF("", JSON_DECODE_ANY),
    SF("1 2", JSON_DECODE_ANY), SF("\0", JSON_DECODE_ANY),
    /* structure */
    S("["), S("]"), S("{"), S("}"), S("[1,]"), S("[,1]"), S("[1,,2]"), S("[1 2]"),
    S("{\"a\":1,}"), S("{,}"), S("{\"a\"}"), S("{\"a\":}"), S("{\"a\" 1}"), S("{1:2}"),
    S("{'a':1}"), S("{a:1}"), S("{\"a\":1 \"b\":2}"), S("[}"), S("{]"), S("[1}"),
    S("{\"a\":[1}"), S("[[[]]"), S("{\"a\":1:2}"), S("[\"a\":1]"),
    /* literals */
    S("[truex]"), S("[true1]"), S("[True]"), S("[nul]"), S("[nulll]"), S("[fals]"), S("[t]"),
    S("[NaN]"), S("[Infinity]"), S("[-Infinity]"), S("[undefined]"), S("[tru"),
    /* numbers */
    S("[01]"), S("[-01]"), S("[00]"), S("[+1]"), S("[.5]"), S("[5.]"), S("[-]"), S("[-.5]"),
    S("[1e]"), S("[1e+]"), S("[1E-]"), S("[1.e5]"), S("[0x10]"), S("[1.5.5]"), S("[1e5e5]"),
    S("[- 1]"), S("[1_000]"), S("[9223372036854775808]"), S("[-9223372036854775809]"),
    S("[99999999999999999999999]"), S("[1e400]"), S("[-1e400]"), S("[1.5e309]"),
    S("[1"), S("[-"), SF("-", JSON_DECODE_ANY), SF("1.", JSON_DECODE_ANY),
    /* strings: structure, control bytes, escapes */
    S("[\"abc]"), S("[\"abc\\\"]"), S("[\"a\tb\"]"), S("[\"a\nb\"]"), S("[\"a\x01\"]"),
    S("[\"a\x1f\"]"), S("[\"a\0b\"]"), S("[\"\\a\"]"), S("[\"\\x41\"]"), S("[\"\\'\"]"),
    S("[\"\\U0041\"]"), S("[\"\\u41\"]"), S("[\"\\u004g\"]"), S("[\"\\u\"]"), S("[\"\\"),
    S("[\"\\u0000\"]"), S("{\"\\u0000\":1}"), S("[\"\\ud83d\"]"), S("[\"\\ude00\"]"),
    S("[\"\\ud83d\\u0041\"]"), S("[\"\\ud83dx\"]"), S("[\"\\ud83d\\ud83d\"]"),
    S("[\"\\ude00\\ud83d\"]"), S("[\"\\ud83d\\"), S("['a']"),
    /* strings: UTF-8 */
    S("[\"\x80\"]"), S("[\"\xbf\"]"), S("[\"\xc0\xaf\"]"), S("[\"\xc1\xbf\"]"),
    S("[\"\xe0\x80\xaf\"]"), S("[\"\xe0\x9f\xbf\"]"), S("[\"\xf0\x80\x80\xaf\"]"),
    S("[\"\xf0\x8f\xbf\xbf\"]"), S("[\"\xed\xa0\x80\"]"), S("[\"\xed\xbf\xbf\"]"),
    S("[\"\xf4\x90\x80\x80\"]"), S("[\"\xf5\x80\x80\x80\"]"), S("[\"\xff\"]"), S("[\"\xfe\"]"),
    S("[\"\xc3\"]"), S("[\"\xc3"), S("[\"\xe2\x82\"]"), S("[\"\xf0\x9f\x99\"]"),
    S("[\"\xc3\x28\"]"), S("[\"\xe2\x28\xa1\"]"), S("[\xc3\xa9]"), S("[1]\xc3\xa9"),
    /* duplicates */
    SF("{\"a\":1,\"a\":2}", JSON_REJECT_DUPLICATES),
    SF("{\"a\":1,\"b\":{\"a\":1,\"a\":2}}", JSON_REJECT_DUPLICATES),
    SF("{\"a\":1,\"\\u0061\":2}", JSON_REJECT_DUPLICATES),
    SF("{\"\\n\":1,\"\\u000a\":2}", JSON_REJECT_DUPLICATES),
    SF("{\"\xc3\xa9\":1,\"\\u00e9\":2}", JSON_REJECT_DUPLICATES),
    SF("[{\"x\":[],\"y\":{},\"x\":null}]", JSON_REJECT_DUPLICATES),
    SF("{\"\":1,\"\":2}", JSON_REJECT_DUPLICATES | JSON_DECODE_ANY),
    /* flags the checker does not cover */
    SF("[1]", JSON_DISABLE_EOF_CHECK), SF("[1]", JSON_DECODE_INT_AS_REAL),
    SF("[1]", JSON_ALLOW_NUL), SF("[1]", 0x100),
};

static void test_invalid(void)
{
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        const sample *s = &invalid[i];
        if (px_json_check(s->text, s->len, s->flags) == PX_JSON_OK) {
            fprintf(stderr, "invalid[%zu] \"%.*s\" flags %zu: OK\n", i, (int)s->len, s->text,
                    s->flags);
            PX_ASSERT(0);
        }
    }
    PX_ASSERT(px_json_check(NULL, 0, 0) == PX_JSON_UNSURE);
}

/* Valid texts the checker leaves to jansson (range, escapes, limits): UNSURE. */
static const sample unsure_valid[] = {
    S("[1234567890123456789]"), S("[9223372036854775807]"), S("[1e100]"), S("[1e-400]"),
    S("[1e-0400]"), S("[1.7976931348623157e308]"), SF("[\"\\u0000\"]", JSON_ALLOW_NUL),
    SF("{\"a\":1,\"\\u0062\":2}", JSON_REJECT_DUPLICATES),
    S("[1234567890123456789012345678901234567890123456789012345678901234567890123456789012345"
      "67890123456789.5]"),
};

static void test_unsure_cases(void)
{
    for (size_t i = 0; i < sizeof(unsure_valid) / sizeof(unsure_valid[0]); i++) {
        const sample *s = &unsure_valid[i];
        PX_ASSERT(jansson_accepts(s->text, s->len, s->flags));
        PX_ASSERT_INT_EQ(px_json_check(s->text, s->len, s->flags), PX_JSON_UNSURE);
    }
    /* deeper than 512: UNSURE; 512 exactly: OK */
    static char deep[2 * 600 + 1];
    for (size_t n = 511; n <= 513; n++) {
        memset(deep, '[', n);
        memset(deep + n, ']', n);
        PX_ASSERT(jansson_accepts(deep, 2 * n, 0));
        PX_ASSERT_INT_EQ(px_json_check(deep, 2 * n, 0), n <= 512 ? PX_JSON_OK : PX_JSON_UNSURE);
    }
    /* past jansson's own limit: UNSURE, and jansson does reject */
    static char deeper[2 * 2100];
    memset(deeper, '[', 2100);
    memset(deeper + 2100, ']', 2100);
    PX_ASSERT(!jansson_accepts(deeper, sizeof(deeper), 0));
    PX_ASSERT(px_json_check(deeper, sizeof(deeper), 0) == PX_JSON_UNSURE);
    /* REJECT_DUPLICATES: 64 keys in one object OK, 65 UNSURE; without the flag always OK */
    char obj[1024];
    for (int nk = 64; nk <= 65; nk++) {
        size_t n = 0;
        obj[n++] = '{';
        for (int k = 0; k < nk; k++) {
            n += (size_t)snprintf(obj + n, sizeof(obj) - n, "%s\"k%d\":%d", k ? "," : "", k, k);
        }
        obj[n++] = '}';
        PX_ASSERT(jansson_accepts(obj, n, JSON_REJECT_DUPLICATES));
        PX_ASSERT_INT_EQ(px_json_check(obj, n, JSON_REJECT_DUPLICATES),
                         nk <= 64 ? PX_JSON_OK : PX_JSON_UNSURE);
        PX_ASSERT_INT_EQ(px_json_check(obj, n, 0), PX_JSON_OK);
    }
}

static const sample valid[] = {
    S("{}"), S("[]"), S(" \t\r\n[ \t\r\n] \t\r\n"), S("[[]]"), S("[{}]"), S("{\"\":{}}"),
    S("[true,false,null]"), S("[ true , false , null ]"), S("{\"a\":{\"b\":[1,{\"c\":[]}]}}"),
    S("[0]"), S("[-0]"), S("[0.0]"), S("[-0.0e-0]"), S("[0e5]"), S("[1E+2]"), S("[1e-2]"),
    S("[123456789012345678]"), S("[-123456789012345678]"), S("[1.7976931348623157e99]"),
    S("[1e99]"), S("[1e-99]"), S("[3.141592653589793238462643383279]"), S("[1,-2,3.5,4e1]"),
    S("[\"\"]"), S("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]"), S("[\"\\u0041\\u00e9\\u20AC\\uFFFF\"]"),
    S("[\"\\u0001\\u001f\"]"), S("[\"\\ud83d\\ude00\"]"), S("[\"\\uD800\\uDC00\"]"),
    S("[\"\\uDBFF\\uDFFF\"]"), S("[\"\x7f\"]"), S("[\"\xc2\x80\"]"), S("[\"\xdf\xbf\"]"),
    S("[\"\xe0\xa0\x80\"]"), S("[\"\xed\x9f\xbf\"]"), S("[\"\xee\x80\x80\"]"),
    S("[\"\xef\xbf\xbf\"]"), S("[\"\xf0\x90\x80\x80\"]"), S("[\"\xf4\x8f\xbf\xbf\"]"),
    S("[\"Дизайн ok \xf0\x9f\x99\x82 €\"]"), S("[\"a/b'c\"]"), S("{\"a\":1,\"a\":2}"),
    SF("{\"a\":1,\"b\":{\"a\":1},\"c\":[{\"a\":1}]}", JSON_REJECT_DUPLICATES),
    SF("{\"a\":1,\"ab\":2,\"b\":3,\"\":4}", JSON_REJECT_DUPLICATES),
    SF("{\"a\":\"\\u0061\"}", JSON_REJECT_DUPLICATES), SF("1", JSON_DECODE_ANY),
    SF(" -1.5e+3 ", JSON_DECODE_ANY), SF("\"x\"", JSON_DECODE_ANY),
    SF("true", JSON_DECODE_ANY), SF("null", JSON_DECODE_ANY), SF("false", JSON_DECODE_ANY),
    SF("{}", JSON_DECODE_ANY),
};

static void test_valid(void)
{
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        const sample *s = &valid[i];
        PX_ASSERT(jansson_accepts(s->text, s->len, s->flags));
        if (px_json_check(s->text, s->len, s->flags) != PX_JSON_OK) {
            fprintf(stderr, "valid[%zu] \"%.*s\" flags %zu: UNSURE\n", i, (int)s->len, s->text,
                    s->flags);
            PX_ASSERT(0);
        }
    }
}

/* Every invalid sample is rejected by jansson too: the table tests real rules. */
static void test_invalid_are_invalid(void)
{
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        const sample *s = &invalid[i];
        if (s->flags & ~(size_t)(JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)) {
            continue; /* valid, but flags the checker leaves to jansson */
        }
        if (jansson_accepts(s->text, s->len, s->flags)) {
            fprintf(stderr, "invalid[%zu] \"%.*s\": jansson accepts it\n", i, (int)s->len,
                    s->text);
            PX_ASSERT(0);
        }
    }
}

/* xorshift64*: fixed seed, same inputs every run. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 33) % n;
}

static const char alphabet[] = "{}[]:,\" \n\t\\u0123456789-+.eEabfnrtlsx/"
                               "\xc3\xa9\xed\xa0\x80\xf0\x9f\xff";

static char random_byte(void)
{
    switch (rnd(4)) {
    case 0:
        return (char)rnd(256);
    default:
        return alphabet[rnd(sizeof(alphabet) - 1)];
    }
}

static const char *fragments[] = {
    "\\u0000", "\\ud83d", "\\ude00", "\\ud83d\\ude00", "\\u00e9", "\\\"", "\"a\":1,", "[", "]",
    "{", "}", ",", ":", "\"\"", "1e99", "1e100", "-0", "1234567890123456789", "123456789012345678",
    "true", "false", "null", "\xf4\x8f\xbf\xbf", "\xed\x9f\xbf", "\xe0\xa0\x80", "\0",
};

/* Copies doc into buf with 1-4 random edits; returns the new length. */
static size_t mutate(const char *doc, size_t len, char *buf, size_t cap)
{
    if (len > cap / 2) {
        len = cap / 2;
    }
    memcpy(buf, doc, len);
    int edits = 1 + (int)rnd(4);
    for (int e = 0; e < edits; e++) {
        size_t at = len ? rnd((uint32_t)len + 1) : 0;
        switch (rnd(5)) {
        case 0: /* replace a byte */
            if (at < len) {
                buf[at] = random_byte();
            }
            break;
        case 1: /* insert a byte */
            if (len < cap) {
                memmove(buf + at + 1, buf + at, len - at);
                buf[at] = random_byte();
                len++;
            }
            break;
        case 2: /* delete a few bytes */
        {
            size_t n = 1 + rnd(4);
            if (at + n <= len) {
                memmove(buf + at, buf + at + n, len - at - n);
                len -= n;
            }
            break;
        }
        case 3: /* insert a fragment */
        {
            const char *f = fragments[rnd(sizeof(fragments) / sizeof(fragments[0]))];
            size_t n = f[0] ? strlen(f) : 1;
            if (len + n <= cap) {
                memmove(buf + at + n, buf + at, len - at);
                memcpy(buf + at, f, n);
                len += n;
            }
            break;
        }
        default: /* copy a span over another place (duplicate keys, nesting) */
        {
            char span[32];
            size_t from = rnd((uint32_t)len + 1), n = rnd(sizeof(span));
            if (from + n <= len && len + n <= cap) {
                memcpy(span, buf + from, n);
                memmove(buf + at + n, buf + at, len - at);
                memcpy(buf + at, span, n);
                len += n;
            }
            break;
        }
        }
    }
    return len;
}

static const char *small_docs[] = {
    "{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\\u00e9\\n\"}}",
    "[1,-2.5e3,0,\"x\",{},[]]",
    "{\"k\":\"v\",\"k2\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x99\x82\",\"n\":-0.0}",
    "[[[[{\"a\":[{\"b\":{}}]}]]]]",
    "{\"\":\"\",\"a\":{\"a\":{\"a\":1}}}",
};

static void test_differential(void)
{
    load_docs();
    enum { ROUNDS = 300000 };
    static char buf[8192];
    size_t ok = 0, agree_unsure = 0, missed = 0;
    for (int r = 0; r < ROUNDS; r++) {
        size_t len;
        uint32_t kind = rnd(10);
        if (kind < 4 && ndocs) { /* a fixture, mutated */
            size_t d = rnd((uint32_t)ndocs);
            len = mutate(docs[d], doc_len[d], buf, sizeof(buf));
        } else if (kind < 8) { /* a small document, mutated */
            const char *d = small_docs[rnd(sizeof(small_docs) / sizeof(small_docs[0]))];
            len = mutate(d, strlen(d), buf, sizeof(buf));
        } else { /* a random short string */
            len = rnd(24);
            for (size_t i = 0; i < len; i++) {
                buf[i] = random_byte();
            }
        }
        size_t flags = all_flags[rnd(NFLAGS)];
        int check = px_json_check(buf, len, flags);
        int accepts = jansson_accepts(buf, len, flags);
        if (check == PX_JSON_OK && !accepts) {
            json_error_t e;
            json_decref(json_loadb(buf, len, flags, &e));
            fprintf(stderr, "round %d flags %zu: OK but jansson says %s; input (%zu bytes):\n",
                    r, flags, e.text, len);
            fwrite(buf, 1, len, stderr);
            fputc('\n', stderr);
            PX_ASSERT(0);
        }
        ok += check == PX_JSON_OK;
        agree_unsure += check != PX_JSON_OK && !accepts;
        missed += check != PX_JSON_OK && accepts;
    }
    printf("differential: %d inputs, %zu OK, %zu rejected by both, %zu valid but UNSURE\n",
           ROUNDS, ok, agree_unsure, missed);
    /* the run must exercise the OK side a lot, or it proves nothing */
    PX_ASSERT(ok > ROUNDS / 20);
}

PX_TEST_MAIN(PX_TEST(test_fixtures_fast_path), PX_TEST(test_invalid),
             PX_TEST(test_invalid_are_invalid), PX_TEST(test_unsure_cases), PX_TEST(test_valid),
             PX_TEST(test_differential))
