/* notification: RabbitMQ publisher with confirms on a worker thread (see publisher.h).
 *
 * The worker owns the rabbitmq-c connection and the list of published, unconfirmed jobs; only
 * the queues of submitted and finished jobs, the stop flag and the socket descriptor (for a forced
 * shutdown) are shared, under `lock`. A pipe wakes the worker when work or a stop arrives while it
 * waits in poll() on the AMQP socket. */
#include "publisher.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include <plexus/sdk.h>

#include "frames.h"

#define CHANNEL 1
#define IDLE_POLL_MS 1000 /* idle wake-ups keep heartbeats flowing */
#define JOIN_GRACE_MS 3000
#define OUT_FLUSH_BYTES (256 * 1024) /* a long batch is written in parts of about this size */

typedef struct job_list {
    notification_job *head, *tail;
} job_list;

struct notification_pub {
    /* Settings (immutable after create). */
    char *host, *vhost, *user, *password, *ca_cert, *exchange, *routing_key, *queue;
    int port, tls, tls_verify, declare, heartbeat_s;
    uint32_t connect_timeout_ms, confirm_timeout_ms, backoff_min_ms, backoff_max_ms;
    void (*notify)(void *arg);
    void *notify_arg;

    pthread_t thread;
    int wake_rd, wake_wr;

    /* Shared, under lock. */
    pthread_mutex_t lock;
    job_list todo, done;
    int stop, notified;
    int sockfd; /* of the live connection, -1 when none */

