/*
 * chan.c: channels and select, after Go's runtime/chan.go.
 *
 * A channel is two queues of waiters under one lock and, when it has a
 * capacity, a ring of slots. A blocked operation (or a whole select) shares
 * one `struct wait`: whoever completes one of its cases first claims it
 * with a compare-and-swap on `fired`, copies the element while holding that
 * case's channel lock, then marks the wait done. A waiter that gives up
 * (cancelled, timed out) claims `fired` for itself under every channel lock
 * of its cases, so a case is completed by exactly one side.
 *
 * A waiter spins on its wait before it parks. While it spins, the one who
 * completes it does not wake it: `state` says whether the waiter has gone
 * to park, and one exchange both marks the wait done and reads that. So a
 * hand-off between two running tasks moves the channel's line and the
 * wait's line between the CPUs, and not the task's wake word too (which
 * the waiter writes as it leaves: a third line would bounce). Likewise a
 * waiter records what it is blocked on (for dumps, leashd and the
 * registry) only when it parks: a wait that ends while spinning lasts a
 * few microseconds at most, during which the task is shown running.
 *
 * The ring of a buffered channel is a bounded multi-producer multi-consumer
 * queue after Dmitry Vyukov's: each slot has a sequence word saying whose
 * turn it is, a sender reserves a position with a compare-and-swap on the
 * senders' end and a receiver on the receivers' end, so while nobody waits
 * a send or a receive takes no lock, and a stream of elements moves between
 * two CPUs a cache line of slots at a time, not a lock's line per element.
 * The lock and the queues are for waiters, and the two meet Dekker-fashion
 * on `nwaiting`: a waiter counts itself in and then looks at the ring
 * again; a lock-free operation changes the ring and then looks at
 * `nwaiting` (all seq_cst), so of a waiter and an element passing each
 * other, at least one sees the other. The one that sees a waiter takes the
 * lock and settles: it gives ring elements to waiting receivers and moves
 * waiting senders' elements into the ring. The closed flag is the low bit
 * of the senders' end, so a send and a close are ordered by one word.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#define FIRED_NONE    (-1)
#define FIRED_GAVE_UP (-2)

/* wait.state */
#define W_SPINNING 0 /* the waiter spins on state: no wake-up needed */
#define W_PARKING  1 /* the waiter parks (or is about to): wake it */
#define W_DONE     2 /* the claimer has finished copying */

/* sudog.err of a case that was claimed and then found nothing to take (a
   lock-free operation took the element or the room first): the operation
   starts again. Never returned to the caller. */
#define RETRY 1

/* What a waiter records as blocked when it parks. */
struct blocked_on {
    int         op;
    const char *obj, *file;
    int         line;
};

struct wait {
    leash_task *task;
    _Atomic int fired; /* FIRED_NONE, a case index, or FIRED_GAVE_UP */
    _Atomic int state; /* W_SPINNING, W_PARKING, W_DONE */
};

struct sudog {
    struct wait  *w;
    void         *elem; /* send: the source; recv: the destination */
    struct sudog *next;
    struct sudog *prev; /* itself while not queued */
    int           idx;
    int           err; /* 0, -EPIPE (closed) or RETRY */
};

/* A one-case wait: all that the partner touches (an element of up to 8
   bytes too), in one cache line. The partner is done with that line in a
   few instructions, with no miss on another line in between for the
   waiter's polling to take it back in. */
#define INLINE_ELEM 8
struct one_wait {
    struct wait  w;
    struct sudog s;
    _Alignas(8) unsigned char buf[INLINE_ELEM];
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct one_wait) == 64, "a one-case wait fits one line");

struct queue {
    struct sudog *head, *tail;
};

/*
 * A slot's sequence word, as a number s relative to the slot's index i (so
 * that zeroed memory is a ring ready for lap 0): s + 2i is 2p when the slot
 * is free for the send at position p, 2p + 1 when it holds the element of
 * position p. A receive of position p frees it for p + cap. (Doubled, so
 * that a ring of one slot tells "holds p" from "free for p + 1".)
 */
struct rslot {
    _Atomic size_t seq;
    /* elem_size bytes follow */
};

/* One line for what a hand-off writes (the lock, the queues), apart from
   what it only reads (set at open): the line that crosses CPUs at a
   rendezvous is one line, not two. */
