/*
 * frame.h: the framing both protocols share: a 4-byte big-endian length,
 * then that many bytes of protobuf. Used by libleash's agent, leashd and
 * leashctl alike.
 */
#ifndef LEASH_FRAME_H
#define LEASH_FRAME_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define LEASH_FRAME_HEADER      4
#define LEASH_FRAME_MAX_DEFAULT (1024 * 1024)

static inline void leash_frame_put_len(uint8_t *p, uint32_t n)
{
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
}

static inline uint32_t leash_frame_get_len(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* m packed behind its length, in a malloc'd buffer of *len bytes that the
   caller frees; NULL when memory runs out. */
static inline uint8_t *leash_frame_pack(const ProtobufCMessage *m, size_t *len)
{
    size_t   n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n + LEASH_FRAME_HEADER);
    if (!buf)
        return NULL;
    leash_frame_put_len(buf, (uint32_t)n);
    protobuf_c_message_pack(m, buf + LEASH_FRAME_HEADER);
    *len = n + LEASH_FRAME_HEADER;
    return buf;
}

/*
 * Looks for one whole frame at the start of buf (len bytes). Returns the
 * size of the frame including its header (> 0) and points *msg at the
 * payload and *msg_len at its size; 0 when more bytes are needed; -EMSGSIZE
 * when the frame announces more than max bytes.
 */
static inline long leash_frame_parse(const uint8_t *buf, size_t len, size_t max,
                                     const uint8_t **msg, size_t *msg_len)
{
    if (len < LEASH_FRAME_HEADER)
        return 0;
    uint32_t n = leash_frame_get_len(buf);
    if (n > max)
        return -90; /* -EMSGSIZE */
    if (len - LEASH_FRAME_HEADER < n)
        return 0;
    *msg = buf + LEASH_FRAME_HEADER;
    *msg_len = n;
    return (long)n + LEASH_FRAME_HEADER;
}

#endif
