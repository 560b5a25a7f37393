/*
 * registry.h: the layout of a process's task registry, a memfd shared by
 * libleash (which writes it) and leashd (which reads it, post-mortem).
 *
 * The library keeps every live group and task in a fixed-size slot, written
 * in place with plain stores as they start, block and end: no lock and no
 * system call on any path of the library. leashd gets the memfd at connect
 * (SCM_RIGHTS), maps it read-only, and reads it once the process has exited,
 * so the tree of a process that was killed or crashed outlives it.
 *
 * The writer is the process leashd supervises, and it can write anything
 * here: a reader checks the header against these constants and the mapping's
 * size, takes every string as at most its field's bytes, and treats every
 * number as untrusted.
 *
 * Each slot carries a sequence word: odd while its writer is in the middle
 * of an update, even when whole. A process that died in the middle of an
 * update leaves an odd word; the reader shows that slot marked torn.
 */
#ifndef LEASH_REGISTRY_H
#define LEASH_REGISTRY_H

#include <stdint.h>

#define LEASH_REG_MAGIC   0x3147455248534c45ull /* "ELSHREG1" as bytes */
#define LEASH_REG_VERSION 1

/* Capacities. A process with more live tasks (or groups) than slots keeps
   running as before; the registry counts those with no slot in
   tasks_over/groups_over and the tree is marked truncated. */
#define LEASH_REG_GROUPS  4096
#define LEASH_REG_TASKS   16384
#define LEASH_REG_STRS    2048 /* distinct function names and source files */
#define LEASH_REG_STRLEN  64
#define LEASH_REG_NAMELEN 48
#define LEASH_REG_OBJLEN  40

/* slot flags */
#define LEASH_REG_ROOT    0x1u /* a thread that called leash, not started by leash_go */
#define LEASH_REG_CRASHED 0x2u /* the task its thread ran when a fatal signal came */

struct leash_reg_group {
    uint32_t seq;  /* odd: being written */
    uint32_t live; /* 1: open */
    uint64_t id, parent;
    uint32_t file; /* string index of the site it was opened at; 0: none */
    uint32_t line;
    int64_t  open_ns;     /* CLOCK_MONOTONIC */
    int64_t  deadline_ns; /* effective deadline, CLOCK_MONOTONIC; INT64_MAX: none */
    uint32_t cancelled;   /* 0, ECANCELED or ETIMEDOUT */
    uint32_t flags;       /* LEASH_COLLECT | LEASH_INTERRUPT */
    char     name[LEASH_REG_NAMELEN];
    uint8_t  pad_[24];
};

/* What a spawn writes is in the first 64 bytes, one cache line; what
   blocking adds, in the second. */
struct leash_reg_task {
    uint32_t seq;
    uint32_t live; /* 1: spawned and not yet returned */
    uint64_t id;
    uint64_t group; /* 0: a root task */
    uint32_t fn;    /* string index of the function's name (root tasks: 0, see thread) */
    uint32_t file;  /* string index of the spawn site's file */
    uint32_t line;
    uint32_t flags;    /* LEASH_REG_ROOT, LEASH_REG_CRASHED */
    int32_t  tid;      /* root tasks: the thread; 0: not known */
    uint32_t op;       /* the dump's blocked-on op; 0: running */
    int64_t  start_ns; /* CLOCK_MONOTONIC_COARSE */
    int64_t  since_ns; /* blocked since, same clock */
    uint32_t bfile;    /* string index of the file it blocked at */
    uint32_t bline;
    char     obj[LEASH_REG_OBJLEN];
    char     thread[16]; /* root tasks: the thread's name */
};

struct leash_reg_header {
    uint64_t magic;
    uint32_t version;
    uint32_t header_size, group_size, task_size;
    uint32_t ngroups, ntasks, nstrs, strlen_; /* capacities, as above */
    uint32_t pad0_;
    uint64_t groups_off, tasks_off, strs_off, total_size; /* bytes from the start */
    int32_t  pid;
    uint32_t pad1_;
    char     name[64];    /* the process's display name */
    uint32_t groups_used; /* slots handed out so far (a high-water mark) */
    uint32_t tasks_used;
    uint64_t groups_over; /* live ones that found no slot */
    uint64_t tasks_over;

    /* written by the fatal-signal handler */
    uint32_t crash_seq; /* odd while being written; 0: no crash */
    int32_t  crash_signal;
    int32_t  crash_code; /* si_code */
    int32_t  crash_tid;
    uint64_t crash_addr; /* si_addr */
    uint64_t crash_task; /* 0: the thread ran no task leash knows */
    int64_t  crash_ns;   /* CLOCK_MONOTONIC_COARSE */
};

#define LEASH_REG_HEADER_SIZE 4096

#endif
