/*
 * test_e2e.c: the real leashd, real leashed processes and leashctl's --json
 * output, each test on its own sockets in a temporary directory.
 */
#include "harness.h"

/* ------------------------------------------------------------------ tests */

static void spinning_task_is_killed(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, "policies = ( { match = \"spin\"; grace = \"50ms\"; kill_grace = \"300ms\";\n"
                   "  escalate = [ \"report\", \"cancel\", \"kill@200ms\" ]; } );\n");
    struct child c = leashed(&d, "spin");
    int          st = reap(&c, E2E_WAIT_MS);
    assert_true(WIFSIGNALED(st));
    assert_true(WTERMSIG(st) == SIGTERM || WTERMSIG(st) == SIGKILL);
    char out[65536];
    assert_int_equal(ctl(&d, out, "incidents", "--json"), 0);
    assert_non_null(strstr(out, "\"kind\":\"deadline_overrun\""));
    assert_non_null(strstr(out, "\"kind\":\"killed\""));
    assert_non_null(strstr(out, "\"process\":\"spin\""));
    assert_non_null(strstr(out, "\"action\":\"cancel\""));
    daemon_cleanup(&d);
}

static void foreign_read_is_interrupted(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, "policies = ( { match = \"*\"; grace = \"50ms\";\n"
                   "  escalate = [ \"report\", \"interrupt@100ms\" ]; } );\n");
    struct child c = leashed(&d, "foreign");
    char         line[128];
    read_line(c.out, line, sizeof line, E2E_WAIT_MS);
    assert_string_equal(line, "read: EINTR");
    int st = reap(&c, E2E_WAIT_MS);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char out[65536];
    assert_int_equal(ctl(&d, out, "incidents", "--json"), 0);
    assert_non_null(strstr(out, "\"action\":\"interrupt\""));
    daemon_cleanup(&d);
}

static void dump_shows_parked_tasks_in_every_format(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    struct child c = leashed(&d, "park");
    const char  *pid = strdup(pidstr(c.pid));
    char         out[65536];
    /* the tasks may still be on their way to their blocking calls: wait
       until all four are parked (both receivers, the lock and the sleep) */
    wait_for(&d, "park;group parked;recv_forever;chan_recv e2e.chan 2\n", "dump", pid, "--format",
             "folded");
    wait_for(&d, "\"op\":\"sleep\"", "dump", pid, "--format", "json");
    wait_for(&d, "\"op\":\"mutex\"", "dump", pid, "--format", "json");
    assert_int_equal(ctl(&d, out, "dump", pid, "--format", "json"), 0);
    assert_non_null(strstr(out, "\"name\":\"park\""));
    assert_non_null(strstr(out, "\"name\":\"parked\""));
    assert_non_null(strstr(
        out, "\"op\":\"chan_recv\",\"object\":\"e2e.chan\",\"site\":\"tests/e2e/leashed.c:"));
    assert_non_null(strstr(out, "\"op\":\"mutex\",\"object\":\"e2e.mutex\""));
    assert_non_null(strstr(out, "\"fn\":\"recv_forever\""));
    assert_non_null(strstr(out, "{\"id\":0,\"parent\":null,\"name\":\"root\""));
    assert_int_equal(ctl(&d, out, "dump", pid), 0);
    assert_non_null(strstr(out, "recv_forever [blocked on chan_recv \"e2e.chan\""));
    assert_int_equal(ctl(&d, out, "dump", pid, "--format", "folded"), 0);
    assert_non_null(strstr(out, "park;group parked;recv_forever;chan_recv e2e.chan 2\n"));
    assert_non_null(strstr(out, "park;group parked;nap;sleep 1\n"));
    assert_int_equal(ctl(&d, out, "dump", pid, "--format", "pprof"), 0);
    assert_int_equal((unsigned char)out[0], 0x1f); /* gzip */
    assert_int_equal((unsigned char)out[1], 0x8b);
    /* and what leashd itself holds */
    wait_for(&d, "\"fn\":\"nap\"", "tasks", pid, "--json");
    assert_int_equal(ctl(&d, out, "ps", "--json"), 0);
    char want[64];
    snprintf(want, sizeof want, "{\"pid\":%s,\"name\":\"park\"", pid);
    assert_non_null(strstr(out, want));
    assert_int_equal(ctl(&d, out, "dump", "999999"), 1);
    assert_non_null(strstr(out, "no leashed process 999999"));
    kill_child(&c);
    free((void *)pid);
    daemon_cleanup(&d);
}

