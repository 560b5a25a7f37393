/*
 * group.c: groups, spawning, joining, cancellation and the cancellation
 * points that are not about channels or locks.
 *
 * Lock order: leash__groups_mu, then the pool's queue lock, then a
 * worker's batch lock, then a parent group's mu, then its kids' mu
 * (cancellation walks down the tree holding each level). The timer and the
 * interrupt registry take group locks after their own; a worker takes a
 * task's group lock under the queue lock, or under its batch lock for a
 * task of its batch (pool.c).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

leash__lock_t       leash__groups_mu = LEASH__LOCK_INIT;
struct leash_group *leash__groups;
_Atomic uint64_t    leash__groups_live;
_Atomic unsigned    leash__gen;
/* apart, so spawners and workers do not share a cache line for them */
_Alignas(64) _Atomic uint64_t leash__tasks_started;
_Alignas(64) _Atomic uint64_t leash__tasks_ended;

int leash__scope_err(leash_task *t, bool check_clock)
{
    struct leash_group *g = leash__node(t);
    if (!g)
        return 0;
    /* seq_cst: pairs with the canceller's store for fdwait's eventfd wake-up */
    int c = atomic_load_explicit(&g->cancel_cause, memory_order_seq_cst);
    if (c)
        return -c;
    /* a task stopped on its own is stopped from outside: not in a shield */
    if (unlikely(atomic_load_explicit(&t->stop, memory_order_seq_cst)) &&
        !atomic_load_explicit(&t->shield_level, memory_order_relaxed))
        return -ECANCELED;
    if (check_clock && g->deadline_ns != INT64_MAX && leash__now_ns() >= g->deadline_ns) {
        /* the timer thread may not have fired yet: do its work, so that
           what this task returns next is seen as the deadline's doing */
        struct leash_group *o = g->deadline_owner;
        if (!atomic_load_explicit(&o->cancel_cause, memory_order_relaxed))
            leash__cancel(o, ETIMEDOUT);
        return -atomic_load_explicit(&g->cancel_cause, memory_order_seq_cst);
    }
    return 0;
}

/*
 * The first cause wins, and a deadline that has passed came first even when
 * the timer has not fired yet: a cancel, a failing child or leashd that
 * finds g past its effective deadline finds it cancelled by that deadline.
 * now: 0 until read (at most once per cancellation, and only for a group
 * with a deadline).
 */
static void cancel_locked(struct leash_group *g, int cause, int64_t *now, bool *kick)
{
    if (cause != ETIMEDOUT && g->deadline_ns != INT64_MAX) {
        if (!*now)
            *now = leash__now_ns();
        if (*now >= g->deadline_ns)
            cause = ETIMEDOUT;
    }
    int zero = 0;
    /* seq_cst, then the count read seq_cst: pairs with count_in, which
       counts a child in, then reads the cause */
    if (!atomic_compare_exchange_strong(&g->cancel_cause, &zero, cause))
        return;
    leash__reg_group_cancelled(g, cause);
    uint64_t ended = atomic_load(&g->ended);
    g->cancel_cut = atomic_load(&g->spawned) - ended > 0 || cause != ETIMEDOUT;
    for (leash_task *t = g->tasks; t; t = t->gnext)
        leash__wake(t);
    for (struct leash_slotwait *s = g->slotwait; s; s = s->next)
        leash__wake(s->task);
    if (g->watcher)
        leash__wake(g->watcher);
    if (g->holder)
        leash__wake(g->holder); /* a scope's own task */
    if (g->interrupt) {
        atomic_store_explicit(&g->interrupting, true, memory_order_release);
        *kick = true;
    }
    for (struct leash_group *k = g->kids; k; k = k->knext) {
        leash__lock(&k->mu);
        cancel_locked(k, cause, now, kick);
        leash__unlock(&k->mu);
    }
}

void leash__cancel(struct leash_group *g, int cause)
{
    bool    kick = false;
    int64_t now = 0;
    leash__lock(&g->mu);
    cancel_locked(g, cause, &now, &kick);
    leash__unlock(&g->mu);
    if (kick)
        leash__intr_kick();
}

