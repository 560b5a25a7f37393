/* test_model.c: the model, the escalation policy and the incident journal. */
#include "stubs.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static struct proc *hello(const char *name)
{
    struct proc        *p = proc_new(-1, 4242, 1000, -1);
    Leash__Agent__Hello h = LEASH__AGENT__HELLO__INIT;
    h.version = 1;
    h.name = (char *)name;
    model_hello(p, &h);
    return p;
}

static void ev(struct proc *p, int kind, uint64_t group, uint64_t task, int64_t deadline)
{
    Leash__Agent__Event e = LEASH__AGENT__EVENT__INIT;
    e.kind = kind;
    e.group = group;
    e.task = task;
    e.deadline_ms_left = deadline;
    e.name = "g";
    e.fn = "f";
    e.site = "x.c:1";
    model_event(p, &e);
}

/* Ends p as a lost connection does, and runs the loop until the
   agent_lost verdict (due a moment later) is in. */
static void gone(struct proc *p)
{
    model_gone(p, "test");
    proc_unref(p);
    event_base_dispatch(base);
}

static void events_build_and_unbuild_the_tree(void **state)
{
    (void)state;
    struct proc *p = hello("svc");
    ev(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 2, 1, -1);
    ev(p, LEASH__AGENT__EVENT__KIND__TASK_START, 2, 3, 0);
    ev(p, LEASH__AGENT__EVENT__KIND__TASK_START, 2, 3,
       0); /* the snapshot's and the queue's: once */
    ev(p, LEASH__AGENT__EVENT__KIND__TASK_START, 2, 4, 0);
    uint64_t g, t, s;
    proc_counts(&g, &t, &s);
    assert_int_equal(g, 1);
    assert_int_equal(t, 2);
    ev(p, LEASH__AGENT__EVENT__KIND__TASK_END, 2, 3, 0);
    ev(p, LEASH__AGENT__EVENT__KIND__TASK_END, 2, 99, 0); /* unknown: ignored */
    proc_counts(&g, &t, &s);
    assert_int_equal(t, 1);
    Leash__Agent__Snapshot *snap = model_snapshot(p);
    assert_int_equal(snap->n_groups, 1);
    assert_int_equal(snap->n_tasks, 1);
    assert_int_equal(snap->tasks[0]->id, 4);
    assert_string_equal(snap->tasks[0]->fn, "f");
    snapshot_free(snap);
    ev(p, LEASH__AGENT__EVENT__KIND__TASK_END, 2, 4, 0);
    ev(p, LEASH__AGENT__EVENT__KIND__GROUP_END, 2, 0, 0);
    proc_counts(&g, &t, &s);
    assert_int_equal(g + t, 0);
    assert_ptr_equal(proc_by_pid(4242), p);
    gone(p);
    assert_null(proc_by_pid(4242));
}

static void stuck_without_deadline_is_an_incident_once(void **state)
{
    (void)state;
    size_t       before = count_incidents("stuck_task", NULL);
    struct proc *p = hello("svc");
    ev(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 2, 1, -1);
    ev(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 5, 1, 60000);
    Leash__Agent__Event e = LEASH__AGENT__EVENT__INIT;
    e.kind = LEASH__AGENT__EVENT__KIND__STUCK;
    e.group = 2;
    e.task = 3;
    e.op = LEASH__AGENT__OP__OP_CHAN_RECV;
    e.object = "jobs";
    e.since_ms = 200000;
    model_event(p, &e);
    model_event(p, &e); /* the same task again: not a second incident */
    e.group = 5;        /* a task in a group with a deadline is the deadline's business */
    e.task = 6;
    model_event(p, &e);
    assert_int_equal(count_incidents("stuck_task", NULL), before + 1);
    assert_int_equal(p->stuck, 2);
    gone(p);
}

static void library_reports_become_incidents(void **state)
{
    (void)state;
    size_t              before = count_incidents("lock_cycle", NULL);
    struct proc        *p = hello("svc");
    Leash__Agent__Event e = LEASH__AGENT__EVENT__INIT;
    e.kind = LEASH__AGENT__EVENT__KIND__REPORT;
    e.report_kind = "lock_cycle";
    e.detail = "task 3 waits for task 4";
    model_event(p, &e);
    assert_int_equal(count_incidents("lock_cycle", NULL), before + 1);
    gone(p);
}

