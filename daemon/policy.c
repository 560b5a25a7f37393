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

/* How long a Confirm may take before leashd takes the process as not
   answering: then nothing is done, the step is asked again later, and a
   process that stays silent is the heartbeat check's business. */
static int64_t confirm_timeout_ms(void)
{
    return cfg.heartbeat_timeout_ms > 1000 ? cfg.heartbeat_timeout_ms : 1000;
}

static void arm(struct dgroup *g, int64_t in_ms)
{
    if (in_ms < 0)
        in_ms = 0;
    struct timeval tv = {in_ms / 1000, (in_ms % 1000) * 1000};
    evtimer_add(g->timer, &tv);
}

/* The next step is due: ask the process first. Nothing beyond this is done
   on leashd's view alone, which may be late or hold ghosts. */
static void step_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    static uint64_t next_req;
    struct dgroup  *g = arg;
    struct proc    *p = g->proc;
    if (g->next_step >= p->policy->nsteps)
        return;
    if (peer_unread(p) && g->deferrals < STEP_DEFERRALS_MAX) {
        g->deferrals++;
        struct timeval tv = {0, STEP_DEFER_MS * 1000};
        evtimer_add(g->timer, &tv);
        return;
    }
    g->deferrals = 0;
    if (g->confirm_req && !g->confirm_late) {
        g->confirm_late = true;
        log_warn("process %d (%s) did not confirm group %llu \"%s\" within %lld ms: step "
                 "\"%s\" waits",
                 (int)p->pid, p->name, (unsigned long long)g->id, g->name,
                 (long long)confirm_timeout_ms(),
                 action_name(p->policy->steps[g->next_step].action));
    }
    Leash__Agent__Confirm c = LEASH__AGENT__CONFIRM__INIT;
    c.request = g->confirm_req = ++next_req;
    c.group = g->id;
    Leash__Agent__DaemonMessage m = LEASH__AGENT__DAEMON_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__DAEMON_MESSAGE__MSG_CONFIRM;
    m.confirm = &c;
    agent_send(p, &m); /* not sent: the connection is ending, and the group with it */
    arm(g, confirm_timeout_ms());
}

/* The step, on a group the process has just confirmed alive and overdue. */
static void step_run(struct dgroup *g, const struct step *st, const Leash__Agent__ConfirmReply *r)
{
    struct proc *p = g->proc;
    int64_t      over = model_now() - g->deadline_mono;
    if (st->action == ACT_KILL) {
        char why[200];
        snprintf(why, sizeof why, "group %llu \"%s\" overran its deadline by %lld ms",
                 (unsigned long long)g->id, g->name, (long long)over);
        policy_kill(p, why, "policy");
        return;
    }
    overrun_report(p, g, st->action, (size_t)r->tasks, over);
    if (st->action == ACT_CANCEL)
        agent_cancel(p, g->id);
    else if (st->action == ACT_INTERRUPT)
        agent_interrupt(p, g->id);
}

void policy_confirmed(struct proc *p, const Leash__Agent__ConfirmReply *r)
{
    struct dgroup *g = map_get(&p->groups, r->group);
    if (!g || !g->confirm_req || g->confirm_req != r->request)
        return; /* an answer to a question no longer asked */
    g->confirm_req = 0;
    g->confirm_late = false;
    evtimer_del(g->timer);
    const struct policy *pol = p->policy;
    if (g->next_step >= pol->nsteps)
        return;
    if (!r->alive) {
        /* leashd held a group the process no longer has: a ghost. Routine
           for a busy process whose groups end about when their grace does
           (the end still on its way), so it is said within a bound. */
        static struct log_limit ghost_log;
        log_limited(&ghost_log, false,
                    "process %d (%s): group %llu \"%s\" has ended: no step taken, and the group "
                    "leaves the model",
                    (int)p->pid, p->name, (unsigned long long)g->id, g->name);
        model_group_drop(p, g);
        return;
    }
    if (!r->overdue) {
        /* the deadline as the process has it: later than leashd thought, or none */
        g->deadline_mono = r->deadline_ms_left < 0 ? INT64_MAX : model_now() + r->deadline_ms_left;
        schedule(g);
        return;
    }
    if (r->tasks == 0) {
        /* past its deadline (so cancelled) with no child left: only its
           opener's wait remains, which no step can make any sooner */
        g->next_step = pol->nsteps;
        return;
    }
    const struct step *st = &pol->steps[g->next_step++];
    step_run(g, st, r);
    if (!p->dead && map_get(&p->groups, r->group) == g)
        schedule(g);
}

static void schedule(struct dgroup *g)
{
    const struct policy *pol = g->proc->policy;
    if (g->deadline_mono == INT64_MAX || g->next_step >= pol->nsteps)
        return;
    int64_t at = g->deadline_mono + pol->grace_ms + pol->steps[g->next_step].at_ms;
    if (!g->timer && !(g->timer = evtimer_new(base, step_cb, g)))
        return;
    arm(g, at - mono_ms());
}

void policy_group_open(struct dgroup *g)
{
    g->next_step = 0;
    g->deferrals = 0;
    g->confirm_req = 0;
    if (g->timer)
        evtimer_del(g->timer);
    schedule(g);
}

/* A process that stops talking cannot confirm anything: only the
   heartbeat_escalate steps run, each ACTION@T T after the loss was found,
   and each is an incident that says what was done. */
static void heartbeat_step(struct proc *p, const struct step *st, int64_t silent_ms)
{
    const char *act = action_name(st->action);
    if (st->action == ACT_KILL) {
        char why[128];
        snprintf(why, sizeof why, "no message for %lld ms (heartbeat lost)", (long long)silent_ms);
        policy_kill(p, why, "heartbeat_escalate");
        return;
    }
    incident(p, "heartbeat_lost", 0, NULL, 0, act,
             "no message for %lld ms (heartbeat_timeout %lld ms): the process is wedged or "
             "short of CPU%s",
             (long long)silent_ms, (long long)cfg.heartbeat_timeout_ms,
             st->action == ACT_CANCEL      ? "; every top-level group cancelled"
             : st->action == ACT_INTERRUPT ? "; every group interrupted"
                                           : "");
    if (st->action == ACT_CANCEL)
        agent_cancel(p, 0);
    else if (st->action == ACT_INTERRUPT)
        agent_interrupt(p, 0);
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
            log_warn("process %d (%s): no message for %lld ms: heartbeat lost", (int)p->pid,
                     p->name, (long long)(now - p->last_msg_mono));
        }
        while (p->hb_step < cfg.hb_nsteps &&
               now >= p->hb_lost_mono + cfg.hb_steps[p->hb_step].at_ms)
            heartbeat_step(p, &cfg.hb_steps[p->hb_step++], now - p->last_msg_mono);
    }
}

void policy_reload(void)
{
    for (struct proc *p = procs; p; p = p->next)
        p->policy = config_policy(&cfg, p->name);
}
