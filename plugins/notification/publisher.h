/* notification: the RabbitMQ publisher. rabbitmq-c blocks, so one worker thread owns the AMQP
 * connection: it connects lazily when the first job arrives, declares the queue, turns on
 * publisher confirms, publishes jobs (persistent, mandatory), and finishes each job only when the
 * broker acknowledges it (basic.ack: PX_OK) or cannot (nack, unroutable return, confirm timeout,
 * connection lost: PX_ERETRY). After a failed connect it waits with exponential backoff, and jobs
 * that arrive meanwhile fail at once with PX_ERETRY. Finished jobs are collected in a list and
 * announced through `notify`, which runs on the worker thread and must only hand over (e.g. with
 * the host's post); the loop thread then takes them with px_nq_pub_take. */
#ifndef PX_NOTIFICATION_PUBLISHER_H
#define PX_NOTIFICATION_PUBLISHER_H

#include <stddef.h>
#include <stdint.h>

typedef struct px_nq_pub px_nq_pub;

/* Connection and publishing settings; every string is borrowed by px_nq_pub_create (copied). */
typedef struct px_nq_pub_config {
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
} px_nq_pub_config;

enum px_nq_state { PX_NQ_STATE_SAME = 0, PX_NQ_STATE_UP = 1, PX_NQ_STATE_DOWN = 2 };

/* A message to publish, and later its result. A job whose tag is NULL is a record from the worker
 * for the loop to log (level, reason) and, when state is not PX_NQ_STATE_SAME, a change of the
 * connection state. */
typedef struct px_nq_job {
    struct px_nq_job *next;
    void *tag;        /* the caller's (e.g. a delivery), returned untouched; NULL = log record */
    char *body;       /* len bytes, in the job's own allocation */
    size_t len;
    char message_id[128];
    int status;       /* result: PX_OK or PX_ERETRY */
    int level;        /* log records: a px_log_level */
    int state;        /* log records: enum px_nq_state */
    char reason[256]; /* result or log text */
    /* Worker bookkeeping. */
    uint64_t seq;
    int64_t sent_ms;
    int returned;
} px_nq_job;

/* Starts the worker thread (it connects only when the first job comes). notify(arg) runs on the
 * worker thread whenever finished jobs become available after a take. On success returns 0 and
 * stores the publisher in *out (owned by caller; px_nq_pub_destroy); < 0 on failure (no thread). */
int px_nq_pub_create(const px_nq_pub_config *cfg, void (*notify)(void *arg), void *arg,
                     px_nq_pub **out);

/* Queues jobs (a list linked by next; steals every job) for publishing, in order, with one
 * wake-up of the worker. Any thread; never blocks on the network. NULL is a no-op. */
void px_nq_pub_submit(px_nq_pub *p, px_nq_job *jobs);

/* Takes the finished jobs and log records, oldest first (a list linked by next; owned by the
 * caller, free each with px_nq_job_free), or NULL. Re-arms notify. */
px_nq_job *px_nq_pub_take(px_nq_pub *p);

/* Asks the worker to close the connection and end; returns at once. Jobs not yet finished are
 * then never finished (px_nq_pub_destroy frees them). */
void px_nq_pub_stop(px_nq_pub *p);

/* Stops the worker, joins it (a connection stuck in a blocking call is shut down after a grace
 * period) and frees everything, including unfinished and untaken jobs, whose tags are dropped.
 * NULL is a no-op. */
void px_nq_pub_destroy(px_nq_pub *p);

/* A new job for tag (borrowed pointer, returned as is) with room for a len-byte body, which the
 * caller writes into job->body; one allocation. NULL when out of memory. */
px_nq_job *px_nq_job_create(void *tag, size_t len, const char *message_id);
void px_nq_job_free(px_nq_job *job);

#endif