static void stuck_task_becomes_an_incident(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, "stuck_after = \"300ms\";\n");
    struct child c = leashed(&d, "stuck");
    wait_for(&d, "\"kind\":\"stuck_task\"", "incidents", "--json", NULL);
    char out[65536];
    assert_int_equal(ctl(&d, out, "incidents", "--json"), 0);
    assert_non_null(strstr(out, "blocked on chan_recv \\\"e2e.chan\\\""));
    assert_int_equal(ctl(&d, out, "ps", "--json"), 0);
    assert_non_null(strstr(out, "\"stuck\":1"));
    kill_child(&c);
    daemon_cleanup(&d);
}

static void cancel_reaches_the_group(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    struct child c = leashed(&d, "cancel");
    char         out[65536], group[32] = "";
    /* the group, not the process (which is called "cancel" too) */
    wait_for(&d, "\"parent\":0,\"name\":\"cancel\"", "tasks", pidstr(c.pid), "--json");
    assert_int_equal(ctl(&d, out, "tasks", pidstr(c.pid), "--json"), 0);
    const char *g = strstr(out, "\"parent\":0,\"name\":\"cancel\"");
    assert_non_null(g);
    /* the group object starts with its id: {"id":N,"parent":0,"name":"cancel" */
    const char *id = g;
    while (id > out && strncmp(id, "{\"id\":", 6))
        id--;
    snprintf(group, sizeof group, "%lld", atoll(id + 6));
    /* a group it does not have, while the process is surely there (once
       cancelled, it ends) */
    assert_int_equal(ctl(&d, out, "cancel", pidstr(c.pid), "424242"), 1);
    assert_non_null(strstr(out, "has no group 424242"));
    assert_int_equal(ctl(&d, out, "cancel", pidstr(c.pid), group), 0);
    char line[128];
    read_line(c.out, line, sizeof line, E2E_WAIT_MS);
    assert_string_equal(line, "recv: ECANCELED");
    kill_child(&c);
    daemon_cleanup(&d);
}

static void leashd_killed_and_restarted_keeps_journal_and_agents(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, "stuck_after = \"200ms\";\n");
    struct child c = leashed(&d, "stuck");
    wait_for(&d, "\"kind\":\"stuck_task\"", "incidents", "--json", NULL);
    kill(d.pid, SIGKILL);
    waitpid(d.pid, NULL, 0);
    d.pid = 0;
    daemon_start(&d); /* same socket (stale now) and state dir */
    char out[65536];
    assert_int_equal(ctl(&d, out, "incidents", "--json"), 0);
    assert_non_null(strstr(out, "\"kind\":\"stuck_task\"")); /* from the journal */
    char want[64];
    snprintf(want, sizeof want, "{\"pid\":%d,\"name\":\"stuck\"", (int)c.pid);
    wait_for(&d, want, "ps", "--json", NULL); /* the agent came back */
    wait_for(&d, "\"fn\":\"recv_forever\"", "tasks", pidstr(c.pid), "--json");
    kill_child(&c);
    daemon_cleanup(&d);
}

static int raw_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* True when leashd closes fd within a few seconds. */
static bool closed_by_peer(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, E2E_WAIT_MS) != 1)
        return false;
    char b[64];
    return read(fd, b, sizeof b) == 0;
}

static void garbage_and_oversized_frames_drop_only_that_peer(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, "max_frame = 4096;\n");
    struct child c = leashed(&d, "park");
    wait_connected(&d, &c, "park");
    int           g = raw_connect(d.agent);
    const uint8_t junk[] = {0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(write(g, junk, sizeof junk), (ssize_t)sizeof junk);
    assert_true(closed_by_peer(g));
    close(g);
    int           o = raw_connect(d.agent);
    const uint8_t big[] = {0, 1, 0, 0}; /* 65536 bytes announced */
    assert_int_equal(write(o, big, sizeof big), (ssize_t)sizeof big);
    assert_true(closed_by_peer(o));
    close(o);
    int           h = raw_connect(d.agent); /* a valid frame of the wrong kind first */
    const uint8_t beat[] = {0, 0, 0, 4, 0x1a, 0x02, 0x08, 0x01}; /* Heartbeat{seq=1} */
    assert_int_equal(write(h, beat, sizeof beat), (ssize_t)sizeof beat);
    assert_true(closed_by_peer(h));
    close(h);
    char out[65536];
    char want[64];
    snprintf(want, sizeof want, "{\"pid\":%d,\"name\":\"park\"", (int)c.pid);
    assert_int_equal(ctl(&d, out, "ps", "--json"), 0);
    assert_non_null(strstr(out, want)); /* the well-behaved agent is untouched */
    FILE  *f = fopen(d.log, "r");
    char   log[65536] = "";
    size_t n = fread(log, 1, sizeof log - 1, f);
    log[n] = '\0';
    fclose(f);
    assert_non_null(strstr(log, "over max_frame 4096"));
    assert_non_null(strstr(log, "bad message"));
    kill_child(&c);
    daemon_cleanup(&d);
}

