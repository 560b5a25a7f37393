/*
 * mutex.c: mutexes and rwlocks that know their holders.
 *
 * A mutex is a three-state futex word (0 free, 1 locked, 2 locked with
 * waiters) taken with one compare-and-swap; the owner and its site are a few
 * plain stores after it, and the task's list of held locks is task-local.
 * A short contention only spins (bounded, as glibc's adaptive mutex does, and
 * only while the holder runs and the machine has a CPU for every runnable
 * thread); every check (re-entry, a dead holder, a cycle) comes after the
 * spin, before the caller parks. A mutex that is abandoned or held by the
 * caller never comes free, so its spin ends and the check answers.
 *
 * Cycles: a task about to wait records the lock it waits for under graph_mu,
 * after walking holder -> the lock that holder waits for -> its holders...
 * A task that waits cannot release what it holds, and every waiter's record
 * is written under graph_mu, so the walk sees a consistent chain. Of two
 * tasks closing a cycle at once, the second one to take graph_mu sees it.
 *
 * Lock order: graph_mu, then a lock's internal wlock. A group's lock comes
 * before graph_mu (a dump names a waiter's holder), so nothing that takes a
 * group's lock (a cancel) is done with wlock held.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define MAGIC_MASK     0xffff0000u
#define MAGIC_MUTEX    0x4c4d0000u /* "LM" */
#define MAGIC_RWLOCK   0x4c520000u /* "LR" */
#define F_ABANDONED    0x1u        /* mutex; rwlock: a writer exited holding it */
#define F_RD_ABANDONED 0x2u        /* rwlock: a reader exited holding it */

#define LD(p)      __atomic_load_n((p), __ATOMIC_RELAXED)
#define ST(p, v)   __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define WLOCK(x)   leash__lock((leash__lock_t *)&(x)->wlock_)
#define WUNLOCK(x) leash__unlock((leash__lock_t *)&(x)->wlock_)

/* A task waiting on a lock; lives on the waiter's stack. */
struct lwaiter {
    leash_task     *task;
    int             kind;   /* LEASH_HOLD_* it asks for */
    bool            queued; /* still in the lock's list (under wlock) */
    struct lwaiter *next, *prev;
};

static void wq_push(void **head, struct lwaiter *w)
{
    struct lwaiter *h = *head;
    w->queued = true;
    w->next = NULL;
    if (!h) {
        w->prev = w; /* the head's prev is the tail */
        *head = w;
        return;
    }
    w->prev = h->prev;
    h->prev->next = w;
    h->prev = w;
}

static void wq_remove(void **head, struct lwaiter *w)
{
    struct lwaiter *h = *head;
    if (!w->queued)
        return;
    w->queued = false;
    if (w == h) {
        *head = w->next;
        if (w->next)
            w->next->prev = w->prev;
        return;
    }
    w->prev->next = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        h->prev = w->prev;
}

static leash_task *wq_pop(void **head)
{
    struct lwaiter *w = *head;
    if (!w)
        return NULL;
    wq_remove(head, w);
    return w->task;
}

/* Pops and wakes every waiter (wlock held); each checks again. */
static void wq_wake_all(void **head)
{
    struct lwaiter *w;
    while ((w = *head) != NULL) {
        wq_remove(head, w);
        leash__wake(w->task);
    }
}

static const char *kind_name(int kind)
{
    return kind == LEASH_HOLD_MUTEX  ? "mutex"
           : kind == LEASH_HOLD_READ ? "rwlock (read)"
                                     : "rwlock (write)";
}

static const char *lock_name(void *lock, int kind)
{
    return kind == LEASH_HOLD_MUTEX ? ((leash_mutex *)lock)->name_ : ((leash_rwlock *)lock)->name_;
}

/* --------------------------------------------------------------- the graph */

static leash__lock_t graph_mu = LEASH__LOCK_INIT;

#define WALK_MAX 64

