/* Fuzz target: Ezzing's Laravel job envelope (the body of an SQS message): parse, then the
 * per-topic field checks, the topic list and the timestamp check on every string field. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ezzing_envelope e;
    char why[256];
    memset(&e, 0, sizeof(e));
    if (ezzing_envelope_parse((const char *)data, size, &e, why, sizeof(why)) == EZZING_OK) {
        (void)ezzing_envelope_validate(&e, why, sizeof(why));
        if (json_is_object(e.data)) {
            const char *k;
            json_t *v;
            json_object_foreach(e.data, k, v) {
                if (json_is_string(v)) {
                    (void)ezzing_is_timestamp(json_string_value(v));
                }
            }
        }
        ezzing_envelope_deinit(&e);
    }
    const char *const *names = NULL;
    (void)ezzing_known_topics(&names);
    return 0;
}