struct leash_chan {
    /* the senders' end: (next position << 1) | closed */
    _Alignas(64) _Atomic size_t enq;
    /* the receivers' end: the next position */
    _Alignas(64) _Atomic size_t deq;
    _Alignas(64) leash__lock_t mu;
    _Atomic unsigned nwaiting; /* sudogs in sendq and recvq (written under mu) */
    struct queue     sendq, recvq;
    _Alignas(64) size_t elem_size;
    size_t cap;
    size_t stride; /* bytes a slot takes */
    size_t mask;   /* cap - 1 when cap is a power of two, else 0 */
    char  *slots;
    char   name[48];
};

int leash_chan_open(leash_chan **cp, const char *name, size_t elem_size, size_t capacity)
{
    if (!cp)
        return -EINVAL;
    *cp = NULL;
    if (elem_size == 0 || elem_size > SIZE_MAX / 2)
        return -EINVAL;
    size_t stride = (sizeof(struct rslot) + elem_size + 7) & ~(size_t)7;
    if (capacity && stride > SIZE_MAX / capacity)
        return -EINVAL;
    leash_chan *c;
    if (posix_memalign((void **)&c, 64, sizeof *c) != 0)
        return -ENOMEM;
    memset(c, 0, sizeof *c);
    /* zeroed: every slot free for lap 0 (see struct rslot) */
    if (capacity && !(c->slots = calloc(capacity, stride))) {
        free(c);
        return -ENOMEM;
    }
    c->mu = (leash__lock_t)LEASH__LOCK_INIT;
    c->elem_size = elem_size;
    c->cap = capacity;
    c->stride = stride;
    c->mask = capacity && !(capacity & (capacity - 1)) ? capacity - 1 : 0;
    leash__copy_name(c->name, sizeof c->name, name ? name : "chan");
    *cp = c;
    return 0;
}

void leash_chan_free(leash_chan *c)
{
    if (!c)
        return;
    free(c->slots);
    free(c);
}

static inline bool is_closed(leash_chan *c)
{
    return atomic_load_explicit(&c->enq, memory_order_seq_cst) & 1;
}

/* Copies one element: memcpy with a size the compiler sees for the common
   sizes, so that it is a move and not a call. */
static inline void copy_elem(void *dst, const void *src, size_t n)
{
    if (n == 8)
        memcpy(dst, src, 8);
    else if (n == 4)
        memcpy(dst, src, 4);
    else
        memcpy(dst, src, n);
}

/* ------------------------------------------------------------ the ring */

static inline size_t ring_idx(const leash_chan *c, size_t pos)
{
    return c->mask ? pos & c->mask : pos % c->cap;
}

static inline struct rslot *ring_slot(leash_chan *c, size_t i)
{
    return (struct rslot *)(c->slots + i * c->stride);
}

static inline void *slot_data(struct rslot *r)
{
    return r + 1;
}

/* Puts elem at the senders' end. 1 put, 0 full (or the oldest slot not
   yet taken by its receiver), -EPIPE closed. */
static int ring_put(leash_chan *c, const void *elem)
{
    size_t e = atomic_load_explicit(&c->enq, memory_order_relaxed);
    for (;;) {
        if (e & 1)
            return -EPIPE;
        size_t        pos = e >> 1, i = ring_idx(c, pos);
        struct rslot *r = ring_slot(c, i);
        size_t        seq = atomic_load_explicit(&r->seq, memory_order_seq_cst) + 2 * i;
        ptrdiff_t     dif = (ptrdiff_t)(seq - 2 * pos);
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&c->enq, &e, e + 2, memory_order_relaxed,
                                                      memory_order_relaxed)) {
                copy_elem(slot_data(r), elem, c->elem_size);
                atomic_store_explicit(&r->seq, 2 * pos + 1 - 2 * i, memory_order_seq_cst);
                return 1;
            }
        } else if (dif < 0) {
            return 0;
        } else {
            e = atomic_load_explicit(&c->enq, memory_order_relaxed);
        }
    }
}

/* Takes the element at the receivers' end into elem. 1 taken, 0 empty (or
   the next element reserved by a sender that has not written it yet). */
