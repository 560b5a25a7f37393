/* internal.h: what the library's modules share. Nothing here is public. */
#ifndef LEASH_INTERNAL_H
#define LEASH_INTERNAL_H

#define LEASH_BUILDING 1
#include "leash.h"

#include "leash/registry.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define LEASH__HIDDEN __attribute__((visibility("hidden")))
#define likely(x)     __builtin_expect(!!(x), 1)
#define unlikely(x)   __builtin_expect(!!(x), 0)

/* ------------------------------------------------------------ sys.c */

int64_t leash__now_ns(void);    /* CLOCK_MONOTONIC */
int64_t leash__coarse_ns(void); /* CLOCK_MONOTONIC_COARSE: cheap, a few ms of resolution */
int64_t leash__deadline_after(int64_t ms); /* now + ms in ns, saturating; ms < 0: INT64_MAX */
/* Waits while *word == val, until woken or abs_ns (CLOCK_MONOTONIC; INT64_MAX:
   none) passes. Returns 0, or -ETIMEDOUT; spurious returns are allowed. */
int                leash__futex_wait(_Atomic uint32_t *word, uint32_t val, int64_t abs_ns);
void               leash__futex_wake(_Atomic uint32_t *word, int n);
static inline void leash__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
int leash__ncpu(void);

/* A small futex lock (0 free, 1 held, 2 held with sleepers) that spins first:
   every critical section it guards is a few dozen instructions. */
typedef struct {
    _Atomic uint32_t v;
} leash__lock_t;
/* clang-format off */
#define LEASH__LOCK_INIT { 0 }
/* clang-format on */
void               leash__lock_slow(leash__lock_t *l);
static inline void leash__lock(leash__lock_t *l)
{
    uint32_t z = 0;
    if (likely(atomic_compare_exchange_strong_explicit(&l->v, &z, 1, memory_order_acquire,
                                                       memory_order_relaxed)))
        return;
    leash__lock_slow(l);
}
static inline void leash__unlock(leash__lock_t *l)
{
    if (unlikely(atomic_exchange_explicit(&l->v, 0, memory_order_release) == 2))
        leash__futex_wake(&l->v, 1);
}

/* Starts a detached library thread with every signal blocked but allow_sig
   (0: none). 0 or -errno. */
int leash__thread_start(void *(*fn)(void *), void *arg, const char *name, int allow_sig);

