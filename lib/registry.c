/*
 * registry.c: the process's live groups and tasks in a memfd that leashd
 * reads after the process has died (layout: proto/leash/registry.h).
 *
 * Every write is a plain store into a slot only one thread writes at a time
 * (a task's slot: its spawner, then its worker, then the task itself while
 * it blocks; a group's: its opener, and cancellers for one word), so no path
 * gains a lock or a system call. A task record keeps its slot while it is
 * recycled (records are never freed), so a spawn writes into a line it
 * wrote before. Records made once every slot was taken (a process that had
 * more than LEASH_REG_TASKS tasks alive at once) have none. From then on a
 * record whose task ends gives its slot back to a spare stack, and a record
 * with none takes one from there as its task starts: an idle record holds
 * no slot, so with no more tasks alive than slots every one is in the
 * registry again. Only such a process pays for it: a lock per task start
 * and end. Groups take slots from a free list under leash__groups_mu, which
 * group open and wait hold anyway. Function and file names are static
 * strings: each is copied into the registry once, found again by its address.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

_Static_assert(sizeof(struct leash_reg_group) == 128, "group slot size");
_Static_assert(sizeof(struct leash_reg_task) == 128, "task slot size");
_Static_assert(offsetof(struct leash_reg_task, bfile) == 64, "a spawn writes one line");
_Static_assert(sizeof(struct leash_reg_header) <= LEASH_REG_HEADER_SIZE, "header size");

#define GROUPS_OFF ((uint64_t)LEASH_REG_HEADER_SIZE)
#define TASKS_OFF  (GROUPS_OFF + (uint64_t)LEASH_REG_GROUPS * sizeof(struct leash_reg_group))
#define STRS_OFF   (TASKS_OFF + (uint64_t)LEASH_REG_TASKS * sizeof(struct leash_reg_task))
#define TOTAL_SIZE (STRS_OFF + (uint64_t)LEASH_REG_STRS * LEASH_REG_STRLEN)

struct leash_reg_header *leash__reg;
static int               reg_fd = -1;
static pthread_once_t    reg_once = PTHREAD_ONCE_INIT;

/* the address each string slot was filled from; [0] stays NULL: "none" */
_Atomic(const char *) leash__reg_keys[LEASH_REG_STRS];

/* Task slots given back by records whose task ended, for records that have
   none (under spare_mu). `slotless` counts such records: while it is 0 no
   task end looks further. */
static leash__lock_t    spare_mu = LEASH__LOCK_INIT;
static uint32_t         spare[LEASH_REG_TASKS];
static _Atomic uint32_t nspare;
static _Alignas(64) _Atomic uint32_t slotless;

/* free group slots (under leash__groups_mu) */
static uint32_t gfree[LEASH_REG_GROUPS];
static uint32_t ngfree;

static struct leash_reg_group *groups_at(void)
{
    return (struct leash_reg_group *)((char *)leash__reg + GROUPS_OFF);
}

static struct leash_reg_task *tasks_at(void)
{
    return (struct leash_reg_task *)((char *)leash__reg + TASKS_OFF);
}

static char *str_at(uint32_t i)
{
    return (char *)leash__reg + STRS_OFF + (uint64_t)i * LEASH_REG_STRLEN;
}

static void header_init(struct leash_reg_header *h)
{
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
    h->pid = getpid();
    leash__copy_name(h->name, sizeof h->name, leash__process_name());
}

