/* amocrm account: the connected account (kv "account"), the OAuth2 connection and amoCRM's
 * disconnect hook. Above cache.h and client.h. */
#ifndef AMOCRM_ACCOUNT_H
#define AMOCRM_ACCOUNT_H

#include "core.h"

/* Reads kv "account" and "tokens" into the instance (init). */
void amocrm_account_load(amocrm *a);
/* GET (the account), POST (a connect link), DELETE (disconnect) /account. */
void amocrm_api_account(amocrm *a, px_http_request *req, const char *method);
/* The OAuth redirect: exchanges the code and connects the account. */
void amocrm_api_webhook_create(amocrm *a, px_http_request *req);
/* amoCRM's disconnect hook (HMAC-signed). */
void amocrm_api_webhook_delete(amocrm *a, px_http_request *req);

#endif
