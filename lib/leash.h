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
 *   (the group it runs in, and every group around that one) is cancelled, the
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
 * leash_go still alive prints the dump to stderr and makes the exit status 70).
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
 * slot. Errors: -EINVAL (g or fn NULL), -ECANCELED (g is cancelled, for
 * whatever cause: the child was not started), -ETIMEDOUT / -ECANCELED (the
 * caller's own scope ended while it waited for a slot), -ENOMEM. When no
 * thread can be made, the child waits in the pool's queue for a free one.
 */
LEASH_API int leash_go_at(leash_group *g, int (*fn)(void *), void *arg, const char *fn_name,
                          const char *file, int line);
#define leash_go(g, fn, arg) leash_go_at((g), (fn), (arg), #fn, __FILE__, __LINE__)

/* Cancels g and its whole subtree (cause: -ECANCELED). Idempotent; NULL is ignored. */
LEASH_API void leash_group_cancel(leash_group *g);

/*
 * Joins every child, then frees g. Returns the first non-zero value a child
 * returned while the group was not yet cancelled; else, if the group was
 * cancelled, -ETIMEDOUT when a deadline caused it and -ECANCELED otherwise;
 * else 0. Never cut short: when the caller's scope is cancelled, it cancels
 * the group and still joins every child. Errors: -EINVAL (g NULL), -EPERM
 * (the caller is not the task that opened g; g is left as it was). Waiting a
 * group twice is undefined, as joining a thread twice is: g is freed by the
 * first wait.
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

/* The caller's effective deadline, CLOCK_MONOTONIC ms; INT64_MAX: none. */
LEASH_API int64_t leash_deadline(void);

/* -------------------------------------------------------------- channels */

typedef struct leash_chan leash_chan;

/*
 * Opens a channel of elements of elem_size bytes; capacity 0 makes it a
 * rendezvous. Errors: -EINVAL (c NULL, elem_size 0), -ENOMEM.
 * The caller owns *c and frees it with leash_chan_free() once no task uses it.
 */
LEASH_API int leash_chan_open(leash_chan **c, const char *name, size_t elem_size, size_t capacity);
/* Copies elem in. Errors: -EINVAL, -EPIPE (closed), -ETIMEDOUT, -ECANCELED. */
LEASH_API int leash_chan_send_at(leash_chan *c, const void *elem, const char *file, int line);
#define leash_chan_send(c, e) leash_chan_send_at((c), (e), __FILE__, __LINE__)
/* Copies one out. Errors: -EINVAL, -EPIPE (closed and drained), -ETIMEDOUT, -ECANCELED. */
LEASH_API int leash_chan_recv_at(leash_chan *c, void *elem, const char *file, int line);
#define leash_chan_recv(c, e) leash_chan_recv_at((c), (e), __FILE__, __LINE__)
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
 * Waits until one case can complete, completes it, and returns its index
 * (among several ready cases, one chosen at random). timeout_ms < 0 waits for
 * ever; otherwise -ETIMEDOUT when it passes (0 polls). Errors: -EINVAL (cases
 * NULL with n > 0, a bad op, elem NULL on a live case), -ETIMEDOUT,
 * -ECANCELED.
 */
LEASH_API int leash_select_at(struct leash_case *cases, size_t n, int64_t timeout_ms,
                              const char *file, int line);
#define leash_select(cs, n, ms) leash_select_at((cs), (n), (ms), __FILE__, __LINE__)

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

#ifdef __cplusplus
}
#endif
#endif
