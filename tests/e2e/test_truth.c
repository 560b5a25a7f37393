/*
 * test_truth.c: leashd tells the truth about every process and never acts
 * on a false view: bursts that overflow the agent's ring leave no ghosts
 * and draw no action, a task that runs again is no longer stuck, a stopped
 * process only costs a report, odd names are supervised with valid JSON
 * everywhere, and SIGHUPs from the first moment never kill leashd.
 */
#include "harness.h"

struct proc_io {
    pid_t pid;
    int   in, out; /* its stdin, its stdout */
};

/* Starts truthy MODE [ARG] named name (LEASH_NAME), with TRUTH_NAME =
   tname when given; returns once it said "ready". */
static struct proc_io spawn(const struct daemon *d, const char *name, const char *tname,
                            const char *mode, const char *arg, char *ready, size_t readylen)
{
    int in[2], out[2];
    /* close-on-exec: the next one started must not hold this one's stdin */
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    struct proc_io c = {.pid = fork()};
    if (c.pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        setenv("LEASH_SOCKET", d->agent, 1);
        setenv("LEASH_REPORT", "quiet", 1);
        setenv("LEASH_NAME", name, 1);
        if (tname)
            setenv("TRUTH_NAME", tname, 1);
        execl(TRUTHY_BIN, "truthy", mode, arg, (char *)NULL);
        _exit(127);
    }
    track(c.pid);
    close(in[0]);
    close(out[1]);
    c.in = in[1];
    c.out = out[0];
    char line[64];
    read_line(c.out, line, sizeof line, E2E_WAIT_MS);
    if (strncmp(line, "ready", 5) != 0)
        fail_msg("truthy %s never said ready (said '%s')", mode, line);
    if (ready)
        snprintf(ready, readylen, "%s", line);
    return c;
}

static void step(struct proc_io *c)
{
    assert_int_equal(write(c->in, "\n", 1), 1);
}

/* Ends it by EOF on stdin; its wait status. */
static int finish(struct proc_io *c)
{
    close(c->in);
    struct child ch = {.pid = c->pid, .out = c->out};
    return reap(&ch, E2E_WAIT_MS);
}

/* Runs python3 on leashctl's output: strict JSON (as UTF-8), then expr
   evaluated with d bound to it; the printed result into res. 0: parsed. */
static int json_eval(const char *json, const char *expr, char *res, size_t reslen)
{
    char in[] = "/tmp/leash-truth-json-XXXXXX";
    int  fd = mkstemp(in);
    assert_true(fd >= 0);
    size_t n = strlen(json);
    assert_int_equal(write(fd, json, n), (ssize_t)n);
    close(fd);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import json,sys; d=json.loads(open(sys.argv[1],\"rb\").read()"
             ".decode(\"utf-8\")); print(%s)' %s 2>&1",
             expr, in);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t got = fread(res, 1, reslen - 1, p);
    res[got] = '\0';
    if (got && res[got - 1] == '\n')
        res[got - 1] = '\0';
    int st = pclose(p);
    unlink(in);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

/* Waits until python's expr on `leashctl ARGS --json` prints want. */
static void wait_json(const struct daemon *d, const char *expr, const char *want, const char *a1,
                      const char *a2)
{
    static char out[1 << 20];
    char        res[4096] = "";
    int64_t     until = now_ms() + E2E_WAIT_MS;
    for (;;) {
        ctl_as(d, -1, out, sizeof out, a1, a2 ? a2 : "--json", a2 ? "--json" : NULL, (char *)NULL);
        if (json_eval(out, expr, res, sizeof res) == 0 && !strcmp(res, want))
            return;
        if (now_ms() > until)
            fail_msg("leashctl %s: %s gave '%s', never '%s'", a1, expr, res, want);
        pause_ms(50);
    }
}

static void incidents_of(const struct daemon *d, pid_t pid, char *res, size_t len)
{
    static char out[1 << 20];
    char        expr[256];
    ctl(d, out, "incidents", "--json");
    snprintf(expr, sizeof expr,
             "\",\".join(i[\"kind\"]+\"/\"+i[\"action\"] for i in d if "
             "i[\"pid\"]==%d) or \"none\"",
             (int)pid);
    assert_int_equal(json_eval(out, expr, res, len), 0);
}

/* Every agent_lost verdict on what ended before is in once a process
   killed now has its own: they are decided in order. */
static void verdicts_settle(const struct daemon *d)
{
    struct proc_io m = spawn(d, "marker", NULL, "unblock", NULL, NULL, 0);
    char           expr[128];
    snprintf(expr, sizeof expr, "any(i[\"pid\"]==%d for i in d)", (int)m.pid);
    wait_json(d, "any(True for p in d)", "True", "ps", NULL);
    kill(m.pid, SIGKILL);
    finish(&m);
    wait_json(d, expr, "True", "incidents", NULL);
}

/* Each burst must end well inside its group's 2 s deadline (a group that
   really overran may rightly be acted on). Under a sanitizer, ten bursts of
   100 000 tasks on two CPUs busy with other work can take longer (ASan did,
   with a busy loop on each CPU), so there each is smaller: still far more
   events than the agent's 16 k ring holds while a burst runs. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define BURST_TASKS "20000"
#else
#define BURST_TASKS "100000"
#endif

static void ghost_bursts_in_ten_processes_are_neither_shown_nor_touched(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, "policies = ( { match = \"burst*\"; grace = \"100ms\"; kill_grace = \"500ms\";\n"
                   "  escalate = [ \"report\", \"kill@1s\" ]; } );\n");
    enum { N = 10 };
    struct proc_io c[N];
    char           ready[64], name[16];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "burst%d", i);
        c[i] = spawn(&d, name, NULL, "burst", BURST_TASKS, ready, sizeof ready);
        assert_string_equal(ready, "ready 0");
    }
    for (int i = 0; i < N; i++) {
        char expr[200];
        /* idle, with nothing live: no group, no task but main, a true view */
        snprintf(expr, sizeof expr,
                 "[(p[\"groups\"],p[\"tasks\"]<=1,p[\"resyncing\"]) for p in d if p[\"pid\"]==%d]",
                 (int)c[i].pid);
        wait_json(&d, expr, "[(0, True, False)]", "ps", NULL);
    }
    for (int i = 0; i < N; i++) {
        int st = finish(&c[i]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0); /* never signalled */
    }
    verdicts_settle(&d);
    for (int i = 0; i < N; i++) {
        char res[1024];
        incidents_of(&d, c[i].pid, res, sizeof res);
        assert_string_equal(res, "none");
    }
    daemon_cleanup(&d);
}

