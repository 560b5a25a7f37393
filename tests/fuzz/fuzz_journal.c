/* fuzz_journal: any bytes as an incident journal read back at start: every
   valid record found, the rest skipped, never a crash or a leak. */
#include "leashd.h"

#include <stdlib.h>

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

static void count(void *arg, Leash__Control__Incident *i, const uint8_t *raw, size_t len)
{
    size_t *bytes = arg;
    *bytes += len;
    /* a record read back packs to a record that reads back the same */
    size_t   n;
    uint8_t *again = journal_pack(i, &n);
    if (again) {
        struct journal_scan s;
        if (journal_scan(again, n, NULL, NULL, &s) != 1 || s.damaged)
            abort();
        free(again);
    }
    (void)raw;
    leash__control__incident__free_unpacked(i, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct journal_scan s;
    size_t              bytes = 0;
    size_t              n = journal_scan(data, size, count, &bytes, &s);
    /* valid records and skipped bytes never add up to more than was read */
    if (bytes + s.skipped > size || s.torn_at > size || (n == 0 && bytes != 0))
        abort();
    return 0;
}
