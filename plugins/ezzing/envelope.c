/* Ezzing envelope parsing and per-topic validation (see envelope.h). The rules follow the
 * seed's examples, loosened where the seed itself varies between topics. */
#include "envelope.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void say(char *why, size_t n, const char *fmt, const char *a, const char *b)
{
    if (why && n) {
        snprintf(why, n, fmt, a, b);
    }
}

/* --- Parsing ------------------------------------------------------------------------------- */

static int is_plain_name(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char ch = (unsigned char)s[n];
        if (!(isalnum(ch) || ch == '_' || ch == '.' || ch == '-')) {
            return 0;
        }
    }
    return n > 0 && n < max;
}

/* "App\\Jobs\\UserCreated" (or "UserCreated@handle") -> "user_created". Returns 0 when the
 * class part is no plain name. */
static int class_to_topic(const char *cls, char *out, size_t out_len)
{
    if (!cls || !*cls) {
        return 0;
    }
    const char *base = strrchr(cls, '\\');
    base = base ? base + 1 : cls;
    size_t len = strcspn(base, "@");
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)base[i];
        if (!(isalnum(ch) || ch == '_')) {
            return 0;
        }
        if (isupper(ch) && i > 0 && base[i - 1] != '_' && k + 1 < out_len) {
            out[k++] = '_';
        }
        if (k + 1 >= out_len) {
            return 0;
        }
        out[k++] = (char)tolower(ch);
    }
    out[k] = '\0';
    return k > 0;
}

/* An integer given as a JSON integer, a whole real, or a digit string. -1 for null / absent /
 * anything else. */
static int64_t loose_int(json_t *v)
{
    if (json_is_integer(v)) {
        return json_integer_value(v) < 0 ? -1 : (int64_t)json_integer_value(v);
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        return (d >= 0 && d < 9.2e18) ? (int64_t)d : -1;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (end != s && *end == '\0' && errno == 0 && x >= 0) {
            return (int64_t)x;
        }
    }
    return -1;
}

static void parse_backoff(ezzing_envelope *e, json_t *v)
{
    e->nbackoff = 0;
    if (json_is_number(v)) {
        int64_t x = loose_int(v);
        if (x >= 0) {
            e->backoff_s[e->nbackoff++] = (uint32_t)(x > UINT32_MAX ? UINT32_MAX : x);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            int64_t s = loose_int(x);
            if (s < 0 || e->nbackoff == EZZING_MAX_BACKOFF) {
                break;
            }
            e->backoff_s[e->nbackoff++] = (uint32_t)(s > UINT32_MAX ? UINT32_MAX : s);
        }
    } else if (json_is_string(v)) {
        const char *p = json_string_value(v);
        while (*p && e->nbackoff < EZZING_MAX_BACKOFF) {
            while (*p == ' ' || *p == ',') {
                p++;
            }
            if (!*p) {
                break;
            }
            char *end;
            errno = 0;
            unsigned long long x = strtoull(p, &end, 10);
            if (end == p || errno || (*end && *end != ',' && *end != ' ')) {
                e->nbackoff = 0; /* unreadable: as if none */
                return;
            }
            e->backoff_s[e->nbackoff++] = (uint32_t)(x > UINT32_MAX ? UINT32_MAX : x);
            p = end;
        }
    }
}

