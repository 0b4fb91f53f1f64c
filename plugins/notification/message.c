/* notification: NotificationQueue message building and validation, EventBridge envelope check
 * (see message.h). Every rejection names the place in the message, e.g.
 * "notification[0].recipients[1].tos[0]: \"bob\" is not an e-mail address". */
#include "message.h"

#include <stdio.h>
#include <string.h>

#include "errbuf.h"

#define SERVICE_PREFIX "notificationservice/"

/* "" or null: a field left empty, typically by an optional mapping reference. */
static int is_blank(const json_t *v)
{
    return !v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0);
}

int notification_email_ok(const char *s)
{
    if (!s) {
        return 0;
    }
    size_t len = strlen(s);
    const char *at = strchr(s, '@');
    if (len < 3 || len > 254 || !at || strchr(at + 1, '@')) {
        return 0;
    }
    size_t local = (size_t)(at - s);
    if (local == 0 || local > 64 || s[0] == '.' || at[-1] == '.') {
        return 0;
    }
    for (const char *p = s; p < at; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c == 0x7f || strchr("()<>[]\\,;:\"", c) || (c == '.' && p[1] == '.')) {
            return 0;
        }
    }
    /* Domain: labels of letters, digits, '-' (or UTF-8 for IDN), no '-' at either end. */
    const char *label = at + 1;
    int labels = 0;
    for (;;) {
        const char *end = strchr(label, '.');
        size_t n = end ? (size_t)(end - label) : strlen(label);
        if (n == 0 || n > 63 || label[0] == '-' || label[n - 1] == '-') {
            return 0;
        }
        int digits_only = 1;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)label[i];
            int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
            int digit = c >= '0' && c <= '9';
            if (!alpha && !digit && c != '-') {
                return 0;
            }
            digits_only &= digit;
        }
        labels++;
        if (!end) {
            /* The top-level label: at least two characters, not a number. */
            return labels >= 2 && n >= 2 && !digits_only;
        }
        label = end + 1;
    }
}

/* The place of a field in a reason: "where.key", or "where.key[i]" when i >= 0. Only built when a
 * reason is written, so a valid message costs no formatting. */
static const char *place(char *buf, size_t len, const char *where, const char *key, long i)
{
    if (i >= 0) {
        snprintf(buf, len, "%s.%s[%ld]", where, key, i);
    } else {
        snprintf(buf, len, "%s.%s", where, key);
    }
    return buf;
}

/* Appends the one address v (a string or an {"email","name"} object; null and "" are skipped) to
 * list; where, key and i name its place. default_name (may be NULL) names a string-form address. */
static int add_address(json_t *list, const json_t *v, const char *where, const char *key, long i,
                       const char *default_name, char *why, size_t n)
{
    char at[256];
    if (is_blank(v)) {
        return 0;
    }
    const char *email = NULL, *name = default_name;
    if (json_is_string(v)) {
        email = json_string_value(v);
    } else if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x)
        {
            if (strcmp(k, "email") != 0 && strcmp(k, "name") != 0) {
                return px_errf(why, n, "%s: unknown key \"%s\" (use email and name)",
                               place(at, sizeof(at), where, key, i), k);
            }
        }
        const json_t *e = json_object_get(v, "email"), *nm = json_object_get(v, "name");
        if (is_blank(e)) {
            return 0;
        }
        if (!json_is_string(e)) {
            return px_errf(why, n, "%s.email: expected a string",
                           place(at, sizeof(at), where, key, i));
        }
        email = json_string_value(e);
        if (!is_blank(nm)) {
            if (!json_is_string(nm)) {
                return px_errf(why, n, "%s.name: expected a string",
                               place(at, sizeof(at), where, key, i));
            }
            name = json_string_value(nm);
        }
    } else {
        return px_errf(why, n, "%s: expected an e-mail address",
                       place(at, sizeof(at), where, key, i));
    }
    if (!notification_email_ok(email)) {
        return px_errf(why, n, "%s: \"%.100s\" is not an e-mail address",
                       place(at, sizeof(at), where, key, i), email);
    }
    json_t *a = json_object();
    json_object_set_new(a, "email", json_string(email));
    if (name && *name) {
        json_object_set_new(a, "name", json_string(name));
    }
    json_array_append_new(list, a);
    return 0;
}

