/*
 * leash.h: scoped task groups with deadlines, cancellable channels and locks,
 * lock-misuse detection and live task dumps.
 *
 * Conventions, for every function below:
 * - A call returns 0 (or a non-negative count or index) on success and a
 *   negative errno on failure. Nothing sets errno as its only signal.
 * - Every blocking call is a macro that records its call site (__FILE__ and
 *   __LINE__) for dumps and reports; the `_at` functions behind the macros
 *   are exported too, for wrappers that want to pass their own caller's site.
 * - Every blocking call is a cancellation point: when the calling task's scope
 *   (its innermost cancel scope or the group it runs in, and every scope and
 *   group around that one, up to a shield) is cancelled, the
 *   call returns -ETIMEDOUT if a deadline caused the cancellation and
 *   -ECANCELED otherwise. Cancellation is level-triggered: in a cancelled
 *   scope, channel operations, select, sleep, fdwait and checkpoint fail at
 *   once even when they could complete. Locks are the exception: a lock that
 *   can be taken without waiting is still taken; only waiting is cancelled.
 * - Misuse answers (-EINVAL, -EPERM, -EDEADLK, -EOWNERDEAD) come before
 *   cancellation answers: they name a bug.
 * - Names given to groups, channels and locks are copied.
 *
 * Environment: LEASH_SOCKET (the leashd agent socket; "off" disables),
 * LEASH_NAME (the process's display name), LEASH_REPORT=quiet (no stderr
 * report lines), LEASH_CRASH=off (leave fatal signals alone: no record of
 * which task a SIGSEGV hit), LEASH_LEAKCHECK=1 (at exit, a task started by
 * leash_go still alive prints the dump to stderr and makes the exit status 70),
 * LEASH_REGISTRY=off (no task registry: leashd gets no tree of this process
 * when it dies; a fatal signal is still let through as before).
 */
#ifndef LEASH_H
#define LEASH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(LEASH_STATIC_DEFINE)
#define LEASH_API
#elif defined(LEASH_BUILDING)
#define LEASH_API __attribute__((visibility("default")))
#else
#define LEASH_API
#endif

#define LEASH_VERSION_MAJOR  0
#define LEASH_VERSION_MINOR  1
#define LEASH_VERSION_PATCH  0
#define LEASH_VERSION_STRING "0.1.0"

/* ---------------------------------------------------------------- groups */

typedef struct leash_group leash_group;

typedef struct leash_group_opts {
    const char *name;       /* shown in dumps, status and incidents; copied */
    int64_t     timeout_ms; /* deadline relative to open; 0: none of its own.
                               The enclosing deadline always applies too. */
    unsigned    limit;      /* children running at once; 0: no limit */
    unsigned    flags;      /* LEASH_COLLECT | LEASH_INTERRUPT */
} leash_group_opts;

/* LEASH_INTERRUPT sends SIGRTMIN+5 (its handler installed without SA_RESTART)
   to the tasks blocked outside leash, every 2 ms until they return or block
   in leash. */
#define LEASH_COLLECT   0x1u /* a failing child does not cancel its siblings */
#define LEASH_INTERRUPT 0x2u /* cancel also interrupts children blocked in foreign syscalls */

/*
 * Opens a group in the caller's scope and stores it in *g. opts may be NULL.
 * The caller (and only the caller) must leash_group_wait() it; a task that
 * returns with a group still open gets it cancelled and waited for, and an
 * `unwaited_group` report. A group opened in a cancelled scope is born
 * cancelled. Errors: -EINVAL (g NULL, negative timeout_ms, unknown flags),
 * -ENOMEM.
 */
LEASH_API int leash_group_open_at(leash_group **g, const leash_group_opts *opts, const char *file,
                                  int line);
#define leash_group_open(g, ...) leash_group_open_at((g), (__VA_ARGS__), __FILE__, __LINE__)

