/* decode.h: checked decoding of agent and control messages. */
#ifndef LEASHD_DECODE_H
#define LEASHD_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "leash/agent.pb-c.h"
#include "leash/control.pb-c.h"

/* A checked message, or NULL with the reason in why. alloc is protobuf-c's
   allocator for the message (NULL: malloc); free it with free_unpacked and
   the same allocator, or drop the whole arena it came from. */
Leash__Agent__AgentMessage *agent_decode(const uint8_t *msg, size_t len, ProtobufCAllocator *alloc,
                                         char *why, size_t whylen);

/* A bump allocator for messages that live as long as one read callback:
   unpacking a batch of events costs no malloc or free per field. */
struct arena;
ProtobufCAllocator      *arena_allocator(void);
void                     arena_reset(void);
Leash__Control__Request *control_decode(const uint8_t *msg, size_t len, char *why, size_t whylen);
bool                     report_kind_ok(const char *k);

#endif
