/*
 * agent.c: the link from a leashed process to leashd.
 *
 * One background thread connects to the agent socket, sends a Hello with a
 * full snapshot, then streams events, heartbeats and stuck tasks, and
 * carries out Cancel, Interrupt and DumpRequest. Application threads never
 * wait for it: they push fixed-size events into a bounded lock-free ring
 * (Vyukov's bounded queue) only while connected, and an event that finds
 * the ring full is dropped and counted. After every (re)connect the snapshot
 * rebuilds leashd's view, so nothing dropped or missed stays wrong for long.
 *
 * Batches are numbered; after any drop the agent sends a Resync, a fresh
 * snapshot that replaces leashd's model, so leashd never builds on a view
 * with holes in it. Snapshots stay consistent with the event stream because
 * every event is queued after its effect is visible to a snapshot (a task
 * is off its group's list before its TASK_END is queued): events queued
 * before a snapshot are dropped from the ring, those queued after it follow
 * it and repeat at worst what it already shows.
 *
 * The agent thread is tickless: it sleeps until an event is queued (the
 * first push into an idle ring kicks an eventfd), leashd writes, or a
 * heartbeat is due. Once woken it waits FLUSH_MS more, so events go in
 * batches, unless the ring fills up or exit() asks for a flush.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "snapshot.h"

#include "frame.h"
#include "leash/agent.pb-c.h"
#include "text.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define RING_SIZE      16384 /* events; a power of two */
#define FLUSH_MS       20
#define BATCH_MAX      4096
#define REPORTS_MAX    64
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
#define NAME_MAX_SEND  255  /* bytes of a name sent to leashd, cut on a UTF-8 boundary */
#define SITE_MAX_SEND  1023 /* bytes of a file:line */
#define PNAME_MAX_SEND 63   /* bytes of the process name */

_Atomic int leash__agent_on;

struct cell {
    _Atomic size_t       seq;
    struct leash__aevent ev;
};

static struct cell     *ring;
static _Atomic size_t   enq_pos;
static size_t           deq_pos; /* the agent thread's alone */
static _Atomic uint64_t dropped;

/* 1 once the agent thread runs (it will connect, now or later): from then
   reports are kept until a session sends them, so that one made before the
   connection is up is not lost. Snapshots do not carry reports. */
static _Atomic int agent_started;

/* Set when a root task (a thread that called leash) comes or goes. No event
   says so, so the next heartbeat sends a Resync: leashd's view of the root
   tasks follows the process within a heartbeat, at the cost of at most one
   snapshot a heartbeat however many threads come and go. */
static _Atomic int roots_changed;

/* 1 while the agent thread sleeps with nothing queued: the next push writes
   kick_fd to wake it. */
static _Atomic int agent_asleep;
static int         kick_fd = -1;

struct report {
    char     kind[24];
    uint64_t task;
    uint64_t group_id;
    char     group[48];
    char     detail[512];
};
static pthread_mutex_t report_mu = PTHREAD_MUTEX_INITIALIZER;
static struct report   reports_q[REPORTS_MAX];
static int             reports_n;

static pthread_once_t agent_once = PTHREAD_ONCE_INIT;
static _Atomic int    agent_fd = -1; /* the session's socket, for a forked child to close */

/* exit() asks the agent to send what is queued, so leashd sees the tasks
   that ended before the process did */
static _Atomic uint32_t flush_req, flush_done;

/* ------------------------------------------------------ the event ring */

static void kick(void)
{
    uint64_t one = 1;
    ssize_t  r = write(kick_fd, &one, sizeof one);
    (void)r; /* EAGAIN: the counter is full, so a wake-up is pending anyway */
}

void (*leash__agent_push_hook)(void);

void leash__agent_push(const struct leash__aevent *ev)
{
    size_t       pos = atomic_load_explicit(&enq_pos, memory_order_relaxed);
    struct cell *c;
    for (;;) {
        c = &ring[pos & (RING_SIZE - 1)];
        size_t   seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)pos;
        if (dif == 0) {
            /* seq_cst, as the load of agent_asleep below: either the agent
               sees this position taken before it sleeps, or this thread sees
               it asleep (one locked instruction on x86 either way) */
            if (atomic_compare_exchange_weak_explicit(&enq_pos, &pos, pos + 1, memory_order_seq_cst,
                                                      memory_order_relaxed))
                break;
        } else if (dif < 0) {
            atomic_fetch_add_explicit(&dropped, 1, memory_order_relaxed);
            return;
        } else {
            pos = atomic_load_explicit(&enq_pos, memory_order_relaxed);
        }
    }
    if (unlikely(leash__agent_push_hook != NULL))
        leash__agent_push_hook();
    c->ev = *ev;
    atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
    if (unlikely(atomic_load_explicit(&agent_asleep, memory_order_seq_cst)) &&
        atomic_exchange_explicit(&agent_asleep, 0, memory_order_relaxed))
        kick();
    else if (unlikely((pos & (RING_SIZE / 4 - 1)) == RING_SIZE / 4 - 1))
        kick(); /* a quarter full while the agent gathers a batch: now */
}

