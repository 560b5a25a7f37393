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
 */
#define _GNU_SOURCE
#include "internal.h"
#include "snapshot.h"

#include "frame.h"
#include "leash/agent.pb-c.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

_Atomic int leash__agent_on;

struct cell {
    _Atomic size_t       seq;
    struct leash__aevent ev;
};

static struct cell     *ring;
static _Atomic size_t   enq_pos;
static size_t           deq_pos; /* the agent thread's alone */
static _Atomic uint64_t dropped;

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

void leash__agent_push(const struct leash__aevent *ev)
{
    size_t       pos = atomic_load_explicit(&enq_pos, memory_order_relaxed);
    struct cell *c;
    for (;;) {
        c = &ring[pos & (RING_SIZE - 1)];
        size_t   seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)pos;
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&enq_pos, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed))
                break;
        } else if (dif < 0) {
            atomic_fetch_add_explicit(&dropped, 1, memory_order_relaxed);
            return;
        } else {
            pos = atomic_load_explicit(&enq_pos, memory_order_relaxed);
        }
    }
    c->ev = *ev;
    atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
}

static bool ring_pop(struct leash__aevent *ev)
{
    struct cell *c = &ring[deq_pos & (RING_SIZE - 1)];
    size_t       seq = atomic_load_explicit(&c->seq, memory_order_acquire);
    if (seq != deq_pos + 1)
        return false;
    *ev = c->ev;
    atomic_store_explicit(&c->seq, deq_pos + RING_SIZE, memory_order_release);
    deq_pos++;
    return true;
}

