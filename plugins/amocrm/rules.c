/* amocrm rules: one rule per quiz and amoCRM account (the seed's Rule), kept in kv "rules" keyed
 * "<AccountID>:<QuizID>", so that accounts connected one after the other each keep their own rule
 * for the same quiz. A rule is validated against its account's cached users, pipelines, steps,
 * fields and tags. Saving one emits "amocrm.rule.saved". */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"
#include "cache.h"

static const char *const entities[4] = {"lead", "contact", "company", "customer"};
static const char *const entities_cap[4] = {"Lead", "Contact", "Company", "Customer"};
static const char *const entities_amo[4] = {"leads", "contacts", "companies", "customers"};

static int digits(const char *s)
{
    if (!*s) {
        return 0;
    }
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s)) {
            return 0;
        }
    }
    return 1;
}

static void rule_key(int64_t account, int64_t quiz, char *key, size_t len)
{
    snprintf(key, len, "%lld:%lld", (long long)account, (long long)quiz);
}

/* The AccountID a rule stored under the bare quiz id names, or 0 when it names none. */
static int64_t legacy_owner(const char *key, const json_t *rule)
{
    json_t *id = json_object_get(rule, "AccountID");
    if (!digits(key) || !json_is_integer(id) || json_integer_value(id) <= 0) {
        return 0;
    }
    return json_integer_value(id);
}

/* Rules stored before they were keyed by account sit under the bare quiz id. Returns a new
 * reference: `rules` (borrowed) with each of those moved to the key of the account its AccountID
 * names (a rule already stored there wins); one that names no account cannot be given to any and
 * was never served: it stays where it is, unused. *moved counts the rules moved. */
static json_t *rules_migrate(amocrm *a, const json_t *rules, size_t *moved)
{
    json_t *out = json_object();
    const char *k;
    json_t *v;
    *moved = 0;
    json_object_foreach((json_t *)rules, k, v) {
        if (legacy_owner(k, v) > 0) {
            continue;
        }
        if (digits(k)) {
            amocrm_host->log(a->ctx, PX_LOG_WARN, "rule without an account kept unused quiz=%s", k);
        }
        json_object_set(out, k, v);
    }
    json_object_foreach((json_t *)rules, k, v) {
        int64_t account = legacy_owner(k, v);
        if (account > 0) {
            char key[48];
            rule_key(account, strtoll(k, NULL, 10), key, sizeof(key));
            if (!json_object_get(out, key)) {
                json_object_set(out, key, v);
            }
            (*moved)++;
        }
    }
    return out;
}

void amocrm_rules_load(amocrm *a)
{
    json_t *stored = amocrm_host->kv_get_versioned(a->ctx, "rules", &a->ver_rules);
    if (!json_is_object(stored)) {
        json_decref(stored);
        stored = json_object();
    }
    size_t moved = 0;
    a->rules = rules_migrate(a, stored, &moved);
    json_decref(stored);
    if (moved == 0) {
        return;
    }
    /* Unstored, the move is redone at the next load; a saved rule stores it with the rest. */
    int rc = amocrm_host->kv_set(a->ctx, "rules", a->rules);
    amocrm_host->log(a->ctx, rc < 0 ? PX_LOG_WARN : PX_LOG_INFO,
                     "rules migrated to account keys count=%zu stored=%s", moved,
                     rc < 0 ? "no" : "yes");
}

static int64_t account_amo_id(amocrm *a)
{
    if (!a->account || json_is_true(json_object_get(a->account, "deleted"))) {
        return -1;
    }
    return json_integer_value(json_object_get(a->account, "amoID"));
}

json_t *amocrm_rule_get(amocrm *a, int64_t quiz_id)
{
    int64_t account = account_amo_id(a);
    if (account < 0) {
        return NULL;
    }
    char key[48];
    rule_key(account, quiz_id, key, sizeof(key));
    json_t *r = json_object_get(a->rules, key);
    if (!r || json_is_true(json_object_get(r, "Deleted"))) {
        return NULL;
    }
    return r;
}

/* Either spelling of a key: "Lead" / "lead", "FieldsRule" / "Fieldsrule". */
static json_t *get_any(const json_t *o, const char *a, const char *b)
{
    json_t *v = json_object_get(o, a);
    return v ? v : json_object_get(o, b);
}

/* Adds the question -> field pairs of `in` into `out` ({"<qid>": fid}). */
static int question_map(const json_t *in, json_t *out, const char *where, char *why, size_t len)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v) {
        int64_t fid = 0;
        if (!digits(k) || amocrm_json_int(v, &fid) < 0 || fid <= 0) {
            snprintf(why, len, "%s: \"%s\" must map a question id to a field id", where, k);
            return -1;
        }
        json_object_set_new(out, k, json_integer(fid));
    }
    return 0;
}