static int ring_get(leash_chan *c, void *elem)
{
    size_t pos = atomic_load_explicit(&c->deq, memory_order_relaxed);
    for (;;) {
        size_t        i = ring_idx(c, pos);
        struct rslot *r = ring_slot(c, i);
        size_t        seq = atomic_load_explicit(&r->seq, memory_order_seq_cst) + 2 * i;
        ptrdiff_t     dif = (ptrdiff_t)(seq - (2 * pos + 1));
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&c->deq, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed)) {
                copy_elem(elem, slot_data(r), c->elem_size);
                atomic_store_explicit(&r->seq, 2 * (pos + c->cap) - 2 * i, memory_order_seq_cst);
                return 1;
            }
        } else if (dif < 0) {
            return 0;
        } else {
            pos = atomic_load_explicit(&c->deq, memory_order_relaxed);
        }
    }
}

/* ring_get, but an element that a sender reserved and is still writing is
   waited for: 0 only when nothing sent is left unreceived. Under the lock,
   where the answer decides whether a waiting sender's element may skip the
   ring (a sender's elements stay in order) or whether a receiver is told
   -EPIPE once the channel is closed. */
static int ring_get_all(leash_chan *c, void *elem)
{
    for (unsigned i = 0;; i++) {
        if (ring_get(c, elem))
            return 1;
        size_t d = atomic_load_explicit(&c->deq, memory_order_seq_cst);
        size_t e = atomic_load_explicit(&c->enq, memory_order_seq_cst) >> 1;
        if (d >= e)
            return 0;
        /* the writer is a few instructions from done, unless preempted */
        if (i < 64)
            leash__cpu_relax();
        else
            sched_yield();
    }
}

/* ------------------------------------------------------------ queues */

static void q_push(leash_chan *c, struct queue *q, struct sudog *s)
{
    s->next = NULL;
    s->prev = q->tail;
    if (q->tail)
        q->tail->next = s;
    else
        q->head = s;
    q->tail = s;
    if (c->cap) /* only a ring's lock-free operations look */
        atomic_fetch_add_explicit(&c->nwaiting, 1, memory_order_seq_cst);
}

static void q_remove(leash_chan *c, struct queue *q, struct sudog *s)
{
    if (s->prev == s)
        return; /* not queued */
    if (s->prev)
        s->prev->next = s->next;
    else
        q->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        q->tail = s->prev;
    s->prev = s;
    if (c->cap) /* seq_cst as the increment: the count is read Dekker-fashion */
        atomic_fetch_sub_explicit(&c->nwaiting, 1, memory_order_seq_cst);
}

/* The first waiter of q that can still be claimed, claimed and dequeued;
   stale ones (whose select fired elsewhere) are dropped. c->mu held. */
static struct sudog *q_claim(leash_chan *c, struct queue *q)
{
    struct sudog *s;
    while ((s = q->head) != NULL) {
        q_remove(c, q, s);
        int none = FIRED_NONE;
        if (atomic_compare_exchange_strong(&s->w->fired, &none, s->idx))
            return s;
    }
    return NULL;
}

/* Marks s's wait done, and wakes its task if it parks. Once the wait is
   done its waiter may return: s and its wait are gone. */
static void finish(struct sudog *s, int err)
{
    s->err = err;
    leash_task *t = s->w->task;
    if (atomic_exchange_explicit(&s->w->state, W_DONE, memory_order_acq_rel) == W_PARKING)
        leash__wake(t);
}

/* Whether no position of the ring is taken: nothing sent that is not
   received, not even an element a sender has reserved and is writing. A
   hand-off that skips the ring is only in order when this holds. */
static bool ring_empty(leash_chan *c)
{
    return atomic_load_explicit(&c->deq, memory_order_seq_cst) >=
           atomic_load_explicit(&c->enq, memory_order_seq_cst) >> 1;
}

/* Whether the ring has room (and is not closed), as far as a look without
   taking anything can tell. */
static bool ring_has_room(leash_chan *c)
{
    size_t e = atomic_load_explicit(&c->enq, memory_order_relaxed);
    if (e & 1)
        return false;
    size_t        pos = e >> 1, i = ring_idx(c, pos);
    struct rslot *r = ring_slot(c, i);
    return atomic_load_explicit(&r->seq, memory_order_acquire) + 2 * i == 2 * pos;
}

/* Buffered channels, c->mu held: ring elements go to waiting receivers,
   and waiting senders' elements into the ring, while both are there. A
   claimed waiter whose element or room a lock-free operation took first
   starts its operation again (RETRY). */
