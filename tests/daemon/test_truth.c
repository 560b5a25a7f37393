/*
 * test_truth.c: leashd's model and policy fed stale, lost and hostile
 * input. Every path from an event to a signal or a cancel goes through a
 * Confirm that the process answers; these tests answer it wrongly, late,
 * for the wrong group, or never, and check that nothing is done on a false
 * view, and that the model follows what the process says.
 */
#include "stubs.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

/* A process to signal: a child that waits for one. */
struct victim {
    pid_t pid;
    int   pidfd;
};

static struct victim victim_new(void)
{
    struct victim v = {.pid = fork()};
    if (v.pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves nothing behind */
        pause();
        _exit(0);
    }
    v.pidfd = (int)syscall(SYS_pidfd_open, v.pid, 0);
    assert_true(v.pidfd >= 0);
    return v;
}

/* 0 while it lives, else its wait status */
static int victim_status(struct victim *v)
{
    int st = 0;
    return waitpid(v->pid, &st, WNOHANG) == v->pid ? (st ? st : -1) : 0;
}

static void victim_end(struct victim *v)
{
    kill(v->pid, SIGKILL);
    waitpid(v->pid, NULL, 0);
}

static struct proc *hello_pid(const char *name, pid_t pid, int pidfd)
{
    struct proc        *p = proc_new(-1, pid, 1000, pidfd);
    Leash__Agent__Hello h = LEASH__AGENT__HELLO__INIT;
    h.version = 1;
    h.name = (char *)name;
    model_hello(p, &h);
    return p;
}

static void ev_full(struct proc *p, int kind, uint64_t group, uint64_t task, int64_t deadline,
                    const char *name)
{
    Leash__Agent__Event e = LEASH__AGENT__EVENT__INIT;
    e.kind = kind;
    e.group = group;
    e.task = task;
    e.deadline_ms_left = deadline;
    e.name = (char *)name;
    e.fn = (char *)name;
    e.site = "x.c:1";
    model_event(p, &e);
}

static void ev(struct proc *p, int kind, uint64_t group, uint64_t task, int64_t deadline)
{
    ev_full(p, kind, group, task, deadline, "g");
}

static void gone(struct proc *p)
{
    model_gone(p, "test");
    proc_unref(p);
    event_base_dispatch(base); /* the agent_lost verdict, a moment later */
}

/* Runs the loop until group gid of p waits for a Confirm; returns its id. */
static uint64_t await_confirm(struct proc *p, uint64_t gid)
{
    int64_t until = mono_ms() + 60000; /* only a hang takes this long */
    for (;;) {
        struct dgroup *g = map_get(&p->groups, gid);
        assert_non_null(g);
        if (g->confirm_req)
            return g->confirm_req;
        if (mono_ms() > until)
            fail_msg("no Confirm was ever asked for group %llu", (unsigned long long)gid);
        event_base_loop(base, EVLOOP_ONCE);
    }
}

static void answer(struct proc *p, uint64_t req, uint64_t gid, bool alive, bool overdue,
                   int64_t left, uint64_t tasks)
{
    Leash__Agent__ConfirmReply r = LEASH__AGENT__CONFIRM_REPLY__INIT;
    r.request = req;
    r.group = gid;
    r.alive = alive;
    r.overdue = overdue;
    r.deadline_ms_left = left;
    r.tasks = tasks;
    policy_confirmed(p, &r);
}

#define KILLING_POLICY                                                                             \
    "policies = ( { match = \"*\"; grace = \"0ms\"; kill_grace = \"50ms\";\n"                      \
    "  escalate = [ \"cancel\", \"kill\" ]; } );\n"

/* A ghost: leashd holds a group the process no longer has (its end was
   lost). The process says so, and nothing is done. */
static void ghost_group_is_dropped_not_killed(void **state)
{
    (void)state;
    load_conf(KILLING_POLICY);
    struct victim v = victim_new();
    size_t        over = count_incidents("deadline_overrun", NULL),
           killed = count_incidents("killed", NULL);
    struct proc *p = hello_pid("svc", v.pid, v.pidfd);
    ev(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 2, 1, 1);
    ev(p, LEASH__AGENT__EVENT__KIND__TASK_START, 2, 3, 0);
    uint64_t req = await_confirm(p, 2);
    assert_int_equal(count_incidents("deadline_overrun", NULL), over); /* asked, not acted */
    answer(p, req, 2, false, false, -1, 0);
    assert_null(map_get(&p->groups, 2));
    assert_null(map_get(&p->tasks, 3)); /* its ghost task with it */
    assert_int_equal(count_incidents("deadline_overrun", NULL), over);
    assert_int_equal(count_incidents("killed", NULL), killed);
    assert_int_equal(victim_status(&v), 0);
    gone(p);
    victim_end(&v);
    load_conf("");
}