/* Appends the addresses in v (an address or a list of them) to list; where and key name the
 * field. default_name (may be NULL) names string-form addresses. */
static int add_addresses(json_t *list, const json_t *v, const char *where, const char *key,
                         const char *default_name, char *why, size_t n)
{
    if (!json_is_array(v)) {
        return add_address(list, v, where, key, -1, default_name, why, n);
    }
    size_t i;
    const json_t *x;
    json_array_foreach(v, i, x)
    {
        if (json_is_array(x)) {
            char at[256];
            return px_errf(why, n, "%s[%zu]: expected an address, got a list",
                           place(at, sizeof(at), where, key, -1), i);
        }
        if (add_address(list, x, where, key, (long)i, default_name, why, n) < 0) {
            return -1;
        }
    }
    return 0;
}

/* A phone number or push id (field key of where) given as a string or a number; stores the text
 * in *out (borrowed from v or from buf), or NULL when blank. */
static int scalar_text(const json_t *v, const char *where, const char *key, char *buf,
                       size_t buf_len, const char **out, char *why, size_t n)
{
    *out = NULL;
    if (is_blank(v)) {
        return 0;
    }
    if (json_is_string(v)) {
        *out = json_string_value(v);
    } else if (json_is_integer(v)) {
        snprintf(buf, buf_len, "%lld", (long long)json_integer_value(v));
        *out = buf;
    } else {
        char at[256];
        return px_errf(why, n, "%s: expected a string", place(at, sizeof(at), where, key, -1));
    }
    return 0;
}

static int phone_ok(const char *s)
{
    int digits = 0;
    for (const char *p = s; *p; p++) {
        if (*p >= '0' && *p <= '9') {
            digits++;
        } else if (!strchr("+-(). ", *p)) {
            return 0;
        }
    }
    return digits >= 3 && strlen(s) <= 32;
}

static int norm_macros(const json_t *v, json_t *rec, const char *where, char *why, size_t n)
{
    if (is_blank(v)) {
        return 0;
    }
    if (!json_is_object(v)) {
        return px_errf(why, n, "%s.macros: expected an object of name: value", where);
    }
    const char *k;
    json_t *x;
    int all_text = 1;
    json_object_foreach((json_t *)v, k, x)
    {
        all_text &= json_is_string(x);
    }
    if (all_text) { /* the usual case: the macros go as they are */
        json_object_set(rec, "macros", (json_t *)v);
        return 0;
    }
    json_t *m = json_object();
    json_object_foreach((json_t *)v, k, x)
    {
        char text[64];
        json_t *s = NULL;
        if (json_is_string(x)) {
            s = json_incref(x);
        } else if (json_is_integer(x)) {
            snprintf(text, sizeof(text), "%lld", (long long)json_integer_value(x));
            s = json_string(text);
        } else if (json_is_real(x)) {
            snprintf(text, sizeof(text), "%.17g", json_real_value(x));
            s = json_string(text);
        } else if (json_is_boolean(x)) {
            s = json_string(json_is_true(x) ? "true" : "false");
        } else if (json_is_null(x)) {
            continue; /* an optional value that was absent: leave the macro out */
        } else {
            json_decref(m);
            return px_errf(why, n, "%s.macros.%s: expected a text value, got an %s", where, k,
                           json_is_object(x) ? "object" : "array");
        }
        json_object_set_new(m, k, s);
    }
    json_object_set_new(rec, "macros", m);
    return 0;
}

/* The service's description says a queued message "contains collection ID and event name", but
 * its payload model has no collection field (no name, place or type for one): a key invented
 * here could make the service refuse the message. A collection key is refused with a reason
 * that says so, not as a typo. */
static int is_collection_key(const char *k)
{
    return strcmp(k, "collectionId") == 0 || strcmp(k, "collection_id") == 0 ||
           strcmp(k, "collection") == 0;
}

static int refuse_collection(const char *where, const char *k, char *why, size_t n)
{
    return px_errf(why, n,
                   "%s.%s: a NotificationQueue message has no collection ID field (the service's "
                   "payload model defines none; see docs/plugins/notification.md)",
                   where, k);
}

