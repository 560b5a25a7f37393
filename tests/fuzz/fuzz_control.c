/* fuzz_control: one control request, as leashctl (or anyone) sends it. */
#include "decode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                     why[256];
    Leash__Control__Request *r = control_decode(data, size, why, sizeof why);
    if (r)
        leash__control__request__free_unpacked(r, NULL);
    return 0;
}