/* A fresh memfd mapped at want (NULL: anywhere), or NULL. */
static void *map_new(void *want, int *fdp)
{
    int fd = memfd_create("leash-registry", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return NULL;
    /* leashd maps it read-only; a seal keeps its size as leashd saw it */
    if (ftruncate(fd, (off_t)TOTAL_SIZE) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        close(fd);
        return NULL;
    }
    void *p =
        mmap(want, TOTAL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | (want ? MAP_FIXED : 0), fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return NULL;
    }
    *fdp = fd;
    return p;
}

/*
 * The child of a fork must not write into its parent's registry: it gets a
 * memfd of its own at the same address, holding only the forking thread's
 * task (the fork contract: that thread is the child's only task) and no
 * group (groups inherited are dead in the child).
 */
static void reg_atfork_child(void)
{
    leash__gettid_forget();
    if (!leash__reg)
        return;
    int   fd;
    void *tmp = map_new(NULL, &fd);
    if (!tmp) {
        /* keep the address valid for the stores to come, but private */
        if (mmap(leash__reg, TOTAL_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, reg_fd,
                 0) == MAP_FAILED)
            abort();
        close(reg_fd);
        reg_fd = -1;
        return;
    }
    struct leash_reg_header *old = leash__reg;
    memcpy(tmp, old, LEASH_REG_HEADER_SIZE);
    memcpy((char *)tmp + STRS_OFF, (char *)old + STRS_OFF, TOTAL_SIZE - STRS_OFF);
    struct leash_reg_task       *slots = (struct leash_reg_task *)((char *)tmp + TASKS_OFF);
    const struct leash_reg_task *from = tasks_at();
    leash_task                  *self = leash__self_tls;
    for (uint32_t i = 0; i < old->tasks_used && i < LEASH_REG_TASKS; i++) {
        slots[i] = from[i];
        if (!self || self->reg != &tasks_at()[i])
            slots[i].live = 0;
    }
    /* groups_used stays: slots handed out keep their index */
    struct leash_reg_header *h = tmp;
    h->pid = getpid();
    h->groups_over = h->tasks_over = 0;
    h->crash_seq = 0;
    spare_mu = (leash__lock_t)LEASH__LOCK_INIT; /* the spare stack is the parent's, valid here */
    if (mremap(tmp, TOTAL_SIZE, TOTAL_SIZE, MREMAP_MAYMOVE | MREMAP_FIXED, leash__reg) ==
        MAP_FAILED)
        abort();
    close(reg_fd);
    reg_fd = fd;
}

static void reg_start(void)
{
    leash__crash_install();
    leash__leakcheck_install();
    const char *e = getenv("LEASH_REGISTRY");
    if (e && strcmp(e, "off") == 0)
        return; /* no post-mortem tree, and spawning as without it */
    int   fd;
    void *p = map_new(NULL, &fd);
    if (!p)
        return; /* no post-mortem for this process; nothing else changes */
    header_init(p);
    for (uint32_t i = 0; i < LEASH_REG_GROUPS; i++)
        gfree[i] = LEASH_REG_GROUPS - 1 - i;
    ngfree = LEASH_REG_GROUPS;
    reg_fd = fd;
    pthread_atfork(NULL, NULL, reg_atfork_child);
    leash__reg = p;
}

void leash__reg_init(void)
{
    pthread_once(&reg_once, reg_start);
}

int leash__reg_fd(void)
{
    return reg_fd;
}

/* -------------------------------------------------------------- strings */

uint32_t leash__reg_str_slow(const char *s)
{
    uint64_t h = (uint64_t)(uintptr_t)s * 0x9E3779B97F4A7C15ull;
    uint32_t i = (uint32_t)(h >> 53) & (LEASH_REG_STRS - 1);
    for (int probe = 0; probe < 64; probe++, i = (i + 1) & (LEASH_REG_STRS - 1)) {
        if (i == 0)
            continue;
        const char *k = atomic_load_explicit(&leash__reg_keys[i], memory_order_acquire);
        if (k == s)
            return i;
        if (k)
            continue;
        const char *none = NULL;
        if (atomic_compare_exchange_strong_explicit(&leash__reg_keys[i], &none, s,
                                                    memory_order_acq_rel, memory_order_acquire)) {
            leash__copy_name(str_at(i), LEASH_REG_STRLEN, s);
            return i;
        }
        if (none == s)
            return i;
    }
    return 0; /* the table is full: shown as unknown */
}

/* ---------------------------------------------------------------- tasks */

/* Begins and ends an update of a slot: the sequence word is odd between.
   Only the slot's one writer runs these, so plain stores do; the signal
   fences keep the compiler from moving the slot's stores across them (the
   reader is another process, which reads once this one is gone). */
#define SEQ_BEGIN(r)                                                                               \
    do {                                                                                           \
        __atomic_store_n(&(r)->seq, (r)->seq + 1, __ATOMIC_RELAXED);                               \
        atomic_signal_fence(memory_order_seq_cst);                                                 \
    } while (0)
#define SEQ_END(r)                                                                                 \
    do {                                                                                           \
        atomic_signal_fence(memory_order_seq_cst);                                                 \
        __atomic_store_n(&(r)->seq, (r)->seq + 1, __ATOMIC_RELEASE);                               \
    } while (0)
/* A task slot's word comes from its task's id, 2 id + 1 while an update
   is under way and 2 id + 2 once whole: its writers never read the slot,
   whose line another CPU wrote last (that load would stall the spawn). */
#define TSEQ_BEGIN(r, id)                                                                          \
    do {                                                                                           \
        __atomic_store_n(&(r)->seq, ((uint32_t)(id) << 1) | 1, __ATOMIC_RELAXED);                  \
        atomic_signal_fence(memory_order_seq_cst);                                                 \
    } while (0)
#define TSEQ_END(r, id)                                                                            \
    do {                                                                                           \
        atomic_signal_fence(memory_order_seq_cst);                                                 \
        __atomic_store_n(&(r)->seq, ((uint32_t)(id) << 1) + 2, __ATOMIC_RELEASE);                  \
    } while (0)

void leash__reg_task_slot(leash_task *t)
{
    t->reg = NULL;
    if (!leash__reg)
        return;
    uint32_t i = __atomic_fetch_add(&leash__reg->tasks_used, 1, __ATOMIC_RELAXED);
    if (i < LEASH_REG_TASKS) {
        t->reg = &tasks_at()[i];
    } else {
        __atomic_store_n(&leash__reg->tasks_used, LEASH_REG_TASKS, __ATOMIC_RELAXED);
        atomic_fetch_add_explicit(&slotless, 1, memory_order_relaxed);
    }
}

/* A slot from the spare stack for t, which has none; false: none spare. */
static bool take_spare(leash_task *t)
{
    if (!atomic_load_explicit(&nspare, memory_order_relaxed))
        return false;
    leash__lock(&spare_mu);
    uint32_t n = atomic_load_explicit(&nspare, memory_order_relaxed);
    if (n) {
        atomic_store_explicit(&nspare, n - 1, memory_order_relaxed);
        t->reg = &tasks_at()[spare[n - 1]];
        atomic_fetch_sub_explicit(&slotless, 1, memory_order_relaxed);
    }
    leash__unlock(&spare_mu);
    return n != 0;
}

/* t's task has ended and its slot says so: while records without a slot
   exist, the slot goes to the spare stack (every slot is held or spare). */
static void give_spare(leash_task *t)
{
    leash__lock(&spare_mu);
    uint32_t n = atomic_load_explicit(&nspare, memory_order_relaxed);
    if (n < LEASH_REG_TASKS) {
        spare[n] = (uint32_t)(t->reg - tasks_at());
        atomic_store_explicit(&nspare, n + 1, memory_order_relaxed);
        t->reg = NULL;
        atomic_fetch_add_explicit(&slotless, 1, memory_order_relaxed);
    }
    leash__unlock(&spare_mu);
}

void leash__reg_task_live(leash_task *t)
{
    struct leash_reg_task *r = t->reg;
    if (unlikely(!r)) {
        if (!leash__reg)
            return;
        if (!take_spare(t)) {
            __atomic_fetch_add(&leash__reg->tasks_over, 1, __ATOMIC_RELAXED);
            return;
        }
        r = t->reg;
    }
    TSEQ_BEGIN(r, t->id);
    r->id = t->id;
    r->group = t->group ? t->group->id : 0;
    r->fn = t->root ? 0 : leash__reg_str(t->fn_name);
    r->file = leash__reg_str(t->spawn_file);
    r->line = (uint32_t)t->spawn_line;
    r->tid = t->root ? t->tid : 0;
    r->start_ns = t->start_ns;
    r->op = 0;
    r->flags = t->root ? LEASH_REG_ROOT : 0;
    if (t->root)
        memcpy(r->thread, t->thread_name, sizeof r->thread);
    r->live = 1;
    TSEQ_END(r, t->id);
}

void leash__reg_task_dead(leash_task *t)
{
    struct leash_reg_task *r = t->reg;
    if (unlikely(!r)) {
        if (leash__reg)
            __atomic_fetch_sub(&leash__reg->tasks_over, 1, __ATOMIC_RELAXED);
        return;
    }
    TSEQ_BEGIN(r, t->id);
    r->live = 0;
    r->op = 0; /* what the next spawn into this slot need not write */
    r->flags = 0;
    TSEQ_END(r, t->id);
    if (unlikely(atomic_load_explicit(&slotless, memory_order_relaxed) != 0))
        give_spare(t);
}

void leash__reg_blocked(struct leash_reg_task *r, uint64_t id, int op, const char *obj,
                        const char *file, int line, int64_t since)
{
    TSEQ_BEGIN(r, id);
    r->op = (uint32_t)op;
    r->bfile = leash__reg_str(file);
    r->bline = (uint32_t)line;
    r->since_ns = since;
    size_t n = 0;
    if (obj)
        for (; n < sizeof r->obj - 1 && obj[n]; n++)
            r->obj[n] = obj[n];
    r->obj[n] = '\0';
    TSEQ_END(r, id);
}

/* --------------------------------------------------------------- groups */

/* A cancel of the parent can reach g as soon as g is on its parent's
   kids, before g has its slot. g->reg is set and cleared under g->mu, under
   which a cancel sets the cause and marks the slot, so the slot says
   cancelled whichever came first. */
void leash__reg_group_open(struct leash_group *g)
{
    __atomic_store_n(&g->reg, NULL, __ATOMIC_RELAXED);
    if (!leash__reg)
        return;
    if (!ngfree) {
        __atomic_fetch_add(&leash__reg->groups_over, 1, __ATOMIC_RELAXED);
        return;
    }
    uint32_t i = gfree[--ngfree];
    if (i >= leash__reg->groups_used)
        leash__reg->groups_used = i + 1;
    struct leash_reg_group *r = &groups_at()[i];
    SEQ_BEGIN(r);
    r->id = g->id;
    r->parent = g->parent ? g->parent->id : 0;
    r->file = leash__reg_str(g->open_file);
    r->line = (uint32_t)g->open_line;
    r->open_ns = g->open_ns;
    r->deadline_ns = g->deadline_ns;
    __atomic_store_n(&r->cancelled, (uint32_t)atomic_load(&g->cancel_cause), __ATOMIC_RELAXED);
    r->flags = g->flags;
    memcpy(r->name, g->name, sizeof r->name);
    r->live = 1;
    SEQ_END(r);
    leash__lock(&g->mu);
    __atomic_store_n(&g->reg, r, __ATOMIC_RELAXED);
    uint32_t cause = (uint32_t)atomic_load_explicit(&g->cancel_cause, memory_order_relaxed);
    if (cause) /* a cancel that found no slot yet */
        __atomic_store_n(&r->cancelled, cause, __ATOMIC_RELAXED);
    leash__unlock(&g->mu);
}

void leash__reg_group_end(struct leash_reg_group *r)
{
    if (!leash__reg)
        return;
    if (!r) {
        __atomic_fetch_sub(&leash__reg->groups_over, 1, __ATOMIC_RELAXED);
        return;
    }
    SEQ_BEGIN(r);
    r->live = 0;
    SEQ_END(r);
    gfree[ngfree++] = (uint32_t)(r - groups_at());
}

/* ---------------------------------------------------------------- crash */

void leash__reg_crash(int sig, int code, const void *addr, leash_task *t, int tid, int64_t now)
{
    struct leash_reg_header *h = leash__reg;
    if (!h)
        return;
    if (__atomic_load_n(&h->crash_seq, __ATOMIC_RELAXED))
        return; /* the first fatal signal is the cause */
    __atomic_store_n(&h->crash_seq, 1, __ATOMIC_RELAXED);
    atomic_signal_fence(memory_order_seq_cst);
    h->crash_signal = sig;
    h->crash_code = code;
    h->crash_tid = tid;
    h->crash_addr = (uint64_t)(uintptr_t)addr;
    h->crash_task = t ? t->id : 0;
    h->crash_ns = now;
    if (t && t->reg)
        __atomic_fetch_or(&t->reg->flags, LEASH_REG_CRASHED, __ATOMIC_RELAXED);
    atomic_signal_fence(memory_order_seq_cst);
    __atomic_store_n(&h->crash_seq, 2, __ATOMIC_RELEASE);
}

void leash__reg_crash_undo(leash_task *t)
{
    struct leash_reg_header *h = leash__reg;
    if (!h || __atomic_load_n(&h->crash_seq, __ATOMIC_ACQUIRE) != 2)
        return;
    if (t && t->reg && h->crash_task == t->id)
        __atomic_fetch_and(&t->reg->flags, ~(uint32_t)LEASH_REG_CRASHED, __ATOMIC_RELAXED);
    __atomic_store_n(&h->crash_seq, 0, __ATOMIC_RELEASE);
}
