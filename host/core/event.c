/* Event objects (see event.h). */
#include "clock.h"
#include "event.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "mem.h"

/* v in lowercase hex, zero-padded to at least width digits, as printf's "%0*llx" writes it.
 * Returns the number of characters written (at most 16, or width). */
static size_t put_hex(char *out, uint64_t v, size_t width)
{
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    size_t pad = width > n ? width - n : 0;
    memset(out, '0', pad);
    for (size_t i = 0; i < n; i++) {
        out[pad + i] = tmp[n - 1 - i];
    }
    return pad + n;
}

/* Ids are unique within a host and sortable by creation: ms time, pid, counter
 * ("%011llx-%05x-%08x", written without printf: one is made per event). */
static char *new_id(int64_t ms)
{
    static uint32_t counter;
    static pid_t pid; /* getpid() is a system call; the host never forks after start */
    if (!pid) {
        pid = getpid();
    }
    char buf[48];
    size_t n = put_hex(buf, (uint64_t)ms, 11);
    buf[n++] = '-';
    n += put_hex(buf + n, (unsigned)pid & 0xfffff, 5);
    buf[n++] = '-';
    n += put_hex(buf + n, ++counter, 8);
    char *id = px_xmalloc(n + 1);
    memcpy(id, buf, n);
    id[n] = '\0';
    return id;
}

/* An event with its id, time, type and source set; no payload yet. */
static px_event *event_new(const char *source, const char *type)
{
    px_event *ev = px_xcalloc(1, sizeof(*ev));
    ev->refs = 1;
    ev->time_ms = px_now_ms();
    ev->id = new_id(ev->time_ms);
    ev->type = px_xstrdup(type);
    ev->source = px_xstrdup(source ? source : "");
    return ev;
}

px_event *px_event_create(const char *source, const char *type, json_t *payload)
{
    if (!type || !*type || !payload) {
        json_decref(payload);
        return NULL;
    }
    px_event *ev = event_new(source, type);
    ev->payload = payload;
    return ev;
}

px_event *px_event_create_text(const char *source, const char *type, const char *json,
                               size_t len, size_t flags)
{
    if (!type || !*type || !json) {
        return NULL;
    }
    px_event *ev = event_new(source, type);
    px_event_set_text(ev, json, len);
    ev->text_flags = flags;
    return ev;
}

void px_event_set_text(px_event *ev, const char *json, size_t len)
{
    char *copy = px_xmalloc(len + 1);
    memcpy(copy, json, len);
    copy[len] = '\0';
    free(ev->text);
    ev->text = copy;
    ev->text_len = len;
}

json_t *px_event_payload(px_event *ev)
{
    if (!ev->payload && ev->text) {
        ev->payload = json_loadb(ev->text, ev->text_len, ev->text_flags, NULL);
        if (!ev->payload) {
            ev->payload = json_stringn(ev->text, ev->text_len);
        }
    }
    return ev->payload;
}

const char *px_event_text(px_event *ev, size_t *len)
{
    if (!ev->text) {
        ev->text = json_dumps(ev->payload, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!ev->text) {
            ev->text = px_xstrdup("null");
        }
        ev->text_len = strlen(ev->text);
    }
    if (len) {
        *len = ev->text_len;
    }
    return ev->text;
}

px_event *px_event_ref(px_event *ev)
{
    ev->refs++;
    return ev;
}

void px_event_unref(px_event *ev)
{
    if (!ev || --ev->refs > 0) {
        return;
    }
    free(ev->id);
    free(ev->type);
    free(ev->source);
    free(ev->dedupe_key);
    free(ev->subject);
    json_decref(ev->payload);
    free(ev->text);
    json_decref(ev->meta);
    free(ev->backoff_ms);
    free(ev);
}

int px_event_set(px_event *ev, int field, const char *value)
{
    if (!ev || ev->emitted) {
        return PX_ESTATE;
    }
    char **slot;
    switch (field) {
    case PX_EVENT_ID: slot = &ev->id; break;
    case PX_EVENT_DEDUPE_KEY: slot = &ev->dedupe_key; break;
    case PX_EVENT_SUBJECT: slot = &ev->subject; break;
    default: return PX_EINVAL;
    }
    if (field == PX_EVENT_ID && (!value || !*value)) {
        return PX_EINVAL;
    }
    free(*slot);
    *slot = value && *value ? px_xstrdup(value) : NULL;
    return 0;
}

int px_event_set_hint(px_event *ev, int hint, int64_t value)
{
    if (!ev || ev->emitted) {
        return PX_ESTATE;
    }
    if (value < 0) {
        return PX_EINVAL;
    }
    if (hint == PX_HINT_DEADLINE_MS) { /* unix ms do not fit the 32-bit hints below */
        ev->deadline_ms = value;
        return 0;
    }
    if (value > UINT32_MAX) {
        return PX_EINVAL;
    }
    switch (hint) {
    case PX_HINT_MAX_ATTEMPTS:
        if (value < 1) {
            return PX_EINVAL;
        }
        ev->max_attempts = (uint32_t)value;
        return 0;
    case PX_HINT_TIMEOUT_MS: ev->timeout_ms = (uint32_t)value; return 0;
    case PX_HINT_BACKOFF_MS:
        if (ev->nbackoff >= 64) {
            return PX_EINVAL;
        }
        ev->backoff_ms = px_xrealloc(ev->backoff_ms, (ev->nbackoff + 1) * sizeof(uint32_t));
        ev->backoff_ms[ev->nbackoff++] = (uint32_t)value;
        return 0;
    case PX_HINT_FAIL_ON_TIMEOUT:
        if (value > 1) {
            return PX_EINVAL;
        }
        ev->fail_on_timeout = (int)value;
        return 0;
    default: return PX_EINVAL;
    }
}