    /* Worker thread only. */
    amqp_connection_state_t conn;
    notification_frames out; /* publishes encoded, not yet written (plain TCP only) */
    int frame_max;
    job_list unconfirmed, finished;
    uint64_t next_seq;
    uint32_t backoff_ms;
    int64_t next_connect_ms;
    unsigned failures;
    char last_error[200];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval tv_ms(uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

static void list_push(job_list *l, notification_job *j)
{
    j->next = NULL;
    if (l->tail) {
        l->tail->next = j;
    } else {
        l->head = j;
    }
    l->tail = j;
}

static void list_concat(job_list *l, job_list *more)
{
    if (!more->head) {
        return;
    }
    if (l->tail) {
        l->tail->next = more->head;
    } else {
        l->head = more->head;
    }
    l->tail = more->tail;
    more->head = more->tail = NULL;
}

static void list_free(job_list *l)
{
    notification_job *j = l->head;
    while (j) {
        notification_job *next = j->next;
        notification_job_free(j);
        j = next;
    }
    l->head = l->tail = NULL;
}

notification_job *notification_job_create(void *tag, size_t len, const char *message_id)
{
    notification_job *j = malloc(sizeof(*j) + len);
    if (!j) {
        return NULL;
    }
    memset(j, 0, sizeof(*j));
    j->tag = tag;
    j->body = (char *)(j + 1);
    j->len = len;
    snprintf(j->message_id, sizeof(j->message_id), "%s", message_id ? message_id : "");
    return j;
}

void notification_job_free(notification_job *job)
{
    free(job);
}

static void wake(notification_pub *p)
{
    char c = 1;
    /* A full pipe already means "wake up"; nothing to do on EAGAIN. */
    if (write(p->wake_wr, &c, 1) < 0 && errno != EAGAIN) {
        return;
    }
}

static void drain_wake(notification_pub *p)
{
    char buf[64];
    while (read(p->wake_rd, buf, sizeof(buf)) > 0) {
    }
}

/* --- Results handed to the loop ------------------------------------------------------------ */

static void finish(notification_pub *p, notification_job *j, int status, const char *reason)
{
    j->status = status;
    if (!reason) {
        j->reason[0] = '\0';
    } else if (reason != j->reason) {
        snprintf(j->reason, sizeof(j->reason), "%s", reason);
    }
    list_push(&p->finished, j);
}

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static void note(notification_pub *p, int level, int state, const char *fmt, ...)
{
    notification_job *j = calloc(1, sizeof(*j));
    if (!j) {
        return;
    }
    j->level = level;
    j->state = state;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->reason, sizeof(j->reason), fmt, ap);
    va_end(ap);
    list_push(&p->finished, j);
}

static void flush_finished(notification_pub *p)
{
    if (!p->finished.head) {
        return;
    }
    pthread_mutex_lock(&p->lock);
    list_concat(&p->done, &p->finished);
    int need = !p->notified;
    p->notified = 1;
    pthread_mutex_unlock(&p->lock);
    if (need) {
        p->notify(p->notify_arg);
    }
}

static void fail_list(notification_pub *p, job_list *l, const char *reason)
{
    notification_job *j = l->head;
    l->head = l->tail = NULL;
    while (j) {
        notification_job *next = j->next;
        finish(p, j, PX_ERETRY, reason);
        j = next;
    }
}

/* --- Connection ----------------------------------------------------------------------------- */

static void describe_reply(amqp_rpc_reply_t r, const char *what, char *buf, size_t n)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        snprintf(buf, n, "%s: ok", what);
        break;
    case AMQP_RESPONSE_NONE:
        snprintf(buf, n, "%s: no reply from the broker", what);
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(buf, n, "%s: %s", what, amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            snprintf(buf, n, "%s: broker closed the connection: %u %.*s", what,
                     (unsigned)m->reply_code, (int)m->reply_text.len,
                     (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            snprintf(buf, n, "%s: broker closed the channel: %u %.*s", what,
                     (unsigned)m->reply_code, (int)m->reply_text.len,
                     (const char *)m->reply_text.bytes);
        } else {
            snprintf(buf, n, "%s: unexpected broker method 0x%08x", what,
                     (unsigned)r.reply.id);
        }
        break;
    }
}

static void drop_connection(notification_pub *p, int graceful)
{
    if (!p->conn) {
        return;
    }
    if (graceful) {
        amqp_channel_close(p->conn, CHANNEL, AMQP_REPLY_SUCCESS);
        amqp_connection_close(p->conn, AMQP_REPLY_SUCCESS);
    }
    pthread_mutex_lock(&p->lock);
    p->sockfd = -1;
    pthread_mutex_unlock(&p->lock);
    amqp_destroy_connection(p->conn);
    p->conn = NULL;
}

/* The connection broke: every unconfirmed job is retried, and the next job reconnects. */
static void lose_connection(notification_pub *p, const char *why)
{
    char reason[256];
    snprintf(reason, sizeof(reason), "connection lost: %s", why);
    fail_list(p, &p->unconfirmed, reason);
    drop_connection(p, 0);
    note(p, PX_LOG_WARN, NOTIFICATION_STATE_DOWN, "broker connection lost reason=\"%s\"", why);
    snprintf(p->last_error, sizeof(p->last_error), "%s", why);
    p->next_connect_ms = now_ms();
}

static int connect_broker(notification_pub *p, char *err, size_t errlen)
{
    struct timeval tv = tv_ms(p->connect_timeout_ms);
    amqp_rpc_reply_t r;
    amqp_connection_state_t conn = amqp_new_connection();
    if (!conn) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    amqp_socket_t *sock = p->tls ? amqp_ssl_socket_new(conn) : amqp_tcp_socket_new(conn);
    if (!sock) {
        snprintf(err, errlen, "cannot create %s socket", p->tls ? "TLS" : "TCP");
        goto fail;
    }
    if (p->tls) {
        amqp_ssl_socket_set_verify_peer(sock, p->tls_verify);
        amqp_ssl_socket_set_verify_hostname(sock, p->tls_verify);
        if (p->ca_cert && amqp_ssl_socket_set_cacert(sock, p->ca_cert) != AMQP_STATUS_OK) {
            snprintf(err, errlen, "cannot load ca_cert");
            goto fail;
        }
    }
    amqp_set_handshake_timeout(conn, &tv);
    amqp_set_rpc_timeout(conn, &tv);
    int rc = amqp_socket_open_noblock(sock, p->host, p->port, &tv);
    if (rc != AMQP_STATUS_OK) {
        snprintf(err, errlen, "connect to %s:%d: %s", p->host, p->port, amqp_error_string2(rc));
        goto fail;
    }
    r = amqp_login(conn, p->vhost, 0, AMQP_DEFAULT_FRAME_SIZE, p->heartbeat_s,
                   AMQP_SASL_METHOD_PLAIN, p->user, p->password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        describe_reply(r, "login", err, errlen);
        goto fail;
    }
    amqp_channel_open(conn, CHANNEL);
    r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        describe_reply(r, "channel.open", err, errlen);
        goto fail;
    }
    if (p->declare) {
        amqp_queue_declare(conn, CHANNEL, amqp_cstring_bytes(p->queue), 0, 1, 0, 0,
                           amqp_empty_table);
        r = amqp_get_rpc_reply(conn);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            describe_reply(r, "queue.declare", err, errlen);
            goto fail;
        }
    }
    amqp_confirm_select(conn, CHANNEL);
    r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        describe_reply(r, "confirm.select", err, errlen);
        goto fail;
    }
    p->conn = conn;
    p->frame_max = amqp_get_frame_max(conn);
    p->out.len = 0;
    p->next_seq = 1; /* confirm delivery tags count from 1 on each channel */
    pthread_mutex_lock(&p->lock);
    p->sockfd = amqp_get_sockfd(conn);
    pthread_mutex_unlock(&p->lock);
    return 0;
