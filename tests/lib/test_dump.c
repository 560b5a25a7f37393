/* test_dump.c: dumps, stats and report lines. */
#include "helpers.h"

#include <fcntl.h>
#include <signal.h>

struct parked {
    leash_chan *c;
};

static int send_line; /* where park_on_send blocks */

static int park_on_send(void *arg)
{
    int v = 1;
    send_line = __LINE__ + 1;
    return leash_chan_send(((struct parked *)arg)->c, &v);
}

static void json_dump_names_the_channel_the_line_and_the_group(void **state)
{
    (void)state;
    struct parked p;
    assert_int_equal(leash_chan_open(&p.c, "results", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(
        leash_group_open(&g, &(leash_group_opts){.name = "search", .timeout_ms = 600000}), 0);
    assert_int_equal(leash_go(g, park_on_send, &p), 0);
    wait_blocked("chan_send", 1);
    char *d = dump_json();
    assert_non_null(d);
    char want[128];
    snprintf(want, sizeof want, "\"pid\":%d", (int)getpid());
    assert_non_null(strstr(d, want));
    assert_non_null(strstr(d, "\"name\":\"search\""));
    assert_non_null(strstr(d, "\"cancelled\":false"));
    assert_non_null(strstr(d, "\"fn\":\"park_on_send\""));
    assert_non_null(strstr(d, "\"state\":\"blocked\""));
    assert_non_null(strstr(d, "\"op\":\"chan_send\",\"object\":\"results\""));
    snprintf(want, sizeof want, "test_dump.c:%d\"}", send_line);
    assert_non_null(strstr(d, want));
    assert_non_null(strstr(d, "{\"id\":0,\"parent\":null,\"name\":\"root\""));
    assert_null(strstr(d, "\"deadline_ms_left\":null,\"cancelled\":false,\"site\""));
    free(d);
    leash_group_cancel(g);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    leash_chan_free(p.c);
    assert_nothing_leaked();
}

static char *dump_text(void)
{
    int fd = memfd_create("text", 0);
    assert_int_equal(leash_dump(fd, LEASH_DUMP_TEXT), 0);
    off_t n = lseek(fd, 0, SEEK_END);
    char *s = calloc(1, (size_t)n + 1);
    assert_int_equal(pread(fd, s, (size_t)n, 0), n);
    close(fd);
    return s;
}

static void text_dump_reads_like_a_goroutine_dump(void **state)
{
    (void)state;
    struct parked p;
    assert_int_equal(leash_chan_open(&p.c, "results", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "search"}), 0);
    assert_int_equal(leash_go(g, park_on_send, &p), 0);
    wait_blocked("chan_send", 1);
    char *t = dump_text();
    assert_non_null(strstr(t, "leash dump: pid"));
    assert_non_null(strstr(t, "\"search\""));
    assert_non_null(strstr(t, "park_on_send [blocked on chan_send \"results\""));
    char want[64];
    snprintf(want, sizeof want, "test_dump.c:%d\n", send_line);
    assert_non_null(strstr(t, want));
    free(t);
    leash_group_cancel(g);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    leash_chan_free(p.c);
    assert_nothing_leaked();
}

static int lock_held_by_main(void *arg)
{
    int err = leash_mutex_lock((leash_mutex *)arg);
    return err ? err : leash_mutex_unlock((leash_mutex *)arg);
}

static void a_task_waiting_for_a_mutex_is_shown_with_its_holder(void **state)
{
    (void)state;
    leash_mutex m;
    leash_mutex_init(&m, "ledger");
    assert_int_equal(leash_mutex_lock(&m), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, lock_held_by_main, &m), 0);
    wait_blocked("mutex", 1);
    char  want[96];
    char *d = dump_json();
    snprintf(want, sizeof want, "\"op\":\"mutex\",\"object\":\"ledger\"");
    assert_non_null(strstr(d, want));
    snprintf(want, sizeof want, "\"held_by\":%llu}", (unsigned long long)leash_task_id());
    assert_non_null(strstr(d, want));
    free(d);
    char *t = dump_text();
    snprintf(want, sizeof want, "blocked on mutex \"ledger\" held by task %llu",
             (unsigned long long)leash_task_id());
    assert_non_null(strstr(t, want));
    free(t);
    assert_int_equal(leash_mutex_unlock(&m), 0);
    assert_int_equal(leash_group_wait(g), 0);
    leash_mutex_destroy(&m);
    assert_nothing_leaked();
}

static void dump_refuses_bad_arguments(void **state)
{
    (void)state;
    assert_int_equal(leash_dump(1, 7), -EINVAL);
    assert_int_equal(leash_dump(-1, LEASH_DUMP_TEXT), -EBADF);
    int p[2];
    assert_int_equal(pipe(p), 0);
    close(p[0]);
    signal(SIGPIPE, SIG_IGN);
    assert_int_equal(leash_dump(p[1], LEASH_DUMP_TEXT), -EPIPE);
    close(p[1]);
    assert_int_equal(leash_stats(NULL), -EINVAL);
}

static int nothing(void *arg)
{
    (void)arg;
    return 0;
}

static void stats_count_tasks_and_groups(void **state)
{
    (void)state;
    struct leash_stats a, b;
    assert_int_equal(leash_stats(&a), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_stats(&b), 0);
    assert_int_equal(b.groups_live, a.groups_live + 1);
    for (int i = 0; i < 10; i++)
        assert_int_equal(leash_go(g, nothing, NULL), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_int_equal(leash_stats(&b), 0);
    assert_int_equal(b.tasks_started, a.tasks_started + 10);
    assert_true(b.threads >= 1);
    assert_nothing_leaked();
}

static void report_is_one_stderr_line_naming_the_site(void **state)
{
    (void)state;
    unsetenv("LEASH_REPORT");
    int p[2];
    assert_int_equal(pipe(p), 0);
    int saved = dup(2);
    dup2(p[1], 2);
    leash_mutex m;
    leash_mutex_init(&m, "twice");
    assert_int_equal(leash_mutex_lock(&m), 0);
    int line = __LINE__ + 1;
    assert_int_equal(leash_mutex_lock(&m), -EDEADLK);
    leash_mutex_unlock(&m);
    dup2(saved, 2);
    close(saved);
    close(p[1]);
    char    buf[1024] = {0};
    ssize_t n = read(p[0], buf, sizeof buf - 1);
    close(p[0]);
    assert_true(n > 0);
    assert_non_null(strstr(buf, "self_deadlock"));
    assert_non_null(strstr(buf, "\"twice\""));
    char want[64];
    snprintf(want, sizeof want, "test_dump.c:%d", line);
    assert_non_null(strstr(buf, want));
    assert_int_equal(count_of(buf, "\n"), 1);
    assert_int_equal(buf[n - 1], '\n');
    leash_mutex_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_dump_names_the_channel_the_line_and_the_group),
        cmocka_unit_test(text_dump_reads_like_a_goroutine_dump),
        cmocka_unit_test(a_task_waiting_for_a_mutex_is_shown_with_its_holder),
        cmocka_unit_test(dump_refuses_bad_arguments),
        cmocka_unit_test(stats_count_tasks_and_groups),
        cmocka_unit_test(report_is_one_stderr_line_naming_the_site),
    };
    /* the report test reads LEASH_REPORT itself, before any report is made */
    return cmocka_run_group_tests_name("dump", tests, NULL, NULL);
}