void leash__agent_report(const char *kind, uint64_t task, uint64_t group_id, const char *group,
                         const char *detail)
{
    if (!atomic_load_explicit(&leash__agent_on, memory_order_relaxed))
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

static char *arena_site(struct arena *a, const char *file, int line)
{
    if (!file)
        return (char *)"";
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        char **p = realloc(a->s, cap * sizeof *p);
        if (!p)
            return (char *)"";
        a->s = p;
        a->cap = cap;
    }
    char *s;
    if (asprintf(&s, "%s:%d", file, line) < 0)
        return (char *)"";
    return a->s[a->n++] = s;
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
            x->name = (char *)g->name;
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
            y->fn = (char *)(t->fn ? t->fn : "");
            y->site = arena_site(&p->a, t->file, t->line);
            y->op = (Leash__Agent__Op)t->op;
            y->object = (char *)(t->obj ? t->obj : "");
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

struct session {
    int       fd;
    int64_t   heartbeat_ms, stuck_after_ms;
    uint64_t  hb_seq;
    uint64_t *stuck; /* ids of tasks reported stuck, sorted */
    size_t    nstuck;
    uint8_t  *in;
    size_t    inlen, incap;
};

static int send_hello(struct session *s)
{
    struct pbsnap p;
    int           err = pbsnap_make(&p);
    if (!err) {
        Leash__Agent__Hello h = LEASH__AGENT__HELLO__INIT;
        h.version = LEASH__AGENT__VERSION__VERSION_CURRENT;
        h.name = (char *)leash__process_name();
        h.snapshot = &p.snap;
        h.dropped = atomic_load_explicit(&dropped, memory_order_relaxed);
        h.lib_version = (char *)LEASH_VERSION_STRING;
        int reg = leash__reg_fd();
        h.registry = reg >= 0;
        Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
        m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_HELLO;
        m.hello = &h;
        err = send_msg_fd(s->fd, &m, reg);
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
    x->name = (char *)e->name;
    x->deadline_ms_left = e->deadline_ms_left;
    x->site = arena_site(a, e->file, e->line);
    x->fn = (char *)(e->fn ? e->fn : "");
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

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sends queued events, reports and (when scan) newly stuck tasks. */
static int flush(struct session *s, bool scan)
{
    static struct leash__aevent evs[BATCH_MAX];
    static struct report        rep[REPORTS_MAX];
    int                         err = 0;
    for (;;) {
        size_t n = 0;
        while (n < BATCH_MAX && ring_pop(&evs[n]))
            n++;
        pthread_mutex_lock(&report_mu);
        int nr = reports_n;
        memcpy(rep, reports_q, (size_t)nr * sizeof rep[0]);
        reports_n = 0;
        pthread_mutex_unlock(&report_mu);

        struct pbsnap p = {0};
        size_t        nstuck_new = 0;
        uint64_t     *now_stuck = NULL;
        size_t        nst = 0;
        if (scan) {
            if (pbsnap_make(&p) == 0) {
                now_stuck = malloc((p.s.ntasks + 1) * sizeof *now_stuck);
                for (size_t i = 0; now_stuck && i < p.snap.n_tasks; i++)
                    if (is_stuck(s, p.snap.tasks[i]))
                        now_stuck[nst++] = p.snap.tasks[i]->id;
                if (now_stuck)
                    qsort(now_stuck, nst, sizeof *now_stuck, cmp_u64);
            }
        }
        size_t total = n + (size_t)nr + nst;
        if (total == 0) {
            if (scan) {
                free(s->stuck);
                s->stuck = now_stuck;
                s->nstuck = 0;
                pbsnap_free(&p);
            }
            return 0;
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
            for (size_t i = 0; scan && i < p.snap.n_tasks; i++) {
                Leash__Agent__Task *t = p.snap.tasks[i];
                if (!is_stuck(s, t))
                    continue;
                if (s->stuck && bsearch(&t->id, s->stuck, s->nstuck, sizeof *s->stuck, cmp_u64))
                    continue; /* reported already */
                leash__agent__event__init(&pe[k]);
                pe[k].kind = LEASH__AGENT__EVENT__KIND__STUCK;
                pe[k].task = t->id;
                pe[k].group = t->group;
                pe[k].site = t->blocked_site;
                pe[k].fn = t->fn;
                pe[k].op = t->op;
                pe[k].object = t->object;
                pe[k].since_ms = t->since_ms;
                k++;
                nstuck_new++;
            }
            for (size_t i = 0; i < k; i++)
                pp[i] = &pe[i];
            Leash__Agent__Events e = LEASH__AGENT__EVENTS__INIT;
            e.n_events = k;
            e.events = pp;
            e.dropped = atomic_load_explicit(&dropped, memory_order_relaxed);
            Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
            m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_EVENTS;
            m.events = &e;
            if (k)
                err = send_msg(s->fd, &m);
        } else {
            err = -ENOMEM;
        }
        free(pe);
        free(pp);
        arena_free(&a);
        if (scan) {
            free(s->stuck);
            s->stuck = now_stuck;
            s->nstuck = nst;
            pbsnap_free(&p);
            scan = false;
        }
        if (err || n < BATCH_MAX)
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
    ssize_t r = recv(s->fd, s->in + s->inlen, s->incap - s->inlen, 0);
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
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int64_t       wait = next_hb - mono_ms();
        if (wait > FLUSH_MS)
            wait = FLUSH_MS;
        if (wait < 0)
            wait = 0;
        int n = poll(&p, 1, (int)wait);
        if (n > 0)
            err = read_in(&s, &hello_done);
    }
    atomic_store(&leash__agent_on, 0);
    struct leash__aevent e;
    while (ring_pop(&e))
        ;
    pthread_mutex_lock(&report_mu);
    reports_n = 0;
    pthread_mutex_unlock(&report_mu);
    free(s.stuck);
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
    for (size_t i = 0; i < RING_SIZE; i++)
        atomic_store_explicit(&ring[i].seq, i, memory_order_relaxed);
    if (leash__thread_start(agent_main, NULL, "leash-agent", 0) == 0 && !exit_hook) {
        exit_hook = true;
        atexit(flush_at_exit);
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
    report_mu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    reports_n = 0;
    atomic_store(&dropped, 0);
    atomic_store(&flush_req, 0);
    atomic_store(&flush_done, 0);
    agent_once = (pthread_once_t)PTHREAD_ONCE_INIT;
}