/*
 * Starts fn(arg) as a child task of g on a pooled thread. Children may add
 * siblings to the group they run in. With a limit, waits (cancellably) for a
 * slot; waiters get slots oldest first. Errors: -EINVAL (g or fn NULL),
 * -ECANCELED (g is cancelled, for whatever cause, its deadline passed
 * included: the child was not started, and leash_group_wait then reports the
 * cause), -ETIMEDOUT / -ECANCELED (the caller's own scope ended while it
 * waited for a slot), -EDEADLK (the caller is a child of g and every slot of
 * g is held by a child of g that is itself waiting for a slot with no
 * deadline: none would ever come free), -ENOMEM, -ECHILD (g was inherited
 * from the parent of a fork: it is dead here). When no thread can be made,
 * the child waits in the pool's queue for a free one. From its return until
 * fn returns, the child is listed in dumps and counted
 * in leash_stats().tasks_live.
 */
LEASH_API int leash_go_at(leash_group *g, int (*fn)(void *), void *arg, const char *fn_name,
                          const char *file, int line);
#define leash_go(g, fn, ...) leash_go_at((g), (fn), (__VA_ARGS__), #fn, __FILE__, __LINE__)

/*
 * As leash_go, but never waits for a slot (Go's errgroup TryGo): -EAGAIN
 * when g's limit is reached or another spawner is waiting for a slot (a
 * slot that comes free is the oldest waiter's), and the child is not
 * started. Without a limit it is leash_go.
 */
LEASH_API int leash_try_go_at(leash_group *g, int (*fn)(void *), void *arg, const char *fn_name,
                              const char *file, int line);
#define leash_try_go(g, fn, ...) leash_try_go_at((g), (fn), (__VA_ARGS__), #fn, __FILE__, __LINE__)

/* Cancels g and its whole subtree (cause: -ECANCELED). Idempotent; NULL is ignored. */
LEASH_API void leash_group_cancel(leash_group *g);

/*
 * Joins every child, then frees g. Returns the first non-zero value a child
 * returned while the group was not yet cancelled; else, if the group was
 * cancelled, -ETIMEDOUT when a deadline caused it and -ECANCELED otherwise;
 * else 0. What children return after the cancellation is its consequence,
 * not their error. A deadline that passes after every child has returned
 * changes nothing, unless a later leash_go on g was refused because of it
 * (then -ETIMEDOUT: the caller was told a child would not run); a leash_go
 * that raced with the deadline counts as a child alive when it passed.
 * A deadline counts from the moment it passes, however late the timer
 * thread runs: the first cause wins. Never cut short: when the caller's
 * scope is cancelled, it cancels the group and still joins every child.
 * Errors: -EINVAL (g NULL), -EPERM (the caller is not the task that opened
 * g; g is left as it was), -ECHILD (g was inherited from the parent of a
 * fork: its children are not in this process; g is freed). Waiting a group
 * twice is undefined, as joining a thread twice is: g is freed by the first
 * wait.
 *
 * fork(): the child gets a fresh runtime. Its pool, timer and agent start
 * again on first use (the agent connects as a new process); the forking
 * thread is its only task, in no group or scope. Groups inherited from the
 * parent are dead: leash_go -ECHILD, leash_group_wait -ECHILD (and frees
 * them), leash_group_cancel does nothing. No leash call hangs because of a
 * fork; channels and locks the parent's other threads were using at the
 * fork are theirs, as with pthreads, and the child should not use them.
 */
LEASH_API int leash_group_wait_at(leash_group *g, const char *file, int line);
#define leash_group_wait(g) leash_group_wait_at((g), __FILE__, __LINE__)

/* ------------------------------------------------------ cancellation points */

/* 0, or why the calling task's scope ended (-ETIMEDOUT / -ECANCELED). */
LEASH_API int leash_checkpoint(void);

/* 0 after ms (<= 0: returns at once), or -ETIMEDOUT / -ECANCELED early. */
LEASH_API int leash_sleep_at(int64_t ms, const char *file, int line);
#define leash_sleep(ms) leash_sleep_at((ms), __FILE__, __LINE__)

/*
 * Waits until fd is ready for events (POLLIN, POLLOUT, ...) and returns the
 * revents (> 0). timeout_ms < 0 waits for ever (but for the scope's deadline).
 * Errors: -EINVAL (fd < 0 or no events), -ETIMEDOUT (timeout_ms passed, or
 * the deadline did), -ECANCELED, or poll(2)'s error.
 */