/* Answers to another question, about another group or from another
   process change nothing; the right one does. */
static void stale_and_foreign_answers_are_ignored(void **state)
{
    (void)state;
    load_conf("policies = ( { match = \"*\"; grace = \"0ms\"; escalate = [ \"cancel\" ]; } );\n");
    size_t       cancels = count_incidents("deadline_overrun", "cancel");
    struct proc *p = hello_pid("svc", 4242, -1);
    struct proc *q = hello_pid("other", 4343, -1);
    ev(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 2, 1, 1);
    ev(p, LEASH__AGENT__EVENT__KIND__TASK_START, 2, 3, 0);
    ev(q, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 2, 1, -1); /* same id, no deadline */
    uint64_t req = await_confirm(p, 2);
    answer(p, req + 1000, 2, true, true, 0, 1); /* a request never made */
    answer(p, req, 77, true, true, 0, 1);       /* a group it lacks */
    answer(q, req, 2, true, true, 0, 1);        /* another process, its own group 2 */
    assert_int_equal(count_incidents("deadline_overrun", "cancel"), cancels);
    assert_int_equal(((struct dgroup *)map_get(&p->groups, 2))->confirm_req, req);
    answer(p, req, 2, true, true, 0, 1);
    assert_int_equal(count_incidents("deadline_overrun", "cancel"), cancels + 1);
    answer(p, req, 2, true, true, 0, 1); /* the same answer twice: one action */
    assert_int_equal(count_incidents("deadline_overrun", "cancel"), cancels + 1);
    gone(q);
    gone(p);
    load_conf("");
}

/* A process that does not answer is never acted on: the Confirm is asked
   again, and the step waits. */
static void unanswered_confirm_never_acts(void **state)
{
    (void)state;
    load_conf("heartbeat_timeout = \"100ms\";\n" KILLING_POLICY);
    struct victim v = victim_new();
    size_t        over = count_incidents("deadline_overrun", NULL),
           killed = count_incidents("killed", NULL);
    struct proc *p = hello_pid("svc", v.pid, v.pidfd);
    ev(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 2, 1, 1);
    ev(p, LEASH__AGENT__EVENT__KIND__TASK_START, 2, 3, 0);
    uint64_t first = await_confirm(p, 2), last = first;
    int64_t  until = mono_ms() + 60000;
    /* each asking again is a confirm timeout passed unanswered */
    while (last < first + 2) {
        event_base_loop(base, EVLOOP_ONCE);
        last = ((struct dgroup *)map_get(&p->groups, 2))->confirm_req;
        if (mono_ms() > until)
            fail_msg("the Confirm was never asked again");
    }
    assert_int_equal(count_incidents("deadline_overrun", NULL), over);
    assert_int_equal(count_incidents("killed", NULL), killed);
    assert_int_equal(victim_status(&v), 0);
    gone(p);
    victim_end(&v);
    load_conf("");
}

/* leashd's deadline can be early (its clock read at receipt): the process
   says it is not past it yet, and the step moves to the real deadline. */
static void early_deadline_waits_for_the_real_one(void **state)
{
    (void)state;
    load_conf(KILLING_POLICY);
    size_t       over = count_incidents("deadline_overrun", NULL);
    struct proc *p = hello_pid("svc", 4242, -1);
    ev(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 2, 1, 1);
    ev(p, LEASH__AGENT__EVENT__KIND__TASK_START, 2, 3, 0);
    uint64_t req = await_confirm(p, 2);
    answer(p, req, 2, true, false, 3600000, 1);
    struct dgroup *g = map_get(&p->groups, 2);
    assert_true(g->deadline_mono > mono_ms() + 3500000);
    assert_int_equal(g->confirm_req, 0);
    assert_int_equal(g->next_step, 0);
    assert_int_equal(count_incidents("deadline_overrun", NULL), over);
    gone(p);
    load_conf("");
}

/* Past its deadline with no child left, a group waits only for its opener:
   no step can help, none is taken. */
