/*
 * pool.c: the cached pool of worker threads that run tasks.
 *
 * Tasks wait in one FIFO queue. Workers that are idle and awake (`awake`:
 * spinning on the queue, or woken and on their way) pop from it; a spawn
 * wakes a parked worker, or makes a thread, only when no worker is awake and
 * fewer workers run tasks than there are CPUs. So a burst of spawns is
 * drained by the workers already running, with no syscall per task.
 *
 * A worker takes the whole queue at once when it finds more than one task
 * there: the first to run, the rest as its batch. Taking one task at a time,
 * a worker that keeps pace with a spawning loop met the spawner on the
 * queue's lock for every task, and the loop ran at a sixth of its speed. A
 * batch is the worker's, under its own lock; it is still queued, and a dump
 * (which takes every batch's lock with the queue's) finds it there. Its tasks
 * go on their groups' lists one by one as the worker runs them. An idle
 * worker takes the older half of another's batch (Go's runqsteal), and a
 * batch goes back to the queue when the task running ahead of it parks
 * inside leash, or when the monitor finds its worker has started no task
 * for MONITOR_NS.
 *
 * A queued task must never wait for ever behind tasks that block, so:
 * - a task that parks inside leash (leash__park) stops counting as running,
 *   and wakes a worker if the queue needs one;
 * - the timer thread, while the queue is not empty, checks every
 *   MONITOR_NS that it moves; if it has not, it adds a worker (a task can
 *   spin, or block in a foreign call, without leash knowing).
 * Idle workers spin a little, then park on their own futex word; a parked
 * worker retires after RETIRE_NS.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>

#define RETIRE_NS      (10LL * 1000000000)
#define STEAL_DELAY_NS 3000 /* see worker_main */
#define TAKE_NOW       32   /* a queue this long is taken at once */
#define POLL_EVERY     32   /* pauses between a spinner's looks at the queue */

struct worker {
    _Atomic uint32_t word; /* 0 parked, 1 woken */
    struct worker   *next; /* parked stack */
    struct worker   *prev;
    struct worker   *anext, *aprev; /* every worker (pool.all) */
    /* its batch: queued tasks, chained by qnext; under bmu (batch is read
       unlocked only by its own worker, to skip the lock when empty) */
    leash__lock_t       bmu;
    leash_task *_Atomic batch;
    leash_task         *btail;
    unsigned            nbatch;
    _Atomic uint64_t    began;     /* tasks started from worker_main */
    uint64_t            mon_began; /* the monitor's last look (under pool.mu) */
    int64_t             mon_since;
};

static _Thread_local struct worker *me; /* this thread's, if it is a worker */

static struct {
    leash__lock_t    mu;
    leash_task      *head, *tail;
    _Atomic unsigned qlen;    /* read unlocked by spinning workers and the monitor */
    _Atomic unsigned batched; /* workers with a batch */
    _Atomic unsigned awake;   /* idle workers not parked (written under mu) */
    _Atomic unsigned running; /* workers running a task that is not parked in leash */
    _Atomic unsigned spinning;
    _Atomic uint64_t pops;       /* progress, for the monitor */
    _Atomic int      monitoring; /* the timer thread checks the queue every MONITOR_NS */
    struct worker   *parked;     /* most recently parked first: its cache is warm */
    struct worker   *all;        /* every worker, so that none is lost to a fork */
} pool = {.mu = LEASH__LOCK_INIT};

_Atomic uint64_t leash__threads;

