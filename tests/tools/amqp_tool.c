/* amqp_tool: a small RabbitMQ client for tests and benchmarks, on rabbitmq-c.
 *   amqp_tool count   URL QUEUE                 prints the queue's ready message count
 *   amqp_tool consume URL QUEUE N IDLE_MS        prints up to N messages as JSON lines
 *        {"message_id","delivery_mode","content_type","body"}, acking each; stops after N or
 *        when nothing came for IDLE_MS
 *   amqp_tool delete  URL QUEUE                 deletes the queue (if it exists)
 *   amqp_tool publish URL QUEUE N WINDOW [encoded|batched|simple]
 *        publishes N messages like the notification sink's with publisher confirms, WINDOW
 *        unconfirmed at most, and prints {"n","seconds","rate"} (see cmd_publish for the modes;
 *        default encoded)
 *   amqp_tool watch URL QUEUE N INTERVAL_MS [TIMEOUT_MS]
 *        declares the queue, prints {"ready":true}, then polls its message count on one
 *        connection every INTERVAL_MS and prints {"first","done"}: seconds until the first message
 *        and the Nth were seen (done null after TIMEOUT_MS, default 600000)
 * Exit status 0 on success, 1 on a usage error, 2 on a broker error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include "frames.h" /* plugins/notification: the encoder the sink uses */

static void die(const char *what, amqp_rpc_reply_t r)
{
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        fprintf(stderr, "amqp_tool: %s: %s\n", what, amqp_error_string2(r.library_error));
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_t *m = r.reply.decoded;
        fprintf(stderr, "amqp_tool: %s: %u %.*s\n", what, (unsigned)m->reply_code,
                (int)m->reply_text.len, (char *)m->reply_text.bytes);
    } else {
        fprintf(stderr, "amqp_tool: %s failed (reply type %d)\n", what, (int)r.reply_type);
    }
    exit(2);
}

static void check(amqp_connection_state_t c, const char *what)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        die(what, r);
    }
}

static amqp_connection_state_t open_conn(const char *url)
{
    struct amqp_connection_info ci;
    char *u = strdup(url);
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(u, &ci) != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp_tool: bad url\n");
        exit(1);
    }
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    struct timeval tv = {5, 0};
    int rc = amqp_socket_open_noblock(s, ci.host, ci.port, &tv);
    if (rc != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp_tool: connect: %s\n", amqp_error_string2(rc));
        exit(2);
    }
    amqp_rpc_reply_t r = amqp_login(c, ci.vhost && *ci.vhost ? ci.vhost : "/", 0, 131072, 0,
                                    AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        die("login", r);
    }
    amqp_channel_open(c, 1);
    check(c, "channel.open");
    free(u);
    return c;
}

static void close_conn(amqp_connection_state_t c)
{
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void print_bytes(const char *key, amqp_bytes_t b, int present)
{
    printf("\"%s\":", key);
    if (!present) {
        printf("null");
        return;
    }
    putchar('"');
    for (size_t i = 0; i < b.len; i++) {
        unsigned char ch = ((unsigned char *)b.bytes)[i];
        if (ch == '"' || ch == '\\') {
            printf("\\%c", ch);
        } else if (ch < 0x20) {
            printf("\\u%04x", ch);
        } else {
            putchar(ch);
        }
    }
    putchar('"');
}

static int cmd_count(amqp_connection_state_t c, const char *queue)
{
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
    if (!ok) {
        amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
        if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
            r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            printf("-1\n"); /* no such queue */
            return 0;
        }
        die("queue.declare", r);
    }
    printf("%u\n", (unsigned)ok->message_count);
    return 0;
}

static int cmd_consume(amqp_connection_state_t c, const char *queue, long n, long idle_ms)
{
    amqp_basic_qos(c, 1, 0, 500, 0);
    check(c, "basic.qos");
    amqp_basic_consume(c, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    check(c, "basic.consume");
    long got = 0;
    while (got < n) {
        amqp_envelope_t env;
        struct timeval tv = {idle_ms / 1000, (idle_ms % 1000) * 1000};
        amqp_maybe_release_buffers(c);
        amqp_rpc_reply_t r = amqp_consume_message(c, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT) {
            break;
        }
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            die("consume", r);
        }
        amqp_basic_properties_t *p = &env.message.properties;
        printf("{");
        print_bytes("message_id", p->message_id, (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) != 0);
        printf(",\"delivery_mode\":%d,", (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG)
                                             ? (int)p->delivery_mode
                                             : 0);
        print_bytes("content_type", p->content_type,
                    (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) != 0);
        printf(",");
        print_bytes("body", env.message.body, 1);
        printf("}\n");
        amqp_basic_ack(c, 1, env.delivery_tag, 0);
        amqp_destroy_envelope(&env);
        got++;
    }
    fflush(stdout);
    return 0;
}