void leash_group_cancel(leash_group *g)
{
    if (g && !leash__dead(g))
        leash__cancel(g, ECANCELED);
}

void leash__task_cancel(struct leash_group *g, leash_task *t)
{
    /* set before taking g->mu: a group t opens after that lock is born
       cancelled, one it opened before is on g->kids */
    atomic_store_explicit(&t->stop, true, memory_order_seq_cst);
    bool    kick = false;
    int64_t now = 0;
    leash__lock(&g->mu);
    for (struct leash_group *k = g->kids; k; k = k->knext) {
        if (k->opener != t)
            continue;
        leash__lock(&k->mu);
        cancel_locked(k, ECANCELED, &now, &kick);
        leash__unlock(&k->mu);
    }
    leash__unlock(&g->mu);
    leash__wake(t);
    if (kick)
        leash__intr_kick();
}

int leash_group_open_at(leash_group **gp, const leash_group_opts *opts, const char *file, int line)
{
    return leash__group_open(gp, opts, file, line, -1);
}

int leash__node_link(struct leash_group *g, leash_task *self, struct leash_group *parent,
                     int64_t timeout_ms, bool detached)
{
    leash__agent_init(); /* after a fork, the child's agent starts here */
    g->opener = self;
    g->parent = parent;
    g->gen = atomic_load_explicit(&leash__gen, memory_order_relaxed);
    g->open_ns = leash__now_ns();
    g->heap_idx = SIZE_MAX;
    g->mu = (leash__lock_t)LEASH__LOCK_INIT;
    g->interrupt = (g->flags & LEASH_INTERRUPT) || (parent && parent->interrupt);

    int64_t own = INT64_MAX;
    if (timeout_ms > 0)
        own = timeout_ms > (INT64_MAX - g->open_ns) / 1000000 ? INT64_MAX
                                                              : g->open_ns + timeout_ms * 1000000;
    struct leash_group *up = detached ? NULL : parent; /* whose cancellation reaches g */
    int64_t             inherited = up ? up->deadline_ns : INT64_MAX;
    if (own < inherited) {
        g->deadline_ns = own;
        g->deadline_owner = g;
    } else {
        g->deadline_ns = inherited;
        g->deadline_owner = up ? up->deadline_owner : NULL;
    }

    int born_cancelled = 0;
    if (up) {
        leash__lock(&up->mu);
        born_cancelled = atomic_load_explicit(&up->cancel_cause, memory_order_relaxed);
        if (!born_cancelled && atomic_load_explicit(&self->stop, memory_order_relaxed) &&
            !atomic_load_explicit(&self->shield_level, memory_order_relaxed))
            born_cancelled = ECANCELED; /* its opener was stopped on its own */
        if (born_cancelled) {
            atomic_store_explicit(&g->cancel_cause, born_cancelled, memory_order_relaxed);
            g->cancel_cut = true;
        }
        g->knext = up->kids;
        if (up->kids)
            up->kids->kprev = g;
        up->kids = g;
        g->linked = true;
        leash__unlock(&up->mu);
    }

    leash__lock(&leash__groups_mu);
    g->rnext = leash__groups;
    if (leash__groups)
        leash__groups->rprev = g;
    leash__groups = g;
    leash__reg_group_open(g);
    leash__unlock(&leash__groups_mu);

    if (g->deadline_owner == g && !born_cancelled)
        leash__timer_add(g);
    if (g->interrupt) {
        leash__intr_register(g);
        if (born_cancelled) {
            atomic_store_explicit(&g->interrupting, true, memory_order_release);
            leash__intr_kick();
        }
    }
    if (leash__agent_wants()) {
        struct leash__aevent e = {
            .kind = LEASH_EV_GROUP_OPEN,
            .group = g->id,
            .parent = parent ? parent->id : 0,
            .task = self->id,
            .deadline_ms_left =
                g->deadline_ns == INT64_MAX ? -1 : (g->deadline_ns - g->open_ns) / 1000000,
            .file = g->open_file,
            .line = g->open_line,
            .strategy = g->strategy,
        };
        memcpy(e.name, g->name, sizeof e.name);
        leash__agent_push(&e);
    }
    return born_cancelled;
}