static void agent_killed_with_sigkill_is_agent_lost(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    struct child c = leashed(&d, "park");
    /* leashd knows all four tasks before the process dies */
    wait_for(&d, "\"fn\":\"nap\"", "tasks", pidstr(c.pid), "--json");
    wait_for(&d, "\"fn\":\"lock_wait\"", "tasks", pidstr(c.pid), "--json");
    wait_for_n(&d, "\"fn\":\"recv_forever\"", 2, "tasks", pidstr(c.pid), "--json");
    kill_child(&c);
    wait_for(&d, "\"kind\":\"agent_lost\"", "incidents", "--json", NULL);
    char out[65536];
    assert_int_equal(ctl(&d, out, "incidents", "--json"), 0);
    assert_non_null(strstr(out, "process exited with 4 live tasks"));
    daemon_cleanup(&d);
}

static void non_admin_sees_only_its_own_and_changes_nothing(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip(); /* needs to run leashctl as another uid */
    struct daemon d;
    daemon_new(&d, "admin_uids = [ 0 ];\n");
    struct child c = leashed(&d, "park");
    wait_connected(&d, &c, "park"); /* so that "belongs to uid 0" can be said */
    char out[65536], copy[160], cmd[400];
    snprintf(copy, sizeof copy, "%s/leashctl", d.dir);
    snprintf(cmd, sizeof cmd, "cp %s %s && chmod 755 %s", LEASHCTL_BIN, copy, copy);
    assert_int_equal(system(cmd), 0);
    ctl_bin = copy;
    assert_int_equal(ctl_as(&d, 65534, out, sizeof out, "kill", pidstr(c.pid), (char *)NULL), 1);
    assert_non_null(strstr(out, "kill needs an admin uid"));
    assert_int_equal(ctl_as(&d, 65534, out, sizeof out, "tasks", pidstr(c.pid), (char *)NULL), 1);
    assert_non_null(strstr(out, "belongs to uid 0"));
    assert_int_equal(ctl_as(&d, 65534, out, sizeof out, "reload", (char *)NULL), 1);
    assert_non_null(strstr(out, "needs an admin uid"));
    assert_int_equal(ctl_as(&d, 65534, out, sizeof out, "ps", "--json", (char *)NULL), 0);
    assert_string_equal(out, "[]\n");
    assert_int_equal(kill(c.pid, 0), 0); /* still alive */
    ctl_bin = LEASHCTL_BIN;
    kill_child(&c);
    daemon_cleanup(&d);
}

