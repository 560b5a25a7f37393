/*
 * test_supervise_hostile.c: supervisors used as nobody meant them to be:
 * extreme options, nested supervisors, children that fork, that supervise,
 * that sit in foreign calls, cancellations that race restarts.
 */
#include "helpers.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <sys/wait.h>

int64_t leash__sup_backoff_ms(int64_t min_ms, int64_t max_ms, unsigned k, uint64_t r);

static int fail_at_once(void *arg)
{
    _Atomic int *runs = arg;
    if (runs)
        atomic_fetch_add(runs, 1);
    return -EIO;
}

static int wait_forever(void *arg)
{
    _Atomic int *runs = arg;
    if (runs)
        atomic_fetch_add(runs, 1);
    return leash_sleep(INT64_MAX / 2);
}

/* --------------------------------------------------------- the numbers */

static void backoff_near_int64_max_stays_positive_and_within_its_bounds(void **state)
{
    (void)state;
    const int64_t mins[] = {INT64_MAX, INT64_MAX - 1, INT64_MAX / 2 + 1, INT64_MAX / 4 * 3};
    for (size_t m = 0; m < sizeof mins / sizeof mins[0]; m++)
        for (uint64_t r = 0; r < 64; r++) {
            uint64_t rr = r * 0x9E3779B97F4A7C15ULL;
            for (unsigned k = 0; k < 3; k++) {
                int64_t d = leash__sup_backoff_ms(mins[m], 0, k, rr);
                assert_true(d >= mins[m] - mins[m] / 5);
                d = leash__sup_backoff_ms(mins[m], INT64_MAX, k, rr);
                assert_true(d >= mins[m] - mins[m] / 5);
            }
        }
}

struct run {
    leash_sup_opts    opts;
    leash_child_spec *specs;
    size_t            n;
    _Atomic int       rc;
    _Atomic bool      done;
};

static int sup_main(void *arg)
{
    struct run *r = arg;
    atomic_store(&r->rc, leash_supervise(&r->opts, r->specs, r->n));
    atomic_store(&r->done, true);
    return 0;
}

static void a_backoff_of_int64_max_ms_waits_until_cancelled(void **state)
{
    (void)state;
    _Atomic int      runs = 0;
    leash_child_spec c = {.name = "fails", .fn = fail_at_once, .arg = &runs};
    struct run       r = {.opts = {.name = "s-forever",
                                   .intensity = 5,
                                   .period_ms = INT64_MAX,
                                   .backoff_min_ms = INT64_MAX},
                          .specs = &c,
                          .n = 1};
    leash_group     *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, sup_main, &r), 0);
    WAIT_FOR(group_field("s-forever", "restarts") == 1);
    assert_true(group_field("s-forever", "backoff_ms") >= INT64_MAX - INT64_MAX / 5);
    leash_group_cancel(g);
    leash_group_wait(g);
    assert_int_equal(atomic_load(&r.rc), -ECANCELED);
    assert_int_equal(atomic_load(&runs), 1);
    assert_nothing_leaked();
}

static _Atomic int transient_left;

static int fail_then_succeed(void *arg)
{
    _Atomic int *runs = arg;
    atomic_fetch_add(runs, 1);
    return atomic_fetch_sub(&transient_left, 1) > 1 ? -EIO : 0;
}

static void the_largest_intensity_and_period_restart_without_giving_up(void **state)
{
    (void)state;
    _Atomic int runs = 0;
    atomic_store(&transient_left, 300);
    leash_child_spec c = {
        .name = "flaky", .fn = fail_then_succeed, .arg = &runs, .restart = LEASH_TRANSIENT};
    assert_int_equal(leash_supervise(&(leash_sup_opts){.intensity = UINT32_MAX,
                                                       .period_ms = INT64_MAX,
                                                       .backoff_max_ms = INT64_MAX},
                                     &c, 1),
                     0);
    assert_int_equal(atomic_load(&runs), 300);
    assert_nothing_leaked();
}

/* ------------------------------------------------- supervisors in children */

static _Atomic int inner_runs;

static int inner_supervisor(void *arg)
{
    (void)arg;
    leash_child_spec c = {.name = "leaf", .fn = fail_at_once, .arg = &inner_runs};
    return leash_supervise(&(leash_sup_opts){.name = "inner", .intensity = 2, .period_ms = 600000},
                           &c, 1);
}

static void a_child_that_supervises_gives_up_into_its_own_supervisor(void **state)
{
    (void)state;
    atomic_store(&inner_runs, 0);
    leash_child_spec c = {.name = "sup-child", .fn = inner_supervisor};
    int              rc = leash_supervise(
                     &(leash_sup_opts){.name = "outer", .intensity = 1, .period_ms = 600000}, &c, 1);
    assert_int_equal(rc, -EIO);
    assert_int_equal(atomic_load(&inner_runs), 6); /* 3 per inner supervisor, run twice */
    assert_nothing_leaked();
}

