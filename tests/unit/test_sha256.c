/* SHA-256 against the FIPS 180-2 example vectors, HMAC-SHA256 against RFC 4231, and both against
 * OpenSSL's one-shot EVP_Digest and HMAC at every length up to 300 bytes. The functions
 * are libcrypto's too: these cases hold the wrapper to its contract (pieces, parts, empty and long
 * keys, empty messages). */
#include "../../util/sha256.c"

#include <stdlib.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "test.h"

static void hex_of(const uint8_t d[PX_SHA256_LEN], char out[2 * PX_SHA256_LEN + 1])
{
    px_hex_encode(d, PX_SHA256_LEN, out);
}

static void sha_hex(const char *msg, size_t len, char out[2 * PX_SHA256_LEN + 1])
{
    uint8_t d[PX_SHA256_LEN];
    px_sha256(msg, len, d);
    hex_of(d, out);
}

static void test_sha256_vectors(void)
{
    char hex[2 * PX_SHA256_LEN + 1];
    sha_hex("abc", 3, hex);
    PX_ASSERT_STR_EQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha_hex("", 0, hex);
    PX_ASSERT_STR_EQ(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha_hex(m448, strlen(m448), hex);
    PX_ASSERT_STR_EQ(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                       "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    sha_hex(m896, strlen(m896), hex);
    PX_ASSERT_STR_EQ(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

/* One million 'a', fed in uneven pieces so every buffering path runs. */
static void test_sha256_million_a_incremental(void)
{
    char *a = malloc(1000000);
    PX_ASSERT(a);
    memset(a, 'a', 1000000);
    px_sha256_ctx c;
    px_sha256_init(&c);
    size_t off = 0, step = 1;
    while (off < 1000000) {
        size_t n = step < 1000000 - off ? step : 1000000 - off;
        px_sha256_update(&c, a + off, n);
        off += n;
        step = step * 7 % 131 + 1;
    }
    uint8_t d[PX_SHA256_LEN];
    px_sha256_final(&c, d);
    free(a);
    char hex[2 * PX_SHA256_LEN + 1];
    hex_of(d, hex);
    PX_ASSERT_STR_EQ(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* Messages of 55, 56, 63 and 64 bytes straddle the padding boundary: compare one-shot with
 * byte-at-a-time. */
static void test_sha256_padding_boundaries(void)
{
    static const size_t lens[] = {55, 56, 57, 63, 64, 65, 119, 120};
    char msg[128];
    for (size_t i = 0; i < sizeof(msg); i++) {
        msg[i] = (char)('0' + i % 10);
    }
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        uint8_t one[PX_SHA256_LEN], inc[PX_SHA256_LEN];
        px_sha256(msg, lens[k], one);
        px_sha256_ctx c;
        px_sha256_init(&c);
        for (size_t i = 0; i < lens[k]; i++) {
            px_sha256_update(&c, msg + i, 1);
        }
        px_sha256_final(&c, inc);
        PX_ASSERT(memcmp(one, inc, PX_SHA256_LEN) == 0);
    }
    char hex[2 * PX_SHA256_LEN + 1];
    sha_hex(msg, 56, hex); /* the digest computed elsewhere */
    PX_ASSERT_STR_EQ(hex, "83aa034bda83e458a0dc9cbce0d4e354716aa0ff770ed37ac0ed2b292052e4af");
}

static void hmac_hex(const void *key, size_t klen, const void *msg, size_t mlen,
                     char out[2 * PX_SHA256_LEN + 1])
{
    uint8_t d[PX_SHA256_LEN];
    px_hmac_sha256(key, klen, msg, mlen, d);
    hex_of(d, out);
}

static void test_hmac_rfc4231(void)
{
    char hex[2 * PX_SHA256_LEN + 1];
    uint8_t key[131];

    memset(key, 0x0b, 20); /* test case 1 */
    hmac_hex(key, 20, "Hi There", 8, hex);
    PX_ASSERT_STR_EQ(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");

    hmac_hex("Jefe", 4, "what do ya want for nothing?", 28, hex); /* test case 2 */
    PX_ASSERT_STR_EQ(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

    uint8_t dd[50]; /* test case 3 */
    memset(key, 0xaa, 20);
    memset(dd, 0xdd, sizeof(dd));
    hmac_hex(key, 20, dd, sizeof(dd), hex);
    PX_ASSERT_STR_EQ(hex, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");

    memset(key, 0xaa, 131); /* test case 6: a key longer than a block */
    const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    hmac_hex(key, 131, m6, strlen(m6), hex);
    PX_ASSERT_STR_EQ(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");

    const char *m7 = "This is a test using a larger than block-size key and a larger than "
                     "block-size data. The key needs to be hashed before being used by the "
                     "HMAC algorithm."; /* test case 7 */
    hmac_hex(key, 131, m7, strlen(m7), hex);
    PX_ASSERT_STR_EQ(hex, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");

    hmac_hex("", 0, "", 0, hex); /* empty key and message */
    PX_ASSERT_STR_EQ(hex, "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

/* A message given in parts signs as the joined bytes (the webhook's timestamp + "." + body). */
static void test_hmac_parts(void)
{
    const char *ts = "1700000000", *body = "{\"order\":{\"id\":7}}";
    px_sha256_part parts[] = {{ts, strlen(ts)}, {".", 1}, {body, strlen(body)}};
    uint8_t d[PX_SHA256_LEN];
    char hex[2 * PX_SHA256_LEN + 1], joined_hex[2 * PX_SHA256_LEN + 1];
    px_hmac_sha256_parts("whsec", 5, parts, 3, d);
    hex_of(d, hex);
    hmac_hex("whsec", 5, "1700000000.{\"order\":{\"id\":7}}", 29, joined_hex);
    PX_ASSERT_STR_EQ(hex, joined_hex);
    px_hmac_sha256_parts("Jefe", 4, NULL, 0, d); /* no parts: the empty message */
    hex_of(d, hex);
    hmac_hex("Jefe", 4, "", 0, joined_hex);
    PX_ASSERT_STR_EQ(hex, joined_hex);
}

/* A fixed-seed generator (xorshift64*), so a failing length and content can be replayed. */
static uint64_t rnd_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static void rnd_fill(uint64_t *s, uint8_t *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        buf[i] = (uint8_t)(rnd_next(s) >> 56);
    }
}

/* OpenSSL's SHA-256 of data (len bytes) into out. */
static int openssl_sha256(const void *data, size_t len, uint8_t out[PX_SHA256_LEN])
{
    unsigned int n = 0;
    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == PX_SHA256_LEN;
}

/* Our digest of data, fed in pieces whose sizes come from *s (1 to 70 bytes). */
static void sha256_in_pieces(uint64_t *s, const uint8_t *data, size_t len,
                             uint8_t out[PX_SHA256_LEN])
{
    px_sha256_ctx c;
    px_sha256_init(&c);
    size_t off = 0;
    while (off < len) {
        size_t n = 1 + (size_t)(rnd_next(s) % 70);
        n = n < len - off ? n : len - off;
        px_sha256_update(&c, data + off, n);
        off += n;
    }
    px_sha256_final(&c, out);
}

/* Every length 0..300 (all padding cases, up to four blocks and a bit), random bytes, one-shot
 * and in random pieces: the same digest as OpenSSL's. */
static void test_sha256_matches_openssl_every_length(void)
{
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    uint8_t data[300];
    for (size_t len = 0; len <= sizeof(data); len++) {
        for (int round = 0; round < 4; round++) {
            rnd_fill(&seed, data, len);
            uint8_t ours[PX_SHA256_LEN], pieces[PX_SHA256_LEN], theirs[PX_SHA256_LEN];
            px_sha256(data, len, ours);
            sha256_in_pieces(&seed, data, len, pieces);
            PX_ASSERT(openssl_sha256(data, len, theirs));
            if (memcmp(ours, theirs, PX_SHA256_LEN) != 0 ||
                memcmp(pieces, theirs, PX_SHA256_LEN) != 0) {
                fprintf(stderr, "sha256 differs from OpenSSL at length %zu round %d\n", len,
                        round);
            }
            PX_ASSERT(memcmp(ours, theirs, PX_SHA256_LEN) == 0);
            PX_ASSERT(memcmp(pieces, theirs, PX_SHA256_LEN) == 0);
        }
    }
}

/* Longer random messages (up to 64 KiB) in random pieces. */
static void test_sha256_matches_openssl_long_messages(void)
{
    uint64_t seed = 0x2545f4914f6cdd1dULL;
    size_t cap = 65536;
    uint8_t *data = malloc(cap);
    PX_ASSERT(data);
    int same = 1;
    for (int round = 0; round < 40 && same; round++) {
        size_t len = (size_t)(rnd_next(&seed) % (cap + 1));
        rnd_fill(&seed, data, len);
        uint8_t ours[PX_SHA256_LEN], theirs[PX_SHA256_LEN];
        sha256_in_pieces(&seed, data, len, ours);
        same = openssl_sha256(data, len, theirs) && memcmp(ours, theirs, PX_SHA256_LEN) == 0;
        if (!same) {
            fprintf(stderr, "sha256 differs from OpenSSL at length %zu\n", len);
        }
    }
    free(data);
    PX_ASSERT(same);
}

/* HMAC-SHA256 against OpenSSL's HMAC: keys of 0..200 bytes (shorter than, equal to and longer
 * than a block) with messages of random length and content. */
static void test_hmac_matches_openssl(void)
{
    uint64_t seed = 0x853c49e6748fea9bULL;
    uint8_t key[200], msg[300];
    for (size_t klen = 0; klen <= sizeof(key); klen++) {
        size_t mlen = (size_t)(rnd_next(&seed) % (sizeof(msg) + 1));
        rnd_fill(&seed, key, klen);
        rnd_fill(&seed, msg, mlen);
        uint8_t ours[PX_SHA256_LEN], theirs[PX_SHA256_LEN];
        unsigned int n = 0;
        px_hmac_sha256(key, klen, msg, mlen, ours);
        PX_ASSERT(HMAC(EVP_sha256(), key, (int)klen, msg, mlen, theirs, &n) != NULL);
        PX_ASSERT_INT_EQ(n, PX_SHA256_LEN);
        if (memcmp(ours, theirs, PX_SHA256_LEN) != 0) {
            fprintf(stderr, "hmac differs from OpenSSL: key %zu bytes, message %zu\n", klen,
                    mlen);
        }
        PX_ASSERT(memcmp(ours, theirs, PX_SHA256_LEN) == 0);
    }
}

PX_TEST_MAIN(PX_TEST(test_sha256_vectors), PX_TEST(test_sha256_million_a_incremental),
             PX_TEST(test_sha256_padding_boundaries), PX_TEST(test_hmac_rfc4231),
             PX_TEST(test_hmac_parts),
             PX_TEST(test_sha256_matches_openssl_every_length),
             PX_TEST(test_sha256_matches_openssl_long_messages),
             PX_TEST(test_hmac_matches_openssl))
