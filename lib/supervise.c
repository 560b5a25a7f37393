/*
 * supervise.c: supervisors, Erlang/OTP's (strategies, restart types,
 * intensity within a period) with Akka's exponential backoff, built on a
 * group. The children are tasks of the supervisor's group; the supervisor is
 * the task that called leash_supervise, parked on its own wake word. A child
 * that ends says so under the supervisor's lock and wakes it; the
 * supervisor alone decides, so every restart is taken in one thread.
 *
 * Lock order: sup.mu, then the group's locks (leash__task_cancel).
 */
#define _GNU_SOURCE
#include "internal.h"
#include "snapshot.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum {
    C_IDLE,    /* not running, not to be started (before start, or stopped for a restart) */
    C_RUNNING, /* started; its end not yet seen */
    C_ENDED,   /* ended on its own; not yet handled */
    C_PENDING, /* to be started again at due_ns */
    C_DONE,    /* ended, not to be restarted */
};

struct sup;

struct sup_child {
    const leash_child_spec *spec;
    const char             *name; /* interned: task records and agent events keep it */
    struct sup             *sup;
    /* the supervisor's own view, touched by it alone */
    int      state;
    int64_t  start_ns;
    int64_t  due_ns;
    unsigned fails; /* consecutive restarts, the backoff's exponent */
    /* guarded by sup.mu: what the running instance says */
    leash_task *task;     /* the instance, once it runs and until it has ended */
    uint64_t    task_id;  /* the latest instance's */
    bool        stop_req; /* stopped before or while it ran */
    bool        ended;
    int         rc;
};

struct sup {
    leash__lock_t       mu;
    leash_task         *self;
    struct leash_group *g;
    const char         *file;
    int                 line;
    int                 strategy;
    unsigned            intensity;
    int64_t             period_ns;
    int64_t             bmin_ms, bmax_ms;
    struct sup_child   *c;
    size_t              n;
    int64_t            *ts; /* when the restarts of the current window were decided: */
    size_t              tshead, nts, tscap; /* a ring, oldest at tshead */
    uint64_t            rng;
};

/* ------------------------------------------------------------ child names */

/* Child names become task names, which dumps and queued agent events read
   after leash_supervise has returned: they live as long as the process. A
   service has few; past INTERN_MAX distinct ones, children are "child". */
#define INTERN_MAX 256
static leash__lock_t intern_mu = LEASH__LOCK_INIT;
static char         *interned[INTERN_MAX];
static size_t        ninterned;

static const char *intern(const char *name)
{
    char buf[48];
    leash__copy_name(buf, sizeof buf, name ? name : "child");
    const char *r = NULL;
    leash__lock(&intern_mu);
    for (size_t i = 0; i < ninterned && !r; i++)
        if (strcmp(interned[i], buf) == 0)
            r = interned[i];
    if (!r && ninterned < INTERN_MAX && (interned[ninterned] = strdup(buf)) != NULL)
        r = interned[ninterned++];
    leash__unlock(&intern_mu);
    return r ? r : "child";
}

/* ---------------------------------------------------------------- backoff */

