/* What the PostgreSQL store (store_pg.c) needs around libpq: connections opened with the store's
 * defaults, the URL's password kept out of every message, errors sorted by what the store does
 * about them, text buffers, and the text form of the arrays its batch statements take (one
 * statement inserts a whole batch: INSERT ... SELECT FROM unnest($1::bigint[], $2::text[], ...)).
 * Any thread; each PGconn is used by one thread at a time. */
#ifndef PX_PG_CONN_H
#define PX_PG_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

/* The secrets of a connection URL: texts that must never appear in a message. */
typedef struct px_pg_secrets {
    char *v[4]; /* owned; non-empty */
    size_t n;
} px_pg_secrets;

/* Collects the password of url (borrowed; a URI or a keyword/value string), as written and as
 * libpq decodes it, into s (caller's memory; px_pg_secrets_free). */
void px_pg_secrets_init(px_pg_secrets *s, const char *url);
void px_pg_secrets_free(px_pg_secrets *s);

/* Copies text (borrowed) into out (caller's memory, outlen bytes, NUL-terminated) with every
 * secret of s replaced by "***" and the trailing newline libpq puts on its messages removed. */
void px_pg_scrub(const px_pg_secrets *s, const char *text, char *out, size_t outlen);

/* Connects (blocking; bounded by connect_timeout, 5 s unless the URL says otherwise) to url
 * (borrowed) with TCP keepalives and a TCP user timeout, so that a dead peer is noticed, and sets
 * statement_timeout to statement_ms (0: none). Returns the connection (owned by caller: PQfinish),
 * or NULL with the reason, scrubbed, in err. */
PGconn *px_pg_connect(const char *url, uint32_t statement_ms, const px_pg_secrets *s, char *err,
                      size_t errlen);

/* What a failed statement means for the store. */
enum px_pg_fault {
    PX_PG_DOWN = 1, /* connection lost, server shutting down, out of disk, read-only...: the
                       database cannot take writes now; reconnect and try again later */
    PX_PG_AGAIN,    /* deadlock or serialization failure: run the same transaction again */
    PX_PG_BAD,      /* this statement failed (bad data...): running it again fails again */
};

/* Sorts the failure res (may be NULL: no result) on conn. */
int px_pg_fault(PGconn *conn, const PGresult *res);

/* A growable text buffer. */
typedef struct px_pg_buf {
    char *p; /* owned; NUL-terminated once anything was added */
    size_t len, cap;
    size_t items; /* elements of a binary array */
} px_pg_buf;

void px_pg_buf_add(px_pg_buf *b, const char *p, size_t n);
void px_pg_buf_addf(px_pg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void px_pg_buf_reset(px_pg_buf *b); /* empties it, keeps the memory */
void px_pg_buf_free(px_pg_buf *b);

/* Array literals ("{1,2}", "{\"a\",NULL}"): start with arr_open, add elements, end with
 * arr_close. A text element is quoted and escaped (n bytes of p; p NULL gives NULL); a bytea
 * element is written in hex, so any byte survives. */
void px_pg_arr_open(px_pg_buf *b);
void px_pg_arr_close(px_pg_buf *b);
void px_pg_arr_i64(px_pg_buf *b, int64_t v);
void px_pg_arr_text(px_pg_buf *b, const char *p, size_t n);
void px_pg_arr_str(px_pg_buf *b, const char *s); /* s NUL-terminated, or NULL */
void px_pg_arr_bytea(px_pg_buf *b, const char *p, size_t n);

/* A bytea[] parameter in binary format (paramFormats 1, paramLengths b->len): the bytes are sent
 * as they are, with no escaping for the client to write or the server to read. */
void px_pg_barr_open(px_pg_buf *b);
void px_pg_barr_bytea(px_pg_buf *b, const char *p, size_t n);
void px_pg_barr_close(px_pg_buf *b);

/* A column of a binary-format result: an int8, int4 or bool as an integer; text or bytea as the
 * value's bytes (NUL-terminated by libpq), NULL when the value is NULL. */
int64_t px_pg_int(const PGresult *r, int row, int col);
const char *px_pg_text(const PGresult *r, int row, int col);

#endif