LEASH_API int leash_fdwait_at(int fd, short events, int64_t timeout_ms, const char *file, int line);
#define leash_fdwait(fd, ev, ms) leash_fdwait_at((fd), (ev), (ms), __FILE__, __LINE__)

/* The caller's effective deadline, CLOCK_MONOTONIC ms; INT64_MAX: none.
   The earliest of every group and unshielded scope around the caller. */
LEASH_API int64_t leash_deadline(void);

/* ----------------------------------------------------------- cancel scopes */

/*
 * Deadlines and cancellation on the calling task itself, with no child
 * task: Trio's CancelScope (move_on_after / fail_after, and shield=True),
 * Go's context.WithTimeout used in the same goroutine. While a scope is
 * open, the task's cancellation points answer to it as to a group around
 * the task: they fail with -ETIMEDOUT once its deadline passes, -ECANCELED
 * once it is cancelled, and as before when a group or scope around it ends.
 * Groups the task opens inside the scope are inside it: its deadline and
 * its cancellation reach their children. leash_deadline() sees it.
 */
typedef struct leash_scope leash_scope;

typedef struct leash_scope_opts {
    const char *name;       /* shown in dumps (as a group node); copied */
    int64_t     timeout_ms; /* deadline relative to open, ms; 0: none of its own */
    unsigned    flags;      /* LEASH_SHIELD */
} leash_scope_opts;

/* Calls inside are not cancelled by the scopes and groups around it (nor by
   leashd or a supervisor stopping the task), only by its own deadline or
   leash_scope_cancel: for cleanup that must finish (Trio's shield). The
   deadlines around it do not apply inside either. */
#define LEASH_SHIELD 0x4u

/*
 * Opens a scope on the calling task and stores it in *s; opts may be NULL.
 * A scope opened in a cancelled scope or group is born cancelled (unless
 * shielded). Errors: -EINVAL (s NULL, negative timeout_ms, a flag other than
 * LEASH_SHIELD), -ENOMEM. A variadic macro, as leash_group_open.
 */
LEASH_API int leash_scope_open_at(leash_scope **s, const leash_scope_opts *opts, const char *file,
                                  int line);
#define leash_scope_open(s, ...) leash_scope_open_at((s), (__VA_ARGS__), __FILE__, __LINE__)

/* Cancels s and what was opened inside it (cause: -ECANCELED). Any task may
   call it while s is open. Idempotent; NULL is ignored. */
LEASH_API void leash_scope_cancel(leash_scope *s);

/*
 * Closes s and frees it. Returns 0 if the scope was not cancelled, else
 * -ETIMEDOUT (a deadline: its own, or one around it, has passed) or
 * -ECANCELED (Trio's cancelled_caught). Scopes close in the reverse order
 * of opening, by the task that opened them, after the groups opened inside
 * them have been waited: otherwise -EPERM, and nothing changes. -EINVAL: s
 * NULL. A task that returns with a scope open gets it closed and an
 * `unclosed_scope` report.
 */
LEASH_API int leash_scope_close(leash_scope *s);

/* -------------------------------------------------------------- channels */

typedef struct leash_chan leash_chan;

/*
 * Opens a channel of elements of elem_size bytes; capacity 0 makes it a
 * rendezvous. A buffered channel holds capacity slots of elem_size bytes
 * plus an 8-byte sequence word each (rounded up to 8 bytes); while no task
 * waits on it, its sends and receives take no lock. Errors: -EINVAL (c
 * NULL, elem_size 0, a buffer too large to size), -ENOMEM.
 * The caller owns *c and frees it with leash_chan_free() once no task uses it.
 */
