/* pxutil (util/): percent-encoding and query decoding, UTF-8 well-formedness (against a decoder
 * written here the other way round, over every 1-, 2- and 3-byte sequence), constant-time
 * compare, error text into a buffer and the allocate-or-die string copies. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "consttime.h"
#include "retry_after.h"
#include "errbuf.h"
#include "mem.h"
#include "url.h"
#include "utf8.h"

#include "test.h"

/* --- px_url_encode ---------------------------------------------------------------------- */

static const char *enc(const char *s, const char *keep)
{
    static char out[512];
    size_t n = px_url_encode(s, keep, out, sizeof(out));
    return n < sizeof(out) && strlen(out) == n ? out : "(bad length)";
}

static void test_url_encode_unreserved_kept(void)
{
    const char *all = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~";
    PX_ASSERT_STR_EQ(enc(all, NULL), all);
    PX_ASSERT_STR_EQ(enc("", NULL), "");
}

/* Everything else is %XX with uppercase hex (SigV4 and RFC 3986 section 2.1 want uppercase), a
 * space included: no form-style '+'. This is what amoCRM's connect link needs for client_id. */
static void test_url_encode_escapes_uppercase(void)
{
    PX_ASSERT_STR_EQ(enc("a b+c/d?e=f&g", NULL), "a%20b%2Bc%2Fd%3Fe%3Df%26g");
    PX_ASSERT_STR_EQ(enc("\xc3\xa9\x7f\x01%", NULL), "%C3%A9%7F%01%25");
    PX_ASSERT_STR_EQ(enc("*'()!", NULL), "%2A%27%28%29%21");
}

/* Every byte value against the rule written out once more here. */
static void test_url_encode_every_byte(void)
{
    for (int c = 1; c < 256; c++) {
        char in[2] = {(char)c, 0}, want[4];
        int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    strchr("-._~", c);
        if (plain) {
            snprintf(want, sizeof(want), "%c", c);
        } else {
            snprintf(want, sizeof(want), "%%%02X", c);
        }
        PX_ASSERT_STR_EQ(enc(in, NULL), want);
    }
}

/* `keep` adds bytes to the set copied as they are: "/" for a path; the set below is the one the
 * Ploomes `request` path needs (reserved and '%' kept, blanks and "\"<>\\^`{|}" escaped). */
static void test_url_encode_keep(void)
{
    PX_ASSERT_STR_EQ(enc("/a b/c", "/"), "/a%20b/c");
    PX_ASSERT_STR_EQ(enc("/Deals?$filter=Name eq 'a b'&x={y}|%20\xc3\xa9",
                         "!#$%&'()*+,/:;=?@[]"),
                     "/Deals?$filter=Name%20eq%20'a%20b'&x=%7By%7D%7C%20%C3%A9");
}

/* Like snprintf: the whole length comes back; out is cut before an escape that does not fit. */
static void test_url_encode_bounded(void)
{
    PX_ASSERT_INT_EQ(px_url_encode("a b", NULL, NULL, 0), 5);
    char out[8];
    memset(out, 'x', sizeof(out));
    PX_ASSERT_INT_EQ(px_url_encode("ab cd", NULL, out, 4), 7);
    PX_ASSERT_STR_EQ(out, "ab"); /* "%20" needs 3 more bytes and the NUL */
    PX_ASSERT_INT_EQ(px_url_encode("ab cd", NULL, out, 6), 7);
    PX_ASSERT_STR_EQ(out, "ab%20"); /* 'c' fits no more: stops there, 'd' not appended */
    PX_ASSERT_INT_EQ(px_url_encode("ab cd", NULL, out, 8), 7);
    PX_ASSERT_STR_EQ(out, "ab%20cd");
    PX_ASSERT_INT_EQ(px_url_encode("abc", NULL, out, 1), 3);
    PX_ASSERT_STR_EQ(out, "");
}

/* --- px_url_decode ---------------------------------------------------------------------- */