void leash__node_unlink(struct leash_group *g)
{
    leash__timer_remove(g);
    if (g->linked) {
        struct leash_group *p = g->parent;
        leash__lock(&p->mu);
        if (g->kprev)
            g->kprev->knext = g->knext;
        else
            p->kids = g->knext;
        if (g->knext)
            g->knext->kprev = g->kprev;
        leash__unlock(&p->mu);
    }
    /* A cancel marks g's registry slot under g->mu: once g lets go of the
       slot here, no cancel writes it, and the group that takes the slot
       next is not shown cancelled by a cancel of g. */
    leash__lock(&g->mu);
    struct leash_reg_group *slot = __atomic_load_n(&g->reg, __ATOMIC_RELAXED);
    __atomic_store_n(&g->reg, NULL, __ATOMIC_RELAXED);
    leash__unlock(&g->mu);
    leash__lock(&leash__groups_mu);
    if (g->rprev)
        g->rprev->rnext = g->rnext;
    else
        leash__groups = g->rnext;
    if (g->rnext)
        g->rnext->rprev = g->rprev;
    leash__reg_group_end(slot);
    leash__unlock(&leash__groups_mu);
    /* after leaving the registry: leashd's interrupt finds groups there */
    leash__intr_unregister(g);
    if (leash__agent_wants())
        leash__agent_push(&(struct leash__aevent){.kind = LEASH_EV_GROUP_END, .group = g->id});
}

int leash__group_open(struct leash_group **gp, const leash_group_opts *opts, const char *file,
                      int line, int strategy)
{
    static const leash_group_opts none;
    if (!gp)
        return -EINVAL;
    *gp = NULL;
    if (!opts)
        opts = &none;
    if (opts->timeout_ms < 0 || (opts->flags & ~(LEASH_COLLECT | LEASH_INTERRUPT)))
        return -EINVAL;
    leash_task *self = leash__self();
    if (!self)
        return -ENOMEM;
    struct leash_group *g = aligned_alloc(64, (sizeof *g + 63) & ~(size_t)63);
    if (!g)
        return -ENOMEM;
    memset(g, 0, sizeof *g);
    g->id = leash__next_id();
    leash__copy_name(g->name, sizeof g->name, opts->name ? opts->name : "group");
    g->open_file = file;
    g->open_line = line;
    g->flags = opts->flags;
    g->limit = opts->limit;
    g->strategy = strategy;
    /* inside the opener's innermost scope, if it has one */
    leash__node_link(g, self, leash__node(self), opts->timeout_ms, false);
    atomic_fetch_add_explicit(&leash__groups_live, 1, memory_order_relaxed);
    g->onext = self->opened;
    self->opened = g;
    *gp = g;
    return 0;
}

/* Takes t out of g (g->mu held) and counts it out. Returns the waiter to
   wake, if any, and in *slot a task waiting for a slot. */
static leash_task *unlink_task_locked(struct leash_group *g, leash_task *t, leash_task **slot)
{
    if (t->gprev)
        t->gprev->gnext = t->gnext;
    else
        g->tasks = t->gnext;
    if (t->gnext)
        t->gnext->gprev = t->gprev;
    atomic_fetch_add_explicit(&g->ended, 1, memory_order_release);
    *slot = g->slotwait ? g->slotwait->task : NULL;
    /* only a waiter needs the count: while the opener is still spawning,
       the spawner's line stays where it is */
    return g->waiter && leash__group_alive(g) == 0 ? g->waiter : NULL;
}

/* Waits, cancellably, until g has a free slot, and takes it (g->mu held on
   entry and return). Waiters take slots oldest first (as Go's errgroup,
   whose limit is a channel). -ECANCELED: g was cancelled meanwhile.
   -EDEADLK: the caller is a child of g, and every slot is held by a child
   of g that waits for one with no deadline to end its wait, itself
   included: no slot would ever come free. */
