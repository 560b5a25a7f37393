/*
 * postmortem.c: the task tree of a process that is gone, from the registry
 * memfd its agent handed over at connect (layout: proto/leash/registry.h).
 *
 * The memfd is the supervised process's own memory: it can write anything
 * there, and keep writing from another process it shared the memfd with. So
 * leashd maps it read-only, takes it only when the kernel says it cannot
 * shrink (a seal: reading past its end would be SIGBUS), copies every slot
 * out before it looks at it, and trusts no number beyond the bounds it
 * checks. Strings are cut at their field's size and cleaned to printable
 * ASCII.
 */
#include "leashd.h"

#include "leash/registry.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define GROUPS_OFF ((uint64_t)LEASH_REG_HEADER_SIZE)
#define TASKS_OFF  (GROUPS_OFF + (uint64_t)LEASH_REG_GROUPS * sizeof(struct leash_reg_group))
#define STRS_OFF   (TASKS_OFF + (uint64_t)LEASH_REG_TASKS * sizeof(struct leash_reg_task))
#define TOTAL_SIZE (STRS_OFF + (uint64_t)LEASH_REG_STRS * LEASH_REG_STRLEN)

/* What one incident keeps, so the journal record stays well under its
   1 MiB frame limit: ~280 bytes a task at most, ~180 a group. */
#define TREE_TASKS  2000
#define TREE_GROUPS 1000

#ifndef F_SEAL_SHRINK
#define F_ADD_SEALS   1033
#define F_GET_SEALS   1034
#define F_SEAL_SHRINK 0x0002
#endif

int registry_map(int fd, const void **map, size_t *size, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "not a regular file");
        return -EINVAL;
    }
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
        snprintf(err, errlen, "not a memfd sealed against shrinking");
        return -EINVAL;
    }
    if ((uint64_t)st.st_size != TOTAL_SIZE) {
        snprintf(err, errlen, "size %lld, not %llu", (long long)st.st_size,
                 (unsigned long long)TOTAL_SIZE);
        return -EINVAL;
    }
    void *p = mmap(NULL, TOTAL_SIZE, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "mmap: %s", strerror(errno));
        return -errno;
    }
    *map = p;
    *size = TOTAL_SIZE;
    return 0;
}

void registry_unmap(const void *map, size_t size)
{
    if (map)
        munmap((void *)map, size);
}

/* ------------------------------------------------------------ the reader */

/* A string field of n bytes, cut at its end and cleaned, in a malloc'd copy. */
static char *clean(const char *src, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    size_t i = 0;
    for (; i < n && src[i]; i++)
        s[i] = src[i] >= 0x20 && src[i] < 0x7f ? src[i] : '?';
    s[i] = '\0';
    return s;
}

struct reader {
    const char *base;
    char        strs[LEASH_REG_STRS][LEASH_REG_STRLEN]; /* a copy: read once */
    int64_t     now_ns;
};

static const char *str_of(const struct reader *r, uint32_t i)
{
    return i > 0 && i < LEASH_REG_STRS ? r->strs[i] : "";
}

static char *site_of(const struct reader *r, uint32_t file, uint32_t line)
{
    const char *f = str_of(r, file);
    if (!*f)
        return strdup("");
    char *s;
    return asprintf(&s, "%s:%" PRIu32, f, line) < 0 ? NULL : s;
}

static int64_t ms_since(const struct reader *r, int64_t ns)
{
    if (ns <= 0 || ns >= r->now_ns)
        return 0;
    return (r->now_ns - ns) / 1000000;
}

static Leash__Agent__Task *task_of(const struct reader *r, const struct leash_reg_task *x)
{
    Leash__Agent__Task *t = malloc(sizeof *t);
    if (!t)
        return NULL;
    leash__agent__task__init(t);
    t->id = x->id;
    t->group = x->group;
    if (x->flags & LEASH_REG_ROOT)
        t->fn = clean(x->thread, sizeof x->thread);
    else
        t->fn = clean(str_of(r, x->fn), LEASH_REG_STRLEN);
    t->site = x->flags & LEASH_REG_ROOT ? strdup("") : site_of(r, x->file, x->line);
    t->op =
        x->op <= LEASH__AGENT__OP__OP_GO ? (Leash__Agent__Op)x->op : LEASH__AGENT__OP__OP_RUNNING;
    if (t->op) {
        t->object = clean(x->obj, sizeof x->obj);
        t->blocked_site = site_of(r, x->bfile, x->bline);
        t->since_ms = ms_since(r, x->since_ns);
    } else {
        t->object = strdup("");
        t->blocked_site = strdup("");
        t->since_ms = ms_since(r, x->start_ns);
    }
    t->syscall_name = strdup("");
    t->crashed = (x->flags & LEASH_REG_CRASHED) != 0;
    if (!t->fn || !t->site || !t->object || !t->blocked_site || !t->syscall_name) {
        leash__agent__task__free_unpacked(t, NULL);
        return NULL;
    }
    return t;
}

