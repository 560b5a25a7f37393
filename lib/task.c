/* task.c: task records, root tasks, parking and the per-task list of held locks. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

_Thread_local leash_task *leash__self_tls;

static _Atomic uint64_t next_id = 1;

uint64_t leash__next_id(void)
{
    return atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
}

/*
 * Task records are recycled, never freed (see internal.h). Each thread keeps
 * a small cache; whole batches move to and from one global list, so a
 * spawner that only allocates and a worker that only frees meet on the
 * global lock once per BATCH tasks rather than once per task.
 */
#define BATCH 32

static leash__lock_t free_mu = LEASH__LOCK_INIT;
static leash_task   *free_batches; /* lists of BATCH records, chained by gprev */
/* Every record ever made (by all_next): the ones in the caches of threads
   that a fork left behind stay reachable in the child, so that a leak
   checker there does not count them lost. */
static leash_task *all_records;

static _Thread_local leash_task *cache;
static _Thread_local int         ncache;

static leash_task *take_batch(void)
{
    leash__lock(&free_mu);
    leash_task *b = free_batches;
    if (b)
        free_batches = b->gprev;
    leash__unlock(&free_mu);
    return b;
}

static void give_batch(leash_task *b, int n)
{
    b->batch_n = n;
    leash__lock(&free_mu);
    b->gprev = free_batches;
    free_batches = b;
    leash__unlock(&free_mu);
}

leash_task *leash__task_alloc(void)
{
    leash_task *t = cache;
    /* (the batch's count is in its head: walking the list to count it
       took a cache miss per record, as a worker's CPU freed each) */
    if (!t && (t = cache = take_batch()) != NULL)
        ncache = t->batch_n;
    if (t) {
        cache = t->qnext;
        ncache--;
        if (cache) /* in while the caller fills this one in */
            __builtin_prefetch(cache, 1);
    } else {
        t = aligned_alloc(64, sizeof *t); /* two lines for the spawner's fields */
        if (!t)
            return NULL;
        memset(t, 0, sizeof *t);
        t->wake_fd = -1;
        leash__reg_task_slot(t);
        leash__lock(&free_mu);
        t->all_next = all_records;
        all_records = t;
        leash__unlock(&free_mu);
    }
    /* the first two lines only: leash__task_free reset the rest (and
       a new record was zeroed) */
    t->id = leash__next_id();
    t->fn_name = NULL;
    t->altstack = NULL;
    t->spawn_file = NULL;
    t->spawn_line = 0;
    t->fn = NULL;
    t->arg = NULL;
    t->group = NULL;
    t->gnext = t->gprev = t->qnext = NULL;
    t->root = false;
    atomic_store_explicit(&t->tid, 0, memory_order_relaxed);
    t->first_on_thread = false;
    atomic_store_explicit(&t->stop, false, memory_order_relaxed);
    atomic_store_explicit(&t->started, false, memory_order_relaxed);
    t->start_ns = leash__coarse_ns();
    return t;
}

void leash__task_free(leash_task *t)
{
    /* hold nodes that overflowed the cache were malloc'd */
    for (struct leash_hold *h = t->hold_free, *n; h; h = n) {
        n = h->tnext;
        if (h < t->hold_cache ||
            h >= t->hold_cache + sizeof t->hold_cache / sizeof t->hold_cache[0])
            free(h);
    }
    /* what leash__task_alloc does not write, as a new record has it */
    t->thread_name[0] = '\0';
    atomic_store_explicit(&t->op, LEASH_OP_NONE, memory_order_relaxed);
    t->opened = NULL;
    t->scope = NULL;
    t->fork_scope = NULL;
    atomic_store_explicit(&t->shield_level, 0, memory_order_relaxed);
    t->holds = NULL;
    t->hold_free = NULL;
    t->hold_cache_used = 0; /* the cache's nodes are handed out as needed: a
                               task that takes no lock never touches them */
    atomic_store_explicit(&t->waiting_for, NULL, memory_order_relaxed);
    t->qnext = cache;
    cache = t;
    if (++ncache == 2 * BATCH) {
        /* keep one batch here, hand the older one on */
        leash_task *b = cache;
        for (int i = 1; i < BATCH; i++)
            b = b->qnext;
        leash_task *rest = b->qnext;
        b->qnext = NULL;
        give_batch(rest, BATCH);
        ncache = BATCH;
    }
}

void leash__task_cache_flush(void)
{
    if (cache)
        give_batch(cache, ncache);
    cache = NULL;
    ncache = 0;
}

/* ------------------------------------------------------------ root tasks */

