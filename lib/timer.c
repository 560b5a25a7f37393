/*
 * timer.c: the one timer thread of the process. It holds the groups that
 * have a deadline of their own in a min-heap and cancels each when its
 * deadline passes; while any LEASH_INTERRUPT group is cancelled, it also
 * signals that group's tasks that are running outside leash, every
 * INTR_PERIOD_NS, since one signal can land just before the syscall starts.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define INTR_PERIOD_NS (2LL * 1000000)

static struct {
    leash__lock_t        mu; /* guards the heap and `started` */
    struct leash_group **heap;
    size_t               n, cap;
    bool                 started;
    _Atomic uint32_t     seq; /* bumped to wake the thread */
} tm = {.mu = LEASH__LOCK_INIT};

static leash__lock_t       intr_mu = LEASH__LOCK_INIT;
static struct leash_group *intr_list;
static pthread_once_t      intr_once = PTHREAD_ONCE_INIT;

int leash__intr_signal(void)
{
    return SIGRTMIN + 5;
}

static void on_intr(int sig)
{
    (void)sig; /* its only work is to make the blocked syscall fail with EINTR */
}

static void intr_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_intr;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: the interrupted call must return */
    sigaction(leash__intr_signal(), &sa, NULL);
}

static bool heap_less(size_t a, size_t b)
{
    return tm.heap[a]->deadline_ns < tm.heap[b]->deadline_ns;
}

static void heap_swap(size_t a, size_t b)
{
    struct leash_group *t = tm.heap[a];
    tm.heap[a] = tm.heap[b];
    tm.heap[b] = t;
    tm.heap[a]->heap_idx = a;
    tm.heap[b]->heap_idx = b;
}

static void heap_up(size_t i)
{
    while (i > 0 && heap_less(i, (i - 1) / 2)) {
        heap_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < tm.n && heap_less(l, m))
            m = l;
        if (r < tm.n && heap_less(r, m))
            m = r;
        if (m == i)
            return;
        heap_swap(i, m);
        i = m;
    }
}

static void heap_del(size_t i)
{
    tm.heap[i]->heap_idx = SIZE_MAX;
    tm.n--;
    if (i == tm.n)
        return;
    tm.heap[i] = tm.heap[tm.n];
    tm.heap[i]->heap_idx = i;
    heap_up(i);
    heap_down(i);
}

/* Signals t if it runs outside leash; level: the shield level at which
   the cancellation that interrupts it reaches (a shield opened since
   keeps it out). */
static void intr_task(leash_task *t, int level, int sig, bool *any)
{
    if (atomic_load_explicit(&t->shield_level, memory_order_relaxed) != level)
        return;
    /* a child still in the pool's queue keeps the sweep going: once a
       worker starts it, it may block in a foreign call too */
    *any = true;
    if (!atomic_load_explicit(&t->started, memory_order_acquire))
        return;
    /* a task parked inside leash has been woken by the cancel */
    if (atomic_load_explicit(&t->op, memory_order_relaxed) == LEASH_OP_NONE)
        pthread_kill(t->thread, sig);
}

_Atomic uint64_t leash__intr_sweeps;

static void intr_sweep(bool *any)
{
    int sig = leash__intr_signal();
    *any = false;
    leash__lock(&intr_mu);
    for (struct leash_group *g = intr_list; g; g = g->inext) {
        if (!atomic_load_explicit(&g->interrupting, memory_order_acquire))
            continue;
        leash__lock(&g->mu);
        if (g->holder) /* a scope: its own task, alive while g is */
            intr_task(g->holder, g->shield_level, sig, any);
        uint64_t listed = 0;
        for (leash_task *t = g->tasks; t; t = t->gnext, listed++)
            intr_task(t, 0, sig, any);
        /* A child counted in but not on the list yet is in the pool's
           queue, or a worker has just taken it and is about to list it.
           Nothing else wakes this thread when it starts, so the sweep goes
           on until every child is on the list: stopping here let a child
           that started just after a sweep block in read(2) for ever. */
        if (leash__group_alive(g) > listed)
            *any = true;
        leash__unlock(&g->mu);
    }
    leash__unlock(&intr_mu);
    atomic_fetch_add_explicit(&leash__intr_sweeps, 1, memory_order_release);
}

