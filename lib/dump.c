/* dump.c: a consistent-enough snapshot of every live group and task, as text or JSON. */
#define _GNU_SOURCE
#include "internal.h"
#include "snapshot.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The name leashd and dumps know the process by: $LEASH_NAME, else the
   program's. leashd takes at most 63 bytes of text, so control characters
   become '?' and a longer name is cut, at a character boundary (UTF-8):
   a name it would refuse must not leave the process unsupervised. The
   copy is the calling thread's, until its next call. */
const char *leash__process_name(void)
{
    static _Thread_local char buf[64];
    const char               *n = getenv("LEASH_NAME");
    if (!n || !*n)
        n = program_invocation_short_name;
    size_t len = strlen(n);
    if (len >= sizeof buf) {
        len = sizeof buf - 1;
        while (len && ((unsigned char)n[len] & 0xc0) == 0x80)
            len--; /* n[len], the first byte cut, continues a character */
    }
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)n[i] < 0x20 || n[i] == 0x7f ? '?' : n[i];
    buf[len] = '\0';
    return buf;
}

void (*leash__snap_hook)(uint64_t task, int op);
_Atomic uint64_t leash__peek_waits;

void leash__peek_wait(leash_task *t)
{
    atomic_fetch_add_explicit(&leash__peek_waits, 1, memory_order_relaxed);
    for (unsigned i = 0; atomic_load_explicit(&t->peeks, memory_order_acquire) != 0; i++) {
        if (i < 100)
            leash__cpu_relax();
        else
            sched_yield(); /* the copier lost its CPU */
    }
}