fail:
    amqp_destroy_connection(conn);
    return -1;
}

/* Connects if the backoff allows; returns 0 when connected. */
static int ensure_connected(notification_pub *p)
{
    if (p->conn) {
        return 0;
    }
    if (now_ms() < p->next_connect_ms) {
        return -1;
    }
    char err[200];
    if (connect_broker(p, err, sizeof(err)) == 0) {
        if (p->failures) {
            note(p, PX_LOG_INFO, NOTIFICATION_STATE_UP,
                 "broker connected host=%s port=%d queue=%s after_failures=%u", p->host, p->port,
                 p->queue, p->failures);
        } else {
            note(p, PX_LOG_INFO, NOTIFICATION_STATE_UP, "broker connected host=%s port=%d queue=%s",
                 p->host, p->port, p->queue);
        }
        p->failures = 0;
        p->backoff_ms = 0;
        return 0;
    }
    p->failures++;
    p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : p->backoff_min_ms;
    if (p->backoff_ms > p->backoff_max_ms) {
        p->backoff_ms = p->backoff_max_ms;
    }
    p->next_connect_ms = now_ms() + p->backoff_ms;
    snprintf(p->last_error, sizeof(p->last_error), "%s", err);
    /* The first failure is news; the following ones only while debugging. */
    note(p, p->failures == 1 ? PX_LOG_WARN : PX_LOG_DEBUG, NOTIFICATION_STATE_DOWN,
         "broker connect failed attempt=%u retry_in_ms=%u reason=\"%s\"", p->failures,
         p->backoff_ms, err);
    return -1;
}

/* --- Publishing and confirms ---------------------------------------------------------------- */

/* TLS only: holds back partial TCP segments while a batch is published through rabbitmq-c (it
 * sends every frame on its own), so the batch leaves in full segments; uncorking sends the rest.
 * Plain TCP encodes the batch into one buffer instead (write_out). */
static void cork(notification_pub *p, int on)
{
#ifdef TCP_CORK
    if (p->conn) {
        setsockopt(amqp_get_sockfd(p->conn), IPPROTO_TCP, TCP_CORK, &on, sizeof(on));
    }
#else
    (void)p;
    (void)on;
#endif
}

/* Publishes j: over plain TCP its frames are appended to p->out (write_out sends them), over TLS
 * rabbitmq-c sends them. Returns 0 or an AMQP_STATUS_* / -errno code. */
static int publish(notification_pub *p, notification_job *j)
{
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                   AMQP_BASIC_APP_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    props.app_id = amqp_cstring_bytes("plexus");
    props.timestamp = (uint64_t)time(NULL);
    if (j->message_id[0]) {
        props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        props.message_id = amqp_cstring_bytes(j->message_id);
    }
    amqp_bytes_t body = {.len = j->len, .bytes = j->body};
    const char *key = p->routing_key ? p->routing_key : p->queue;
    int rc = p->tls ? amqp_basic_publish(p->conn, CHANNEL, amqp_cstring_bytes(p->exchange),
                                         amqp_cstring_bytes(key), 1, 0, &props, body)
                    : notification_frames_publish(&p->out, CHANNEL, p->frame_max,
                                                  amqp_cstring_bytes(p->exchange),
                                                  amqp_cstring_bytes(key), 1, &props, body);
    if (rc != AMQP_STATUS_OK) {
        return rc;
    }
    j->seq = p->next_seq++;
    j->sent_ms = now_ms();
    list_push(&p->unconfirmed, j);
    return 0;
}