static void settle(leash_chan *c)
{
    struct sudog *s;
    while (c->recvq.head && !ring_empty(c) && (s = q_claim(c, &c->recvq)) != NULL) {
        if (!ring_get_all(c, s->elem)) {
            finish(s, RETRY);
            break;
        }
        finish(s, 0);
    }
    while (c->sendq.head && ring_has_room(c) && (s = q_claim(c, &c->sendq)) != NULL) {
        int r = ring_put(c, s->elem);
        finish(s, r == 1 ? 0 : r == 0 ? RETRY : r);
        if (r != 1)
            break;
    }
}

/* After a lock-free operation changed the ring: a waiter it may have
   passed is settled. */
static inline void settle_if_waiting(leash_chan *c)
{
    if (unlikely(atomic_load_explicit(&c->nwaiting, memory_order_seq_cst) != 0)) {
        leash__lock(&c->mu);
        settle(c);
        leash__unlock(&c->mu);
    }
}

/* Tries to complete a send at once. c->mu held. 1 done, 0 would block. */
static int try_send(leash_chan *c, const void *elem, int *err)
{
    if (is_closed(c)) {
        *err = -EPIPE;
        return 1;
    }
    if (c->cap)
        settle(c); /* elements already in the ring go first */
    /* straight to a waiting receiver, unless the ring holds an element */
    if (!c->cap || ring_empty(c)) {
        struct sudog *r = q_claim(c, &c->recvq);
        if (r) {
            copy_elem(r->elem, elem, c->elem_size);
            finish(r, 0);
            *err = 0;
            return 1;
        }
    }
    if (!c->cap)
        return 0;
    int r = ring_put(c, elem);
    *err = r < 0 ? r : 0;
    return r != 0;
}

/* Tries to complete a receive at once. c->mu held. 1 done, 0 would block. */
static int try_recv(leash_chan *c, void *elem, int *err)
{
    *err = 0;
    if (c->cap && ring_get_all(c, elem)) {
        settle(c); /* a waiting sender's element moves into the freed slot */
        return 1;
    }
    /* nothing in the ring, not even being written: a waiting sender's
       element is the oldest */
    struct sudog *s = q_claim(c, &c->sendq);
    if (s) {
        copy_elem(elem, s->elem, c->elem_size);
        finish(s, 0);
        return 1;
    }
    if (is_closed(c)) {
        *err = -EPIPE;
        return 1;
    }
    return 0;
}

/* A waiter just queued (c->mu held) looks at the ring once more: an
   element or room that a lock-free operation made before it saw the
   waiter. 1 done: the waiter must be dequeued, and then settle the
   channel (settled before, its own entries could be claimed). 0 wait. */
static int recheck(leash_chan *c, int op, void *elem, int *err)
{
    if (!c->cap)
        return 0;
    if (op == LEASH_SEND) {
        int r = ring_put(c, elem);
        *err = r < 0 ? r : 0;
        return r != 0;
    }
    if (!ring_get(c, elem))
        return 0;
    *err = 0;
    return 1;
}

int leash_chan_close(leash_chan *c)
{
    if (!c)
        return -EINVAL;
    leash__lock(&c->mu);
    if (is_closed(c)) {
        leash__unlock(&c->mu);
        return -EPIPE;
    }
    atomic_fetch_or_explicit(&c->enq, 1, memory_order_seq_cst);
    struct sudog *s;
    /* a waiting receiver still gets what the ring holds (an element that
       passed it just before the close) */
    while ((s = q_claim(c, &c->recvq)) != NULL)
        finish(s, c->cap && ring_get_all(c, s->elem) ? 0 : -EPIPE);
    while ((s = q_claim(c, &c->sendq)) != NULL)
        finish(s, -EPIPE);
    leash__unlock(&c->mu);
    return 0;
}

/* ------------------------------------------------------------ waiting */

static int cmp_chan(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (leash_chan *const *)a, y = (uintptr_t) * (leash_chan *const *)b;
    return x < y ? -1 : x > y;
}

/* The distinct channels of cases, in address order: the lock order. */
static size_t lock_order(const struct leash_case *cases, size_t n, leash_chan **out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (cases[i].chan)
            out[k++] = cases[i].chan;
    qsort(out, k, sizeof *out, cmp_chan);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (!u || out[u - 1] != out[i])
            out[u++] = out[i];
    return u;
}

static void lock_all(leash_chan **cs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        leash__lock(&cs[i]->mu);
}

static void unlock_all(leash_chan **cs, size_t n)
{
    for (size_t i = n; i-- > 0;)
        leash__unlock(&cs[i]->mu);
}

