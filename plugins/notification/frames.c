/* notification: basic.publish frames into a buffer, written at once (see frames.h).
 * A frame: type (1 byte), channel (2), payload size (4), payload, frame-end (0xCE); integers big
 * endian. Method payload: the method number (4 bytes) and its encoded arguments. Content header
 * payload: class (2), weight 0 (2), body size (8) and the encoded property flags and values. */
#include "frames.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define FRAME_OVERHEAD 8 /* header 7 + frame-end 1 */

static int reserve(notification_frames *b, size_t more)
{
    if (b->cap - b->len >= more) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < more) {
        cap *= 2;
    }
    uint8_t *data = realloc(b->data, cap);
    if (!data) {
        return -ENOMEM;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* The frame header at at (room for it is reserved), then payload_len bytes already written after
 * it, then the frame-end. */
static void close_frame(uint8_t *at, int type, amqp_channel_t channel, size_t payload_len)
{
    at[0] = (uint8_t)type;
    put_be(at + 1, channel, 2);
    put_be(at + 3, payload_len, 4);
    at[7 + payload_len] = AMQP_FRAME_END;
}

/* Appends a frame whose payload starts with the prefix bytes and continues with what encode
 * writes (its length returned, or < 0 when it does not fit in the room given). */
static int encoded_frame(notification_frames *b, int type, amqp_channel_t channel,
                         const uint8_t *prefix, size_t prefix_len, size_t max_payload,
                         int (*encode)(const void *what, amqp_bytes_t room), const void *what)
{
    size_t room = 512;
    for (;;) {
        if (room + prefix_len > max_payload) {
            room = max_payload - prefix_len;
        }
        if (reserve(b, room + prefix_len + FRAME_OVERHEAD) < 0) {
            return -ENOMEM;
        }
        uint8_t *at = b->data + b->len;
        memcpy(at + 7, prefix, prefix_len);
        amqp_bytes_t out = {.len = room, .bytes = at + 7 + prefix_len};
        int n = encode(what, out);
        if (n >= 0) {
            close_frame(at, type, channel, prefix_len + (size_t)n);
            b->len += prefix_len + (size_t)n + FRAME_OVERHEAD;
            return 0;
        }
        if (room + prefix_len >= max_payload) {
            return n;
        }
        room *= 4; /* a long shortstr or property: try with more room */
    }
}

static int encode_publish(const void *what, amqp_bytes_t room)
{
    amqp_basic_publish_t m = *(const amqp_basic_publish_t *)what;
    return amqp_encode_method(AMQP_BASIC_PUBLISH_METHOD, &m, room);
}

static int encode_props(const void *what, amqp_bytes_t room)
{
    amqp_basic_properties_t props = *(const amqp_basic_properties_t *)what;
    return amqp_encode_properties(AMQP_BASIC_CLASS, &props, room);
}

int notification_frames_publish(notification_frames *b, amqp_channel_t channel, int frame_max,
                                amqp_bytes_t exchange, amqp_bytes_t routing_key, int mandatory,
                                const amqp_basic_properties_t *props, amqp_bytes_t body)
{
    if (frame_max < AMQP_FRAME_MIN_SIZE) {
        frame_max = AMQP_FRAME_MIN_SIZE;
    }
    size_t max_payload = (size_t)frame_max - FRAME_OVERHEAD;
    size_t start = b->len;
    amqp_basic_publish_t m = {
        .ticket = 0,
        .exchange = exchange,
        .routing_key = routing_key,
        .mandatory = mandatory ? 1 : 0,
        .immediate = 0,
    };
    uint8_t method[4];
    put_be(method, AMQP_BASIC_PUBLISH_METHOD, 4);
    int rc = encoded_frame(b, AMQP_FRAME_METHOD, channel, method, sizeof(method), max_payload,
                           encode_publish, &m);
    if (rc == 0) {
        uint8_t head[12];
        put_be(head, AMQP_BASIC_CLASS, 2);
        put_be(head + 2, 0, 2);
        put_be(head + 4, body.len, 8);
        rc = encoded_frame(b, AMQP_FRAME_HEADER, channel, head, sizeof(head), max_payload,
                           encode_props, props);
    }
    if (rc == 0 && body.len > 0) {
        size_t frames = (body.len + max_payload - 1) / max_payload;
        rc = reserve(b, body.len + frames * FRAME_OVERHEAD);
        for (size_t off = 0; rc == 0 && off < body.len; off += max_payload) {
            size_t n = body.len - off < max_payload ? body.len - off : max_payload;
            uint8_t *at = b->data + b->len;
            memcpy(at + 7, (const uint8_t *)body.bytes + off, n);
            close_frame(at, AMQP_FRAME_BODY, channel, n);
            b->len += n + FRAME_OVERHEAD;
        }
    }
    if (rc < 0) {
        b->len = start;
    }
    return rc;
}

int notification_frames_write(notification_frames *b, int fd, int timeout_ms)
{
    size_t off = 0;
    int rc = 0;
    while (off < b->len) {
        ssize_t n = send(fd, b->data + off, b->len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            int r = poll(&pfd, 1, timeout_ms);
            if (r > 0 || (r < 0 && errno == EINTR)) {
                continue;
            }
            rc = r == 0 ? -ETIMEDOUT : -errno;
            break;
        }
        rc = n < 0 ? -errno : -EPIPE;
        break;
    }
    b->len = 0;
    return rc;
}

void notification_frames_free(notification_frames *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}