/* Holds back partial TCP segments while a burst of publishes is written (rabbitmq-c writes each
 * frame with its own send), so the burst leaves in full segments; turning it off sends the rest. */
static void cork(amqp_connection_state_t c, int on)
{
#ifdef TCP_CORK
    setsockopt(amqp_get_sockfd(c), IPPROTO_TCP, TCP_CORK, &on, sizeof(on));
#else
    (void)c;
    (void)on;
#endif
}

/* Confirm bookkeeping: acked[tag] for tags 1..n, acks in any order, single or multiple. */
typedef struct confirms {
    unsigned char *acked;
    uint64_t n, low, done; /* low: the lowest tag not yet acked; done: how many are */
} confirms;

static void confirm_tag(confirms *cf, uint64_t tag, int multiple)
{
    if (tag > cf->n) {
        return;
    }
    for (uint64_t t = multiple ? cf->low : tag; t <= tag; t++) {
        if (!cf->acked[t]) {
            cf->acked[t] = 1;
            cf->done++;
        }
    }
    while (cf->low <= cf->n && cf->acked[cf->low]) {
        cf->low++;
    }
}

/* Handles one frame from the broker: 0, or -1 on a nack or an unexpected close. */
static int on_frame(confirms *cf, const amqp_frame_t *f)
{
    if (f->frame_type != AMQP_FRAME_METHOD) {
        return 0;
    }
    switch (f->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        const amqp_basic_ack_t *a = f->payload.method.decoded;
        confirm_tag(cf, a->delivery_tag, a->multiple);
        return 0;
    }
    case AMQP_BASIC_NACK_METHOD:
        fprintf(stderr, "amqp_tool: nack\n");
        return -1;
    case AMQP_BASIC_RETURN_METHOD:
        fprintf(stderr, "amqp_tool: a message came back unroutable\n");
        return -1;
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD:
        fprintf(stderr, "amqp_tool: the broker closed the channel\n");
        return -1;
    default:
        return 0;
    }
}

enum publish_mode { PUBLISH_SIMPLE, PUBLISH_BATCHED, PUBLISH_ENCODED };

/* Publishes n messages like the notification sink's (persistent, mandatory, JSON, a 26-character
 * message id, app_id and timestamp, the body it sends for the bench's mapping) with confirms,
 * window unconfirmed at most. PUBLISH_SIMPLE: publish while the window allows, then block for one
 * frame. PUBLISH_BATCHED: the burst the window allows goes out corked, then one frame is waited
 * for and every other frame already received is taken before the next burst. PUBLISH_ENCODED: as
 * batched, but the burst is encoded into one buffer (frames.c) and written with one send. */
static int cmd_publish(amqp_connection_state_t c, const char *queue, long n, long window,
                       enum publish_mode mode)
{
    amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
    check(c, "queue.declare");
    amqp_confirm_select(c, 1);
    check(c, "confirm.select");
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                   AMQP_BASIC_APP_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG |
                   AMQP_BASIC_MESSAGE_ID_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    props.app_id = amqp_cstring_bytes("plexus");
    char body[512], id[64];
    confirms cf = {.acked = calloc((size_t)n + 1, 1), .n = (uint64_t)n, .low = 1};
    if (!cf.acked) {
        return 2;
    }
    notification_frames out = {0};
    int frame_max = amqp_get_frame_max(c), fd = amqp_get_sockfd(c);
    uint64_t sent = 0;
    int rc = 0;
    double t0 = now_s();
    while (cf.done < (uint64_t)n && rc == 0) {
        int burst = mode == PUBLISH_BATCHED && sent < (uint64_t)n &&
                    sent - cf.done + 1 < (uint64_t)window;
        if (burst) {
            cork(c, 1);
        }
        while (sent < (uint64_t)n && sent - cf.done < (uint64_t)window && rc == 0) {
            snprintf(id, sizeof(id), "bench-%020llu", (unsigned long long)sent);
            int len = snprintf(body, sizeof(body),
                               "{\"notification\":[{\"name\":\"USER_INVITEUSER\",\"recipients\":"
                               "[{\"tos\":[{\"email\":\"user%llu@example.com\",\"name\":\"Ana\"}"
                               "],\"macros\":{\"FNAME\":\"Ana\",\"SEQ\":\"%llu\"}}]}]}",
                               (unsigned long long)sent, (unsigned long long)sent);
            props.message_id = amqp_cstring_bytes(id);
            props.timestamp = (uint64_t)time(NULL);
            amqp_bytes_t b = {.len = (size_t)len, .bytes = body};
            if (mode == PUBLISH_ENCODED) {
                rc = notification_frames_publish(&out, 1, frame_max, amqp_empty_bytes,
                                                 amqp_cstring_bytes(queue), 1, &props, b);
            } else {
                rc = amqp_basic_publish(c, 1, amqp_empty_bytes, amqp_cstring_bytes(queue), 1, 0,
                                        &props, b);
            }
            sent++;
        }
        if (rc == 0 && out.len > 0) {
            rc = notification_frames_write(&out, fd, 5000);
        }
        if (rc != 0) {
            fprintf(stderr, "amqp_tool: publish failed\n");
            rc = 2;
            break;
        }
        if (burst) {
            cork(c, 0);
        }
        amqp_frame_t f;
        if (amqp_simple_wait_frame(c, &f) != AMQP_STATUS_OK) {
            fprintf(stderr, "amqp_tool: connection lost\n");
            rc = 2;
            break;
        }
        rc = on_frame(&cf, &f) < 0 ? 2 : 0;
        while (mode != PUBLISH_SIMPLE && rc == 0) {
            struct timeval zero = {0, 0};
            int r = amqp_simple_wait_frame_noblock(c, &f, &zero);
            if (r == AMQP_STATUS_TIMEOUT) {
                break;
            }
            if (r != AMQP_STATUS_OK) {
                fprintf(stderr, "amqp_tool: connection lost\n");
                rc = 2;
            } else {
                rc = on_frame(&cf, &f) < 0 ? 2 : 0;
            }
        }
        amqp_maybe_release_buffers(c);
    }
    free(cf.acked);
    notification_frames_free(&out);
    if (rc != 0) {
        return rc;
    }
    double secs = now_s() - t0;
    printf("{\"n\":%ld,\"seconds\":%.3f,\"rate\":%.1f}\n", n, secs, (double)n / secs);
    return 0;
}

