/*
 * peer.c: agent connections. The peer layer cuts the byte stream into
 * frames and refuses oversized ones (closing that connection alone); the
 * decoder checks the message; then one action on the model per message.
 * Who the peer is comes from SO_PEERCRED and a pidfd taken at accept, never
 * from what it says, so an agent can only cause actions on its own process.
 */
#include "leashd.h"
#include "decode.h"

#include "frame.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define DUMP_TIMEOUT_MS 3000

struct pending_dump {
    uint64_t     id;
    struct proc *proc;
    void (*cb)(void *arg, const Leash__Agent__Snapshot *s);
    void                *arg;
    struct event        *timer;
    struct pending_dump *next;
};

static struct pending_dump *pending;
static uint64_t             next_dump_id = 1;

static void dump_finish(struct pending_dump *d, const Leash__Agent__Snapshot *s)
{
    for (struct pending_dump **pp = &pending; *pp; pp = &(*pp)->next) {
        if (*pp == d) {
            *pp = d->next;
            break;
        }
    }
    event_free(d->timer);
    d->cb(d->arg, s);
    proc_unref(d->proc);
    free(d);
}

static void dump_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    dump_finish(arg, NULL);
}

int agent_dump(struct proc *p, void (*cb)(void *arg, const Leash__Agent__Snapshot *s), void *arg)
{
    struct pending_dump *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    d->id = next_dump_id++;
    d->proc = p;
    d->cb = cb;
    d->arg = arg;
    d->timer = evtimer_new(base, dump_timeout, d);
    Leash__Agent__DumpRequest r = LEASH__AGENT__DUMP_REQUEST__INIT;
    r.request = d->id;
    Leash__Agent__DaemonMessage m = LEASH__AGENT__DAEMON_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__DAEMON_MESSAGE__MSG_DUMP;
    m.dump = &r;
    int err = d->timer ? agent_send(p, &m) : -ENOMEM;
    if (err) {
        if (d->timer)
            event_free(d->timer);
        free(d);
        return err;
    }
    proc_ref(p);
    struct timeval tv = {DUMP_TIMEOUT_MS / 1000, 0};
    evtimer_add(d->timer, &tv);
    d->next = pending;
    pending = d;
    return 0;
}

void agent_dump_cancel(void *arg)
{
    for (struct pending_dump **pp = &pending; *pp;) {
        struct pending_dump *d = *pp;
        if (d->arg != arg) {
            pp = &d->next;
            continue;
        }
        *pp = d->next;
        event_free(d->timer);
        proc_unref(d->proc);
        free(d);
    }
}

int agent_send(struct proc *p, const Leash__Agent__DaemonMessage *m)
{
    if (p->dead || !p->bev)
        return -ENOTCONN;
    /* a process that does not read gets nothing more queued */
    if (evbuffer_get_length(bufferevent_get_output(p->bev)) > cfg.peer_out_max) {
        limit_hit(LIMIT_OUT, p->uid, "process %d (%s) reads nothing: messages to it not queued",
                  (int)p->pid, p->name);
        return -ENOBUFS;
    }
    size_t   n;
    uint8_t *buf = leash_frame_pack(&m->base, &n);
    if (!buf)
        return -ENOMEM;
    int rc = bufferevent_write(p->bev, buf, n);
    free(buf);
    return rc ? -EIO : 0;
}

int agent_cancel(struct proc *p, uint64_t group)
{
    Leash__Agent__Cancel c = LEASH__AGENT__CANCEL__INIT;
    c.group = group;
    Leash__Agent__DaemonMessage m = LEASH__AGENT__DAEMON_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__DAEMON_MESSAGE__MSG_CANCEL;
    m.cancel = &c;
    return agent_send(p, &m);
}

int agent_interrupt(struct proc *p, uint64_t group)
{
    Leash__Agent__Interrupt i = LEASH__AGENT__INTERRUPT__INIT;
    i.group = group;
    Leash__Agent__DaemonMessage m = LEASH__AGENT__DAEMON_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__DAEMON_MESSAGE__MSG_INTERRUPT;
    m.interrupt = &i;
    return agent_send(p, &m);
}

static void event_cb(struct bufferevent *bev, short what, void *arg);

static void deferred_unref(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    proc_unref(arg);
}

/* Ends a connection. The proc itself is freed from a later event, never
   inside the callback that is using it. */