/* Who stands between a waiter for `lock` (in mode kind) and the lock.
   graph_mu held. */
static int holders(void *lock, int kind, leash_task **out, int max)
{
    int n = 0;
    if (kind == LEASH_HOLD_MUTEX) {
        leash_mutex *m = lock;
        leash_task  *o = __atomic_load_n(&m->owner_, __ATOMIC_ACQUIRE);
        if (o && !(LD(&m->flags_) & F_ABANDONED))
            out[n++] = o;
        return n;
    }
    leash_rwlock *l = lock;
    WLOCK(l);
    if (l->writer_ && !(l->flags_ & F_ABANDONED))
        out[n++] = l->writer_;
    for (struct leash_hold *h = l->holds_; h && n < max; h = h->lnext)
        out[n++] = h->task;
    if (kind == LEASH_HOLD_READ) /* writers are preferred: waiting ones come first */
        for (struct lwaiter *w = l->waiters_; w && n < max; w = w->next)
            if (w->kind == LEASH_HOLD_WRITE)
                out[n++] = w->task;
    WUNLOCK(l);
    return n;
}

/*
 * Depth-first walk from `lock` through holders and what they wait for.
 * Returns the length of a path back to self, 0 when there is none.
 */
static int find_cycle(leash_task *self, void *lock, int kind, leash_task **path, void **locks,
                      int *kinds, int depth)
{
    if (depth >= 8)
        return 0;
    leash_task *h[WALK_MAX];
    int         n = holders(lock, kind, h, WALK_MAX);
    for (int i = 0; i < n; i++) {
        if (h[i] == self)
            continue; /* self as a waiting writer ahead of itself: not a cycle */
        locks[depth] = lock;
        kinds[depth] = kind;
        path[depth] = h[i];
        void *next = atomic_load_explicit(&h[i]->waiting_for, memory_order_relaxed);
        if (!next)
            continue;
        leash_task *hh[WALK_MAX];
        int         nn = holders(next, h[i]->waiting_kind, hh, WALK_MAX);
        for (int j = 0; j < nn; j++) {
            if (hh[j] == self) {
                locks[depth + 1] = next;
                kinds[depth + 1] = h[i]->waiting_kind;
                return depth + 2;
            }
        }
        int r = find_cycle(self, next, h[i]->waiting_kind, path, locks, kinds, depth + 1);
        if (r)
            return r;
    }
    return 0;
}

static int graph_enter(leash_task *self, void *lock, int kind, const char *file, int line)
{
    leash_task *path[10];
    void       *locks[10];
    int         kinds[10];
    leash__lock(&graph_mu);
    int n = find_cycle(self, lock, kind, path, locks, kinds, 0);
    if (!n) {
        self->waiting_kind = kind;
        atomic_store_explicit(&self->waiting_for, lock, memory_order_relaxed);
    }
    leash__unlock(&graph_mu);
    if (!n)
        return 0;
    char   chain[400];
    size_t off = 0;
    for (int i = 0; i < n - 1 && off < sizeof chain; i++) {
        int w = snprintf(chain + off, sizeof chain - off, "%s\"%s\" held by task %llu (%s)",
                         i ? ", which waits for " : "", lock_name(locks[i], kinds[i]),
                         (unsigned long long)path[i]->id, path[i]->fn_name);
        if (w > 0)
            off += (size_t)w;
    }
    leash__report("lock_cycle", self, self->group,
                  "task %llu (%s) at %s:%d waits for %s %s, which waits for \"%s\" held by "
                  "task %llu itself: -EDEADLK instead of a deadlock",
                  (unsigned long long)self->id, self->fn_name, file, line, kind_name(kind), chain,
                  lock_name(locks[n - 1], kinds[n - 1]), (unsigned long long)self->id);
    return -EDEADLK;
}

static void graph_leave(leash_task *self)
{
    leash__lock(&graph_mu);
    atomic_store_explicit(&self->waiting_for, NULL, memory_order_relaxed);
    leash__unlock(&graph_mu);
}