static int wait_slot(struct leash_group *g, leash_task *self, const char *file, int line)
{
    struct leash_slotwait sw = {.task = self};
    bool                  queued = false, kid = false;
    int                   err = 0;
    for (;;) {
        if (atomic_load_explicit(&g->cancel_cause, memory_order_relaxed)) {
            err = -ECANCELED;
            break;
        }
        /* a free slot is the oldest waiter's: a newer one leaves it */
        if (leash__group_alive(g) < g->limit && (!g->slotwait || g->slotwait == &sw)) {
            atomic_fetch_add_explicit(&g->spawned, 1, memory_order_relaxed);
            break;
        }
        /* waiting for a slot is a cancellation point of the caller's own scope */
        if ((err = leash__scope_err(self, false)) != 0)
            break;
        int64_t deadline = leash__scope_deadline(self);
        if (deadline <= leash__now_ns()) {
            /* past the deadline, before the timer fired: cancelling its owner
               walks down to g and takes g->mu, so not with it held */
            leash__unlock(&g->mu);
            err = leash__scope_err(self, true);
            leash__lock(&g->mu);
            if (err)
                break;
            continue;
        }
        if (!queued) {
            kid = self->group == g && deadline == INT64_MAX;
            if (kid && leash__group_alive(g) >= g->limit &&
                g->kids_waiting + 1 >= leash__group_alive(g)) {
                err = -EDEADLK;
                break;
            }
            sw.prev = g->slotwait_tail;
            if (g->slotwait_tail)
                g->slotwait_tail->next = &sw;
            else
                g->slotwait = &sw;
            g->slotwait_tail = &sw;
            g->kids_waiting += kid;
            queued = true;
        }
        uint32_t seq = atomic_load_explicit(&self->wake, memory_order_seq_cst);
        leash__blocked(self, LEASH_OP_GO, g->name, file, line);
        leash__unlock(&g->mu);
        leash__park(self, seq, deadline);
        leash__lock(&g->mu);
        leash__unblocked(self);
    }
    if (queued) {
        g->kids_waiting -= kid;
        if (sw.prev)
            sw.prev->next = sw.next;
        else
            g->slotwait = sw.next;
        if (sw.next)
            sw.next->prev = sw.prev;
        else
            g->slotwait_tail = sw.prev;
        /* two slots may have come free with one wake-up (each end wakes the
           oldest waiter): the next one looks too */
        if (g->slotwait && leash__group_alive(g) < g->limit)
            leash__wake(g->slotwait->task);
    }
    return err;
}

/* A child counted in that will not run after all (refused: g is cancelled). */
static void uncount(struct leash_group *g, bool refused)
{
    leash__lock(&g->mu);
    atomic_fetch_add_explicit(&g->ended, 1, memory_order_release);
    if (refused)
        g->refused = true;
    leash_task *w = g->waiter && leash__group_alive(g) == 0 ? g->waiter : NULL;
    leash_task *slot = g->slotwait ? g->slotwait->task : NULL;
    leash__unlock(&g->mu);
    if (w)
        leash__wake(w);
    if (slot)
        leash__wake(slot);
}

/*
 * Counts a child of g in, or refuses it. Against a cancel the two are
 * decided so that the cancel sees either the child alive (and the group's
 * wait reports the cut) or the spawn refused (and the wait reports why),
 * never neither. A deadline that has passed refuses the child even before
 * the timer fires: the answer does not depend on how late the timer runs.
 * try: -EAGAIN rather than waiting for a slot.
 */