static void peer_release(struct proc *p)
{
    if (p->exit_ev) {
        event_free(p->exit_ev);
        p->exit_ev = NULL;
    }
    if (!p->bev)
        return;
    bufferevent_free(p->bev);
    p->bev = NULL;
    limit_parked(p->uid, &p->parked, 0);
    limit_peer_del(p->uid);
}

static void peer_close(struct proc *p, const char *why)
{
    if (p->first_ev) {
        event_free(p->first_ev);
        p->first_ev = NULL;
    }
    peer_release(p);
    for (struct pending_dump *d = pending, *n; d; d = n) {
        n = d->next;
        if (d->proc == p)
            dump_finish(d, NULL);
    }
    model_gone(p, why);
    struct timeval now = {0, 0};
    event_base_once(base, -1, EV_TIMEOUT, deferred_unref, p, &now);
}

static void linger_write_cb(struct bufferevent *bev, void *arg)
{
    struct proc *p = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        peer_close(p, "refused at Hello");
}

/* Reads nothing more, sends what is queued, then closes (or peer_timeout
   closes it, for a peer that does not read). */
static void peer_linger(struct proc *p)
{
    p->closing = true;
    bufferevent_disable(p->bev, EV_READ);
    bufferevent_setcb(p->bev, NULL, linger_write_cb, event_cb, p);
}

static int hello_reply(struct proc *p, bool ok, const char *error)
{
    Leash__Agent__HelloReply r = LEASH__AGENT__HELLO_REPLY__INIT;
    r.ok = ok;
    r.error = (char *)(error ? error : "");
    r.version = LEASH__AGENT__VERSION__VERSION_CURRENT;
    r.heartbeat_ms = cfg.heartbeat_timeout_ms / 4 > 100 ? cfg.heartbeat_timeout_ms / 4 : 100;
    r.stuck_after_ms = cfg.stuck_after_ms;
    Leash__Agent__DaemonMessage m = LEASH__AGENT__DAEMON_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__DAEMON_MESSAGE__MSG_HELLO;
    m.hello = &r;
    return agent_send(p, &m);
}

/* A process with more live groups and tasks than objects_per_process
   could grow leashd without bound: its connection goes. */
static const char *over_objects(struct proc *p, char *why, size_t whylen)
{
    limit_hit(LIMIT_OBJECTS, p->uid, "process %d (%s) has over %zu live groups and tasks",
              (int)p->pid, p->name, cfg.objects_per_process);
    snprintf(why, whylen, "over objects_per_process (%zu live groups and tasks)",
             cfg.objects_per_process);
    return why;
}

/* Any local process may connect and send garbage, as often as it likes:
   what it causes is counted (leashd_bad_messages_total,
   leashd_frames_rejected_total) and logged within a bound. */
static struct log_limit bad_peer_log;

/* One whole frame: decode, then act. Returns the reason to drop the peer. */
static const char *on_message(struct proc *p, const uint8_t *msg, size_t len, char *why,
                              size_t whylen)
{
    Leash__Agent__AgentMessage *m = agent_decode(msg, len, arena_allocator(), why, whylen);
    if (!m) {
        arena_reset();
        stat_bad_messages++;
        return why;
    }
    const char *drop = NULL;
    p->last_msg_mono = model_now();
    if (!p->hello && m->msg_case != LEASH__AGENT__AGENT_MESSAGE__MSG_HELLO) {
        drop = "first message is not a Hello";
        stat_bad_messages++;
        goto out;
    }
    switch (m->msg_case) {
    case LEASH__AGENT__AGENT_MESSAGE__MSG_HELLO:
        if (m->hello->version != LEASH__AGENT__VERSION__VERSION_CURRENT) {
            snprintf(why, whylen, "agent protocol version %u (leashd speaks %d)", m->hello->version,
                     LEASH__AGENT__VERSION__VERSION_CURRENT);
            /* said to the process before the connection closes */
            log_limited(&bad_peer_log, true, "process %d: %s: connection closed", (int)p->pid, why);
            if (hello_reply(p, false, why) == 0)
                peer_linger(p);
            else
                drop = why;
            break;
        }
        if (p->hello) {
            drop = "a second Hello";
            stat_bad_messages++;
            break;
        }
        model_hello(p, m->hello);
        if (p->groups.n + p->tasks.n > cfg.objects_per_process) {
            drop = over_objects(p, why, whylen);
            break;
        }
        hello_reply(p, true, NULL);
        break;
    case LEASH__AGENT__AGENT_MESSAGE__MSG_EVENTS:
        model_events(p, m->events);
        if (p->groups.n + p->tasks.n > cfg.objects_per_process)
            drop = over_objects(p, why, whylen);
        break;
    case LEASH__AGENT__AGENT_MESSAGE__MSG_RESYNC:
        model_resync(p, m->resync);
        if (p->groups.n + p->tasks.n > cfg.objects_per_process)
            drop = over_objects(p, why, whylen);
        break;
    case LEASH__AGENT__AGENT_MESSAGE__MSG_CONFIRM: policy_confirmed(p, m->confirm); break;
    case LEASH__AGENT__AGENT_MESSAGE__MSG_HEARTBEAT: model_heartbeat(p, m->heartbeat); break;
    case LEASH__AGENT__AGENT_MESSAGE__MSG_DUMP:
        for (struct pending_dump *d = pending; d; d = d->next) {
            if (d->id == m->dump->request && d->proc == p) {
                dump_finish(d, m->dump->snapshot);
                break;
            }
        }
        break;
    default: break;
    }
out:
    arena_reset(); /* the message and every string in it */
    return drop;
}