leash__lock_t leash__roots_mu = LEASH__LOCK_INIT;
leash_task   *leash__roots;

static pthread_key_t  root_key;
static pthread_once_t root_once = PTHREAD_ONCE_INIT;

/* Takes root task t off the list of root tasks, and says so to the agent. */
static void roots_unlink(leash_task *t)
{
    leash__lock(&leash__roots_mu);
    if (t->gprev)
        t->gprev->gnext = t->gnext;
    else
        leash__roots = t->gnext;
    if (t->gnext)
        t->gnext->gprev = t->gprev;
    leash__unlock(&leash__roots_mu);
    leash__agent_roots_changed();
}

static void root_exit(void *p)
{
    leash_task *t = p;
    leash__self_tls = t;
    leash__task_exit(t);
    roots_unlink(t);
    leash__self_tls = NULL;
    leash__altstack_off(t->altstack);
    leash__reg_task_dead(t);
    leash__task_free(t);
    leash__task_cache_flush(); /* the thread is going: its cache too */
}

static void root_key_init(void)
{
    pthread_key_create(&root_key, root_exit);
    leash__fork_init();
}

leash_task *leash__self_slow(void)
{
    pthread_once(&root_once, root_key_init);
    leash__reg_init();
    leash_task *t = leash__task_alloc();
    if (!t)
        return NULL;
    t->root = true;
    t->thread = pthread_self();
    atomic_store_explicit(&t->tid, leash__gettid(), memory_order_relaxed);
    t->altstack = leash__altstack_on();
    atomic_store_explicit(&t->started, true, memory_order_release);
    if (pthread_getname_np(t->thread, t->thread_name, sizeof t->thread_name) != 0 ||
        !t->thread_name[0])
        strcpy(t->thread_name, "thread");
    t->fn_name = t->thread_name;
    leash__reg_task_live(t);
    leash__lock(&leash__roots_mu);
    t->gnext = leash__roots;
    if (leash__roots)
        leash__roots->gprev = t;
    leash__roots = t;
    leash__unlock(&leash__roots_mu);
    leash__agent_roots_changed();
    pthread_setspecific(root_key, t);
    leash__self_tls = t;
    /* after the root is listed: the agent's first snapshot (its Hello)
       shows the thread that started it, and needs no Resync for it */
    leash__agent_init();
    return t;
}

void leash__task_exit(leash_task *t)
{
    while (t->opened) {
        struct leash_group *g = t->opened;
        if (leash__dead(g)) {
            leash__group_forget(g, t); /* inherited across a fork */
            continue;
        }
        leash__report("unwaited_group", t, g,
                      "task %llu (%s) returned with group %llu \"%s\" (opened at %s:%d) still "
                      "open: cancelled and waited for",
                      (unsigned long long)t->id, t->fn_name, (unsigned long long)g->id, g->name,
                      g->open_file ? g->open_file : "?", g->open_line);
        leash__cancel(g, ECANCELED);
        leash__group_wait(g, t, g->open_file, g->open_line);
    }
    leash__scopes_exit(t);
    if (t->holds)
        leash__abandon_holds(t);
}

void leash__task_forked_done(leash_task *t)
{
    leash__reg_task_dead(t);
    roots_unlink(t);
    leash__task_free(t);
}

void leash__task_atfork(int phase)
{
    switch (phase) {
    case LEASH_FORK_PREPARE:
        leash__lock(&leash__roots_mu);
        leash__lock(&free_mu);
        break;
    case LEASH_FORK_PARENT:
        leash__unlock(&free_mu);
        leash__unlock(&leash__roots_mu);
        break;
    case LEASH_FORK_CHILD: {
        free_mu = (leash__lock_t)LEASH__LOCK_INIT;
        leash__roots_mu = (leash__lock_t)LEASH__LOCK_INIT;
        if (leash__roots)
            leash__fork_kept[LEASH_KEPT_ROOTS] = leash__roots;
        leash__roots = NULL;
        leash_task *self = leash__self_tls;
        if (!self)
            break;
        /* the forking thread is the child's only task: listed with the
           root tasks, in no group and no scope, cancelled by nothing */
        self->group = NULL;
        self->fork_scope = self->scope;
        self->scope = NULL;
        atomic_store_explicit(&self->shield_level, 0, memory_order_relaxed);
        atomic_store_explicit(&self->stop, false, memory_order_relaxed);
        self->gprev = self->gnext = NULL;
        leash__roots = self;
        break;
    }
    }
}

uint64_t leash_task_id(void)
{
    leash_task *t = leash__self();
    return t ? t->id : 0;
}

/* ---------------------------------------------------------------- parking */

