/* amocrm account: the connected account (kv "account"), the OAuth2 connection and amoCRM's
 * disconnect hook. Above cache.h and client.h. */
#ifndef PX_AMOCRM_ACCOUNT_H
#define PX_AMOCRM_ACCOUNT_H

#include "core.h"

/* Reads kv "account" and "tokens" into the instance (init). */
void amo_account_load(amo *a);
/* GET (the account), POST (a connect link), DELETE (disconnect) /account. */
void amo_api_account(amo *a, px_http_request *req, const char *method);
/* The OAuth redirect: exchanges the code and connects the account. */
void amo_api_webhook_create(amo *a, px_http_request *req);
/* amoCRM's disconnect hook (HMAC-signed). */
void amo_api_webhook_delete(amo *a, px_http_request *req);

#endif
