/* amocrm rules: one rule per quiz and account, validated against the cache (cache.h). */
#ifndef AMOCRM_RULES_H
#define AMOCRM_RULES_H

#include "core.h"

/* The rule of quiz `quiz_id` for the connected account, borrowed (valid until rules change);
 * NULL when absent or deleted. */
json_t *amocrm_rule_get(amocrm *a, int64_t quiz_id);
/* GET, POST (create) and PATCH (change) /rules/<quiz>. */
void amocrm_api_rules(amocrm *a, px_http_request *req, const char *method, const char *quiz);
/* Loads kv "rules" into a->rules; rules stored under the bare quiz id (before rules were keyed by
 * account) move to their AccountID's key and the result is stored. */
void amocrm_rules_load(amocrm *a);

#endif
