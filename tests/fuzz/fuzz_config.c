/* fuzz_config: a config file's text through libconfig and leashd's key table. */
#include "leashd.h"

#include <stdlib.h>
#include <string.h>

struct config      cfg;
struct event_base *base;
int64_t            started_wall;

int daemon_reload(char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    struct config c;
    char          err[512];
    if (config_load_string(&c, text, "fuzz.conf", err, sizeof err) == 0) {
        config_policy(&c, "some-process");
        config_free(&c);
    }
    free(text);
    return 0;
}