static uint64_t next_rand(struct sup *s)
{
    /* xorshift64*: jitter needs spread, not secrecy */
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* The delay before the restart that follows k consecutive ones, ms:
   min(min_ms * 2^k, max_ms), +-20% drawn from r. Not static: the tests
   check the formula itself, which timing alone cannot pin down. */
LEASH__HIDDEN int64_t leash__sup_backoff_ms(int64_t min_ms, int64_t max_ms, unsigned k, uint64_t r);
int64_t               leash__sup_backoff_ms(int64_t min_ms, int64_t max_ms, unsigned k, uint64_t r)
{
    if (min_ms <= 0)
        return 0;
    if (max_ms < min_ms)
        max_ms = min_ms; /* 0: a fixed delay */
    int64_t d = min_ms;
    for (unsigned i = 0; i < k && d < max_ms; i++)
        d = d > max_ms / 2 ? max_ms : d * 2;
    int64_t  j = d / 5;
    int64_t  lo = d - j;
    uint64_t x = r % (uint64_t)(2 * j + 1);
    /* d near INT64_MAX (a backoff meant as "never"): d + j does not fit */
    return x > (uint64_t)(INT64_MAX - lo) ? INT64_MAX : lo + (int64_t)x;
}

static int64_t after_ms(int64_t now, int64_t ms)
{
    return ms > (INT64_MAX - now) / 1000000 ? INT64_MAX : now + ms * 1000000;
}

/* ------------------------------------------------------------- a child */

static int child_main(void *arg)
{
    struct sup_child *c = arg;
    struct sup       *s = c->sup;
    leash_task       *self = leash__self_tls;
    leash__lock(&s->mu);
    bool stopped = c->stop_req;
    if (!stopped)
        c->task = self;
    c->task_id = self->id;
    leash__unlock(&s->mu);
    int rc = stopped ? -ECANCELED : c->spec->fn(c->spec->arg);
    /* its unwaited groups joined and its locks given up here, so that an
       end the supervisor sees is a child joined */
    leash__task_exit(self);
    leash__lock(&s->mu);
    c->task = NULL;
    c->ended = true;
    c->rc = rc;
    leash_task *w = s->self;
    leash__unlock(&s->mu);
    /* s lives until the supervisor has joined the group, so after us */
    leash__wake(w);
    return 0; /* the group collects nothing: the supervisor keeps rc */
}

static int start_child(struct sup *s, struct sup_child *c)
{
    leash__lock(&s->mu);
    c->task = NULL;
    c->stop_req = false;
    c->ended = false;
    leash__unlock(&s->mu);
    c->state = C_RUNNING;
    c->start_ns = leash__now_ns();
    int err = leash_go_at(s->g, child_main, c, c->name, s->file, s->line);
    if (err == -ECANCELED) {
        c->state = C_IDLE; /* the group is cancelled: the loop sees why */
        return err;
    }
    if (err) { /* no memory: a child that failed at once */
        leash__lock(&s->mu);
        c->ended = true;
        c->rc = err;
        leash__unlock(&s->mu);
    }
    return 0;
}

/* Waits, never cut short (as leash_group_wait), until c's instance has ended. */
static void join_child(struct sup *s, struct sup_child *c)
{
    leash_task *self = s->self;
    leash__blocked(self, LEASH_OP_GROUP_WAIT, s->g->name, s->file, s->line);
    for (;;) {
        uint32_t seq = atomic_load_explicit(&self->wake, memory_order_seq_cst);
        leash__lock(&s->mu);
        bool ended = c->ended;
        leash__unlock(&s->mu);
        if (ended)
            break;
        leash__park(self, seq, INT64_MAX);
    }
    leash__unblocked(self);
    c->state = C_IDLE;
}

/* Cancels c on its own and joins it. */
static void stop_child(struct sup *s, struct sup_child *c)
{
    leash__lock(&s->mu);
    if (!c->ended) {
        c->stop_req = true;
        if (c->task)
            leash__task_cancel(s->g, c->task);
    }
    leash__unlock(&s->mu);
    join_child(s, c);
}

/* Every running child, in reverse spec order (OTP's shutdown order), each
   joined before the next: cancelled on its own first when cancel. */
static void stop_all(struct sup *s, bool cancel)
{
    for (size_t i = s->n; i-- > 0;) {
        struct sup_child *c = &s->c[i];
        if (c->state == C_RUNNING) {
            if (cancel)
                stop_child(s, c);
            else
                join_child(s, c);
        }
        if (c->state != C_DONE)
            c->state = C_IDLE;
    }
}

/* ------------------------------------------------------------- restarts */

/* Records a restart decided at now; false when it would be one more than
   intensity within the period. The window is a ring of the times of the
   restarts within the period, oldest first (decided by one thread, on a
   monotonic clock: in order), so that the expired ones leave from its head,
   each once: a restart costs O(1) however large the intensity (a scan of
   the whole window made a supervisor with a large one spend its CPU on
   that scan, quadratic in the restarts within a period). */
static bool count_restart(struct sup *s, int64_t now)
{
    while (s->nts && now - s->ts[s->tshead] >= s->period_ns) {
        s->tshead = s->tshead + 1 == s->tscap ? 0 : s->tshead + 1;
        s->nts--;
    }
    if (s->nts + 1 > s->intensity)
        return false;
    if (s->nts == s->tscap) {
        size_t   cap = s->tscap ? s->tscap * 2 : 8;
        int64_t *p = malloc(cap * sizeof *p);
        if (!p)
            return true; /* not recorded: the window undercounts, nothing else */
        for (size_t i = 0; i < s->nts; i++)
            p[i] = s->ts[(s->tshead + i) % s->tscap];
        free(s->ts);
        s->ts = p;
        s->tscap = cap;
        s->tshead = 0;
    }
    size_t at = s->tshead + s->nts;
    s->ts[at >= s->tscap ? at - s->tscap : at] = now;
    s->nts++;
    return true;
}

/*
 * Handles the end of child i (state C_ENDED). Returns 0, or 1 when the
 * supervisor gives up (every child stopped and joined; *rc what to return).
 */
static int handle_end(struct sup *s, size_t i, int *rc)
{
    struct sup_child *c = &s->c[i];
    int               ret = c->rc;
    int               type = c->spec->restart;
    if (type == LEASH_TEMPORARY || (type == LEASH_TRANSIENT && ret == 0)) {
        c->state = C_DONE;
        return 0;
    }
    int64_t now = leash__now_ns();
    if (!count_restart(s, now)) {
        c->state = C_IDLE;
        stop_all(s, true);
        leash__report("restart_limit", s->self, s->g,
                      "supervisor %llu \"%s\" (%s, opened at %s:%d) gave up: more than %u restarts "
                      "within %lld ms; child \"%s\" returned %d last",
                      (unsigned long long)s->g->id, s->g->name, leash__strategy_name(s->strategy),
                      s->file ? s->file : "?", s->line, s->intensity,
                      (long long)(s->period_ns / 1000000), c->name, ret);
        *rc = ret ? ret : -EAGAIN;
        return 1;
    }
    atomic_fetch_add_explicit(&s->g->restarts, 1, memory_order_relaxed);

    /* Akka's reset: a child that ran a whole period starts from the minimum */
    if (now - c->start_ns >= s->period_ns)
        c->fails = 0;
    int64_t delay = leash__sup_backoff_ms(s->bmin_ms, s->bmax_ms, c->fails, next_rand(s));
    if (c->fails < 64)
        c->fails++;
    atomic_store_explicit(&s->g->backoff_ms, delay, memory_order_relaxed);
    if (leash__agent_wants()) {
        leash__lock(&s->mu);
        uint64_t task = c->task_id;
        leash__unlock(&s->mu);
        leash__agent_push(&(struct leash__aevent){
            .kind = LEASH_EV_RESTART,
            .group = s->g->id,
            .task = task,
            .fn = c->name,
            .file = s->file,
            .line = s->line,
            .strategy = s->strategy,
            .restarts = atomic_load_explicit(&s->g->restarts, memory_order_relaxed),
            .backoff_ms = delay,
        });
    }
    int64_t due = after_ms(now, delay);

    size_t lo = i, hi = i + 1; /* the set restarted: [lo, hi) */
    if (s->strategy == LEASH_ONE_FOR_ALL)
        lo = 0, hi = s->n;
    else if (s->strategy == LEASH_REST_FOR_ONE)
        hi = s->n;
    for (size_t j = hi; j-- > lo;) {
        struct sup_child *x = &s->c[j];
        if (j == i)
            continue;
        if (x->state == C_RUNNING)
            stop_child(s, x);
        else if (x->state == C_ENDED)
            x->state = C_IDLE; /* ended meanwhile: this restart covers it */
        if (x->state == C_PENDING && x->due_ns > due)
            due = x->due_ns; /* started in order: none before its own backoff */
    }
    c->state = C_IDLE;
    for (size_t j = lo; j < hi; j++) {
        struct sup_child *x = &s->c[j];
        if (x->spec->restart == LEASH_TEMPORARY) {
            x->state = C_DONE; /* as in OTP: a temporary child is not restarted */
            continue;
        }
        x->state = C_PENDING;
        x->due_ns = due;
    }
    return 0;
}

static int run(struct sup *s)
{
    leash_task *self = s->self;
    for (size_t i = 0; i < s->n; i++)
        if (start_child(s, &s->c[i]) != 0)
            break;
    for (;;) {
        uint32_t seq = atomic_load_explicit(&self->wake, memory_order_seq_cst);
        /* ends first, the cancellation second: a child that ended because
           of a cancellation said so after the cancellation was set */
        bool any_ended = false;
        leash__lock(&s->mu);
        for (size_t i = 0; i < s->n; i++) {
            struct sup_child *c = &s->c[i];
            if (c->state == C_RUNNING && c->ended) {
                c->state = C_ENDED;
                any_ended = true;
            }
        }
        leash__unlock(&s->mu);
        int err = leash__scope_err(self, true);
        if (!err)
            err = -atomic_load_explicit(&s->g->cancel_cause, memory_order_seq_cst);
        if (err) {
            /* the cancellation reached every child: join them */
            stop_all(s, false);
            return err;
        }
        if (any_ended) {
            for (size_t i = 0; i < s->n; i++) {
                int rc;
                if (s->c[i].state == C_ENDED && handle_end(s, i, &rc))
                    return rc;
            }
            continue; /* look again: stopping others took time */
        }
        int64_t now = leash__now_ns(), next = INT64_MAX;
        bool    live = false, started = false;
        for (size_t i = 0; i < s->n && !started; i++) {
            struct sup_child *c = &s->c[i];
            if (c->state == C_PENDING && c->due_ns <= now) {
                /* a set restarts from here in order; the loop comes back
                   for the next one (a start refused or failed at once is
                   a cancellation or an end to see first) */
                start_child(s, c);
                started = true;
            }
            if (c->state == C_PENDING && c->due_ns < next)
                next = c->due_ns;
            live |= c->state == C_RUNNING || c->state == C_PENDING;
        }
        if (started)
            continue;
        if (!live)
            return 0;
        int64_t scope = leash__scope_deadline(self);
        leash__blocked(self, LEASH_OP_GROUP_WAIT, s->g->name, s->file, s->line);
        leash__park(self, seq, next < scope ? next : scope);
        leash__unblocked(self);
    }
}

/* -------------------------------------------------------------- the call */

static int check(const leash_sup_opts *o, const leash_child_spec *children, size_t n)
{
    if (n > 0 && !children)
        return -EINVAL;
    if (o->strategy < LEASH_ONE_FOR_ONE || o->strategy > LEASH_REST_FOR_ONE)
        return -EINVAL;
    if (o->period_ms < 0 || (o->intensity > 0 && o->period_ms == 0))
        return -EINVAL;
    if (o->backoff_min_ms < 0 || o->backoff_max_ms < 0 ||
        (o->backoff_max_ms != 0 && o->backoff_max_ms < o->backoff_min_ms))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!children[i].fn || children[i].restart < LEASH_PERMANENT ||
            children[i].restart > LEASH_TEMPORARY)
            return -EINVAL;
    return 0;
}

