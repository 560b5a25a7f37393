/*
 * pool.c: the cached pool of worker threads that run tasks.
 *
 * Tasks wait in one FIFO queue. The invariant that keeps every queued task
 * from waiting behind tasks that block for ever: the queue never holds more
 * tasks than there are idle, awake workers (`awake`), each of which will pop
 * one. submit() restores it by waking a parked worker, or by making a thread
 * when none is parked; in the steady state a spawn costs a queue push and no
 * syscall while a worker is spinning. Idle workers spin a little, then park
 * on their own futex word; a parked worker retires after RETIRE_NS.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>

#define RETIRE_NS (10LL * 1000000000)

struct worker {
    _Atomic uint32_t word;  /* 0 parked, 1 woken */
    struct worker   *next;  /* parked stack */
    struct worker   *prev;
};

static struct {
    leash__lock_t    mu;
    leash_task      *head, *tail;
    _Atomic unsigned qlen;    /* read unlocked by spinning workers */
    unsigned         awake;   /* idle workers not parked */
    _Atomic unsigned spinning;
    struct worker   *parked;  /* most recently parked first: its cache is warm */
} pool = { .mu = LEASH__LOCK_INIT };

_Atomic uint64_t leash__threads;

static leash_task *pop_locked(void)
{
    leash_task *t = pool.head;
    if (t) {
        pool.head = t->qnext;
        if (!pool.head)
            pool.tail = NULL;
        atomic_store_explicit(&pool.qlen, atomic_load_explicit(&pool.qlen, memory_order_relaxed) - 1,
                              memory_order_relaxed);
        pool.awake--;
    }
    return t;
}

static void run(leash_task *t)
{
    t->thread = pthread_self();
    atomic_store_explicit(&t->started, true, memory_order_release);
    leash__self_tls = t;
    int rc = t->fn(t->arg);
    leash__task_exit(t);
    leash__self_tls = NULL;
    leash__task_done(t, rc);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg; /* on this thread's stack would do, but the waker
                               may still touch it after we retire */
    int spin_max = leash__spin_budget();
    leash__lock(&pool.mu);
    for (;;) {
        leash_task *t = pop_locked();
        if (t) {
            leash__unlock(&pool.mu);
            run(t);
            leash__lock(&pool.mu);
            pool.awake++;
            continue;
        }
        leash__unlock(&pool.mu);

        /* Spin for new work, but let no more workers spin than there are
           other CPUs: spinners steal time from the tasks. */
        if (spin_max && atomic_fetch_add_explicit(&pool.spinning, 1, memory_order_relaxed) <
                            (unsigned)leash__ncpu() - 1) {
            for (int i = 0; i < spin_max; i++) {
                if (atomic_load_explicit(&pool.qlen, memory_order_relaxed))
                    break;
                leash__cpu_relax();
            }
        }
        if (spin_max)
            atomic_fetch_sub_explicit(&pool.spinning, 1, memory_order_relaxed);

        leash__lock(&pool.mu);
        if (pool.head)
            continue;
        pool.awake--;
        atomic_store_explicit(&w->word, 0, memory_order_relaxed);
        w->prev = NULL;
        w->next = pool.parked;
        if (pool.parked)
            pool.parked->prev = w;
        pool.parked = w;
        leash__unlock(&pool.mu);

        int64_t until = leash__now_ns() + RETIRE_NS;
        while (atomic_load_explicit(&w->word, memory_order_acquire) == 0) {
            if (leash__futex_wait(&w->word, 0, until) == -ETIMEDOUT)
                break;
        }
        leash__lock(&pool.mu);
        if (atomic_load_explicit(&w->word, memory_order_acquire) == 0) {
            /* retire: nobody claimed us */
            if (w->prev)
                w->prev->next = w->next;
            else
                pool.parked = w->next;
            if (w->next)
                w->next->prev = w->prev;
            leash__unlock(&pool.mu);
            free(w);
            atomic_fetch_sub_explicit(&leash__threads, 1, memory_order_relaxed);
            return NULL;
        }
        /* woken: the waker counted us in `awake` */
    }
}

int leash__pool_submit(leash_task *t)
{
    t->qnext = NULL;
    leash__lock(&pool.mu);
    if (pool.tail)
        pool.tail->qnext = t;
    else
        pool.head = t;
    pool.tail = t;
    unsigned qlen = atomic_load_explicit(&pool.qlen, memory_order_relaxed) + 1;
    atomic_store_explicit(&pool.qlen, qlen, memory_order_relaxed);
    if (qlen <= pool.awake) {
        leash__unlock(&pool.mu);
        return 0;
    }
    pool.awake++;
    struct worker *w = pool.parked;
    if (w) {
        pool.parked = w->next;
        if (w->next)
            w->next->prev = NULL;
        atomic_store_explicit(&w->word, 1, memory_order_release);
        /* w may not free itself before we wake it: it frees only when its
           word is still 0 under the lock, and we set it under the lock. */
        leash__unlock(&pool.mu);
        leash__futex_wake(&w->word, 1);
        return 0;
    }
    leash__unlock(&pool.mu);

    w = calloc(1, sizeof *w);
    int err = w ? 0 : ENOMEM;
    if (!err) {
        pthread_attr_t attr;
        pthread_t th;
        sigset_t all, old;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        /* workers start with every signal blocked but the interrupt one,
           so the application's signals land on its own threads */
        sigfillset(&all);
        sigdelset(&all, leash__intr_signal());
        pthread_sigmask(SIG_SETMASK, &all, &old);
        err = pthread_create(&th, &attr, worker_main, w);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
        if (!err)
            atomic_fetch_add_explicit(&leash__threads, 1, memory_order_relaxed);
    }
    if (err) {
        free(w);
        /* take t back out of the queue, unless a worker already has it */
        leash__lock(&pool.mu);
        pool.awake--;
        leash_task **pp = &pool.head, *prev = NULL;
        while (*pp && *pp != t) {
            prev = *pp;
            pp = &(*pp)->qnext;
        }
        if (*pp) {
            *pp = t->qnext;
            if (pool.tail == t)
                pool.tail = prev;
            atomic_store_explicit(&pool.qlen,
                                  atomic_load_explicit(&pool.qlen, memory_order_relaxed) - 1,
                                  memory_order_relaxed);
            leash__unlock(&pool.mu);
            return -EAGAIN;
        }
        leash__unlock(&pool.mu);
    }
    return 0;
}