/* Sends the encoded publishes in one write. Returns 0, or < 0 when the connection was lost
 * (every unconfirmed job, these included, is then retried). */
static int write_out(notification_pub *p)
{
    if (!p->conn || p->out.len == 0) {
        return 0;
    }
    int rc = notification_frames_write(&p->out, amqp_get_sockfd(p->conn),
                                       (int)p->confirm_timeout_ms);
    if (rc < 0) {
        char why[160];
        snprintf(why, sizeof(why), "publish: %s", strerror(-rc));
        lose_connection(p, why);
        return -1;
    }
    return 0;
}

/* Finishes the unconfirmed jobs that tag (and, with multiple, every earlier tag) covers. The list
 * is in tag order, so a multiple ack takes a prefix and the walk stops past tag. */
static void settle(notification_pub *p, uint64_t tag, int multiple, int status, const char *reason)
{
    notification_job *prev = NULL, *j = p->unconfirmed.head;
    while (j && j->seq <= tag) {
        notification_job *next = j->next;
        if (j->seq == tag || multiple) {
            if (prev) {
                prev->next = next;
            } else {
                p->unconfirmed.head = next;
            }
            if (p->unconfirmed.tail == j) {
                p->unconfirmed.tail = prev;
            }
            if (status == PX_OK && j->returned) {
                finish(p, j, PX_ERETRY, j->reason); /* acked, but no queue took it */
            } else {
                finish(p, j, status, reason);
            }
        } else {
            prev = j;
        }
        j = next;
    }
}

