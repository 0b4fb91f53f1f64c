/* sqs_answer: reads a ReceiveMessage answer in one pass without building a JSON tree of it (the
 * message bodies are most of its bytes and are only needed as strings). One-sided, like a
 * validator that agrees with jansson: it succeeds only on answers it is sure of, laid out as SQS
 * writes them, and says "unsure" for anything else (invalid JSON, a key with an escape, a value
 * of an unexpected type, more messages than fit), which the caller then reads with jansson as
 * before. When it succeeds the messages are exactly what the jansson reading gives: the same
 * strings byte for byte (escapes decoded, \u0000 kept, as JSON_ALLOW_NUL), the same messages
 * left out (no receipt handle), the last of duplicate keys. Pure functions; any thread. */
#ifndef PX_PLUGINS_SQS_ANSWER_H
#define PX_PLUGINS_SQS_ANSWER_H

#include <stddef.h>

#include "sqs.h"

#define PX_SQS_ANSWER_MAX (PX_SQS_MAX_BATCH * 2) /* messages read at most; more: unsure */

typedef struct px_sqs_answer {
    px_sqs_message msgs[PX_SQS_ANSWER_MAX]; /* the messages with a receipt handle, in order */
    size_t n;
    char *strings; /* owned: the decoded strings the messages point into */
    json_t *objects[PX_SQS_ANSWER_MAX * 2]; /* owned: (message) attribute objects */
    size_t nobjects;
} px_sqs_answer;

/* Reads text[0..len) (borrowed) as a ReceiveMessage answer into *a. Returns 0 (release *a with
 * px_sqs_answer_deinit) or -1 (unsure: nothing to release, read it with jansson). */
int px_sqs_answer_read(const char *text, size_t len, px_sqs_answer *a);

void px_sqs_answer_deinit(px_sqs_answer *a);

#endif
