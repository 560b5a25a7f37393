/*
 * control.c: the control socket, leashctl's way in. One Request, one
 * Response (or a stream of them for a followed incident list). The uid
 * comes from SO_PEERCRED: admin uids (and root) may cancel, kill and
 * reload; every other uid sees only its own processes and changes nothing.
 */
#include "leashd.h"
#include "decode.h"

#include "frame.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define REQUEST_MAX (64 * 1024)

struct client {
    struct bufferevent *bev;
    uid_t               uid;
    pid_t               pid;
    bool                admin, follow, done;
    bool                asked; /* a whole request arrived */
    int64_t             accepted_mono;
    struct client      *next;     /* followers */
    struct client      *all_next; /* every client */
    struct client      *all_prev;
};

static struct client *followers, *clients;
static uint64_t       nfollowers;

static void client_free(struct client *c)
{
    agent_dump_cancel(c);
    for (struct client **pp = &followers; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            nfollowers--;
            limit_follower_del(c->uid);
            break;
        }
    }
    if (c->all_prev)
        c->all_prev->all_next = c->all_next;
    else
        clients = c->all_next;
    if (c->all_next)
        c->all_next->all_prev = c->all_prev;
    limit_peer_del(c->uid);
    bufferevent_free(c->bev);
    free(c);
}

uint64_t control_followers(void)
{
    return nfollowers;
}

/* Drops clients that have not sent a whole request within peer_timeout,
   or (done) have not read their answer within it. */
void control_sweep(int64_t now)
{
    for (struct client *c = clients, *next; c; c = next) {
        next = c->all_next;
        if (c->follow || (c->asked && !c->done) || now - c->accepted_mono <= cfg.peer_timeout_ms)
            continue;
        limit_hit(LIMIT_TIMEOUT, c->uid, "control client %s within %lld ms: connection closed",
                  c->asked ? "did not read its answer" : "sent no whole request",
                  (long long)cfg.peer_timeout_ms);
        client_free(c);
    }
}