struct depth {
    int          level;
    _Atomic int *leaves;
};

static int nest_deeper(void *arg)
{
    struct depth *d = arg;
    if (d->level == 0)
        return wait_forever(d->leaves);
    struct depth     next = {d->level - 1, d->leaves};
    leash_child_spec c[2] = {{.name = "deeper", .fn = nest_deeper, .arg = &next},
                             {.name = "sibling", .fn = wait_forever}};
    return leash_supervise(&(leash_sup_opts){.strategy = LEASH_ONE_FOR_ALL}, c, 2);
}

static void cancelling_a_tower_of_supervisors_joins_every_level(void **state)
{
    (void)state;
    _Atomic int  leaves = 0;
    struct depth top = {8, &leaves};
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "tower"}), 0);
    assert_int_equal(leash_go(g, nest_deeper, &top), 0);
    WAIT_FOR(atomic_load(&leaves) == 1 && blocked_count("sleep") == 9);
    leash_group_cancel(g);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_nothing_leaked();
}

/* --------------------------------------------------------------- cancels */

static void cancellation_racing_restarts_always_joins(void **state)
{
    (void)state;
    for (int i = 0; i < 60; i++) {
        _Atomic int      runs = 0;
        leash_child_spec c[2] = {{.name = "hot", .fn = fail_at_once, .arg = &runs},
                                 {.name = "cold", .fn = wait_forever}};
        struct run       r = {
                  .opts = {.name = "s-race", .strategy = i % 3, .intensity = UINT32_MAX, .period_ms = 1},
                  .specs = c,
                  .n = 2};
        leash_group *g;
        assert_int_equal(leash_group_open(&g, NULL), 0);
        assert_int_equal(leash_go(g, sup_main, &r), 0);
        WAIT_FOR(atomic_load(&runs) >= 1 + i % 7);
        leash_group_cancel(g);
        leash_group_wait(g);
        assert_true(atomic_load(&r.done));
        assert_int_equal(atomic_load(&r.rc), -ECANCELED);
    }
    assert_nothing_leaked();
}

/* ----------------------------------------------------- children's groups */

static int sleeps(void *arg)
{
    (void)arg;
    return leash_sleep(INT64_MAX / 2);
}

static _Atomic int leaky_runs;

static int leaves_a_group_open(void *arg)
{
    (void)arg;
    atomic_fetch_add(&leaky_runs, 1);
    leash_group *g;
    int          err = leash_group_open(&g, &(leash_group_opts){.name = "left-open"});
    if (err)
        return err;
    leash_go(g, sleeps, NULL);
    leash_go(g, sleeps, NULL);
    return -EIO; /* never waited: its end cancels and joins it */
}

static void a_child_that_leaves_groups_open_is_restarted_after_they_are_joined(void **state)
{
    (void)state;
    atomic_store(&leaky_runs, 0);
    leash_child_spec c = {.name = "leaky", .fn = leaves_a_group_open};
    assert_int_equal(leash_supervise(&(leash_sup_opts){.intensity = 3, .period_ms = 600000}, &c, 1),
                     -EIO);
    assert_int_equal(atomic_load(&leaky_runs), 4);
    assert_nothing_leaked();
}

/* ------------------------------------------------------- foreign calls */

struct piped {
    int         fd[2];
    _Atomic int in_read;
};

static int reads_a_pipe(void *arg)
{
    struct piped *p = arg;
    char          b;
    atomic_fetch_add(&p->in_read, 1);
    ssize_t n = read(p->fd[0], &b, 1);
    return n < 0 ? -errno : -EIO;
}

static void an_interrupting_deadline_reaches_a_child_in_a_foreign_call(void **state)
{
    (void)state;
    struct piped p = {0};
    assert_int_equal(pipe(p.fd), 0);
    leash_child_spec c = {.name = "reader", .fn = reads_a_pipe, .arg = &p};
    struct run       r = {.opts = {.name = "s-foreign"}, .specs = &c, .n = 1};
    leash_group     *g;
    int64_t          t0 = mono_ms();
    assert_int_equal(
        leash_group_open(
            &g, &(leash_group_opts){.name = "intr", .timeout_ms = 2000, .flags = LEASH_INTERRUPT}),
        0);
    assert_int_equal(leash_go(g, sup_main, &r), 0);
    leash_group_wait(g);
    int64_t took = mono_ms() - t0;
    assert_true(took >= 2000 && took < NOT_HUNG_MS);
    assert_int_equal(atomic_load(&r.rc), -ETIMEDOUT);
    close(p.fd[0]);
    close(p.fd[1]);
    assert_nothing_leaked();
}

/* ------------------------------------------------------------------ fork */

