/* ploomes hooks: incoming webhooks and the registration of subscriptions (calls through
 * ploomes_api.h). */
#ifndef PLOOMES_HOOKS_H
#define PLOOMES_HOOKS_H

#include "ploomes_core.h"

/* Registers the webhook route and the sync route (when validation_key is set). */
int ploomes_hooks_route(ploomes *p);
/* Starts a registration pass now (or after the running one). */
void ploomes_sync_start(ploomes *p);
/* Stop: no more passes; answers waiting sync requests with 503. */
void ploomes_hooks_stop(ploomes *p);
/* Destroy: frees the pass state; webhook acks still waiting for the spool are orphaned so their
 * late callbacks only free memory. */
void ploomes_hooks_destroy(ploomes *p);

#endif