static unsigned rd(_Atomic unsigned *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void add(_Atomic unsigned *v, int d)
{
    atomic_fetch_add_explicit(v, (unsigned)d, memory_order_relaxed);
}

static leash_task *pop_locked(void)
{
    leash_task *t = pool.head;
    if (t) {
        pool.head = t->qnext;
        if (!pool.head)
            pool.tail = NULL;
        add(&pool.qlen, -1);
        atomic_fetch_add_explicit(&pool.pops, 1, memory_order_relaxed);
    }
    return t;
}

/* A worker's batch is empty now (its bmu held). seq_cst: a batch given back
   to the queue adds to qlen first, and the monitor, which reads `batched`
   then qlen, must not see the batch gone and the queue still empty. */
static void batch_ended(void)
{
    atomic_fetch_sub_explicit(&pool.batched, 1, memory_order_seq_cst);
}

/* Sets w's batch (w->bmu held; it had none). */
static void batch_set(struct worker *w, leash_task *first, leash_task *last, unsigned n)
{
    last->qnext = NULL;
    atomic_store_explicit(&w->batch, first, memory_order_relaxed);
    w->btail = last;
    w->nbatch = n;
    w->mon_since = 0; /* a new batch: the monitor's watch starts over (mu held) */
    /* seq_cst: pairs with the monitor's clearing `monitoring`, then
       reading this */
    atomic_fetch_add_explicit(&pool.batched, 1, memory_order_seq_cst);
}

/* Takes w's whole batch back to the head of the queue: its tasks are the
   oldest there (mu held). */
static bool batch_give_back_locked(struct worker *w)
{
    leash__lock(&w->bmu);
    leash_task *first = atomic_load_explicit(&w->batch, memory_order_relaxed);
    if (first) {
        w->btail->qnext = pool.head;
        if (!pool.head)
            pool.tail = w->btail;
        pool.head = first;
        atomic_fetch_add_explicit(&pool.qlen, w->nbatch, memory_order_seq_cst);
        atomic_store_explicit(&w->batch, NULL, memory_order_relaxed);
        w->nbatch = 0;
        batch_ended();
    }
    leash__unlock(&w->bmu);
    return first != NULL;
}

/* For an idle worker w: the older half of another worker's batch, the first
   of it to run now, the rest as w's batch (mu held). */
static leash_task *steal_locked(struct worker *w)
{
    for (struct worker *v = pool.all; v; v = v->anext) {
        if (v == w || !atomic_load_explicit(&v->batch, memory_order_relaxed))
            continue;
        leash__lock(&v->bmu);
        leash_task *first = atomic_load_explicit(&v->batch, memory_order_relaxed), *last = first;
        unsigned    m = (v->nbatch + 1) / 2;
        if (first) {
            for (unsigned i = 1; i < m; i++)
                last = last->qnext;
            atomic_store_explicit(&v->batch, last->qnext, memory_order_relaxed);
            v->nbatch -= m;
            if (!v->nbatch)
                batch_ended();
        }
        leash__unlock(&v->bmu);
        if (!first)
            continue;
        /* in neither batch for now: a dump holds mu, as this does */
        leash_task *rest = first->qnext;
        first->qnext = NULL;
        if (m > 1) {
            leash__lock(&w->bmu);
            batch_set(w, rest, last, m - 1);
            leash__unlock(&w->bmu);
        }
        atomic_fetch_add_explicit(&pool.pops, 1, memory_order_relaxed);
        leash__task_begin(first); /* on its list before mu lets go */
        return first;
    }
    return NULL;
}

/* A worker's next task (mu held): the queue's first, with the rest of the
   queue as its batch; else half of another's batch. */
static leash_task *take_locked(struct worker *w)
{
    leash_task *t = pop_locked();
    if (!t)
        return rd(&pool.batched) ? steal_locked(w) : NULL;
    leash__task_begin(t); /* on its list before the queue lets go */
    if (pool.head) {
        unsigned n = rd(&pool.qlen);
        leash__lock(&w->bmu);
        batch_set(w, pool.head, pool.tail, n);
        leash__unlock(&w->bmu);
        pool.head = pool.tail = NULL;
        add(&pool.qlen, -(int)n);
        atomic_fetch_add_explicit(&pool.pops, n, memory_order_relaxed);
    }
    return t;
}

/* The next task of this worker's batch, on its group's list. */
static leash_task *batch_pop(struct worker *w)
{
    if (!atomic_load_explicit(&w->batch, memory_order_relaxed))
        return NULL;
    leash__lock(&w->bmu);
    leash_task *t = atomic_load_explicit(&w->batch, memory_order_relaxed);
    if (t) {
        atomic_store_explicit(&w->batch, t->qnext, memory_order_relaxed);
        if (!--w->nbatch)
            batch_ended();
        leash__task_begin(t); /* on its list before the batch lets go */
    }
    leash__unlock(&w->bmu);
    return t;
}

static void *worker_main(void *arg);

/* Makes one more worker available: wakes a parked one or makes a thread.
   Called with mu held; returns with it released. */
static void add_worker_unlock(void)
{
    add(&pool.awake, 1);
    struct worker *w = pool.parked;
    if (w) {
        pool.parked = w->next;
        if (w->next)
            w->next->prev = NULL;
        /* w frees itself only when its word is still 0 under mu */
        atomic_store_explicit(&w->word, 1, memory_order_release);
        leash__unlock(&pool.mu);
        leash__futex_wake(&w->word, 1);
        return;
    }
    leash__unlock(&pool.mu);
    w = calloc(1, sizeof *w);
    /* the interrupt signal is the one a worker must take */
    int err =
        w ? leash__thread_start(worker_main, w, "leash-worker", leash__intr_signal()) : -ENOMEM;
    if (!err)
        atomic_fetch_add_explicit(&leash__threads, 1, memory_order_relaxed);
    if (err) {
        /* no new thread: the tasks already queued wait for the workers
           there are, and the monitor tries again */
        free(w);
        add(&pool.awake, -1);
    }
}

static _Thread_local uint64_t ran; /* tasks this thread has run */

static void run(leash_task *t)
{
    t->thread = pthread_self();
    t->first_on_thread = ran++ == 0;
    atomic_store_explicit(&t->tid, leash__gettid(), memory_order_relaxed);
    atomic_store_explicit(&t->started, true, memory_order_release);
    leash__self_tls = t;
    int rc = t->fn(t->arg);
    if (unlikely(atomic_load_explicit(&leash__crash_tid, memory_order_relaxed) != 0))
        leash__crash_survived(t); /* a fatal signal it took was survived */
    leash__task_exit(t);
    leash__self_tls = NULL;
    leash__task_done(t, rc);
}

/*
 * A waiter runs queued children of the group it waits for itself, rather
 * than sleeping until a worker comes for them: a spawn+join then costs no
 * wake-up and no cache line crossing to another CPU. The child is a task of
 * its own all the same: its own record (id, group, dump entry, registry
 * slot, held locks), set as the thread's current task while it runs, and
 * signalled by LEASH_INTERRUPT on this thread, which is why a thread that
 * blocks the interrupt signal does not run children of an interrupt group.
 */
#define TAKE_SCAN  64 /* queue entries a waiter looks through for its group's */
#define TAKE_DEPTH 4  /* children run inside children run inside a waiter */

static _Thread_local int take_depth;

/*
 * Whether this thread has a worker's stack left: a child run here gets
 * what is left of the waiter's stack, and was written for a whole one. So
 * it runs here only while at most STACK_SLACK of this thread's stack is in
 * use below a new thread's default size (a thread made with a small stack,
 * or one deep in its own calls, never runs children).
 */
#define STACK_SLACK (256 * 1024)

static bool stack_left_for_a_child(void)
{
    static size_t                need;       /* a new thread's default stack, less the slack */
    static _Thread_local char   *low, *high; /* this thread's stack */
    static _Thread_local uint8_t known;      /* 1: low and high are set; 2: not known */
    if (!known) {
        known = 2;
        pthread_attr_t a;
        if (pthread_getattr_np(pthread_self(), &a) == 0) {
            void  *addr;
            size_t size;
            if (pthread_attr_getstack(&a, &addr, &size) == 0) {
                low = addr;
                high = low + size;
                known = 1;
            }
            pthread_attr_destroy(&a);
        }
    }
    if (!__atomic_load_n(&need, __ATOMIC_RELAXED)) {
        size_t         dflt = 0;
        pthread_attr_t d;
        if (pthread_getattr_default_np(&d) == 0) {
            pthread_attr_getstacksize(&d, &dflt);
            pthread_attr_destroy(&d);
        }
        __atomic_store_n(&need, dflt > STACK_SLACK ? dflt - STACK_SLACK : 1, __ATOMIC_RELAXED);
    }
    /* off the thread's own stack (a coroutine's, switched to with
       swapcontext): what is left there is not known */
    char here;
    return known == 1 && &here > low && &here < high &&
           (size_t)(&here - low) >= __atomic_load_n(&need, __ATOMIC_RELAXED);
}

/* A thread that blocks the interrupt signal (any thread may: a task can
   change its worker's mask) would keep a LEASH_INTERRUPT child run on it
   from ever being interrupted; only such a group pays for the look. */
bool leash__pool_can_run_here(bool interrupt)
{
    if (take_depth >= TAKE_DEPTH || !stack_left_for_a_child())
        return false;
    if (!interrupt)
        return true;
    sigset_t cur;
    return pthread_sigmask(SIG_BLOCK, NULL, &cur) == 0 && !sigismember(&cur, leash__intr_signal());
}

bool leash__pool_run_one_of(struct leash_group *g, leash_task *self)
{
    /* A long queue is being drained by workers already, back to back: a
       waiter that joined them would only trade the group's and the
       queue's cache lines with them for every child. */
    unsigned q = rd(&pool.qlen);
    if (q == 0 || q > (unsigned)leash__ncpu())
        return false;
    leash__lock(&pool.mu);
    leash_task *t = pool.head, *prev = NULL;
    for (int i = 0; t && t->group != g && i < TAKE_SCAN; i++) {
        prev = t;
        t = t->qnext;
    }
    if (!t || t->group != g) {
        leash__unlock(&pool.mu);
        return false;
    }
    if (prev)
        prev->qnext = t->qnext;
    else
        pool.head = t->qnext;
    if (pool.tail == t)
        pool.tail = prev;
    add(&pool.qlen, -1);
    atomic_fetch_add_explicit(&pool.pops, 1, memory_order_relaxed);
    leash__task_begin(t); /* on its list before the queue lets go, as a worker does */
    /* a root thread now runs a task: count it as a worker would be */
    if (self->root)
        add(&pool.running, 1);
    leash__unlock(&pool.mu);
    if (ran == 0)
        ran = 1; /* the thread ran its waiter first: not the child's from birth */
    take_depth++;
    run(t);
    take_depth--;
    leash__self_tls = self;
    if (self->root)
        add(&pool.running, -1);
    return true;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg; /* heap, not stack: a waker may touch it after we park */
    me = w;
    leash__lock(&pool.mu);
    w->aprev = NULL;
    w->anext = pool.all;
    if (pool.all)
        pool.all->aprev = w;
    pool.all = w;
    for (;;) {
        leash_task *t = take_locked(w);
        if (t) {
            add(&pool.awake, -1);
            add(&pool.running, 1);
            leash__unlock(&pool.mu);
            /* a batch waits behind t: the monitor must watch it */
            if (atomic_load_explicit(&w->batch, memory_order_relaxed) &&
                !atomic_load_explicit(&pool.monitoring, memory_order_seq_cst))
                leash__monitor_kick();
            do {
                atomic_fetch_add_explicit(&w->began, 1, memory_order_relaxed);
                run(t);
            } while ((t = batch_pop(w)));
            /* from running to awake in one step under mu: a spawn in
               between must not see neither and make a thread */
            leash__lock(&pool.mu);
            add(&pool.running, -1);
            add(&pool.awake, 1);
            if (rd(&pool.qlen) >= TAKE_NOW)
                continue;
            /* a short queue waits to grow, as below */
        }
        leash__unlock(&pool.mu);

        /* spin for new work, but let no more workers spin than there are
           other CPUs: spinners steal time from the tasks (and none spins
           while the machine has more runnable threads than CPUs) */
        int spin_max = leash__spin_budget();
        if (spin_max &&
            atomic_fetch_add_explicit(&pool.spinning, 1, memory_order_relaxed) + rd(&pool.running) <
                (unsigned)leash__ncpu() - 1) {
            /* A short queue is likely its spawner's, still spawning or
               about to wait: a spawner that waits for its group runs the
               children itself, on its own CPU and with no wake-up to pay,
               unless a spinner takes them first; one still spawning has a
               batch for the spinner a little later, rather than meeting it
               on the queue's lock for every task. So a spinner leaves a
               queue shorter than TAKE_NOW alone for STEAL_DELAY_NS (Go's
               thieves wait 3 us before taking a P's next goroutine,
               runtime.runqgrab), and takes a long one at once. It looks
               every POLL_EVERY pauses: each look pulls the line the
               spawner writes. */
            int64_t seen = 0;
            for (int i = 0; i < spin_max; i += POLL_EVERY) {
                unsigned q = rd(&pool.qlen);
                if (q >= TAKE_NOW || rd(&pool.batched))
                    break;
                if (!q) {
                    seen = 0;
                } else {
                    int64_t now = leash__now_ns();
                    if (!seen)
                        seen = now;
                    else if (now - seen >= STEAL_DELAY_NS)
                        break;
                }
                for (int j = 0; j < POLL_EVERY; j++)
                    leash__cpu_relax();
            }
        }
        if (spin_max)
            add(&pool.spinning, -1);

        leash__lock(&pool.mu);
        if (pool.head || rd(&pool.batched))
            continue;
        add(&pool.awake, -1);
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
            if (w->aprev)
                w->aprev->anext = w->anext;
            else
                pool.all = w->anext;
            if (w->anext)
                w->anext->aprev = w->aprev;
            leash__unlock(&pool.mu);
            free(w);
            leash__task_cache_flush();
            atomic_fetch_sub_explicit(&leash__threads, 1, memory_order_relaxed);
            return NULL;
        }
        /* woken: the waker counted us in `awake` */
    }
}