static void test_url_decode(void)
{
    char out[64];
    const char *s = "a+b%20c%2fd%2F%41";
    PX_ASSERT_INT_EQ(px_url_decode(s, strlen(s), out, sizeof(out)), 9);
    PX_ASSERT_STR_EQ(out, "a b c/d/A");
    /* a '%' without two hex digits stays as it is */
    s = "%G1%4%%41100%";
    PX_ASSERT_INT_EQ(px_url_decode(s, strlen(s), out, sizeof(out)), 11);
    PX_ASSERT_STR_EQ(out, "%G1%4%A100%");
    /* only n bytes are read: an escape cut by n is not decoded */
    PX_ASSERT_INT_EQ(px_url_decode("%41BC", 2, out, sizeof(out)), 2);
    PX_ASSERT_STR_EQ(out, "%4");
    PX_ASSERT_INT_EQ(px_url_decode("%41", 3, out, sizeof(out)), 1);
    PX_ASSERT_STR_EQ(out, "A");
    /* %00 is a byte like another */
    PX_ASSERT_INT_EQ(px_url_decode("a%00b", 5, out, sizeof(out)), 3);
    PX_ASSERT(memcmp(out, "a\0b", 4) == 0);
    PX_ASSERT_INT_EQ(px_url_decode("", 0, out, sizeof(out)), 0);
    PX_ASSERT_STR_EQ(out, "");
}

static void test_url_decode_bounded(void)
{
    char out[4];
    PX_ASSERT_INT_EQ(px_url_decode("abcdef", 6, out, sizeof(out)), 3);
    PX_ASSERT_STR_EQ(out, "abc");
    PX_ASSERT_INT_EQ(px_url_decode("%41%42%43%44", 12, out, sizeof(out)), 3);
    PX_ASSERT_STR_EQ(out, "ABC");
    PX_ASSERT_INT_EQ(px_url_decode("abc", 3, out, 1), 0);
    PX_ASSERT_STR_EQ(out, "");
}

/* Encoding then decoding gives the bytes back, for every byte value. */
static void test_url_round_trip(void)
{
    char in[256], coded[3 * 256 + 1], back[257];
    for (int i = 0; i < 255; i++) {
        in[i] = (char)(i + 1);
    }
    in[255] = '\0';
    size_t n = px_url_encode(in, NULL, coded, sizeof(coded));
    PX_ASSERT(n < sizeof(coded));
    PX_ASSERT_INT_EQ(px_url_decode(coded, n, back, sizeof(back)), 255);
    PX_ASSERT_STR_EQ(back, in);
}

/* --- px_utf8_len ------------------------------------------------------------------------ */

static size_t u8(const char *s)
{
    return px_utf8_len((const unsigned char *)s, strlen(s));
}

static void test_utf8_valid_sequences(void)
{
    PX_ASSERT_INT_EQ(u8("a"), 1);
    PX_ASSERT_INT_EQ(px_utf8_len((const unsigned char *)"", 1), 1); /* NUL is ASCII */
    PX_ASSERT_INT_EQ(u8("\xc2\x80"), 2);                            /* U+0080 */
    PX_ASSERT_INT_EQ(u8("\xc3\xa9"), 2);                            /* é */
    PX_ASSERT_INT_EQ(u8("\xdf\xbf"), 2);                            /* U+07FF */
    PX_ASSERT_INT_EQ(u8("\xe0\xa0\x80"), 3);                        /* U+0800 */
    PX_ASSERT_INT_EQ(u8("\xe2\x82\xac"), 3);                        /* € */
    PX_ASSERT_INT_EQ(u8("\xed\x9f\xbf"), 3);                        /* U+D7FF */
    PX_ASSERT_INT_EQ(u8("\xee\x80\x80"), 3);                        /* U+E000 */
    PX_ASSERT_INT_EQ(u8("\xef\xbf\xbf"), 3);                        /* U+FFFF */
    PX_ASSERT_INT_EQ(u8("\xf0\x90\x80\x80"), 4);                    /* U+10000 */
    PX_ASSERT_INT_EQ(u8("\xf0\x9f\x98\x80"), 4);                    /* an emoji */
    PX_ASSERT_INT_EQ(u8("\xf4\x8f\xbf\xbf"), 4);                    /* U+10FFFF */
    PX_ASSERT_INT_EQ(u8("\xc3\xa9xyz"), 2);                         /* only the first */
}

static void test_utf8_overlong(void)
{
    PX_ASSERT_INT_EQ(u8("\xc0\x80"), 0); /* NUL in two bytes */
    PX_ASSERT_INT_EQ(u8("\xc1\xbf"), 0);
    PX_ASSERT_INT_EQ(u8("\xe0\x80\x80"), 0);
    PX_ASSERT_INT_EQ(u8("\xe0\x9f\xbf"), 0); /* U+07FF in three bytes */
    PX_ASSERT_INT_EQ(u8("\xf0\x80\x80\x80"), 0);
    PX_ASSERT_INT_EQ(u8("\xf0\x8f\xbf\xbf"), 0); /* U+FFFF in four bytes */
}

