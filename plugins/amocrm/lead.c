/* amocrm lead: the body of POST /api/v4/leads/complex for one quiz result, following the quiz's
 * rule. Answers become custom_fields_values by the cached field's type (enum ids for lists),
 * contact data becomes the embedded contact (PHONE/EMAIL system fields unless the rule maps them),
 * UTM marks go to amoCRM's tracking fields by code, tags are the rule's, by amoCRM id. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lead.h"
#include "cache.h"

#define MAX_CF 40 /* amoCRM's limit of custom field values per entity */

static const char *const utm_keys[] = {"utm_source", "utm_medium",   "utm_campaign",
                                       "utm_term",   "utm_content",  "utm_referrer",
                                       "gclid",      "fbclid",       "yclid",
                                       NULL};

/* Text form of a scalar answer, into buf; NULL for null/absent/containers. */
static const char *text_of(const json_t *v, char *buf, size_t len)
{
    if (json_is_string(v)) {
        return json_string_value(v);
    }
    if (json_is_integer(v)) {
        snprintf(buf, len, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    if (json_is_real(v)) {
        snprintf(buf, len, "%.15g", json_real_value(v));
        return buf;
    }
    if (json_is_boolean(v)) {
        return json_is_true(v) ? "true" : "false";
    }
    return NULL;
}

static int truthy(const json_t *v)
{
    if (json_is_boolean(v)) {
        return json_is_true(v);
    }
    if (json_is_number(v)) {
        return json_number_value(v) != 0;
    }
    const char *s = json_string_value(v);
    return s && *s && strcasecmp(s, "false") != 0 && strcmp(s, "0") != 0 &&
           strcasecmp(s, "no") != 0 && strcasecmp(s, "нет") != 0;
}

static json_t *enum_value(const json_t *field, const char *text)
{
    size_t i;
    json_t *e;
    json_t *hit = NULL;
    json_array_foreach(json_object_get(field, "Enums"), i, e) {
        const char *v = json_string_value(json_object_get(e, "value"));
        if (v && strcmp(v, text) == 0) {
            hit = e;
            break;
        }
        if (!hit && v && strcasecmp(v, text) == 0) {
            hit = e;
        }
    }
    if (hit) {
        return json_pack("{s:O}", "enum_id", json_object_get(hit, "id"));
    }
    return json_pack("{s:s}", "value", text);
}

/* values[] for one field from an answer (borrowed); NULL when there is nothing to send. */
static json_t *field_values(const json_t *field, const json_t *answer)
{
    const char *type = field ? json_string_value(json_object_get(field, "Type")) : NULL;
    type = type ? type : "text";
    json_t *items = json_array();
    if (json_is_array(answer)) {
        json_array_extend(items, (json_t *)answer);
    } else if (answer && !json_is_null(answer) && !json_is_object(answer)) {
        json_array_append(items, (json_t *)answer);
    }
    json_t *values = json_array();
    char buf[64];
    size_t i;
    json_t *it;
    int list = strcmp(type, "select") == 0 || strcmp(type, "radiobutton") == 0 ||
               strcmp(type, "multiselect") == 0;
    if (strcmp(type, "checkbox") == 0) {
        if (json_array_size(items)) {
            json_array_append_new(values, json_pack("{s:b}", "value",
                                                    truthy(json_array_get(items, 0))));
        }
    } else if (list || strcmp(type, "multitext") == 0) {
        json_array_foreach(items, i, it) {
            const char *t = text_of(it, buf, sizeof(buf));
            if (!t || !*t) {
                continue;
            }
            if (list) {
                json_array_append_new(values, enum_value(field, t));
            } else {
                json_array_append_new(values, json_pack("{s:s, s:s}", "value", t, "enum_code",
                                                        "WORK"));
            }
            if (strcmp(type, "multiselect") != 0 && strcmp(type, "multitext") != 0) {
                break;
            }
        }
    } else if (json_array_size(items) == 1 && json_is_number(json_array_get(items, 0)) &&
               strcmp(type, "text") != 0 && strcmp(type, "textarea") != 0) {
        /* numeric, dates: keep the number */
        json_array_append_new(values, json_pack("{s:O}", "value", json_array_get(items, 0)));
    } else {
        /* text-like: several answers become one comma-separated text */
        size_t cap = 1;
        json_array_foreach(items, i, it) {
            const char *t = text_of(it, buf, sizeof(buf));
            cap += t ? strlen(t) + 2 : 0;
        }
        char *joined = calloc(1, cap);
        size_t o = 0;
        json_array_foreach(items, i, it) {
            const char *t = text_of(it, buf, sizeof(buf));
            if (t && *t) {
                o += (size_t)snprintf(joined + o, cap - o, "%s%s", o ? ", " : "", t);
            }
        }
        if (o) {
            json_array_append_new(values, json_pack("{s:s}", "value", joined));
        }
        free(joined);
    }
    json_decref(items);
    if (json_array_size(values) == 0) {
        json_decref(values);
        return NULL;
    }
    return values;
}

static void add_field(amocrm *a, json_t *cfv, const char *entity, int64_t fid, const json_t *answer)
{
    json_t *field = amocrm_cache_find(a, AMOCRM_C_FIELDS, fid, 0, entity);
    json_t *values = field_values(field, answer);
    if (values) {
        json_array_append_new(cfv, json_pack("{s:I, s:o}", "field_id", (json_int_t)fid, "values",
                                             values));
    }
}

static void add_code(json_t *cfv, const char *code, const char *value, const char *enum_code)
{
    if (!value || !*value) {
        return;
    }
    json_t *v = enum_code ? json_pack("{s:s, s:s}", "value", value, "enum_code", enum_code)
                          : json_pack("{s:s}", "value", value);
    json_array_append_new(cfv, json_pack("{s:s, s:[o]}", "field_code", code, "values", v));
}

/* The quiz answers as {"<question id>": answer}: an object as is, or an array of
 * {question_id|id, answer|value}. New reference. */
static json_t *answers_map(const json_t *in)
{
    if (json_is_object(in)) {
        return json_incref((json_t *)in);
    }
    json_t *out = json_object();
    size_t i;
    json_t *it;
    json_array_foreach(in, i, it) {
        json_t *q = json_object_get(it, "question_id");
        q = q ? q : json_object_get(it, "id");
        json_t *v = json_object_get(it, "answer");
        v = v ? v : json_object_get(it, "value");
        int64_t qid = 0;
        if (v && amocrm_json_int(q, &qid) == 0) {
            char key[32];
            snprintf(key, sizeof(key), "%lld", (long long)qid);
            json_object_set(out, key, v);
        }
    }
    return out;
}

static void add_questions(amocrm *a, json_t *cfv, const char *entity, const json_t *qmap,
                          const json_t *answers)
{
    const char *qid;
    json_t *fid;
    json_object_foreach((json_t *)qmap, qid, fid) {
        json_t *ans = json_object_get(answers, qid);
        if (ans) {
            add_field(a, cfv, entity, json_integer_value(fid), ans);
        }
    }
}

static json_t *tag_list(amocrm *a, const json_t *ids)
{
    json_t *out = json_array();
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id) {
        json_t *tag = amocrm_cache_find_own(a, AMOCRM_C_TAGS, json_integer_value(id));
        if (tag) {
            json_array_append_new(out, json_pack("{s:O}", "id", json_object_get(tag, "AmoID")));
        }
    }
    return out;
}

static int too_many(const json_t *cfv, const char *what, char *why, size_t len)
{
    if (json_array_size(cfv) > MAX_CF) {
        snprintf(why, len, "%zu custom field values for %s (amoCRM takes at most %d)",
                 json_array_size(cfv), what, MAX_CF);
        return 1;
    }
    return 0;
}

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s && *s ? s : NULL;
}

