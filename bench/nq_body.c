/* The cost of writing a NotificationQueue body: the plugin's own writer (notification_body) against
 * jansson's (json_dumpb, JSON_COMPACT) on the same message, built by notification_build from
 * parameters shaped like the seed's send event (docs/plugins/notification.md). Both write into a
 * reused buffer, as the sink does. Prints ns per message for each and their ratio (jansson / own).
 *
 *   nq_body [COUNT] [ROUNDS]   (default 200000 messages, best of 5 rounds) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "message.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Keeps the compiler from dropping the writes. */
static volatile size_t sink;

static double per_msg_own(const json_t *msg, char *buf, size_t size, long n)
{
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        sink += notification_body(msg, buf, size);
    }
    return (now_ns() - t0) / (double)n;
}

static double per_msg_jansson(const json_t *msg, char *buf, size_t size, long n)
{
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        sink += json_dumpb(msg, buf, size, JSON_COMPACT);
    }
    return (now_ns() - t0) / (double)n;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 200000;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    json_error_t jerr;
    json_t *params = json_loads("{\"name\": \"USER_INVITEUSER\","
                                " \"tos\": [{\"email\": \"externalevents1709786394020@gmail.com\","
                                " \"name\": \"John Smith\"}],"
                                " \"ccs\": \"manager@example.com\","
                                " \"phone\": \"409-685-4167\", \"pushId\": \"hj7sdf67sqc9\","
                                " \"locale\": \"en_US\","
                                " \"macros\": {\"FNAME\": \"John\", \"LNAME\": \"Smith\","
                                " \"COMPANY\": \"Acme \\\"Widgets\\\"\\nLtd\"}}",
                                0, &jerr);
    json_t *msg = NULL;
    char why[256];
    if (!params || notification_build(params, &msg, why, sizeof(why)) < 0) {
        fprintf(stderr, "nq_body: cannot build the message: %s\n", params ? why : jerr.text);
        return 1;
    }
    char own[2048], theirs[2048];
    size_t a = notification_body(msg, own, sizeof(own)), b = json_dumpb(msg, theirs, sizeof(theirs),
                                                                        JSON_COMPACT);
    if (a != b || a > sizeof(own) || memcmp(own, theirs, a) != 0) {
        fprintf(stderr, "nq_body: the two writers disagree\n");
        return 1;
    }
    double best_own = 0, best_jansson = 0;
    for (int r = 0; r < rounds; r++) { /* alternate, keep the best of each */
        double o = per_msg_own(msg, own, sizeof(own), n);
        double j = per_msg_jansson(msg, theirs, sizeof(theirs), n);
        best_own = r == 0 || o < best_own ? o : best_own;
        best_jansson = r == 0 || j < best_jansson ? j : best_jansson;
    }
    printf("nq_body bytes=%zu messages=%ld rounds=%d\n", a, n, rounds);
    printf("notification_body  : %.0f ns/message\n", best_own);
    printf("json_dumpb  : %.0f ns/message\n", best_jansson);
    printf("ratio       : %.2fx (json_dumpb / notification_body)\n", best_jansson / best_own);
    json_decref(msg);
    json_decref(params);
    return 0;
}