static bool ring_pending(void)
{
    return atomic_load_explicit(&enq_pos, memory_order_seq_cst) != deq_pos;
}

/* Whether the next event is written, ready to pop: a producer takes its
   cell and then writes it, and one preempted in between leaves the cell
   pending but not ready for as long as it is off its CPU. */
static bool ring_ready(void)
{
    return atomic_load_explicit(&ring[deq_pos & (RING_SIZE - 1)].seq, memory_order_acquire) ==
           deq_pos + 1;
}

static bool ring_pop(struct leash__aevent *ev)
{
    if (!ring_ready())
        return false;
    struct cell *c = &ring[deq_pos & (RING_SIZE - 1)];
    *ev = c->ev;
    atomic_store_explicit(&c->seq, deq_pos + RING_SIZE, memory_order_release);
    deq_pos++;
    return true;
}

void leash__agent_report(const char *kind, uint64_t task, uint64_t group_id, const char *group,
                         const char *detail)
{
    if (!atomic_load_explicit(&agent_started, memory_order_acquire))
        return;
    pthread_mutex_lock(&report_mu);
    if (reports_n < REPORTS_MAX) {
        struct report *r = &reports_q[reports_n++];
        leash__copy_name(r->kind, sizeof r->kind, kind);
        r->task = task;
        r->group_id = group_id;
        leash__copy_name(r->group, sizeof r->group, group);
        leash__copy_name(r->detail, sizeof r->detail, detail);
    } else {
        atomic_fetch_add_explicit(&dropped, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&report_mu);
    if (atomic_exchange(&agent_asleep, 0))
        kick();
}

void leash__agent_roots_changed(void)
{
    atomic_store_explicit(&roots_changed, 1, memory_order_release);
}

/* -------------------------------------------------------------- sockets */

static const char *socket_override(void)
{
    const char *e = getenv("LEASH_SOCKET");
    return e && *e ? e : NULL;
}

static int connect_path(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* The socket as leashd would place it: LEASH_SOCKET, else the user's
   runtime directory (when not root), else the system one. */
static int agent_connect(void)
{
    const char *o = socket_override();
    if (o)
        return connect_path(o);
    int         fd = -ENOENT;
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (getuid() != 0 && xdg && *xdg) {
        char p[sizeof(((struct sockaddr_un *)0)->sun_path) + 32];
        snprintf(p, sizeof p, "%s/leash/agent.sock", xdg);
        if ((fd = connect_path(p)) >= 0)
            return fd;
    }
    return connect_path("/run/leash/agent.sock");
}

static int send_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
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

/* Sends m; with pass_fd >= 0, its first bytes carry that fd (SCM_RIGHTS). */
static int send_msg_fd(int fd, const Leash__Agent__AgentMessage *m, int pass_fd)
{
    size_t   n;
    uint8_t *buf = leash_frame_pack(&m->base, &n);
    if (!buf)
        return -ENOMEM;
    size_t off = 0;
    if (pass_fd >= 0) {
        union {
            char           b[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } ctl;
        memset(&ctl, 0, sizeof ctl);
        struct iovec  iov = {.iov_base = buf, .iov_len = n};
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
        ssize_t w;
        do
            w = sendmsg(fd, &mh, MSG_NOSIGNAL);
        while (w < 0 && errno == EINTR);
        if (w < 0) {
            int e = errno;
            free(buf);
            return -e;
        }
        off = (size_t)w;
    }
    int err = send_all(fd, buf + off, n - off);
    free(buf);
    return err;
}

static int send_msg(int fd, const Leash__Agent__AgentMessage *m)
{
    return send_msg_fd(fd, m, -1);
}

/* ------------------------------------------------- snapshot to protobuf */

/* Strings made while encoding, freed together afterwards. */
struct arena {
    char **s;
    size_t n, cap;
};

static char *arena_keep(struct arena *a, char *s)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        char **p = realloc(a->s, cap * sizeof *p);
        if (!p) {
            free(s);
            return (char *)"";
        }
        a->s = p;
        a->cap = cap;
    }
    return a->s[a->n++] = s;
}

/* s as leashd may take it (clean UTF-8, at most max bytes): s itself when it
   is already, else a cleaned copy the arena frees. Names come from the
   application and may hold anything. */
static char *arena_text(struct arena *a, const char *s, size_t max)
{
    if (!s)
        return (char *)"";
    size_t n = strnlen(s, max + 1);
    if (n <= max && leash_text_is_clean(s))
        return (char *)s;
    char *c = malloc(max + 1);
    if (!c)
        return (char *)"";
    leash_text_clean(c, max + 1, s, SIZE_MAX);
    return arena_keep(a, c);
}

static char *arena_site(struct arena *a, const char *file, int line)
{
    if (!file)
        return (char *)"";
    char *s;
    if (asprintf(&s, "%s:%d", file, line) < 0)
        return (char *)"";
    leash_text_clean(s, SITE_MAX_SEND + 1, s, SIZE_MAX);
    return arena_keep(a, s);
}

static void arena_free(struct arena *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->s[i]);
    free(a->s);
    memset(a, 0, sizeof *a);
}