static int is_recipient_key(const char *k)
{
    static const char *const keys[] = {"tos",    "to",     "to_name", "email",  "ccs",
                                       "bccs",   "phone",  "pushId",  "macros", "locale"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (strcmp(k, keys[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Normalises one recipient r into *out (new reference). In the short form, r is the whole
 * parameters object, whose `name` is the notification's. */
static int norm_recipient(const json_t *r, const char *where, int short_form, json_t **out,
                          char *why, size_t n)
{
    if (!json_is_object(r)) {
        return px_errf(why, n, "%s: expected an object", where);
    }
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)r, k, x)
    {
        if (!is_recipient_key(k) && !(short_form && strcmp(k, "name") == 0)) {
            return px_errf(why, n, "%s: unknown key \"%s\"", where, k);
        }
    }
    const json_t *to_name = json_object_get(r, "to_name");
    if (!is_blank(to_name) && !json_is_string(to_name)) {
        return px_errf(why, n, "%s.to_name: expected a string", where);
    }
    const char *dname = is_blank(to_name) ? NULL : json_string_value(to_name);
    json_t *rec = json_object();
    /* ccs and bccs are rarely given: their lists are made only when they are. */
    json_t *tos = json_array(), *ccs = NULL, *bccs = NULL;
    const json_t *ccv = json_object_get(r, "ccs"), *bccv = json_object_get(r, "bccs");
    static const char *const to_keys[] = {"tos", "to", "email"};
    for (size_t i = 0; i < 3; i++) {
        const json_t *v = json_object_get(r, to_keys[i]);
        if (add_addresses(tos, v, where, to_keys[i], dname, why, n) < 0) {
            goto fail;
        }
    }
    if (!is_blank(ccv)) {
        ccs = json_array();
        if (add_addresses(ccs, ccv, where, "ccs", NULL, why, n) < 0) {
            goto fail;
        }
    }
    if (!is_blank(bccv)) {
        bccs = json_array();
        if (add_addresses(bccs, bccv, where, "bccs", NULL, why, n) < 0) {
            goto fail;
        }
    }
    char buf[32];
    const char *phone, *push;
    const json_t *pv = json_object_get(r, "phone"), *iv = json_object_get(r, "pushId");
    if (scalar_text(pv, where, "phone", buf, sizeof(buf), &phone, why, n) < 0) {
        goto fail;
    }
    if (phone && !phone_ok(phone)) {
        char at[256];
        px_errf(why, n, "%s: \"%.40s\" is not a phone number",
                place(at, sizeof(at), where, "phone", -1), phone);
        goto fail;
    }
    if (phone) {
        json_object_set_new(rec, "phone", json_string(phone));
    }
    if (scalar_text(iv, where, "pushId", buf, sizeof(buf), &push, why, n) < 0) {
        goto fail;
    }
    if (push) {
        json_object_set_new(rec, "pushId", json_string(push));
    }
    if (json_array_size(tos) == 0 && !phone && !push) {
        px_errf(why, n, "%s: a recipient needs at least one of tos, phone or pushId", where);
        goto fail;
    }
    if (json_array_size(tos)) {
        json_object_set(rec, "tos", tos);
    }
    if (json_array_size(ccs)) {
        json_object_set(rec, "ccs", ccs);
    }
    if (json_array_size(bccs)) {
        json_object_set(rec, "bccs", bccs);
    }
    if (norm_macros(json_object_get(r, "macros"), rec, where, why, n) < 0) {
        goto fail;
    }
    const json_t *loc = json_object_get(r, "locale");
    if (!is_blank(loc)) {
        if (!json_is_string(loc)) {
            px_errf(why, n, "%s.locale: expected a string", where);
            goto fail;
        }
        json_object_set(rec, "locale", (json_t *)loc);
    }
    json_decref(tos);
    json_decref(ccs);
    json_decref(bccs);
    *out = rec;
    return 0;
fail:
    json_decref(tos);
    json_decref(ccs);
    json_decref(bccs);
    json_decref(rec);
    return -1;
}

static int norm_name(const json_t *v, const char *where, char *why, size_t n)
{
    if (is_blank(v)) {
        return px_errf(why, n, "%s.name: missing notification name", where);
    }
    if (!json_is_string(v)) {
        return px_errf(why, n, "%s.name: expected a string", where);
    }
    return 0;
}

/* One notification in the full form: {"name", "recipients": [...]}. */
static int norm_notification(const json_t *v, const char *where, json_t **out, char *why,
                             size_t n)
{
    if (!json_is_object(v)) {
        return px_errf(why, n, "%s: expected an object", where);
    }
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x)
    {
        if (is_collection_key(k)) {
            return refuse_collection(where, k, why, n);
        }
        if (strcmp(k, "name") != 0 && strcmp(k, "recipients") != 0) {
            return px_errf(why, n, "%s: unknown key \"%s\" (use name and recipients)", where, k);
        }
    }
    const json_t *name = json_object_get(v, "name"), *rs = json_object_get(v, "recipients");
    if (norm_name(name, where, why, n) < 0) {
        return -1;
    }
    if (!json_is_array(rs) || json_array_size(rs) == 0) {
        return px_errf(why, n, "%s.recipients: expected a non-empty list", where);
    }
    json_t *list = json_array();
    size_t i;
    json_array_foreach(rs, i, x)
    {
        char sub[256];
        json_t *rec;
        snprintf(sub, sizeof(sub), "%s.recipients[%zu]", where, i);
        if (norm_recipient(x, sub, 0, &rec, why, n) < 0) {
            json_decref(list);
            return -1;
        }
        json_array_append_new(list, rec);
    }
    *out = json_pack("{s:O, s:o}", "name", name, "recipients", list);
    return 0;
}

int notification_build(const json_t *params, json_t **out, char *why, size_t why_len)
{
    if (!json_is_object(params) || json_object_size(params) == 0) {
        return px_errf(why, why_len, "no parameters: the pipeline target needs a `with:` mapping");
    }
    json_t *list = json_array();
    const json_t *full = json_object_get(params, "notification");
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)params, key, value)
    {
        if (is_collection_key(key)) {
            refuse_collection("with", key, why, why_len);
            goto fail;
        }
    }
    if (full) {
        if (json_object_size(params) != 1) {
            px_errf(why, why_len, "with `notification`, give no other key");
            goto fail;
        }
        if (json_is_object(full)) {
            json_t *one;
            if (norm_notification(full, "notification", &one, why, why_len) < 0) {
                goto fail;
            }
            json_array_append_new(list, one);
        } else if (json_is_array(full) && json_array_size(full) > 0) {
            size_t i;
            const json_t *x;
            json_array_foreach(full, i, x)
            {
                char sub[64];
                json_t *one;
                snprintf(sub, sizeof(sub), "notification[%zu]", i);
                if (norm_notification(x, sub, &one, why, why_len) < 0) {
                    goto fail;
                }
                json_array_append_new(list, one);
            }
        } else {
            px_errf(why, why_len, "notification: expected an object or a non-empty list");
            goto fail;
        }
    } else {
        /* Short form: one notification, and either `recipients` or one recipient's fields. */
        const json_t *name = json_object_get(params, "name");
        if (norm_name(name, "with", why, why_len) < 0) {
            goto fail;
        }
        const json_t *rs = json_object_get(params, "recipients");
        json_t *one;
        if (rs) {
            if (json_object_size(params) != 2) {
                px_errf(why, why_len, "with `recipients`, give only `name` beside it");
                goto fail;
            }
            json_t *tmp = json_pack("{s:O, s:O}", "name", name, "recipients", rs);
            int rc = norm_notification(tmp, "with", &one, why, why_len);
            json_decref(tmp);
            if (rc < 0) {
                goto fail;
            }
        } else {
            json_t *rec;
            if (norm_recipient(params, "with", 1, &rec, why, why_len) < 0) {
                goto fail;
            }
            json_t *recs = json_array();
            json_array_append_new(recs, rec);
            one = json_object();
            json_object_set_nocheck(one, "name", (json_t *)name);
            json_object_set_new_nocheck(one, "recipients", recs);
        }
        json_array_append_new(list, one);
    }
    *out = json_object();
    json_object_set_new_nocheck(*out, "notification", list);
    return 0;
fail:
    json_decref(list);
    return -1;
}