static int count_in(struct leash_group *g, leash_task *self, bool try, const char *file, int line)
{
    if (g->limit) {
        /* slots are taken under g->mu, where cancels happen too */
        int err = 0;
        leash__lock(&g->mu);
        if (!atomic_load_explicit(&g->cancel_cause, memory_order_relaxed) &&
            g->deadline_ns != INT64_MAX && leash__now_ns() >= g->deadline_ns) {
            leash__unlock(&g->mu);
            leash__cancel(g->deadline_owner, ETIMEDOUT); /* the timer's work: see below */
            leash__lock(&g->mu);
        }
        if (atomic_load_explicit(&g->cancel_cause, memory_order_relaxed))
            err = -ECANCELED;
        else if (leash__group_alive(g) >= g->limit || g->slotwait)
            /* a slot that comes free is the oldest waiter's: a newcomer
               queues behind (Go's channel-backed limit hands it over too) */
            err = try ? -EAGAIN : wait_slot(g, self, file, line);
        else
            atomic_fetch_add_explicit(&g->spawned, 1, memory_order_relaxed);
        /* wait_slot also gives up when the caller's own scope ends: that
           cancels g only when g is inside that scope, with children alive */
        if (err && atomic_load_explicit(&g->cancel_cause, memory_order_relaxed))
            g->refused = true;
        leash__unlock(&g->mu);
        return err;
    }
    /* A Dekker pair with cancel_locked, without the lock: the spawner counts
       in, then reads the cause; a cancel sets the cause, then reads the
       count (all seq_cst). At least one of them sees the other. */
    atomic_fetch_add_explicit(&g->spawned, 1, memory_order_seq_cst);
    if (likely(!atomic_load_explicit(&g->cancel_cause, memory_order_seq_cst)) &&
        (g->deadline_ns == INT64_MAX || leash__now_ns() < g->deadline_ns))
        return 0;
    /* Its deadline has passed: do the timer's work, on the group whose
       deadline it is (g or one above it). Cancelling only g left that one
       uncancelled until the timer came, so its wait could miss that the
       deadline cut a child that was alive when it passed (its
       leash_group_wait said 0, not -ETIMEDOUT). */
    if (!atomic_load_explicit(&g->cancel_cause, memory_order_relaxed))
        leash__cancel(g->deadline_owner, ETIMEDOUT);
    uncount(g, true);
    return -ECANCELED;
}

int leash__go(leash_group *g, int (*fn)(void *), void *arg, const char *fn_name, const char *file,
              int line, bool try)
{
    if (!g || !fn)
        return -EINVAL;
    if (leash__dead(g))
        return -ECHILD; /* inherited from the parent of a fork */
    leash_task *self = leash__self();
    if (!self)
        return -ENOMEM;
    int err = count_in(g, self, try, file, line);
    if (err)
        return err;
    leash_task *t = leash__task_alloc();
    if (!t) {
        uncount(g, false);
        return -ENOMEM;
    }
    t->fn = fn;
    t->arg = arg;
    t->fn_name = fn_name ? fn_name : "?";
    t->spawn_file = file;
    t->spawn_line = line;
    t->group = g;
    leash__reg_spawn(t, g->id);
    atomic_fetch_add_explicit(&leash__tasks_started, 1, memory_order_relaxed);
    if (leash__agent_wants())
        leash__agent_push(&(struct leash__aevent){.kind = LEASH_EV_TASK_START,
                                                  .task = t->id,
                                                  .group = g->id,
                                                  .fn = t->fn_name,
                                                  .file = file,
                                                  .line = line});
    return leash__pool_submit(t, self->root);
}

int leash_go_at(leash_group *g, int (*fn)(void *), void *arg, const char *fn_name, const char *file,
                int line)
{
    return leash__go(g, fn, arg, fn_name, file, line, false);
}

int leash_try_go_at(leash_group *g, int (*fn)(void *), void *arg, const char *fn_name,
                    const char *file, int line)
{
    return leash__go(g, fn, arg, fn_name, file, line, true);
}

/* The worker puts t on its group's list while it holds the lock of where t
   waited (the pool's queue, or the worker's batch), having just taken t
   from there: a dump, which holds those locks while it walks the list and
   the queued tasks, finds t in one or the other, never in neither. */
void (*leash__begin_hook)(void *arg);