static void overdue_group_with_no_children_is_left_alone(void **state)
{
    (void)state;
    load_conf(KILLING_POLICY);
    size_t       over = count_incidents("deadline_overrun", NULL);
    struct proc *p = hello_pid("svc", 4242, -1);
    ev(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 2, 1, 1);
    uint64_t req = await_confirm(p, 2);
    answer(p, req, 2, true, true, 0, 0);
    assert_int_equal(count_incidents("deadline_overrun", NULL), over);
    assert_int_equal(((struct dgroup *)map_get(&p->groups, 2))->confirm_req, 0);
    gone(p);
    load_conf("");
}

static void events(struct proc *p, uint64_t seq, uint64_t dropped, Leash__Agent__Event **evs,
                   size_t n)
{
    Leash__Agent__Events e = LEASH__AGENT__EVENTS__INIT;
    e.seq = seq;
    e.dropped = dropped;
    e.events = evs;
    e.n_events = n;
    model_events(p, &e);
}

static void resync(struct proc *p, uint64_t seq, uint64_t dropped, Leash__Agent__Snapshot *s)
{
    Leash__Agent__Resync r = LEASH__AGENT__RESYNC__INIT;
    r.seq = seq;
    r.dropped = dropped;
    r.snapshot = s;
    model_resync(p, &r);
}

/* A gap in the batches or a drop marks the process resyncing; the snapshot
   that follows replaces the model, ghosts and all, and keeps what goes on
   (escalation steps taken, stuck marks). */
static void gaps_and_drops_resync_the_model(void **state)
{
    (void)state;
    size_t       stuck_incidents = count_incidents("stuck_task", NULL);
    struct proc *p = hello_pid("svc", 4242, -1);
    events(p, 1, 0, NULL, 0);
    assert_false(p->resyncing);
    events(p, 3, 0, NULL, 0); /* batch 2 never came */
    assert_true(p->resyncing);
    /* ghosts: groups and tasks whose ends were lost */
    for (uint64_t i = 0; i < 100; i++) {
        ev(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 1000 + i, 1, -1);
        ev(p, LEASH__AGENT__EVENT__KIND__TASK_START, 1000 + i, 5000 + i, 0);
    }
    ev(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 2, 1, -1);
    Leash__Agent__Event st = LEASH__AGENT__EVENT__INIT, *stp = &st;
    st.kind = LEASH__AGENT__EVENT__KIND__STUCK;
    st.group = 2;
    st.task = 3;
    st.op = LEASH__AGENT__OP__OP_CHAN_RECV;
    st.object = "jobs";
    st.since_ms = 200000;
    events(p, 4, 0, &stp, 1);
    assert_int_equal(count_incidents("stuck_task", NULL), stuck_incidents + 1);
    assert_int_equal(p->stuck, 1);

    Leash__Agent__Group    g = LEASH__AGENT__GROUP__INIT, *gp = &g;
    Leash__Agent__Task     t = LEASH__AGENT__TASK__INIT, *tp = &t;
    Leash__Agent__Snapshot s = LEASH__AGENT__SNAPSHOT__INIT;
    g.id = 2;
    g.name = "g";
    g.deadline_ms_left = -1;
    t.id = 3;
    t.group = 2;
    t.op = LEASH__AGENT__OP__OP_CHAN_RECV;
    t.object = "jobs";
    t.since_ms = 200100;
    s.groups = &gp;
    s.n_groups = 1;
    s.tasks = &tp;
    s.n_tasks = 1;
    resync(p, 5, 0, &s);
    assert_false(p->resyncing);
    assert_int_equal(p->groups.n, 1);
    assert_int_equal(p->tasks.n, 1);
    assert_int_equal(p->stuck, 1); /* still the same block: still stuck, no new incident */
    assert_int_equal(count_incidents("stuck_task", NULL), stuck_incidents + 1);

    /* drops the agent reports: resyncing until a snapshot that covers them */
    events(p, 6, 7, NULL, 0);
    assert_true(p->resyncing);
    assert_int_equal(p->dropped, 7);
    Leash__Agent__Heartbeat hb = LEASH__AGENT__HEARTBEAT__INIT;
    hb.dropped = 9;
    model_heartbeat(p, &hb);
    assert_true(p->resyncing);
    resync(p, 7, 9, &s);
    assert_false(p->resyncing);
    assert_int_equal(p->dropped, 9);
    events(p, 8, 9, NULL, 0);
    assert_false(p->resyncing);
    gone(p);
}