/* --- Body ---------------------------------------------------------------------------------- */

/* Why a writer of its own next to jansson's: a message holds only objects, arrays, strings,
 * integers, booleans and null, and writing those straight into the job's buffer costs about a
 * fifth of what json_dumpb takes (bench/nq_body.sh: ~0.6 us against ~2.6 us per seed-shaped
 * message, 4.3x to 6.8x on a loaded 2-core machine), on every message the sink publishes. It must
 * stay byte for byte what json_dumps(JSON_COMPACT) writes: tests/unit/test_notification.c checks
 * that on random messages, cut short included. Drop it for json_dumpb if the ratio falls below
 * about 1.5. */

/* A bounded output: writes what fits, counts everything. */
typedef struct body_out {
    char *buf;
    size_t size, len;
} body_out;

static void put(body_out *o, const char *s, size_t n)
{
    if (o->len < o->size) {
        size_t room = o->size - o->len;
        memcpy(o->buf + o->len, s, n < room ? n : room);
    }
    o->len += n;
}

/* The letter of c's two-character escape (backslash, letter), or 0 for the six-character one. */
static char short_escape(unsigned char c)
{
    switch (c) {
    case '"':
    case '\\':
        return (char)c;
    case '\b':
        return 'b';
    case '\f':
        return 'f';
    case '\n':
        return 'n';
    case '\r':
        return 'r';
    case '\t':
        return 't';
    default:
        return 0;
    }
}