static void bad_config_is_refused_with_file_line_and_key(void **state)
{
    (void)state;
    char dir[] = "/tmp/leash-conf-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], cmd[512];
    snprintf(path, sizeof path, "%s/bad.conf", dir);
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"heartbeat_timeout = \"5x\";\n", ":1: key 'heartbeat_timeout': bad duration \"5x\""},
        {"\n\nfrobnicate = 1;\n", ":3: key 'frobnicate': unknown key"},
        {"policies = ( { match = \"*\"; escalate = [ \"explode\" ]; } );\n",
         "unknown action \"explode\""},
        {"max_frame = 12;\n", "key 'max_frame': 12 is out of range"},
        {"agent_socket = \"relative\";\n", "key 'agent_socket': must be an absolute path"},
        {"stuck_after = ;\n", ":1: syntax error"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(path, "w");
        fputs(cases[i].text, f);
        fclose(f);
        snprintf(cmd, sizeof cmd, "%s --check-config --config %s 2>&1", LEASHD_BIN, path);
        FILE  *p = popen(cmd, "r");
        char   out[1024] = "";
        size_t n = fread(out, 1, sizeof out - 1, p);
        out[n] = '\0';
        int st = pclose(p);
        assert_int_equal(WEXITSTATUS(st), 1);
        if (!strstr(out, cases[i].want) || !strstr(out, path))
            fail_msg("case %zu: '%s' lacks '%s'", i, out, cases[i].want);
    }
    /* what listening would refuse is refused by --check-config already */
    static const struct {
        const char *args, *want;
    } sockets[] = {
        {"--agent-socket /tmp/same.sock --control-socket /tmp/same.sock",
         "/tmp/same.sock: the agent and the control socket cannot be one path"},
        {"--agent-socket /tmp/a-path-of-a-hundred-and-ten-bytes-which-no-unix-socket-"
         "address-has-room-for-0123456789012345678901.sock",
         "path too long for a socket (107 bytes at most)"},
    };
    for (size_t i = 0; i < sizeof sockets / sizeof sockets[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s --check-config %s 2>&1", LEASHD_BIN, sockets[i].args);
        FILE  *p = popen(cmd, "r");
        char   out[1024] = "";
        size_t n = fread(out, 1, sizeof out - 1, p);
        out[n] = '\0';
        assert_int_equal(WEXITSTATUS(pclose(p)), 1);
        if (!strstr(out, sockets[i].want))
            fail_msg("sockets %zu: '%s' lacks '%s'", i, out, sockets[i].want);
    }
    FILE *f = fopen(path, "w");
    fputs("heartbeat_timeout = \"2s\";\npolicies = ( { match = \"web-*\"; grace = \"1s\";\n"
          "  escalate = [ \"report\", \"kill@5s\" ]; } );\n",
          f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s --check-config --config %s >/dev/null 2>&1", LEASHD_BIN, path);
    assert_int_equal(WEXITSTATUS(system(cmd)), 0);
    snprintf(cmd, sizeof cmd, "%s --check-config --config %s/../config/leashd.conf >/dev/null 2>&1",
             LEASHD_BIN, SOURCE_DIR "/tests");
    assert_int_equal(WEXITSTATUS(system(cmd)), 0); /* the shipped example */
    snprintf(cmd, sizeof cmd, "%s --bogus >/dev/null 2>&1", LEASHD_BIN);
    assert_int_equal(WEXITSTATUS(system(cmd)), 2);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void leashctl_says_clearly_what_is_wrong(void **state)
{
    (void)state;
    struct daemon d = {0};
    snprintf(d.control, sizeof d.control, "/tmp/leash-none-%d/control.sock", (int)getpid());
    char out[4096];
    assert_int_equal(ctl(&d, out, "ps"), 1);
    assert_non_null(strstr(out, "no leashd at /tmp/leash-none-"));
    assert_int_equal(ctl(&d, out, "frobnicate"), 2);
    assert_non_null(strstr(out, "unknown command 'frobnicate'"));
    assert_int_equal(ctl(&d, out, "dump"), 2);
    assert_int_equal(ctl(&d, out, "dump", "12", "--format", "svg"), 2);
    assert_int_equal(ctl(&d, out, "cancel", "12", "x"), 2);
    assert_int_equal(ctl(&d, out, "incidents", "--since", "yesterday"), 2);
}

static void sighup_reload_keeps_running_config_on_error(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, "stuck_after = \"10s\";\n");
    FILE *f = fopen(d.conf, "w");
    fputs("stuck_after = \"ten\";\n", f);
    fclose(f);
    kill(d.pid, SIGHUP);
    char    out[65536];
    int64_t until = now_ms() + E2E_WAIT_MS;
    for (;;) { /* leashd says so in its log */
        FILE  *l = fopen(d.log, "r");
        size_t n = fread(out, 1, sizeof out - 1, l);
        out[n] = '\0';
        fclose(l);
        if (strstr(out, "reload failed, the running config stays"))
            break;
        assert_true(now_ms() < until);
        pause_ms(20);
    }
    assert_int_equal(ctl(&d, out, "status", "--json"), 0); /* still serving */
    assert_int_equal(ctl(&d, out, "reload"), 1);
    assert_non_null(strstr(out, "bad duration \"ten\""));
    f = fopen(d.conf, "w");
    fputs("stuck_after = \"20s\";\n", f);
    fclose(f);
    assert_int_equal(ctl(&d, out, "reload"), 0);
    assert_int_equal(WEXITSTATUS(daemon_stop(&d)), 0); /* SIGTERM: a clean exit */
    assert_false(connectable(d.control));
    struct stat st;
    assert_int_not_equal(stat(d.control, &st), 0); /* socket removed */
    daemon_cleanup(&d);
}

static void metrics_are_served_in_prometheus_text(void **state)
{
    (void)state;
    struct daemon d;
    int           port = free_port();
    char          conf[128];
    snprintf(conf, sizeof conf, "metrics_listen = \"127.0.0.1:%d\";\n", port);
    daemon_new(&d, conf);
    struct child c = leashed(&d, "park");
    wait_for(&d, "\"fn\":\"nap\"", "tasks", pidstr(c.pid), "--json");
    char out[16384];
    http_get(port, "/metrics", out, sizeof out);
    assert_non_null(strstr(out, "200 OK"));
    assert_non_null(strstr(out, "leashd_processes 1\n"));
    assert_non_null(strstr(out, "# TYPE leashd_tasks gauge"));
    assert_non_null(strstr(out, "leashd_incidents_total{kind=\"killed\"} 0"));
    kill_child(&c);
    daemon_cleanup(&d);
}

static void stopped_process_is_a_lost_heartbeat(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, "heartbeat_timeout = \"400ms\";\n"
                   "policies = ( { match = \"*\"; escalate = [ \"report\" ]; } );\n");
    struct child c = leashed(&d, "park");
    char         want[64];
    snprintf(want, sizeof want, "{\"pid\":%d,\"name\":\"park\"", (int)c.pid);
    wait_for(&d, want, "ps", "--json");
    kill(c.pid, SIGSTOP); /* wedged as a whole: the agent thread stops too */
    wait_for(&d, "\"kind\":\"heartbeat_lost\"", "incidents", "--json");
    kill(c.pid, SIGCONT);
    kill_child(&c);
    daemon_cleanup(&d);
}

