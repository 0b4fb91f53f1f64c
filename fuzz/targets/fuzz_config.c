/* Fuzz target: the configuration loader. The input is a YAML file: px_config_parse (YAML, marks,
 * ${VAR} expansion, host keys, instances, pipelines) and, for every instance it accepts,
 * px_config_options against an option table with every option type, a required and a secret
 * option (the validation a plugin's options go through). */
#include <stdint.h>
#include <stdlib.h>

#include "config.h"
#include "log.h"

static const px_option options[] = {
    {"url", PX_OPT_STRING, PX_OPT_REQUIRED, NULL, "a required string"},
    {"token", PX_OPT_STRING, PX_OPT_SECRET, NULL, "a secret"},
    {"count", PX_OPT_INT, 0, "10", "an int"},
    {"ratio", PX_OPT_NUMBER, 0, "0.5", "a number"},
    {"on", PX_OPT_BOOL, 0, "false", "a bool"},
    {"wait", PX_OPT_DURATION, 0, "20s", "a duration"},
    {"max", PX_OPT_SIZE, 0, "256KiB", "a size"},
    {"tags", PX_OPT_LIST, 0, "[a, b]", "a list"},
    {"extra", PX_OPT_OBJECT, 0, NULL, "an object"},
    {NULL, 0, 0, NULL, NULL},
};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    setenv("PX_FUZZ_SET", "value", 1);
    setenv("PX_FUZZ_EMPTY", "", 1);
    px_log_set_level(-1); /* errors are the point: keep the output quiet */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024];
    px_config *cfg = NULL;
    if (px_config_parse("fuzz.yaml", (const char *)data, size, &cfg, err, sizeof(err)) == 0) {
        for (size_t i = 0; i < cfg->ninstances; i++) {
            json_t *opts = NULL;
            if (px_config_options(cfg, &cfg->instances[i], options, &opts, err, sizeof(err)) ==
                0) {
                json_decref(opts);
            }
        }
        px_config_destroy(cfg);
    }
    px_log_clear_secrets();
    return 0;
}
