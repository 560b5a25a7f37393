/* snapshot.h: a copy of every live group and task, for dumps and the agent. */
#ifndef LEASH_SNAPSHOT_H
#define LEASH_SNAPSHOT_H

#include "internal.h"

struct leash_snap_task {
    uint64_t    id;
    const char *fn;        /* static, or fnbuf (a root task's thread name) */
    char        fnbuf[16]; /* sizeof leash_task.thread_name */
    bool        fn_copied;
    const char *file; /* spawn site; NULL for root tasks */
    int         line;
    int         op;         /* LEASH_OP_*; 0: running */
    const char *obj;        /* name of what it is blocked on: objbuf, or NULL */
    char        objbuf[48]; /* copied while the object cannot go (see snap_task) */
    const char *bfile;      /* where it blocked */
    int         bline;
    int64_t     since_ms; /* in its state this long */
    int64_t     since_ns; /* since when, on the clock leash__coarse_ns reads */
    uint64_t    held_by;  /* blocked on a mutex: the task holding it; 0: unknown */
    /* running tasks, from /proc (see proc.c) */
    int      tid;
    bool     first_on_thread;
    int64_t  start_ns;
    int64_t  cpu_ms;  /* -1: unknown */
    int      cpu_pct; /* -1: unknown */
    long     sys_nr;  /* -1: not in a system call */
    uint64_t sys_args[6];
};

struct leash_snap_group {
    uint64_t    id, parent, opener;
    char        name[48];
    const char *open_file;
    int         open_line;
    unsigned    flags, limit;
    int         cancelled;        /* 0, ECANCELED or ETIMEDOUT */
    int64_t     deadline_ms_left; /* -1: none */
    int64_t     age_ms;
    int         strategy;     /* a supervisor's LEASH_ONE_FOR_ONE...; -1: not one */
    uint64_t    restarts;     /* a supervisor's restarts */
    int64_t     backoff_ms;   /* the delay of its latest restart */
    int         scope;        /* 0: a group; 1: a cancel scope; 2: a shielded one */
    size_t      first, count; /* its tasks in leash_snapshot.tasks */
};

struct leash_snapshot {
    int                      pid;
    const char              *name;
    struct leash_snap_group *groups; /* [0] is the root group */
    size_t                   ngroups, gcap;
    struct leash_snap_task  *tasks;
    size_t                   ntasks, tcap;
};

int leash_snapshot_take(struct leash_snapshot *s);
/* For the tests alone: called by a snapshot that has seen task blocked on
   op, before it copies the name of what it is blocked on; the call blocked
   cannot return meanwhile. */
LEASH__HIDDEN extern void (*leash__snap_hook)(uint64_t task, int op);
/* Blocking calls that waited for a snapshot's copy to end (leash__peek_wait). */
LEASH__HIDDEN extern _Atomic uint64_t leash__peek_waits;
void                                  leash_snapshot_free(struct leash_snapshot *s);
void leash_snapshot_text(const struct leash_snapshot *s, struct leash__buf *b);
void leash_snapshot_json(const struct leash_snapshot *s, struct leash__buf *b);
/* "one_for_one", "one_for_all", "rest_for_one"; NULL for -1 */
const char *leash__strategy_name(int strategy);

#endif
