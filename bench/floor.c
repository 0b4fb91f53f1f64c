/* The CPU floor for bench/spool.sh: parse the payload and serialise it again with jansson, N
 * times, on one core. Prints "floor events=N seconds=S events_per_s=R". */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <jansson.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: floor PAYLOAD_FILE COUNT\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    static char text[1 << 20];
    size_t len = fread(text, 1, sizeof(text), f);
    fclose(f);
    long n = strtol(argv[2], NULL, 10);
    size_t total = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        json_error_t err;
        json_t *j = json_loadb(text, len, 0, &err);
        if (!j) {
            fprintf(stderr, "payload does not parse: %s\n", err.text);
            return 1;
        }
        char *out = json_dumps(j, JSON_COMPACT);
        total += out[0] == '{';
        free(out);
        json_decref(j);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("floor events=%ld seconds=%.3f events_per_s=%.0f\n", (long)total, s, (double)n / s);
    return 0;
}