static void test_utf8_surrogates_and_range(void)
{
    PX_ASSERT_INT_EQ(u8("\xed\xa0\x80"), 0); /* U+D800 */
    PX_ASSERT_INT_EQ(u8("\xed\xaf\xbf"), 0); /* U+DBFF */
    PX_ASSERT_INT_EQ(u8("\xed\xb0\x80"), 0); /* U+DC00 */
    PX_ASSERT_INT_EQ(u8("\xed\xbf\xbf"), 0); /* U+DFFF */
    PX_ASSERT_INT_EQ(u8("\xed\xa0\x80\xed\xb0\x80"), 0); /* a pair, CESU-8 style */
    PX_ASSERT_INT_EQ(u8("\xf4\x90\x80\x80"), 0);          /* U+110000 */
    PX_ASSERT_INT_EQ(u8("\xf5\x80\x80\x80"), 0);
    PX_ASSERT_INT_EQ(u8("\xf7\xbf\xbf\xbf"), 0);
    PX_ASSERT_INT_EQ(u8("\xf8\x88\x80\x80\x80"), 0); /* the old 5-byte form */
    PX_ASSERT_INT_EQ(u8("\xfe"), 0);
    PX_ASSERT_INT_EQ(u8("\xff"), 0);
}

static void test_utf8_truncated_and_broken(void)
{
    const unsigned char euro[] = {0xe2, 0x82, 0xac};
    PX_ASSERT_INT_EQ(px_utf8_len(euro, 3), 3);
    PX_ASSERT_INT_EQ(px_utf8_len(euro, 2), 0); /* cut by the length */
    PX_ASSERT_INT_EQ(px_utf8_len(euro, 1), 0);
    PX_ASSERT_INT_EQ(px_utf8_len(euro, 0), 0);
    PX_ASSERT_INT_EQ(u8("\xe2\x82"), 0);     /* cut by the NUL */
    PX_ASSERT_INT_EQ(u8("\xf0\x9f\x98"), 0);
    PX_ASSERT_INT_EQ(u8("\xe2\x28\xa1"), 0); /* not a continuation byte */
    PX_ASSERT_INT_EQ(u8("\xc3\xc3"), 0);
    PX_ASSERT_INT_EQ(u8("\x80"), 0); /* a lone continuation byte */
    PX_ASSERT_INT_EQ(u8("\xbf"), 0);
}

