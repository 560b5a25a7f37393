/* fuzz_agent: bytes as they come from an agent socket: framing, then the
   checked decoder, the code that faces every local process. */
#include "decode.h"
#include "frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    for (;;) {
        const uint8_t *msg;
        size_t         len;
        long           n = leash_frame_parse(data + off, size - off, 1 << 20, &msg, &len);
        if (n <= 0)
            break;
        char why[256];
        /* as leashd decodes: into the arena, dropped whole */
        Leash__Agent__AgentMessage *m = agent_decode(msg, len, arena_allocator(), why, sizeof why);
        (void)m;
        arena_reset();
        off += (size_t)n;
    }
    return 0;
}
