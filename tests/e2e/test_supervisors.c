/*
 * test_supervisors.c: leashd and leashctl see what supervisors do: restarts
 * per process in `ps`, per group (with the strategy) in `tasks`, the
 * giving up as a restart_limit incident, and leashd_restarts_total.
 */
#include "harness.h"

static void restarts_and_the_restart_limit_reach_leashd_and_leashctl(void **state)
{
    (void)state;
    struct daemon d;
    int           port = free_port();
    char          conf[128];
    snprintf(conf, sizeof conf, "metrics_listen = \"127.0.0.1:%d\";\n", port);
    daemon_new(&d, conf);
    struct child c = leashed(&d, "supervise");
    wait_connected(&d, &c, "supervise");
    char out[65536];
    http_get(port, "/metrics", out, sizeof out);
    assert_non_null(strstr(out, "# TYPE leashd_restarts_total counter\nleashd_restarts_total 0\n"));
    /* both supervisors are there, before any child failed */
    wait_for(&d, "\"strategy\":\"one_for_one\"", "tasks", pidstr(c.pid), "--json");

    kill(c.pid, SIGUSR1); /* now the children fail */
    char line[128];
    read_line(c.out, line, sizeof line, E2E_WAIT_MS);
    assert_string_equal(line, "crash-sup: -32"); /* gave up with the child's -EPIPE */

    /* crash-sup restarted 3 times before it gave up, flaky-sup once */
    wait_for(&d, "\"restarts\":4,", "ps", "--json");
    assert_int_equal(ctl(&d, out, "ps"), 0);
    assert_non_null(strstr(out, "RESTARTS"));
    wait_for(&d, "\"kind\":\"restart_limit\"", "incidents", "--json");
    assert_int_equal(ctl(&d, out, "incidents", "--json"), 0);
    assert_int_equal(count_of(out, "\"kind\":\"restart_limit\""), 1);
    assert_non_null(strstr(out, "crash-sup"));
    assert_non_null(strstr(out, "gave up"));

    /* the supervisor that stays: its group, its strategy, its one restart */
    wait_for(&d, "\"name\":\"flaky-sup\"", "tasks", pidstr(c.pid), "--json");
    assert_int_equal(ctl(&d, out, "tasks", pidstr(c.pid), "--json"), 0);
    const char *g = strstr(out, "\"name\":\"flaky-sup\"");
    assert_non_null(g);
    assert_non_null(strstr(g, "\"restarts\":1,\"strategy\":\"one_for_one\""));
    /* the supervisor that gave up is gone from leashd's view too */
    for (int64_t until = now_ms() + E2E_WAIT_MS;; pause_ms(50)) {
        assert_int_equal(ctl(&d, out, "tasks", pidstr(c.pid), "--json"), 0);
        if (!strstr(out, "crash-sup"))
            break;
        if (now_ms() > until)
            fail_msg("crash-sup still in leashctl tasks: %s", out);
    }
    assert_int_equal(ctl(&d, out, "tasks", pidstr(c.pid)), 0);
    assert_non_null(strstr(out, "\"flaky-sup\""));
    assert_non_null(strstr(out, "supervisor one_for_one, 1 restarts"));
    /* the live dump says the same */
    assert_int_equal(ctl(&d, out, "dump", pidstr(c.pid)), 0);
    assert_non_null(strstr(out, "supervisor one_for_one, 1 restarts"));
    assert_non_null(strstr(out, "task")); /* its child, under its name */
    assert_non_null(strstr(out, " flaky ["));

    http_get(port, "/metrics", out, sizeof out);
    assert_non_null(strstr(out, "leashd_restarts_total 4\n"));
    assert_non_null(strstr(out, "leashd_incidents_total{kind=\"restart_limit\"} 1\n"));
    kill_child(&c);
    daemon_cleanup(&d);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(restarts_and_the_restart_limit_reach_leashd_and_leashctl,
                                  teardown),
    };
    return cmocka_run_group_tests_name("supervisors", tests, NULL, NULL);
}