void leash__task_begin(leash_task *t)
{
    struct leash_group *g = t->group;
    if (unlikely(leash__begin_hook != NULL))
        leash__begin_hook(t->arg);
    leash__lock(&g->mu);
    t->gprev = NULL;
    t->gnext = g->tasks;
    if (g->tasks)
        g->tasks->gprev = t;
    g->tasks = t;
    leash__unlock(&g->mu);
}

void leash__task_done(leash_task *t, int rc)
{
    struct leash_group *g = t->group;
    if (unlikely(!g)) {
        /* it forked, and this is the child: its group stayed behind */
        leash__task_forked_done(t);
        return;
    }
    bool        kick = false;
    leash_task *slot;
    uint64_t    gid = g->id;
    /* out of the registry before the waiter can see the group empty: once
       leash_group_wait returns, no child of the group shows as live there
       (a root task leaves it in root_exit) */
    leash__reg_task_dead(t);
    if (rc != 0 && g->deadline_ns != INT64_MAX &&
        !atomic_load_explicit(&g->cancel_cause, memory_order_relaxed) &&
        leash__now_ns() >= g->deadline_ns) {
        /* past the deadline the group is cancelled, timer or not: the
           timer's work, on the group whose deadline it is, before g's lock
           (that group is g or above it; while t lives, neither goes) */
        leash__cancel(g->deadline_owner, ETIMEDOUT);
    }
    leash__lock(&g->mu);
    if (rc != 0 && !atomic_load_explicit(&g->cancel_cause, memory_order_relaxed) && !g->first_err) {
        int64_t now = 0;
        if (g->deadline_ns != INT64_MAX && (now = leash__now_ns()) >= g->deadline_ns) {
            /* past the deadline the group is cancelled, timer or not: what
               the child returns now is the deadline's consequence */
            cancel_locked(g, ETIMEDOUT, &now, &kick);
        } else {
            g->first_err = rc;
            if (!(g->flags & LEASH_COLLECT))
                cancel_locked(g, ECANCELED, &now, &kick);
        }
    }
    /* counted out before the waiter can see the group empty */
    atomic_fetch_add_explicit(&leash__tasks_ended, 1, memory_order_relaxed);
    leash_task *w = unlink_task_locked(g, t, &slot);
    leash__unlock(&g->mu);
    /* from here g may be freed by its waiter: touch only tasks. The event
       goes after the task left every list a snapshot reads, so a snapshot
       taken after it was queued never shows the task (see agent.c). */
    if (leash__agent_wants())
        leash__agent_push(
            &(struct leash__aevent){.kind = LEASH_EV_TASK_END, .task = t->id, .group = gid});
    if (w)
        leash__wake(w);
    if (slot)
        leash__wake(slot);
    if (kick)
        leash__intr_kick();
    leash__task_free(t);
}

int leash__group_wait(struct leash_group *g, leash_task *self, const char *file, int line)
{
    leash__blocked(self, LEASH_OP_GROUP_WAIT, g->name, file, line);
    /* Only when whatever ends the waiter's scope also cancels g (g is a
       child of the waiter's innermost scope): a child run here that blocks
       keeps this thread, so the waiter could not cancel g itself. */
    bool run_here = leash__group_alive(g) > 0 && g->parent == leash__node(self) &&
                    leash__pool_can_run_here(g->interrupt);
    leash__lock(&g->mu);
    while (leash__group_alive(g) > 0) {
        if (run_here) {
            /* a child still queued runs here and now, not after a wake-up */
            leash__unlock(&g->mu);
            bool ran = leash__pool_run_one_of(g, self);
            leash__lock(&g->mu);
            if (ran)
                continue;
        }
        g->waiter = self;
        uint32_t seq = atomic_load_explicit(&self->wake, memory_order_seq_cst);
        /* no spinning: the waiter would take a CPU from the very children
           it waits for */
        leash__unlock(&g->mu);
        /* never cut short: the caller's scope ending (its deadline, a
           cancel) cancels the group, which then still has to be joined. A
           group opened before the caller's innermost scope is not inside
           it, so that cancel does not reach it by itself: without this the
           wait outlived the scope, parked again and again on a deadline
           already past. */
        int serr = leash__scope_err(self, true);
        if (serr && !atomic_load_explicit(&g->cancel_cause, memory_order_relaxed))
            leash__cancel(g, -serr);
        if (g->deadline_ns != INT64_MAX && leash__now_ns() >= g->deadline_ns)
            leash__cancel(g->deadline_owner, ETIMEDOUT);
        int64_t until = g->deadline_ns;
        if (!atomic_load_explicit(&g->cancel_cause, memory_order_relaxed)) {
            int64_t mine = leash__scope_deadline(self);
            if (mine < until)
                until = mine;
        } else {
            until = INT64_MAX;
        }
        if (leash__group_alive(g) > 0)
            leash__park(self, seq, until);
        leash__lock(&g->mu);
    }
    g->waiter = NULL;
    leash__unlock(&g->mu);
    leash__unblocked(self);

    leash__node_unlink(g);
    for (struct leash_group **pp = &self->opened; *pp; pp = &(*pp)->onext) {
        if (*pp == g) {
            *pp = g->onext;
            break;
        }
    }
    atomic_fetch_sub_explicit(&leash__groups_live, 1, memory_order_relaxed);

    int cause = atomic_load_explicit(&g->cancel_cause, memory_order_relaxed);
    int rc = 0;
    if (g->first_err)
        rc = g->first_err;
    else if (cause && (g->cancel_cut || g->refused))
        rc = -cause;
    free(g);
    return rc;
}

