/* test_postmortem.c: the task tree of a process that is gone, and what a
   running task is doing, with a real leashd and real processes. */
#include "harness.h"

#include <sys/resource.h>

struct dying {
    pid_t pid;
    int   out, in; /* its stdout, and its stdin */
    int   line;    /* the spawn line it printed */
};

static struct dying dying(const struct daemon *d, const char *mode)
{
    int o[2], i[2];
    assert_int_equal(pipe(o), 0);
    assert_int_equal(pipe(i), 0);
    struct dying c = {.pid = fork()};
    if (c.pid == 0) {
        dup2(o[1], 1);
        dup2(i[0], 0);
        close(o[0]);
        close(i[1]);
        /* no core file left behind; the signal is what the test checks */
        struct rlimit no = {0, 0};
        setrlimit(RLIMIT_CORE, &no);
        setenv("LEASH_SOCKET", d->agent, 1);
        setenv("LEASH_REPORT", "quiet", 1);
        setenv("LEASH_NAME", "dying", 1);
        /* the sanitizers' own fatal-signal handlers would exit 1 instead */
        setenv("ASAN_OPTIONS", "handle_segv=0:handle_abort=0:detect_leaks=0", 1);
        setenv("TSAN_OPTIONS", "handle_segv=0:handle_abort=0", 1);
        execl(DYING_BIN, "dying", mode, (char *)NULL);
        _exit(127);
    }
    track(c.pid);
    close(o[1]);
    close(i[0]);
    c.out = o[0];
    c.in = i[1];
    char line[128];
    read_line(c.out, line, sizeof line, E2E_WAIT_MS);
    int pid = 0;
    assert_int_equal(sscanf(line, "ready %d %d", &pid, &c.line), 2);
    assert_int_equal(pid, c.pid);
    return c;
}

static int dying_reap(struct dying *c)
{
    struct child k = {.pid = c->pid, .out = c->out};
    int          st = reap(&k, E2E_WAIT_MS);
    close(c->in);
    c->pid = 0;
    return st;
}

/* The id of the first incident of kind in leashctl incidents --json. */
static unsigned long long incident_id(const struct daemon *d, const char *kind)
{
    char out[65536], needle[64];
    snprintf(needle, sizeof needle, "\"kind\":\"%s\"", kind);
    wait_for(d, needle, "incidents", "--json");
    assert_int_equal(ctl(d, out, "incidents", "--json"), 0);
    char *k = strstr(out, needle);
    assert_non_null(k);
    char *o = k;
    while (o > out && strncmp(o, "{\"id\":", 6) != 0)
        o--;
    return strtoull(o + 6, NULL, 10);
}

/* What leashctl incident ID --format json says of the six: all six tasks
   with their sites, five blocked on the channel. */
static void assert_six(const char *out, int line)
{
    char site[64];
    assert_non_null(strstr(out, "\"kind\":\"agent_lost\""));
    assert_non_null(strstr(out, "\"signal\":null"));
    assert_non_null(strstr(out, "\"tree\":{\"pid\":"));
    assert_non_null(strstr(out, "\"name\":\"requests\""));
    assert_int_equal(count_of(out, "\"fn\":\"wait_inbox\""), 5);
    assert_int_equal(count_of(out, "\"fn\":\"spin_hot\""), 1);
    assert_int_equal(count_of(out, "\"op\":\"chan_recv\",\"object\":\"e2e.inbox\""), 5);
    snprintf(site, sizeof site, "dying.c:%d\"", line);
    assert_int_equal(count_of(out, site), 5);
    snprintf(site, sizeof site, "dying.c:%d\"", line + 1);
    assert_int_equal(count_of(out, site), 1);
    assert_non_null(strstr(out, "\"truncated\":false"));
}