/* The ops of a `tasks --json` tree's blocked tasks, as a python list. */
static const char *const blocked = "[t[\"blocked_on\"][\"op\"] for g in d[\"groups\"] "
                                   "for t in g[\"tasks\"] if t[\"blocked_on\"]]";

static void unblocked_task_is_no_longer_stuck(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, "stuck_after = \"500ms\";\nheartbeat_timeout = \"1s\";\n");
    struct proc_io c = spawn(&d, "unblock", NULL, "unblock", NULL, NULL, 0);
    char           expr[200], line[64];
    snprintf(expr, sizeof expr, "[p[\"stuck\"] for p in d if p[\"pid\"]==%d]", (int)c.pid);
    wait_json(&d, expr, "[1]", "ps", NULL);
    wait_json(&d, "d[\"stuck\"]", "1", "status", NULL);
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)c.pid);
    wait_json(&d, blocked, "['chan_recv']", "tasks", pid);
    step(&c); /* served: it runs now */
    read_line(c.out, line, sizeof line, E2E_WAIT_MS);
    assert_string_equal(line, "recv: ok");
    wait_json(&d, expr, "[0]", "ps", NULL);
    wait_json(&d, "d[\"stuck\"]", "0", "status", NULL);
    wait_json(&d, blocked, "[]", "tasks", pid);
    step(&c); /* its group ends: main runs on, waiting for nothing */
    read_line(c.out, line, sizeof line, E2E_WAIT_MS);
    assert_string_equal(line, "ended 0");
    wait_json(&d, blocked, "[]", "tasks", pid);
    char res[1024];
    incidents_of(&d, c.pid, res, sizeof res);
    assert_string_equal(res, "stuck_task/report");
    assert_int_equal(finish(&c), 0);
    daemon_cleanup(&d);
}

/* A task blocked since before leashd last looked is shown blocked within a
   heartbeat or two, not only once it is stuck (stuck_after is an hour here). */
static void blocked_task_is_shown_blocked_before_it_is_stuck(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, "stuck_after = \"1h\";\n");
    struct proc_io c = spawn(&d, "blocks", NULL, "later", NULL, NULL, 0);
    char           pid[16], line[64];
    snprintf(pid, sizeof pid, "%d", (int)c.pid);
    /* leashd has its model (the group came in the Hello or after it) */
    wait_json(&d, "\"serve\" in [g[\"name\"] for g in d[\"groups\"]]", "True", "tasks", pid);
    step(&c); /* only now the task starts, and blocks */
    wait_json(&d, blocked, "['chan_recv']", "tasks", pid);
    step(&c); /* served: it runs again, and is shown so */
    read_line(c.out, line, sizeof line, E2E_WAIT_MS);
    assert_string_equal(line, "recv: ok");
    wait_json(&d, blocked, "[]", "tasks", pid);
    char res[1024];
    incidents_of(&d, c.pid, res, sizeof res);
    assert_string_equal(res, "none");
    assert_int_equal(finish(&c), 0);
    daemon_cleanup(&d);
}