/*
 * Spins, then parks, until w is done, the scope ends or until_ns passes.
 * Returns 0 when done, else the reason; in that case the caller still has
 * to give up under the channel locks, and may find that a case completed
 * after all. Sets *recorded when it recorded the task as blocked (b).
 */
static int wait_done(leash_task *self, struct wait *w, int64_t until_ns, const struct blocked_on *b,
                     bool *recorded)
{
    int spin = leash__spin_budget();
    for (int i = 0; i < spin; i++) {
        if (atomic_load_explicit(&w->state, memory_order_acquire) == W_DONE)
            return 0;
        leash__cpu_relax();
    }
    int spinning = W_SPINNING;
    if (!atomic_compare_exchange_strong_explicit(&w->state, &spinning, W_PARKING,
                                                 memory_order_acq_rel, memory_order_acquire))
        return 0; /* done just now */
    leash__blocked(self, b->op, b->obj, b->file, b->line);
    *recorded = true;
    int64_t scope = leash__scope_deadline(self);
    int64_t until = until_ns < scope ? until_ns : scope;
    for (;;) {
        uint32_t seq = atomic_load_explicit(&self->wake, memory_order_seq_cst);
        if (atomic_load_explicit(&w->state, memory_order_acquire) == W_DONE)
            return 0;
        int err = leash__scope_err(self, true);
        if (err)
            return err;
        if (until_ns != INT64_MAX && leash__now_ns() >= until_ns)
            return -ETIMEDOUT;
        leash__park(self, seq, until);
    }
}

/* A uniform integer in [0, n): splitmix64 per thread, seeded by the clock
   and the thread, then Lemire's multiply-shift (no modulo bias to speak of). */
static size_t rnd_below(size_t n)
{
    static _Thread_local uint64_t x;
    if (!x)
        x = (uint64_t)leash__now_ns() ^ (uint64_t)(uintptr_t)&x;
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (size_t)(((z >> 32) * (uint64_t)n) >> 32);
}

#define SMALL 16

int leash_select_at(struct leash_case *cases, size_t n, int64_t timeout_ms, const char *file,
                    int line)
{
    if (n && !cases)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (cases[i].op != LEASH_SEND && cases[i].op != LEASH_RECV)
            return -EINVAL;
        if (cases[i].chan && !cases[i].elem)
            return -EINVAL;
    }
    leash_task *self = leash__self();
    if (!self)
        return -ENOMEM;
    int err = leash__scope_err(self, false);
    if (err)
        return err;

    leash_chan   *cs_small[SMALL];
    size_t        perm_small[SMALL];
    struct sudog  sg_small[SMALL];
    leash_chan  **cs = cs_small;
    size_t       *perm = perm_small;
    struct sudog *sg = sg_small;
    if (n > SMALL) {
        cs = malloc(n * sizeof *cs);
        perm = malloc(n * sizeof *perm);
        sg = malloc(n * sizeof *sg);
        if (!cs || !perm || !sg) {
            err = -ENOMEM;
            goto out;
        }
    }
    size_t  nc = lock_order(cases, n, cs);
    int64_t until = leash__deadline_after(timeout_ms);