/* Canonical FieldRule ({"QuestionID": {...}}) or ContactRules (plus "ContactRuleMap") from the
 * request's object; flat {"<qid>": fid} is accepted too. New reference, or NULL with why. */
static json_t *parse_field_rule(const json_t *in, int contact, const char *where, char *why,
                                size_t len)
{
    json_t *q = json_object(), *map = json_object();
    json_t *out = NULL;
    if (in && !json_is_object(in) && !json_is_null(in)) {
        snprintf(why, len, "%s must be an object", where);
        goto done;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v) {
        if (strcmp(k, "QuestionID") == 0 && json_is_object(v)) {
            if (question_map(v, q, where, why, len) < 0) {
                goto done;
            }
        } else if (contact && strcmp(k, "ContactRuleMap") == 0 && json_is_object(v)) {
            const char *ck;
            json_t *cv;
            json_object_foreach(v, ck, cv) {
                int64_t fid = 0;
                if (amocrm_json_int(cv, &fid) < 0 || fid <= 0) {
                    snprintf(why, len, "%s.ContactRuleMap.%s must be a field id", where, ck);
                    goto done;
                }
                json_object_set_new(map, ck, json_integer(fid));
            }
        } else if (digits(k)) {
            json_t *one = json_object();
            json_object_set(one, k, v);
            int rc = question_map(one, q, where, why, len);
            json_decref(one);
            if (rc < 0) {
                goto done;
            }
        } else {
            snprintf(why, len, "%s: unexpected key \"%s\"", where, k);
            goto done;
        }
    }
    out = contact ? json_pack("{s:O, s:O}", "ContactRuleMap", map, "QuestionID", q)
                  : json_pack("{s:O}", "QuestionID", q);
done:
    json_decref(q);
    json_decref(map);
    return out;
}

/* Applies the request `in` onto `rule` (canonical; modified). Returns 0 or -1 with why. */
static int apply(json_t *rule, const json_t *in, int create, char *why, size_t len)
{
    static const char *const ints[3] = {"PerformerID", "PipelineID", "StepID"};
    for (int i = 0; i < 3; i++) {
        json_t *v = json_object_get(in, ints[i]);
        int64_t n = 0;
        if (!v) {
            if (create && i > 0) {
                snprintf(why, len, "%s is required", ints[i]);
                return -1;
            }
            continue;
        }
        if (amocrm_json_int(v, &n) < 0 || n < 0) {
            snprintf(why, len, "%s must be an integer", ints[i]);
            return -1;
        }
        json_object_set_new(rule, ints[i], json_integer(n));
    }
    json_t *fr = get_any(in, "FieldsRule", "Fieldsrule");
    if (fr && !json_is_object(fr)) {
        snprintf(why, len, "FieldsRule must be an object");
        return -1;
    }
    json_t *cur = json_object_get(rule, "FieldsRule");
    for (int e = 0; fr && e < 4; e++) {
        json_t *v = get_any(fr, entities_cap[e], entities[e]);
        if (!v) {
            continue;
        }
        char where[48];
        snprintf(where, sizeof(where), "FieldsRule.%s", entities[e]);
        json_t *p = parse_field_rule(v, e == 1, where, why, len);
        if (!p) {
            return -1;
        }
        json_object_set_new(cur, entities[e], p);
    }
    json_t *tags = json_object_get(in, "TagsToAdd");
    if (tags && !json_is_object(tags)) {
        snprintf(why, len, "TagsToAdd must be an object");
        return -1;
    }
    json_t *curt = json_object_get(rule, "TagsToAdd");
    for (int e = 0; tags && e < 4; e++) {
        json_t *v = get_any(tags, entities_cap[e], entities[e]);
        if (!v) {
            continue;
        }
        if (!json_is_array(v) && !json_is_null(v)) {
            snprintf(why, len, "TagsToAdd.%s must be an array of tag ids", entities_cap[e]);
            return -1;
        }
        json_t *ids = json_array();
        size_t i;
        json_t *t;
        json_array_foreach(v, i, t) {
            int64_t id = 0;
            if (amocrm_json_int(t, &id) < 0) {
                snprintf(why, len, "TagsToAdd.%s[%zu] must be a tag id", entities_cap[e], i);
                json_decref(ids);
                return -1;
            }
            json_array_append_new(ids, json_integer(id));
        }
        json_object_set_new(curt, entities_cap[e], ids);
    }
    return 0;
}