/* Declares the queue (durable), then asks its message count every interval_ms on this one
 * connection until it reaches n or timeout_ms passes; prints the seconds since start at which
 * the first message and the nth were seen, {"first","done"} (done null on timeout). */
static int cmd_watch(amqp_connection_state_t c, const char *queue, long n, long interval_ms,
                     long timeout_ms)
{
    amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
    check(c, "queue.declare");
    printf("{\"ready\":true}\n");
    fflush(stdout);
    double t0 = now_s(), first = -1;
    for (;;) {
        amqp_queue_declare_ok_t *ok =
            amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
        if (!ok) {
            die("queue.declare", amqp_get_rpc_reply(c));
        }
        double t = now_s() - t0;
        if (first < 0 && ok->message_count > 0) {
            first = t;
        }
        if ((long)ok->message_count >= n) {
            printf("{\"first\":%.4f,\"done\":%.4f}\n", first, t);
            return 0;
        }
        if (t * 1000 >= (double)timeout_ms) {
            printf("{\"first\":%.4f,\"done\":null}\n", first);
            return 0;
        }
        amqp_maybe_release_buffers(c);
        struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: amqp_tool count|consume|delete|publish URL QUEUE [ARGS]\n");
        return 1;
    }
    const char *cmd = argv[1], *queue = argv[3];
    int rc = 1;
    if (strcmp(cmd, "count") == 0) {
        amqp_connection_state_t c = open_conn(argv[2]);
        rc = cmd_count(c, queue);
        amqp_destroy_connection(c);
        return rc;
    }
    if (strcmp(cmd, "delete") == 0) {
        amqp_connection_state_t c = open_conn(argv[2]);
        amqp_queue_delete(c, 1, amqp_cstring_bytes(queue), 0, 0);
        amqp_destroy_connection(c);
        return 0;
    }
    if (argc < 6) {
        fprintf(stderr, "amqp_tool: %s needs two more arguments\n", cmd);
        return 1;
    }
    long a = atol(argv[4]), b = atol(argv[5]);
    amqp_connection_state_t c = open_conn(argv[2]);
    if (strcmp(cmd, "consume") == 0) {
        rc = cmd_consume(c, queue, a, b);
    } else if (strcmp(cmd, "publish") == 0) {
        const char *m = argc > 6 ? argv[6] : "encoded";
        enum publish_mode mode = strcmp(m, "simple") == 0    ? PUBLISH_SIMPLE
                                 : strcmp(m, "batched") == 0 ? PUBLISH_BATCHED
                                                             : PUBLISH_ENCODED;
        rc = cmd_publish(c, queue, a, b > 0 ? b : 1, mode);
    } else if (strcmp(cmd, "watch") == 0) {
        rc = cmd_watch(c, queue, a, b > 0 ? b : 5, argc > 6 ? atol(argv[6]) : 600000);
    } else {
        fprintf(stderr, "amqp_tool: unknown command %s\n", cmd);
    }
    close_conn(c);
    return rc;
}
