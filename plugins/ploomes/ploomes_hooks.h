/* ploomes hooks: incoming webhooks and the registration of subscriptions (calls through
 * ploomes_api.h). */
#ifndef PX_PLUGIN_PLOOMES_HOOKS_H
#define PX_PLUGIN_PLOOMES_HOOKS_H

#include "ploomes_core.h"

/* Registers the webhook route and the sync route (when validation_key is set). */
int px__ploomes_hooks_route(plm *p);
/* Starts a registration pass now (or after the running one). */
void px__ploomes_sync_start(plm *p);
/* Stop: no more passes; answers waiting sync requests with 503. */
void px__ploomes_hooks_stop(plm *p);
/* Destroy: frees the pass state; webhook acks still waiting for the spool are orphaned so their
 * late callbacks only free memory. */
void px__ploomes_hooks_destroy(plm *p);

#endif