int leash_group_wait_at(leash_group *g, const char *file, int line)
{
    if (!g)
        return -EINVAL;
    leash_task *self = leash__self();
    if (!self)
        return -ENOMEM;
    if (leash__dead(g)) {
        leash__group_forget(g, self);
        return -ECHILD;
    }
    if (g->opener != self)
        return -EPERM;
    return leash__group_wait(g, self, file, line);
}

/* A group inherited across a fork: its children, lists and locks are the
   parent's, so it is only taken off self's list. Its memory is kept, as the
   rest of the parent's runtime is: the parent's task records hang off it. */
void leash__group_forget(struct leash_group *g, leash_task *self)
{
    static leash__lock_t       kept_mu = LEASH__LOCK_INIT;
    static struct leash_group *kept;
    for (struct leash_group **pp = &self->opened; *pp; pp = &(*pp)->onext) {
        if (*pp == g) {
            *pp = g->onext;
            break;
        }
    }
    leash__lock(&kept_mu);
    g->onext = kept;
    kept = g;
    leash__unlock(&kept_mu);
}

void leash__group_atfork(int phase)
{
    switch (phase) {
    case LEASH_FORK_PREPARE: leash__lock(&leash__groups_mu); break;
    case LEASH_FORK_PARENT: leash__unlock(&leash__groups_mu); break;
    case LEASH_FORK_CHILD:
        leash__groups_mu = (leash__lock_t)LEASH__LOCK_INIT;
        if (leash__groups)
            leash__fork_kept[LEASH_KEPT_GROUPS] = leash__groups;
        leash__groups = NULL;
        atomic_store(&leash__groups_live, 0);
        atomic_store(&leash__tasks_started, 0);
        atomic_store(&leash__tasks_ended, 0);
        atomic_fetch_add(&leash__gen, 1);
        break;
    }
}

/* --------------------------------------------------- cancellation points */

int leash_checkpoint(void)
{
    leash_task *t = leash__self_tls;
    return t ? leash__scope_err(t, true) : 0;
}

int64_t leash_deadline(void)
{
    leash_task *t = leash__self_tls;
    int64_t     d = t ? leash__scope_deadline(t) : INT64_MAX;
    return d == INT64_MAX ? INT64_MAX : d / 1000000;
}