LEASH_API int leash_chan_open(leash_chan **c, const char *name, size_t elem_size, size_t capacity);
/* Copies elem in. Errors: -EINVAL, -EPIPE (closed), -ETIMEDOUT, -ECANCELED. */
LEASH_API int leash_chan_send_at(leash_chan *c, const void *elem, const char *file, int line);
#define leash_chan_send(c, ...) leash_chan_send_at((c), (__VA_ARGS__), __FILE__, __LINE__)
/* Copies one out. Errors: -EINVAL, -EPIPE (closed and drained), -ETIMEDOUT, -ECANCELED. */
LEASH_API int leash_chan_recv_at(leash_chan *c, void *elem, const char *file, int line);
#define leash_chan_recv(c, ...) leash_chan_recv_at((c), (__VA_ARGS__), __FILE__, __LINE__)
/* Wakes every waiter (senders get -EPIPE). Errors: -EINVAL, -EPIPE (closed already). */
LEASH_API int leash_chan_close(leash_chan *c);
/* Frees c. No task may be using it. NULL is ignored. */
LEASH_API void leash_chan_free(leash_chan *c);

enum { LEASH_SEND = 1, LEASH_RECV = 2 };
struct leash_case {
    leash_chan *chan; /* NULL: a case that is never ready (as a nil channel in Go) */
    int         op;   /* LEASH_SEND or LEASH_RECV */
    void       *elem; /* what to send, or where to receive */
    int         err;  /* out: 0, or -EPIPE when the chosen case's channel is closed */
};
/*
 * Waits until one case can complete, completes it, and returns its index.
 * Among several ready cases one is chosen uniformly at random, as Go does;
 * this holds for a select already waiting, too: when a partner arrives that
 * several of its cases could complete with, each of those is as likely.
 * timeout_ms < 0 waits for ever; otherwise -ETIMEDOUT when it passes (0
 * polls). Errors: -EINVAL (cases NULL with n > 0, a bad op, elem NULL on a
 * live case), -ETIMEDOUT, -ECANCELED, -ENOMEM (n > 16 and no memory).
 * A variadic macro, so a compound literal passes whole:
 * leash_select((struct leash_case[]){{c, LEASH_RECV, &v, 0}, {d, LEASH_SEND, &w, 0}}, 2, -1).
 */
LEASH_API int leash_select_at(struct leash_case *cases, size_t n, int64_t timeout_ms,
                              const char *file, int line);
#define leash_select(...) leash_select_at(__VA_ARGS__, __FILE__, __LINE__)

/* ----------------------------------------------------------------- locks */

/* Defined here for its size, so locks can live inside the caller's structs.
   Every field is private. */
typedef struct leash_mutex {
    uint32_t state_;   /* 0 free, 1 locked, 2 locked with waiters */
    uint32_t wlock_;   /* guards the waiter list */
    void    *owner_;   /* the holding task */
    void    *waiters_; /* list of waiting tasks */
    uint32_t flags_;   /* abandoned, initialised */
    char     name_[40];
} leash_mutex;

typedef struct leash_rwlock {
    uint32_t wlock_; /* guards every field below */
    uint32_t flags_;
    int32_t  readers_; /* read holds, -1 when write-held */
    uint32_t wwait_;   /* writers waiting */
    void    *writer_;
    void    *holds_; /* list of read holds */
    void    *waiters_;
    char     name_[40];
} leash_rwlock;

/* Errors: -EINVAL (m NULL). Never fails otherwise. */
LEASH_API int leash_mutex_init(leash_mutex *m, const char *name);
/*
 * Errors: -EINVAL (m NULL or not initialised); -EDEADLK: the caller holds
 * it already, or waiting would close a cycle of waiting tasks; -EOWNERDEAD:
 * its holder exited without unlocking (the lock is not taken, and every
 * later lock call gets the same answer until destroy; the report names the
 * holder and the line it locked at); -ETIMEDOUT / -ECANCELED while waiting.
 */
LEASH_API int leash_mutex_lock_at(leash_mutex *m, const char *file, int line);
#define leash_mutex_lock(m) leash_mutex_lock_at((m), __FILE__, __LINE__)
/* Errors: -EINVAL; -EPERM: the caller does not hold it. */
LEASH_API int leash_mutex_unlock(leash_mutex *m);
/* No task may hold or wait for m. */
LEASH_API void leash_mutex_destroy(leash_mutex *m);