/* A thread that first calls leash after the process connected is a root
   task leashd shows, and stops showing once the thread is gone. */
static void a_late_root_task_comes_and_goes_in_leashds_view(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    struct proc_io c = spawn(&d, "roots", NULL, "roots", NULL, NULL, 0);
    char           pid[16], line[64], listed[128];
    snprintf(pid, sizeof pid, "%d", (int)c.pid);
    snprintf(listed, sizeof listed, "any(p[\"pid\"]==%d for p in d)", (int)c.pid);
    wait_json(&d, listed, "True", "ps", NULL); /* connected before the thread comes */
    const char *late = "[t[\"fn\"] for g in d[\"groups\"] if g[\"id\"]==0 for t in g[\"tasks\"] "
                       "if t[\"fn\"]==\"late-root\"]";
    step(&c);
    read_line(c.out, line, sizeof line, E2E_WAIT_MS);
    assert_string_equal(line, "started");
    wait_json(&d, late, "['late-root']", "tasks", pid);
    step(&c);
    read_line(c.out, line, sizeof line, E2E_WAIT_MS);
    assert_string_equal(line, "joined");
    wait_json(&d, late, "[]", "tasks", pid);
    assert_int_equal(finish(&c), 0);
    daemon_cleanup(&d);
}

/* A report made while no leashd listens is kept and sent once the agent
   connects: an unclosed scope at start-up is an incident all the same. */
static void a_report_made_before_leashd_listens_is_an_incident(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    daemon_stop(&d);
    unlink(d.agent); /* no leashd, and no socket to find */
    struct proc_io c = spawn(&d, "early", NULL, "report", NULL, NULL, 0);
    daemon_start(&d); /* the agent, retrying, connects now */
    char expr[200];
    snprintf(expr, sizeof expr, "[i[\"kind\"] for i in d if i[\"pid\"]==%d]", (int)c.pid);
    wait_json(&d, expr, "['unclosed_scope']", "incidents", NULL);
    assert_int_equal(finish(&c), 0);
    daemon_cleanup(&d);
}

static void stopped_process_costs_only_a_heartbeat_lost_report(void **state)
{
    (void)state;
    struct daemon d;
    /* the default policies and heartbeat_escalate; a short timeout to wait for */
    daemon_new(&d, "heartbeat_timeout = \"1s\";\n");
    struct proc_io c = spawn(&d, "stopped", NULL, "unblock", NULL, NULL, 0);
    char           expr[200], line[64];
    snprintf(expr, sizeof expr, "[p[\"pid\"] for p in d if p[\"pid\"]==%d]", (int)c.pid);
    char want[32];
    snprintf(want, sizeof want, "[%d]", (int)c.pid);
    wait_json(&d, expr, want, "ps", NULL);
    kill(c.pid, SIGSTOP);
    int64_t stopped = now_ms();
    snprintf(expr, sizeof expr, "[i[\"kind\"] for i in d if i[\"pid\"]==%d]", (int)c.pid);
    wait_json(&d, expr, "['heartbeat_lost']", "incidents", NULL);
    while (now_ms() < stopped + 3000) /* 3x heartbeat_timeout, at least */
        pause_ms(100);
    kill(c.pid, SIGCONT);
    step(&c);
    read_line(c.out, line, sizeof line, E2E_WAIT_MS);
    assert_string_equal(line, "recv: ok"); /* not cancelled */
    step(&c);
    read_line(c.out, line, sizeof line, E2E_WAIT_MS);
    assert_string_equal(line, "ended 0");
    int st = finish(&c);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    verdicts_settle(&d);
    char res[1024];
    incidents_of(&d, c.pid, res, sizeof res);
    assert_string_equal(res, "heartbeat_lost/report");
    daemon_cleanup(&d);
}

