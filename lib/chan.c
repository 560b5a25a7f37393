/*
 * chan.c: channels and select, after Go's runtime/chan.go.
 *
 * A channel is a ring buffer and two queues of waiters under one lock. A
 * blocked operation (or a whole select) shares one `struct wait`: whoever
 * completes one of its cases first claims it with a compare-and-swap on
 * `fired`, copies the element while holding that case's channel lock, then
 * marks the wait done. A waiter that gives up (cancelled, timed out) claims
 * `fired` for itself under every channel lock of its cases, so a case is
 * completed by exactly one side.
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
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define FIRED_NONE    (-1)
#define FIRED_GAVE_UP (-2)

/* wait.state */
#define W_SPINNING 0 /* the waiter spins on state: no wake-up needed */
#define W_PARKING  1 /* the waiter parks (or is about to): wake it */
#define W_DONE     2 /* the claimer has finished copying */

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
    int           idx;
    void         *elem; /* send: the source; recv: the destination */
    int           err;  /* 0, or -EPIPE (closed) */
    bool          queued;
    struct sudog *next, *prev;
};

struct queue {
    struct sudog *head, *tail;
};

struct leash_chan {
    leash__lock_t mu;
    size_t        elem_size, cap;
    size_t        head, count;
    bool          closed;
    struct queue  sendq, recvq;
    char         *buf;
    char          name[48];
};

int leash_chan_open(leash_chan **cp, const char *name, size_t elem_size, size_t capacity)
{
    if (!cp)
        return -EINVAL;
    *cp = NULL;
    if (elem_size == 0 || (capacity && elem_size > SIZE_MAX / capacity))
        return -EINVAL;
    leash_chan *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    if (capacity && !(c->buf = malloc(elem_size * capacity))) {
        free(c);
        return -ENOMEM;
    }
    c->mu = (leash__lock_t)LEASH__LOCK_INIT;
    c->elem_size = elem_size;
    c->cap = capacity;
    leash__copy_name(c->name, sizeof c->name, name ? name : "chan");
    *cp = c;
    return 0;
}

void leash_chan_free(leash_chan *c)
{
    if (!c)
        return;
    free(c->buf);
    free(c);
}

static void q_push(struct queue *q, struct sudog *s)
{
    s->queued = true;
    s->next = NULL;
    s->prev = q->tail;
    if (q->tail)
        q->tail->next = s;
    else
        q->head = s;
    q->tail = s;
}

static void q_remove(struct queue *q, struct sudog *s)
{
    if (!s->queued)
        return;
    s->queued = false;
    if (s->prev)
        s->prev->next = s->next;
    else
        q->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        q->tail = s->prev;
}

/* The first waiter of q that can still be claimed, claimed and dequeued;
   stale ones (whose select fired elsewhere) are dropped. c->mu held. */