static int self_deadlock(leash_task *self, void *lock, int kind, struct leash_hold *held,
                         const char *file, int line)
{
    const char *what = kind == LEASH_HOLD_WRITE && held->kind == LEASH_HOLD_READ
                           ? "asks for the write lock of rwlock"
                       : kind == LEASH_HOLD_MUTEX ? "locks mutex"
                       : kind == LEASH_HOLD_READ  ? "asks for a read lock of rwlock"
                                                  : "asks for the write lock of rwlock";
    leash__report("self_deadlock", self, self->group,
                  "task %llu (%s) at %s:%d %s \"%s\" that it already holds (%s at %s:%d): "
                  "-EDEADLK instead of waiting for ever",
                  (unsigned long long)self->id, self->fn_name, file, line, what,
                  lock_name(lock, kind), held->kind == LEASH_HOLD_READ ? "read" : "locked",
                  held->file, held->line);
    return -EDEADLK;
}

/* Waits on a lock's list until woken or the scope ends (wlock held on entry
   and on return). */
static int lock_park(void *lockobj, void **waiters, leash_task *self, int kind, uint32_t *state,
                     bool spin_first)
{
    struct lwaiter w = {.task = self, .kind = kind};
    int            err = leash__scope_err(self, false);
    if (err)
        return err;
    if (leash__scope_deadline(self) <= leash__now_ns()) {
        /* Past the deadline before the timer fired: its cancel takes group
           locks, never with wlock held. A dump holds a group's lock and
           then takes graph_mu, which comes before wlock (a task exiting
           with locks held): with wlock held here, the three could wait for
           each other for ever. The caller looks at the lock again. */
        leash__unlock((leash__lock_t *)lockobj);
        err = leash__scope_err(self, true);
        leash__lock((leash__lock_t *)lockobj);
        return err;
    }
    wq_push(waiters, &w);
    uint32_t seq = atomic_load_explicit(&self->wake, memory_order_seq_cst);
    leash__unlock((leash__lock_t *)((char *)lockobj));
    int spin = spin_first ? leash__spin_budget() / 4 : 0;
    for (int i = 0; i < spin; i++) {
        if (atomic_load_explicit(&self->wake, memory_order_relaxed) != seq)
            break;
        if (state && __atomic_load_n(state, __ATOMIC_RELAXED) == 0)
            break;
        leash__cpu_relax();
    }
    if (atomic_load_explicit(&self->wake, memory_order_relaxed) == seq &&
        !(state && __atomic_load_n(state, __ATOMIC_RELAXED) == 0))
        leash__park(self, seq, leash__scope_deadline(self));
    leash__lock((leash__lock_t *)lockobj);
    wq_remove(waiters, &w);
    return 0;
}

/* ------------------------------------------------------------------ mutex */

int leash_mutex_init(leash_mutex *m, const char *name)
{
    if (!m)
        return -EINVAL;
    memset(m, 0, sizeof *m);
    leash__copy_name(m->name_, sizeof m->name_, name ? name : "mutex");
    __atomic_store_n(&m->flags_, MAGIC_MUTEX, __ATOMIC_RELEASE);
    return 0;
}

static inline bool mutex_ok(const leash_mutex *m)
{
    return m && (LD(&m->flags_) & MAGIC_MASK) == MAGIC_MUTEX;
}

static int mutex_took(leash_mutex *m, leash_task *self, const char *file, int line)
{
    /* release: a cycle walk that reads the owner also reads its task record */
    __atomic_store_n(&m->owner_, self, __ATOMIC_RELEASE);
    if (unlikely(!leash__hold_push(self, m, LEASH_HOLD_MUTEX, file, line))) {
        leash_mutex_unlock(m);
        return -ENOMEM;
    }
    return 0;
}

/* (wlock held) The lock is free but waiters may be queued, one of which
   was woken for a release we are not going to use: hand that on. */