again:
    /* a random order (Fisher-Yates), so no ready case starves another */
    for (size_t i = 0; i < n; i++) {
        size_t j = rnd_below(i + 1);
        perm[i] = perm[j];
        perm[j] = i;
    }
    lock_all(cs, nc);
    for (size_t k = 0; k < n; k++) {
        struct leash_case *cs_ = &cases[perm[k]];
        if (!cs_->chan)
            continue;
        int e;
        if (cs_->op == LEASH_SEND ? try_send(cs_->chan, cs_->elem, &e)
                                  : try_recv(cs_->chan, cs_->elem, &e)) {
            unlock_all(cs, nc);
            cs_->err = e;
            err = (int)perm[k];
            goto out;
        }
    }
    if (timeout_ms == 0 || (err = leash__scope_err(self, true)) != 0) {
        unlock_all(cs, nc);
        if (!err)
            err = -ETIMEDOUT;
        goto out;
    }

    /* Queued in the same random order: a partner that arrives later
       claims the first of our cases in its queue, so among the cases it
       could complete each is as likely (Go's rule holds for a waiting
       select too, not only at entry). */
    struct wait w = {.task = self, .fired = FIRED_NONE, .state = W_SPINNING};
    for (size_t i = 0; i < n; i++)
        sg[i] = (struct sudog){.w = &w, .idx = (int)i, .elem = cases[i].elem, .prev = &sg[i]};
    for (size_t k = 0; k < n; k++) {
        size_t      i = perm[k];
        leash_chan *c = cases[i].chan;
        if (c)
            q_push(c, cases[i].op == LEASH_SEND ? &c->sendq : &c->recvq, &sg[i]);
    }
    /* counted in: what lock-free operations did before that is looked at
       once more (all locks are held, so nothing can claim a case now) */
    bool rechecked = false;
    for (size_t k = 0; k < n; k++) {
        size_t i = perm[k];
        int    e;
        if (cases[i].chan && recheck(cases[i].chan, cases[i].op, cases[i].elem, &e)) {
            atomic_store_explicit(&w.fired, (int)i, memory_order_relaxed);
            rechecked = true;
            sg[i].err = e;
            break;
        }
    }
    struct blocked_on b = {LEASH_OP_SELECT, nc ? cs[0]->name : NULL, file, line};
    bool              recorded = false;
    if (atomic_load_explicit(&w.fired, memory_order_relaxed) == FIRED_NONE) {
        unlock_all(cs, nc);
        err = wait_done(self, &w, until, &b, &recorded);
        lock_all(cs, nc);
    }
    int none = FIRED_NONE;
    atomic_compare_exchange_strong(&w.fired, &none, FIRED_GAVE_UP);
    for (size_t i = 0; i < n; i++) {
        leash_chan *c = cases[i].chan;
        if (c)
            q_remove(c, cases[i].op == LEASH_SEND ? &c->sendq : &c->recvq, &sg[i]);
    }
    /* final: every case is off its queue, under every lock */
    int fired = atomic_load_explicit(&w.fired, memory_order_acquire);
    if (rechecked)
        settle(cases[fired].chan); /* a recheck took an element or room */
    unlock_all(cs, nc);
    if (recorded)
        leash__unblocked(self);
    if (fired >= 0) {
        if (sg[fired].err == RETRY) {
            /* claimed, then its element or room was gone: from the top,
               where a cancelled scope fails even a ready case */
            if ((err = leash__scope_err(self, false)) != 0)
                goto out;
            goto again;
        }
        /* completed, maybe just as we gave up: it counts */
        cases[fired].err = sg[fired].err;
        err = fired;
    }
out:
    if (n > SMALL) {
        free(cs);
        free(perm);
        free(sg);
    }
    return err;
}

/*
 * A sender that finds the ring full waits, while it spins and while the
 * receivers keep taking, until they are a quarter of the ring (at most
 * RING_SLACK slots) ahead, not one slot. Refilling each slot the moment it
 * is freed puts the two sides on the same line of slots, and that line
 * then crosses CPUs for every element (most repetitions of `leash_bench
 * --quick --reps 7 chan_buffered_leash` took 130-190 ns an element); with
 * the slack they work on lines a quarter of the ring apart, and took 30-80
 * ns in the same minutes (Go's 55-85). Receivers that took nothing since
 * the sender's last look end the wait: one that frees a slot and then
 * waits for the sender (a request and its reply) must not cost the sender
 * its whole spin budget (27-85 us a round trip instead of 1-3 us). A
 * receiver never delays an element it can take. Between looks either side
 * backs off, 1, 2, 4 ... RING_BACKOFF pauses, for the same reason: each
 * look takes the line from the side that writes it.
 */
#define RING_SLACK   256
#define RING_BACKOFF 16

static inline size_t ring_slack(const leash_chan *c)
{
    size_t h = c->cap / 4;
    return h < RING_SLACK ? h : RING_SLACK;
}

/* Whether the slot `ahead` positions past the senders' end is free for
   its send (or the channel closed): a look, taking nothing. */
static bool ring_free_ahead(leash_chan *c, size_t ahead)
{
    size_t e = atomic_load_explicit(&c->enq, memory_order_relaxed);
    if (e & 1)
        return true;
    size_t pos = (e >> 1) + ahead, i = ring_idx(c, pos);
    return atomic_load_explicit(&ring_slot(c, i)->seq, memory_order_relaxed) + 2 * i == 2 * pos;
}

/* The lock-free path of a buffered channel: while nobody waits, spins (as
   a waiter would, for the spin budget, in pauses) until the ring has the
   element or the room. 1 done (*err set), 0 go the locked way. */