struct pbsnap {
    Leash__Agent__Snapshot snap;
    uint64_t              *args; /* syscall arguments, 6 per task */
    Leash__Agent__Group   *groups, **gptrs;
    Leash__Agent__Task    *tasks, **tptrs;
    struct leash_snapshot  s;
    struct arena           a;
};

static int pbsnap_make(struct pbsnap *p)
{
    memset(p, 0, sizeof *p);
    leash__agent__snapshot__init(&p->snap);
    int err = leash_snapshot_take(&p->s);
    if (err)
        return err;
    size_t ng = p->s.ngroups - 1; /* the root group is implied */
    p->groups = calloc(ng + 1, sizeof *p->groups);
    p->gptrs = calloc(ng + 1, sizeof *p->gptrs);
    p->tasks = calloc(p->s.ntasks + 1, sizeof *p->tasks);
    p->tptrs = calloc(p->s.ntasks + 1, sizeof *p->tptrs);
    p->args = calloc(p->s.ntasks * 6 + 1, sizeof *p->args);
    if (!p->groups || !p->gptrs || !p->tasks || !p->tptrs || !p->args)
        return -ENOMEM;
    for (size_t i = 0; i < p->s.ngroups; i++) {
        const struct leash_snap_group *g = &p->s.groups[i];
        if (i > 0) {
            Leash__Agent__Group *x = &p->groups[i - 1];
            leash__agent__group__init(x);
            x->id = g->id;
            x->parent = g->parent;
            x->name = arena_text(&p->a, g->name, NAME_MAX_SEND);
            x->deadline_ms_left = g->deadline_ms_left;
            x->cancelled = g->cancelled != 0;
            x->site = arena_site(&p->a, g->open_file, g->open_line);
            x->flags = g->flags;
            x->opener = g->opener;
            x->restarts = g->restarts;
            x->backoff_ms = g->backoff_ms;
            x->strategy = (char *)(g->strategy >= 0 ? leash__strategy_name(g->strategy) : "");
            p->gptrs[i - 1] = x;
        }
        for (size_t j = g->first; j < g->first + g->count; j++) {
            const struct leash_snap_task *t = &p->s.tasks[j];
            Leash__Agent__Task           *y = &p->tasks[j];
            leash__agent__task__init(y);
            y->id = t->id;
            y->group = g->id;
            y->fn = arena_text(&p->a, t->fn, NAME_MAX_SEND);
            y->site = arena_site(&p->a, t->file, t->line);
            y->op = (Leash__Agent__Op)t->op;
            y->object = arena_text(&p->a, t->obj, NAME_MAX_SEND);
            y->blocked_site = t->op ? arena_site(&p->a, t->bfile, t->bline) : (char *)"";
            y->since_ms = t->since_ms;
            y->held_by = t->held_by;
            if (!t->op && t->cpu_ms >= 0) {
                y->cpu_known = true;
                y->cpu_ms = t->cpu_ms;
                y->cpu_pct = t->cpu_pct;
            }
            if (!t->op && t->sys_nr >= 0) {
                char nb[32];
                y->in_syscall = true;
                y->syscall_nr = t->sys_nr;
                /* the names are static, but for unknown numbers */
                y->syscall_name = (char *)leash__syscall_name(t->sys_nr, nb, sizeof nb);
                if (y->syscall_name == nb)
                    y->syscall_name = arena_site(&p->a, "syscall", (int)t->sys_nr);
                memcpy(&p->args[j * 6], t->sys_args, 6 * sizeof *p->args);
                y->n_syscall_args = 6;
                y->syscall_args = &p->args[j * 6];
            }
            p->tptrs[j] = y;
        }
    }
    p->snap.n_groups = ng;
    p->snap.groups = p->gptrs;
    p->snap.n_tasks = p->s.ntasks;
    p->snap.tasks = p->tptrs;
    return 0;
}

static void pbsnap_free(struct pbsnap *p)
{
    free(p->groups);
    free(p->gptrs);
    free(p->tasks);
    free(p->tptrs);
    free(p->args);
    arena_free(&p->a);
    leash_snapshot_free(&p->s);
}

/* ------------------------------------------------------------ a session */

/* A task leashd was told is blocked, and how: by a snapshot or a STUCK
   event. Each heartbeat compares these with the process as it is and says
   what changed, so leashd's states follow the process. */
struct shown {
    uint64_t id;
    int      op;
    int64_t  since_ns;
    bool     stuck; /* a STUCK event said so */
};

struct session {
    int           fd;
    int64_t       heartbeat_ms, stuck_after_ms;
    uint64_t      hb_seq;
    uint64_t      seq;           /* of the last Events or Resync sent */
    uint64_t      snap_dropped;  /* the drop count the last snapshot covers */
    bool          want_resync;   /* leashd asked for one */
    uint64_t      folded;        /* tasks folded out of batches, not told yet */
    uint64_t      snap_max_task; /* the highest task id a snapshot of this session showed */
    struct shown *shown;         /* sorted by id */
    size_t        nshown;
    uint8_t      *in;
    size_t        inlen, incap;
};