static void *timer_main(void *arg)
{
    (void)arg;
    bool interrupting = false;
    for (;;) {
        leash__lock(&tm.mu);
        uint32_t seq = atomic_load_explicit(&tm.seq, memory_order_acquire);
        int64_t  now = leash__now_ns();
        while (tm.n && tm.heap[0]->deadline_ns <= now) {
            struct leash_group *g = tm.heap[0];
            heap_del(0);
            /* under tm.mu: the group cannot be freed meanwhile, since
               freeing takes it out of the heap first */
            leash__cancel(g, ETIMEDOUT);
        }
        int64_t next = tm.n ? tm.heap[0]->deadline_ns : INT64_MAX;
        leash__unlock(&tm.mu);
        int64_t mon = leash__pool_monitor(now);
        if (mon < next)
            next = mon;

        intr_sweep(&interrupting);
        if (interrupting && next > now + INTR_PERIOD_NS)
            next = leash__now_ns() + INTR_PERIOD_NS;
        leash__futex_wait(&tm.seq, seq, next);
    }
    return NULL;
}

/* tm.mu held */
static void start_locked(void)
{
    if (tm.started)
        return;
    tm.started = leash__thread_start(timer_main, NULL, "leash-timer", 0) == 0;
}

static void kick(void)
{
    atomic_fetch_add_explicit(&tm.seq, 1, memory_order_release);
    leash__futex_wake(&tm.seq, 1);
}

void leash__timer_add(struct leash_group *g)
{
    leash__lock(&tm.mu);
    if (tm.n == tm.cap) {
        size_t               cap = tm.cap ? tm.cap * 2 : 64;
        struct leash_group **h = realloc(tm.heap, cap * sizeof *h);
        if (!h) {
            /* without a slot the deadline still holds at every cancellation
               point (they read the clock); only its push to tasks parked
               for ever is lost */
            leash__unlock(&tm.mu);
            return;
        }
        tm.heap = h;
        tm.cap = cap;
    }
    g->heap_idx = tm.n;
    tm.heap[tm.n++] = g;
    heap_up(g->heap_idx);
    start_locked();
    bool top = g->heap_idx == 0;
    leash__unlock(&tm.mu);
    if (top)
        kick();
}

void leash__timer_remove(struct leash_group *g)
{
    leash__lock(&tm.mu);
    if (g->heap_idx != SIZE_MAX)
        heap_del(g->heap_idx);
    leash__unlock(&tm.mu);
}

void leash__intr_register(struct leash_group *g)
{
    pthread_once(&intr_once, intr_install);
    leash__lock(&intr_mu);
    if (!g->in_intr) {
        g->in_intr = true;
        g->iprev = NULL;
        g->inext = intr_list;
        if (intr_list)
            intr_list->iprev = g;
        intr_list = g;
    }
    leash__unlock(&intr_mu);
    leash__lock(&tm.mu);
    start_locked();
    leash__unlock(&tm.mu);
}

void leash__intr_unregister(struct leash_group *g)
{
    leash__lock(&intr_mu);
    if (g->in_intr) {
        g->in_intr = false;
        if (g->iprev)
            g->iprev->inext = g->inext;
        else
            intr_list = g->inext;
        if (g->inext)
            g->inext->iprev = g->iprev;
    }
    leash__unlock(&intr_mu);
}

void leash__intr_kick(void)
{
    kick();
}

void leash__monitor_kick(void)
{
    leash__lock(&tm.mu);
    start_locked();
    leash__unlock(&tm.mu);
    kick();
}

void leash__timer_atfork(int phase)
{
    switch (phase) {
    case LEASH_FORK_PREPARE:
        leash__lock(&tm.mu);
        leash__lock(&intr_mu);
        break;
    case LEASH_FORK_PARENT:
        leash__unlock(&intr_mu);
        leash__unlock(&tm.mu);
        break;
    case LEASH_FORK_CHILD:
        /* the heap's groups are the parent's: the array is kept, emptied;
           the thread starts again with the first deadline */
        tm.mu = (leash__lock_t)LEASH__LOCK_INIT;
        intr_mu = (leash__lock_t)LEASH__LOCK_INIT;
        tm.n = 0;
        tm.started = false;
        intr_list = NULL;
        break;
    }
}
