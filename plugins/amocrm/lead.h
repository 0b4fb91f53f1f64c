/* amocrm lead: the leads/complex body of a quiz result, from its rule and the cache (cache.h). */
#ifndef AMOCRM_LEAD_H
#define AMOCRM_LEAD_H

#include "core.h"

/* Builds the POST /api/v4/leads/complex body (new reference: an array of one lead) for the quiz
 * result `params` (borrowed) following `rule` (borrowed). request_id (borrowed) may be NULL. On a
 * result that cannot become a lead returns NULL and writes the reason into why. */
json_t *amocrm_lead_build(amocrm *a, const json_t *rule, const json_t *params,
                          const char *request_id, char *why, size_t whylen);

#endif
