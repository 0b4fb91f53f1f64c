/* Fuzz target: the JSON validator against jansson. Byte 0 picks the flags (0,
 * JSON_REJECT_DUPLICATES, JSON_DECODE_ANY or both), the rest is the text; whenever px_json_check
 * answers PX_JSON_OK, json_loadb with the same flags must accept the text, else abort. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "json_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t flag_sets[] = {0, JSON_REJECT_DUPLICATES, JSON_DECODE_ANY,
                                       JSON_REJECT_DUPLICATES | JSON_DECODE_ANY};
    if (size == 0) {
        return 0;
    }
    size_t flags = flag_sets[data[0] & 3];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    if (px_json_check(text, len, flags) != PX_JSON_OK) {
        return 0;
    }
    json_error_t err;
    json_t *j = json_loadb(text, len, flags, &err);
    if (!j) {
        fprintf(stderr, "px_json_check: OK, but json_loadb (flags %zu) says: %s (line %d col %d)\n",
                flags, err.text, err.line, err.column);
        abort();
    }
    json_decref(j);
    return 0;
}