static Leash__Agent__Group *group_of(const struct reader *r, const struct leash_reg_group *x)
{
    Leash__Agent__Group *g = malloc(sizeof *g);
    if (!g)
        return NULL;
    leash__agent__group__init(g);
    g->id = x->id;
    g->parent = x->parent;
    g->name = clean(x->name, sizeof x->name);
    g->site = site_of(r, x->file, x->line);
    g->deadline_ms_left = x->deadline_ns == INT64_MAX || x->deadline_ns <= 0 ? -1
                          : x->deadline_ns > r->now_ns ? (x->deadline_ns - r->now_ns) / 1000000
                                                       : 0;
    g->cancelled = x->cancelled != 0;
    g->flags = x->flags;
    if (!g->name || !g->site) {
        leash__agent__group__free_unpacked(g, NULL);
        return NULL;
    }
    return g;
}

static bool has_group(const Leash__Agent__Snapshot *s, uint64_t id)
{
    for (size_t i = 0; i < s->n_groups; i++)
        if (s->groups[i]->id == id)
            return true;
    return false;
}

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGABRT: return "SIGABRT";
    default: return NULL;
    }
}

static void crash_detail(const struct reader *r, const struct leash_reg_header *h,
                         const Leash__Agent__Snapshot *s, struct registry_crash *c)
{
    const char *name = signal_name(h->crash_signal);
    if (!name)
        return; /* not a signal the library handles: a lie, or a newer library */
    snprintf(c->signal, sizeof c->signal, "%s", name);
    c->task = h->crash_task;
    char                      where[512] = "";
    const Leash__Agent__Task *t = NULL;
    for (size_t i = 0; h->crash_task && i < s->n_tasks; i++)
        if (s->tasks[i]->id == h->crash_task)
            t = s->tasks[i];
    if (t && t->group) {
        const Leash__Agent__Group *g = NULL;
        for (size_t i = 0; i < s->n_groups; i++)
            if (s->groups[i]->id == t->group)
                g = s->groups[i];
        c->group = t->group;
        snprintf(c->group_name, sizeof c->group_name, "%s", g ? g->name : "");
        snprintf(where, sizeof where,
                 " in task %" PRIu64 " (%s, spawned at %s) in group %" PRIu64 " \"%s\"", t->id,
                 t->fn, *t->site ? t->site : "?", t->group, g ? g->name : "?");
    } else if (t) {
        snprintf(where, sizeof where, " in task %" PRIu64 " (thread %s)", t->id, t->fn);
    } else if (h->crash_task) {
        snprintf(where, sizeof where, " in task %" PRIu64, h->crash_task);
    } else {
        snprintf(where, sizeof where, " on thread %d, in no task of leash", (int)h->crash_tid);
    }
    (void)r;
    snprintf(c->detail, sizeof c->detail, "died of %s (address 0x%" PRIx64 ")%s", name,
             h->crash_addr, where);
}