/* What the peer leaves unfinished is counted against its uid's
   uid_buffer_max and must be finished within peer_timeout. Returns false
   when the peer was dropped for it. */
static bool account_partial(struct proc *p, size_t have)
{
    if (have == 0)
        p->partial_mono = 0;
    else if (p->partial_mono == 0)
        p->partial_mono = mono_ms();
    if (limit_parked(p->uid, &p->parked, have) == 0)
        return true;
    limit_hit(LIMIT_BUFFER, p->uid,
              "unfinished frames over %zu bytes: process %d's connection closed",
              cfg.uid_buffer_max, (int)p->pid);
    peer_close(p, "unfinished frames over uid_buffer_max");
    return false;
}

static void read_frames(struct bufferevent *bev, struct proc *p)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    char             why[256];
    while (!p->dead && !p->closing) {
        size_t  have = evbuffer_get_length(in);
        uint8_t hdr[LEASH_FRAME_HEADER];
        if (have < sizeof hdr) {
            account_partial(p, have);
            return;
        }
        evbuffer_copyout(in, hdr, sizeof hdr);
        uint32_t n = leash_frame_get_len(hdr);
        if (n > cfg.max_frame) {
            stat_frames_rejected++;
            snprintf(why, sizeof why, "frame of %u bytes over max_frame %zu", n, cfg.max_frame);
            log_limited(&bad_peer_log, true, "process %d (%s): %s: connection closed", (int)p->pid,
                        p->name, why);
            peer_close(p, why);
            return;
        }
        if (have < sizeof hdr + n) {
            account_partial(p, have);
            return;
        }
        p->partial_mono = 0; /* a frame finished: the clock is for the next one */
        const uint8_t *msg = evbuffer_pullup(in, (ssize_t)(sizeof hdr + n));
        const char    *drop = on_message(p, msg + sizeof hdr, n, why, sizeof why);
        evbuffer_drain(in, sizeof hdr + n);
        p->in_done += sizeof hdr + n;
        if (drop) {
            log_limited(&bad_peer_log, true, "process %d (%s): bad message: %s: connection closed",
                        (int)p->pid, p->name, drop);
            peer_close(p, drop);
            return;
        }
    }
}

/* Bytes that have come in on p's connection: taken as frames, or waiting
   in its input buffer. */
static uint64_t bytes_in(struct proc *p)
{
    return p->in_done + evbuffer_get_length(bufferevent_get_input(p->bev));
}

/* p's process has exited and all it sent is in: the connection ends. At
   end of file that is the ordinary close; a socket still open is held by
   another process. */