static int cmp_shown(const void *a, const void *b)
{
    const struct shown *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* A snapshot leashd may take tasks from (a Hello, a Resync, or a
   heartbeat's scan, whose STUCK makes leashd list a task it never saw
   start): no task it shows is folded from here on (see fold). */
static void snap_shown(struct session *s, const struct pbsnap *p)
{
    for (size_t i = 0; i < p->s.ntasks; i++)
        if (p->s.tasks[i].id > s->snap_max_task)
            s->snap_max_task = p->s.tasks[i].id;
}

/* Every task the snapshot shows blocked is what leashd now believes. */
static void shown_from(struct session *s, const struct pbsnap *p)
{
    free(s->shown);
    s->nshown = 0;
    s->shown = malloc((p->s.ntasks + 1) * sizeof *s->shown);
    snap_shown(s, p);
    for (size_t i = 0; s->shown && i < p->s.ntasks; i++) {
        const struct leash_snap_task *t = &p->s.tasks[i];
        if (t->op)
            s->shown[s->nshown++] = (struct shown){t->id, t->op, t->since_ns, false};
    }
    if (s->shown)
        qsort(s->shown, s->nshown, sizeof *s->shown, cmp_shown);
}

/* Events queued before a snapshot is taken are in it already; dropped, so
   none can come after it with the event that undid it lost. */
static void ring_discard(void)
{
    struct leash__aevent e;
    for (size_t i = 0; i < RING_SIZE && ring_pop(&e); i++)
        ;
}

static int send_hello(struct session *s)
{
    uint64_t d0 = atomic_load_explicit(&dropped, memory_order_acquire);
    ring_discard();                  /* what a producer still pushed into the last session */
    atomic_store(&roots_changed, 0); /* the snapshot shows the roots as they are */
    struct pbsnap p;
    int           err = pbsnap_make(&p);
    if (!err) {
        Leash__Agent__Hello h = LEASH__AGENT__HELLO__INIT;
        h.version = LEASH__AGENT__VERSION__VERSION_CURRENT;
        h.name = arena_text(&p.a, leash__process_name(), PNAME_MAX_SEND);
        h.snapshot = &p.snap;
        h.dropped = d0;
        h.lib_version = (char *)LEASH_VERSION_STRING;
        int reg = leash__reg_fd();
        h.registry = reg >= 0;
        Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
        m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_HELLO;
        m.hello = &h;
        err = send_msg_fd(s->fd, &m, reg);
        s->snap_dropped = d0;
        shown_from(s, &p);
    }
    pbsnap_free(&p);
    return err;
}

/* A fresh snapshot that replaces leashd's model: after any drop, or when
   leashd asks. */
static int send_resync(struct session *s)
{
    uint64_t d0 = atomic_load_explicit(&dropped, memory_order_acquire);
    ring_discard();
    atomic_store(&roots_changed, 0);
    struct pbsnap p;
    int           err = pbsnap_make(&p);
    if (!err) {
        Leash__Agent__Resync r = LEASH__AGENT__RESYNC__INIT;
        r.seq = ++s->seq;
        r.dropped = d0;
        r.snapshot = &p.snap;
        Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
        m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_RESYNC;
        m.resync = &r;
        err = send_msg(s->fd, &m);
        s->snap_dropped = d0;
        s->want_resync = false;
        shown_from(s, &p);
    }
    pbsnap_free(&p);
    return err;
}

static void ev_to_pb(const struct leash__aevent *e, Leash__Agent__Event *x, struct arena *a)
{
    leash__agent__event__init(x);
    x->kind = (Leash__Agent__Event__Kind)e->kind;
    x->group = e->group;
    x->task = e->task;
    x->parent = e->parent;
    x->name = arena_text(a, e->name, NAME_MAX_SEND);
    x->deadline_ms_left = e->deadline_ms_left;
    x->site = arena_site(a, e->file, e->line);
    x->fn = arena_text(a, e->fn, NAME_MAX_SEND);
    x->restarts = e->restarts;
    x->backoff_ms = e->backoff_ms;
    bool sup = (e->kind == LEASH_EV_GROUP_OPEN || e->kind == LEASH_EV_RESTART) &&
               leash__strategy_name(e->strategy) != NULL;
    x->strategy = (char *)(sup ? leash__strategy_name(e->strategy) : "");
}

/* Blocked past stuck_after. A task waiting for its own group or for a slot
   in one waits on other tasks, which are reported themselves. */
static bool is_stuck(const struct session *s, const Leash__Agent__Task *t)
{
    return t->op != 0 && t->op != LEASH__AGENT__OP__OP_GROUP_WAIT &&
           t->op != LEASH__AGENT__OP__OP_GO && t->since_ms >= s->stuck_after_ms;
}

static void task_event(Leash__Agent__Event *e, int kind, const Leash__Agent__Task *t)
{
    leash__agent__event__init(e);
    e->kind = kind;
    e->task = t->id;
    e->group = t->group;
    e->site = t->blocked_site;
    e->fn = t->fn;
    e->op = t->op;
    e->object = t->object;
    e->since_ms = t->since_ms;
}

/* What changed since leashd was last told, from a snapshot p: a STATE for
   each task shown blocked that runs again or blocks elsewhere now, a STUCK
   for each task newly past stuck_after. Writes at most 2 events per task of
   p into out; makes the new shown list. */
static size_t states(struct session *s, const struct pbsnap *p, Leash__Agent__Event *out)
{
    size_t        k = 0, n = 0;
    struct shown *next = malloc((p->s.ntasks + 1) * sizeof *next);
    if (!next)
        return 0; /* told nothing: the next heartbeat compares again */
    for (size_t i = 0; i < p->s.ntasks; i++) {
        const Leash__Agent__Task     *t = p->snap.tasks[i];
        const struct leash_snap_task *x = &p->s.tasks[i];
        struct shown                  key = {.id = t->id};
        struct shown                 *old =
            s->shown ? bsearch(&key, s->shown, s->nshown, sizeof key, cmp_shown) : NULL;
        bool stuck = is_stuck(s, t);
        bool same = old && old->op == x->op && old->since_ns == x->since_ns;
        /* blocked for a heartbeat and leashd not told: told now, so that
           its view shows a blocked task blocked, not running, within a
           heartbeat or two (a shorter block is not news) */
        bool fresh = !old && x->op && !stuck && t->since_ms >= s->heartbeat_ms;
        if ((old && !same) || fresh)
            task_event(&out[k++], LEASH__AGENT__EVENT__KIND__STATE, t);
        bool was_stuck = same && old->stuck;
        if (stuck && !was_stuck)
            task_event(&out[k++], LEASH__AGENT__EVENT__KIND__STUCK, t);
        if (x->op && (same || stuck || old || fresh))
            next[n++] = (struct shown){t->id, x->op, x->since_ns, stuck};
    }
    qsort(next, n, sizeof *next, cmp_shown);
    free(s->shown);
    s->shown = next;
    s->nshown = n;
    return k;
}

/*
 * Folding: a task whose TASK_START and TASK_END are both in one batch is
 * left out of it, both events. leashd would add the task and take it out
 * again within one message, so its model ends the batch the same; what it
 * never lists is a task that lived less than a batch (at most FLUSH_MS,
 * unless the ring filled first), too short for a deadline or a stuck scan
 * of leashd's to be about (a report about it, a lock it abandoned say,
 * still reaches leashd, naming its id). A task another event of the batch
 * names (a group it opened, say) is sent as it is. The batch says how many
 * tasks it folded, so leashd's counts of tasks still add up.
 *
 * Nor is a task folded that leashd may hold already. A Hello or Resync
 * snapshot can show a task whose TASK_START comes after it in the ring
 * (the task is in the registry before its start is queued), and a STUCK
 * made from a heartbeat's snapshot makes leashd list a task it never saw
 * start (its start may still be behind a producer that was preempted
 * between taking its cell and writing it); leashd must then see the task
 * end. Task ids only grow, so a task above the highest id any snapshot of
 * the session showed is one that no snapshot showed.
 */
#define FOLD_SLOTS (2 * BATCH_MAX) /* a power of two: the table is at most half full */

struct fold_slot {
    uint64_t task;
    uint32_t gen;   /* the batch this slot was filled in: older is empty */
    uint32_t start; /* the index of its TASK_START, or NO_START */
    bool     named; /* by an event other than its TASK_START and TASK_END */
};
#define NO_START UINT32_MAX

static struct fold_slot *fold_find(struct fold_slot *tab, uint32_t gen, uint64_t task)
{
    size_t h = (size_t)((task * 0x9e3779b97f4a7c15ull) >> 40) & (FOLD_SLOTS - 1);
    while (tab[h].gen == gen && tab[h].task != task)
        h = (h + 1) & (FOLD_SLOTS - 1);
    if (tab[h].gen != gen)
        tab[h] = (struct fold_slot){.task = task, .gen = gen, .start = NO_START};
    return &tab[h];
}

/* Drops folded pairs from evs[0..n) in place, keeping the order of the
   rest; returns how many are left and adds the tasks folded to *folded.
   Tasks up to id shown (the last snapshot's highest) are not folded. n at
   most BATCH_MAX. The agent thread's alone. */
size_t leash__agent_fold(struct leash__aevent *evs, size_t n, uint64_t shown, uint64_t *folded)
{
    static struct fold_slot tab[FOLD_SLOTS];
    static uint32_t         gen;
    if (n > BATCH_MAX)
        return n;
    if (++gen == 0) { /* wrapped: an old slot's gen could match again */
        memset(tab, 0, sizeof tab);
        gen = 1;
    }
    /* which tasks start here, and which are named by anything else */
    for (size_t i = 0; i < n; i++) {
        if (!evs[i].task)
            continue;
        struct fold_slot *f = fold_find(tab, gen, evs[i].task);
        if (evs[i].kind == LEASH_EV_TASK_START && f->start == NO_START)
            f->start = (uint32_t)i;
        else if (evs[i].kind != LEASH_EV_TASK_END)
            f->named = true;
    }
    /* an end after its start, of a task nothing else names: both go */
    size_t k = 0, nf = 0;
    for (size_t i = 0; i < n; i++) {
        if (evs[i].kind != LEASH_EV_TASK_END || evs[i].task <= shown)
            continue;
        struct fold_slot *f = fold_find(tab, gen, evs[i].task);
        if (f->start != NO_START && f->start < i && !f->named) {
            evs[f->start].kind = LEASH_EV_FOLDED;
            evs[i].kind = LEASH_EV_FOLDED;
            f->start = NO_START;
            nf++;
        }
    }
    if (!nf)
        return n;
    *folded += nf;
    for (size_t i = 0; i < n; i++)
        if (evs[i].kind != LEASH_EV_FOLDED)
            evs[k++] = evs[i];
    return k;
}

/* Sends queued events, reports and (when scan) what changed in the tasks'
   states; a Resync instead when events were dropped. */
static int flush(struct session *s, bool scan)
{
    static struct leash__aevent evs[BATCH_MAX];
    static struct report        rep[REPORTS_MAX];
    int                         err = 0;
    for (;;) {
        if (s->want_resync ||
            atomic_load_explicit(&dropped, memory_order_acquire) != s->snap_dropped ||
            (scan && atomic_load_explicit(&roots_changed, memory_order_acquire))) {
            if ((err = send_resync(s)) != 0)
                return err;
        }
        size_t n = 0;
        while (n < BATCH_MAX && ring_pop(&evs[n]))
            n++;
        size_t popped = n;
        n = leash__agent_fold(evs, n, s->snap_max_task, &s->folded);
        pthread_mutex_lock(&report_mu);
        int nr = reports_n;
        memcpy(rep, reports_q, (size_t)nr * sizeof rep[0]);
        reports_n = 0;
        pthread_mutex_unlock(&report_mu);

        struct pbsnap p = {0};
        bool          have_p = scan && pbsnap_make(&p) == 0;
        size_t        total = n + (size_t)nr + (have_p ? 2 * p.s.ntasks : 0);
        if (total == 0) {
            if (scan)
                pbsnap_free(&p);
            if (popped < BATCH_MAX)
                return 0;
            scan = false;
            continue; /* a whole batch folded away: more may be queued */
        }
        Leash__Agent__Event  *pe = calloc(total, sizeof *pe);
        Leash__Agent__Event **pp = calloc(total, sizeof *pp);
        struct arena          a = {0};
        size_t                k = 0;
        if (pe && pp) {
            for (size_t i = 0; i < n; i++, k++)
                ev_to_pb(&evs[i], &pe[k], &a);
            for (int i = 0; i < nr; i++, k++) {
                leash__agent__event__init(&pe[k]);
                pe[k].kind = LEASH__AGENT__EVENT__KIND__REPORT;
                pe[k].task = rep[i].task;
                pe[k].group = rep[i].group_id;
                pe[k].name = rep[i].group;
                pe[k].report_kind = rep[i].kind;
                pe[k].detail = rep[i].detail;
            }
            if (have_p) {
                k += states(s, &p, &pe[k]);
                snap_shown(s, &p);
            }
            for (size_t i = 0; i < k; i++)
                pp[i] = &pe[i];
            Leash__Agent__Events e = LEASH__AGENT__EVENTS__INIT;
            e.n_events = k;
            e.events = pp;
            e.dropped = atomic_load_explicit(&dropped, memory_order_relaxed);
            e.folded = s->folded;
            Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
            m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_EVENTS;
            m.events = &e;
            if (k) {
                e.seq = ++s->seq;
                err = send_msg(s->fd, &m);
                s->folded = 0;
            }
        } else {
            err = -ENOMEM;
        }
        free(pe);
        free(pp);
        arena_free(&a);
        if (scan) {
            pbsnap_free(&p);
            scan = false;
        }
        if (err || popped < BATCH_MAX)
            return err;
    }
}

static int send_heartbeat(struct session *s)
{
    Leash__Agent__Heartbeat h = LEASH__AGENT__HEARTBEAT__INIT;
    h.seq = ++s->hb_seq;
    h.tasks_live = atomic_load_explicit(&leash__tasks_started, memory_order_relaxed) -
                   atomic_load_explicit(&leash__tasks_ended, memory_order_relaxed);
    h.groups_live = atomic_load_explicit(&leash__groups_live, memory_order_relaxed);
    h.dropped = atomic_load_explicit(&dropped, memory_order_relaxed);
    Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_HEARTBEAT;
    m.heartbeat = &h;
    return send_msg(s->fd, &m);
}

static int send_dump(struct session *s, uint64_t request)
{
    struct pbsnap p;
    int           err = pbsnap_make(&p);
    if (!err) {
        Leash__Agent__DumpReply d = LEASH__AGENT__DUMP_REPLY__INIT;
        d.request = request;
        d.snapshot = &p.snap;
        Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
        m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_DUMP;
        m.dump = &d;
        err = send_msg(s->fd, &m);
    }
    pbsnap_free(&p);
    return err;
}

/* leashd acts on a group only once the process confirms it is alive and
   past its deadline: this answer is the process's own view, now. */
static int send_confirm(struct session *s, const Leash__Agent__Confirm *c)
{
    Leash__Agent__ConfirmReply r = LEASH__AGENT__CONFIRM_REPLY__INIT;
    r.request = c->request;
    r.group = c->group;
    int64_t  deadline = INT64_MAX;
    uint64_t alive = 0;
    r.alive = c->group && leash__group_probe(c->group, &deadline, &alive);
    int64_t now = leash__now_ns();
    r.deadline_ms_left = !r.alive || deadline == INT64_MAX ? -1
                         : deadline > now                  ? (deadline - now) / 1000000
                                                           : 0;
    r.overdue = r.alive && deadline <= now;
    r.tasks = alive;
    Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_CONFIRM;
    m.confirm = &r;
    return send_msg(s->fd, &m);
}

/* One message from leashd. A message this agent cannot use is skipped: the
   daemon may be newer. */
static int handle(struct session *s, const uint8_t *msg, size_t len, bool *hello_done)
{
    Leash__Agent__DaemonMessage *m = leash__agent__daemon_message__unpack(NULL, len, msg);
    if (!m)
        return -EBADMSG;
    int err = 0;
    switch (m->msg_case) {
    case LEASH__AGENT__DAEMON_MESSAGE__MSG_HELLO:
        if (!m->hello->ok) {
            static _Atomic int said;
            if (!atomic_exchange(&said, 1)) {
                char line[400];
                int  n = snprintf(line, sizeof line, "leash[%d]: leashd refused this process: %s\n",
                                  (int)getpid(), m->hello->error ? m->hello->error : "?");
                if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0)
                    n = 0;
            }
            err = -EPROTO;
            break;
        }
        if (m->hello->heartbeat_ms > 0)
            s->heartbeat_ms = m->hello->heartbeat_ms;
        if (m->hello->stuck_after_ms > 0)
            s->stuck_after_ms = m->hello->stuck_after_ms;
        *hello_done = true;
        break;
    case LEASH__AGENT__DAEMON_MESSAGE__MSG_CANCEL: leash__cancel_by_id(m->cancel->group); break;
    case LEASH__AGENT__DAEMON_MESSAGE__MSG_INTERRUPT:
        leash__interrupt_by_id(m->interrupt->group);
        break;
    case LEASH__AGENT__DAEMON_MESSAGE__MSG_DUMP: err = send_dump(s, m->dump->request); break;
    case LEASH__AGENT__DAEMON_MESSAGE__MSG_RESYNC: s->want_resync = true; break;
    case LEASH__AGENT__DAEMON_MESSAGE__MSG_CONFIRM: err = send_confirm(s, m->confirm); break;
    default: break;
    }
    leash__agent__daemon_message__free_unpacked(m, NULL);
    return err;
}