static void sigkill_leaves_the_last_tree_in_agent_lost(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    struct dying c = dying(&d, "six");
    /* connected: leashd holds its registry from the Hello on */
    wait_for(&d, "\"fn\":\"spin_hot\"", "tasks", pidstr(c.pid), "--json");
    kill(c.pid, SIGKILL);
    int st = dying_reap(&c);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    unsigned long long id = incident_id(&d, "agent_lost");
    char               ids[32], out[65536];
    snprintf(ids, sizeof ids, "%llu", id);
    assert_int_equal(ctl(&d, out, "incident", ids, "--format", "json"), 0);
    assert_non_null(strstr(out, "process exited with 6 live tasks in 1 groups"));
    assert_six(out, c.line);

    /* the text and the folded stacks say the same */
    assert_int_equal(ctl(&d, out, "incident", ids), 0);
    assert_non_null(strstr(out, "the last task tree, pid "));
    assert_int_equal(count_of(out, "wait_inbox [blocked on chan_recv \"e2e.inbox\""), 5);
    assert_non_null(strstr(out, "spin_hot [running"));
    assert_int_equal(ctl(&d, out, "incident", ids, "--format", "folded"), 0);
    assert_non_null(strstr(out, "dying;group requests;wait_inbox;chan_recv e2e.inbox 5\n"));
    assert_non_null(strstr(out, "dying;group requests;spin_hot 1\n"));

    /* the journal keeps it across a restart of leashd */
    daemon_stop(&d);
    daemon_start(&d);
    assert_int_equal(ctl(&d, out, "incident", ids, "--format", "json"), 0);
    assert_six(out, c.line);
    assert_int_equal(ctl(&d, out, "incidents", "--json"), 0);
    assert_non_null(strstr(out, "\"tree\":{\"pid\":"));
    daemon_cleanup(&d);
}

static void assert_crash(const char *out, int line)
{
    char want[256];
    assert_non_null(strstr(out, "\"kind\":\"crashed\""));
    assert_non_null(strstr(out, "\"signal\":\"SIGSEGV\""));
    snprintf(want, sizeof want, "(parse, spawned at ");
    const char *p = strstr(out, "died of SIGSEGV (address 0x0) in task ");
    assert_non_null(p);
    assert_non_null(strstr(p, want));
    snprintf(want, sizeof want, "dying.c:%d) in group ", line);
    assert_non_null(strstr(p, want));
    assert_non_null(strstr(p, " \\\"requests\\\""));
    assert_non_null(strstr(out, "\"fn\":\"parse\""));
    assert_non_null(strstr(out, "\"crashed\":true"));
}

static void null_dereference_is_a_crashed_incident_and_still_sigsegv(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    struct dying c = dying(&d, "segv");
    wait_for(&d, "\"fn\":\"parse\"", "tasks", pidstr(c.pid), "--json");
    assert_int_equal(write(c.in, "x", 1), 1);
    int st = dying_reap(&c);
    /* the process dies of the signal, as it would without leash */
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGSEGV);

    unsigned long long id = incident_id(&d, "crashed");
    char               ids[32], out[65536];
    snprintf(ids, sizeof ids, "%llu", id);
    assert_int_equal(ctl(&d, out, "incident", ids, "--format", "json"), 0);
    assert_crash(out, c.line);
    assert_int_equal(ctl(&d, out, "incident", ids), 0);
    assert_non_null(strstr(out, "signal: SIGSEGV"));
    assert_non_null(strstr(out, "CRASHED: the fatal signal hit this task"));

    daemon_stop(&d);
    daemon_start(&d);
    assert_int_equal(ctl(&d, out, "incident", ids, "--format", "json"), 0);
    assert_crash(out, c.line);
    daemon_cleanup(&d);
}

/* A number after key in the JSON object of the task running fn; -1: null. */
static long long task_field(const char *d, const char *fn, const char *key)
{
    char needle[64];
    snprintf(needle, sizeof needle, "\"fn\":\"%s\"", fn);
    const char *t = strstr(d, needle);
    if (!t)
        return -2;
    snprintf(needle, sizeof needle, "\"%s\":", key);
    const char *p = strstr(t, needle);
    const char *end = strstr(t, "},{");
    if (!p || (end && p > end))
        return -2;
    p += strlen(needle);
    return strncmp(p, "null", 4) == 0 ? -1 : atoll(p);
}

static bool reads(const char *d)
{
    const char *t = strstr(d, "\"fn\":\"read_pipe\"");
    const char *s = t ? strstr(t, "\"syscall\":{\"nr\":") : NULL;
    const char *end = t ? strstr(t, "},{") : NULL;
    return s && (!end || s < end) && strncmp(strstr(s, "\"name\":"), "\"name\":\"read\"", 13) == 0;
}

