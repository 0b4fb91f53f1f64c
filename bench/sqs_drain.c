/* The reference loop of bench/ezzing.sh: LOOPS threads, each with one keep-alive libcurl easy
 * handle (one TCP connection), each doing ReceiveMessage (the host's request body: 10 messages,
 * every attribute, 1 s long poll) then DeleteMessageBatch of what came, until TOTAL messages are
 * deleted. Requests are signed with SigV4 by the plugins' own signer (plugins/common/sigv4.c,
 * one per thread, the signing key derived once a day). The answer is scanned for "ReceiptHandle"
 * values only, copied as they are (still JSON-escaped) into the delete body: the least work a
 * drain can do per message.
 * Prints the seconds from the first request to the last delete answer.
 *
 *   sqs_drain ENDPOINT QUEUE_URL TOTAL LOOPS REGION KEY SECRET */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "sigv4.h"

static const char *endpoint, *queue_url, *region, *key_id, *secret;
static char host_hdr[256];
static long total;
static atomic_long done;

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static void buf_add(buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) {
            abort();
        }
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    buf_add(userp, data, size * nmemb);
    return size * nmemb;
}

/* POSTs body as AmazonSQS.<action>, signed; the answer goes to resp. Exits on any failure. */
static void call(CURL *easy, px_sigv4 *signer, const char *action, const buf *body, buf *resp)
{
    char amz_date[PX_SIGV4_DATE_LEN + 1], target[128], date[64], auth[1024];
    px_sigv4_date(time(NULL), amz_date);
    snprintf(target, sizeof(target), "X-Amz-Target: AmazonSQS.%s", action);
    snprintf(date, sizeof(date), "X-Amz-Date: %s", amz_date);
    const char *const signed_headers[] = {"Content-Type: application/x-amz-json-1.0", target, NULL};
    memcpy(auth, "Authorization: ", 15);
    if (px_sigv4_sign(signer, "POST", host_hdr, "/", signed_headers, body->p, body->len, amz_date,
                      auth + 15, sizeof(auth) - 15) < 0) {
        fprintf(stderr, "cannot sign %s\n", action);
        exit(1);
    }
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/x-amz-json-1.0");
    h = curl_slist_append(h, target);
    h = curl_slist_append(h, date);
    h = curl_slist_append(h, auth);
    h = curl_slist_append(h, "Expect:");
    resp->len = 0;
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body->p);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long)body->len);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, resp);
    CURLcode rc = curl_easy_perform(easy);
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    if (rc != CURLE_OK || status != 200) {
        fprintf(stderr, "%s failed: %s status=%ld %s\n", action, curl_easy_strerror(rc), status,
                resp->p ? resp->p : "");
        exit(1);
    }
}

static void *loop(void *arg)
{
    (void)arg;
    px_sigv4 signer;
    if (px_sigv4_init(&signer, key_id, secret, region, "sqs") < 0) {
        exit(1);
    }
    CURL *easy = curl_easy_init();
    curl_easy_setopt(easy, CURLOPT_URL, endpoint);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    buf receive = {0}, del = {0}, resp = {0};
    buf_str(&receive, "{\"QueueUrl\":\"");
    buf_str(&receive, queue_url);
    buf_str(&receive, "\",\"MaxNumberOfMessages\":10,\"WaitTimeSeconds\":1,"
                      "\"VisibilityTimeout\":60,\"MessageSystemAttributeNames\":[\"All\"],"
                      "\"AttributeNames\":[\"All\"],\"MessageAttributeNames\":[\"All\"]}");
    static const char tag[] = "\"ReceiptHandle\":\"";
    while (atomic_load(&done) < total) {
        call(easy, &signer, "ReceiveMessage", &receive, &resp);
        del.len = 0;
        buf_str(&del, "{\"QueueUrl\":\"");
        buf_str(&del, queue_url);
        buf_str(&del, "\",\"Entries\":[");
        long n = 0;
        for (const char *p = resp.p; (p = strstr(p, tag)) != NULL;) {
            p += sizeof(tag) - 1;
            const char *e = p;
            while (*e && !(*e == '"' && e[-1] != '\\')) {
                e++;
            }
            char id[64];
            snprintf(id, sizeof(id), "%s{\"Id\":\"e%ld\",\"ReceiptHandle\":\"", n ? "," : "", n);
            buf_str(&del, id);
            buf_add(&del, p, (size_t)(e - p));
            buf_str(&del, "\"}");
            n++;
            p = e;
        }
        if (n == 0) {
            continue;
        }
        buf_str(&del, "]}");
        call(easy, &signer, "DeleteMessageBatch", &del, &resp);
        if (strstr(resp.p, "\"Failed\":[{")) {
            fprintf(stderr, "delete failed: %s\n", resp.p);
            exit(1);
        }
        atomic_fetch_add(&done, n);
    }
    curl_easy_cleanup(easy);
    px_sigv4_deinit(&signer);
    free(receive.p);
    free(del.p);
    free(resp.p);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: sqs_drain ENDPOINT QUEUE_URL TOTAL LOOPS REGION KEY SECRET\n");
        return 2;
    }
    endpoint = argv[1];
    queue_url = argv[2];
    total = strtol(argv[3], NULL, 10);
    int loops = atoi(argv[4]);
    region = argv[5];
    key_id = argv[6];
    secret = argv[7];
    const char *h = strstr(endpoint, "://");
    snprintf(host_hdr, sizeof(host_hdr), "%.*s", (int)strcspn(h ? h + 3 : endpoint, "/"),
             h ? h + 3 : endpoint);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_t t[256];
    if (loops < 1 || loops > 256) {
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < loops; i++) {
        pthread_create(&t[i], NULL, loop, NULL);
    }
    for (int i = 0; i < loops; i++) {
        pthread_join(t[i], NULL);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%.4f\n", (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    curl_global_cleanup();
    return 0;
}