static void mutex_pass_on(leash_mutex *m)
{
    if (!m->waiters_)
        return;
    if (__atomic_exchange_n(&m->state_, 2, __ATOMIC_ACQUIRE) == 0) {
        leash_task *t = wq_pop(&m->waiters_);
        __atomic_store_n(&m->state_, 0, __ATOMIC_RELEASE);
        leash__wake(t);
    }
}

#define MUTEX_SPIN    100 /* pauses in all; glibc's adaptive mutex: 100 tries */
#define MUTEX_BACKOFF 16  /* most pauses between two looks */

/* Short contention: look again while the holder runs, a bounded number of
   pauses in all, reading the word and trying a compare-and-swap only when
   it reads free. Between looks the spinner backs off, 1, 2, 4 ... 16 pauses
   with jitter: a spinner that looks after every pause takes the lock the
   moment it is released, from a holder about to take it again on its own
   CPU, and then every lock crosses CPUs. With the backoff, in 8 alternated
   processes of `leash_bench --quick --reps 7 mutex_contended_leash`, most
   repetitions took 60-90 ns a lock instead of 120-150. */
static bool mutex_spin(leash_mutex *m)
{
    /* a holder parked in leash will not release soon: no use spinning
       (task records are never freed, so the pointer is safe to follow) */
    leash_task *o = __atomic_load_n(&m->owner_, __ATOMIC_ACQUIRE);
    if (o && atomic_load_explicit(&o->op, memory_order_relaxed) != LEASH_OP_NONE)
        return false;
    if (!leash__spin_budget())
        return false;
    unsigned jitter = (unsigned)(uintptr_t)&o ^ (unsigned)leash__coarse_ns();
    for (int cnt = 0, exp = 1;;) {
        int n = exp + (int)(jitter & (unsigned)(exp - 1));
        cnt += n;
        if (cnt >= MUTEX_SPIN)
            return false;
        while (n-- > 0)
            leash__cpu_relax();
        uint32_t z = 0;
        if (LD(&m->state_) == 0 && __atomic_compare_exchange_n(&m->state_, &z, 1, false,
                                                               __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return true;
        if (exp < MUTEX_BACKOFF)
            exp <<= 1;
        jitter = jitter * 1103515245u + 12345u;
    }
}

/*
 * A saturated mutex: one that lockers find held all the time, so that a
 * spinner only moves it between CPUs, from a holder about to take it again
 * on its own, once a lock. Then a waiter parks at once, as the default
 * pthread mutex's does, and the holder runs on alone while the wake-up
 * travels. It is saturated once HOT_COUNT lockers have found it held within
 * one window of 2^HOT_WINDOW_SHIFT ns (131 us): half a million a second.
 * A short contention, which spinning saves a wake-up, comes nowhere near.
 * The count and its window live in bits 2-15 of flags_ (the magic is in
 * 16-31, F_ABANDONED in 0), written only here, on the contended path.
 */
#define HOT_WINDOW_SHIFT 17
#define HOT_COUNT        63 /* the count's 6 bits full */
#define HOT_CNT_SHIFT    2
#define HOT_WIN_SHIFT    8
#define HOT_BITS         0xfffcu

static bool mutex_hot(leash_mutex *m)
{
    uint32_t win = (uint32_t)(leash__now_ns() >> HOT_WINDOW_SHIFT) & 0xffu;
    uint32_t f = LD(&m->flags_);
    for (;;) {
        uint32_t cnt = ((f >> HOT_WIN_SHIFT) & 0xffu) == win ? (f >> HOT_CNT_SHIFT) & 0x3fu : 0;
        if (cnt == HOT_COUNT)
            return true; /* no write while it stays hot */
        uint32_t nf = (f & ~HOT_BITS) | win << HOT_WIN_SHIFT | (cnt + 1) << HOT_CNT_SHIFT;
        if (__atomic_compare_exchange_n(&m->flags_, &f, nf, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
            return cnt + 1 == HOT_COUNT;
    }
}

/* Out of line: the fast path then needs no saved registers. */
__attribute__((noinline)) static int mutex_lock_slow(leash_mutex *m, leash_task *self,
                                                     const char *file, int line)
{
    /* the holder is likely running and about to release: no check sits on
       this path, each is made before parking (a mutex abandoned, or held by
       the caller itself, never comes free, so the spin ends) */
    bool hot = mutex_hot(m);
    if (!hot && mutex_spin(m))
        return mutex_took(m, self, file, line);
    if (LD(&m->flags_) & F_ABANDONED)
        return -EOWNERDEAD;
    if (LD(&m->owner_) == (void *)self) {
        struct leash_hold *h = leash__hold_find(self, m);
        if (h)
            return self_deadlock(self, m, LEASH_HOLD_MUTEX, h, file, line);
    }
    int err = graph_enter(self, m, LEASH_HOLD_MUTEX, file, line);
    if (err)
        return err;
    leash__blocked(self, LEASH_OP_MUTEX, m->name_, file, line);
    WLOCK(m);
    for (;;) {
        if (LD(&m->flags_) & F_ABANDONED) {
            err = -EOWNERDEAD;
            break;
        }
        if (__atomic_exchange_n(&m->state_, 2, __ATOMIC_ACQUIRE) == 0)
            break; /* taken, with state 2: our unlock wakes whoever is queued */
        if ((err = lock_park(&m->wlock_, &m->waiters_, self, LEASH_HOLD_MUTEX, &m->state_, !hot)) !=
            0)
            break;
    }
    if (err)
        mutex_pass_on(m);
    WUNLOCK(m);
    leash__unblocked(self);
    graph_leave(self);
    return err ? err : mutex_took(m, self, file, line);
}

/* Every lock that the fast path below does not finish. */
__attribute__((noinline)) static int mutex_lock_general(leash_mutex *m, const char *file, int line)
{
    leash_task *self = leash__self();
    if (unlikely(!self))
        return -ENOMEM;
    uint32_t z = 0;
    if (__atomic_compare_exchange_n(&m->state_, &z, 1, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return mutex_took(m, self, file, line);
    return mutex_lock_slow(m, self, file, line);
}

int leash_mutex_lock_at(leash_mutex *m, const char *file, int line)
{
    if (unlikely(!mutex_ok(m)))
        return -EINVAL;
    /* the common case, with nothing out of line to call: a known task with
       a spare hold record, and the mutex free */
    leash_task *self = leash__self_tls;
    uint32_t    z = 0;
    if (likely(self && self->hold_free) &&
        likely(__atomic_compare_exchange_n(&m->state_, &z, 1, false, __ATOMIC_ACQUIRE,
                                           __ATOMIC_RELAXED))) {
        __atomic_store_n(&m->owner_, self, __ATOMIC_RELEASE);
        leash__hold_push(self, m, LEASH_HOLD_MUTEX, file, line);
        return 0;
    }
    return mutex_lock_general(m, file, line);
}

/* Hands the mutex to the first waiter (state was 2). */
__attribute__((noinline)) static void mutex_wake_one(leash_mutex *m)
{
    WLOCK(m);
    leash_task *t = wq_pop(&m->waiters_);
    WUNLOCK(m);
    if (t)
        leash__wake(t);
}

int leash_mutex_unlock(leash_mutex *m)
{
    if (unlikely(!mutex_ok(m)))
        return -EINVAL;
    leash_task *self = leash__self_tls;
    if (unlikely(!self || LD(&m->owner_) != (void *)self || (LD(&m->flags_) & F_ABANDONED)))
        return -EPERM;
    struct leash_hold *h = self->holds;
    if (likely(h && h->lock == m))
        leash__hold_drop(self, h);
    else if ((h = leash__hold_find(self, m)) != NULL)
        leash__hold_drop(self, h);
    ST(&m->owner_, NULL);
    if (unlikely(__atomic_exchange_n(&m->state_, 0, __ATOMIC_RELEASE) == 2))
        mutex_wake_one(m);
    return 0;
}

void leash_mutex_destroy(leash_mutex *m)
{
    if (mutex_ok(m))
        __atomic_store_n(&m->flags_, 0, __ATOMIC_RELEASE);
}

/* ----------------------------------------------------------------- rwlock */

int leash_rwlock_init(leash_rwlock *l, const char *name)
{
    if (!l)
        return -EINVAL;
    memset(l, 0, sizeof *l);
    leash__copy_name(l->name_, sizeof l->name_, name ? name : "rwlock");
    __atomic_store_n(&l->flags_, MAGIC_RWLOCK, __ATOMIC_RELEASE);
    return 0;
}

static inline bool rwlock_ok(const leash_rwlock *l)
{
    return l && (LD(&l->flags_) & MAGIC_MASK) == MAGIC_RWLOCK;
}

static void rw_link_read(leash_rwlock *l, struct leash_hold *h)
{
    h->lprev = NULL;
    h->lnext = l->holds_;
    if (l->holds_)
        ((struct leash_hold *)l->holds_)->lprev = h;
    l->holds_ = h;
}

static void rw_unlink_read(leash_rwlock *l, struct leash_hold *h)
{
    if (h->lprev)
        h->lprev->lnext = h->lnext;
    else
        l->holds_ = h->lnext;
    if (h->lnext)
        h->lnext->lprev = h->lprev;
}

static int rw_lock(leash_rwlock *l, int kind, const char *file, int line)
{
    if (!rwlock_ok(l))
        return -EINVAL;
    leash_task *self = leash__self();
    if (!self)
        return -ENOMEM;
    struct leash_hold *held = leash__hold_find(self, l);
    if (held)
        return self_deadlock(self, l, kind, held, file, line);
    struct leash_hold *h = leash__hold_push(self, l, kind, file, line);
    if (!h)
        return -ENOMEM;

    bool reader = kind == LEASH_HOLD_READ;
    bool counted = false, entered = false;
    int  err = 0;
    WLOCK(l);
    for (;;) {
        uint32_t f = l->flags_;
        if ((f & F_ABANDONED) || (!reader && (f & F_RD_ABANDONED))) {
            err = -EOWNERDEAD;
            break;
        }
        if (reader ? l->readers_ >= 0 && l->wwait_ == 0 : l->readers_ == 0)
            break;
        if (!entered) {
            /* about to wait: check for a cycle first, outside wlock */
            WUNLOCK(l);
            err = graph_enter(self, l, kind, file, line);
            WLOCK(l);
            if (err)
                break;
            entered = true;
            leash__blocked(self, reader ? LEASH_OP_RWLOCK_RD : LEASH_OP_RWLOCK_WR, l->name_, file,
                           line);
            continue; /* state may have moved while wlock was dropped */
        }
        if (!reader && !counted) {
            l->wwait_++;
            counted = true;
        }
        if ((err = lock_park(&l->wlock_, &l->waiters_, self, kind, NULL, true)) != 0)
            break;
    }
    if (counted) {
        l->wwait_--;
        if (err && l->wwait_ == 0) /* readers held back by us may go now */
            wq_wake_all(&l->waiters_);
    }
    if (!err) {
        if (reader) {
            l->readers_++;
            rw_link_read(l, h);
        } else {
            l->readers_ = -1;
            l->writer_ = self;
        }
    }
    WUNLOCK(l);
    if (entered) {
        leash__unblocked(self);
        graph_leave(self);
    }
    if (err)
        leash__hold_drop(self, h);
    return err;
}

int leash_rwlock_rdlock_at(leash_rwlock *l, const char *file, int line)
{
    return rw_lock(l, LEASH_HOLD_READ, file, line);
}

int leash_rwlock_wrlock_at(leash_rwlock *l, const char *file, int line)
{
    return rw_lock(l, LEASH_HOLD_WRITE, file, line);
}

int leash_rwlock_unlock(leash_rwlock *l)
{
    if (!rwlock_ok(l))
        return -EINVAL;
    leash_task        *self = leash__self_tls;
    struct leash_hold *h = self ? leash__hold_find(self, l) : NULL;
    if (!h)
        return -EPERM;
    WLOCK(l);
    if (h->kind == LEASH_HOLD_WRITE) {
        l->readers_ = 0;
        l->writer_ = NULL;
    } else {
        l->readers_--;
        rw_unlink_read(l, h);
    }
    if (l->readers_ == 0 || l->wwait_ == 0)
        wq_wake_all(&l->waiters_);
    WUNLOCK(l);
    leash__hold_drop(self, h);
    return 0;
}

void leash_rwlock_destroy(leash_rwlock *l)
{
    if (rwlock_ok(l))
        __atomic_store_n(&l->flags_, 0, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------ abandonment */

void leash__abandon_holds(leash_task *t)
{
    leash__lock(&graph_mu);
    while (t->holds) {
        struct leash_hold *h = t->holds;
        bool               first = false;
        const char        *name;
        if (h->kind == LEASH_HOLD_MUTEX) {
            leash_mutex *m = h->lock;
            WLOCK(m);
            first = !(LD(&m->flags_) & F_ABANDONED);
            __atomic_or_fetch(&m->flags_, F_ABANDONED, __ATOMIC_RELEASE);
            wq_wake_all(&m->waiters_);
            WUNLOCK(m);
            name = m->name_;
        } else {
            leash_rwlock *l = h->lock;
            WLOCK(l);
            uint32_t flag = h->kind == LEASH_HOLD_WRITE ? F_ABANDONED : F_RD_ABANDONED;
            first = !(l->flags_ & (F_ABANDONED | F_RD_ABANDONED));
            __atomic_or_fetch(&l->flags_, flag, __ATOMIC_RELEASE);
            if (h->kind == LEASH_HOLD_READ)
                rw_unlink_read(l, h); /* the count stays: it is never released */
            wq_wake_all(&l->waiters_);
            WUNLOCK(l);
            name = l->name_;
        }
        if (first)
            leash__report("lock_abandoned", t, t->group,
                          "task %llu (%s) exited holding %s \"%s\" (%s at %s:%d): later lock "
                          "calls get -EOWNERDEAD",
                          (unsigned long long)t->id, t->fn_name, kind_name(h->kind), name,
                          h->kind == LEASH_HOLD_READ ? "read-locked" : "locked", h->file, h->line);
        leash__hold_drop(t, h);
    }
    leash__unlock(&graph_mu);
}

uint64_t leash__lock_holder(leash_task *t)
{
    /* under graph_mu a waiter's record names a lock that is still alive:
       it is cleared, under the same mutex, before the waiter returns */
    uint64_t id = 0;
    leash__lock(&graph_mu);
    void *lock = atomic_load_explicit(&t->waiting_for, memory_order_relaxed);
    if (lock && t->waiting_kind == LEASH_HOLD_MUTEX) {
        leash_task *o = __atomic_load_n(&((leash_mutex *)lock)->owner_, __ATOMIC_ACQUIRE);
        if (o && !(LD(&((leash_mutex *)lock)->flags_) & F_ABANDONED))
            id = o->id;
    }
    leash__unlock(&graph_mu);
    return id;
}

void leash__mutex_atfork(int phase)
{
    switch (phase) {
    case LEASH_FORK_PREPARE: leash__lock(&graph_mu); break;
    case LEASH_FORK_PARENT: leash__unlock(&graph_mu); break;
    case LEASH_FORK_CHILD: graph_mu = (leash__lock_t)LEASH__LOCK_INIT; break;
    }
}