/* Reads what is there and handles every whole frame. */
static int read_in(struct session *s, bool *hello_done)
{
    if (s->incap - s->inlen < 65536) {
        size_t cap = s->incap ? s->incap * 2 : 131072;
        if (cap > LEASH_FRAME_MAX_DEFAULT * 2 + 65536)
            return -EMSGSIZE;
        uint8_t *p = realloc(s->in, cap);
        if (!p)
            return -ENOMEM;
        s->in = p;
        s->incap = cap;
    }
    ssize_t r = recv(s->fd, s->in + s->inlen, s->incap - s->inlen, MSG_DONTWAIT);
    if (r == 0)
        return -ECONNRESET;
    if (r < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -errno;
    s->inlen += (size_t)r;
    size_t off = 0;
    for (;;) {
        const uint8_t *msg;
        size_t         mlen;
        long           n =
            leash_frame_parse(s->in + off, s->inlen - off, LEASH_FRAME_MAX_DEFAULT, &msg, &mlen);
        if (n < 0)
            return (int)n;
        if (n == 0)
            break;
        int err = handle(s, msg, mlen, hello_done);
        if (err)
            return err;
        off += (size_t)n;
    }
    memmove(s->in, s->in + off, s->inlen - off);
    s->inlen -= off;
    return 0;
}

static int64_t mono_ms(void)
{
    return leash__now_ns() / 1000000;
}

static void drain_kicks(void)
{
    uint64_t v;
    ssize_t  r = read(kick_fd, &v, sizeof v);
    (void)r;
}

static bool flush_asked(void)
{
    return atomic_load(&flush_req) != atomic_load_explicit(&flush_done, memory_order_relaxed);
}

/* Sleeps until leashd writes, something is queued or until (ms). Returns
   the poll result of the socket: > 0 readable. */
static int agent_sleep(int fd, int64_t until)
{
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = kick_fd, .events = POLLIN}};
    /* asleep first, then look: a producer either sees it or its event is seen */
    atomic_store(&agent_asleep, 1);
    pthread_mutex_lock(&report_mu);
    bool busy = reports_n > 0;
    pthread_mutex_unlock(&report_mu);
    busy = busy || ring_ready() || flush_asked();
    /* a cell taken and not written yet: look again soon, not at once, so
       as not to take a CPU from the producer that is to write it */
    int64_t wait = busy ? 0 : ring_pending() ? 1 : until - mono_ms();
    if (wait < 0)
        wait = 0;
    int n = poll(p, 2, (int)(wait > INT32_MAX ? INT32_MAX : wait));
    atomic_store(&agent_asleep, 0);
    if (n > 0 && (p[1].revents & POLLIN)) {
        drain_kicks();
        /* woken by an event: gather more for FLUSH_MS, unless the ring fills
           (a kick), exit() waits for the flush, or leashd writes */
        int64_t batch_until = mono_ms() + FLUSH_MS;
        if (batch_until > until)
            batch_until = until;
        while (!(p[0].revents & POLLIN) && !flush_asked()) {
            int64_t left = batch_until - mono_ms();
            if (left <= 0)
                break;
            if (poll(p, 2, (int)left) <= 0)
                break;
            if (p[1].revents & POLLIN) {
                drain_kicks();
                break;
            }
        }
    }
    return p[0].revents & (POLLIN | POLLHUP | POLLERR) ? 1 : 0;
}