int ezzing_envelope_parse(const char *body, size_t len, ezzing_envelope *e, char *why,
                          size_t why_len)
{
    memset(e, 0, sizeof(*e));
    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", body ? len : 0, 0, &jerr);
    if (!root) {
        if (why && why_len) {
            snprintf(why, why_len, "not JSON: %s at line %d column %d", jerr.text, jerr.line,
                     jerr.column);
        }
        return EZZING_ENOTJSON;
    }
    if (!json_is_object(root)) {
        say(why, why_len, "not a JSON object%s%s", "", "");
        json_decref(root);
        return EZZING_ENOTJSON;
    }
    const char *job = json_string_value(json_object_get(root, "job"));
    if (!job || !*job) {
        say(why, why_len, "no job%s%s", "", "");
        json_decref(root);
        return EZZING_ENOJOB;
    }
    e->root = root;
    e->job = job;
    e->display_name = json_string_value(json_object_get(root, "displayName"));
    const char *uuid = json_string_value(json_object_get(root, "uuid"));
    e->uuid = uuid && *uuid ? uuid : NULL;
    e->data = json_object_get(root, "data");

    const char *command = json_string_value(json_object_get(e->data, "commandName"));
    e->class_based = !is_plain_name(job, sizeof(e->topic)) && command != NULL;
    if (is_plain_name(job, sizeof(e->topic))) {
        snprintf(e->topic, sizeof(e->topic), "%s", job);
    } else if (e->display_name && is_plain_name(e->display_name, sizeof(e->topic))) {
        snprintf(e->topic, sizeof(e->topic), "%s", e->display_name);
    } else if (!class_to_topic(e->display_name, e->topic, sizeof(e->topic)) &&
               !class_to_topic(command, e->topic, sizeof(e->topic))) {
        say(why, why_len, "job \"%.80s\" names no topic%s", job, "");
        memset(e, 0, sizeof(*e));
        json_decref(root);
        return EZZING_EBADJOB;
    }

    e->max_tries = loose_int(json_object_get(root, "maxTries"));
    e->max_exceptions = loose_int(json_object_get(root, "maxExceptions"));
    e->timeout_s = loose_int(json_object_get(root, "timeout"));
    e->retry_until = loose_int(json_object_get(root, "retryUntil"));
    json_t *fot = json_object_get(root, "failOnTimeout");
    e->fail_on_timeout = json_is_true(fot) || (json_is_integer(fot) && json_integer_value(fot));
    parse_backoff(e, json_object_get(root, "backoff"));
    return EZZING_OK;
}

void ezzing_envelope_deinit(ezzing_envelope *e)
{
    if (e) {
        json_decref(e->root);
        memset(e, 0, sizeof(*e));
    }
}

/* --- Field types --------------------------------------------------------------------------- */

enum vtype { V_ID, V_STR, V_TS, V_COORD, V_OBJ, V_ARR, V_NUM };
#define F_OPT 1u  /* may be absent */
#define F_NULL 2u /* may be null */

typedef struct rule {
    const char *path; /* "a.b", "files[].file_id" */
    enum vtype type;
    unsigned flags;
} rule;

static int digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

int ezzing_is_timestamp(const char *s)
{
    /* YYYY-MM-DD?HH:MM:SS with ? = ' ' or 'T' */
    if (!s || strlen(s) < 19 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) ||
        s[7] != '-' || !digits(s + 8, 2) || (s[10] != ' ' && s[10] != 'T') ||
        !digits(s + 11, 2) || s[13] != ':' || !digits(s + 14, 2) || s[16] != ':' ||
        !digits(s + 17, 2)) {
        return 0;
    }
    int mon = (s[5] - '0') * 10 + (s[6] - '0'), day = (s[8] - '0') * 10 + (s[9] - '0');
    int hh = (s[11] - '0') * 10 + (s[12] - '0'), mm = (s[14] - '0') * 10 + (s[15] - '0');
    int ss = (s[17] - '0') * 10 + (s[18] - '0');
    if (mon < 1 || mon > 12 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60) {
        return 0;
    }
    const char *p = s + 19;
    if (s[10] == ' ') {
        return *p == '\0'; /* the MySQL form carries no fraction or zone */
    }
    if (*p == '.') {
        p++;
        size_t n = strspn(p, "0123456789");
        if (n == 0) {
            return 0;
        }
        p += n;
    }
    if (*p == 'Z') {
        return p[1] == '\0';
    }
    if (*p == '+' || *p == '-') {
        return strlen(p) == 6 && digits(p + 1, 2) && p[3] == ':' && digits(p + 4, 2);
    }
    return *p == '\0';
}

static int is_id(json_t *v)
{
    if (json_is_integer(v)) {
        return json_integer_value(v) >= 0;
    }
    const char *s = json_string_value(v);
    return s && *s && strlen(s) <= 20 && digits(s, strlen(s));
}

static int is_coord(json_t *v)
{
    double d;
    if (json_is_number(v)) {
        d = json_number_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        d = strtod(s, &end);
        if (end == s || *end || !*s) {
            return 0;
        }
    } else {
        return 0;
    }
    return isfinite(d) && d >= -180.0 && d <= 180.0;
}

static const char *type_name(enum vtype t)
{
    switch (t) {
    case V_ID: return "an id (number or digit string)";
    case V_STR: return "a string";
    case V_TS: return "a timestamp";
    case V_COORD: return "a coordinate";
    case V_OBJ: return "an object";
    case V_ARR: return "an array";
    case V_NUM: return "a number";
    }
    return "?";
}