static void put_string(body_out *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    put(o, "\"", 1);
    size_t run = 0; /* s[run..i) needs no escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        put(o, s + run, i - run);
        run = i + 1;
        char e = short_escape(c);
        if (e) {
            char esc[2] = {'\\', e};
            put(o, esc, 2);
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(o, esc, 6);
        }
    }
    put(o, s + run, n - run);
    put(o, "\"", 1);
}

static int put_value(body_out *o, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *x;
        int first = 1;
        put(o, "{", 1);
        json_object_foreach((json_t *)v, key, x)
        {
            if (!first) {
                put(o, ",", 1);
            }
            first = 0;
            put_string(o, key, strlen(key));
            put(o, ":", 1);
            if (put_value(o, x) < 0) {
                return -1;
            }
        }
        put(o, "}", 1);
        return 0;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *x;
        put(o, "[", 1);
        json_array_foreach(v, i, x)
        {
            if (i > 0) {
                put(o, ",", 1);
            }
            if (put_value(o, x) < 0) {
                return -1;
            }
        }
        put(o, "]", 1);
        return 0;
    }
    case JSON_STRING:
        put_string(o, json_string_value(v), json_string_length(v));
        return 0;
    case JSON_INTEGER: {
        char num[32];
        int n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        put(o, num, (size_t)n);
        return 0;
    }
    case JSON_TRUE:
        put(o, "true", 4);
        return 0;
    case JSON_FALSE:
        put(o, "false", 5);
        return 0;
    case JSON_NULL:
        put(o, "null", 4);
        return 0;
    default:
        return -1; /* a real: jansson's own formatting */
    }
}

size_t notification_body(const json_t *msg, char *buf, size_t size)
{
    body_out o = {buf, buf ? size : 0, 0};
    return msg && put_value(&o, msg) == 0 ? o.len : 0;
}

/* --- The common short form, written straight from the parameters --------------------------- */

#define put_lit(o, text) put(o, text, sizeof(text) - 1)

/* A string whose C text is all of it (the message's addresses are C strings: an embedded NUL
 * would cut them; such values take notification_build). */
static const char *plain_text(const json_t *v)
{
    const char *s = json_string_value(v);
    return s && strlen(s) == json_string_length(v) ? s : NULL;
}

/* Writes one address of a tos list (as add_address would make it) after a ",". Returns 1 when
 * written, 0 when skipped (blank), -1 when not the plain case. */
static int quick_address(body_out *o, const json_t *v, const char *default_name, int first)
{
    if (is_blank(v)) {
        return 0;
    }
    const char *email = NULL, *name = default_name;
    if (json_is_string(v)) {
        email = plain_text(v);
    } else if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x)
        {
            if (strcmp(k, "email") != 0 && strcmp(k, "name") != 0) {
                return -1;
            }
        }
        const json_t *e = json_object_get(v, "email"), *nm = json_object_get(v, "name");
        if (is_blank(e)) {
            return 0;
        }
        email = plain_text(e);
        if (!is_blank(nm)) {
            name = plain_text(nm);
            if (!name) {
                return -1;
            }
        }
    }
    if (!email || !notification_email_ok(email)) {
        return -1;
    }
    if (!first) {
        put_lit(o, ",");
    }
    put_lit(o, "{\"email\":");
    put_string(o, email, strlen(email));
    if (name && *name) {
        put_lit(o, ",\"name\":");
        put_string(o, name, strlen(name));
    }
    put_lit(o, "}");
    return 1;
}