static void session(int fd)
{
    struct session s = {.fd = fd, .heartbeat_ms = 1000, .stuck_after_ms = 120000};
    /* from here events are queued: the snapshot taken next may repeat some,
       which leashd takes as the same facts twice */
    atomic_store(&leash__agent_on, 1);
    int     err = send_hello(&s);
    bool    hello_done = false;
    int64_t until = mono_ms() + 5000;
    while (!err && !hello_done) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int64_t       left = until - mono_ms();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
            err = -ETIMEDOUT;
            break;
        }
        err = read_in(&s, &hello_done);
    }
    int64_t next_hb = mono_ms();
    while (!err) {
        int64_t now = mono_ms();
        bool    beat = now >= next_hb;
        if (beat) {
            next_hb = now + s.heartbeat_ms;
            if ((err = send_heartbeat(&s)) != 0)
                break;
        }
        uint32_t req = atomic_load(&flush_req);
        if ((err = flush(&s, beat)) != 0)
            break;
        if (atomic_load_explicit(&flush_done, memory_order_relaxed) != req) {
            atomic_store(&flush_done, req);
            leash__futex_wake(&flush_done, 1);
        }
        if (agent_sleep(fd, next_hb) > 0)
            err = read_in(&s, &hello_done);
    }
    atomic_store(&leash__agent_on, 0);
    ring_discard();
    /* reports not sent yet stay for the next session: each is news once */
    free(s.shown);
    free(s.in);
}