/* A mandatory message no queue accepted comes back (basic.return, then its ack): mark its job. */
static int on_return(notification_pub *p, amqp_channel_t channel, const amqp_basic_return_t *m)
{
    char why[200];
    snprintf(why, sizeof(why), "unroutable: %u %.*s (does the queue exist?)",
             (unsigned)m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    amqp_message_t msg;
    amqp_rpc_reply_t r = amqp_read_message(p->conn, channel, &msg, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char err[200];
        describe_reply(r, "basic.return", err, sizeof(err));
        lose_connection(p, err);
        return -1;
    }
    amqp_bytes_t id = msg.properties.message_id;
    int has_id = (msg.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) != 0;
    for (notification_job *j = p->unconfirmed.head; j; j = j->next) {
        if (!j->returned && has_id && id.len == strlen(j->message_id) &&
            memcmp(id.bytes, j->message_id, id.len) == 0) {
            j->returned = 1;
            snprintf(j->reason, sizeof(j->reason), "%s", why);
            break;
        }
    }
    amqp_destroy_message(&msg);
    return 0;
}

static int on_frame(notification_pub *p, const amqp_frame_t *f)
{
    if (f->frame_type != AMQP_FRAME_METHOD) {
        return 0;
    }
    char why[240];
    switch (f->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        const amqp_basic_ack_t *m = f->payload.method.decoded;
        settle(p, m->delivery_tag, m->multiple, PX_OK, NULL);
        return 0;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *m = f->payload.method.decoded;
        settle(p, m->delivery_tag, m->multiple, PX_ERETRY, "the broker refused the message (nack)");
        return 0;
    }
    case AMQP_BASIC_RETURN_METHOD:
        return on_return(p, f->channel, f->payload.method.decoded);
    case AMQP_CHANNEL_CLOSE_METHOD: {
        const amqp_channel_close_t *m = f->payload.method.decoded;
        snprintf(why, sizeof(why), "broker closed the channel: %u %.*s", (unsigned)m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        lose_connection(p, why);
        return -1;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        const amqp_connection_close_t *m = f->payload.method.decoded;
        snprintf(why, sizeof(why), "broker closed the connection: %u %.*s",
                 (unsigned)m->reply_code, (int)m->reply_text.len,
                 (const char *)m->reply_text.bytes);
        lose_connection(p, why);
        return -1;
    }
    default:
        return 0; /* connection.blocked and friends: confirms will tell */
    }
}

/* Waits up to wait_ms for broker frames or a wake-up, then handles every frame available.
 * Returns < 0 when the connection was lost. */
static int service(notification_pub *p, int wait_ms)
{
    if (!amqp_frames_enqueued(p->conn) && !amqp_data_in_buffer(p->conn)) {
        struct pollfd fds[2] = {{.fd = amqp_get_sockfd(p->conn), .events = POLLIN},
                                {.fd = p->wake_rd, .events = POLLIN}};
        if (poll(fds, 2, wait_ms) > 0 && fds[1].revents) {
            drain_wake(p);
        }
    }
    /* Even without input, a zero-timeout read lets rabbitmq-c send and check heartbeats. */
    for (;;) {
        amqp_frame_t f;
        struct timeval zero = {0, 0};
        int rc = amqp_simple_wait_frame_noblock(p->conn, &f, &zero);
        if (rc == AMQP_STATUS_TIMEOUT) {
            break;
        }
        if (rc != AMQP_STATUS_OK) {
            lose_connection(p, amqp_error_string2(rc));
            return -1;
        }
        if (on_frame(p, &f) < 0) {
            return -1;
        }
        amqp_maybe_release_buffers(p->conn);
    }
    if (p->unconfirmed.head &&
        now_ms() - p->unconfirmed.head->sent_ms >= (int64_t)p->confirm_timeout_ms) {
        char why[96];
        snprintf(why, sizeof(why), "no confirm from the broker within %u ms",
                 p->confirm_timeout_ms);
        lose_connection(p, why);
        return -1;
    }
    return 0;
}

static void wait_wake(notification_pub *p, int ms)
{
    struct pollfd fd = {.fd = p->wake_rd, .events = POLLIN};
    if (poll(&fd, 1, ms) > 0) {
        drain_wake(p);
    }
}

static void *worker_main(void *arg)
{
    notification_pub *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        int stop = p->stop;
        job_list batch = p->todo;
        p->todo.head = p->todo.tail = NULL;
        pthread_mutex_unlock(&p->lock);
        if (stop) {
            pthread_mutex_lock(&p->lock);
            list_concat(&batch, &p->todo);
            p->todo = batch; /* freed, unfinished, by destroy */
            pthread_mutex_unlock(&p->lock);
            break;
        }
        if (batch.head && ensure_connected(p) < 0) {
            char reason[256];
            snprintf(reason, sizeof(reason), "broker unavailable: %s", p->last_error);
            fail_list(p, &batch, reason);
        }
        int corked = p->tls && batch.head && batch.head->next && p->conn;
        if (corked) {
            cork(p, 1);
        }
        while (batch.head && p->conn) {
            notification_job *j = batch.head;
            batch.head = j->next;
            if (!batch.head) {
                batch.tail = NULL;
            }
            int rc = publish(p, j);
            if (rc == 0 && p->out.len >= OUT_FLUSH_BYTES) {
                rc = write_out(p) < 0 ? -1 : 0;
                if (rc < 0) {
                    fail_list(p, &batch, "connection lost before publishing");
                    break;
                }
            }
            if (rc != 0) {
                char why[160];
                snprintf(why, sizeof(why), "publish: %s", amqp_error_string2(rc));
                finish(p, j, PX_ERETRY, why);
                lose_connection(p, why);
                fail_list(p, &batch, "connection lost before publishing");
            }
        }
        if (corked) {
            cork(p, 0);
        }
        write_out(p);
        flush_finished(p);
        if (p->conn) {
            int wait = IDLE_POLL_MS;
            if (p->unconfirmed.head) {
                int64_t left = p->unconfirmed.head->sent_ms + p->confirm_timeout_ms - now_ms();
                wait = left < 1 ? 0 : left < 200 ? (int)left : 200;
            }
            service(p, wait);
            flush_finished(p);
        } else {
            wait_wake(p, -1);
        }
    }
    /* Close politely when nothing is pending; unconfirmed jobs stay unfinished. */
    pthread_mutex_lock(&p->lock);
    list_concat(&p->todo, &p->unconfirmed);
    pthread_mutex_unlock(&p->lock);
    drop_connection(p, 1);
    notification_frames_free(&p->out);
    list_free(&p->finished);
    return NULL;
}