/* agent_lost names only tasks the last confirmed state had alive: not the
   ghosts of a model with holes in it. */
static void agent_lost_only_from_a_confirmed_state(void **state)
{
    (void)state;
    size_t       lost = count_incidents("agent_lost", NULL);
    struct proc *p = hello_pid("svc", 4242, -1);
    ev(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 2, 1, -1);
    ev(p, LEASH__AGENT__EVENT__KIND__TASK_START, 2, 3, 0);
    events(p, 5, 0, NULL, 0); /* a gap: 4 batches never came */
    assert_true(p->resyncing);
    gone(p);
    assert_int_equal(count_incidents("agent_lost", NULL), lost);
    p = hello_pid("svc", 4242, -1);
    ev(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 2, 1, -1);
    ev(p, LEASH__AGENT__EVENT__KIND__TASK_START, 2, 3, 0);
    events(p, 1, 0, NULL, 0);
    gone(p);
    assert_int_equal(count_incidents("agent_lost", NULL), lost + 1);
}

/* A task that runs again loses its blocked state and its stuck mark; a
   state for a task that ended does not bring it back. */
static void state_events_follow_the_task(void **state)
{
    (void)state;
    struct proc *p = hello_pid("svc", 4242, -1);
    ev(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 2, 1, -1);
    ev(p, LEASH__AGENT__EVENT__KIND__TASK_START, 2, 3, 0);
    Leash__Agent__Event e = LEASH__AGENT__EVENT__INIT;
    e.kind = LEASH__AGENT__EVENT__KIND__STUCK;
    e.group = 2;
    e.task = 3;
    e.op = LEASH__AGENT__OP__OP_CHAN_RECV;
    e.object = "jobs";
    e.site = "x.c:9";
    e.since_ms = 200000;
    model_event(p, &e);
    uint64_t g, t, s;
    proc_counts(&g, &t, &s);
    assert_int_equal(s, 1);
    struct dtask *x = map_get(&p->tasks, 3);
    assert_string_equal(x->object, "jobs");
    e.kind = LEASH__AGENT__EVENT__KIND__STATE;
    e.op = LEASH__AGENT__OP__OP_RUNNING;
    e.object = "";
    e.since_ms = 5;
    model_event(p, &e);
    proc_counts(&g, &t, &s);
    assert_int_equal(s, 0);
    assert_int_equal(x->op, 0);
    assert_string_equal(x->object, "");
    assert_string_equal(x->bsite, "");
    e.task = 99; /* ended, or never known */
    model_event(p, &e);
    assert_null(map_get(&p->tasks, 99));
    /* a new block after running: a STATE says so, with no stuck mark */
    e.task = 3;
    e.op = LEASH__AGENT__OP__OP_MUTEX;
    e.object = "m";
    model_event(p, &e);
    assert_int_equal(x->op, LEASH__AGENT__OP__OP_MUTEX);
    assert_false(x->stuck);
    gone(p);
}

/* Library reports carry the group they are about, named from the model. */
static void reports_carry_the_real_group(void **state)
{
    (void)state;
    struct proc *p = hello_pid("svc", 4242, -1);
    ev_full(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 7, 1, -1, "requests");
    Leash__Agent__Event e = LEASH__AGENT__EVENT__INIT;
    e.kind = LEASH__AGENT__EVENT__KIND__REPORT;
    e.report_kind = "unwaited_group";
    e.group = 7;
    e.task = 1;
    e.detail = "task 1 returned with group 7 open";
    model_event(p, &e);
    Leash__Control__Incident **l;
    size_t                     n = incidents_list(0, &l);
    assert_int_equal(l[n - 1]->group, 7);
    assert_string_equal(l[n - 1]->group_name, "requests");
    free(l);
    gone(p);
}

/* Names are freed with the last object that uses them. */
static void names_are_freed_with_their_last_user(void **state)
{
    (void)state;
    size_t       before = intern_count();
    struct proc *p = hello_pid("svc", 4242, -1);
    char         name[32];
    for (uint64_t i = 0; i < 20000; i++) {
        snprintf(name, sizeof name, "req-%llu", (unsigned long long)i);
        ev_full(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 10 + i, 1, -1, name);
        ev_full(p, LEASH__AGENT__EVENT__KIND__TASK_START, 10 + i, 100000 + i, 0, name);
        if (i % 2)
            continue; /* half stay until the process goes */
        ev(p, LEASH__AGENT__EVENT__KIND__TASK_END, 10 + i, 100000 + i, 0);
        ev(p, LEASH__AGENT__EVENT__KIND__GROUP_END, 10 + i, 0, 0);
    }
    assert_true(intern_count() >= before + 10000);
    /* the names of the 10000 that ended went while the process lives: only
       the last few, kept unused for the next task of the same name, stay */
    assert_true(intern_count() <= before + 10000 + 16);
    gone(p);
    assert_int_equal(intern_count(), before);
}