static int validate(amocrm *a, const json_t *rule, char *why, size_t len)
{
    int64_t perf = json_integer_value(json_object_get(rule, "PerformerID"));
    int64_t pipe = json_integer_value(json_object_get(rule, "PipelineID"));
    int64_t step = json_integer_value(json_object_get(rule, "StepID"));
    if (perf && !amocrm_cache_find(a, AMOCRM_C_USERS, perf, 0, NULL)) {
        snprintf(why, len, "unknown PerformerID %lld: not a cached user (PATCH /users)",
                 (long long)perf);
        return -1;
    }
    json_t *p = amocrm_cache_find(a, AMOCRM_C_PIPELINES, pipe, 0, NULL);
    if (!p) {
        snprintf(why, len, "unknown PipelineID %lld: not a cached pipeline (PATCH /pipelines)",
                 (long long)pipe);
        return -1;
    }
    if (json_is_true(json_object_get(p, "IsArchive"))) {
        snprintf(why, len, "PipelineID %lld is archived", (long long)pipe);
        return -1;
    }
    if (!amocrm_cache_find(a, AMOCRM_C_STEPS, step, pipe, NULL)) {
        snprintf(why, len, "unknown StepID %lld in pipeline %lld", (long long)step,
                 (long long)pipe);
        return -1;
    }
    json_t *fr = json_object_get(rule, "FieldsRule");
    for (int e = 0; e < 4; e++) {
        json_t *er = json_object_get(fr, entities[e]);
        for (int part = 0; part < 2; part++) {
            const char *k;
            json_t *v;
            json_object_foreach(json_object_get(er, part ? "ContactRuleMap" : "QuestionID"), k,
                                v) {
                int64_t fid = json_integer_value(v);
                if (!amocrm_cache_find(a, AMOCRM_C_FIELDS, fid, 0, entities_amo[e])) {
                    snprintf(why, len, "unknown field %lld for %s (FieldsRule.%s.%s)",
                             (long long)fid, entities_amo[e], entities[e], k);
                    return -1;
                }
            }
        }
    }
    json_t *tags = json_object_get(rule, "TagsToAdd");
    for (int e = 0; e < 4; e++) {
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(tags, entities_cap[e]), i, t) {
            json_t *tag = amocrm_cache_find_own(a, AMOCRM_C_TAGS, json_integer_value(t));
            const char *ent = tag ? json_string_value(json_object_get(tag, "Entity")) : NULL;
            if (!ent || strcmp(ent, entities_amo[e]) != 0) {
                snprintf(why, len, "unknown tag %lld for %s (TagsToAdd.%s)",
                         (long long)json_integer_value(t), entities_amo[e], entities_cap[e]);
                return -1;
            }
        }
    }
    return 0;
}

/* The id counter after cur (borrowed; NULL = none handed out yet): compare-and-set, so that two
 * hosts never hand out one id twice. */
static json_t *id_after(const json_t *cur, void *arg)
{
    (void)arg;
    return json_integer(json_integer_value(cur) > 0 ? json_integer_value(cur) + 1 : 2);
}

static json_t *empty_rule(amocrm *a, int64_t quiz)
{
    json_t *n = NULL;
    int64_t next = 1;
    if (amocrm_kv_update(a, "rules.next_id", id_after, NULL, &n, NULL) == 0) {
        next = json_integer_value(n) - 1;
    }
    json_decref(n);
    json_t *fr = json_pack("{s:{s:{}}, s:{s:{}, s:{}}, s:{s:{}}, s:{s:{}}}", "lead", "QuestionID",
                           "contact", "ContactRuleMap", "QuestionID", "company", "QuestionID",
                           "customer", "QuestionID");
    json_t *tags = json_pack("{s:[], s:[], s:[], s:[]}", "Lead", "Contact", "Company", "Customer");
    return json_pack("{s:I, s:I, s:I, s:i, s:i, s:i, s:o, s:o, s:b, s:I}", "ID", (json_int_t)next,
                     "AccountID", (json_int_t)account_amo_id(a), "QuizID", (json_int_t)quiz,
                     "PerformerID", 0, "PipelineID", 0, "StepID", 0, "FieldsRule", fr,
                     "TagsToAdd", tags, "Deleted", 0, "CreatedAt",
                     (json_int_t)(amocrm_now_ms() / 1000));
}

