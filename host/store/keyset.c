/* The spool's recent dedupe keys (see keyset.h). An open-addressing table (linear probing, a power
 * of two slots, at most 3/4 full) of entries whose text "source\0key" lives in one arena. An entry
 * a rollback emptied keeps its slot with expiry ABSENT, so nothing is ever deleted from the
 * table. The undo log holds, for each set since the last commit, the entry and its expiry before
 * the set (ABSENT for a new one); it names entries by arena offset, which a rehash keeps. */
#include "keyset.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "mem.h"

#define ABSENT INT64_MIN
#define MIN_SLOTS 1024

typedef struct slot {
    uint64_t hash;
    uint32_t off, len; /* the entry's text in the arena; len 0: a free slot */
    int64_t expires;
} slot;

typedef struct undo {
    uint64_t hash;
    uint32_t off;
    int64_t old;
} undo;

struct px_keyset {
    uint64_t k0, k1; /* SipHash key */
    slot *slots;
    size_t cap, count;
    char *arena;
    size_t alen, acap;
    undo *log;
    size_t nlog, logcap;
};

/* ---- SipHash-1-3 over "source\0key" ---------------------------------------------------------- */

static uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

typedef struct sip {
    uint64_t v0, v1, v2, v3;
    uint64_t word; /* bytes not yet in a full word, little-endian */
    size_t n;      /* bytes fed so far */
} sip;