void control_close_all(void)
{
    while (clients)
        client_free(clients);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    if (c->done && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        client_free(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        client_free(arg);
}

static void respond(struct client *c, const Leash__Control__Response *r, bool last)
{
    size_t   n;
    uint8_t *buf = leash_frame_pack(&r->base, &n);
    if (buf) {
        bufferevent_write(c->bev, buf, n);
        free(buf);
    }
    if (last) {
        c->done = true;
        bufferevent_disable(c->bev, EV_READ);
        write_cb(c->bev, c);
    }
}

/* The last response of a request: an error (code != 0, an errno) or a
   done message. */
static void finish(struct client *c, int code, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    Leash__Control__Error    e = LEASH__CONTROL__ERROR__INIT;
    Leash__Control__Done     d = LEASH__CONTROL__DONE__INIT;
    Leash__Control__Response r = LEASH__CONTROL__RESPONSE__INIT;
    if (code) {
        e.code = code;
        e.message = msg;
        r.resp_case = LEASH__CONTROL__RESPONSE__RESP_ERROR;
        r.error = &e;
    } else {
        d.message = msg;
        r.resp_case = LEASH__CONTROL__RESPONSE__RESP_DONE;
        r.done = &d;
    }
    respond(c, &r, true);
}

static void fail(struct client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct client *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    finish(c, code ? code : EIO, fmt, ap);
    va_end(ap);
}

static void done(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void done(struct client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    finish(c, 0, fmt, ap);
    va_end(ap);
}

static bool may_see(const struct client *c, uid_t uid)
{
    return c->admin || c->uid == uid;
}

/* The process a request names, if the caller may see it; else answers. */
static struct proc *target(struct client *c, pid_t pid)
{
    struct proc *p = proc_by_pid(pid);
    if (!p || !p->hello) {
        fail(c, ESRCH, "no leashed process %d", (int)pid);
        return NULL;
    }
    if (!may_see(c, p->uid)) {
        fail(c, EPERM, "process %d belongs to uid %u; uid %u sees only its own processes", (int)pid,
             (unsigned)p->uid, (unsigned)c->uid);
        return NULL;
    }
    return p;
}

/* A client that named the process by name says which: a pid that now
   belongs to another process is refused, nothing done. */
static bool still_named(struct client *c, const struct proc *p, const char *name)
{
    if (!name || !*name || strcmp(name, p->name) == 0)
        return true;
    fail(c, ESRCH, "process %d is now \"%s\", not \"%s\": nothing done", (int)p->pid, p->name,
         name);
    return false;
}

static bool admin_only(struct client *c, const char *what)
{
    if (c->admin)
        return true;
    fail(c, EPERM, "%s needs an admin uid (admin_uids in the config); uid %u may only look", what,
         (unsigned)c->uid);
    return false;
}

static void do_status(struct client *c)
{
    Leash__Control__Status s = LEASH__CONTROL__STATUS__INIT;
    s.version = (char *)LEASH_VERSION;
    s.uptime_s = (wall_ms() - started_wall) / 1000;
    for (struct proc *p = procs; p; p = p->next) {
        if (!p->hello || !may_see(c, p->uid))
            continue;
        s.processes++;
        s.groups += p->groups.n;
        s.tasks += p->tasks.n;
        s.stuck += p->stuck;
        s.resyncing += p->resyncing;
    }
    /* the daemon-wide counters are for admins; others count their own */
    if (c->admin) {
        s.incidents = incidents_total();
        s.events = stat_events;
    } else {
        Leash__Control__Incident **all;
        size_t                     n = incidents_list(0, &all);
        for (size_t i = 0; i < n; i++)
            s.incidents += all[i]->uid == c->uid;
        free(all);
    }
    s.agent_socket = cfg.agent_socket;
    s.control_socket = cfg.control_socket;
    s.state_dir = cfg.state_dir;
    s.pid = getpid();
    const struct journal_stats *js = journal_stats();
    s.journal = (char *)js->state;
    s.journal_bytes = js->bytes;
    s.journal_pending = js->pending;
    Leash__Control__Response r = LEASH__CONTROL__RESPONSE__INIT;
    r.resp_case = LEASH__CONTROL__RESPONSE__RESP_STATUS;
    r.status = &s;
    respond(c, &r, true);
}

static void do_ps(struct client *c)
{
    size_t n = 0;
    for (struct proc *p = procs; p; p = p->next)
        n++;
    Leash__Control__Process  *ps = calloc(n + 1, sizeof *ps);
    Leash__Control__Process **pp = calloc(n + 1, sizeof *pp);
    if (!ps || !pp) {
        free(ps);
        free(pp);
        fail(c, ENOMEM, "out of memory");
        return;
    }
    size_t  k = 0;
    int64_t now = wall_ms();
    for (struct proc *p = procs; p; p = p->next) {
        if (!p->hello || !may_see(c, p->uid))
            continue;
        Leash__Control__Process *x = &ps[k];
        leash__control__process__init(x);
        x->pid = p->pid;
        x->name = p->name;
        x->uid = p->uid;
        x->groups = p->groups.n;
        x->tasks = p->tasks.n;
        x->stuck = p->stuck;
        x->connected_s = (now - p->connected_wall) / 1000;
        x->dropped = p->dropped;
        x->restarts = p->restarts;
        x->resyncing = p->resyncing;
        pp[k++] = x;
    }
    Leash__Control__Ps out = LEASH__CONTROL__PS__INIT;
    out.n_processes = k;
    out.processes = pp;
    Leash__Control__Response r = LEASH__CONTROL__RESPONSE__INIT;
    r.resp_case = LEASH__CONTROL__RESPONSE__RESP_PS;
    r.ps = &out;
    respond(c, &r, true);
    free(ps);
    free(pp);
}

static void send_tree(struct client *c, struct proc *p, const Leash__Agent__Snapshot *s)
{
    Leash__Control__TaskTree t = LEASH__CONTROL__TASK_TREE__INIT;
    t.pid = p ? p->pid : c->pid;
    t.name = p ? p->name : (char *)"";
    t.snapshot = (Leash__Agent__Snapshot *)s;
    Leash__Control__Response r = LEASH__CONTROL__RESPONSE__INIT;
    r.resp_case = LEASH__CONTROL__RESPONSE__RESP_TASKS;
    r.tasks = &t;
    respond(c, &r, true);
}

static void do_tasks(struct client *c, pid_t pid)
{
    struct proc *p = target(c, pid);
    if (!p)
        return;
    Leash__Agent__Snapshot *s = model_snapshot(p);
    if (!s) {
        fail(c, ENOMEM, "out of memory");
        return;
    }
    send_tree(c, p, s);
    snapshot_free(s);
}

static void dump_done(void *arg, const Leash__Agent__Snapshot *s)
{
    struct client *c = arg;
    struct proc   *p = proc_by_pid(c->pid);
    if (!s)
        fail(c, ETIMEDOUT, "process %d did not answer the dump request within 3 s", (int)c->pid);
    else
        send_tree(c, p, s);
}

static void do_dump(struct client *c, pid_t pid)
{
    struct proc *p = target(c, pid);
    if (!p)
        return;
    c->pid = pid;
    int err = agent_dump(p, dump_done, c);
    if (err)
        fail(c, -err, "cannot ask process %d for a dump: %s", (int)pid, strerror(-err));
}

static bool incident_visible(const struct client *c, const Leash__Control__Incident *i)
{
    return c->admin || i->uid == c->uid;
}

static void do_incidents(struct client *c, const Leash__Control__IncidentsRequest *q)
{
    Leash__Control__Incident **all;
    size_t                     n = incidents_list(q->since_ms, &all);
    size_t                     k = 0;
    for (size_t i = 0; i < n; i++)
        if (incident_visible(c, all[i]))
            all[k++] = all[i];
    Leash__Control__Incidents out = LEASH__CONTROL__INCIDENTS__INIT;
    out.n_incidents = k;
    out.incidents = all;
    out.cut = incidents_cut(q->since_ms, &out.kept);
    Leash__Control__Response r = LEASH__CONTROL__RESPONSE__INIT;
    r.resp_case = LEASH__CONTROL__RESPONSE__RESP_INCIDENTS;
    r.incidents = &out;
    if (q->follow && limit_follower_add(c->uid) != 0) {
        free(all);
        fail(c, EUSERS, "uid %u already follows incidents %d times (followers_per_uid)",
             (unsigned)c->uid, cfg.followers_per_uid);
        return;
    }
    respond(c, &r, !q->follow);
    free(all);
    if (q->follow) {
        c->follow = true;
        c->next = followers;
        followers = c;
        nfollowers++;
    }
}

static void do_incident(struct client *c, uint64_t id)
{
    const Leash__Control__Incident *i = incident_get(id);
    if (!i || !incident_visible(c, i)) {
        fail(c, ENOENT, "no incident %llu%s", (unsigned long long)id,
             i ? "" : " (or no longer kept in memory)");
        return;
    }
    Leash__Control__Response r = LEASH__CONTROL__RESPONSE__INIT;
    r.resp_case = LEASH__CONTROL__RESPONSE__RESP_INCIDENT;
    r.incident = (Leash__Control__Incident *)i;
    respond(c, &r, true);
}

void control_incident_hook(const Leash__Control__Incident *i)
{
    Leash__Control__Response r = LEASH__CONTROL__RESPONSE__INIT;
    r.resp_case = LEASH__CONTROL__RESPONSE__RESP_INCIDENT;
    r.incident = (Leash__Control__Incident *)i;
    for (struct client *c = followers, *next; c; c = next) {
        next = c->next;
        if (!incident_visible(c, i))
            continue;
        /* a follower that stops reading is dropped, alone */
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) > cfg.peer_out_max) {
            limit_hit(LIMIT_OUT, c->uid,
                      "an incidents --follow client reads nothing (over %zu bytes queued): "
                      "dropped",
                      cfg.peer_out_max);
            client_free(c);
            continue;
        }
        respond(c, &r, false);
    }
}

static void do_cancel(struct client *c, const Leash__Control__CancelRequest *q)
{
    if (!admin_only(c, "cancel"))
        return;
    struct proc *p = target(c, q->pid);
    if (!p || !still_named(c, p, q->name))
        return;
    struct dgroup *g = map_get(&p->groups, q->group);
    if (!g) {
        fail(c, ESRCH, "process %d has no group %llu", (int)q->pid, (unsigned long long)q->group);
        return;
    }
    int err = agent_cancel(p, q->group);
    if (err) {
        fail(c, -err, "cannot reach process %d: %s", (int)q->pid, strerror(-err));
        return;
    }
    log_info("uid %u cancelled group %llu \"%s\" of process %d (%s)", (unsigned)c->uid,
             (unsigned long long)g->id, g->name, (int)p->pid, p->name);
    done(c, "cancel sent to group %llu \"%s\" of process %d (%s)", (unsigned long long)g->id,
         g->name, (int)p->pid, p->name);
}

static void do_kill(struct client *c, const Leash__Control__KillRequest *q)
{
    pid_t pid = q->pid;
    if (!admin_only(c, "kill"))
        return;
    struct proc *p = target(c, pid);
    if (!p || !still_named(c, p, q->name))
        return;
    char by[64];
    snprintf(by, sizeof by, "leashctl (uid %u)", (unsigned)c->uid);
    int err = policy_kill(p, "asked over the control socket", by);
    if (err)
        fail(c, -err, "cannot kill process %d: %s", (int)pid, strerror(-err));
    else
        done(c, "SIGTERM sent to process %d (%s); SIGKILL follows after %lld ms if it lingers",
             (int)pid, p->name, (long long)p->kill_grace_ms);
}

static void do_reload(struct client *c)
{
    if (!admin_only(c, "reload"))
        return;
    char err[512];
    if (daemon_reload(err, sizeof err)) {
        /* said in leashd's log too, as a SIGHUP's failure is */
        log_warn("reload asked by uid %u failed, the running config stays: %s", (unsigned)c->uid,
                 err);
        fail(c, EINVAL, "reload failed, the running config stays: %s", err);
    } else
        done(c, "config reloaded from %s", cfg.file ? cfg.file : "built-in defaults");
}

static void handle(struct client *c, const Leash__Control__Request *q)
{
    switch (q->req_case) {
    case LEASH__CONTROL__REQUEST__REQ_STATUS: do_status(c); break;
    case LEASH__CONTROL__REQUEST__REQ_PS: do_ps(c); break;
    case LEASH__CONTROL__REQUEST__REQ_TASKS: do_tasks(c, q->tasks->pid); break;
    case LEASH__CONTROL__REQUEST__REQ_DUMP: do_dump(c, q->dump->pid); break;
    case LEASH__CONTROL__REQUEST__REQ_INCIDENTS: do_incidents(c, q->incidents); break;
    case LEASH__CONTROL__REQUEST__REQ_INCIDENT: do_incident(c, q->incident->id); break;
    case LEASH__CONTROL__REQUEST__REQ_CANCEL: do_cancel(c, q->cancel); break;
    case LEASH__CONTROL__REQUEST__REQ_KILL: do_kill(c, q->kill); break;
    case LEASH__CONTROL__REQUEST__REQ_RELOAD: do_reload(c); break;
    default: fail(c, EINVAL, "unknown request"); break;
    }
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct client   *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->follow || c->done) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    uint8_t hdr[LEASH_FRAME_HEADER];
    if (evbuffer_get_length(in) < sizeof hdr)
        return;
    evbuffer_copyout(in, hdr, sizeof hdr);
    uint32_t n = leash_frame_get_len(hdr);
    if (n > REQUEST_MAX) {
        fail(c, EMSGSIZE, "request of %u bytes: at most %d", n, REQUEST_MAX);
        return;
    }
    if (evbuffer_get_length(in) < sizeof hdr + n)
        return;
    c->asked = true;
    const uint8_t           *msg = evbuffer_pullup(in, (ssize_t)(sizeof hdr + n));
    char                     why[256];
    Leash__Control__Request *q = control_decode(msg + sizeof hdr, n, why, sizeof why);
    evbuffer_drain(in, sizeof hdr + n);
    if (!q) {
        fail(c, EINVAL, "bad request: %s", why);
        return;
    }
    handle(c, q);
    leash__control__request__free_unpacked(q, NULL);
}

int control_accept(struct event_base *b, int fd)
{
    struct ucred cred;
    int          e = limit_peer_accept(fd, &cred);
    if (e)
        return e > 0 ? 0 : e; /* refused and said, or failed */
    struct client *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        limit_peer_del(cred.uid);
        return -ENOMEM;
    }
    c->uid = cred.uid;
    c->admin = config_is_admin(&cfg, cred.uid);
    c->accepted_mono = mono_ms();
    evutil_make_socket_nonblocking(fd);
    c->bev = bufferevent_socket_new(b, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        close(fd);
        limit_peer_del(cred.uid);
        free(c);
        return -ENOMEM;
    }
    c->all_next = clients;
    if (clients)
        clients->all_prev = c;
    clients = c;
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, REQUEST_MAX + LEASH_FRAME_HEADER);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    return 0;
}