Leash__Control__TaskTree *registry_read(const void *map, size_t size, int64_t now_ns, int pid,
                                        const char *name, struct registry_crash *crash)
{
    memset(crash, 0, sizeof *crash);
    const char *reg = map;
    if (!reg || size < TOTAL_SIZE)
        return NULL;
    struct reader *r = malloc(sizeof *r);
    if (!r)
        return NULL;
    r->base = reg;
    r->now_ns = now_ns;
    struct leash_reg_header h;
    memcpy(&h, reg, sizeof h);
    if (h.magic != LEASH_REG_MAGIC || h.version != LEASH_REG_VERSION ||
        h.header_size != LEASH_REG_HEADER_SIZE || h.group_size != sizeof(struct leash_reg_group) ||
        h.task_size != sizeof(struct leash_reg_task) || h.ngroups != LEASH_REG_GROUPS ||
        h.ntasks != LEASH_REG_TASKS || h.nstrs != LEASH_REG_STRS || h.strlen_ != LEASH_REG_STRLEN ||
        h.groups_off != GROUPS_OFF || h.tasks_off != TASKS_OFF || h.strs_off != STRS_OFF ||
        h.total_size != TOTAL_SIZE) {
        free(r);
        return NULL;
    }
    memcpy(r->strs, reg + STRS_OFF, sizeof r->strs);
    for (size_t i = 0; i < LEASH_REG_STRS; i++) {
        char *c = r->strs[i];
        c[LEASH_REG_STRLEN - 1] = '\0';
        for (; *c; c++)
            if (*c < 0x20 || *c >= 0x7f)
                *c = '?';
    }
    bool crashed = h.crash_seq == 2 && h.crash_signal > 0;
    if (crashed && h.crash_ns > 0 && h.crash_ns < now_ns)
        r->now_ns = h.crash_ns; /* ages as at the moment of death */

    Leash__Control__TaskTree *t = malloc(sizeof *t);
    Leash__Agent__Snapshot   *s = malloc(sizeof *s);
    if (!t || !s) {
        free(t);
        free(s);
        free(r);
        return NULL;
    }
    leash__control__task_tree__init(t);
    leash__agent__snapshot__init(s);
    t->snapshot = s;
    /* who the tree is of is leashd's to say, not the registry's: the
       process wrote the header's pid and name, and may have written pid 1 */
    t->pid = pid;
    t->name = strdup(name ? name : "");
    s->groups = calloc(TREE_GROUPS + 1, sizeof *s->groups);
    s->tasks = calloc(TREE_TASKS + 1, sizeof *s->tasks);
    if (!t->name || !s->groups || !s->tasks)
        goto oom;
    s->truncated = h.tasks_over != 0 || h.groups_over != 0;

    uint32_t ng = h.groups_used < LEASH_REG_GROUPS ? h.groups_used : LEASH_REG_GROUPS;
    for (uint32_t i = 0; i < ng; i++) {
        struct leash_reg_group x;
        memcpy(&x, reg + GROUPS_OFF + (uint64_t)i * sizeof x, sizeof x);
        if (x.live != 1 || x.id == 0)
            continue;
        if (s->n_groups == TREE_GROUPS) {
            s->truncated = true;
            break;
        }
        if (has_group(s, x.id))
            continue; /* the same id twice: a lie */
        if (!(s->groups[s->n_groups] = group_of(r, &x)))
            goto oom;
        s->n_groups++;
    }
    uint32_t nt = h.tasks_used < LEASH_REG_TASKS ? h.tasks_used : LEASH_REG_TASKS;
    for (uint32_t i = 0; i < nt; i++) {
        struct leash_reg_task x;
        memcpy(&x, reg + TASKS_OFF + (uint64_t)i * sizeof x, sizeof x);
        if (x.live != 1 || x.id == 0)
            continue;
        if (s->n_tasks == TREE_TASKS) {
            s->truncated = true;
            break;
        }
        if (!(s->tasks[s->n_tasks] = task_of(r, &x)))
            goto oom;
        s->n_tasks++;
    }
    /* a task in a group with no slot (truncated, or a lie) still shows */
    for (size_t i = 0; i < s->n_tasks; i++) {
        uint64_t gid = s->tasks[i]->group;
        if (gid == 0 || has_group(s, gid))
            continue;
        if (s->n_groups == TREE_GROUPS) {
            s->tasks[i]->group = 0;
            continue;
        }
        struct leash_reg_group x = {.id = gid, .live = 1, .deadline_ns = INT64_MAX};
        memcpy(x.name, "?", 2);
        if (!(s->groups[s->n_groups] = group_of(r, &x)))
            goto oom;
        s->n_groups++;
        s->truncated = true;
    }
    if (crashed)
        crash_detail(r, &h, s, crash);
    free(r);
    return t;
oom:
    free(r);
    leash__control__task_tree__free_unpacked(t, NULL);
    return NULL;
}

size_t registry_live_tasks(const Leash__Control__TaskTree *t)
{
    size_t n = 0;
    for (size_t i = 0; t && t->snapshot && i < t->snapshot->n_tasks; i++)
        n += t->snapshot->tasks[i]->group != 0;
    return n;
}