LEASH_API int leash_rwlock_init(leash_rwlock *l, const char *name);
/*
 * Writers are preferred (no writer starves), which is why a recursive rdlock
 * is refused: with a writer waiting it would deadlock. Errors as for
 * leash_mutex_lock; -EDEADLK if the caller holds it already, in either mode
 * (for wrlock by a reader: the upgrade). A writer that exited holding it:
 * every later lock call gets -EOWNERDEAD; a reader that exited holding it:
 * every later wrlock, writers already waiting included.
 */
LEASH_API int leash_rwlock_rdlock_at(leash_rwlock *l, const char *file, int line);
#define leash_rwlock_rdlock(l) leash_rwlock_rdlock_at((l), __FILE__, __LINE__)
LEASH_API int leash_rwlock_wrlock_at(leash_rwlock *l, const char *file, int line);
#define leash_rwlock_wrlock(l) leash_rwlock_wrlock_at((l), __FILE__, __LINE__)
/* Errors: -EINVAL; -EPERM: the caller holds it in neither mode. */
LEASH_API int  leash_rwlock_unlock(leash_rwlock *l);
LEASH_API void leash_rwlock_destroy(leash_rwlock *l);

/* ----------------------------------------------------------- supervisors */

/*
 * A supervisor restarts the children it runs when they end, as Erlang/OTP's
 * supervisor does (strategies, restart types, intensity), with Akka's
 * exponential backoff between restarts. It is a group: its children are
 * tasks of that group, so deadlines, cancellation, dumps and leashd apply to
 * them as to any task.
 */

/* When a child that ended is restarted (OTP's restart types). */
enum {
    LEASH_PERMANENT = 0, /* always, whatever it returned */
    LEASH_TRANSIENT = 1, /* only when it returned non-zero */
    LEASH_TEMPORARY = 2, /* never; its end is not counted against intensity */
};

typedef struct leash_child_spec {
    const char *name; /* its tasks' name in dumps (their fn); copied, cut at 47 bytes
                         (between UTF-8 characters; invalid bytes and control characters
                         become '?').
                         NULL: "child" */
    int (*fn)(void *);
    void *arg;
    int   restart; /* LEASH_PERMANENT, LEASH_TRANSIENT or LEASH_TEMPORARY */
} leash_child_spec;

/* Which children a failure restarts (OTP's strategies). */
enum {
    LEASH_ONE_FOR_ONE = 0,  /* the child that ended */
    LEASH_ONE_FOR_ALL = 1,  /* every child: the others are cancelled and joined first */
    LEASH_REST_FOR_ONE = 2, /* the child that ended and those after it in spec order */
};

typedef struct leash_sup_opts {
    const char *name;     /* the supervisor's group name; copied. NULL: "supervisor" */
    int         strategy; /* LEASH_ONE_FOR_ONE, LEASH_ONE_FOR_ALL or LEASH_REST_FOR_ONE */
    /* At most `intensity` restarts within any window of period_ms (OTP's
       MaxR in MaxT); 0 for both: 3 in 5000 ms. intensity 0 with a period:
       the first restart gives up. */
    unsigned intensity;
    int64_t  period_ms;
    /* The delay before restarting a child, ms (Akka's BackoffSupervisor):
       min(backoff_min_ms * 2^k, backoff_max_ms), k the restarts of that
       child in a row, each delay drawn within +-20% of that. k goes back
       to 0 once the child has run period_ms. backoff_min_ms 0: at once (as
       OTP); backoff_max_ms 0: backoff_min_ms every time. */
    int64_t backoff_min_ms;
    int64_t backoff_max_ms;
} leash_sup_opts;