/* Copies a name into a fixed buffer, truncating; NULL gives "". */
void leash__copy_name(char *dst, size_t size, const char *src);
/* Appends to a growable buffer; the dump's writer. */
struct leash__buf {
    char  *p;
    size_t len, cap;
    bool   oom;
};
void leash__bprintf(struct leash__buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void leash__bjson_str(struct leash__buf *b, const char *s);   /* a quoted JSON string, or null */
void leash__bjson_chars(struct leash__buf *b, const char *s); /* s escaped, no quotes */

/* ----------------------------------------------------------- task.c */

enum leash__op {
    LEASH_OP_NONE = 0,
    LEASH_OP_CHAN_SEND,
    LEASH_OP_CHAN_RECV,
    LEASH_OP_SELECT,
    LEASH_OP_MUTEX,
    LEASH_OP_RWLOCK_RD,
    LEASH_OP_RWLOCK_WR,
    LEASH_OP_SLEEP,
    LEASH_OP_FDWAIT,
    LEASH_OP_GROUP_WAIT,
    LEASH_OP_GO,
};
const char *leash__op_name(int op);

enum leash__hold_kind { LEASH_HOLD_MUTEX = 1, LEASH_HOLD_READ, LEASH_HOLD_WRITE };

/* One lock a task holds. Nodes never move while in use: a rwlock links the
   read holds of every task through them. */
struct leash_hold {
    void              *lock;
    int                kind;
    const char        *file;
    int                line;
    struct leash_task *task;
    struct leash_hold *tnext, *tprev; /* the task's list */
    struct leash_hold *lnext, *lprev; /* the rwlock's read holds */
};

struct leash_group;

/* A task: a function run by leash_go on a pooled thread, or a thread that
   called leash (a root task). Task records are recycled, never freed, so a
   pointer read from a lock's owner field always points at a task record.
   A spawner writes only the first two cache lines of a recycled record;
   the rest is reset by whoever frees it (leash__task_free), on the CPU that
   ran the task and holds those lines already. A record moves between a
   spawner's CPU and a worker's for every task, so each line the spawner
   writes is a line that crosses. */
typedef struct leash_task {
    _Alignas(64) uint64_t id;
    const char            *fn_name;    /* #fn of leash_go, or thread_name */
    struct leash_reg_task *reg;        /* its registry slot for life; NULL: none was left */
    void                  *altstack;   /* root tasks: the signal stack leash gave the thread */
    const char            *spawn_file; /* NULL for root tasks */
    int                    spawn_line;
    int                    batch_n; /* a free record heading a batch: records in it */
    int (*fn)(void *);
    void               *arg;
    struct leash_group *group;        /* the group it runs in; NULL: root */
    struct leash_task *gnext, *gprev; /* in group->tasks (once a worker took it) or the root list */
    struct leash_task *qnext;         /* pool queue, free list */
    struct leash_task *all_next;      /* every record made (task.c) */
    pthread_t          thread;
    _Atomic int        tid;             /* kernel thread id running it; 0: not yet */
    bool               first_on_thread; /* the first task its worker thread ran */
    bool               root;
    _Atomic bool       started; /* picked up by a worker: `thread` is set */
    _Atomic bool       stop;    /* cancelled on its own (a supervisor stopping one child) */
    int64_t            start_ns;
    /* ^ what the spawner writes, in two lines */

    char             thread_name[16];
    _Atomic uint32_t wake;     /* bumped by every wake-up; parks on it */
    _Atomic uint32_t sleeping; /* in futex_wait on wake */
    _Atomic uint32_t in_poll;  /* in poll() on wake_fd: wake writes it */
    int              wake_fd;  /* eventfd, made on first fdwait; kept */

    /* what it is blocked on, for dumps: a few relaxed stores per blocking call */
    _Atomic int op;
    /* snapshots copying obj's name right now: the blocking call does not
       return, so the object cannot go, until they are done (dump.c) */
    _Atomic uint32_t      peeks;
    _Atomic(const char *) obj;
    _Atomic(const char *) bfile;
    _Atomic int           bline;
    _Atomic int64_t       since_ns;

    struct leash_group *opened;       /* groups it opened and has not waited */
    struct leash_group *scope;        /* its innermost open scope (leash_scope_open); NULL: none */
    struct leash_group *fork_scope;   /* scopes open across a fork(), dead in the child */
    _Atomic int         shield_level; /* shielded scopes open: read by the interrupt sweep */
    struct leash_hold  *holds;        /* locks it holds, newest first */
    struct leash_hold  *hold_free;
    unsigned            hold_cache_used;
    struct leash_hold   hold_cache[4];

    /* the lock it waits for (guarded by the lock graph mutex) */
    _Atomic(void *) waiting_for;
    int             waiting_kind;
} leash_task;
_Static_assert(offsetof(leash_task, start_ns) + sizeof(int64_t) <= 128,
               "what a spawner writes fits the first two lines");

extern _Thread_local leash_task *leash__self_tls;
leash_task                      *leash__self_slow(void);
/* The calling task, made into a root task on first use. NULL only when
   memory runs out. */
static inline leash_task *leash__self(void)
{
    leash_task *t = leash__self_tls;
    return likely(t != NULL) ? t : leash__self_slow();
}
leash_task *leash__task_alloc(void);
void        leash__task_free(leash_task *t);
void        leash__task_cache_flush(void); /* a thread that ends gives its cached records back */
/* Called when a task's function has returned, or a root thread exits:
   abandons held locks, cancels and waits unwaited groups. */
void     leash__task_exit(leash_task *t);
uint64_t leash__next_id(void);

void leash__wake(leash_task *t);
/* Parks t until woken (t->wake moves off seq) or abs_ns. */
void leash__park(leash_task *t, uint32_t seq, int64_t abs_ns);
/* How many times to spin before parking: 0 on one CPU, and 0 while more
   threads are runnable than there are CPUs (measured, see task.c), when a
   spinner only takes the CPU from the thread it waits for. */
int leash__spin_budget(void);

/* crash.c: the tid of a thread that took a fatal signal and has not been
   seen since (0: none), and what a thread does that may be it, running on */
extern _Atomic int leash__crash_tid;
void               leash__crash_survived(leash_task *t);
void leash__reg_blocked(struct leash_reg_task *r, uint64_t id, int op, const char *obj,
                        const char *file, int line, int64_t since);
static inline void leash__blocked(leash_task *t, int op, const char *obj, const char *file,
                                  int line)
{
    int64_t since = leash__coarse_ns();
    atomic_store_explicit(&t->obj, obj, memory_order_relaxed);
    atomic_store_explicit(&t->bfile, file, memory_order_relaxed);
    atomic_store_explicit(&t->bline, line, memory_order_relaxed);
    atomic_store_explicit(&t->since_ns, since, memory_order_relaxed);
    /* the registry first: whoever sees the task blocked in a dump (op,
       acquired) then finds it blocked in the registry too */
    if (t->reg)
        leash__reg_blocked(t->reg, t->id, op, obj, file, line, since);
    atomic_store_explicit(&t->op, op, memory_order_release);
    if (unlikely(atomic_load_explicit(&leash__crash_tid, memory_order_relaxed) != 0))
        leash__crash_survived(t);
}
/* Waits until no snapshot is copying the name t is blocked on (dump.c). */
void leash__peek_wait(leash_task *t);
/* Every blocking call ends with this before it returns: from then on the
   caller may free what it was blocked on. A snapshot reads op and then the
   name under t->peeks; op cleared first and peeks read after (both seq_cst,
   Dekker's pattern), either the snapshot sees op cleared and reads no name,
   or this call sees it and waits the few instructions the copy takes. */
static inline void leash__unblocked(leash_task *t)
{
    atomic_store_explicit(&t->op, LEASH_OP_NONE, memory_order_seq_cst);
    if (unlikely(atomic_load_explicit(&t->peeks, memory_order_seq_cst) != 0))
        leash__peek_wait(t);
    if (t->reg)
        __atomic_store_n(&t->reg->op, 0, __ATOMIC_RELAXED);
}

/* A hold node from the task's cache, or malloc'd; NULL when memory runs out. */
struct leash_hold *leash__hold_new(leash_task *t);
/* Records that t holds lock (inline: it is on every lock's fast path). */
static inline struct leash_hold *leash__hold_push(leash_task *t, void *lock, int kind,
                                                  const char *file, int line)
{
    struct leash_hold *h = t->hold_free;
    if (likely(h != NULL))
        t->hold_free = h->tnext;
    else if (!(h = leash__hold_new(t)))
        return NULL;
    h->lock = lock;
    h->kind = kind;
    h->file = file;
    h->line = line;
    h->task = t;
    h->lnext = h->lprev = NULL;
    h->tprev = NULL;
    h->tnext = t->holds;
    if (t->holds)
        t->holds->tprev = h;
    t->holds = h;
    return h;
}
struct leash_hold *leash__hold_find(leash_task *t, const void *lock);
static inline void leash__hold_drop(leash_task *t, struct leash_hold *h)
{
    if (h->tprev)
        h->tprev->tnext = h->tnext;
    else
        t->holds = h->tnext;
    if (h->tnext)
        h->tnext->tprev = h->tprev;
    h->tnext = t->hold_free;
    t->hold_free = h;
}

/* the registry of root tasks, for dumps */
extern leash__lock_t leash__roots_mu;
extern leash_task   *leash__roots;

/* ---------------------------------------------------------- group.c */

struct leash_slotwait {
    leash_task            *task;
    struct leash_slotwait *next, *prev;
};

struct leash_group {
    uint64_t            id;
    char                name[48];
    struct leash_group *parent; /* the group the opener runs in; NULL: root */
    leash_task         *opener;
    const char         *open_file;
    int                 open_line;
    unsigned            flags;
    bool                interrupt; /* LEASH_INTERRUPT here or above */
    unsigned            limit;
    int64_t             open_ns;
    int64_t             deadline_ns;    /* effective: min of own and parent's */
    struct leash_group *deadline_owner; /* whose deadline that is */

    /* on a line of its own with the list: the workers that list and unlist
       children write it, while a spawner reads what is above */
    _Alignas(64) leash__lock_t mu; /* guards what follows */
    leash_task *tasks;             /* children alive (queued or running) */
    /* children counted in (by spawners) and out (by workers, under mu), on
       cache lines of their own: a spawner and the worker running the
       children do not trade one line for every child. Alive: spawned - ended. */
    _Alignas(64) _Atomic uint64_t spawned;
    _Alignas(64) _Atomic uint64_t ended;
    char                   pad_[64 - sizeof(uint64_t)];
    bool                   cancel_cut; /* cancelled while children ran, or not by a deadline */
    bool                   refused;    /* a spawn was refused because it was cancelled */
    struct leash_group    *kids, *knext, *kprev;     /* groups opened by its tasks */
    struct leash_slotwait *slotwait, *slotwait_tail; /* oldest first */
    uint64_t               kids_waiting; /* children of this group in slotwait with no deadline */
    int                    first_err;    /* first non-zero child return, before cancel */
    leash_task            *waiter;       /* the opener, while in wait */
    _Atomic int            cancel_cause; /* 0, ECANCELED or ETIMEDOUT */

    struct leash_group     *onext;         /* opener's list of unwaited groups */
    struct leash_group     *rnext, *rprev; /* registry of all groups */
    struct leash_group     *inext, *iprev; /* registry of interrupt groups */
    bool                    in_intr;       /* in that registry (under its lock) */
    size_t                  heap_idx;      /* in the timer heap, or SIZE_MAX */
    _Atomic bool            interrupting;  /* cancelled with interrupt: signal its tasks */
    struct leash_reg_group *reg;           /* its registry slot; NULL: none */

    /* a supervisor's group (supervise.c) */
    int              strategy;   /* LEASH_ONE_FOR_ONE...; -1: not a supervisor */
    _Atomic uint64_t restarts;   /* restarts decided */
    _Atomic int64_t  backoff_ms; /* the delay drawn for the latest one */
    leash_task      *watcher;    /* woken when g is cancelled (under mu) */

    /* A cancel scope (leash_scope_open) is a group with no children of its
       own: a node of the cancellation tree on its task's own stack. */
    leash_task         *holder;       /* the scope's task; NULL: a group */
    struct leash_group *outer;        /* the holder's scope it was opened in; NULL: none */
    bool                shield;       /* LEASH_SHIELD: not on its parent's kids */
    bool                linked;       /* on parent->kids (every group, unshielded scopes) */
    int                 shield_level; /* the holder's shield_level inside it */
    unsigned            gen;          /* leash__gen when opened: older ones are dead */
};

/* Bumped in the child of every fork: groups and scopes of an older
   generation were inherited from the parent and are dead. */
extern _Atomic unsigned leash__gen;
static inline bool      leash__dead(const struct leash_group *g)
{
    return unlikely(g->gen != atomic_load_explicit(&leash__gen, memory_order_relaxed));
}

/* leash_scope is a leash_group inside. */
struct leash_scope {
    struct leash_group g;
};

/* The node of the cancellation tree a task's calls answer to: its innermost
   scope, else the group it runs in (NULL: a root task outside any scope). */
static inline struct leash_group *leash__node(const leash_task *t)
{
    return t->scope ? t->scope : t->group;
}

/* Makes g (zeroed but for id, name, site, flags) a node of the tree under
   parent, which is NULL or the opener's node: its deadline (timeout_ms from
   now, and parent's unless detached), born cancelled or not, listed for
   parent's cancellation (unless detached: a shield), dumps, the registry,
   the timer, interrupts and leashd. Returns the cause it was born with. */
int leash__node_link(struct leash_group *g, leash_task *self, struct leash_group *parent,
                     int64_t timeout_ms, bool detached);
/* Undoes leash__node_link; g can be freed after it. */
void leash__node_unlink(struct leash_group *g);
/* leash_group_open_at, for a supervisor's group (strategy >= 0) too. */
int leash__group_open(struct leash_group **gp, const leash_group_opts *opts, const char *file,
                      int line, int strategy);
/* Cancels task t of g on its own (cause ECANCELED), and the groups it opened.
   t must stay alive meanwhile (its end not yet seen by the caller). */
void leash__task_cancel(struct leash_group *g, leash_task *t);

/* 0, or the negative cause that ended t's scope. Reads the clock only when
   check_clock: a passed deadline then cancels its group at once. */
int leash__scope_err(leash_task *t, bool check_clock);
/* The effective deadline of t's scope, ns, INT64_MAX: none. */
static inline int64_t leash__scope_deadline(leash_task *t)
{
    struct leash_group *g = leash__node(t);
    return g ? g->deadline_ns : INT64_MAX;
}
void leash__cancel(struct leash_group *g, int cause);
/* Children of g counted in and not yet out. */
static inline uint64_t leash__group_alive(struct leash_group *g)
{
    uint64_t ended = atomic_load_explicit(&g->ended, memory_order_acquire);
    return atomic_load_explicit(&g->spawned, memory_order_acquire) - ended;
}
/* Called by the worker when a task's function has returned. */
void leash__task_done(leash_task *t, int rc);
/* Frees g, inherited across a fork (dead), and takes it off self's list. */
void leash__group_forget(struct leash_group *g, leash_task *self);
/* The end of a task that forked, in the child: it runs in no group. */
void leash__task_forked_done(leash_task *t);
/* Waits g (used by task exit for unwaited groups). */
int leash__group_wait(struct leash_group *g, leash_task *self, const char *file, int line);

extern leash__lock_t       leash__groups_mu;
extern struct leash_group *leash__groups;
extern _Atomic uint64_t    leash__groups_live;
extern _Atomic uint64_t    leash__tasks_started;
extern _Atomic uint64_t    leash__tasks_ended;
/* A worker puts t on its group's list as it takes it off the queue. */
void leash__task_begin(leash_task *t);
/* For the tests: called with the task's argument as a worker takes it,
   before it goes on its group's list (a window a test holds open). It runs
   under the queue's lock or the worker's batch lock: a hook that waits for
   the timer thread holds a task that is alone in the queue, since the
   monitor takes both locks while batches exist. */
LEASH__HIDDEN extern void (*leash__begin_hook)(void *arg);
/* leash_go and leash_try_go (try: -EAGAIN rather than waiting for a slot). */
int leash__go(struct leash_group *g, int (*fn)(void *), void *arg, const char *fn_name,
              const char *file, int line, bool try);

/* ----------------------------------------------------------- pool.c */

/* Queues t; caller_root: the caller is an application thread, busy on a CPU. */
int                     leash__pool_submit(leash_task *t, bool caller_root);
extern _Atomic uint64_t leash__threads;
/* A pooled task is about to sleep in leash (futex or poll), and is back. */
/* Whether this thread may run a queued child (of an interrupt group:
   interrupt) while it waits; then takes
   one of g's children from the queue and runs it on this thread. false:
   none queued (among the first few). */
bool leash__pool_can_run_here(bool interrupt);
bool leash__pool_run_one_of(struct leash_group *g, leash_task *self);
void leash__pool_park_begin(leash_task *t);
void leash__pool_park_end(leash_task *t);
/* The locks of the queue and of every worker's batch, and the tasks queued
   in either (lock held; start with NULL and a cursor set to NULL): a dump
   walks a group's list and the queued tasks under them, so that a task
   moving from one to the other is seen once. */
void        leash__pool_lock(void);
void        leash__pool_unlock(void);
leash_task *leash__pool_queued_next(leash_task *t, void **cursor);
/* How often the timer thread checks that queued tasks move. */
#define LEASH__MONITOR_NS (5LL * 1000 * 1000)
/* The timer thread's check; returns when it wants to run again. */
int64_t leash__pool_monitor(int64_t now);

/* ---------------------------------------------------------- timer.c */

void leash__timer_add(struct leash_group *g); /* g has its own deadline */
void leash__timer_remove(struct leash_group *g);
void leash__intr_register(struct leash_group *g);
void leash__intr_unregister(struct leash_group *g);
void leash__intr_kick(void);    /* an interrupt group was cancelled */
void leash__monitor_kick(void); /* queued tasks wait: start watching */
int  leash__intr_signal(void);
/* For the tests: interrupt sweeps the timer has finished. */
LEASH__HIDDEN extern _Atomic uint64_t leash__intr_sweeps;

/* --------------------------------------------------------- report.c */

/* Writes one report line to stderr (unless LEASH_REPORT=quiet), or hands
   it to the leash_on_report hook, and to the agent. kind: lock_abandoned,
   self_deadlock, lock_cycle, unwaited_group, unclosed_scope, restart_limit.
   t: the task it is about; g: the group (or scope) it is about, else t's
   group; either may be NULL. */
void leash__report(const char *kind, leash_task *t, struct leash_group *g, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
extern _Atomic uint64_t leash__reports;
void                    leash__report_atfork_child(void);
/* A task that returns with scopes open: each closed, innermost first, with
   an unclosed_scope report. */
void leash__scopes_exit(leash_task *t);

/* ---------------------------------------------------------- agent.c */

/* One lifecycle event for leashd; kinds as in agent.proto's Event.Kind. */
enum {
    LEASH_EV_GROUP_OPEN = 0,
    LEASH_EV_GROUP_END = 1,
    LEASH_EV_TASK_START = 2,
    LEASH_EV_TASK_END = 3,
    LEASH_EV_RESTART = 7,
    LEASH_EV_FOLDED = 100, /* the agent's: left out of a batch (agent.c) */
};
struct leash__aevent {
    int         kind;
    uint64_t    group, task, parent;
    int64_t     deadline_ms_left;
    const char *file; /* static strings: __FILE__ and #fn */
    int         line;
    const char *fn;
    char        name[48];
    int         strategy;   /* GROUP_OPEN, RESTART: a supervisor's; -1: none */
    uint64_t    restarts;   /* RESTART */
    int64_t     backoff_ms; /* RESTART */
};
extern _Atomic int leash__agent_on; /* connected: events are wanted */
void               leash__agent_init(void);
void               leash__agent_push(const struct leash__aevent *ev);
/* For the tests: called by a producer between taking its cell of the ring
   and writing it (a producer preempted there, which a test holds open). */
LEASH__HIDDEN extern void (*leash__agent_push_hook)(void);
size_t leash__agent_fold(struct leash__aevent *evs, size_t n, uint64_t shown, uint64_t *folded);
void   leash__agent_report(const char *kind, uint64_t task, uint64_t group_id, const char *group,
                           const char *detail);
/* A root task came or went: the next heartbeat resyncs leashd's view. */
void               leash__agent_roots_changed(void);
static inline bool leash__agent_wants(void)
{
    return atomic_load_explicit(&leash__agent_on, memory_order_relaxed) != 0;
}
/* Actions leashd asks for; id 0: every top-level group. */
void leash__cancel_by_id(uint64_t id);
void leash__interrupt_by_id(uint64_t id);
/* Whether group id is open; if so its effective deadline (ns, INT64_MAX:
   none) and its children alive. For leashd's Confirm. */
bool leash__group_probe(uint64_t id, int64_t *deadline_ns, uint64_t *alive);

/* ---------------------------------------------------------- mutex.c */

void leash__abandon_holds(leash_task *t);
/* The task holding the mutex t waits for; 0: none known. */
uint64_t leash__lock_holder(leash_task *t);

/* ------------------------------------------------------- registry.c */

/* The registry (proto/leash/registry.h); NULL when the memfd could not be
   made. Made by leash__reg_init, with the fatal-signal handler. */
extern struct leash_reg_header *leash__reg;
void                            leash__reg_init(void);
int                             leash__reg_fd(void); /* the memfd, -1: none */
/* A static string's index; 0: none. The common case, a string seen
   before at its first probe, is inline: it is on the spawn path. */
extern _Atomic(const char *) leash__reg_keys[LEASH_REG_STRS];
uint32_t                     leash__reg_str_slow(const char *s);
static inline uint32_t       leash__reg_str(const char *s)
{
    uint32_t i =
        (uint32_t)(((uint64_t)(uintptr_t)s * 0x9E3779B97F4A7C15ull) >> 53) & (LEASH_REG_STRS - 1);
    if (likely(s && atomic_load_explicit(&leash__reg_keys[i], memory_order_relaxed) == s))
        return i;
    return s ? leash__reg_str_slow(s) : 0;
}
void leash__reg_task_slot(leash_task *t); /* a new record takes its slot */
/* t's fields are set (spawned, or a root task made): its slot shows it */
void leash__reg_task_live(leash_task *t);
/* The same for a task leash_go made, inline: a few stores into one cache
   line (op and flags were cleared when the slot's last task ended). */
static inline void leash__reg_spawn(leash_task *t, uint64_t group)
{
    struct leash_reg_task *r = t->reg;
    if (unlikely(!r)) {
        leash__reg_task_live(t); /* counts it as over */
        return;
    }
    /* the word from the id, as registry.c's TSEQ: no load of this line */
    __atomic_store_n(&r->seq, ((uint32_t)t->id << 1) | 1, __ATOMIC_RELAXED);
    atomic_signal_fence(memory_order_seq_cst);
    r->id = t->id;
    r->group = group;
    r->fn = leash__reg_str(t->fn_name);
    r->file = leash__reg_str(t->spawn_file);
    r->line = (uint32_t)t->spawn_line;
    r->start_ns = t->start_ns;
    r->live = 1;
    atomic_signal_fence(memory_order_seq_cst);
    __atomic_store_n(&r->seq, ((uint32_t)t->id << 1) + 2, __ATOMIC_RELEASE);
}
void leash__reg_task_dead(leash_task *t);
void leash__reg_group_open(struct leash_group *g); /* under leash__groups_mu; takes g->mu */
/* Frees a group's slot (NULL: it had none), which its group has let go of
   under its mu. Under leash__groups_mu. */
void               leash__reg_group_end(struct leash_reg_group *r);
static inline void leash__reg_group_cancelled(struct leash_group *g, int cause)
{
    /* g->mu held, as where g->reg is set and cleared (leash__reg_group_open) */
    struct leash_reg_group *r = __atomic_load_n(&g->reg, __ATOMIC_RELAXED);
    if (r)
        __atomic_store_n(&r->cancelled, (uint32_t)cause, __ATOMIC_RELAXED);
}
/* Async-signal-safe: the fatal signal sig hit task t (NULL: none) on tid. */
void leash__reg_crash(int sig, int code, const void *addr, leash_task *t, int tid, int64_t now);
/* The thread that took it runs on (t: its task now): the record goes. */
void leash__reg_crash_undo(leash_task *t);

/* ---------------------------------------------------------- crash.c */

void  leash__crash_install(void);     /* unless LEASH_CRASH=off */
void  leash__leakcheck_install(void); /* if LEASH_LEAKCHECK=1 */
void *leash__altstack_on(void);       /* gives the calling thread an alternate signal stack, if
                                   it has none; returns it (NULL: none made) */
void  leash__altstack_off(void *stack);
void  leash__fatal_signals(sigset_t *set); /* removes the fatal signals from set */
int   leash__gettid(void);                 /* cached per thread */
void  leash__gettid_forget(void);          /* in a forked child */

/* ----------------------------------------------------------- proc.c */

struct leash__proc_task {
    int      tid;
    uint64_t task;
    int64_t  start_ns; /* CLOCK_MONOTONIC_COARSE */
    bool     first_on_thread;
};
struct leash__proc_use {
    int64_t  cpu_ms;  /* -1: unknown */
    int      cpu_pct; /* -1: unknown */
    long     sys_nr;  /* -1: not in a system call */
    uint64_t sys_args[6];
};
void        leash__proc_read(const struct leash__proc_task *in, struct leash__proc_use *out);
const char *leash__syscall_name(long nr, char *buf, size_t size);

/* ----------------------------------------------------------- fork.c */

/* pthread_atfork handlers, installed once by the first task. Each module
   with global state takes its locks (prepare), lets them go (parent) or
   starts afresh (child). */
enum { LEASH_FORK_PREPARE, LEASH_FORK_PARENT, LEASH_FORK_CHILD };
void leash__fork_init(void);
/* What the parent's lists held, kept reachable in the child (never walked,
   never freed): a leak checker sees no memory lost to a fork. */
enum { LEASH_KEPT_GROUPS, LEASH_KEPT_ROOTS, LEASH_KEPT_QUEUE, LEASH_KEPT_WORKERS, LEASH_KEPT_N };
extern void *leash__fork_kept[LEASH_KEPT_N];
void         leash__group_atfork(int phase);
void         leash__pool_atfork(int phase);
void         leash__timer_atfork(int phase);
void         leash__task_atfork(int phase);
void         leash__mutex_atfork(int phase);
void         leash__agent_atfork_child(void);
void         leash__supervise_atfork_child(void);
void         leash__proc_atfork_child(void);

/* ----------------------------------------------------------- dump.c */

const char *leash__process_name(void);

#endif