static int type_ok(json_t *v, enum vtype t)
{
    switch (t) {
    case V_ID: return is_id(v);
    case V_STR: return json_is_string(v);
    case V_TS: return ezzing_is_timestamp(json_string_value(v));
    case V_COORD: return is_coord(v);
    case V_OBJ: return json_is_object(v);
    case V_ARR: return json_is_array(v);
    case V_NUM: return json_is_number(v);
    }
    return 0;
}

/* Checks `path` (from `at`) under v; `shown` is the path so far, for messages. */
static int check_path(json_t *v, const char *path, const rule *r, const char *shown, char *why,
                      size_t why_len)
{
    char seg[64], here[192];
    size_t n = strcspn(path, ".");
    int is_array = n >= 2 && path[n - 2] == '[' && path[n - 1] == ']';
    size_t name_len = is_array ? n - 2 : n;
    snprintf(seg, sizeof(seg), "%.*s", (int)name_len, path);
    snprintf(here, sizeof(here), "%s.%s", shown, seg);
    json_t *x = json_object_get(v, seg);
    const char *rest = path[n] == '.' ? path + n + 1 : NULL;

    if (!x) {
        if (r->flags & F_OPT) {
            return 0;
        }
        say(why, why_len, "%s: missing%s", here, "");
        return -1;
    }
    if (json_is_null(x) && (r->flags & F_NULL)) {
        return 0;
    }
    if (is_array) {
        if (!json_is_array(x)) {
            say(why, why_len, "%s: must be %s", here, "an array");
            return -1;
        }
        size_t i;
        json_t *el;
        json_array_foreach(x, i, el) {
            char at[208];
            snprintf(at, sizeof(at), "%s[%zu]", here, i);
            if (!rest) {
                if (!type_ok(el, r->type)) {
                    say(why, why_len, "%s: must be %s", at, type_name(r->type));
                    return -1;
                }
            } else if (!json_is_object(el)) {
                say(why, why_len, "%s: must be %s", at, "an object");
                return -1;
            } else if (check_path(el, rest, r, at, why, why_len) < 0) {
                return -1;
            }
        }
        return 0;
    }
    if (rest) {
        if (!json_is_object(x)) {
            say(why, why_len, "%s: must be %s", here, "an object");
            return -1;
        }
        return check_path(x, rest, r, here, why, why_len);
    }
    if (!type_ok(x, r->type)) {
        say(why, why_len, "%s: must be %s", here, type_name(r->type));
        return -1;
    }
    return 0;
}

/* --- The 16 topics ------------------------------------------------------------------------- */

#define END {NULL, 0, 0}
#define COORDS {"latitude", V_COORD, F_OPT | F_NULL}, {"longitude", V_COORD, F_OPT | F_NULL}
#define STAMPS {"created_at", V_TS, 0}, {"updated_at", V_TS, 0}

static const rule offer_created[] = {
    {"id", V_ID, 0}, {"opportunity_id", V_ID, 0}, {"offer_type_id", V_ID, 0},
    {"offer_status_id", V_ID, F_OPT}, {"name", V_STR, 0}, STAMPS, END,
};
static const rule offer_status_changed[] = {
    {"id", V_ID, 0}, {"opportunity_id", V_ID, 0}, {"name", V_STR, 0},
    {"offer_status", V_OBJ, 0}, {"offer_status.id", V_ID, 0}, {"offer_status.slug", V_STR, 0},
    STAMPS, END,
};
static const rule opportunity[] = {
    {"id", V_ID, 0}, {"opportunity_type_id", V_ID, 0}, {"client_id", V_ID, F_NULL},
    {"current_status_id", V_ID, F_OPT | F_NULL}, {"name", V_STR, 0}, COORDS,
    {"current_status", V_OBJ, F_OPT | F_NULL}, {"current_status.id", V_ID, F_OPT},
    {"client", V_OBJ, F_OPT | F_NULL}, {"client.id", V_ID, F_OPT}, STAMPS, END,
};
#define OPP_STATUS(key)                                                                       \
    {"id", V_ID, 0}, {"opportunity_type_id", V_ID, 0}, {"client_id", V_ID, F_NULL},           \
        {"current_status_id", V_ID, F_NULL}, {"name", V_STR, 0}, COORDS,                      \
        {"current_status", V_OBJ, F_NULL}, {key, V_OBJ, 0},                                   \
        {key ".opportunity_status_id", V_ID, 0}, {key ".slug", V_STR, 0},                     \
        {key ".action", V_STR, 0}, STAMPS, END
