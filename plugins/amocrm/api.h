/* amocrm api: the admin API's route on the host's HTTP listener, dispatching to account.h,
 * cache.h and rules.h. */
#ifndef PX_AMOCRM_API_H
#define PX_AMOCRM_API_H

#include "core.h"

/* Routes the admin API under a->prefix. 0, or < 0 when the host serves no HTTP. */
int amo_api_register(amo *a);

#endif