static int forks_and_supervises(void *arg)
{
    (void)arg;
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        leash_child_spec c = {.name = "in-child",
                              .fn = fail_then_succeed,
                              .arg = &inner_runs,
                              .restart = LEASH_TRANSIENT};
        atomic_store(&transient_left, 3);
        int rc = leash_supervise(
            &(leash_sup_opts){.name = "forked", .intensity = 5, .period_ms = 600000}, &c, 1);
        int fd = open("/dev/null", O_WRONLY);
        int drc = leash_dump(fd, LEASH_DUMP_JSON);
        _exit(rc == 0 && atomic_load(&inner_runs) == 3 && drc == 0 ? 0 : 1);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -ECHILD;
}

static void a_supervised_child_that_forks_can_supervise_in_the_new_process(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    skip(); /* ASan's allocator is not fork-safe here (as in test_fork) */
#endif
    atomic_store(&inner_runs, 0);
    leash_child_spec c[2] = {
        {.name = "forker", .fn = forks_and_supervises, .restart = LEASH_TRANSIENT},
        {.name = "bystander",
         .fn = fail_then_succeed,
         .arg = &leaky_runs,
         .restart = LEASH_TEMPORARY}};
    assert_int_equal(leash_supervise(NULL, c, 2), 0);
    assert_nothing_leaked();
}

/* ---------------------------------------------------------------- dumps */

static _Atomic bool storm_on;

static int storms(void *arg)
{
    _Atomic int *runs = arg;
    atomic_fetch_add(runs, 1);
    return atomic_load(&storm_on) ? -EIO : 0;
}

static void dumps_during_a_restart_storm_show_the_supervisor_whole(void **state)
{
    (void)state;
    _Atomic int runs = 0;
    atomic_store(&storm_on, true);
    /* a name that is too long, with bytes that are not UTF-8 */
    char name[200];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    name[3] = (char)0xff;
    name[4] = '\n';
    leash_child_spec c[2] = {{.name = name, .fn = storms, .arg = &runs, .restart = LEASH_TRANSIENT},
                             {.name = "calm", .fn = wait_forever}};
    struct run       r = {.opts = {.name = "s-storm",
                                   .strategy = LEASH_REST_FOR_ONE,
                                   .intensity = UINT32_MAX,
                                   .period_ms = INT64_MAX},
                          .specs = c,
                          .n = 2};
    leash_group     *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, sup_main, &r), 0);
    for (int i = 0; i < 100; i++) {
        char *d = dump_json();
        assert_non_null(d);
        assert_null(strchr(d, '\xff'));
        assert_int_equal(count_of(d, "\n"), 1); /* one line: the name's newline is escaped */
        free(d);
    }
    WAIT_FOR(atomic_load(&runs) > 10);
    atomic_store(&storm_on, false);
    WAIT_FOR(blocked_count("sleep") == 1 && group_field("s-storm", "restarts") > 0);
    leash_group_cancel(g);
    leash_group_wait(g);
    assert_int_equal(atomic_load(&r.rc), -ECANCELED);
    assert_nothing_leaked();
}

static void a_long_child_name_is_cut_between_characters(void **state)
{
    (void)state;
    char name[64];
    memset(name, 'a', 46);
    strcpy(name + 46, "\xc3\xa9tage"); /* an é across the 47-byte cut */
    leash_child_spec c = {.name = name, .fn = wait_forever};
    struct run       r = {.opts = {.name = "s-cut"}, .specs = &c, .n = 1};
    leash_group     *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, sup_main, &r), 0);
    wait_blocked("sleep", 1);
    char want[80];
    snprintf(want, sizeof want, "\"fn\":\"%.46s\"", name);
    char *d = dump_json();
    assert_non_null(d);
    assert_non_null(strstr(d, want));
    assert_null(strstr(d, "\xc3\""));
    free(d);
    leash_group_cancel(g);
    leash_group_wait(g);
    assert_int_equal(atomic_load(&r.rc), -ECANCELED);
    assert_nothing_leaked();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(backoff_near_int64_max_stays_positive_and_within_its_bounds),
        cmocka_unit_test(a_backoff_of_int64_max_ms_waits_until_cancelled),
        cmocka_unit_test(the_largest_intensity_and_period_restart_without_giving_up),
        cmocka_unit_test(a_child_that_supervises_gives_up_into_its_own_supervisor),
        cmocka_unit_test(cancelling_a_tower_of_supervisors_joins_every_level),
        cmocka_unit_test(cancellation_racing_restarts_always_joins),
        cmocka_unit_test(a_child_that_leaves_groups_open_is_restarted_after_they_are_joined),
        cmocka_unit_test(an_interrupting_deadline_reaches_a_child_in_a_foreign_call),
        cmocka_unit_test(a_supervised_child_that_forks_can_supervise_in_the_new_process),
        cmocka_unit_test(dumps_during_a_restart_storm_show_the_supervisor_whole),
        cmocka_unit_test(a_long_child_name_is_cut_between_characters),
    };
    return cmocka_run_group_tests_name("supervise_hostile", tests, quiet_setup, NULL);
}