/*
 * Runs children[0..n) (started in spec order) as tasks of a new group opened
 * in the caller's scope, and blocks the caller while they run, restarting
 * them as o says. o may be NULL (one_for_one, 3 restarts in 5000 ms, no
 * backoff). children is read until the call returns, and not copied: it must
 * stay valid that long.
 *
 * A child that ends is restarted according to its restart type; what is
 * restarted with it follows the strategy. Others that must go are cancelled
 * one at a time in reverse spec order, each joined before the next is
 * cancelled; then every child of the set except TEMPORARY ones is started
 * again in spec order, once the failed child's backoff has passed. A
 * TEMPORARY child cancelled this way is not started again (as in OTP).
 * A restart counts against intensity when the child ends; more than
 * `intensity` within period_ms gives up.
 *
 * Returns:
 * - 0 when every child has ended and none is to be restarted;
 * - -ETIMEDOUT / -ECANCELED when the caller's scope ends (or the
 *   supervisor's group is cancelled, by leashd for one): its cancellation
 *   reaches every child at once, and the supervisor joins them in reverse
 *   spec order before it returns;
 * - when a restart would exceed the intensity: every child is cancelled and
 *   joined (reverse spec order), a `restart_limit` report is made, and the
 *   value the child that ended last returned is returned, or -EAGAIN if that
 *   was 0 (a PERMANENT child that kept returning 0);
 * - -EINVAL: children NULL with n > 0, a child with no fn or an unknown
 *   restart type, an unknown strategy, a negative period or backoff,
 *   backoff_max_ms below backoff_min_ms (and not 0), or an intensity with
 *   period_ms 0; -ENOMEM.
 *
 * A stopped child is cancelled on its own (its cancellation points return
 * -ECANCELED and the groups it opened are cancelled), but a foreign call of
 * one stopped child is not interrupted: LEASH_INTERRUPT acts on groups.
 * Children should not leash_go siblings into the supervisor's group (they
 * would run unsupervised until it ends). The supervisor blocks in dumps on
 * `group_wait` of its group; dumps show the group's strategy, `restarts`
 * (counted as intensity counts them: when decided, a ONE_FOR_ALL restart of
 * every child once) and `backoff_ms`, the delay drawn for the latest one.
 */
LEASH_API int leash_supervise_at(const leash_sup_opts *o, const leash_child_spec *children,
                                 size_t n, const char *file, int line);
/* variadic, so that compound literals pass: leash_supervise(&opts, (leash_child_spec[]){...}, 2) */
#define leash_supervise(...) leash_supervise_at(__VA_ARGS__, __FILE__, __LINE__)

/* ----------------------------------------------------------- diagnostics */

enum { LEASH_DUMP_TEXT = 0, LEASH_DUMP_JSON = 1 };
/* Writes every live group and task of the process to fd. Errors: -EINVAL
   (bad format), write(2)'s error. */
LEASH_API int leash_dump(int fd, int format);

struct leash_stats {
    uint64_t tasks_live; /* started by leash_go and not yet returned (root tasks excluded) */
    uint64_t tasks_started;
    uint64_t groups_live;
    uint64_t threads; /* pool threads alive */
    uint64_t reports;
};
LEASH_API int leash_stats(struct leash_stats *out); /* -EINVAL: out NULL */

/* The calling task's id (root tasks included); never 0. */
LEASH_API uint64_t leash_task_id(void);

/* What the library saw (a "report"), as leash_on_report hands it over. */
struct leash_report {
    const char *kind;   /* "lock_abandoned", "self_deadlock", "lock_cycle", "unwaited_group",
                          "unclosed_scope", "restart_limit", ... */
    const char *text;   /* the one-line report as stderr would show it, no newline */
    uint64_t    task;   /* the task it is about (0: none) */
    uint64_t    group;  /* the group or scope it is about, else that task's group (0: none) */
    const char *detail; /* text without its "leash[PID]: KIND: " prefix, for a logger
                           that adds its own (added last: older callers never read it) */
};

/*
 * Routes reports to fn (the service's own logger) instead of stderr; they
 * still go to leashd. NULL restores stderr. fn is called on the reporting
 * thread, with r valid only during the call; it must not block, nor call
 * leash_on_report. Once leash_on_report returns, the previous fn is no
 * longer called. LEASH_REPORT=quiet silences stderr only.
 */
LEASH_API void leash_on_report(void (*fn)(const struct leash_report *r, void *ctx), void *ctx);

/* The library's version at run time ("MAJOR.MINOR.PATCH"), which may differ
   from LEASH_VERSION_STRING, the header's it was compiled against. */
LEASH_API const char *leash_version(void);

#ifdef __cplusplus
}
#endif
#endif
