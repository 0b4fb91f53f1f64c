/* notification: the RabbitMQ publisher. rabbitmq-c blocks, so one worker thread owns the AMQP
 * connection: it connects lazily when the first job arrives, declares the queue, turns on
 * publisher confirms, publishes jobs (persistent, mandatory), and finishes each job only when the
 * broker acknowledges it (basic.ack: PX_OK) or cannot (nack, unroutable return, confirm timeout,
 * connection lost: PX_ERETRY). After a failed connect it waits with exponential backoff, and jobs
 * that arrive meanwhile fail at once with PX_ERETRY. Finished jobs are collected in a list and
 * announced through `notify`, which runs on the worker thread and must only hand over (e.g. with
 * the host's post); the loop thread then takes them with notification_pub_take. */
#ifndef PX_NOTIFICATION_PUBLISHER_H
#define PX_NOTIFICATION_PUBLISHER_H

#include <stddef.h>
#include <stdint.h>

typedef struct notification_pub notification_pub;

/* Connection and publishing settings; every string is borrowed by notification_pub_create
 * (copied). */
typedef struct notification_pub_config {
    const char *host;
    int port;
    const char *vhost, *user, *password;
    int tls, tls_verify;
    const char *ca_cert;     /* PEM file, or NULL for the system's */
    const char *exchange;    /* "" = the default exchange */
    const char *routing_key; /* NULL = queue */
    const char *queue;       /* declared durable when declare is set */
    int declare;
    int heartbeat_s; /* 0 = none */
    uint32_t connect_timeout_ms, confirm_timeout_ms, backoff_min_ms, backoff_max_ms;
} notification_pub_config;

enum notification_state {
    NOTIFICATION_STATE_SAME = 0,
    NOTIFICATION_STATE_UP = 1,
    NOTIFICATION_STATE_DOWN = 2
};

/* A message to publish, and later its result. A job whose tag is NULL is a record from the worker
 * for the loop to log (level, reason) and, when state is not NOTIFICATION_STATE_SAME, a change of
 * the connection state. */
typedef struct notification_job {
    struct notification_job *next;
    void *tag;        /* the caller's (e.g. a delivery), returned untouched; NULL = log record */
    char *body;       /* len bytes, in the job's own allocation */
    size_t len;
    char message_id[128];
    int status;       /* result: PX_OK or PX_ERETRY */
    int level;        /* log records: a px_log_level */
    int state;        /* log records: enum notification_state */
    char reason[256]; /* result or log text */
    /* Worker bookkeeping. */
    uint64_t seq;
    int64_t sent_ms;
    int returned;
} notification_job;

/* Starts the worker thread (it connects only when the first job comes). notify(arg) runs on the
 * worker thread whenever finished jobs become available after a take. On success returns 0 and
 * stores the publisher in *out (owned by caller; notification_pub_destroy); < 0 on failure (no
 * thread). */
int notification_pub_create(const notification_pub_config *cfg, void (*notify)(void *arg),
                            void *arg, notification_pub **out);

/* Queues jobs (a list linked by next; steals every job) for publishing, in order, with one
 * wake-up of the worker. Any thread; never blocks on the network. NULL is a no-op. */
void notification_pub_submit(notification_pub *p, notification_job *jobs);

/* Takes the finished jobs and log records, oldest first (a list linked by next; owned by the
 * caller, free each with notification_job_free), or NULL. Re-arms notify. */
notification_job *notification_pub_take(notification_pub *p);

/* Asks the worker to close the connection and end; returns at once. Jobs not yet finished are
 * then never finished (notification_pub_destroy frees them). */
void notification_pub_stop(notification_pub *p);

/* Stops the worker, joins it (a connection stuck in a blocking call is shut down after a grace
 * period) and frees everything, including unfinished and untaken jobs, whose tags are dropped.
 * NULL is a no-op. */
void notification_pub_destroy(notification_pub *p);

/* A new job for tag (borrowed pointer, returned as is) with room for a len-byte body, which the
 * caller writes into job->body; one allocation. NULL when out of memory. */
notification_job *notification_job_create(void *tag, size_t len, const char *message_id);
void notification_job_free(notification_job *job);

#endif