static void dump_tells_a_spinning_task_from_one_in_read(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    struct dying c = dying(&d, "busy");
    static char  out[65536];
    /* however loaded the machine, the spinner's CPU time grows from one
       dump to the next, and the reader sits in read(2) */
    long long first = -1, last = -1, share = -1;
    bool      in_read = false;
    int64_t   until = now_ms() + 60000;
    /* its share is known once a sample of it is 100 ms old, and stays so */
    while (now_ms() < until && !(in_read && first >= 0 && last >= first + 50 && share >= 0)) {
        if (ctl(&d, out, "dump", pidstr(c.pid), "--format", "json") == 0) {
            in_read = in_read || reads(out);
            long long ms = task_field(out, "spin_hot", "cpu_ms");
            if (ms >= 0 && first < 0)
                first = ms;
            if (ms >= 0)
                last = ms;
            share = task_field(out, "spin_hot", "cpu_pct");
        }
        pause_ms(50);
    }
    assert_true(in_read);
    assert_true(first >= 0 && last >= first + 50);
    assert_int_equal(ctl(&d, out, "dump", pidstr(c.pid), "--format", "json"), 0);
    long long pct = task_field(out, "spin_hot", "cpu_pct");
    assert_true(pct >= 0 && pct <= 100);
    assert_int_equal(task_field(out, "spin_hot", "syscall"), -1);
    assert_int_equal(ctl(&d, out, "dump", pidstr(c.pid)), 0);
    {
        const char *r = strstr(out, "read_pipe [running, "),
                   *sp = strstr(out, "spin_hot [running, ");
        long long ms;
        char      call[16];
        int       cpu;
        assert_non_null(r);
        assert_int_equal(
            sscanf(r, "read_pipe [running, %lld ms, now in %15[a-z_0-9](2)", &ms, call), 2);
        assert_string_equal(call, "read");
        assert_non_null(sp);
        assert_int_equal(sscanf(sp, "spin_hot [running, %lld ms, on CPU %d%%", &ms, &cpu), 2);
    }
    assert_int_equal(ctl(&d, out, "dump", pidstr(c.pid), "--format", "folded"), 0);
    assert_non_null(strstr(out, "dying;group requests;read_pipe;syscall read 1\n"));
    kill(c.pid, SIGKILL);
    dying_reap(&c);
    daemon_cleanup(&d);
}

static void deadline_overrun_says_which_task_spins_and_which_sits_in_read(void **state)
{
    (void)state;
    struct daemon d;
    /* a report now and then: one comes once the reader is in read(2),
       however slowly this machine starts it */
    daemon_new(&d,
               "policies = ( { match = \"*\"; grace = \"50ms\"; escalate = [ \"report\",\n"
               "  \"report@300ms\", \"report@1s\", \"report@2s\", \"report@4s\", \"report@8s\",\n"
               "  \"report@12s\", \"report@16s\" ]; } );\n");
    struct dying c = dying(&d, "late");
    /* one report's detail names both: the spinner on CPU (its share is
       known once a sample of it is 100 ms old), the reader in read(2) */
    static char out[262144];
    bool        both = false;
    int64_t     until = now_ms() + 30000;
    while (!both && now_ms() < until) {
        assert_int_equal(ctl(&d, out, "incidents", "--json"), 0);
        for (char *p = strstr(out, "\"detail\":\""); p && !both;
             p = strstr(p + 1, "\"detail\":\"")) {
            char *end = strstr(p, "\",\"action\"");
            if (!end)
                break;
            *end = '\0';
            both = strstr(p, "still has 2 tasks") && strstr(p, " read_pipe in read(2)") &&
                   (strstr(p, " spin_hot spins (on CPU ") || strstr(p, " spin_hot runs (on CPU "));
            *end = '"';
        }
        if (!both)
            pause_ms(100);
    }
    assert_true(both);
    assert_non_null(strstr(out, "\"kind\":\"deadline_overrun\""));
    kill(c.pid, SIGKILL);
    dying_reap(&c);
    daemon_cleanup(&d);
}

static void leashctl_incident_refuses_what_it_cannot_show(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    char out[4096];
    assert_int_equal(ctl(&d, out, "incident"), 2);
    assert_non_null(strstr(out, "incident needs ID"));
    assert_int_equal(ctl(&d, out, "incident", "x1"), 2);
    assert_non_null(strstr(out, "ID must be an incident id"));
    assert_int_equal(ctl(&d, out, "incident", "1", "--format", "pprof"), 2);
    assert_non_null(strstr(out, "incident takes --format text json folded"));
    assert_int_equal(ctl(&d, out, "incident", "4242"), 1);
    assert_non_null(strstr(out, "no incident 4242"));
    daemon_cleanup(&d);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(sigkill_leaves_the_last_tree_in_agent_lost, teardown),
        cmocka_unit_test_teardown(null_dereference_is_a_crashed_incident_and_still_sigsegv,
                                  teardown),
        cmocka_unit_test_teardown(dump_tells_a_spinning_task_from_one_in_read, teardown),
        cmocka_unit_test_teardown(deadline_overrun_says_which_task_spins_and_which_sits_in_read,
                                  teardown),
        cmocka_unit_test_teardown(leashctl_incident_refuses_what_it_cannot_show, teardown),
    };
    return cmocka_run_group_tests_name("postmortem", tests, NULL, NULL);
}
