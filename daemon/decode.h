/* decode.h: checked decoding of agent and control messages. */
#ifndef LEASHD_DECODE_H
#define LEASHD_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "leash/agent.pb-c.h"
#include "leash/control.pb-c.h"

/* A checked message (free with its free_unpacked), or NULL with the reason in why. */
Leash__Agent__AgentMessage *agent_decode(const uint8_t *msg, size_t len, char *why, size_t whylen);
Leash__Control__Request *control_decode(const uint8_t *msg, size_t len, char *why, size_t whylen);
bool                     report_kind_ok(const char *k);

#endif