int px_event_set_meta(px_event *ev, const char *key, const char *value)
{
    if (!ev || ev->emitted) {
        return PX_ESTATE;
    }
    if (!key || !value) {
        return PX_EINVAL;
    }
    if (!ev->meta) {
        ev->meta = json_object();
    }
    json_object_set_new(ev->meta, key, json_string(value));
    return 0;
}

char *px_event_hints_json(const px_event *ev)
{
    if (!ev->max_attempts && !ev->timeout_ms && !ev->nbackoff && !ev->deadline_ms &&
        !ev->fail_on_timeout) {
        return NULL;
    }
    /* written as json_dumps(JSON_COMPACT) writes the object, keys in this order */
    size_t cap = 160 + ev->nbackoff * 12, n = 0;
    char *s = px_xmalloc(cap);
    const char *sep = "{";
    if (ev->max_attempts) {
        n += (size_t)snprintf(s + n, cap - n, "%s\"max_attempts\":%u", sep, ev->max_attempts);
        sep = ",";
    }
    if (ev->timeout_ms) {
        n += (size_t)snprintf(s + n, cap - n, "%s\"timeout_ms\":%u", sep, ev->timeout_ms);
        sep = ",";
    }
    if (ev->nbackoff) {
        n += (size_t)snprintf(s + n, cap - n, "%s\"backoff_ms\":[", sep);
        for (size_t i = 0; i < ev->nbackoff; i++) {
            n += (size_t)snprintf(s + n, cap - n, "%s%u", i ? "," : "", ev->backoff_ms[i]);
        }
        n += (size_t)snprintf(s + n, cap - n, "]");
        sep = ",";
    }
    if (ev->deadline_ms) {
        n += (size_t)snprintf(s + n, cap - n, "%s\"deadline_ms\":%lld", sep,
                              (long long)ev->deadline_ms);
        sep = ",";
    }
    if (ev->fail_on_timeout) {
        n += (size_t)snprintf(s + n, cap - n, "%s\"fail_on_timeout\":true", sep);
    }
    snprintf(s + n, cap - n, "}");
    return s;
}

/* 1 when json_dumps writes s as it is between its quotes: no quote, backslash or control byte
 * (jansson's strings are valid UTF-8, written as they are); *len its length. */
static int plain_string(const char *s, size_t *len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    for (; p[i]; i++) {
        if (p[i] < 0x20 || p[i] == '"' || p[i] == '\\') {
            return 0;
        }
    }
    *len = i;
    return 1;
}

char *px_event_meta_json(const px_event *ev)
{
    if (!ev->meta) {
        return NULL;
    }
    size_t cap = 3, n = 0, klen, vlen;
    const char *key;
    json_t *v;
    json_object_foreach(ev->meta, key, v) {
        if (!json_is_string(v) || !plain_string(key, &klen) ||
            !plain_string(json_string_value(v), &vlen) || vlen != json_string_length(v)) {
            return json_dumps(ev->meta, JSON_COMPACT); /* escapes: jansson writes it */
        }
        cap += klen + vlen + 6;
    }
    char *s = px_xmalloc(cap);
    s[n++] = '{';
    json_object_foreach(ev->meta, key, v) {
        if (n > 1) {
            s[n++] = ',';
        }
        s[n++] = '"';
        klen = strlen(key);
        memcpy(s + n, key, klen);
        n += klen;
        memcpy(s + n, "\":\"", 3);
        n += 3;
        vlen = json_string_length(v);
        memcpy(s + n, json_string_value(v), vlen);
        n += vlen;
        s[n++] = '"';
    }
    s[n++] = '}';
    s[n] = '\0';
    return s;
}

void px_event_hints_parse(px_event *ev, const char *hints_json)
{
    if (!hints_json) {
        return;
    }
    json_t *h = json_loads(hints_json, 0, NULL);
    if (!json_is_object(h)) {
        json_decref(h);
        return;
    }
    json_int_t v = json_integer_value(json_object_get(h, "max_attempts"));
    if (v > 0) {
        ev->max_attempts = (uint32_t)v;
    }
    v = json_integer_value(json_object_get(h, "timeout_ms"));
    if (v > 0) {
        ev->timeout_ms = (uint32_t)v;
    }
    v = json_integer_value(json_object_get(h, "deadline_ms"));
    if (v > 0) {
        ev->deadline_ms = v;
    }
    ev->fail_on_timeout = json_is_true(json_object_get(h, "fail_on_timeout"));
    json_t *b = json_object_get(h, "backoff_ms");
    size_t i;
    json_t *x;
    json_array_foreach(b, i, x) {
        px_event_set_hint(ev, PX_HINT_BACKOFF_MS, json_integer_value(x));
    }
    json_decref(h);
}
