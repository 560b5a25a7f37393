/* test_cancel.c: checkpoint, sleep, fdwait, deadline and LEASH_INTERRUPT. */
#include "helpers.h"

#include <poll.h>
#include <stdatomic.h>

static int spin_until_cancelled(void *arg)
{
    int *rc = arg;
    while ((*rc = leash_checkpoint()) == 0)
        sched_yield();
    return 0;
}

static void checkpoint_says_why_the_scope_ended(void **state)
{
    (void)state;
    assert_int_equal(leash_checkpoint(), 0); /* a root task is never cancelled */
    int          rc = 0;
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, spin_until_cancelled, &rc), 0);
    leash_group_cancel(g);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_int_equal(rc, -ECANCELED);
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.timeout_ms = 10}), 0);
    assert_int_equal(leash_go(g, spin_until_cancelled, &rc), 0);
    assert_int_equal(leash_group_wait(g), -ETIMEDOUT);
    assert_int_equal(rc, -ETIMEDOUT);
    assert_nothing_leaked();
}

static int long_sleep(void *arg)
{
    *(int *)arg = leash_sleep(1000000);
    return 0;
}

static void sleep_returns_early_when_cancelled(void **state)
{
    (void)state;
    int          rc = 1;
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, long_sleep, &rc), 0);
    wait_blocked("sleep", 1);
    leash_group_cancel(g);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_int_equal(rc, -ECANCELED);
    assert_nothing_leaked();
}

static void sleep_sleeps(void **state)
{
    (void)state;
    assert_int_equal(leash_sleep(0), 0);
    assert_int_equal(leash_sleep(-5), 0);
    int64_t t0 = mono_ms();
    assert_int_equal(leash_sleep(15), 0);
    assert_true(mono_ms() - t0 >= 15);
    assert_nothing_leaked();
}

static int endless_loop(void *arg)
{
    /* the seed's loop that never ends, with a cancellation point in it */
    int *rounds = arg, err;
    while ((err = leash_sleep(1)) == 0)
        (*rounds)++;
    return err;
}

static void endless_loop_with_sleep_ends_at_the_deadline(void **state)
{
    (void)state;
    int          rounds = 0;
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.timeout_ms = 30}), 0);
    assert_int_equal(leash_go(g, endless_loop, &rounds), 0);
    assert_int_equal(leash_group_wait(g), -ETIMEDOUT);
    assert_true(rounds > 0);
    assert_nothing_leaked();
}

struct fdw {
    int fd;
    int rc;
};

static int wait_readable(void *arg)
{
    struct fdw *f = arg;
    f->rc = leash_fdwait(f->fd, POLLIN, -1);
    return 0;
}

static void fdwait_returns_revents(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(leash_fdwait(p[0], POLLIN, 0), -ETIMEDOUT);
    int64_t t0 = mono_ms();
    assert_int_equal(leash_fdwait(p[0], POLLIN, 15), -ETIMEDOUT);
    assert_true(mono_ms() - t0 >= 15);
    assert_int_equal(write(p[1], "x", 1), 1);
    assert_int_equal(leash_fdwait(p[0], POLLIN, -1), POLLIN);
    assert_int_equal(leash_fdwait(p[1], POLLOUT, 0), POLLOUT);
    close(p[0]);
    close(p[1]);
    assert_nothing_leaked();
}

static void fdwait_is_cancellable(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct fdw   f = {.fd = p[0], .rc = 1};
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, wait_readable, &f), 0);
    wait_blocked("fdwait", 1);
    leash_group_cancel(g);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_int_equal(f.rc, -ECANCELED);
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.timeout_ms = 15}), 0);
    assert_int_equal(leash_go(g, wait_readable, &f), 0);
    assert_int_equal(leash_group_wait(g), -ETIMEDOUT);
    assert_int_equal(f.rc, -ETIMEDOUT);
    close(p[0]);
    close(p[1]);
    assert_nothing_leaked();
}

static void fdwait_refuses_bad_arguments(void **state)
{
    (void)state;
    assert_int_equal(leash_fdwait(-1, POLLIN, 0), -EINVAL);
    assert_int_equal(leash_fdwait(0, 0, 0), -EINVAL);
    int p[2];
    assert_int_equal(pipe(p), 0);
    close(p[0]);
    close(p[1]);
    assert_int_equal(leash_fdwait(p[0], POLLIN, 0), -EBADF);
    assert_nothing_leaked();
}

static int read_deadline(void *arg)
{
    *(int64_t *)arg = leash_deadline();
    return 0;
}

static void deadline_is_the_earliest_around_the_task(void **state)
{
    (void)state;
    assert_true(leash_deadline() == INT64_MAX);
    int64_t      d = 0, before = mono_ms();
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.timeout_ms = 5000}), 0);
    assert_int_equal(leash_go(g, read_deadline, &d), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_true(d >= before + 5000 && d <= mono_ms() + 5000);
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, read_deadline, &d), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_true(d == INT64_MAX);
    assert_nothing_leaked();
}

struct foreign {
    int fd;
    int rc, err;
};

static int foreign_read(void *arg)
{
    /* a foreign call with no timeout: a plain read(2) on a pipe nobody writes */
    struct foreign *f = arg;
    char            c;
    f->rc = (int)read(f->fd, &c, 1);
    f->err = errno;
    return 0;
}

static void interrupt_group_makes_foreign_calls_fail_with_eintr(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct foreign f = {.fd = p[0]};
    leash_group   *g;
    int64_t        t0 = mono_ms();
    assert_int_equal(
        leash_group_open(&g, &(leash_group_opts){.timeout_ms = 20, .flags = LEASH_INTERRUPT}), 0);
    assert_int_equal(leash_go(g, foreign_read, &f), 0);
    assert_int_equal(leash_group_wait(g), -ETIMEDOUT);
    assert_true(mono_ms() - t0 < 5000);
    assert_int_equal(f.rc, -1);
    assert_int_equal(f.err, EINTR);
    close(p[0]);
    close(p[1]);
    assert_nothing_leaked();
}

static int nested_foreign(void *arg)
{
    leash_group *g;
    leash_group_open(&g, &(leash_group_opts){.name = "inner"});
    leash_go(g, foreign_read, arg);
    return leash_group_wait(g);
}

static void interrupt_applies_to_the_whole_subtree(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct foreign f = {.fd = p[0]};
    leash_group   *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.flags = LEASH_INTERRUPT}), 0);
    assert_int_equal(leash_go(g, nested_foreign, &f), 0);
    wait_task("foreign_read");
    leash_group_cancel(g);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_int_equal(f.err, EINTR);
    close(p[0]);
    close(p[1]);
    assert_nothing_leaked();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(checkpoint_says_why_the_scope_ended),
        cmocka_unit_test(sleep_returns_early_when_cancelled),
        cmocka_unit_test(sleep_sleeps),
        cmocka_unit_test(endless_loop_with_sleep_ends_at_the_deadline),
        cmocka_unit_test(fdwait_returns_revents),
        cmocka_unit_test(fdwait_is_cancellable),
        cmocka_unit_test(fdwait_refuses_bad_arguments),
        cmocka_unit_test(deadline_is_the_earliest_around_the_task),
        cmocka_unit_test(interrupt_group_makes_foreign_calls_fail_with_eintr),
        cmocka_unit_test(interrupt_applies_to_the_whole_subtree),
    };
    return cmocka_run_group_tests_name("cancel", tests, quiet_setup, NULL);
}
