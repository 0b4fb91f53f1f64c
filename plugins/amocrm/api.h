/* amocrm api: the admin API's route on the host's HTTP listener, dispatching to account.h,
 * cache.h and rules.h. */
#ifndef AMOCRM_API_H
#define AMOCRM_API_H

#include "core.h"

/* Routes the admin API under a->prefix. 0, or < 0 when the host serves no HTTP. */
int amocrm_api_register(amocrm *a);

#endif