static void end_exited(struct proc *p)
{
    char    c;
    ssize_t r = recv(p->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    /* end of file, or a reset (it exited with leashd's replies unread) */
    bool closed = r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    peer_close(p, closed ? "connection closed"
                         : "the process exited; another process held its connection");
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct proc *p = arg;
    model_clock(true); /* one clock reading for the whole batch */
    read_frames(bev, p);
    model_clock(false);
    /* its process exited, and what it had sent by then is read */
    if (p->exit_in && !p->dead && !p->closing && p->bev && bytes_in(p) >= p->exit_in)
        end_exited(p);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct proc *p = arg;
    /* a process that exits with leashd's replies unread closes with a
       reset: an ordinary close all the same */
    bool closed = (what & BEV_EVENT_EOF) || EVUTIL_SOCKET_ERROR() == ECONNRESET;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        peer_close(p, closed ? "connection closed" : "connection error");
}

bool agent_no_peerpidfd;

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5 */
#endif

/* The field `key` of /proc/PID/status, as the first of its numbers. */
static int proc_status_id(pid_t pid, const char *key, long *out)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    int    rc = -ENOENT;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            long real, eff;
            if (sscanf(line + kl + 1, "%ld %ld", &real, &eff) == 2) {
                *out = eff;
                rc = 0;
            }
            break;
        }
    }
    fclose(f);
    return rc;
}

/* A pidfd for the process at the other end of fd, or -1 with why.
   SO_PEERPIDFD names the process that connected, even if its pid has been
   reused since. Without it, pidfd_open(pid) may pin a newer process that
   got the pid between connect() and accept(): that is caught when its
   effective uid or gid differ from the peer's credentials (read while the
   pidfd shows it alive), and such a peer is never signalled. */
static int peer_pidfd(int fd, const struct ucred *cred, char *why, size_t whylen)
{
    int       pidfd = -1;
    socklen_t len = sizeof pidfd;
    if (!agent_no_peerpidfd && getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0)
        return pidfd;
    if (!agent_no_peerpidfd && errno != ENOPROTOOPT && errno != EINVAL) {
        snprintf(why, whylen, "SO_PEERPIDFD: %s (the process that connected is gone)",
                 strerror(errno));
        return -1;
    }
    pidfd = (int)syscall(SYS_pidfd_open, cred->pid, 0);
    if (pidfd < 0) {
        snprintf(why, whylen, "pidfd_open: %s", strerror(errno));
        return -1;
    }
    long uid = -1, gid = -1;
    int  e = proc_status_id(cred->pid, "Uid", &uid);
    if (e == 0)
        e = proc_status_id(cred->pid, "Gid", &gid);
    /* alive after the read: /proc/PID was the pidfd's process */
    bool alive = syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0;
    if (e || !alive || uid != (long)cred->uid || gid != (long)cred->gid) {
        snprintf(why, whylen,
                 "pid %d now runs as uid %ld gid %ld, the peer connected as uid %u gid %u "
                 "(pid reused before accept, or gone)",
                 (int)cred->pid, uid, gid, (unsigned)cred->uid, (unsigned)cred->gid);
        close(pidfd);
        return -1;
    }
    return pidfd;
}

/*
 * The first bytes of a connection are read with recvmsg: the agent's Hello
 * carries its registry memfd (SCM_RIGHTS), which a bufferevent's read would
 * drop. Whatever came with it is handed to the bufferevent as if it had read
 * it. Only the first fd of that first read is taken, and only if it is a
 * registry (registry_map checks); any other is closed.
 */
static void take_fds(struct proc *p, struct msghdr *mh)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            char err[128];
            if (!p->reg && registry_map(fd, &p->reg, &p->reg_size, err, sizeof err) != 0)
                log_warn("process %d (%s): its registry is refused: %s: no post-mortem tree",
                         (int)p->pid, p->name, err);
            close(fd);
        }
    }
}

