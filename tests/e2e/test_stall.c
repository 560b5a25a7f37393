/*
 * test_stall.c: leashd itself stopped for a while (SIGSTOP here; a debugger,
 * a suspended VM or a starved CPU in the field) acts on nothing it has not
 * read. What processes said meanwhile waits in their sockets: a process that
 * kept sending heartbeats is not "wedged", and a group that closed on time
 * did not overrun its deadline. Processes that really went silent, or
 * really overran, are still caught, by the same first checks after the stall.
 *
 * The stall is the condition tested, so it is a time: longer than the
 * heartbeat timeout, or than a deadline plus the whole escalation.
 */
#include "harness.h"

/* Whether leashd's incidents name pid with kind. */
static bool has_incident(const struct daemon *d, pid_t pid, const char *kind)
{
    static char out[1 << 20];
    char        want[128];
    assert_int_equal(ctl(d, out, "incidents", "--json"), 0);
    snprintf(want, sizeof want, "\"pid\":%d,", (int)pid);
    for (const char *p = strstr(out, want); p; p = strstr(p + 1, want)) {
        const char *k = strstr(p, "\"kind\":\"");
        const char *end = strchr(p, '}');
        if (k && end && k < end && !strncmp(k + 8, kind, strlen(kind)) &&
            k[8 + strlen(kind)] == '"')
            return true;
    }
    return false;
}

static void wait_incident(const struct daemon *d, pid_t pid, const char *kind)
{
    int64_t until = now_ms() + E2E_WAIT_MS;
    while (!has_incident(d, pid, kind)) {
        if (now_ms() > until)
            fail_msg("no %s incident for %d", kind, (int)pid);
        pause_ms(50);
    }
}

static void a_stalled_leashd_does_not_call_a_live_process_wedged(void **state)
{
    (void)state;
    struct daemon d;
    /* 3 s: a live process's heartbeats (every 250 ms) are never that late,
       even under a sanitizer with a busy loop on each CPU */
    daemon_new(&d, "heartbeat_timeout = \"3s\";\n");
    struct child wedged = leashed_named(&d, "stuck", "wedged");
    struct child alive = leashed_named(&d, "stuck", "alive");
    wait_connected(&d, &wedged, "wedged");
    wait_connected(&d, &alive, "alive");
    /* wedged stops first, so nothing of it waits unread; alive goes on
       sending heartbeats (every 250 ms) into a leashd that does not read */
    kill(wedged.pid, SIGSTOP);
    kill(d.pid, SIGSTOP);
    pause_ms(6000);
    kill(d.pid, SIGCONT);
    /* the first checks after the stall: they saw both */
    wait_incident(&d, wedged.pid, "heartbeat_lost");
    assert_false(has_incident(&d, alive.pid, "heartbeat_lost"));
    kill(wedged.pid, SIGCONT);
    kill_child(&wedged);
    kill_child(&alive);
    daemon_cleanup(&d);
}

static void a_stalled_leashd_does_not_act_on_a_group_that_closed_on_time(void **state)
{
    (void)state;
    struct daemon d;
    struct child  ontime, late;
    /* leashd must be stopped before the deadline: the groups are opened,
       and leashd must have seen them, first. On a machine too slow for
       that within the deadline, try again with a deadline twice as long. */
    for (int ms = 3000;; ms *= 2) {
        char deadline[16];
        snprintf(deadline, sizeof deadline, "%d", ms);
        setenv("LEASHED_DEADLINE_MS", deadline, 1);
        /* every step is due 300 ms after a deadline: one stall covers them all */
        daemon_new(&d, "policies = ({ match = \"*\"; grace = \"100ms\"; kill_grace = \"1s\";\n"
                       "  escalate = [ \"report\", \"cancel\", \"kill@200ms\" ]; });\n");
        ontime = leashed_named(&d, "ontime", "ontime");
        late = leashed_named(&d, "overrun", "late");
        unsetenv("LEASHED_DEADLINE_MS");
        wait_connected(&d, &ontime, "ontime");
        wait_connected(&d, &late, "late");
        /* both open a group with that deadline; leashd sees them open */
        int64_t t0 = now_ms();
        kill(ontime.pid, SIGUSR1);
        kill(late.pid, SIGUSR1);
        wait_for(&d, "\"name\":\"ontime\",\"deadline_ms_left\"", "tasks", pidstr(ontime.pid),
                 "--json");
        wait_for(&d, "\"name\":\"overrun\",\"deadline_ms_left\"", "tasks", pidstr(late.pid),
                 "--json");
        /* then leashd stalls past both deadlines and the whole escalation:
           ontime's group closes on time meanwhile (said into its socket),
           late's task spins on */
        kill(d.pid, SIGSTOP);
        if (now_ms() - t0 < ms - 500)
            break;
        if (ms >= 48000)
            fail_msg("leashd never saw the groups open within %d ms of their deadline", ms);
        print_message("leashd stopped too near a %d ms deadline: again with %d ms\n", ms, ms * 2);
        kill(d.pid, SIGCONT);
        kill_child(&ontime);
        kill_child(&late);
        daemon_cleanup(&d);
    }
    char line[64];
    read_line(ontime.out, line, sizeof line, E2E_WAIT_MS);
    assert_string_equal(line, "closed -110"); /* -ETIMEDOUT: closed at its deadline */
    pause_ms(1500);
    kill(d.pid, SIGCONT);
    wait_incident(&d, late.pid, "killed");
    assert_false(has_incident(&d, ontime.pid, "killed"));
    assert_false(has_incident(&d, ontime.pid, "deadline_overrun"));
    assert_int_equal(kill(ontime.pid, 0), 0);
    reap(&late, E2E_WAIT_MS);
    kill_child(&ontime);
    daemon_cleanup(&d);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(a_stalled_leashd_does_not_call_a_live_process_wedged, teardown),
        cmocka_unit_test_teardown(a_stalled_leashd_does_not_act_on_a_group_that_closed_on_time,
                                  teardown),
    };
    return cmocka_run_group_tests_name("stall", tests, NULL, NULL);
}