/* What the parts of one lead's body are built from (all borrowed). */
typedef struct lead_src {
    amocrm *a;
    const json_t *fields_rule; /* the rule's FieldsRule */
    const json_t *tags;        /* the rule's TagsToAdd */
    const json_t *answers;     /* {"<question id>": answer} */
    int64_t performer;         /* the rule's PerformerID; 0 = none */
    char *why;                 /* where a refusal is explained */
    size_t whylen;
} lead_src;

/* The lead itself: name (or "Quiz <id>"), price, pipeline, step and responsible user. New
 * reference. */
static json_t *lead_new(const json_t *rule, const json_t *params, int64_t performer)
{
    json_t *lead = json_object();
    const char *name = str(params, "name");
    char dflt[64];
    snprintf(dflt, sizeof(dflt), "Quiz %lld",
             (long long)json_integer_value(json_object_get(rule, "QuizID")));
    json_object_set_new(lead, "name", json_string(name ? name : dflt));
    json_t *price = json_object_get(params, "price");
    if (json_is_number(price)) {
        json_object_set_new(lead, "price", json_integer((json_int_t)json_number_value(price)));
    }
    json_object_set(lead, "pipeline_id", json_object_get(rule, "PipelineID"));
    json_object_set(lead, "status_id", json_object_get(rule, "StepID"));
    if (performer) {
        json_object_set_new(lead, "responsible_user_id", json_integer(performer));
    }
    return lead;
}

