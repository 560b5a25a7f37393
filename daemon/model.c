/*
 * model.c: leashd's view of every leashed process: processes -> groups ->
 * tasks, indexed by id. The functions here are the actions a decoded agent
 * message leads to; they trust the decoder to have checked every field.
 */
#include "leashd.h"

#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct proc *procs;
bool         leashd_stopping;
uint64_t     stat_events, stat_frames_rejected, stat_bad_messages;
uint64_t     stat_restarts;
uint64_t     stat_tasks_folded;

/* ------------------------------------------------------------------ map */

static size_t slot_of(uint64_t k, size_t cap)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k & (cap - 1);
}

void *map_get(const struct map *m, uint64_t k)
{
    if (!m->cap || !k)
        return NULL;
    for (size_t i = slot_of(k, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == k)
            return m->vals[i];
        if (!m->keys[i])
            return NULL;
    }
}

static int map_grow(struct map *m)
{
    size_t    cap = m->cap ? m->cap * 2 : 16;
    uint64_t *keys = calloc(cap, sizeof *keys);
    void    **vals = calloc(cap, sizeof *vals);
    if (!keys || !vals) {
        free(keys);
        free(vals);
        return -ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t j = slot_of(m->keys[i], cap);
        while (keys[j])
            j = (j + 1) & (cap - 1);
        keys[j] = m->keys[i];
        vals[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    return 0;
}

int map_put(struct map *m, uint64_t k, void *v)
{
    if (!k)
        return -EINVAL;
    if ((m->n + 1) * 4 > m->cap * 3 && map_grow(m))
        return -ENOMEM;
    size_t i = slot_of(k, m->cap);
    while (m->keys[i] && m->keys[i] != k)
        i = (i + 1) & (m->cap - 1);
    if (!m->keys[i])
        m->n++;
    m->keys[i] = k;
    m->vals[i] = v;
    return 0;
}

void *map_del(struct map *m, uint64_t k)
{
    if (!m->cap || !k)
        return NULL;
    size_t i = slot_of(k, m->cap);
    while (m->keys[i] != k) {
        if (!m->keys[i])
            return NULL;
        i = (i + 1) & (m->cap - 1);
    }
    void *v = m->vals[i];
    m->keys[i] = 0;
    m->n--;
    /* backward-shift deletion keeps probe chains whole without tombstones */
    for (size_t j = (i + 1) & (m->cap - 1); m->keys[j]; j = (j + 1) & (m->cap - 1)) {
        size_t home = slot_of(m->keys[j], m->cap);
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            m->keys[j] = 0;
            i = j;
        }
    }
    return v;
}

void map_free(struct map *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* --------------------------------------------------------------- intern */

/* One copy of each name, shared by every object that uses it and freed with
   the last one: a service that names a group per request must not grow
   leashd for ever. Chained, so an entry can go without tombstones. */
struct istr {
    struct istr *next;
    uint64_t     hash;
    size_t       refs;
    char         s[];
};

static struct {
    struct istr **b;
    size_t        cap, n;
    size_t        bytes; /* of the strings, with their entries */
} strs;

/* What a name past names_max is shown as: static, never counted. */
static const char names_over[] = "(names_max)";

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* The names of a batch repeat (one function and site spawned many times):
   the last few found are compared first, with no hashing. A name whose last
   user went stays while it is one of these few, unused (refs 0): a task that
   starts and ends, then another of the same function, must not cost a
   hash, a malloc and a free each time (perf record of leashd_bench
   --ingest-only: intern alone 22% of leashd's samples; with unintern,
   malloc and free about a third). It is freed when pushed out of here, or
   by intern_trim. */
#define RECENT 4
static struct istr *recent[RECENT];
static unsigned     recent_next;

static void intern_rehash(size_t cap);

static void istr_free(struct istr *e)
{
    struct istr **pp = &strs.b[e->hash & (strs.cap - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->next;
    if (*pp)
        *pp = e->next;
    strs.bytes -= sizeof *e + strlen(e->s) + 1;
    free(e);
    if (--strs.n < strs.cap / 8 && strs.cap > 1024)
        intern_rehash(strs.cap / 2);
}

static const char *remember(struct istr *e)
{
    struct istr *out = recent[recent_next % RECENT];
    recent[recent_next++ % RECENT] = e;
    if (out && out->refs == 0)
        istr_free(out);
    return e->s;
}

static void intern_rehash(size_t cap)
{
    struct istr **b = calloc(cap, sizeof *b);
    if (!b)
        return; /* longer chains, nothing lost */
    for (size_t i = 0; i < strs.cap; i++) {
        for (struct istr *e = strs.b[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (cap - 1)];
            b[e->hash & (cap - 1)] = e;
        }
    }
    free(strs.b);
    strs.b = b;
    strs.cap = cap;
}

const char *intern(const char *s)
{
    if (!s || !*s)
        return "";
    for (int k = 0; k < RECENT; k++) {
        if (recent[k] && recent[k]->s[0] == s[0] && strcmp(recent[k]->s, s) == 0) {
            recent[k]->refs++;
            return recent[k]->s;
        }
    }
    if (!strs.cap)
        intern_rehash(1024);
    if (!strs.cap)
        return "";
    uint64_t h = fnv(s);
    for (struct istr *e = strs.b[h & (strs.cap - 1)]; e; e = e->next) {
        if (e->hash == h && strcmp(e->s, s) == 0) {
            e->refs++;
            return remember(e);
        }
    }
    /* a bound on what unique names can cost (names_max): past it a new
       name is shown as this, said once, counted */
    size_t len = strlen(s), cost = sizeof(struct istr) + len + 1;
    if (strs.bytes + cost + strs.cap * sizeof *strs.b > cfg.names_max) {
        if (limit_hits[LIMIT_NAMES]++ == 0)
            log_warn("names over names_max (%zu bytes): new names are shown as "
                     "\"%s\" (said once)",
                     cfg.names_max, names_over);
        return names_over;
    }
    struct istr *e = malloc(sizeof *e + len + 1);
    if (!e)
        return "";
    memcpy(e->s, s, len + 1);
    e->hash = h;
    e->refs = 1;
    e->next = strs.b[h & (strs.cap - 1)];
    strs.b[h & (strs.cap - 1)] = e;
    strs.bytes += cost;
    if (++strs.n > strs.cap)
        intern_rehash(strs.cap * 2);
    return remember(e);
}

void unintern(const char *s)
{
    if (!s || !*s || s == names_over)
        return; /* static, never counted */
    struct istr *e = (struct istr *)(void *)(s - offsetof(struct istr, s));
    if (--e->refs > 0)
        return;
    for (int k = 0; k < RECENT; k++)
        if (recent[k] == e)
            return; /* kept, unused, while it is recent */
    istr_free(e);
}

void intern_trim(void)
{
    for (int k = 0; k < RECENT; k++) {
        if (recent[k] && recent[k]->refs == 0) {
            istr_free(recent[k]);
            recent[k] = NULL;
        }
    }
}

size_t intern_count(void)
{
    return strs.n;
}

/* Points *field at an interned copy of v, letting go of what it held. */
static void set_name(const char **field, const char *v)
{
    const char *n = intern(v);
    unintern(*field);
    *field = n;
}

const char *leashd_op_name(int op)
{
    static const char *const n[] = {"running", "chan_send",  "chan_recv", "select",
                                    "mutex",   "rwlock_rd",  "rwlock_wr", "sleep",
                                    "fdwait",  "group_wait", "go"};
    return op >= 0 && op < (int)(sizeof n / sizeof n[0]) ? n[op] : "?";
}

static int64_t clock_ms;

void model_clock(bool on)
{
    clock_ms = on ? mono_ms() : 0;
}

int64_t model_now(void)
{
    return clock_ms ? clock_ms : mono_ms();
}

/* Task records come from a free list: leashd may track a million, and
   malloc's per-block overhead would be a sixth of each. The list keeps at
   most DTASK_KEEP records, so a burst's memory goes back once it is over. */
#define DTASK_KEEP 65536
static struct dtask *dtask_free;
static size_t        dtask_nfree;

static struct dtask *dtask_new(void)
{
    struct dtask *t = dtask_free;
    if (t) {
        dtask_free = (struct dtask *)(uintptr_t)t->id;
        dtask_nfree--;
        memset(t, 0, sizeof *t);
        return t;
    }
    return calloc(1, sizeof(struct dtask));
}

static void dtask_release(struct dtask *t)
{
    if (!t)
        return;
    unintern(t->fn);
    unintern(t->site);
    unintern(t->object);
    unintern(t->bsite);
    if (dtask_nfree >= DTASK_KEEP) {
        free(t);
        return;
    }
    t->id = (uint64_t)(uintptr_t)dtask_free;
    dtask_free = t;
    dtask_nfree++;
}

/* ------------------------------------------------------------ processes */

struct proc *proc_new(int fd, pid_t pid, uid_t uid, int pidfd)
{
    struct proc *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->refs = 1;
    p->fd = fd;
    p->pid = pid;
    p->uid = uid;
    p->pidfd = pidfd;
    snprintf(p->name, sizeof p->name, "pid%d", (int)pid);
    p->connected_wall = wall_ms();
    p->last_msg_mono = mono_ms();
    p->policy = config_policy(&cfg, p->name);
    p->next = procs;
    if (procs)
        procs->prev = p;
    procs = p;
    return p;
}

void proc_ref(struct proc *p)
{
    p->refs++;
}

static void clear_model(struct proc *p)
{
    MAP_EACH(&p->groups, i) model_group_free(p->groups.vals[i]);
    MAP_EACH(&p->tasks, i) dtask_release(p->tasks.vals[i]);
    map_free(&p->groups);
    map_free(&p->tasks);
    p->stuck = 0;
}

void proc_unref(struct proc *p)
{
    if (--p->refs > 0)
        return;
    clear_model(p);
    intern_trim(); /* what only this process used goes with it, now */
    if (p->kill_timer)
        event_free(p->kill_timer);
    if (p->pidfd >= 0)
        close(p->pidfd);
    registry_unmap(p->reg, p->reg_size);
    free(p);
}

struct proc *proc_by_pid(pid_t pid)
{
    for (struct proc *p = procs; p; p = p->next)
        if (p->pid == pid && !p->dead)
            return p;
    return NULL;
}

void proc_counts(uint64_t *groups, uint64_t *tasks, uint64_t *stuck)
{
    *groups = *tasks = *stuck = 0;
    for (struct proc *p = procs; p; p = p->next) {
        *groups += p->groups.n;
        *tasks += p->tasks.n;
        *stuck += p->stuck;
    }
}

static bool process_exited(const struct proc *p)
{
    struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
    return p->pidfd >= 0 && poll(&pfd, 1, 0) == 1;
}

struct lost {
    struct proc *p;
    size_t       live, groups;
    int          tries;
    char         why[128];
};

#define LOST_WAIT_US 300000
#define LOST_TRIES   10 /* with a registry: wait up to 3 s for the pidfd */

static int64_t coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Decided a moment after the connection ends: a killed process closes its
   sockets before the kernel reports it exited through the pidfd. Once it
   has exited, its registry holds the last tree, and a fatal signal's
   record: a `crashed` incident, or `agent_lost` with the tree. */
static void lost_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct lost *l = arg;
    bool         exited = process_exited(l->p);
    if (!exited && l->p->reg && l->p->pidfd >= 0 && ++l->tries < LOST_TRIES && !leashd_stopping) {
        struct timeval tv = {0, LOST_WAIT_US};
        if (event_base_once(base, -1, EV_TIMEOUT, lost_cb, l, &tv) == 0)
            return;
    }
    struct registry_crash     crash = {0};
    Leash__Control__TaskTree *tree = exited && l->p->reg
                                         ? registry_read(l->p->reg, l->p->reg_size, coarse_ns(),
                                                         (int)l->p->pid, l->p->name, &crash)
                                         : NULL;
    size_t                    live = tree ? registry_live_tasks(tree) : l->live;
    size_t                    groups = tree ? tree->snapshot->n_groups : l->groups;
    if (leashd_stopping) {
        if (tree)
            leash__control__task_tree__free_unpacked(tree, NULL);
    } else if (crash.signal[0]) {
        incident_post(l->p, "crashed", crash.group, crash.group_name, crash.task, "report",
                      crash.signal, tree, "%s; %zu live tasks in %zu groups", crash.detail, live,
                      groups);
    } else if (live > 0) {
        incident_post(l->p, "agent_lost", 0, NULL, 0, "report", NULL, tree,
                      "%s with %zu live tasks in %zu groups (%s)",
                      exited ? "process exited" : "agent connection lost", live, groups, l->why);
    } else {
        if (tree)
            leash__control__task_tree__free_unpacked(tree, NULL);
        log_info("process %d (%s) disconnected: %s", (int)l->p->pid, l->p->name, l->why);
    }
    proc_unref(l->p);
    free(l);
}

void model_gone(struct proc *p, const char *why)
{
    if (p->dead)
        return;
    p->dead = true;
    size_t live = p->tasks.n;
    /* root tasks (group 0) are threads, not leaked tasks */
    MAP_EACH(&p->tasks, i) if (((struct dtask *)p->tasks.vals[i])->group == 0) live--;
    /* a model waiting for a fresh snapshot is not a confirmed state: its
       tasks may be ghosts of dropped events, so nothing is claimed from it
       (a registry, read after the exit, is the process's own word) */
    size_t modelled = live;
    if (p->resyncing)
        live = 0;
    /* with a registry, a process that seemed idle may have crashed */
    struct lost *l =
        p->hello && (live > 0 || p->reg) && !leashd_stopping ? calloc(1, sizeof *l) : NULL;
    if (l) {
        l->p = p;
        l->live = live;
        l->groups = p->groups.n;
        snprintf(l->why, sizeof l->why, "%s", why);
        proc_ref(p);
        struct timeval tv = {0, LOST_WAIT_US};
        if (event_base_once(base, -1, EV_TIMEOUT, lost_cb, l, &tv) != 0)
            lost_cb(-1, 0, l);
    } else if (p->resyncing && modelled > 0) {
        log_info("process %d (%s) disconnected (%s) while its view was being resynced: no "
                 "agent_lost claimed",
                 (int)p->pid, p->name, why);
    } else if (p->hello) { /* peers that never said Hello come and go unsaid */
        log_info("process %d (%s) disconnected: %s", (int)p->pid, p->name, why);
    }
    MAP_EACH(&p->groups, i) model_group_free(p->groups.vals[i]);
    map_free(&p->groups);
    if (p->prev)
        p->prev->next = p->next;
    else
        procs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->next = p->prev = NULL;
}

/* --------------------------------------------------------------- groups */

void model_group_free(struct dgroup *g)
{
    if (g->timer)
        event_free(g->timer);
    unintern(g->name);
    unintern(g->site);
    unintern(g->strategy);
    free(g);
}

/* A group as an event or a snapshot shows it. A group leashd knows already
   keeps its deadline and where its escalation stands: the library never
   moves a deadline, and a repeated fact must not restart the steps. */
static struct dgroup *group_put(struct proc *p, uint64_t id, uint64_t parent, const char *name,
                                const char *site, int64_t deadline_ms_left, uint64_t opener)
{
    struct dgroup *g = map_get(&p->groups, id);
    bool           fresh = !g;
    if (fresh) {
        if (!(g = calloc(1, sizeof *g)))
            return NULL;
        if (map_put(&p->groups, id, g)) {
            free(g);
            return NULL;
        }
        g->id = id;
        g->proc = p;
        g->name = g->site = "";
    }
    g->parent = parent;
    g->opener = opener;
    set_name(&g->name, name);
    set_name(&g->site, site);
    if (fresh) {
        g->deadline_mono = deadline_ms_left < 0 ? INT64_MAX : model_now() + deadline_ms_left;
        policy_group_open(g);
    }
    return g;
}

/* What a supervisor's group says of itself; strategy "" for other groups. */
static void group_supervisor(struct dgroup *g, const char *strategy, uint64_t restarts,
                             int64_t backoff_ms)
{
    if (!strategy || !*strategy)
        return;
    set_name(&g->strategy, strategy);
    g->restarts = restarts;
    g->backoff_ms = backoff_ms;
}

static struct dtask *task_put(struct proc *p, uint64_t id, uint64_t group)
{
    struct dtask *t = map_get(&p->tasks, id);
    if (t)
        return t;
    if (!(t = dtask_new()))
        return NULL;
    if (map_put(&p->tasks, id, t)) {
        dtask_release(t);
        return NULL;
    }
    t->id = id;
    t->group = group;
    t->fn = t->site = t->object = t->bsite = "";
    t->since_mono = model_now();
    return t;
}

static void task_del(struct proc *p, uint64_t id)
{
    struct dtask *t = map_del(&p->tasks, id);
    if (t && t->stuck)
        p->stuck--;
    dtask_release(t);
}

static void task_unstick(struct proc *p, struct dtask *t)
{
    if (t->stuck) {
        t->stuck = false;
        p->stuck--;
    }
}

/* The task's state as the process says it is now. */
static void task_state(struct dtask *t, int op, const char *object, const char *bsite,
                       int64_t since_ms)
{
    t->op = op;
    set_name(&t->object, op ? object : "");
    set_name(&t->bsite, op ? bsite : "");
    t->since_mono = model_now() - since_ms;
}

void model_group_drop(struct proc *p, struct dgroup *g)
{
    uint64_t id = g->id;
    map_del(&p->groups, id);
    model_group_free(g);
    /* a group ends only once its children have: any left are ghosts */
    size_t    n = 0;
    uint64_t *ids = malloc((p->tasks.n + 1) * sizeof *ids);
    MAP_EACH(&p->tasks, i)
    if (ids && ((struct dtask *)p->tasks.vals[i])->group == id)
        ids[n++] = p->tasks.keys[i];
    for (size_t i = 0; i < n; i++)
        task_del(p, ids[i]);
    free(ids);
}

/* Makes the model of p what snapshot s shows, and nothing else: groups and
   tasks it lacks go, the rest is updated in place (escalation steps and
   stuck marks of what stays are kept: the same facts again are not news). */
static void model_replace(struct proc *p, const Leash__Agent__Snapshot *s)
{
    uint64_t gen = ++p->gen, restarts = 0;
    size_t   ng = s ? s->n_groups : 0, nt = s ? s->n_tasks : 0;
    for (size_t i = 0; i < ng; i++) {
        const Leash__Agent__Group *x = s->groups[i];
        struct dgroup             *d =
            group_put(p, x->id, x->parent, x->name, x->site, x->deadline_ms_left, x->opener);
        if (d) {
            d->cancelled = x->cancelled;
            d->gen = gen;
            group_supervisor(d, x->strategy, x->restarts, x->backoff_ms);
            restarts += x->restarts;
        }
    }
    /* what live supervisors count; those that ended before are not in it */
    if (restarts > p->restarts)
        p->restarts = restarts;
    for (size_t i = 0; i < nt; i++) {
        const Leash__Agent__Task *x = s->tasks[i];
        struct dtask             *t = task_put(p, x->id, x->group);
        if (!t)
            continue;
        if (t->op != (int)x->op)
            task_unstick(p, t);
        t->group = x->group;
        set_name(&t->fn, x->fn);
        set_name(&t->site, x->site);
        task_state(t, x->op, x->object, x->blocked_site, x->since_ms);
        t->gen = gen;
    }
    size_t    n = 0, cap = p->groups.n > p->tasks.n ? p->groups.n : p->tasks.n;
    uint64_t *gone = malloc((cap + 1) * sizeof *gone);
    if (!gone)
        return; /* what stays is stale, and stays marked so */
    MAP_EACH(&p->groups, i)
    if (((struct dgroup *)p->groups.vals[i])->gen != gen)
        gone[n++] = p->groups.keys[i];
    for (size_t i = 0; i < n; i++)
        model_group_free(map_del(&p->groups, gone[i]));
    n = 0;
    MAP_EACH(&p->tasks, i)
    if (((struct dtask *)p->tasks.vals[i])->gen != gen)
        gone[n++] = p->tasks.keys[i];
    for (size_t i = 0; i < n; i++)
        task_del(p, gone[i]);
    free(gone);
}

static void ask_resync(struct proc *p)
{
    Leash__Agent__ResyncRequest r = LEASH__AGENT__RESYNC_REQUEST__INIT;
    Leash__Agent__DaemonMessage m = LEASH__AGENT__DAEMON_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__DAEMON_MESSAGE__MSG_RESYNC;
    m.resync = &r;
    agent_send(p, &m);
}

/* From here the model of p is not the process: shown as resyncing, and
   nothing is claimed from it, until a fresh snapshot replaces it. */
static void mark_resyncing(struct proc *p, const char *why)
{
    if (!p->resyncing)
        log_info("process %d (%s): %s: resyncing", (int)p->pid, p->name, why);
    p->resyncing = true;
}

void model_hello(struct proc *p, const Leash__Agent__Hello *h)
{
    clear_model(p);
    if (h->name && *h->name)
        snprintf(p->name, sizeof p->name, "%s", h->name);
    p->policy = config_policy(&cfg, p->name);
    p->hello = true;
    p->dropped = p->snap_dropped = h->dropped;
    p->seq = 0;
    p->folded_mono = model_now();
    p->resyncing = false;
    model_replace(p, h->snapshot);
    log_info("process %d (%s, uid %u) connected: %zu groups, %zu tasks, policy \"%s\"", (int)p->pid,
             p->name, (unsigned)p->uid, p->groups.n, p->tasks.n, p->policy->match);
}

void model_resync(struct proc *p, const Leash__Agent__Resync *r)
{
    p->seq = r->seq;
    p->snap_dropped = r->dropped;
    if (r->dropped > p->dropped)
        p->dropped = r->dropped;
    model_replace(p, r->snapshot);
    if (p->resyncing)
        log_info("process %d (%s): resynced: %zu groups, %zu tasks", (int)p->pid, p->name,
                 p->groups.n, p->tasks.n);
    p->resyncing = false;
}

/* A batch number that does not follow the last one, or a drop the last
   snapshot did not cover, means the model has holes. */
static void check_batch(struct proc *p, uint64_t seq, uint64_t dropped)
{
    if (seq) {
        if (seq != p->seq + 1) {
            char why[96];
            snprintf(why, sizeof why, "batch %llu after %llu", (unsigned long long)seq,
                     (unsigned long long)p->seq);
            if (!p->resyncing)
                ask_resync(p);
            mark_resyncing(p, why);
        }
        p->seq = seq;
    }
    if (dropped > p->dropped)
        p->dropped = dropped;
    if (dropped != p->snap_dropped)
        mark_resyncing(p, "the agent dropped events"); /* it sends a Resync by itself */
}

/* The most tasks an agent may say it folded per ms since its last Events:
   a billion a second, some hundred times what one process spawns here. A
   count trusted for nothing but itself still must not let one process pin
   a daemon-wide counter: 2^64 at this rate is some 580 years. */
#define FOLDED_PER_MS 1000000ull

void model_events(struct proc *p, const Leash__Agent__Events *e)
{
    check_batch(p, e->seq, e->dropped);
    int64_t  now = model_now();
    uint64_t ms = now > p->folded_mono ? (uint64_t)(now - p->folded_mono) : 0;
    uint64_t most = (ms + 1) * FOLDED_PER_MS, folded = e->folded;
    p->folded_mono = now;
    if (folded > most) {
        limit_hit(LIMIT_FOLDED, p->uid,
                  "process %d (%s) says it folded %llu tasks in %llu ms: %llu counted", (int)p->pid,
                  p->name, (unsigned long long)folded, (unsigned long long)ms,
                  (unsigned long long)most);
        folded = most;
    }
    /* saturates, never wraps */
    stat_tasks_folded =
        folded > UINT64_MAX - stat_tasks_folded ? UINT64_MAX : stat_tasks_folded + folded;
    for (size_t i = 0; i < e->n_events; i++)
        model_event(p, e->events[i]);
}

void model_event(struct proc *p, const Leash__Agent__Event *e)
{
    stat_events++;
    switch (e->kind) {
    case LEASH__AGENT__EVENT__KIND__GROUP_OPEN: {
        struct dgroup *g =
            group_put(p, e->group, e->parent, e->name, e->site, e->deadline_ms_left, e->task);
        if (g)
            group_supervisor(g, e->strategy, 0, 0);
        break;
    }
    case LEASH__AGENT__EVENT__KIND__GROUP_END: {
        struct dgroup *g = map_del(&p->groups, e->group);
        if (g)
            model_group_free(g);
        break;
    }
    case LEASH__AGENT__EVENT__KIND__TASK_START: {
        struct dtask *t = task_put(p, e->task, e->group);
        if (t) {
            set_name(&t->fn, e->fn);
            set_name(&t->site, e->site);
        }
        break;
    }
    case LEASH__AGENT__EVENT__KIND__TASK_END: task_del(p, e->task); break;
    case LEASH__AGENT__EVENT__KIND__STATE: {
        /* never makes a task: one that ended is not brought back */
        struct dtask *t = map_get(&p->tasks, e->task);
        if (!t)
            break;
        task_unstick(p, t);
        task_state(t, e->op, e->object, e->site, e->since_ms);
        break;
    }
    case LEASH__AGENT__EVENT__KIND__STUCK: {
        struct dtask *t = task_put(p, e->task, e->group);
        if (!t)
            break;
        if (!*t->fn)
            set_name(&t->fn, e->fn);
        task_state(t, e->op, e->object, e->site, e->since_ms);
        if (t->stuck)
            break;
        t->stuck = true;
        p->stuck++;
        struct dgroup *g = map_get(&p->groups, e->group);
        /* a task whose scope has a deadline is the deadline's business */
        if (!g || g->deadline_mono == INT64_MAX)
            incident(p, "stuck_task", e->group, g ? g->name : NULL, e->task, "report",
                     "task %llu (%s) blocked on %s \"%s\" at %s for %lld ms, with no deadline",
                     (unsigned long long)e->task, e->fn, leashd_op_name(e->op), e->object, e->site,
                     (long long)e->since_ms);
        break;
    }
    case LEASH__AGENT__EVENT__KIND__REPORT: {
        struct dgroup *g = e->group ? map_get(&p->groups, e->group) : NULL;
        incident(p, e->report_kind, e->group, g ? g->name : e->name, e->task, "report", "%s",
                 e->detail);
        break;
    }
    case LEASH__AGENT__EVENT__KIND__RESTART: {
        p->restarts++;
        stat_restarts++;
        struct dgroup *g = map_get(&p->groups, e->group);
        if (g)
            group_supervisor(g, e->strategy, e->restarts, e->backoff_ms);
        log_info("process %d (%s): supervisor %llu \"%s\" (%s) restarts %s after task %llu, in "
                 "%lld ms (restart %llu)",
                 (int)p->pid, p->name, (unsigned long long)e->group, g ? g->name : "?", e->strategy,
                 e->fn, (unsigned long long)e->task, (long long)e->backoff_ms,
                 (unsigned long long)e->restarts);
        break;
    }
    default: break;
    }
}

void model_heartbeat(struct proc *p, const Leash__Agent__Heartbeat *h)
{
    if (h->dropped > p->dropped)
        p->dropped = h->dropped;
    if (h->dropped != p->snap_dropped)
        mark_resyncing(p, "the agent dropped events");
}

/* ------------------------------------------------------------- snapshot */

Leash__Agent__Snapshot *model_snapshot(struct proc *p)
{
    Leash__Agent__Snapshot *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    leash__agent__snapshot__init(s);
    s->groups = calloc(p->groups.n + 1, sizeof *s->groups);
    s->tasks = calloc(p->tasks.n + 1, sizeof *s->tasks);
    if (!s->groups || !s->tasks) {
        snapshot_free(s);
        return NULL;
    }
    int64_t now = mono_ms();
    MAP_EACH(&p->groups, i)
    {
        const struct dgroup *g = p->groups.vals[i];
        Leash__Agent__Group *x = calloc(1, sizeof *x);
        if (!x)
            break;
        leash__agent__group__init(x);
        x->id = g->id;
        x->parent = g->parent;
        x->name = (char *)g->name;
        x->site = (char *)g->site;
        x->opener = g->opener;
        x->cancelled = g->cancelled;
        x->strategy = (char *)(g->strategy ? g->strategy : "");
        x->restarts = g->restarts;
        x->backoff_ms = g->backoff_ms;
        x->deadline_ms_left = g->deadline_mono == INT64_MAX ? -1
                              : g->deadline_mono > now      ? g->deadline_mono - now
                                                            : 0;
        s->groups[s->n_groups++] = x;
    }
    MAP_EACH(&p->tasks, i)
    {
        const struct dtask *t = p->tasks.vals[i];
        Leash__Agent__Task *x = calloc(1, sizeof *x);
        if (!x)
            break;
        leash__agent__task__init(x);
        x->id = t->id;
        x->group = t->group;
        x->fn = (char *)t->fn;
        x->site = (char *)t->site;
        x->op = t->op;
        x->object = (char *)t->object;
        x->blocked_site = (char *)t->bsite;
        x->since_ms = now - t->since_mono;
        s->tasks[s->n_tasks++] = x;
    }
    return s;
}

void snapshot_free(Leash__Agent__Snapshot *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_groups; i++)
        free(s->groups[i]);
    for (size_t i = 0; i < s->n_tasks; i++)
        free(s->tasks[i]);
    free(s->groups);
    free(s->tasks);
    free(s);
}