/* --- Public --------------------------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void free_settings(notification_pub *p)
{
    free(p->host);
    free(p->vhost);
    free(p->user);
    if (p->password) {
        memset(p->password, 0, strlen(p->password));
    }
    free(p->password);
    free(p->ca_cert);
    free(p->exchange);
    free(p->routing_key);
    free(p->queue);
}

int notification_pub_create(const notification_pub_config *cfg, void (*notify)(void *arg),
                            void *arg, notification_pub **out)
{
    notification_pub *p = calloc(1, sizeof(*p));
    if (!p) {
        return -ENOMEM;
    }
    p->host = dup_or_null(cfg->host ? cfg->host : "127.0.0.1");
    p->vhost = dup_or_null(cfg->vhost ? cfg->vhost : "/");
    p->user = dup_or_null(cfg->user ? cfg->user : "guest");
    p->password = dup_or_null(cfg->password ? cfg->password : "guest");
    p->ca_cert = dup_or_null(cfg->ca_cert);
    p->exchange = dup_or_null(cfg->exchange ? cfg->exchange : "");
    p->routing_key = dup_or_null(cfg->routing_key);
    p->queue = dup_or_null(cfg->queue ? cfg->queue : "NotificationQueue");
    p->port = cfg->port ? cfg->port : (cfg->tls ? 5671 : 5672);
    p->tls = cfg->tls;
    p->tls_verify = cfg->tls_verify;
    p->declare = cfg->declare;
    p->heartbeat_s = cfg->heartbeat_s;
    p->connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 5000;
    p->confirm_timeout_ms = cfg->confirm_timeout_ms ? cfg->confirm_timeout_ms : 15000;
    p->backoff_min_ms = cfg->backoff_min_ms ? cfg->backoff_min_ms : 500;
    p->backoff_max_ms = cfg->backoff_max_ms > p->backoff_min_ms ? cfg->backoff_max_ms
                                                                : p->backoff_min_ms;
    p->notify = notify;
    p->notify_arg = arg;
    p->sockfd = -1;
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        int rc = -errno;
        free_settings(p);
        free(p);
        return rc;
    }
    p->wake_rd = fds[0];
    p->wake_wr = fds[1];
    pthread_mutex_init(&p->lock, NULL);
    int rc = pthread_create(&p->thread, NULL, worker_main, p);
    if (rc != 0) {
        pthread_mutex_destroy(&p->lock);
        close(fds[0]);
        close(fds[1]);
        free_settings(p);
        free(p);
        return -rc;
    }
    *out = p;
    return 0;
}

void notification_pub_submit(notification_pub *p, notification_job *jobs)
{
    if (!jobs) {
        return;
    }
    job_list more = {jobs, jobs};
    while (more.tail->next) {
        more.tail = more.tail->next;
    }
    pthread_mutex_lock(&p->lock);
    int was_empty = p->todo.head == NULL;
    list_concat(&p->todo, &more);
    pthread_mutex_unlock(&p->lock);
    if (was_empty) {
        wake(p);
    }
}

notification_job *notification_pub_take(notification_pub *p)
{
    pthread_mutex_lock(&p->lock);
    notification_job *list = p->done.head;
    p->done.head = p->done.tail = NULL;
    p->notified = 0;
    pthread_mutex_unlock(&p->lock);
    return list;
}

void notification_pub_stop(notification_pub *p)
{
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_mutex_unlock(&p->lock);
    wake(p);
}

void notification_pub_destroy(notification_pub *p)
{
    if (!p) {
        return;
    }
    notification_pub_stop(p);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += JOIN_GRACE_MS / 1000;
    if (pthread_timedjoin_np(p->thread, NULL, &until) != 0) {
        /* Stuck in a blocking read or write on a dead peer: break the socket, then wait. */
        pthread_mutex_lock(&p->lock);
        if (p->sockfd >= 0) {
            shutdown(p->sockfd, SHUT_RDWR);
        }
        pthread_mutex_unlock(&p->lock);
        pthread_join(p->thread, NULL);
    }
    list_free(&p->todo);
    list_free(&p->done);
    pthread_mutex_destroy(&p->lock);
    close(p->wake_rd);
    close(p->wake_wr);
    free_settings(p);
    free(p);
}
