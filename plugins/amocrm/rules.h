/* amocrm rules: one rule per quiz and account, validated against the cache (cache.h). */
#ifndef PX_AMOCRM_RULES_H
#define PX_AMOCRM_RULES_H

#include "core.h"

/* The rule of quiz `quiz_id` for the connected account, borrowed (valid until rules change);
 * NULL when absent or deleted. */
json_t *amo_rule_get(amo *a, int64_t quiz_id);
/* GET, POST (create) and PATCH (change) /rules/<quiz>. */
void amo_api_rules(amo *a, px_http_request *req, const char *method, const char *quiz);
/* Loads kv "rules" into a->rules; rules stored under the bare quiz id (before rules were keyed by
 * account) move to their AccountID's key and the result is stored. */
void amo_rules_load(amo *a);

#endif
