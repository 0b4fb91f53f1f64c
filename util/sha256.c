/* SHA-256 and HMAC-SHA256 through libcrypto's EVP digest and EVP_MAC interfaces (see sha256.h). */
#include "sha256.h"

#include <stdio.h>
#include <stdlib.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

/* libcrypto fails these only when it cannot allocate; the callers have no way to report it. */
static void need(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "plexus: libcrypto failed: %s (out of memory)\n", what);
        abort();
    }
}

void px_sha256_init(px_sha256_ctx *c)
{
    c->md = EVP_MD_CTX_new();
    need(c->md && EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) == 1, "sha256 init");
}

void px_sha256_update(px_sha256_ctx *c, const void *data, size_t len)
{
    if (len > 0) {
        need(EVP_DigestUpdate(c->md, data, len) == 1, "sha256 update");
    }
}

void px_sha256_final(px_sha256_ctx *c, uint8_t out[PX_SHA256_LEN])
{
    need(EVP_DigestFinal_ex(c->md, out, NULL) == 1, "sha256 final");
    EVP_MD_CTX_free(c->md);
    c->md = NULL;
}

void px_sha256(const void *data, size_t len, uint8_t out[PX_SHA256_LEN])
{
    static const uint8_t none;
    need(EVP_Digest(len ? data : &none, len, out, NULL, EVP_sha256(), NULL) == 1, "sha256");
}

void px_hmac_sha256_parts(const void *key, size_t keylen, const px_sha256_part *parts,
                          size_t nparts, uint8_t out[PX_SHA256_LEN])
{
    /* EVP_MAC_init takes a NULL key as "keep the key set before": an empty key must be a
     * pointer all the same. */
    static const uint8_t empty_key;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    need(ctx && EVP_MAC_init(ctx, keylen ? key : &empty_key, keylen, params) == 1,
         "hmac-sha256 init");
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].len > 0) {
            need(EVP_MAC_update(ctx, parts[i].data, parts[i].len) == 1, "hmac-sha256 update");
        }
    }
    size_t n = 0;
    need(EVP_MAC_final(ctx, out, &n, PX_SHA256_LEN) == 1 && n == PX_SHA256_LEN,
         "hmac-sha256 final");
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
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
