/* sigv4: AWS Signature Version 4 for request headers (the "Authorization" header form), with
 * the signing key derived once per day and kept: signing a request then costs two SHA-256 and one
 * HMAC-SHA256, not the four HMACs of the key chain on top. One signer per credentials, region
 * and service; not thread-safe (the key cache is written on a new day). */
#ifndef PX_PLUGINS_SIGV4_H
#define PX_PLUGINS_SIGV4_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "sha256.h"

#define PX_SIGV4_DATE_LEN 16 /* "20150830T123600Z" */
/* Room the Authorization value needs besides the access key id (and its ", " separators). */
#define PX_SIGV4_AUTH_OVERHEAD 512

typedef struct px_sigv4 {
    char *key_id;  /* owned */
    char *secret;  /* owned, "AWS4" + secret key; wiped on deinit */
    char *region;  /* owned */
    char *service; /* owned */
    char day[9];   /* "YYYYMMDD" the cached key is for; "" = none yet */
    uint8_t key[PX_SHA256_LEN];
} px_sigv4;

/* Copies the credentials (all borrowed, required, non-empty) into s (caller memory). Returns 0,
 * or -1 when one is missing or memory runs out (s then needs no deinit). */
int px_sigv4_init(px_sigv4 *s, const char *key_id, const char *secret, const char *region,
                  const char *service);

/* Frees what init took and wipes the secret and the key. */
void px_sigv4_deinit(px_sigv4 *s);

/* Writes the X-Amz-Date value of the time t (UTC) into out (PX_SIGV4_DATE_LEN + 1 bytes). */
void px_sigv4_date(time_t t, char out[PX_SIGV4_DATE_LEN + 1]);

/* Signs a request and writes the Authorization header's value ("AWS4-HMAC-SHA256
 * Credential=..., SignedHeaders=..., Signature=...") into auth (auth_len bytes, at least
 * strlen(key_id) + PX_SIGV4_AUTH_OVERHEAD plus the signed header names).
 * - method: e.g. "POST"; host: the Host header's value exactly as sent; target: the request
 *   target as sent, path plus optional "?query" (already percent-encoded);
 * - headers: NULL-terminated "Name: value" lines (borrowed) that are sent and signed, at most 16,
 *   without Host or X-Amz-Date: both are signed from `host` and `amz_date`;
 * - body (body_len bytes, may be NULL when 0): the payload, hashed into the signature;
 * - amz_date: the X-Amz-Date value sent with the request (px_sigv4_date).
 * Returns 0, or -1 when auth is too small or a header line is malformed or there are too many. */
int px_sigv4_sign(px_sigv4 *s, const char *method, const char *host, const char *target,
                  const char *const *headers, const void *body, size_t body_len,
                  const char *amz_date, char *auth, size_t auth_len);

#endif
