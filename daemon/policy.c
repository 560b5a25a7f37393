/*
 * policy.c: what leashd does when a group overruns its deadline or a
 * process stops sending heartbeats: the escalation steps of the first
 * policy matching the process name, each ACTION@T run T after the deadline
 * plus grace while the group (or the silence) lasts.
 */
#include "leashd.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static int pidfd_signal(int pidfd, int sig)
{
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

static void kill_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct proc *p = arg;
    if (pidfd_signal(p->pidfd, SIGKILL) == 0)
        log_warn("process %d (%s) still alive %lld ms after SIGTERM: SIGKILL", (int)p->pid, p->name,
                 (long long)p->kill_grace_ms);
    proc_unref(p);
}

int policy_kill(struct proc *p, const char *why, const char *by)
{
    if (p->killing)
        return 0;
    if (p->pidfd < 0 || pidfd_signal(p->pidfd, SIGTERM) != 0) {
        int e = p->pidfd < 0 ? ESRCH : errno;
        log_warn("cannot signal process %d (%s): %s", (int)p->pid, p->name, strerror(e));
        return -e;
    }
    p->killing = true;
    p->kill_grace_ms = p->policy->kill_grace_ms;
    incident(p, "killed", 0, NULL, 0, "kill", "SIGTERM (SIGKILL after %lld ms): %s, by %s",
             (long long)p->policy->kill_grace_ms, why, by);
    proc_ref(p); /* the timer holds it: the connection may go first */
    struct timeval tv = {p->kill_grace_ms / 1000, (p->kill_grace_ms % 1000) * 1000};
    p->kill_timer = evtimer_new(base, kill_cb, p);
    if (p->kill_timer)
        evtimer_add(p->kill_timer, &tv);
    else
        proc_unref(p);
    return 0;
}

static void schedule(struct dgroup *g);

bool peer_unread(const struct proc *p)
{
    int n = 0;
    return p->fd >= 0 && ioctl(p->fd, FIONREAD, &n) == 0 && n > 0;
}

/* A step waits for what the process said before it: read first, then
   decide, so a stall of leashd's own never turns into an action against a
   process that did nothing wrong. A process that keeps its socket full
   delays each step by at most this much. */
#define STEP_DEFER_MS      10
#define STEP_DEFERRALS_MAX 100

/*
 * A deadline_overrun incident says what the group's tasks do, from a dump
 * asked for as the step runs (before any cancel or interrupt it sends, which
 * the agent handles after): which spin, which sit in which system call
 * (where `interrupt` can help) and which are blocked in leash. With no
 * answer in time, it says what the model knows.
 */
struct overrun {
    struct proc *p;
    uint64_t     group;
    char         name[64], site[256], action[16];
    size_t       live;
    int64_t      over;
};

static bool in_subtree(const Leash__Agent__Snapshot *s, uint64_t gid, uint64_t root)
{
    for (int depth = 0; gid && depth < 64; depth++) {
        if (gid == root)
            return true;
        uint64_t parent = 0;
        for (size_t i = 0; i < s->n_groups; i++)
            if (s->groups[i]->id == gid)
                parent = s->groups[i]->parent;
        gid = parent;
    }
    return false;
}

static void overrun_tasks(const Leash__Agent__Snapshot *s, uint64_t root, char *out, size_t len)
{
    size_t n = 0, shown = 0, more = 0;
    int    w;
    out[0] = '\0';
    for (size_t i = 0; s && i < s->n_tasks; i++) {
        const Leash__Agent__Task *t = s->tasks[i];
        if (!in_subtree(s, t->group, root))
            continue;
        if (shown == 10 || n + 200 > len) {
            more++;
            continue;
        }
        w = snprintf(out + n, len - n, "%stask %llu %s ", shown ? ", " : ": ",
                     (unsigned long long)t->id, t->fn);
        n += w > 0 ? (size_t)w : 0;
        if (t->op)
            w = snprintf(out + n, len - n, "blocked on %s", leashd_op_name(t->op));
        else if (t->in_syscall)
            w = snprintf(out + n, len - n, "in %s(2)", t->syscall_name);
        else if (t->cpu_known && t->cpu_pct >= 0)
            w = snprintf(out + n, len - n, "%s (on CPU %d%%)", t->cpu_pct >= 50 ? "spins" : "runs",
                         t->cpu_pct);
        else
            w = snprintf(out + n, len - n, "runs");
        n += w > 0 ? (size_t)w : 0;
        shown++;
    }
    if (more)
        snprintf(out + n, len - n, ", and %zu more", more);
}

static void overrun_incident(struct overrun *o, const Leash__Agent__Snapshot *s)
{
    char tasks[800] = "";
    if (s)
        overrun_tasks(s, o->group, tasks, sizeof tasks);
    incident(o->p, "deadline_overrun", o->group, o->name, 0, o->action,
             "group %llu \"%s\" (opened at %s) still has %zu tasks %lld ms after its deadline%s",
             (unsigned long long)o->group, o->name, o->site, o->live, (long long)o->over, tasks);
}