static void tasks_an_agent_folded_are_counted_within_a_rate_and_never_wrap(void **state)
{
    (void)state;
    struct proc         *p = hello("svc");
    uint64_t             seen = stat_tasks_folded;
    Leash__Agent__Events es = LEASH__AGENT__EVENTS__INIT;
    Leash__Agent__Event  e = LEASH__AGENT__EVENT__INIT, *ep = &e;
    e.kind = LEASH__AGENT__EVENT__KIND__TASK_START;
    e.group = 1;
    e.task = 40;
    es.events = &ep;
    es.n_events = 1;
    es.seq = 1;
    es.folded = 1000;
    model_events(p, &es);
    assert_int_equal(stat_tasks_folded - seen, 1000);
    assert_int_equal(p->tasks.n, 1); /* the batch's events count as ever */
    /* A hostile count: no more than a billion a second since the agent's
       last Events is taken, so one process cannot pin the daemon-wide
       total at its top, and the honest counts after it still show. */
    es.seq = 2;
    es.n_events = 0;
    es.folded = UINT64_MAX;
    p->folded_mono = model_now() - 10; /* its last Events, 10 ms ago */
    seen = stat_tasks_folded;
    model_events(p, &es);
    uint64_t taken = stat_tasks_folded - seen;
    if (taken < 11 * 1000000ull || taken > 1000 * 1000000ull)
        fail_msg("%llu of a claimed 2^64 - 1 taken after 10 ms", (unsigned long long)taken);
    es.seq = 3;
    es.folded = 5;
    model_events(p, &es);
    assert_int_equal(stat_tasks_folded - seen, taken + 5);
    /* and the total saturates rather than wrap */
    stat_tasks_folded = UINT64_MAX - 3;
    es.seq = 4;
    model_events(p, &es);
    assert_true(stat_tasks_folded == UINT64_MAX);
    stat_tasks_folded = seen;
    gone(p);
}

static void supervisor_restarts_are_kept_per_group_and_process(void **state)
{
    (void)state;
    size_t              before = count_incidents("restart_limit", NULL);
    uint64_t            seen = stat_restarts;
    struct proc        *p = hello("svc");
    Leash__Agent__Event e = LEASH__AGENT__EVENT__INIT;
    e.kind = LEASH__AGENT__EVENT__KIND__GROUP_OPEN;
    e.group = 2;
    e.deadline_ms_left = -1;
    e.name = "server";
    e.strategy = "rest_for_one";
    model_event(p, &e);
    ev(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 5, 1, -1); /* an ordinary group */
    for (uint64_t i = 1; i <= 3; i++) {
        leash__agent__event__init(&e);
        e.kind = LEASH__AGENT__EVENT__KIND__RESTART;
        e.group = 2;
        e.task = 10 + i;
        e.fn = "worker";
        e.strategy = "rest_for_one";
        e.restarts = i;
        e.backoff_ms = 20 * (int64_t)i;
        model_event(p, &e);
    }
    e.group = 77; /* a group leashd never saw: the process still counts it */
    e.restarts = 1;
    model_event(p, &e);
    assert_int_equal(p->restarts, 4);
    assert_int_equal(stat_restarts - seen, 4);
    Leash__Agent__Snapshot *snap = model_snapshot(p);
    assert_int_equal(snap->n_groups, 2);
    for (size_t i = 0; i < snap->n_groups; i++) {
        const Leash__Agent__Group *g = snap->groups[i];
        if (g->id == 2) {
            assert_string_equal(g->strategy, "rest_for_one");
            assert_int_equal(g->restarts, 3);
            assert_int_equal(g->backoff_ms, 60);
        } else {
            assert_string_equal(g->strategy, "");
            assert_int_equal(g->restarts, 0);
        }
    }
    snapshot_free(snap);
    /* the supervisor gives up: its report is an incident */
    leash__agent__event__init(&e);
    e.kind = LEASH__AGENT__EVENT__KIND__REPORT;
    e.report_kind = "restart_limit";
    e.detail = "supervisor 2 \"server\" gave up";
    model_event(p, &e);
    assert_int_equal(count_incidents("restart_limit", NULL), before + 1);
    ev(p, LEASH__AGENT__EVENT__KIND__GROUP_END, 2, 0, 0);
    assert_int_equal(p->restarts, 4); /* the process keeps its count */
    gone(p);
}

static void a_hello_brings_the_restarts_of_live_supervisors(void **state)
{
    (void)state;
    Leash__Agent__Group g = LEASH__AGENT__GROUP__INIT, *gp = &g;
    g.id = 2;
    g.name = "server";
    g.deadline_ms_left = -1;
    g.strategy = "one_for_one";
    g.restarts = 5;
    g.backoff_ms = 80;
    Leash__Agent__Snapshot s = LEASH__AGENT__SNAPSHOT__INIT;
    s.n_groups = 1;
    s.groups = &gp;
    struct proc        *p = proc_new(-1, 4242, 1000, -1);
    Leash__Agent__Hello h = LEASH__AGENT__HELLO__INIT;
    h.version = 1;
    h.name = "svc";
    h.snapshot = &s;
    model_hello(p, &h);
    assert_int_equal(p->restarts, 5);
    struct dgroup *d = map_get(&p->groups, 2);
    assert_non_null(d);
    assert_string_equal(d->strategy, "one_for_one");
    assert_int_equal(d->restarts, 5);
    gone(p);
}