static void sip_round(sip *s)
{
    s->v0 += s->v1;
    s->v1 = rotl(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = rotl(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = rotl(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = rotl(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = rotl(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = rotl(s->v2, 32);
}

static void sip_feed(sip *s, const void *p, size_t len)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++) {
        s->word |= (uint64_t)b[i] << (8 * (s->n % 8));
        if (++s->n % 8 == 0) {
            s->v3 ^= s->word;
            sip_round(s);
            s->v0 ^= s->word;
            s->word = 0;
        }
    }
}

static uint64_t hash_pair(const px_keyset *ks, const char *source, size_t slen, const char *key,
                          size_t klen)
{
    sip s = {.v0 = ks->k0 ^ 0x736f6d6570736575ull, .v1 = ks->k1 ^ 0x646f72616e646f6dull,
             .v2 = ks->k0 ^ 0x6c7967656e657261ull, .v3 = ks->k1 ^ 0x7465646279746573ull};
    sip_feed(&s, source, slen + 1); /* with its NUL: ("ab", "c") and ("a", "bc") differ */
    sip_feed(&s, key, klen);
    uint64_t last = s.word | ((uint64_t)(s.n & 0xff) << 56);
    s.v3 ^= last;
    sip_round(&s);
    s.v0 ^= last;
    s.v2 ^= 0xff;
    for (int i = 0; i < 3; i++) {
        sip_round(&s);
    }
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

/* ---- table ----------------------------------------------------------------------------------- */

px_keyset *px_keyset_new(void)
{
    px_keyset *ks = px_xcalloc(1, sizeof(*ks));
    uint64_t k[2];
    if (getrandom(k, sizeof(k), 0) != (ssize_t)sizeof(k)) {
        /* no entropy source: a clock-derived key still differs from run to run */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        k[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec;
        k[1] = (uint64_t)(uintptr_t)ks * 0xbf58476d1ce4e5b9ull ^ k[0];
    }
    ks->k0 = k[0];
    ks->k1 = k[1];
    ks->cap = MIN_SLOTS;
    ks->slots = px_xcalloc(ks->cap, sizeof(slot));
    return ks;
}

void px_keyset_free(px_keyset *ks)
{
    if (!ks) {
        return;
    }
    free(ks->slots);
    free(ks->arena);
    free(ks->log);
    free(ks);
}

/* The slot holding (source, key) of hash `hash`, or the free slot where it would go. */
static slot *find(const px_keyset *ks, uint64_t hash, const char *source, size_t slen,
                  const char *key, size_t klen)
{
    size_t mask = ks->cap - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        slot *sl = &ks->slots[i];
        if (sl->len == 0) {
            return sl;
        }
        const char *t = ks->arena + sl->off;
        if (sl->hash == hash && sl->len == slen + 1 + klen && !memcmp(t, source, slen + 1) &&
            !memcmp(t + slen + 1, key, klen)) {
            return sl;
        }
    }
}

/* The slot of the entry at arena offset off (present: it is in the undo log). */
static slot *find_off(const px_keyset *ks, uint64_t hash, uint32_t off)
{
    size_t mask = ks->cap - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        if (ks->slots[i].off == off && ks->slots[i].len > 0) {
            return &ks->slots[i];
        }
    }
}

static void grow(px_keyset *ks)
{
    slot *old = ks->slots;
    size_t ocap = ks->cap;
    ks->cap *= 2;
    ks->slots = px_xcalloc(ks->cap, sizeof(slot));
    for (size_t i = 0; i < ocap; i++) {
        if (old[i].len > 0) {
            size_t mask = ks->cap - 1, j = old[i].hash & mask;
            while (ks->slots[j].len > 0) {
                j = (j + 1) & mask;
            }
            ks->slots[j] = old[i];
        }
    }
    free(old);
}

int px_keyset_get(const px_keyset *ks, const char *source, const char *key, int64_t *expires_ms)
{
    size_t slen = strlen(source), klen = strlen(key);
    const slot *sl = find(ks, hash_pair(ks, source, slen, key, klen), source, slen, key, klen);
    if (sl->len == 0 || sl->expires == ABSENT) {
        return 0;
    }
    *expires_ms = sl->expires;
    return 1;
}

void px_keyset_set(px_keyset *ks, const char *source, const char *key, int64_t expires_ms)
{
    size_t slen = strlen(source), klen = strlen(key), tlen = slen + 1 + klen;
    if ((ks->count + 1) * 4 > ks->cap * 3) {
        grow(ks);
    }
    uint64_t hash = hash_pair(ks, source, slen, key, klen);
    slot *sl = find(ks, hash, source, slen, key, klen);
    if (sl->len == 0) { /* new: its text goes to the arena's end */
        if (ks->alen + tlen > ks->acap) {
            ks->acap = ks->acap ? ks->acap * 2 : 64 * 1024;
            while (ks->acap < ks->alen + tlen) {
                ks->acap *= 2;
            }
            ks->arena = px_xrealloc(ks->arena, ks->acap);
        }
        memcpy(ks->arena + ks->alen, source, slen + 1);
        memcpy(ks->arena + ks->alen + slen + 1, key, klen);
        *sl = (slot){.hash = hash, .off = (uint32_t)ks->alen, .len = (uint32_t)tlen,
                     .expires = ABSENT};
        ks->alen += tlen;
        ks->count++;
    }
    if (ks->nlog == ks->logcap) {
        ks->logcap = ks->logcap ? ks->logcap * 2 : 256;
        ks->log = px_xrealloc(ks->log, ks->logcap * sizeof(undo));
    }
    ks->log[ks->nlog++] = (undo){.hash = hash, .off = sl->off, .old = sl->expires};
    sl->expires = expires_ms;
}

void px_keyset_commit(px_keyset *ks)
{
    ks->nlog = 0;
}

void px_keyset_rollback(px_keyset *ks)
{
    while (ks->nlog > 0) {
        const undo *u = &ks->log[--ks->nlog];
        find_off(ks, u->hash, u->off)->expires = u->old;
    }
}

size_t px_keyset_count(const px_keyset *ks)
{
    return ks->count;
}

void px_keyset_clear(px_keyset *ks)
{
    memset(ks->slots, 0, ks->cap * sizeof(slot));
    ks->count = 0;
    ks->alen = 0;
    ks->nlog = 0;
}