static int snap_task(struct leash_snapshot *s, leash_task *t, int64_t now)
{
    if (s->ntasks == s->tcap) {
        size_t                  cap = s->tcap ? s->tcap * 2 : 64;
        struct leash_snap_task *p = realloc(s->tasks, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        s->tasks = p;
        s->tcap = cap;
    }
    struct leash_snap_task *x = &s->tasks[s->ntasks++];
    x->id = t->id;
    x->fn = t->fn_name; /* static (#fn, an interned child name), but for: */
    if (t->fn_name == t->thread_name) {
        /* a root task's name is in its record, which a thread that ends
           gives back for reuse (under roots_mu here: not yet) */
        memcpy(x->fnbuf, t->thread_name, sizeof x->fnbuf);
        x->fnbuf[sizeof x->fnbuf - 1] = '\0';
        x->fn = x->fnbuf;
    }
    x->fn_copied = x->fn == x->fnbuf;
    x->file = t->spawn_file;
    x->line = t->spawn_line;
    /* The name blocked on is copied, not pointed to: the object (a group
       being waited for, a channel, a lock) may be freed as soon as the call
       blocked on it returns, before this snapshot is printed. Under
       t->peeks the call cannot return (leash__unblocked), so the name is
       alive while it is copied; nothing here may take a lock meanwhile. */
    atomic_fetch_add_explicit(&t->peeks, 1, memory_order_seq_cst);
    x->op = atomic_load_explicit(&t->op, memory_order_seq_cst);
    x->obj = NULL;
    x->objbuf[0] = '\0';
    x->bfile = NULL;
    x->bline = 0;
    if (x->op) {
        if (unlikely(leash__snap_hook != NULL))
            leash__snap_hook(x->id, x->op);
        const char *obj = atomic_load_explicit(&t->obj, memory_order_relaxed);
        if (obj) {
            leash__copy_name(x->objbuf, sizeof x->objbuf, obj);
            x->obj = x->objbuf; /* set again once the array stops moving */
        }
        x->bfile = atomic_load_explicit(&t->bfile, memory_order_relaxed); /* static */
        x->bline = atomic_load_explicit(&t->bline, memory_order_relaxed);
    }
    int64_t since = x->op ? atomic_load_explicit(&t->since_ns, memory_order_relaxed) : t->start_ns;
    atomic_fetch_sub_explicit(&t->peeks, 1, memory_order_release);
    x->since_ms = since < now ? (now - since) / 1000000 : 0;
    x->since_ns = since;
    x->held_by = x->op == LEASH_OP_MUTEX ? leash__lock_holder(t) : 0;
    /* a queued task's worker fields are not written yet */
    bool started = atomic_load_explicit(&t->started, memory_order_acquire);
    x->tid = started ? atomic_load_explicit(&t->tid, memory_order_relaxed) : 0;
    x->first_on_thread = started && t->first_on_thread;
    x->start_ns = t->start_ns;
    x->cpu_ms = -1;
    x->cpu_pct = -1;
    x->sys_nr = -1;
    return 0;
}

static int snap_group(struct leash_snapshot *s)
{
    if (s->ngroups == s->gcap) {
        size_t                   cap = s->gcap ? s->gcap * 2 : 16;
        struct leash_snap_group *p = realloc(s->groups, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        s->groups = p;
        s->gcap = cap;
    }
    memset(&s->groups[s->ngroups], 0, sizeof s->groups[0]);
    s->groups[s->ngroups].first = s->ntasks;
    s->ngroups++;
    return 0;
}

static int by_usefulness(const void *a, const void *b)
{
    const struct leash_snap_task *x = a, *y = b;
    if ((x->op != 0) != (y->op != 0))
        return x->op ? -1 : 1; /* blocked first */
    if (x->since_ms != y->since_ms)
        return x->since_ms > y->since_ms ? -1 : 1; /* longest first */
    return x->id < y->id ? -1 : x->id > y->id;
}

static int by_id(const void *a, const void *b)
{
    const struct leash_snap_group *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

int leash_snapshot_take(struct leash_snapshot *s)
{
    memset(s, 0, sizeof *s);
    int64_t now = leash__coarse_ns(); /* the clock tasks' `since` are read with */
    s->pid = getpid();
    s->name = leash__process_name();
    int err = snap_group(s);
    if (err)
        return err;
    struct leash_snap_group *root = &s->groups[0];
    root->id = 0;
    leash__copy_name(root->name, sizeof root->name, "root");
    root->deadline_ms_left = -1;
    root->strategy = -1;
    leash__lock(&leash__roots_mu);
    for (leash_task *t = leash__roots; t && !err; t = t->gnext)
        err = snap_task(s, t, now);
    leash__unlock(&leash__roots_mu);
    s->groups[0].count = s->ntasks - s->groups[0].first;

    leash__lock(&leash__groups_mu);
    for (struct leash_group *g = leash__groups; g && !err; g = g->rnext) {
        if ((err = snap_group(s)) != 0)
            break;
        struct leash_snap_group *x = &s->groups[s->ngroups - 1];
        x->id = g->id;
        x->parent = g->parent ? g->parent->id : 0;
        memcpy(x->name, g->name, sizeof x->name);
        x->open_file = g->open_file;
        x->open_line = g->open_line;
        x->flags = g->flags;
        x->limit = g->limit;
        x->opener = g->opener->id;
        x->age_ms = (now - g->open_ns) / 1000000;
        x->strategy = g->strategy;
        x->scope = g->holder ? 1 + g->shield : 0;
        x->restarts = atomic_load_explicit(&g->restarts, memory_order_relaxed);
        x->backoff_ms = atomic_load_explicit(&g->backoff_ms, memory_order_relaxed);
        x->deadline_ms_left = g->deadline_ns == INT64_MAX ? -1
                              : g->deadline_ns > now      ? (g->deadline_ns - now) / 1000000
                                                          : 0;
        /* every child from its spawn until it returns: on g's list, or
           in the pool's queue; a worker moves a task from the queue to the
           list holding both locks, so under both it is in one of them */
        leash__pool_lock();
        leash__lock(&g->mu);
        x->cancelled = atomic_load_explicit(&g->cancel_cause, memory_order_relaxed);
        for (leash_task *t = g->tasks; t && !err; t = t->gnext)
            err = snap_task(s, t, now);
        leash__unlock(&g->mu);
        void *cursor = NULL;
        for (leash_task *t = leash__pool_queued_next(NULL, &cursor); t && !err;
             t = leash__pool_queued_next(t, &cursor))
            if (t->group == g)
                err = snap_task(s, t, now);
        leash__pool_unlock();
        x->count = s->ntasks - x->first;
    }
    leash__unlock(&leash__groups_mu);
    if (err) {
        leash_snapshot_free(s);
        return err;
    }
    /* what running tasks do, read with no lock held: /proc is slow */
    for (size_t i = 0; i < s->ntasks; i++) {
        struct leash_snap_task *x = &s->tasks[i];
        if (x->op || !x->tid)
            continue;
        struct leash__proc_task in = {x->tid, x->id, x->start_ns, x->first_on_thread};
        struct leash__proc_use  u;
        leash__proc_read(&in, &u);
        x->cpu_ms = u.cpu_ms;
        x->cpu_pct = u.cpu_pct;
        x->sys_nr = u.sys_nr;
        memcpy(x->sys_args, u.sys_args, sizeof x->sys_args);
    }
    for (size_t i = 0; i < s->ngroups; i++)
        if (s->groups[i].count > 1)
            qsort(s->tasks + s->groups[i].first, s->groups[i].count, sizeof *s->tasks,
                  by_usefulness);
    if (s->ngroups > 2)
        qsort(s->groups + 1, s->ngroups - 1, sizeof *s->groups, by_id);
    for (size_t i = 0; i < s->ntasks; i++) { /* the array has stopped moving */
        struct leash_snap_task *x = &s->tasks[i];
        if (x->obj)
            x->obj = x->objbuf;
        if (x->fn_copied)
            x->fn = x->fnbuf;
    }
    return 0;
}

void leash_snapshot_free(struct leash_snapshot *s)
{
    free(s->groups);
    free(s->tasks);
    memset(s, 0, sizeof *s);
}

const char *leash__strategy_name(int strategy)
{
    switch (strategy) {
    case LEASH_ONE_FOR_ONE: return "one_for_one";
    case LEASH_ONE_FOR_ALL: return "one_for_all";
    case LEASH_REST_FOR_ONE: return "rest_for_one";
    }
    return NULL;
}

static void site(struct leash__buf *b, const char *file, int line)
{
    if (file)
        leash__bprintf(b, "%s:%d", file, line);
    else
        leash__bprintf(b, "?");
}

/* A site as a JSON string: a file name is the compiler's (__FILE__, or a
   #line directive's), and may hold a quote or a backslash. */
static void site_json(struct leash__buf *b, const char *file, int line)
{
    leash__bprintf(b, "\"");
    if (file) {
        leash__bjson_chars(b, file);
        leash__bprintf(b, ":%d", line);
    } else {
        leash__bprintf(b, "?");
    }
    leash__bprintf(b, "\"");
}

void leash_snapshot_text(const struct leash_snapshot *s, struct leash__buf *b)
{
    size_t blocked = 0;
    for (size_t i = 0; i < s->ntasks; i++)
        blocked += s->tasks[i].op != 0;
    leash__bprintf(b, "leash dump: pid %d (%s): %zu groups, %zu tasks, %zu blocked\n", s->pid,
                   s->name, s->ngroups - 1, s->ntasks, blocked);
    for (size_t i = 0; i < s->ngroups; i++) {
        const struct leash_snap_group *g = &s->groups[i];
        if (i == 0) {
            leash__bprintf(b, "\ngroup 0 \"root\": threads that called leash\n");
        } else {
            leash__bprintf(b, "\n%s %llu \"%s\" (parent %llu), opened at ",
                           g->scope == 2 ? "shielded scope"
                           : g->scope    ? "scope"
                                         : "group",
                           (unsigned long long)g->id, g->name, (unsigned long long)g->parent);
            site(b, g->open_file, g->open_line);
            leash__bprintf(b, " by task %llu, %lld ms ago", (unsigned long long)g->opener,
                           (long long)g->age_ms);
            if (g->deadline_ms_left >= 0)
                leash__bprintf(b, ", deadline in %lld ms", (long long)g->deadline_ms_left);
            if (g->strategy >= 0) {
                leash__bprintf(b, ", supervisor %s, %llu restarts",
                               leash__strategy_name(g->strategy), (unsigned long long)g->restarts);
                if (g->restarts)
                    leash__bprintf(b, " (the latest after %lld ms)", (long long)g->backoff_ms);
            }
            if (g->cancelled)
                leash__bprintf(b, ", CANCELLED (%s)",
                               g->cancelled == ETIMEDOUT ? "deadline" : "cancel");
            leash__bprintf(b, ":\n");
        }
        if (!g->count && !g->scope)
            leash__bprintf(b, "  (no tasks)\n");
        for (size_t j = g->first; j < g->first + g->count; j++) {
            const struct leash_snap_task *t = &s->tasks[j];
            leash__bprintf(b, "  task %llu %s [", (unsigned long long)t->id, t->fn);
            if (t->op) {
                leash__bprintf(b, "blocked on %s", leash__op_name(t->op));
                if (t->obj)
                    leash__bprintf(b, " \"%s\"", t->obj);
                if (t->held_by)
                    leash__bprintf(b, " held by task %llu", (unsigned long long)t->held_by);
                leash__bprintf(b, ", %lld ms]:\n      blocked at ", (long long)t->since_ms);
                site(b, t->bfile, t->bline);
                leash__bprintf(b, "\n");
            } else if (t->sys_nr >= 0) {
                char nb[32];
                /* how long it has been in the call is not known: since_ms
                   is the task's running time */
                leash__bprintf(b, "running, %lld ms, now in %s(2)", (long long)t->since_ms,
                               leash__syscall_name(t->sys_nr, nb, sizeof nb));
                if (t->cpu_ms >= 0)
                    leash__bprintf(b, ", %lld ms on CPU", (long long)t->cpu_ms);
                leash__bprintf(b, "]:\n");
            } else if (t->cpu_pct >= 0) {
                leash__bprintf(b, "running, %lld ms, on CPU %d%%", (long long)t->since_ms,
                               t->cpu_pct);
                leash__bprintf(b, ", %lld ms on CPU]:\n", (long long)t->cpu_ms);
            } else {
                leash__bprintf(b, "running, %lld ms]:\n", (long long)t->since_ms);
            }
            if (t->file) {
                leash__bprintf(b, "      spawned at ");
                site(b, t->file, t->line);
                leash__bprintf(b, "\n");
            }
        }
    }
}

void leash_snapshot_json(const struct leash_snapshot *s, struct leash__buf *b)
{
    leash__bprintf(b, "{\"pid\":%d,\"name\":", s->pid);
    leash__bjson_str(b, s->name);
    leash__bprintf(b, ",\"groups\":[");
    for (size_t i = 0; i < s->ngroups; i++) {
        const struct leash_snap_group *g = &s->groups[i];
        leash__bprintf(b, "%s{\"id\":%llu,\"parent\":", i ? "," : "", (unsigned long long)g->id);
        if (i == 0)
            leash__bprintf(b, "null");
        else
            leash__bprintf(b, "%llu", (unsigned long long)g->parent);
        leash__bprintf(b, ",\"name\":");
        leash__bjson_str(b, g->name);
        leash__bprintf(b, ",\"deadline_ms_left\":");
        if (g->deadline_ms_left >= 0)
            leash__bprintf(b, "%lld", (long long)g->deadline_ms_left);
        else
            leash__bprintf(b, "null");
        leash__bprintf(b, ",\"cancelled\":%s", g->cancelled ? "true" : "false");
        leash__bprintf(b, ",\"restarts\":%llu,\"strategy\":", (unsigned long long)g->restarts);
        leash__bjson_str(b, leash__strategy_name(g->strategy));
        if (g->strategy >= 0)
            leash__bprintf(b, ",\"backoff_ms\":%lld", (long long)g->backoff_ms);
        if (g->scope) /* its task is listed in its own group */
            leash__bprintf(b, ",\"scope\":{\"task\":%llu,\"shield\":%s}",
                           (unsigned long long)g->opener, g->scope == 2 ? "true" : "false");
        if (i) {
            leash__bprintf(b, ",\"site\":");
            site_json(b, g->open_file, g->open_line);
        }
        leash__bprintf(b, ",\"tasks\":[");
        for (size_t j = g->first; j < g->first + g->count; j++) {
            const struct leash_snap_task *t = &s->tasks[j];
            leash__bprintf(b, "%s{\"id\":%llu,\"fn\":", j > g->first ? "," : "",
                           (unsigned long long)t->id);
            leash__bjson_str(b, t->fn);
            leash__bprintf(b, ",\"site\":");
            if (t->file) {
                site_json(b, t->file, t->line);
            } else {
                leash__bprintf(b, "null");
            }
            leash__bprintf(b, ",\"state\":\"%s\",\"blocked_on\":", t->op ? "blocked" : "running");
            if (t->op) {
                leash__bprintf(b, "{\"op\":\"%s\",\"object\":", leash__op_name(t->op));
                leash__bjson_str(b, t->obj);
                leash__bprintf(b, ",\"site\":");
                site_json(b, t->bfile, t->bline);
                if (t->held_by)
                    leash__bprintf(b, ",\"held_by\":%llu", (unsigned long long)t->held_by);
                leash__bprintf(b, "}");
            } else {
                leash__bprintf(b, "null");
            }
            leash__bprintf(b, ",\"since_ms\":%lld", (long long)t->since_ms);
            if (t->op) {
                leash__bprintf(b, ",\"cpu_ms\":null,\"cpu_pct\":null,\"syscall\":null}");
                continue;
            }
            if (t->cpu_ms >= 0)
                leash__bprintf(b, ",\"cpu_ms\":%lld", (long long)t->cpu_ms);
            else
                leash__bprintf(b, ",\"cpu_ms\":null");
            if (t->cpu_pct >= 0)
                leash__bprintf(b, ",\"cpu_pct\":%d", t->cpu_pct);
            else
                leash__bprintf(b, ",\"cpu_pct\":null");
            if (t->sys_nr >= 0) {
                char nb[32];
                leash__bprintf(b, ",\"syscall\":{\"nr\":%ld,\"name\":", t->sys_nr);
                leash__bjson_str(b, leash__syscall_name(t->sys_nr, nb, sizeof nb));
                leash__bprintf(b, ",\"args\":[");
                for (int a = 0; a < 6; a++)
                    leash__bprintf(b, "%s%llu", a ? "," : "", (unsigned long long)t->sys_args[a]);
                leash__bprintf(b, "]}}");
            } else {
                leash__bprintf(b, ",\"syscall\":null}");
            }
        }
        leash__bprintf(b, "]}");
    }
    leash__bprintf(b, "]}\n");
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int leash_dump(int fd, int format)
{
    if (format != LEASH_DUMP_TEXT && format != LEASH_DUMP_JSON)
        return -EINVAL;
    if (fd < 0)
        return -EBADF;
    struct leash_snapshot s;
    int                   err = leash_snapshot_take(&s);
    if (err)
        return err;
    struct leash__buf b = {0};
    if (format == LEASH_DUMP_TEXT)
        leash_snapshot_text(&s, &b);
    else
        leash_snapshot_json(&s, &b);
    leash_snapshot_free(&s);
    err = b.oom ? -ENOMEM : write_all(fd, b.p, b.len);
    free(b.p);
    return err;
}

int leash_stats(struct leash_stats *out)
{
    if (!out)
        return -EINVAL;
    uint64_t ended = atomic_load_explicit(&leash__tasks_ended, memory_order_acquire);
    out->tasks_started = atomic_load_explicit(&leash__tasks_started, memory_order_acquire);
    out->tasks_live = out->tasks_started - ended;
    out->groups_live = atomic_load_explicit(&leash__groups_live, memory_order_relaxed);
    out->threads = atomic_load_explicit(&leash__threads, memory_order_relaxed);
    out->reports = atomic_load_explicit(&leash__reports, memory_order_relaxed);
    return 0;
}

const char *leash_version(void)
{
    return LEASH_BUILD_VERSION; /* the project's version, from the build */
}