static void emit_saved(amocrm *a, const json_t *rule, int created)
{
    json_t *payload = json_pack("{s:O, s:O, s:b, s:O}", "quiz_id", json_object_get(rule, "QuizID"),
                                "account_id", json_object_get(rule, "AccountID"), "created",
                                created, "rule", rule);
    px_event *ev = amocrm_host->event_create(a->ctx, "amocrm.rule.saved", payload);
    if (!ev || amocrm_host->emit(a->ctx, ev, NULL, NULL) < 0) {
        amocrm_host->log(a->ctx, PX_LOG_WARN, "cannot emit amocrm.rule.saved quiz=%lld",
                         (long long)json_integer_value(json_object_get(rule, "QuizID")));
    }
}

typedef struct rule_put {
    char key[48];
    json_t *rule; /* borrowed */
    int create;
} rule_put;

/* Every account's rules (cur, borrowed; NULL = none yet) with p's rule stored under its key, as
 * a new reference; NULL when p creates a rule another host created meanwhile. */
static json_t *rule_with(const json_t *cur, void *arg)
{
    rule_put *p = arg;
    json_t *was = json_object_get(cur, p->key);
    if (p->create && was && !json_is_true(json_object_get(was, "Deleted"))) {
        return NULL;
    }
    json_t *all = json_is_object(cur) ? json_deep_copy(cur) : json_object();
    json_object_set(all, p->key, p->rule);
    return all;
}

void amocrm_api_rules(amocrm *a, px_http_request *req, const char *method, const char *quiz_text)
{
    json_t *jq = json_string(quiz_text);
    int64_t quiz = 0;
    int bad = !jq || amocrm_json_int(jq, &quiz) < 0 || quiz < 0;
    json_decref(jq);
    if (bad) {
        amocrm_respond_msg(req, 400, "quizID must be an integer");
        return;
    }
    char why[320];
    amocrm_shared_sync(a, 1); /* another host may have saved or changed it */
    json_t *cur = amocrm_rule_get(a, quiz);
    if (strcmp(method, "GET") == 0) {
        if (!cur) {
            snprintf(why, sizeof(why), "no rule for quiz %lld", (long long)quiz);
            amocrm_respond_msg(req, 404, why);
        } else {
            amocrm_respond_json(req, 200, cur);
        }
        return;
    }
    int create = strcmp(method, "POST") == 0;
    if (account_amo_id(a) < 0) {
        amocrm_respond_msg(req, 404, "no amoCRM account connected");
        return;
    }
    if (!create && !cur) {
        snprintf(why, sizeof(why), "no rule for quiz %lld", (long long)quiz);
        amocrm_respond_msg(req, 404, why);
        return;
    }
    if (create && cur) {
        snprintf(why, sizeof(why), "quiz %lld already has a rule: change it with PATCH",
                 (long long)quiz);
        amocrm_respond_msg(req, 400, why);
        return;
    }
    size_t blen = 0;
    const char *text = amocrm_host->http_req_body(req, &blen);
    json_error_t jerr;
    json_t *in = json_loadb(text, blen, 0, &jerr);
    if (!json_is_object(in)) {
        json_decref(in);
        amocrm_respond_msg(req, 400, "body must be a JSON object (RulesReq)");
        return;
    }
    json_t *rule = create ? empty_rule(a, quiz) : json_deep_copy(cur);
    if (apply(rule, in, create, why, sizeof(why)) < 0 || validate(a, rule, why, sizeof(why)) < 0) {
        json_decref(in);
        json_decref(rule);
        amocrm_respond_msg(req, 400, why);
        return;
    }
    json_decref(in);
    rule_put p = {.rule = rule, .create = create};
    rule_key(account_amo_id(a), quiz, p.key, sizeof(p.key));
    json_t *all = NULL;
    int64_t version = 0;
    int rc = amocrm_kv_update(a, "rules", rule_with, &p, &all, &version);
    if (rc != 0) {
        json_decref(rule);
        if (rc == 1) {
            snprintf(why, sizeof(why), "quiz %lld already has a rule: change it with PATCH",
                     (long long)quiz);
            amocrm_respond_msg(req, 400, why);
        } else {
            amocrm_respond_msg(req, 500, "cannot store the rule");
        }
        return;
    }
    json_decref(a->rules);
    a->rules = all;
    a->ver_rules = version;
    amocrm_host->log(a->ctx, PX_LOG_INFO, "rule saved quiz=%lld pipeline=%lld step=%lld",
                     (long long)quiz,
                     (long long)json_integer_value(json_object_get(rule, "PipelineID")),
                     (long long)json_integer_value(json_object_get(rule, "StepID")));
    emit_saved(a, rule, create);
    json_decref(rule);
    amocrm_respond_msg(req, 200, "Success");
}
