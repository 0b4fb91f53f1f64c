/* The CPU floor for bench/spool.sh: parse the payload and serialise it again with jansson, N
 * times, on one core. Prints "floor events=N seconds=S events_per_s=R". With a third argument W,
 * each parsed tree is kept until W newer ones exist (as a host keeps events while a sink answers),
 * so the same work runs with W trees in memory instead of one reused in the cache. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <jansson.h>

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: floor PAYLOAD_FILE COUNT [ALIVE]\n");
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
    long alive = argc == 4 ? strtol(argv[3], NULL, 10) : 0;
    json_t **ring = calloc((size_t)(alive > 0 ? alive : 1), sizeof(*ring));
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
        if (alive > 0) {
            json_decref(ring[i % alive]);
            ring[i % alive] = j;
        } else {
            json_decref(j);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    for (long i = 0; i < alive; i++) {
        json_decref(ring[i]);
    }
    free(ring);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("floor events=%ld seconds=%.3f events_per_s=%.0f\n", (long)total, s, (double)n / s);
    return 0;
}
