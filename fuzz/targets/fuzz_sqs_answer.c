/* Fuzz target: the one-pass ReceiveMessage reader against the jansson reading. The input is the
 * answer's text; whenever px_sqs_answer_read is sure of it, json_loadb (JSON_ALLOW_NUL) must read
 * the same text as an object and the receive path's jansson reading (deliver_receive) must give
 * the same messages: the same count, and every string byte for byte, the attribute objects equal;
 * else abort. */
#include "../../plugins/common/sqs.c"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct kept {
    px_sqs_message m[PX_SQS_ANSWER_MAX];
    size_t n;
    char *copies[PX_SQS_ANSWER_MAX * 4];
    size_t ncopies;
    json_t *objects[PX_SQS_ANSWER_MAX * 2];
    size_t nobjects;
} kept;

static const char *keep_string(kept *k, const char *s, size_t len)
{
    if (!s) {
        return NULL;
    }
    char *c = malloc(len + 1);
    memcpy(c, s, len);
    c[len] = '\0';
    k->copies[k->ncopies++] = c;
    return c;
}

static json_t *keep_object(kept *k, json_t *o)
{
    if (o) {
        k->objects[k->nobjects++] = json_incref(o);
    }
    return o;
}

static void on_messages(const px_sqs_error *err, const px_sqs_message *m, size_t n, void *arg)
{
    kept *k = arg;
    if (err->kind != PX_SQS_OK || n > PX_SQS_ANSWER_MAX) {
        k->n = (size_t)-1;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        px_sqs_message *d = &k->m[i];
        d->message_id =
            keep_string(k, m[i].message_id, m[i].message_id ? strlen(m[i].message_id) : 0);
        d->receipt_handle = keep_string(k, m[i].receipt_handle,
                                        m[i].receipt_handle ? strlen(m[i].receipt_handle) : 0);
        d->md5_of_body = keep_string(k, m[i].md5_of_body,
                                     m[i].md5_of_body ? strlen(m[i].md5_of_body) : 0);
        d->body = keep_string(k, m[i].body, m[i].body_len);
        d->body_len = m[i].body_len;
        d->attributes = keep_object(k, m[i].attributes);
        d->message_attributes = keep_object(k, m[i].message_attributes);
    }
    k->n = n;
}

static void release(kept *k)
{
    for (size_t i = 0; i < k->ncopies; i++) {
        free(k->copies[i]);
    }
    for (size_t i = 0; i < k->nobjects; i++) {
        json_decref(k->objects[i]);
    }
}

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int same_obj(json_t *a, json_t *b)
{
    return (!a && !b) || (a && b && json_equal(a, b));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    px_sqs_answer a;
    if (px_sqs_answer_read(text, size, &a) < 0) {
        return 0;
    }
    json_error_t jerr;
    json_t *root = json_loadb(text, size, JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(root)) {
        fprintf(stderr, "one-pass reader sure, jansson: %s\n", root ? "not an object" : jerr.text);
        abort();
    }
    static kept k;
    memset(&k, 0, sizeof(k));
    px_sqs_call call = {.kind = CALL_RECEIVE, .receive_cb = on_messages, .arg = &k};
    px_sqs_error ok = {.kind = PX_SQS_OK, .code = "", .message = ""};
    deliver_receive(&call, &ok, root);
    json_decref(root);
    if (k.n != a.n) {
        fprintf(stderr, "messages: one-pass %zu, jansson %zu\n", a.n, k.n);
        abort();
    }
    for (size_t i = 0; i < a.n; i++) {
        const px_sqs_message *x = &a.msgs[i], *y = &k.m[i];
        if (!same_str(x->message_id, y->message_id) ||
            !same_str(x->receipt_handle, y->receipt_handle) ||
            !same_str(x->md5_of_body, y->md5_of_body) || x->body_len != y->body_len ||
            (x->body_len && memcmp(x->body, y->body, x->body_len) != 0) ||
            !same_obj(x->attributes, y->attributes) ||
            !same_obj(x->message_attributes, y->message_attributes)) {
            fprintf(stderr, "message %zu differs\n", i);
            abort();
        }
    }
    release(&k);
    px_sqs_answer_deinit(&a);
    return 0;
}