/*
 * wake and park form a Dekker pair: the waker bumps `wake` then reads
 * `sleeping`, the parker sets `sleeping` then reads `wake`. With both
 * sequentially consistent, at least one side sees the other, so a wake-up is
 * never lost and the futex syscall is made only when the parker sleeps.
 */
void leash__wake(leash_task *t)
{
    atomic_fetch_add_explicit(&t->wake, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&t->sleeping, memory_order_seq_cst))
        leash__futex_wake(&t->wake, 1);
    if (atomic_load_explicit(&t->in_poll, memory_order_seq_cst)) {
        uint64_t one = 1;
        ssize_t  r = write(t->wake_fd, &one, sizeof one);
        (void)r;
    }
}

void leash__park(leash_task *t, uint32_t seq, int64_t abs_ns)
{
    atomic_store_explicit(&t->sleeping, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&t->wake, memory_order_seq_cst) == seq) {
        leash__pool_park_begin(t);
        leash__futex_wait(&t->wake, seq, abs_ns);
        leash__pool_park_end(t);
    }
    atomic_store_explicit(&t->sleeping, 0, memory_order_relaxed);
}

/*
 * Spinning pays only while the thread waited for runs on another CPU. When
 * more threads are runnable than there are CPUs, a spinner takes the CPU
 * from the very thread it waits for, so the budget drops to 0. That count is
 * read from the kernel, not guessed: the fourth field of /proc/loadavg
 * ("runnable/total") is the number of runnable threads of the whole machine
 * at that instant. It is sampled at most every LOAD_SAMPLE_NS, by whichever
 * caller finds the sample stale (one pread of a kept descriptor, ~1 us).
 */
#define LOAD_SAMPLE_NS (10LL * 1000 * 1000)

static _Atomic int64_t load_at = INT64_MIN / 2;
static _Atomic int     load_fd = -1; /* -2: not readable, spin as if idle */
static _Atomic int     oversubscribed;

static void load_sample(void)
{
    int fd = atomic_load_explicit(&load_fd, memory_order_acquire);
    if (fd == -1) {
        int nfd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
        int want = nfd >= 0 ? nfd : -2;
        if (atomic_compare_exchange_strong(&load_fd, &fd, want))
            fd = want;
        else if (nfd >= 0)
            close(nfd);
    }
    if (fd < 0)
        return;
    char    buf[128];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return;
    buf[n] = '\0';
    double a, b, c;
    int    runnable;
    if (sscanf(buf, "%lf %lf %lf %d/", &a, &b, &c, &runnable) == 4)
        atomic_store_explicit(&oversubscribed, runnable > leash__ncpu(), memory_order_relaxed);
}

int leash__spin_budget(void)
{
    if (leash__ncpu() <= 1)
        return 0;
    int64_t now = leash__coarse_ns(), at = atomic_load_explicit(&load_at, memory_order_relaxed);
    if (now - at >= LOAD_SAMPLE_NS &&
        atomic_compare_exchange_strong_explicit(&load_at, &at, now, memory_order_relaxed,
                                                memory_order_relaxed))
        load_sample();
    return atomic_load_explicit(&oversubscribed, memory_order_relaxed) ? 0 : 2000;
}

/* ------------------------------------------------------------- held locks */

struct leash_hold *leash__hold_new(leash_task *t)
{
    if (t->hold_cache_used < sizeof t->hold_cache / sizeof t->hold_cache[0])
        return &t->hold_cache[t->hold_cache_used++];
    return malloc(sizeof(struct leash_hold));
}

struct leash_hold *leash__hold_find(leash_task *t, const void *lock)
{
    for (struct leash_hold *h = t->holds; h; h = h->tnext)
        if (h->lock == lock)
            return h;
    return NULL;
}

const char *leash__op_name(int op)
{
    static const char *const names[] = {
        [LEASH_OP_NONE] = "running",
        [LEASH_OP_CHAN_SEND] = "chan_send",
        [LEASH_OP_CHAN_RECV] = "chan_recv",
        [LEASH_OP_SELECT] = "select",
        [LEASH_OP_MUTEX] = "mutex",
        [LEASH_OP_RWLOCK_RD] = "rwlock_rd",
        [LEASH_OP_RWLOCK_WR] = "rwlock_wr",
        [LEASH_OP_SLEEP] = "sleep",
        [LEASH_OP_FDWAIT] = "fdwait",
        [LEASH_OP_GROUP_WAIT] = "group_wait",
        [LEASH_OP_GO] = "go",
    };
    if (op < 0 || (size_t)op >= sizeof names / sizeof names[0])
        return "?";
    return names[op];
}