static void incidents_can_be_followed(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, "stuck_after = \"300ms\";\n");
    int p[2];
    follow_incidents(&d, true, NULL, &p[0]);
    struct child c = leashed(&d, "stuck");
    char         line[4096];
    read_line(p[0], line, sizeof line, E2E_WAIT_MS); /* one JSON object a line, as it happens */
    assert_non_null(strstr(line, "\"kind\":\"stuck_task\""));
    assert_int_equal(line[0], '{');
    close(p[0]);
    kill_child(&c);
    daemon_cleanup(&d);
}

static void systemd_is_told_ready_and_fed_the_watchdog(void **state)
{
    (void)state;
    char dir[] = "/tmp/leash-notify-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/notify", dir);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    setenv("NOTIFY_SOCKET", sa.sun_path, 1);
    setenv("WATCHDOG_USEC", "100000", 1);
    struct daemon d;
    daemon_new(&d, NULL);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    bool    ready = false, watchdog = false;
    int64_t until = now_ms() + E2E_WAIT_MS;
    while ((!ready || !watchdog) && now_ms() < until) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) != 1)
            continue;
        char    msg[256];
        ssize_t n = recv(fd, msg, sizeof msg - 1, 0);
        if (n <= 0)
            continue;
        msg[n] = '\0';
        ready |= strstr(msg, "READY=1") != NULL;
        watchdog |= strstr(msg, "WATCHDOG=1") != NULL;
    }
    assert_true(ready);
    assert_true(watchdog);
    close(fd);
    daemon_cleanup(&d);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(spinning_task_is_killed, teardown),
        cmocka_unit_test_teardown(foreign_read_is_interrupted, teardown),
        cmocka_unit_test_teardown(dump_shows_parked_tasks_in_every_format, teardown),
        cmocka_unit_test_teardown(stuck_task_becomes_an_incident, teardown),
        cmocka_unit_test_teardown(cancel_reaches_the_group, teardown),
        cmocka_unit_test_teardown(leashd_killed_and_restarted_keeps_journal_and_agents, teardown),
        cmocka_unit_test_teardown(garbage_and_oversized_frames_drop_only_that_peer, teardown),
        cmocka_unit_test_teardown(agent_killed_with_sigkill_is_agent_lost, teardown),
        cmocka_unit_test_teardown(non_admin_sees_only_its_own_and_changes_nothing, teardown),
        cmocka_unit_test_teardown(bad_config_is_refused_with_file_line_and_key, teardown),
        cmocka_unit_test_teardown(leashctl_says_clearly_what_is_wrong, teardown),
        cmocka_unit_test_teardown(sighup_reload_keeps_running_config_on_error, teardown),
        cmocka_unit_test_teardown(metrics_are_served_in_prometheus_text, teardown),
        cmocka_unit_test_teardown(systemd_is_told_ready_and_fed_the_watchdog, teardown),
        cmocka_unit_test_teardown(stopped_process_is_a_lost_heartbeat, teardown),
        cmocka_unit_test_teardown(incidents_can_be_followed, teardown),
    };
    return cmocka_run_group_tests_name("e2e", tests, NULL, NULL);
}