static void *agent_main(void *arg)
{
    (void)arg;
    int64_t backoff = BACKOFF_MIN_MS;
    for (;;) {
        int fd = agent_connect();
        if (fd >= 0) {
            int64_t t0 = mono_ms();
            atomic_store(&agent_fd, fd);
            session(fd);
            atomic_store(&agent_fd, -1);
            close(fd);
            if (mono_ms() - t0 > 1000)
                backoff = BACKOFF_MIN_MS; /* it was a real session */
        }
        struct timespec ts = {backoff / 1000, (backoff % 1000) * 1000000};
        nanosleep(&ts, NULL);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    return NULL;
}

static void flush_at_exit(void)
{
    if (!atomic_load(&leash__agent_on))
        return;
    uint32_t want = atomic_fetch_add(&flush_req, 1) + 1;
    kick();
    int64_t  until = leash__now_ns() + 300 * 1000000LL;
    uint32_t got;
    while ((got = atomic_load(&flush_done)) != want && leash__now_ns() < until)
        leash__futex_wait(&flush_done, got, until);
}

static void agent_start(void)
{
    const char *o = socket_override();
    if (o && strcmp(o, "off") == 0)
        return;
    static bool exit_hook;
    if (!ring) /* after a fork, the child reuses its parent's */
        ring = calloc(RING_SIZE, sizeof *ring);
    if (!ring)
        return;
    atomic_store(&enq_pos, 0);
    deq_pos = 0;
    /* the child's own: one shared with the parent would wake both agents */
    if (kick_fd >= 0)
        close(kick_fd);
    kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (kick_fd < 0)
        return;
    for (size_t i = 0; i < RING_SIZE; i++)
        atomic_store_explicit(&ring[i].seq, i, memory_order_relaxed);
    if (leash__thread_start(agent_main, NULL, "leash-agent", 0) == 0) {
        atomic_store_explicit(&agent_started, 1, memory_order_release);
        if (!exit_hook) {
            exit_hook = true;
            atexit(flush_at_exit);
        }
    }
}

void leash__agent_init(void)
{
    pthread_once(&agent_once, agent_start);
}

/* The child of a fork is a new process to leashd: its agent starts again
   (on the first group or scope it opens) and connects anew. The parent's
   connection is not the child's to use. */
void leash__agent_atfork_child(void)
{
    int fd = atomic_exchange(&agent_fd, -1);
    if (fd >= 0)
        close(fd);
    atomic_store(&leash__agent_on, 0);
    atomic_store(&agent_started, 0); /* until the child's own agent starts */
    atomic_store(&roots_changed, 0);
    report_mu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    reports_n = 0;
    atomic_store(&dropped, 0);
    atomic_store(&flush_req, 0);
    atomic_store(&flush_done, 0);
    atomic_store(&agent_asleep, 0); /* the parent's agent thread is not here */
    agent_once = (pthread_once_t)PTHREAD_ONCE_INIT;
}