static void first_read_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct proc *p = arg;
    /* little: the fd comes with the first byte, and the bufferevent reads
       the rest as it reads any peer, into buffers the parked-bytes budget
       counts */
    uint8_t buf[256];
    union {
        char           b[CMSG_SPACE(8 * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec  iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
    ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return; /* the event stays armed */
    event_free(p->first_ev);
    p->first_ev = NULL;
    if (n > 0)
        take_fds(p, &mh);
    if (n > 0) {
        /* a socket bufferevent keeps its input's end frozen: only it adds */
        struct evbuffer *in = bufferevent_get_input(p->bev);
        evbuffer_unfreeze(in, 0);
        int err = evbuffer_add(in, buf, (size_t)n);
        evbuffer_freeze(in, 0);
        if (err)
            n = -1;
    }
    bufferevent_setcb(p->bev, read_cb, NULL, event_cb, p);
    bufferevent_enable(p->bev, EV_READ | EV_WRITE);
    if (n <= 0) {
        peer_close(p, n == 0 ? "connection closed" : "connection error");
        return;
    }
    read_cb(p->bev, p);
}

/* The process that connected has exited, and its connection is still open:
   another process holds the socket (a child it forked, say), and speaks
   for a pid that is gone, which the kernel may give to another process.
   The connection ends with the process, as it does at end of file. */
static void exit_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct proc *p = arg;
    if (p->dead || !p->bev)
        return;
    /* What it sent before it exited is still to be read (its last events,
       a Hello leashd is behind on): read first, and end the connection
       once those bytes are in (read_cb). */
    int queued = 0;
    if (ioctl(p->fd, FIONREAD, &queued) != 0 || queued < 0)
        queued = 0;
    if (queued > 0) {
        p->exit_in = bytes_in(p) + (uint64_t)queued;
        p->exit_mono = mono_ms(); /* and agent_sweep ends it after peer_timeout */
    } else {
        end_exited(p);
    }
}

int agent_accept(struct event_base *b, int fd)
{
    struct ucred cred;
    int          e = limit_peer_accept(fd, &cred);
    if (e)
        return e > 0 ? 0 : e; /* refused and said, or failed */
    /* held from now on: a pid reused later is not this process */
    char why[256];
    int  pidfd = peer_pidfd(fd, &cred, why, sizeof why);
    if (pidfd < 0)
        limit_hit(LIMIT_IDENTITY, cred.uid,
                  "process %d cannot be pinned: %s: it is never signalled", (int)cred.pid, why);
    struct proc *p = proc_new(fd, cred.pid, cred.uid, pidfd);
    if (!p) {
        close(fd);
        if (pidfd >= 0)
            close(pidfd);
        limit_peer_del(cred.uid);
        return -ENOMEM;
    }
    p->pinned = pidfd >= 0;
    p->accepted_mono = mono_ms();
    evutil_make_socket_nonblocking(fd);
    /* an out-of-band byte comes in line, as any other: FIONREAD counts it
       (exit_cb), and a read that never takes it would wait for ever */
    setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &(int){1}, sizeof(int));
    p->bev = bufferevent_socket_new(b, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!p->bev) {
        close(fd);
        limit_peer_del(cred.uid);
        model_gone(p, "out of memory");
        proc_unref(p);
        return -ENOMEM;
    }
    /* never more than one whole frame held unread */
    bufferevent_setwatermark(p->bev, EV_READ, 0, cfg.max_frame + LEASH_FRAME_HEADER);
    p->first_ev = event_new(b, fd, EV_READ | EV_PERSIST, first_read_cb, p);
    if (!p->first_ev) {
        peer_release(p);
        model_gone(p, "out of memory");
        proc_unref(p);
        return -ENOMEM;
    }
    event_add(p->first_ev, NULL);
    /* a pidfd reads readable once its process has exited (pidfd_open(2)) */
    if (pidfd >= 0 && (p->exit_ev = event_new(b, pidfd, EV_READ, exit_cb, p)) != NULL)
        event_add(p->exit_ev, NULL);
    return 0;
}

void agent_sweep(int64_t now)
{
    for (struct proc *p = procs, *next; p; p = next) {
        next = p->next;
        if (!p->bev || p->dead)
            continue;
        const char *what = NULL;
        if ((!p->hello || p->closing) && now - p->accepted_mono > cfg.peer_timeout_ms)
            what = p->closing ? "did not read its Hello reply" : "sent no Hello";
        else if (p->partial_mono && now - p->partial_mono > cfg.peer_timeout_ms)
            what = "left a frame unfinished";
        else if (p->exit_in && now - p->exit_mono > cfg.peer_timeout_ms)
            what = "exited, and what it had sent was not read"; /* never seen: a bound */
        if (!what)
            continue;
        limit_hit(LIMIT_TIMEOUT, p->uid, "process %d %s within %lld ms: connection closed",
                  (int)p->pid, what, (long long)cfg.peer_timeout_ms);
        peer_close(p, what);
    }
}

void agent_close_all(void)
{
    while (procs) {
        struct proc *p = procs;
        if (p->first_ev) {
            event_free(p->first_ev);
            p->first_ev = NULL;
        }
        peer_release(p);
        model_gone(p, "leashd stopping");
        proc_unref(p);
    }
}