int leash_sleep_at(int64_t ms, const char *file, int line)
{
    leash_task *self = leash__self();
    if (!self)
        return -ENOMEM;
    int err = leash__scope_err(self, true);
    if (err || ms <= 0)
        return err;
    int64_t until = leash__deadline_after(ms);
    int64_t scope = leash__scope_deadline(self);
    leash__blocked(self, LEASH_OP_SLEEP, NULL, file, line);
    for (;;) {
        uint32_t seq = atomic_load_explicit(&self->wake, memory_order_seq_cst);
        if ((err = leash__scope_err(self, true)) != 0)
            break;
        if (leash__now_ns() >= until)
            break;
        leash__park(self, seq, until < scope ? until : scope);
    }
    leash__unblocked(self);
    return err;
}

static int ms_until(int64_t abs_ns)
{
    if (abs_ns == INT64_MAX)
        return -1;
    int64_t left = abs_ns - leash__now_ns();
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999999) / 1000000;
    return ms > 1000000000 ? 1000000000 : (int)ms;
}

int leash_fdwait_at(int fd, short events, int64_t timeout_ms, const char *file, int line)
{
    if (fd < 0 || events == 0)
        return -EINVAL;
    leash_task *self = leash__self();
    if (!self)
        return -ENOMEM;
    int err = leash__scope_err(self, true);
    if (err)
        return err;
    if (self->wake_fd < 0) {
        self->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (self->wake_fd < 0)
            return -errno;
    }
    int64_t until = leash__deadline_after(timeout_ms);
    int64_t scope = leash__scope_deadline(self);
    if (scope < until)
        until = scope;
    struct pollfd pfd[2] = {
        {.fd = fd, .events = events},
        {.fd = self->wake_fd, .events = POLLIN},
    };
    leash__blocked(self, LEASH_OP_FDWAIT, NULL, file, line);
    atomic_store_explicit(&self->in_poll, 1, memory_order_seq_cst);
    int rc;
    for (;;) {
        if ((rc = leash__scope_err(self, true)) != 0)
            break;
        leash__pool_park_begin(self);
        int n = poll(pfd, 2, ms_until(until));
        leash__pool_park_end(self);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        if (pfd[1].revents) {
            uint64_t v;
            ssize_t  r = read(self->wake_fd, &v, sizeof v);
            (void)r;
        }
        if (pfd[0].revents) {
            rc = pfd[0].revents;
            if (pfd[0].revents & POLLNVAL)
                rc = -EBADF;
            break;
        }
        if (n == 0 && leash__now_ns() >= until) {
            rc = leash__scope_err(self, true);
            if (!rc)
                rc = -ETIMEDOUT;
            break;
        }
    }
    atomic_store_explicit(&self->in_poll, 0, memory_order_relaxed);
    leash__unblocked(self);
    return rc;
}

/* ------------------------------------------------------- asked by leashd */

void leash__cancel_by_id(uint64_t id)
{
    leash__lock(&leash__groups_mu);
    for (struct leash_group *g = leash__groups; g; g = g->rnext)
        if (id ? g->id == id : g->parent == NULL)
            leash__cancel(g, ECANCELED);
    leash__unlock(&leash__groups_mu);
}

bool leash__group_probe(uint64_t id, int64_t *deadline_ns, uint64_t *alive)
{
    bool found = false;
    leash__lock(&leash__groups_mu);
    for (struct leash_group *g = leash__groups; g; g = g->rnext) {
        if (g->id != id)
            continue;
        found = true;
        *deadline_ns = g->deadline_ns;
        *alive = leash__group_alive(g);
        break;
    }
    leash__unlock(&leash__groups_mu);
    return found;
}

static bool within(const struct leash_group *g, uint64_t id)
{
    for (; g; g = g->parent)
        if (g->id == id)
            return true;
    return id == 0;
}

void leash__interrupt_by_id(uint64_t id)
{
    /* under the registry lock no group found there can be torn down (see
       leash__group_wait), so registering one for interrupts is safe */
    bool any = false;
    leash__lock(&leash__groups_mu);
    for (struct leash_group *g = leash__groups; g; g = g->rnext) {
        if (!within(g, id))
            continue;
        leash__intr_register(g);
        atomic_store_explicit(&g->interrupting, true, memory_order_release);
        any = true;
    }
    leash__unlock(&leash__groups_mu);
    if (any)
        leash__intr_kick();
}