size_t notification_quick_body(const json_t *params, char *buf, size_t size)
{
    static const char *const allowed[] = {"name", "tos", "to", "email", "to_name", "macros",
                                          "locale"};
    if (!json_is_object(params)) {
        return 0;
    }
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)params, k, x)
    {
        size_t i = 0;
        while (i < sizeof(allowed) / sizeof(allowed[0]) && strcmp(k, allowed[i]) != 0) {
            i++;
        }
        if (i == sizeof(allowed) / sizeof(allowed[0])) {
            return 0;
        }
    }
    const json_t *name = json_object_get(params, "name"), *to_name,
                 *macros = json_object_get(params, "macros"),
                 *locale = json_object_get(params, "locale");
    if (is_blank(name) || !json_is_string(name)) {
        return 0;
    }
    to_name = json_object_get(params, "to_name");
    const char *dname = NULL;
    if (!is_blank(to_name) && !(dname = plain_text(to_name))) {
        return 0;
    }
    if (!is_blank(macros)) {
        if (!json_is_object(macros)) {
            return 0;
        }
        json_object_foreach((json_t *)macros, k, x)
        {
            if (!json_is_string(x)) {
                return 0;
            }
        }
    }
    if (!is_blank(locale) && !json_is_string(locale)) {
        return 0;
    }
    body_out o = {buf, buf ? size : 0, 0};
    put_lit(&o, "{\"notification\":[{\"name\":");
    put_string(&o, json_string_value(name), json_string_length(name));
    put_lit(&o, ",\"recipients\":[{\"tos\":[");
    static const char *const to_keys[] = {"tos", "to", "email"};
    int written = 0;
    for (size_t i = 0; i < 3; i++) {
        const json_t *v = json_object_get(params, to_keys[i]);
        size_t n = json_is_array(v) ? json_array_size(v) : 1;
        for (size_t j = 0; j < n; j++) {
            const json_t *a = json_is_array(v) ? json_array_get(v, j) : v;
            int rc = json_is_array(a) ? -1 : quick_address(&o, a, dname, written == 0);
            if (rc < 0) {
                return 0;
            }
            written += rc;
        }
    }
    if (!written) {
        return 0; /* nobody to send to: notification_build says why */
    }
    put_lit(&o, "]");
    if (!is_blank(macros)) {
        put_lit(&o, ",\"macros\":");
        put_value(&o, macros);
    }
    if (!is_blank(locale)) {
        put_lit(&o, ",\"locale\":");
        put_string(&o, json_string_value(locale), json_string_length(locale));
    }
    put_lit(&o, "}]}]}");
    return o.len;
}

int notification_envelope_type(const json_t *env, char *type, size_t type_len, char *why,
                               size_t why_len)
{
    if (!json_is_object(env)) {
        return px_errf(why, why_len, "not an EventBridge event: expected a JSON object");
    }
    static const char *const strings[] = {"id", "detail-type", "source"};
    for (size_t i = 0; i < 3; i++) {
        const json_t *v = json_object_get(env, strings[i]);
        if (!json_is_string(v) || json_string_length(v) == 0) {
            return px_errf(why, why_len, "not an EventBridge event: missing string \"%s\"",
                           strings[i]);
        }
    }
    if (!json_is_object(json_object_get(env, "detail"))) {
        return px_errf(why, why_len, "not an EventBridge event: missing object \"detail\"");
    }
    const char *dt = json_string_value(json_object_get(env, "detail-type"));
    if (strncmp(dt, SERVICE_PREFIX, strlen(SERVICE_PREFIX)) == 0) {
        dt += strlen(SERVICE_PREFIX);
    }
    static const char prefix[] = "notification.";
    size_t len = strlen(dt);
    if (len == 0 || len > 200 || type_len < sizeof(prefix) + len) {
        return px_errf(why, why_len, "detail-type \"%.60s\" is empty or too long", dt);
    }
    memcpy(type, prefix, sizeof(prefix) - 1);
    char *o = type + sizeof(prefix) - 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)dt[i];
        int keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '_' || c == '-' || c == '.';
        *o++ = c == '/' ? '.' : keep ? (char)c : '_';
    }
    *o = '\0';
    return 0;
}
