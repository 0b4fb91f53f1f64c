/* SHA-256 as specified in FIPS 180-4 section 6.2, and HMAC over it as in RFC 2104. */
#include "sha256.h"

#include <string.h>

/* FIPS 180-4 4.2.2: first 32 bits of the fractional parts of the cube roots of the first 64
 * primes. */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, unsigned n)
{
    return (x >> n) | (x << (32 - n));
}

/* Section 6.2.2: one 512-bit block into the hash state. */
static void compress(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64];
    for (int t = 0; t < 16; t++) {
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
               (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
    }
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = k + S1 + ch + K[t] + w[t];
        uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + maj;
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
}

void px_sha256_init(px_sha256_ctx *c)
{
    /* Section 5.3.3: fractional parts of the square roots of the first 8 primes. */
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, iv, sizeof(iv));
    c->bytes = 0;
    c->nbuf = 0;
}

void px_sha256_update(px_sha256_ctx *c, const void *data, size_t len)
{
    const uint8_t *p = data;
    if (len == 0) {
        return;
    }
    c->bytes += len;
    if (c->nbuf > 0) {
        size_t take = PX_SHA256_BLOCK_LEN - c->nbuf;
        if (take > len) {
            take = len;
        }
        memcpy(c->buf + c->nbuf, p, take);
        c->nbuf += take;
        p += take;
        len -= take;
        if (c->nbuf < PX_SHA256_BLOCK_LEN) {
            return;
        }
        compress(c->h, c->buf);
        c->nbuf = 0;
    }
    while (len >= PX_SHA256_BLOCK_LEN) {
        compress(c->h, p);
        p += PX_SHA256_BLOCK_LEN;
        len -= PX_SHA256_BLOCK_LEN;
    }
    if (len > 0) {
        memcpy(c->buf, p, len);
        c->nbuf = len;
    }
}

void px_sha256_final(px_sha256_ctx *c, uint8_t out[PX_SHA256_LEN])
{
    /* Section 5.1.1: a 1 bit, zeros up to 56 mod 64 bytes, then the length in bits. */
    uint64_t bits = c->bytes * 8;
    c->buf[c->nbuf++] = 0x80;
    if (c->nbuf > PX_SHA256_BLOCK_LEN - 8) {
        memset(c->buf + c->nbuf, 0, PX_SHA256_BLOCK_LEN - c->nbuf);
        compress(c->h, c->buf);
        c->nbuf = 0;
    }
    memset(c->buf + c->nbuf, 0, PX_SHA256_BLOCK_LEN - 8 - c->nbuf);
    for (int i = 0; i < 8; i++) {
        c->buf[PX_SHA256_BLOCK_LEN - 1 - i] = (uint8_t)(bits >> (8 * i));
    }
    compress(c->h, c->buf);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(c->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)c->h[i];
    }
    memset(c->buf, 0, sizeof(c->buf));
}

void px_sha256(const void *data, size_t len, uint8_t out[PX_SHA256_LEN])
{
    px_sha256_ctx c;
    px_sha256_init(&c);
    px_sha256_update(&c, data, len);
    px_sha256_final(&c, out);
}

void px_hmac_sha256_parts(const void *key, size_t keylen, const px_sha256_part *parts,
                          size_t nparts, uint8_t out[PX_SHA256_LEN])
{
    /* A key longer than a block is hashed first; a shorter one is padded with zeros. */
    uint8_t k[PX_SHA256_BLOCK_LEN] = {0};
    if (keylen > PX_SHA256_BLOCK_LEN) {
        px_sha256(key, keylen, k);
    } else if (keylen > 0) {
        memcpy(k, key, keylen);
    }
    uint8_t pad[PX_SHA256_BLOCK_LEN];
    uint8_t inner[PX_SHA256_LEN];
    px_sha256_ctx c;

    for (int i = 0; i < PX_SHA256_BLOCK_LEN; i++) {
        pad[i] = k[i] ^ 0x36;
    }
    px_sha256_init(&c);
    px_sha256_update(&c, pad, sizeof(pad));
    for (size_t i = 0; i < nparts; i++) {
        px_sha256_update(&c, parts[i].data, parts[i].len);
    }
    px_sha256_final(&c, inner);

    for (int i = 0; i < PX_SHA256_BLOCK_LEN; i++) {
        pad[i] = k[i] ^ 0x5c;
    }
    px_sha256_init(&c);
    px_sha256_update(&c, pad, sizeof(pad));
    px_sha256_update(&c, inner, sizeof(inner));
    px_sha256_final(&c, out);

    /* Do not leave key material on the stack. */
    volatile uint8_t *vk = k, *vp = pad;
    for (size_t i = 0; i < sizeof(k); i++) {
        vk[i] = 0;
        vp[i] = 0;
    }
}

void px_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                    uint8_t out[PX_SHA256_LEN])
{
    px_sha256_part part = {data, len};
    px_hmac_sha256_parts(key, keylen, &part, 1, out);
}

void px_hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}