/* A silent process is not confirmed wedged: by default a lost heartbeat is
   a report and nothing else; configured steps each make an incident with
   the action taken. */
static void lost_heartbeat_acts_only_as_configured(void **state)
{
    (void)state;
    load_conf("heartbeat_timeout = \"100ms\";\n" KILLING_POLICY);
    struct victim v = victim_new();
    size_t        rep = count_incidents("heartbeat_lost", "report"),
           killed = count_incidents("killed", NULL);
    size_t       cancels = count_incidents("heartbeat_lost", "cancel");
    struct proc *p = hello_pid("svc", v.pid, v.pidfd);
    p->last_msg_mono = mono_ms() - 100000;
    for (int i = 0; i < 5; i++)
        policy_heartbeat_check();
    assert_int_equal(count_incidents("heartbeat_lost", "report"), rep + 1);
    assert_int_equal(count_incidents("heartbeat_lost", "cancel"), cancels);
    assert_int_equal(count_incidents("killed", NULL), killed);
    assert_int_equal(victim_status(&v), 0);
    p->pidfd = -1; /* kept for the next part */
    gone(p);

    load_conf("heartbeat_timeout = \"100ms\";\n"
              "heartbeat_escalate = [ \"report\", \"cancel\", \"kill\" ];\n" KILLING_POLICY);
    p = hello_pid("svc", v.pid, v.pidfd);
    p->last_msg_mono = mono_ms() - 100000;
    policy_heartbeat_check();
    assert_int_equal(count_incidents("heartbeat_lost", "report"), rep + 2);
    assert_int_equal(count_incidents("heartbeat_lost", "cancel"), cancels + 1);
    assert_int_equal(count_incidents("killed", "kill"), killed + 1);
    int     st = 0;
    int64_t until = mono_ms() + 60000;
    while (!(st = victim_status(&v)) && mono_ms() < until)
        event_base_loop(base, EVLOOP_NONBLOCK);
    assert_true(st > 0 && WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
    p->pidfd = -1; /* the victim's, closed below */
    gone(p);
    close(v.pidfd);
    load_conf("");
}

static void heartbeat_escalate_is_checked(void **state)
{
    (void)state;
    char          err[512];
    struct config c;
    assert_int_equal(
        config_load_string(&c, "heartbeat_escalate = [ \"nuke\" ];", "t.conf", err, sizeof err),
        -1);
    assert_non_null(strstr(err, "t.conf:1: key 'heartbeat_escalate'"));
    assert_int_equal(config_load_string(&c, "heartbeat_escalate = [ \"kill@1s\", \"report\" ];",
                                        "t.conf", err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "time order"));
    assert_int_equal(config_load_string(&c, "", "t.conf", err, sizeof err), 0);
    assert_int_equal(c.hb_nsteps, 1);
    assert_int_equal(c.hb_steps[0].action, ACT_REPORT);
    config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ghost_group_is_dropped_not_killed),
        cmocka_unit_test(stale_and_foreign_answers_are_ignored),
        cmocka_unit_test(unanswered_confirm_never_acts),
        cmocka_unit_test(early_deadline_waits_for_the_real_one),
        cmocka_unit_test(overdue_group_with_no_children_is_left_alone),
        cmocka_unit_test(gaps_and_drops_resync_the_model),
        cmocka_unit_test(agent_lost_only_from_a_confirmed_state),
        cmocka_unit_test(state_events_follow_the_task),
        cmocka_unit_test(reports_carry_the_real_group),
        cmocka_unit_test(names_are_freed_with_their_last_user),
        cmocka_unit_test(lost_heartbeat_acts_only_as_configured),
        cmocka_unit_test(heartbeat_escalate_is_checked),
    };
    int rc = cmocka_run_group_tests_name("truth", tests, journal_setup, journal_teardown);
    config_free(&cfg);
    event_base_free(base);
    return rc;
}
