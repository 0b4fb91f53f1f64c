/* SHA-256 and HMAC-SHA256 for webhook signatures, computed by libcrypto (OpenSSL's EVP
 * interfaces; the host process loads it already, through libcurl). Part of pxcrypto (see
 * util/meson.build): the bundled plugins link it, and the host hands the same functions to every
 * plugin through the SDK (sha256, hmac_sha256). The digests are OpenSSL's own; this header only
 * keeps the small API its callers use. Any thread. libcrypto
 * fails these calls only when memory runs out, and then they abort, as px_x* do (util/mem.h). */
#ifndef PX_SHA256_H
#define PX_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define PX_SHA256_LEN 32       /* digest bytes */
#define PX_SHA256_BLOCK_LEN 64 /* block bytes */

struct evp_md_ctx_st; /* OpenSSL's EVP_MD_CTX */

/* Incremental state in caller memory. px_sha256_init takes a libcrypto context that
 * px_sha256_final releases: every digest started must be finished. */
typedef struct px_sha256_ctx {
    struct evp_md_ctx_st *md; /* owned */
} px_sha256_ctx;

/* Starts a digest in c (caller memory). */
void px_sha256_init(px_sha256_ctx *c);
/* Adds len bytes of data (borrowed; may be NULL when len is 0). */
void px_sha256_update(px_sha256_ctx *c, const void *data, size_t len);
/* Writes the digest to out (caller memory, PX_SHA256_LEN bytes) and releases what
 * px_sha256_init took. c must be initialised again before reuse. */
void px_sha256_final(px_sha256_ctx *c, uint8_t out[PX_SHA256_LEN]);

/* One-shot digest of data (borrowed, len bytes) into out (caller memory). */
void px_sha256(const void *data, size_t len, uint8_t out[PX_SHA256_LEN]);

/* HMAC-SHA256 of data (borrowed, len bytes) under key (borrowed, keylen bytes, any length, 0
 * included) into out (caller memory, PX_SHA256_LEN bytes). */
void px_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                    uint8_t out[PX_SHA256_LEN]);

/* One piece of a message hashed in parts (data borrowed, len bytes). */
typedef struct px_sha256_part {
    const void *data;
    size_t len;
} px_sha256_part;

/* HMAC-SHA256 of the concatenation of parts[0..nparts) (borrowed) under key, without joining
 * them first; same result as px_hmac_sha256 on the joined bytes. */
void px_hmac_sha256_parts(const void *key, size_t keylen, const px_sha256_part *parts,
                          size_t nparts, uint8_t out[PX_SHA256_LEN]);

/* Writes n bytes of in (borrowed) as 2n lowercase hex digits plus a NUL into out (caller memory,
 * at least 2n + 1 bytes). */
void px_hex_encode(const uint8_t *in, size_t n, char *out);

#endif