static struct sudog *q_claim(struct queue *q)
{
    struct sudog *s;
    while ((s = q->head) != NULL) {
        q_remove(q, s);
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

static inline char *slot(leash_chan *c, size_t i)
{
    return c->buf + ((c->head + i) % c->cap) * c->elem_size;
}

/* Tries to complete a send at once. c->mu held. 1 done, 0 would block. */
static int try_send(leash_chan *c, const void *elem, int *err)
{
    if (c->closed) {
        *err = -EPIPE;
        return 1;
    }
    struct sudog *r = q_claim(&c->recvq);
    if (r) {
        memcpy(r->elem, elem, c->elem_size);
        finish(r, 0);
        *err = 0;
        return 1;
    }
    if (c->count < c->cap) {
        memcpy(slot(c, c->count), elem, c->elem_size);
        __atomic_store_n(&c->count, c->count + 1, __ATOMIC_RELAXED);
        *err = 0;
        return 1;
    }
    return 0;
}

/* Tries to complete a receive at once. c->mu held. 1 done, 0 would block. */
static int try_recv(leash_chan *c, void *elem, int *err)
{
    if (c->count) {
        memcpy(elem, slot(c, 0), c->elem_size);
        c->head = (c->head + 1) % c->cap;
        __atomic_store_n(&c->count, c->count - 1, __ATOMIC_RELAXED);
        /* a blocked sender's element moves into the freed slot */
        struct sudog *s = q_claim(&c->sendq);
        if (s) {
            memcpy(slot(c, c->count), s->elem, c->elem_size);
            __atomic_store_n(&c->count, c->count + 1, __ATOMIC_RELAXED);
            finish(s, 0);
        }
        *err = 0;
        return 1;
    }
    struct sudog *s = q_claim(&c->sendq);
    if (s) {
        memcpy(elem, s->elem, c->elem_size);
        finish(s, 0);
        *err = 0;
        return 1;
    }
    if (c->closed) {
        *err = -EPIPE;
        return 1;
    }
    return 0;
}

int leash_chan_close(leash_chan *c)
{
    if (!c)
        return -EINVAL;
    leash__lock(&c->mu);
    if (c->closed) {
        leash__unlock(&c->mu);
        return -EPIPE;
    }
    c->closed = true;
    struct sudog *s;
    while ((s = q_claim(&c->recvq)) != NULL)
        finish(s, -EPIPE);
    while ((s = q_claim(&c->sendq)) != NULL)
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
    /* a random order (Fisher-Yates), so no ready case starves another */
    for (size_t i = 0; i < n; i++) {
        size_t j = rnd_below(i + 1);
        perm[i] = perm[j];
        perm[j] = i;
    }
    size_t  nc = lock_order(cases, n, cs);
    int64_t until = leash__deadline_after(timeout_ms);

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
        sg[i] = (struct sudog){.w = &w, .idx = (int)i, .elem = cases[i].elem};
    for (size_t k = 0; k < n; k++) {
        size_t i = perm[k];
        if (cases[i].chan)
            q_push(cases[i].op == LEASH_SEND ? &cases[i].chan->sendq : &cases[i].chan->recvq,
                   &sg[i]);
    }
    struct blocked_on b = {LEASH_OP_SELECT, nc ? cs[0]->name : NULL, file, line};
    bool              recorded = false;
    unlock_all(cs, nc);

    err = wait_done(self, &w, until, &b, &recorded);

    lock_all(cs, nc);
    int none = FIRED_NONE;
    atomic_compare_exchange_strong(&w.fired, &none, FIRED_GAVE_UP);
    for (size_t i = 0; i < n; i++)
        if (cases[i].chan)
            q_remove(cases[i].op == LEASH_SEND ? &cases[i].chan->sendq : &cases[i].chan->recvq,
                     &sg[i]);
    unlock_all(cs, nc);
    if (recorded)
        leash__unblocked(self);
    int fired = atomic_load_explicit(&w.fired, memory_order_acquire);
    if (fired >= 0) {
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

/* One operation on one channel: the fast path of send and recv, and a
   one-case wait when it has to block. */
static int chan_op(leash_chan *c, int op, void *elem, const char *file, int line)
{
    if (!c || !elem)
        return -EINVAL;
    leash_task *self = leash__self();
    if (!self)
        return -ENOMEM;
    int err = leash__scope_err(self, false);
    if (err)
        return err;
    leash__lock(&c->mu);
    int e;
    if (op == LEASH_SEND ? try_send(c, elem, &e) : try_recv(c, elem, &e)) {
        leash__unlock(&c->mu);
        return e;
    }
    if ((err = leash__scope_err(self, true)) != 0) {
        leash__unlock(&c->mu);
        return err;
    }
    struct wait   w = {.task = self, .fired = FIRED_NONE, .state = W_SPINNING};
    struct sudog  s = {.w = &w, .idx = 0, .elem = elem};
    struct queue *q = op == LEASH_SEND ? &c->sendq : &c->recvq;
    q_push(q, &s);
    leash__unlock(&c->mu);

    struct blocked_on b = {op == LEASH_SEND ? LEASH_OP_CHAN_SEND : LEASH_OP_CHAN_RECV, c->name,
                           file, line};
    bool              recorded = false;
    err = wait_done(self, &w, INT64_MAX, &b, &recorded);
    if (err) {
        leash__lock(&c->mu);
        int none = FIRED_NONE;
        if (!atomic_compare_exchange_strong(&w.fired, &none, FIRED_GAVE_UP))
            err = 0; /* completed after all: the data moved */
        q_remove(q, &s);
        leash__unlock(&c->mu);
    }
    if (recorded)
        leash__unblocked(self);
    return err ? err : s.err;
}

int leash_chan_send_at(leash_chan *c, const void *elem, const char *file, int line)
{
    return chan_op(c, LEASH_SEND, (void *)elem, file, line);
}

int leash_chan_recv_at(leash_chan *c, void *elem, const char *file, int line)
{
    return chan_op(c, LEASH_RECV, elem, file, line);
}
