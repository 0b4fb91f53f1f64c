/* Fuzz target: the notification plugin's pure parsers: an EventBridge envelope (its type), and a
 * NotificationQueue message built from delivery parameters, both from the input as JSON. */
#include <stdint.h>
#include <stdlib.h>

#include "message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!j) {
        return 0;
    }
    char type[256], why[256];
    (void)notification_envelope_type(j, type, sizeof(type), why, sizeof(why));
    json_t *out = NULL;
    if (notification_build(j, &out, why, sizeof(why)) == 0) {
        char *text = json_dumps(out, JSON_COMPACT);
        free(text);
        json_decref(out);
    }
    if (json_is_string(j)) {
        (void)notification_email_ok(json_string_value(j));
    }
    json_decref(j);
    return 0;
}
