/* Fuzz target: the mapping language. The input is "TEMPLATE\n%%\nPAYLOAD": the template (JSON)
 * is compiled and applied to the payload (JSON, or a string when it is not JSON); the pointer
 * compiler and RFC 6901 lookup run on the template text too. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mapping.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *find_sep(const char *p, size_t n, size_t *at)
{
    for (size_t i = 0; i + 4 <= n; i++) {
        if (memcmp(p + i, "\n%%\n", 4) == 0) {
            *at = i;
            return p + i + 4;
        }
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    size_t tlen = size, at = 0;
    const char *rest = find_sep(text, size, &at);
    const char *ptext = "{\"a\":{\"b\":[1,2,{\"c\":\"x\"}]},\"s\":\"str\",\"n\":null}";
    size_t plen = strlen(ptext);
    if (rest) {
        tlen = at;
        ptext = rest;
        plen = size - (size_t)(rest - text);
    }
    json_t *tmpl = json_loadb(text, tlen, JSON_DECODE_ANY, NULL);
    if (!tmpl) {
        tmpl = json_stringn(text, tlen);
    }
    json_t *payload = json_loadb(ptext, plen, JSON_DECODE_ANY, NULL);
    if (!payload) {
        payload = json_stringn(ptext, plen);
    }
    char err[512];
    px_mapping *m = NULL;
    if (tmpl && payload && px_mapping_compile(tmpl, &m, err, sizeof(err)) == 0) {
        px_mapping_env env = {payload, "fuzz.type", "id-1", "src", 1700000000000LL};
        json_t *out = NULL;
        if (px_mapping_apply(m, &env, &out, err, sizeof(err)) == 0) {
            char *dump = json_dumps(out, JSON_ENCODE_ANY | JSON_COMPACT);
            free(dump);
            json_decref(out);
        }
        (void)px_mapping_has_refs(m);
        px_mapping_destroy(m);
    }
    /* the template text as one pointer */
    if (tlen < 4096) {
        char *ptr = strndup(text, tlen);
        px_pointer *p = NULL;
        if (px_pointer_compile(ptr, &p, err, sizeof(err)) == 0) {
            px_mapping_env env = {payload, "t", "i", "s", 1};
            json_decref(px_pointer_eval(p, &env));
            (void)px_pointer_text(p);
            px_pointer_destroy(p);
        }
        (void)px_json_pointer_get(payload, ptr);
        free(ptr);
    }
    json_decref(tmpl);
    json_decref(payload);
    return 0;
}
