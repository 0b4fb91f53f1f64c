/* notification: AMQP 0-9-1 basic.publish frames encoded into a buffer with rabbitmq-c's public
 * encoders (amqp_encode_method, amqp_encode_properties), so a burst of publishes leaves in one
 * write; amqp_basic_publish sends three frames per message, each with its own send(). The bytes
 * are the ones amqp_basic_publish would send: a method frame, a content header frame and the
 * body in frames of at most frame_max bytes. Also used by tests/tools/amqp_tool.c. */
#ifndef PX_NOTIFICATION_FRAMES_H
#define PX_NOTIFICATION_FRAMES_H

#include <stddef.h>
#include <stdint.h>

#include <amqp.h>
#include <amqp_framing.h>

/* A growing byte buffer; zero-initialised is empty. */
typedef struct notification_frames {
    uint8_t *data; /* owned */
    size_t len, cap;
} notification_frames;

/* Appends the frames of one basic.publish of body on channel (immediate = 0). frame_max is the
 * connection's (amqp_get_frame_max). Returns 0, or < 0 when out of memory or the method or
 * properties cannot be encoded (the buffer is then as before). */
int notification_frames_publish(notification_frames *b, amqp_channel_t channel, int frame_max,
                                amqp_bytes_t exchange, amqp_bytes_t routing_key, int mandatory,
                                const amqp_basic_properties_t *props, amqp_bytes_t body);

/* Writes the whole buffer to fd (a connected socket, blocking or not: a full send buffer is
 * waited for with poll, at most timeout_ms per wait) and empties it. Returns 0, or -errno (the
 * connection is then unusable: part of a frame may have left). */
int notification_frames_write(notification_frames *b, int fd, int timeout_ms);

void notification_frames_free(notification_frames *b);

#endif