static void overrun_dumped(void *arg, const Leash__Agent__Snapshot *s)
{
    struct overrun *o = arg;
    overrun_incident(o, s);
    proc_unref(o->p);
    free(o);
}

static void overrun_report(struct proc *p, const struct dgroup *g, enum action a, size_t live,
                           int64_t over)
{
    struct overrun *o = calloc(1, sizeof *o);
    if (!o) {
        incident(p, "deadline_overrun", g->id, g->name, 0, action_name(a),
                 "group %llu \"%s\" (opened at %s) still has %zu tasks %lld ms after its deadline",
                 (unsigned long long)g->id, g->name, g->site, live, (long long)over);
        return;
    }
    o->p = p;
    o->group = g->id;
    snprintf(o->name, sizeof o->name, "%s", g->name);
    snprintf(o->site, sizeof o->site, "%s", g->site);
    snprintf(o->action, sizeof o->action, "%s", action_name(a));
    o->live = live;
    o->over = over;
    proc_ref(p);
    if (agent_dump(p, overrun_dumped, o) != 0)
        overrun_dumped(o, NULL);
}

static void step_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct dgroup       *g = arg;
    struct proc         *p = g->proc;
    const struct policy *pol = p->policy;
    if (g->next_step >= pol->nsteps)
        return;
    if (peer_unread(p) && g->deferrals < STEP_DEFERRALS_MAX) {
        g->deferrals++;
        struct timeval tv = {0, STEP_DEFER_MS * 1000};
        evtimer_add(g->timer, &tv);
        return;
    }
    g->deferrals = 0;
    const struct step *st = &pol->steps[g->next_step++];
    int64_t            over = mono_ms() - g->deadline_mono;
    size_t             live = 0;
    MAP_EACH(&p->tasks, i) if (((struct dtask *)p->tasks.vals[i])->group == g->id) live++;
    if (st->action == ACT_KILL) {
        char why[200];
        snprintf(why, sizeof why, "group %llu \"%s\" overran its deadline by %lld ms",
                 (unsigned long long)g->id, g->name, (long long)over);
        policy_kill(p, why, "policy");
    } else {
        overrun_report(p, g, st->action, live, over);
        if (st->action == ACT_CANCEL)
            agent_cancel(p, g->id);
        else if (st->action == ACT_INTERRUPT)
            agent_interrupt(p, g->id);
    }
    schedule(g);
}

static void schedule(struct dgroup *g)
{
    const struct policy *pol = g->proc->policy;
    if (g->deadline_mono == INT64_MAX || g->next_step >= pol->nsteps)
        return;
    int64_t at = g->deadline_mono + pol->grace_ms + pol->steps[g->next_step].at_ms;
    int64_t in = at - mono_ms();
    if (in < 0)
        in = 0;
    if (!g->timer && !(g->timer = evtimer_new(base, step_cb, g)))
        return;
    struct timeval tv = {in / 1000, (in % 1000) * 1000};
    evtimer_add(g->timer, &tv);
}

void policy_group_open(struct dgroup *g)
{
    g->next_step = 0;
    g->deferrals = 0;
    if (g->timer)
        evtimer_del(g->timer);
    schedule(g);
}

void policy_heartbeat_check(void)
{
    int64_t now = mono_ms();
    for (struct proc *p = procs; p; p = p->next) {
        if (!p->hello || p->dead)
            continue;
        /* what it sent meanwhile is read before the next tick: silence is
           only what the kernel, too, has nothing of */
        if (peer_unread(p))
            continue;
        if (now - p->last_msg_mono <= cfg.heartbeat_timeout_ms) {
            if (p->hb_lost)
                log_info("process %d (%s): heartbeats are back", (int)p->pid, p->name);
            p->hb_lost = false;
            continue;
        }
        if (!p->hb_lost) {
            p->hb_lost = true;
            p->hb_lost_mono = now;
            p->hb_step = 0;
            incident(p, "heartbeat_lost", 0, NULL, 0, "report",
                     "no message for %lld ms (heartbeat_timeout %lld ms): the process is wedged",
                     (long long)(now - p->last_msg_mono), (long long)cfg.heartbeat_timeout_ms);
        }
        const struct policy *pol = p->policy;
        while (p->hb_step < pol->nsteps &&
               now >= p->hb_lost_mono + pol->grace_ms + pol->steps[p->hb_step].at_ms) {
            const struct step *st = &pol->steps[p->hb_step++];
            if (st->action == ACT_CANCEL)
                agent_cancel(p, 0);
            else if (st->action == ACT_INTERRUPT)
                agent_interrupt(p, 0);
            else if (st->action == ACT_KILL)
                policy_kill(p, "heartbeat lost", "policy");
        }
    }
}

void policy_reload(void)
{
    for (struct proc *p = procs; p; p = p->next)
        p->policy = config_policy(&cfg, p->name);
}