static int ring_op(leash_chan *c, int op, void *elem, int *err)
{
    int  spin = 0, pause = 1;
    bool budget = false; /* read on the first miss only */
    for (;;) {
        if (atomic_load_explicit(&c->nwaiting, memory_order_relaxed) != 0)
            return 0; /* waiters are served in order, under the lock */
        int r = op == LEASH_SEND ? ring_put(c, elem) : ring_get(c, elem);
        if (r) {
            *err = r < 0 ? r : 0;
            if (r > 0)
                settle_if_waiting(c);
            return 1;
        }
        if (op == LEASH_RECV && (atomic_load_explicit(&c->enq, memory_order_relaxed) & 1))
            return 0; /* closed and drained: the locked way says so */
        if (!budget) {
            spin = leash__spin_budget();
            budget = true;
        }
        if (spin <= 0)
            return 0;
        size_t slack = op == LEASH_SEND ? ring_slack(c) : 0, seen = 0;
        if (slack)
            seen = atomic_load_explicit(&c->deq, memory_order_relaxed);
        for (;;) {
            for (int k = 0; k < pause; k++)
                leash__cpu_relax();
            spin -= pause;
            if (pause < RING_BACKOFF)
                pause <<= 1;
            if (!slack || spin <= 0 || ring_free_ahead(c, slack))
                break;
            /* receivers that stopped (waiting for this sender, say) will
               not free the slack: take the room there is */
            size_t d = atomic_load_explicit(&c->deq, memory_order_relaxed);
            if (d == seen)
                break;
            seen = d;
        }
    }
}

/* One operation on one channel: the fast path of send and recv, and a
   one-case wait when it has to block. */
static int chan_op(leash_chan *c, int op, void *elem, const char *file, int line)
{
    if (!c || !elem)
        return -EINVAL;
    leash_task *self = leash__self();
    if (!self)
        return -ENOMEM;
    for (;;) {
        int err = leash__scope_err(self, false);
        if (err)
            return err;
        int e;
        if (c->cap && ring_op(c, op, elem, &e))
            return e;
        leash__lock(&c->mu);
        if (op == LEASH_SEND ? try_send(c, elem, &e) : try_recv(c, elem, &e)) {
            leash__unlock(&c->mu);
            return e;
        }
        if ((err = leash__scope_err(self, true)) != 0) {
            leash__unlock(&c->mu);
            return err;
        }
        struct one_wait ow;
        struct wait    *w = &ow.w;
        struct sudog   *s = &ow.s;
        *w = (struct wait){.task = self, .fired = FIRED_NONE, .state = W_SPINNING};
        bool inl = c->elem_size <= INLINE_ELEM;
        *s = (struct sudog){.w = w, .idx = 0, .elem = inl ? ow.buf : elem, .prev = s};
        if (inl && op == LEASH_SEND)
            copy_elem(ow.buf, elem, c->elem_size);
        struct queue *q = op == LEASH_SEND ? &c->sendq : &c->recvq;
        q_push(c, q, s);
        if (recheck(c, op, elem, &e)) {
            q_remove(c, q, s);
            settle(c);
            leash__unlock(&c->mu);
            return e;
        }
        leash__unlock(&c->mu);

        struct blocked_on b = {op == LEASH_SEND ? LEASH_OP_CHAN_SEND : LEASH_OP_CHAN_RECV, c->name,
                               file, line};
        bool              recorded = false;
        err = wait_done(self, w, INT64_MAX, &b, &recorded);
        if (err) {
            leash__lock(&c->mu);
            int none = FIRED_NONE;
            if (!atomic_compare_exchange_strong(&w->fired, &none, FIRED_GAVE_UP))
                err = 0; /* completed after all: the data moved */
            q_remove(c, q, s);
            leash__unlock(&c->mu);
        }
        if (recorded)
            leash__unblocked(self);
        if (err)
            return err;
        if (s->err != RETRY) {
            if (inl && op == LEASH_RECV && s->err == 0)
                copy_elem(elem, ow.buf, c->elem_size);
            return s->err;
        }
    }
}

int leash_chan_send_at(leash_chan *c, const void *elem, const char *file, int line)
{
    return chan_op(c, LEASH_SEND, (void *)elem, file, line);
}

int leash_chan_recv_at(leash_chan *c, void *elem, const char *file, int line)
{
    return chan_op(c, LEASH_RECV, elem, file, line);
}