int leash_supervise_at(const leash_sup_opts *o, const leash_child_spec *children, size_t n,
                       const char *file, int line)
{
    static const leash_sup_opts none;
    if (!o)
        o = &none;
    int err = check(o, children, n);
    if (err)
        return err;
    leash_task *self = leash__self();
    if (!self)
        return -ENOMEM;
    struct sup s = {
        .mu = LEASH__LOCK_INIT,
        .self = self,
        .file = file,
        .line = line,
        .strategy = o->strategy,
        .intensity = o->intensity,
        .period_ns = o->period_ms,
        .bmin_ms = o->backoff_min_ms,
        .bmax_ms = o->backoff_max_ms,
        .n = n,
    };
    if (o->intensity == 0 && o->period_ms == 0) {
        s.intensity = 3;
        s.period_ns = 5000;
    }
    s.period_ns = s.period_ns > INT64_MAX / 1000000 ? INT64_MAX : s.period_ns * 1000000;
    s.c = calloc(n ? n : 1, sizeof *s.c);
    if (!s.c)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        s.c[i].spec = &children[i];
        s.c[i].sup = &s;
        s.c[i].name = intern(children[i].name);
    }
    err = leash__group_open(
        &s.g, &(leash_group_opts){.name = o->name ? o->name : "supervisor", .flags = LEASH_COLLECT},
        file, line, o->strategy);
    if (err) {
        free(s.c);
        return err;
    }
    s.rng = ((uint64_t)leash__now_ns() ^ (s.g->id * 0x9E3779B97F4A7C15ULL)) | 1;
    leash__lock(&s.g->mu);
    s.g->watcher = self;
    leash__unlock(&s.g->mu);

    int rc = run(&s);

    leash__lock(&s.g->mu);
    s.g->watcher = NULL;
    leash__unlock(&s.g->mu);
    leash__group_wait(s.g, self, file, line); /* every child instance, to its very end */
    free(s.ts);
    free(s.c);
    return rc;
}

void leash__supervise_atfork_child(void)
{
    intern_mu = (leash__lock_t)LEASH__LOCK_INIT;
}