/* Whether queued tasks need one more worker (mu held). busy counts a CPU
   the caller itself keeps busy: a root thread spawning uses one. */
static bool short_handed(unsigned busy)
{
    return (pool.head || rd(&pool.batched)) && rd(&pool.awake) == 0 &&
           rd(&pool.running) + busy < (unsigned)leash__ncpu();
}

int leash__pool_submit(leash_task *t, bool caller_root)
{
    t->qnext = NULL;
    leash__lock(&pool.mu);
    if (pool.tail)
        pool.tail->qnext = t;
    else
        pool.head = t;
    pool.tail = t;
    atomic_fetch_add_explicit(&pool.qlen, 1, memory_order_seq_cst);
    if (short_handed(caller_root)) {
        add_worker_unlock();
        return 0;
    }
    leash__unlock(&pool.mu);
    /* Every CPU is busy: make sure the monitor watches the queue. seq_cst
       pairs with the monitor's clearing `monitoring` then reading qlen. */
    if (!atomic_load_explicit(&pool.monitoring, memory_order_seq_cst))
        leash__monitor_kick();
    return 0;
}

void leash__pool_park_begin(leash_task *t)
{
    if (t->root)
        return;
    add(&pool.running, -1);
    bool batch = me && atomic_load_explicit(&me->batch, memory_order_relaxed);
    if (!batch && !rd(&pool.qlen))
        return;
    /* this worker's CPU is free now: if tasks wait and nobody is awake to
       take them, wake somebody. Its batch must not wait for t: back to the
       queue it goes. */
    leash__lock(&pool.mu);
    if (batch)
        batch_give_back_locked(me);
    if (short_handed(0))
        add_worker_unlock();
    else
        leash__unlock(&pool.mu);
}