/* UTM marks of `utm` (borrowed) to amoCRM's tracking fields, by field code (UTM_SOURCE...). */
static void add_utm(json_t *cfv, const json_t *utm)
{
    for (int i = 0; utm_keys[i]; i++) {
        char buf[64], code[32];
        const char *v = text_of(json_object_get(utm, utm_keys[i]), buf, sizeof(buf));
        size_t k = 0;
        for (; utm_keys[i][k] && k < sizeof(code) - 1; k++) {
            code[k] = (char)toupper((unsigned char)utm_keys[i][k]);
        }
        code[k] = '\0';
        add_code(cfv, code, v, NULL);
    }
}

/* The rule's tags for `entity` ("Lead", "Contact", "Company") by amoCRM id: a new reference, or
 * NULL when there are none. */
static json_t *rule_tags(const lead_src *s, const char *entity)
{
    json_t *tags = tag_list(s->a, json_object_get(s->tags, entity));
    if (json_array_size(tags)) {
        return tags;
    }
    json_decref(tags);
    return NULL;
}

/* The lead's custom fields (answers, then UTM marks) and its tags. 0, or -1 with why when there
 * are too many fields. */
static int lead_fields(const lead_src *s, json_t *lead, json_t *emb, const json_t *utm)
{
    json_t *cfv = json_array();
    add_questions(s->a, cfv, "leads",
                  json_object_get(json_object_get(s->fields_rule, "lead"), "QuestionID"),
                  s->answers);
    add_utm(cfv, utm);
    if (too_many(cfv, "the lead", s->why, s->whylen)) {
        json_decref(cfv);
        return -1;
    }
    if (json_array_size(cfv)) {
        json_object_set_new(lead, "custom_fields_values", cfv);
    } else {
        json_decref(cfv);
    }
    json_t *tags = rule_tags(s, "Lead");
    if (tags) {
        json_object_set_new(emb, "tags", tags);
    }
    return 0;
}

/* What an embedded contact or company carries besides its own data: the responsible user, its
 * custom field values `cfv` (borrowed) and the rule's tags for `tag_entity`. */
static void entity_finish(const lead_src *s, json_t *entity, json_t *cfv, const char *tag_entity)
{
    if (s->performer) {
        json_object_set_new(entity, "responsible_user_id", json_integer(s->performer));
    }
    if (json_array_size(cfv)) {
        json_object_set(entity, "custom_fields_values", cfv);
    }
    json_t *tags = rule_tags(s, tag_entity);
    if (tags) {
        json_object_set_new(entity, "_embedded", json_pack("{s:o}", "tags", tags));
    }
}

/* The contact's custom field values: phone and email as the system fields PHONE and EMAIL unless
 * the rule maps them, the contact data the rule maps to fields, then mapped answers. New
 * reference. */