static void check_all_json(const struct daemon *d, pid_t pid)
{
    static char out[1 << 20];
    char        res[256];
    const char *p = strdup(pidstr(pid));
    const char *cmds[][4] = {
        {"ps", "--json", NULL},       {"status", "--json", NULL},    {"tasks", p, "--json"},
        {"dump", p, "--format=json"}, {"incidents", "--json", NULL},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        assert_int_equal(
            ctl_as(d, -1, out, sizeof out, cmds[i][0], cmds[i][1], cmds[i][2], (char *)NULL), 0);
        if (json_eval(out, "\"ok\"", res, sizeof res) != 0)
            fail_msg("leashctl %s %s: not valid JSON: %s", cmds[i][0], cmds[i][1], res);
    }
    free((void *)p);
}

static void odd_names_are_supervised_and_json_stays_valid(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, "stuck_after = \"300ms\";\nheartbeat_timeout = \"1s\";\n");
    char long_name[256];
    memset(long_name, 'n', 200);
    memcpy(long_name + 61, "\xc3\xa9", 2); /* a 2-byte character across the 63-byte cut */
    long_name[200] = '\0';
    const char *names[][2] = {
        {long_name, long_name},
        {"new\nline\ttab", "group\nwith\x1b[31mcolour"},
        {"bad\xff\xfeutf8", "chan\xc0\xaf\xed\xa0\x80"},
    };
    for (size_t i = 0; i < 3; i++) {
        struct proc_io c = spawn(&d, names[i][0], names[i][1], "names", NULL, NULL, 0);
        char           expr[200];
        /* supervised: listed, and its task seen stuck, with a name that is clean text */
        snprintf(expr, sizeof expr,
                 "[(p[\"stuck\"],len(p[\"name\"].encode())<=63) for p in d "
                 "if p[\"pid\"]==%d]",
                 (int)c.pid);
        wait_json(&d, expr, "[(1, True)]", "ps", NULL);
        snprintf(expr, sizeof expr, "[i[\"kind\"] for i in d if i[\"pid\"]==%d]", (int)c.pid);
        wait_json(&d, expr, "['stuck_task']", "incidents", NULL);
        check_all_json(&d, c.pid);
        int st = finish(&c);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    daemon_cleanup(&d);
}

static void fifty_sighups_from_the_first_moment_never_kill_leashd(void **state)
{
    (void)state;
    for (int round = 0; round < 5; round++) {
        struct daemon d;
        memset(&d, 0, sizeof d);
        snprintf(d.dir, sizeof d.dir, "/tmp/leash-e2e-XXXXXX");
        assert_non_null(mkdtemp(d.dir));
        chmod(d.dir, 0755);
        daemon_paths(&d);
        FILE *f = fopen(d.conf, "w");
        fclose(f);
        d.pid = fork();
        if (d.pid == 0) {
            int fd = open(d.log, O_WRONLY | O_CREAT | O_APPEND, 0644);
            dup2(fd, 2);
            execl(LEASHD_BIN, "leashd", "--config", d.conf, "--agent-socket", d.agent,
                  "--control-socket", d.control, "--state-dir", d.state, (char *)NULL);
            _exit(127);
        }
        track(d.pid);
        struct stat st;
        int64_t     until = now_ms() + E2E_WAIT_MS;
        while (stat(d.control, &st) != 0) { /* the moment it appears */
            int ws;
            if (waitpid(d.pid, &ws, WNOHANG) == d.pid)
                fail_msg("leashd ended before its socket appeared");
            if (now_ms() > until)
                fail_msg("no control socket");
        }
        for (int i = 0; i < 50; i++)
            kill(d.pid, SIGHUP);
        char out[4096];
        assert_int_equal(ctl(&d, out, "status"), 0); /* it answers after them */
        int ws;
        assert_int_equal(waitpid(d.pid, &ws, WNOHANG), 0);
        daemon_cleanup(&d);
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(ghost_bursts_in_ten_processes_are_neither_shown_nor_touched,
                                  teardown),
        cmocka_unit_test_teardown(unblocked_task_is_no_longer_stuck, teardown),
        cmocka_unit_test_teardown(blocked_task_is_shown_blocked_before_it_is_stuck, teardown),
        cmocka_unit_test_teardown(a_late_root_task_comes_and_goes_in_leashds_view, teardown),
        cmocka_unit_test_teardown(a_report_made_before_leashd_listens_is_an_incident, teardown),
        cmocka_unit_test_teardown(stopped_process_costs_only_a_heartbeat_lost_report, teardown),
        cmocka_unit_test_teardown(odd_names_are_supervised_and_json_stays_valid, teardown),
        cmocka_unit_test_teardown(fifty_sighups_from_the_first_moment_never_kill_leashd, teardown),
    };
    return cmocka_run_group_tests_name("truth", tests, NULL, NULL);
}