void leash__pool_park_end(leash_task *t)
{
    if (!t->root)
        add(&pool.running, 1);
}

/* Gives back to the queue the batch of a worker that has started no task
   for MONITOR_NS (it runs a task that spins, or blocks outside leash);
   whether a batch is left to watch. */
static bool watch_batches(int64_t now)
{
    if (!atomic_load_explicit(&pool.batched, memory_order_seq_cst))
        return false;
    bool watching = false, moved = false;
    leash__lock(&pool.mu);
    for (struct worker *w = pool.all; w; w = w->anext) {
        if (!atomic_load_explicit(&w->batch, memory_order_relaxed))
            continue;
        uint64_t began = atomic_load_explicit(&w->began, memory_order_relaxed);
        if (began != w->mon_began || !w->mon_since) {
            w->mon_began = began;
            w->mon_since = now;
            watching = true;
        } else if (now - w->mon_since < LEASH__MONITOR_NS) {
            watching = true;
        } else {
            moved |= batch_give_back_locked(w);
        }
    }
    if (moved)
        add_worker_unlock(); /* its worker is stuck: one more runs the batch */
    else
        leash__unlock(&pool.mu);
    return watching;
}

int64_t leash__pool_monitor(int64_t now)
{
    static uint64_t last_pops;
    static int64_t  last_change;
    uint64_t        pops = atomic_load_explicit(&pool.pops, memory_order_relaxed);
    if (!watch_batches(now) && !atomic_load_explicit(&pool.qlen, memory_order_seq_cst)) {
        atomic_store_explicit(&pool.monitoring, 0, memory_order_seq_cst);
        if (!watch_batches(now) && !atomic_load_explicit(&pool.qlen, memory_order_seq_cst)) {
            last_pops = pops;
            last_change = now;
            return INT64_MAX;
        }
    }
    atomic_store_explicit(&pool.monitoring, 1, memory_order_relaxed);
    if (pops != last_pops) {
        last_pops = pops;
        last_change = now;
    } else if (now - last_change >= LEASH__MONITOR_NS) {
        /* the queue has not moved: every worker is busy or blocked outside
           leash; one more makes progress */
        leash__lock(&pool.mu);
        if (pool.head)
            add_worker_unlock();
        else
            leash__unlock(&pool.mu);
        last_change = now;
    }
    return last_change + LEASH__MONITOR_NS;
}

