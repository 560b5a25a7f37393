/* fuzz_registry: a registry memfd as a hostile process may leave it. The
   input is laid over a well-formed registry (so the fuzzer reaches past the
   header checks): its first bytes pick an offset, the rest is written there,
   and the reader must give a sane tree or NULL, never read out of bounds. */
#include "leashd.h"

#include "leash/registry.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define GROUPS_OFF ((uint64_t)LEASH_REG_HEADER_SIZE)
#define TASKS_OFF  (GROUPS_OFF + (uint64_t)LEASH_REG_GROUPS * sizeof(struct leash_reg_group))
#define STRS_OFF   (TASKS_OFF + (uint64_t)LEASH_REG_TASKS * sizeof(struct leash_reg_task))
#define TOTAL_SIZE (STRS_OFF + (uint64_t)LEASH_REG_STRS * LEASH_REG_STRLEN)

static uint8_t *reg, *pristine;

static void well_formed(void)
{
    memset(reg, 0, TOTAL_SIZE);
    struct leash_reg_header *h = (void *)reg;
    h->magic = LEASH_REG_MAGIC;
    h->version = LEASH_REG_VERSION;
    h->header_size = LEASH_REG_HEADER_SIZE;
    h->group_size = sizeof(struct leash_reg_group);
    h->task_size = sizeof(struct leash_reg_task);
    h->ngroups = LEASH_REG_GROUPS;
    h->ntasks = LEASH_REG_TASKS;
    h->nstrs = LEASH_REG_STRS;
    h->strlen_ = LEASH_REG_STRLEN;
    h->groups_off = GROUPS_OFF;
    h->tasks_off = TASKS_OFF;
    h->strs_off = STRS_OFF;
    h->total_size = TOTAL_SIZE;
    h->pid = 42;
    memcpy(h->name, "fuzzed", 7);
    h->groups_used = 2;
    h->tasks_used = 3;
    struct leash_reg_group *g = (void *)(reg + GROUPS_OFF);
    g[0] = (struct leash_reg_group){
        .live = 1, .id = 2, .file = 1, .line = 7, .deadline_ns = INT64_MAX};
    memcpy(g[0].name, "requests", 9);
    g[1] = (struct leash_reg_group){.live = 1, .id = 5, .parent = 2, .deadline_ns = 1000};
    struct leash_reg_task *t = (void *)(reg + TASKS_OFF);
    t[0] = (struct leash_reg_task){.live = 1, .id = 1, .flags = LEASH_REG_ROOT};
    memcpy(t[0].thread, "main", 5);
    t[1] = (struct leash_reg_task){.live = 1,
                                   .id = 3,
                                   .group = 2,
                                   .fn = 2,
                                   .file = 1,
                                   .line = 9,
                                   .op = 2,
                                   .bfile = 1,
                                   .bline = 12};
    memcpy(t[1].obj, "inbox", 6);
    t[2] = (struct leash_reg_task){
        .live = 1, .id = 4, .group = 5, .fn = 2, .flags = LEASH_REG_CRASHED};
    memcpy(reg + STRS_OFF + 1 * LEASH_REG_STRLEN, "server.c", 9);
    memcpy(reg + STRS_OFF + 2 * LEASH_REG_STRLEN, "parse", 6);
    h->crash_seq = 2;
    h->crash_signal = 11;
    h->crash_task = 4;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!reg) {
        if (!(reg = malloc(TOTAL_SIZE)) || !(pristine = malloc(TOTAL_SIZE)))
            abort();
        well_formed();
        memcpy(pristine, reg, TOTAL_SIZE);
    }
    uint64_t off = 0;
    size_t   n = 0;
    if (size >= 4) {
        /* where the bytes go: the header, a slot or the strings */
        uint32_t at;
        memcpy(&at, data, 4);
        data += 4;
        size -= 4;
        off = (uint64_t)at % TOTAL_SIZE;
        n = size > TOTAL_SIZE - off ? TOTAL_SIZE - off : size;
        memcpy(reg + off, data, n);
    }
    struct registry_crash     crash;
    Leash__Control__TaskTree *t =
        registry_read(reg, TOTAL_SIZE, 5000000000LL, 4242, "fuzz", &crash);
    if (t) {
        /* the process is named by leashd, whatever its header says */
        if (t->pid != 4242 || strcmp(t->name, "fuzz") != 0)
            abort();
        /* what leashd does with it next: pack it into the journal */
        size_t   len = leash__control__task_tree__get_packed_size(t);
        uint8_t *buf = malloc(len + 1);
        if (buf)
            leash__control__task_tree__pack(t, buf);
        free(buf);
        if (crash.signal[0] && !strstr(crash.detail, crash.signal))
            abort();
        leash__control__task_tree__free_unpacked(t, NULL);
    }
    /* and a registry too short is refused */
    if (registry_read(reg, TOTAL_SIZE - 1, 0, 4242, "fuzz", &crash))
        abort();
    memcpy(reg + off, pristine + off, n); /* as it was, for the next input */
    return 0;
}