static const rule opportunity_status_opened[] = {OPP_STATUS("opened_status")};
static const rule opportunity_status_closed[] = {OPP_STATUS("closed_status")};
static const rule opportunity_status_reseted[] = {OPP_STATUS("reset_status")};
static const rule lead_has_been_registered[] = {
    {"id", V_ID, 0}, {"name", V_STR, 0}, {"surname", V_STR, F_OPT | F_NULL},
    {"email", V_STR, F_NULL}, {"phone", V_STR, F_OPT | F_NULL}, COORDS, STAMPS, END,
};
static const rule generated_reports[] = {
    {"report_tag_slug", V_STR, 0}, {"opportunity_id", V_ID, 0}, {"files", V_ARR, 0},
    {"files[].file_id", V_ID, 0}, {"files[].file_name", V_STR, 0},
    {"failed_reports", V_ARR, F_OPT | F_NULL}, {"failed_reports[].report_id", V_ID, F_OPT},
    END,
};
#define INC_STATUS(key)                                                                       \
    {"id", V_ID, 0}, {"opportunity_id", V_ID, 0}, {"incidence_type_id", V_ID, 0},             \
        {"incidence_status_id", V_ID, 0}, {"title", V_STR, 0}, {"closed_at", V_TS, F_NULL},   \
        {"incidence_status", V_OBJ, 0}, {"incidence_status.id", V_ID, 0}, {key, V_OBJ, 0},    \
        {key ".incidence_status_id", V_ID, 0}, {key ".slug", V_STR, 0},                       \
        {key ".action", V_STR, 0}, STAMPS, END
static const rule incidence_status_opened[] = {INC_STATUS("opened_status")};
static const rule incidence_status_closed[] = {INC_STATUS("closed_status")};
static const rule incidence_status_reseted[] = {INC_STATUS("reset_status")};
static const rule incidence[] = {
    {"id", V_ID, 0}, {"opportunity_id", V_ID, 0}, {"incidence_type_id", V_ID, 0},
    {"incidence_status_id", V_ID, 0}, {"title", V_STR, 0},
    {"closed_at", V_TS, F_OPT | F_NULL}, {"current_status", V_OBJ, F_OPT | F_NULL},
    {"current_status.id", V_ID, F_OPT}, STAMPS, END,
};
static const rule user[] = {
    {"email", V_STR, 0}, {"name", V_STR, 0}, {"surname", V_STR, F_OPT | F_NULL},
    {"company_name", V_STR, F_OPT | F_NULL}, END,
};

/* A class-based job, whatever its topic: the business fields are inside "command". */
static const rule class_job[] = {
    {"commandName", V_STR, 0}, {"command", V_STR, 0}, END,
};

static const struct topic {
    const char *name;
    const rule *rules;
} topics[] = {
    {"offer_created", offer_created},
    {"offer_status_changed", offer_status_changed},
    {"opportunity_created", opportunity},
    {"opportunity_updated", opportunity},
    {"opportunity_status_opened", opportunity_status_opened},
    {"opportunity_status_closed", opportunity_status_closed},
    {"opportunity_status_reseted", opportunity_status_reseted},
    {"lead_has_been_registered", lead_has_been_registered},
    {"generated_reports", generated_reports},
    {"incidence_status_opened", incidence_status_opened},
    {"incidence_status_closed", incidence_status_closed},
    {"incidence_status_reseted", incidence_status_reseted},
    {"incidence_created", incidence},
    {"incidence_updated", incidence},
    {"user_created", user},
    {"user_deleted", user},
};

#define NTOPICS (sizeof(topics) / sizeof(topics[0]))

size_t ezzing_known_topics(const char *const **names)
{
    static const char *list[NTOPICS + 1];
    if (!list[0]) {
        for (size_t i = 0; i < NTOPICS; i++) {
            list[i] = topics[i].name;
        }
    }
    *names = list;
    return NTOPICS;
}

int ezzing_envelope_validate(const ezzing_envelope *e, char *why, size_t why_len)
{
    const struct topic *t = NULL;
    for (size_t i = 0; i < NTOPICS; i++) {
        if (strcmp(e->topic, topics[i].name) == 0) {
            t = &topics[i];
            break;
        }
    }
    if (!t) {
        return EZZING_UNKNOWN;
    }
    if (!json_is_object(e->data)) {
        say(why, why_len, "data: must be %s%s", "an object", "");
        return EZZING_INVALID;
    }
    const rule *rules = e->class_based ? class_job : t->rules;
    for (const rule *r = rules; r->path; r++) {
        if (check_path(e->data, r->path, r, "data", why, why_len) < 0) {
            return EZZING_INVALID;
        }
    }
    return EZZING_VALID;
}