static void overrun_escalates_step_by_step(void **state)
{
    (void)state;
    load_conf("policies = ( { match = \"svc\"; grace = \"10ms\"; kill_grace = \"50ms\";\n"
              "  escalate = [ \"report\", \"cancel@20ms\", \"kill@40ms\" ]; } );\n");
    pid_t child = fork();
    if (child == 0) {
        pause();
        _exit(0);
    }
    int pidfd = (int)syscall(SYS_pidfd_open, child, 0);
    assert_true(pidfd >= 0);
    size_t over = count_incidents("deadline_overrun", NULL),
           killed = count_incidents("killed", NULL);
    struct proc        *p = proc_new(-1, child, 1000, pidfd);
    Leash__Agent__Hello h = LEASH__AGENT__HELLO__INIT;
    h.version = 1;
    h.name = "svc";
    model_hello(p, &h);
    ev(p, LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 2, 1, 5); /* deadline in 5 ms */
    ev(p, LEASH__AGENT__EVENT__KIND__TASK_START, 2, 3, 0);
    int     st = 0;
    int64_t until = mono_ms() + 60000; /* only a hang takes this long */
    while (waitpid(child, &st, WNOHANG) == 0) {
        if (mono_ms() > until) {
            kill(child, SIGKILL);
            waitpid(child, NULL, 0);
            fail_msg("the policy never killed the overrunning process");
        }
        event_base_loop(base, EVLOOP_ONCE);
        /* each step waits for the process to confirm: it does */
        struct dgroup *g = map_get(&p->groups, 2);
        if (g && g->confirm_req) {
            Leash__Agent__ConfirmReply r = LEASH__AGENT__CONFIRM_REPLY__INIT;
            r.request = g->confirm_req;
            r.group = 2;
            r.alive = r.overdue = true;
            r.tasks = 1;
            policy_confirmed(p, &r);
        }
    }
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
    assert_int_equal(count_incidents("deadline_overrun", NULL), over + 2); /* report, cancel */
    assert_int_equal(count_incidents("killed", NULL), killed + 1);
    gone(p);
    event_base_loop(base, EVLOOP_NONBLOCK);
    load_conf("");
}

static void silent_agent_is_a_lost_heartbeat(void **state)
{
    (void)state;
    load_conf("heartbeat_timeout = \"100ms\";\n"
              "policies = ( { match = \"*\"; escalate = [ \"report\" ]; } );\n");
    size_t       before = count_incidents("heartbeat_lost", NULL);
    struct proc *p = hello("svc");
    policy_heartbeat_check();
    assert_int_equal(count_incidents("heartbeat_lost", NULL), before);
    p->last_msg_mono = mono_ms() - 1000;
    policy_heartbeat_check();
    policy_heartbeat_check(); /* once per silence */
    assert_int_equal(count_incidents("heartbeat_lost", NULL), before + 1);
    assert_true(p->hb_lost);
    p->last_msg_mono = mono_ms();
    policy_heartbeat_check();
    assert_false(p->hb_lost);
    gone(p);
    load_conf("");
}

static void journal_survives_and_tolerates_a_torn_record(void **state)
{
    (void)state;
    struct proc *p = hello("journaled");
    incident(p, "killed", 0, NULL, 0, "kill", "first");
    incident(p, "agent_lost", 0, NULL, 0, "report", "second");
    size_t n_before = count_incidents("killed", NULL) + count_incidents("agent_lost", NULL);
    gone(p);
    event_base_loop(base, EVLOOP_NONBLOCK);
    incidents_close();
    char path[128];
    snprintf(path, sizeof path, "%s/incidents.journal", journal_dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    off_t         good = st.st_size;
    int           fd = open(path, O_WRONLY | O_APPEND);
    const uint8_t torn[] = {0, 0, 1, 0, 0x08, 0x07}; /* announces 256 bytes, has 2 */
    assert_int_equal(write(fd, torn, sizeof torn), (ssize_t)sizeof torn);
    close(fd);
    char err[512];
    assert_int_equal(incidents_open(journal_dir, err, sizeof err), 0);
    assert_int_equal(count_incidents("killed", NULL) + count_incidents("agent_lost", NULL),
                     n_before);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, good); /* cut back to the last whole record */
    Leash__Control__Incident **l;
    size_t                     n = incidents_list(0, &l);
    assert_string_equal(l[n - 1]->detail, "second");
    assert_string_equal(l[n - 1]->process, "journaled");
    uint64_t last = l[n - 1]->id;
    free(l);
    incident(NULL, "killed", 0, NULL, 0, "kill", "third");
    n = incidents_list(0, &l);
    assert_int_equal(l[n - 1]->id, last + 1); /* ids go on from the journal */
    free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(events_build_and_unbuild_the_tree),
        cmocka_unit_test(stuck_without_deadline_is_an_incident_once),
        cmocka_unit_test(library_reports_become_incidents),
        cmocka_unit_test(tasks_an_agent_folded_are_counted_within_a_rate_and_never_wrap),
        cmocka_unit_test(supervisor_restarts_are_kept_per_group_and_process),
        cmocka_unit_test(a_hello_brings_the_restarts_of_live_supervisors),
        cmocka_unit_test(overrun_escalates_step_by_step),
        cmocka_unit_test(silent_agent_is_a_lost_heartbeat),
        cmocka_unit_test(journal_survives_and_tolerates_a_torn_record),
    };
    int rc = cmocka_run_group_tests_name("model", tests, journal_setup, journal_teardown);
    config_free(&cfg);
    event_base_free(base);
    return rc;
}