/* The queue's lock and every batch's: what is queued stays where it is. */
void leash__pool_lock(void)
{
    leash__lock(&pool.mu);
    for (struct worker *w = pool.all; w; w = w->anext)
        leash__lock(&w->bmu);
}

void leash__pool_unlock(void)
{
    for (struct worker *w = pool.all; w; w = w->anext)
        leash__unlock(&w->bmu);
    leash__unlock(&pool.mu);
}

/* The queue, then each worker's batch. */
leash_task *leash__pool_queued_next(leash_task *t, void **cursor)
{
    if (t && t->qnext)
        return t->qnext;
    if (!t && pool.head) {
        *cursor = NULL;
        return pool.head;
    }
    /* past the queue, or past the batch of the worker *cursor names */
    struct worker *w = t ? *cursor : NULL;
    for (w = w ? w->anext : pool.all; w; w = w->anext) {
        leash_task *b = atomic_load_explicit(&w->batch, memory_order_relaxed);
        if (b) {
            *cursor = w;
            return b;
        }
    }
    return NULL;
}

void leash__pool_atfork(int phase)
{
    switch (phase) {
    case LEASH_FORK_PREPARE: leash__lock(&pool.mu); break;
    case LEASH_FORK_PARENT: leash__unlock(&pool.mu); break;
    case LEASH_FORK_CHILD: {
        /* a task that forks from a worker goes on as that worker's task */
        leash_task *self = leash__self_tls;
        unsigned    worker = self && !self->root;
        if (pool.head)
            leash__fork_kept[LEASH_KEPT_QUEUE] = pool.head;
        if (pool.parked)
            leash__fork_kept[LEASH_KEPT_WORKERS] = pool.parked;
        pool.mu = (leash__lock_t)LEASH__LOCK_INIT;
        pool.head = pool.tail = NULL;
        pool.parked = NULL;
        /* the parent's batches are the parent's, as its queue is */
        for (struct worker *w = pool.all; w; w = w->anext) {
            w->bmu = (leash__lock_t)LEASH__LOCK_INIT;
            atomic_store(&w->batch, NULL);
            w->nbatch = 0;
        }
        atomic_store(&pool.batched, 0);
        /* pool.all stays: the parent's workers in it are never woken, and
           a forking worker that retires here unlinks itself from it */
        atomic_store(&pool.qlen, 0);
        atomic_store(&pool.awake, 0);
        atomic_store(&pool.running, worker);
        atomic_store(&pool.spinning, 0);
        atomic_store(&pool.monitoring, 0);
        atomic_store(&leash__threads, worker);
        break;
    }
    }
}