/* The rule again, written the other way: decode a code point, then check its range. */
static size_t ref_len(const unsigned char *s, size_t left)
{
    if (left == 0) {
        return 0;
    }
    if (s[0] < 0x80) {
        return 1;
    }
    size_t n;
    uint32_t cp;
    if ((s[0] & 0xe0) == 0xc0) {
        n = 2, cp = s[0] & 0x1f;
    } else if ((s[0] & 0xf0) == 0xe0) {
        n = 3, cp = s[0] & 0x0f;
    } else if ((s[0] & 0xf8) == 0xf0) {
        n = 4, cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n > left) {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = cp << 6 | (s[i] & 0x3f);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    return cp < min_cp[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ? 0 : n;
}

/* Every 3-byte string (and so every 1- and 2-byte prefix), at every length 1..3; four-byte
 * sequences with every lead and second byte and the boundary values of the last two. */
static void test_utf8_every_short_sequence(void)
{
    unsigned char s[4];
    for (unsigned a = 0; a < 256; a++) {
        for (unsigned b = 0; b < 256; b++) {
            for (unsigned c = 0; c < 256; c++) {
                s[0] = (unsigned char)a, s[1] = (unsigned char)b, s[2] = (unsigned char)c;
                for (size_t left = 1; left <= 3; left++) {
                    if (px_utf8_len(s, left) != ref_len(s, left)) {
                        fprintf(stderr, "%02x %02x %02x left %zu: %zu, expected %zu\n", a, b, c,
                                left, px_utf8_len(s, left), ref_len(s, left));
                        PX_ASSERT(0);
                    }
                }
            }
        }
    }
    static const unsigned char tail[] = {0x00, 0x7f, 0x80, 0x9f, 0xa0, 0xbf, 0xc0, 0xff};
    for (unsigned a = 0xf0; a < 256; a++) {
        for (unsigned b = 0; b < 256; b++) {
            for (size_t i = 0; i < sizeof(tail); i++) {
                for (size_t j = 0; j < sizeof(tail); j++) {
                    s[0] = (unsigned char)a, s[1] = (unsigned char)b, s[2] = tail[i],
                    s[3] = tail[j];
                    PX_ASSERT_INT_EQ(px_utf8_len(s, 4), ref_len(s, 4));
                }
            }
        }
    }
}

static void test_utf8_valid(void)
{
    PX_ASSERT(px_utf8_valid("", 0));
    PX_ASSERT(px_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 16));
    PX_ASSERT(px_utf8_valid("a\0b", 3)); /* NUL is valid UTF-8 */
    PX_ASSERT(!px_utf8_valid("abc\xff", 4));
    PX_ASSERT(!px_utf8_valid("abc\xe2\x82", 5));         /* cut at the end */
    PX_ASSERT(px_utf8_valid("abc\xe2\x82\xac", 6));
    PX_ASSERT(!px_utf8_valid("abc\xe2\x82\xac", 5));     /* cut by n */
    PX_ASSERT(!px_utf8_valid("\xed\xa0\x80", 3));
}

/* --- px_ct_equal / px_ct_streq ------------------------------------------------------------ */

static void test_consttime_equal(void)
{
    PX_ASSERT(px_ct_streq("s3cret-token", "s3cret-token"));
    PX_ASSERT(px_ct_streq("", ""));
    PX_ASSERT(px_ct_equal("a\0b", 3, "a\0b", 3)); /* bytes, not strings */
    PX_ASSERT(px_ct_equal(NULL, 0, "", 0));
}

static void test_consttime_unequal(void)
{
    PX_ASSERT(!px_ct_streq("s3cret-tokeN", "s3cret-token")); /* last byte */
    PX_ASSERT(!px_ct_streq("S3cret-token", "s3cret-token")); /* first byte */
    PX_ASSERT(!px_ct_equal("a\0b", 3, "a\0c", 3));
}

/* A prefix, an extension, empty against not: the length counts, even when the bytes compared
 * agree (the shorter side reads as NULs beyond its end, and a NUL may be what the other holds). */
static void test_consttime_lengths(void)
{
    PX_ASSERT(!px_ct_streq("s3cret", "s3cret-token"));
    PX_ASSERT(!px_ct_streq("s3cret-token-and-more", "s3cret-token"));
    PX_ASSERT(!px_ct_streq("", "x"));
    PX_ASSERT(!px_ct_streq("x", ""));
    PX_ASSERT(!px_ct_equal("ab", 2, "ab\0", 3));
    PX_ASSERT(!px_ct_equal("ab\0", 3, "ab", 2));
    PX_ASSERT(!px_ct_streq(NULL, "x"));
    PX_ASSERT(!px_ct_streq("x", NULL));
    PX_ASSERT(!px_ct_streq(NULL, NULL));
}

/* --- px_errf, px_x* ----------------------------------------------------------------------- */

static void test_errf(void)
{
    char err[16];
    PX_ASSERT_INT_EQ(px_errf(err, sizeof(err), "bad %s at %d", "key", 7), -1);
    PX_ASSERT_STR_EQ(err, "bad key at 7");
    PX_ASSERT_INT_EQ(px_errf(err, sizeof(err), "%s", "a reason longer than the buffer"), -1);
    PX_ASSERT_STR_EQ(err, "a reason longer"); /* cut, NUL-terminated */
    memcpy(err, "untouched", 10);
    PX_ASSERT_INT_EQ(px_errf(err, 0, "x"), -1);
    PX_ASSERT_STR_EQ(err, "untouched");
    PX_ASSERT_INT_EQ(px_errf(NULL, 16, "x"), -1);
}

static void test_mem_strings(void)
{
    PX_ASSERT(px_xstrdup(NULL) == NULL);
    char *a = px_xstrdup("copy"), *b = px_xstrndup("copy me", 4), *c = px_xasprintf("%d-%s", 7, "x");
    int ok = strcmp(a, "copy") == 0 && strcmp(b, "copy") == 0 && strcmp(c, "7-x") == 0;
    free(a);
    free(b);
    free(c);
    PX_ASSERT(ok);
}

/* --- px_retry_after_ms / px_http_date_ms -------------------------------------------------- */

/* 1994-11-06 08:49:37 UTC, the example date of RFC 9110, in ms since the epoch. */
#define RFC_DATE_MS 784111777000LL

static void test_http_date_three_forms(void)
{
    PX_ASSERT_INT_EQ(px_http_date_ms("Sun, 06 Nov 1994 08:49:37 GMT"), RFC_DATE_MS);
    PX_ASSERT_INT_EQ(px_http_date_ms("Sunday, 06-Nov-94 08:49:37 GMT"), RFC_DATE_MS);
    PX_ASSERT_INT_EQ(px_http_date_ms("Sun Nov  6 08:49:37 1994"), RFC_DATE_MS);
    PX_ASSERT_INT_EQ(px_http_date_ms("Wed, 21 Oct 2015 07:28:00 GMT"), 1445412480000LL);
    PX_ASSERT_INT_EQ(px_http_date_ms("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
}

static void test_http_date_refused(void)
{
    const char *bad[] = {"", "Sun", "Sun, 06 Nov 1994 08:49:37", "Sun, 06 Nov 1994 08:49:37 UTC",
                         "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT",
                         "Sun, 06 Nov 1994 25:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT x",
                         "Sun, 32 Nov 1994 08:49:37 GMT", "2015-10-21T07:28:00Z"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (px_http_date_ms(bad[i]) != -1) {
            fprintf(stderr, "  accepted: \"%s\"\n", bad[i]);
        }
        PX_ASSERT_INT_EQ(px_http_date_ms(bad[i]), -1);
    }
    PX_ASSERT_INT_EQ(px_http_date_ms(NULL), -1);
}

static void test_retry_after_seconds(void)
{
    PX_ASSERT_INT_EQ(px_retry_after_ms("120", RFC_DATE_MS), 120000);
    PX_ASSERT_INT_EQ(px_retry_after_ms(" 0 ", RFC_DATE_MS), 0);
    PX_ASSERT_INT_EQ(px_retry_after_ms("99999999999999999999999", 0), PX_RETRY_AFTER_MAX_MS);
    PX_ASSERT_INT_EQ(px_retry_after_ms("-5", 0), -1);
    PX_ASSERT_INT_EQ(px_retry_after_ms("1.5", 0), -1);
    PX_ASSERT_INT_EQ(px_retry_after_ms("12s", 0), -1);
    PX_ASSERT_INT_EQ(px_retry_after_ms("", 0), -1);
    PX_ASSERT_INT_EQ(px_retry_after_ms(NULL, 0), -1);
}

static void test_retry_after_date(void)
{
    const char *date = "Sun, 06 Nov 1994 08:49:37 GMT";
    PX_ASSERT_INT_EQ(px_retry_after_ms(date, RFC_DATE_MS - 90500), 90500);
    PX_ASSERT_INT_EQ(px_retry_after_ms(date, RFC_DATE_MS), 0);
    PX_ASSERT_INT_EQ(px_retry_after_ms(date, RFC_DATE_MS + 5000), 0); /* past: now */
    PX_ASSERT_INT_EQ(px_retry_after_ms(date, 0), PX_RETRY_AFTER_MAX_MS); /* far: capped */
    PX_ASSERT_INT_EQ(px_retry_after_ms("Sun Nov  6 08:49:37 1994", RFC_DATE_MS - 1000), 1000);
    PX_ASSERT_INT_EQ(px_retry_after_ms("soon", RFC_DATE_MS), -1);
}

PX_TEST_MAIN(PX_TEST(test_url_encode_unreserved_kept), PX_TEST(test_url_encode_escapes_uppercase),
             PX_TEST(test_url_encode_every_byte), PX_TEST(test_url_encode_keep),
             PX_TEST(test_url_encode_bounded), PX_TEST(test_url_decode),
             PX_TEST(test_url_decode_bounded), PX_TEST(test_url_round_trip),
             PX_TEST(test_utf8_valid_sequences), PX_TEST(test_utf8_overlong),
             PX_TEST(test_utf8_surrogates_and_range), PX_TEST(test_utf8_truncated_and_broken),
             PX_TEST(test_utf8_every_short_sequence), PX_TEST(test_utf8_valid),
             PX_TEST(test_consttime_equal), PX_TEST(test_consttime_unequal),
             PX_TEST(test_consttime_lengths), PX_TEST(test_errf), PX_TEST(test_mem_strings),
             PX_TEST(test_http_date_three_forms), PX_TEST(test_http_date_refused),
             PX_TEST(test_retry_after_seconds), PX_TEST(test_retry_after_date))