static json_t *contact_fields(const lead_src *s, const json_t *crule, const json_t *contact)
{
    json_t *cmap = json_object_get(crule, "ContactRuleMap");
    json_t *cfv = json_array();
    static const char *const sys[2][2] = {{"phone", "PHONE"}, {"email", "EMAIL"}};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(contact, sys[i][0]);
        if (!json_object_get(cmap, sys[i][0])) {
            char buf[64];
            add_code(cfv, sys[i][1], text_of(v, buf, sizeof(buf)), "WORK");
        }
    }
    const char *key;
    json_t *fid;
    json_object_foreach(cmap, key, fid) {
        json_t *v = json_object_get(contact, key);
        if (v) {
            add_field(s->a, cfv, "contacts", json_integer_value(fid), v);
        }
    }
    add_questions(s->a, cfv, "contacts", json_object_get(crule, "QuestionID"), s->answers);
    return cfv;
}

/* The embedded contact (name, first and last name, custom fields), unless it would be empty. 0,
 * or -1 with why when there are too many fields. */
static int add_contact(const lead_src *s, json_t *emb, const json_t *contact)
{
    json_t *cfv = contact_fields(s, json_object_get(s->fields_rule, "contact"), contact);
    json_t *c = json_object();
    static const char *const names[] = {"name", "first_name", "last_name"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *v = str(contact, names[i]);
        if (v) {
            json_object_set_new(c, names[i], json_string(v));
        }
    }
    int rc = 0;
    if (too_many(cfv, "the contact", s->why, s->whylen)) {
        rc = -1;
    } else if (json_object_size(c) || json_array_size(cfv)) {
        entity_finish(s, c, cfv, "Contact");
        json_object_set_new(emb, "contacts", json_pack("[O]", c));
    }
    json_decref(c);
    json_decref(cfv);
    return rc;
}

/* The embedded company (its name and mapped answers), unless it would be empty. 0, or -1 with
 * why when there are too many fields. */
static int add_company(const lead_src *s, json_t *emb, const json_t *company)
{
    json_t *cfv = json_array();
    add_questions(s->a, cfv, "companies",
                  json_object_get(json_object_get(s->fields_rule, "company"), "QuestionID"),
                  s->answers);
    const char *name = str(company, "name");
    int rc = 0;
    if (too_many(cfv, "the company", s->why, s->whylen)) {
        rc = -1;
    } else if (name || json_array_size(cfv)) {
        json_t *m = json_object();
        json_object_set_new(m, "name", json_string(name ? name : ""));
        entity_finish(s, m, cfv, "Company");
        json_object_set_new(emb, "companies", json_pack("[o]", m));
    }
    json_decref(cfv);
    return rc;
}

json_t *amocrm_lead_build(amocrm *a, const json_t *rule, const json_t *params,
                          const char *request_id, char *why, size_t whylen)
{
    json_t *contact = json_object_get(params, "contact");
    json_t *company = json_object_get(params, "company");
    if ((contact && !json_is_object(contact) && !json_is_null(contact)) ||
        (company && !json_is_object(company) && !json_is_null(company))) {
        snprintf(why, whylen, "with.contact and with.company must be objects");
        return NULL;
    }
    json_t *answers = answers_map(json_object_get(params, "answers"));
    lead_src s = {
        .a = a,
        .fields_rule = json_object_get(rule, "FieldsRule"),
        .tags = json_object_get(rule, "TagsToAdd"),
        .answers = answers,
        .performer = json_integer_value(json_object_get(rule, "PerformerID")),
        .why = why,
        .whylen = whylen,
    };
    json_t *lead = lead_new(rule, params, s.performer);
    json_t *emb = json_object();
    json_t *out = NULL;
    if (lead_fields(&s, lead, emb, json_object_get(params, "utm")) == 0 &&
        add_contact(&s, emb, contact) == 0 && add_company(&s, emb, company) == 0) {
        if (json_object_size(emb)) {
            json_object_set(lead, "_embedded", emb);
        }
        if (request_id) {
            json_object_set_new(lead, "request_id", json_string(request_id));
        }
        out = json_pack("[O]", lead);
    }
    json_decref(emb);
    json_decref(lead);
    json_decref(answers);
    return out;
}
