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

static bool checkpoint_deadline_round(int64_t ms, void *arg)
{
    (void)arg;
    int          rc = 0;
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.timeout_ms = ms}), 0);
    /* in time: the child was spawned; whenever it runs, its checkpoint
       meets the deadline */
    bool in_time = leash_go(g, spin_until_cancelled, &rc) == 0;
    int  wrc = leash_group_wait(g);
    if (in_time) {
        assert_int_equal(wrc, -ETIMEDOUT);
        assert_int_equal(rc, -ETIMEDOUT);
    }
    assert_nothing_leaked();
    return in_time;
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
    deadline_test(checkpoint_deadline_round, NULL);
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

struct loop {
    int rounds, err;
};

static int endless_loop(void *arg)
{
    /* the seed's loop that never ends, with a cancellation point in it */
    struct loop *l = arg;
    while ((l->err = leash_sleep(1)) == 0)
        l->rounds++;
    return l->err;
}

static bool endless_loop_round(int64_t ms, void *arg)
{
    (void)arg;
    struct loop  l = {0};
    leash_group *g;
    int64_t      t0 = mono_ms();
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.timeout_ms = ms}), 0);
    bool spawned = leash_go(g, endless_loop, &l) == 0;
    int  rc = leash_group_wait(g);
    /* in time: the loop went round before the deadline (a sleep that never
       returned 0 would come too late every time, up to the last round) */
    bool in_time = spawned && l.rounds > 0;
    if (in_time) {
        assert_int_equal(rc, -ETIMEDOUT);
        assert_int_equal(l.err, -ETIMEDOUT);
        assert_true(mono_ms() - t0 >= ms);
    }
    assert_nothing_leaked();
    return in_time;
}

static void endless_loop_with_sleep_ends_at_the_deadline(void **state)
{
    (void)state;
    deadline_test(endless_loop_round, NULL);
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

static bool fdwait_deadline_round(int64_t ms, void *arg)
{
    struct fdw   f = {.fd = *(int *)arg, .rc = 1};
    leash_group *g;
    int64_t      t0 = mono_ms();
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.timeout_ms = ms}), 0);
    /* in time: the child was parked in fdwait when the deadline came */
    bool in_time = leash_go(g, wait_readable, &f) == 0 && blocked_before("fdwait", 1, t0 + ms);
    int  rc = leash_group_wait(g);
    if (in_time) {
        assert_int_equal(rc, -ETIMEDOUT);
        assert_int_equal(f.rc, -ETIMEDOUT);
    }
    assert_nothing_leaked();
    return in_time;
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
    deadline_test(fdwait_deadline_round, &p[0]);
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
    /* far beyond the test's end: it cannot pass before the child reads it */
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.timeout_ms = 600000}), 0);
    assert_int_equal(leash_go(g, read_deadline, &d), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_true(d >= before + 600000 && d <= mono_ms() + 600000);
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, read_deadline, &d), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_true(d == INT64_MAX);
    assert_nothing_leaked();
}

struct foreign {
    int         fd;
    int         rc, err;
    _Atomic int entered, done; /* done: rc and err are set */
};

static int foreign_read(void *arg)
{
    /* a foreign call with no timeout: a plain read(2) on a pipe nobody writes */
    struct foreign *f = arg;
    char            c;
    atomic_store(&f->entered, 1);
    f->rc = (int)read(f->fd, &c, 1);
    f->err = errno;
    atomic_store(&f->done, 1);
    return 0;
}

/* A LEASH_INTERRUPT group, and a pipe nobody writes for f to read from. */
static leash_group *interrupt_group(int p[2], struct foreign *f)
{
    assert_int_equal(pipe(p), 0);
    *f = (struct foreign){.fd = p[0]};
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.flags = LEASH_INTERRUPT}), 0);
    return g;
}

/* Whether *flag is set before the CLOCK_MONOTONIC time until_ms. */
static bool set_before(_Atomic int *flag, int64_t until_ms)
{
    while (!atomic_load(flag)) {
        if (mono_ms() >= until_ms)
            return false;
        poll_pause();
    }
    return true;
}

static bool interrupt_round(int64_t ms, void *arg)
{
    (void)arg;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct foreign f = {.fd = p[0]};
    leash_group   *g;
    int64_t        t0 = mono_ms();
    assert_int_equal(
        leash_group_open(&g, &(leash_group_opts){.timeout_ms = ms, .flags = LEASH_INTERRUPT}), 0);
    /* in time: the child was on its way into read(2) before the deadline */
    bool in_time = leash_go(g, foreign_read, &f) == 0 && set_before(&f.entered, t0 + ms);
    if (!in_time)
        assert_int_equal(write(p[1], "x", 1), 1); /* whatever the child does, it ends */
    int rc = leash_group_wait(g);
    if (in_time) {
        assert_int_equal(rc, -ETIMEDOUT);
        assert_true(mono_ms() - t0 < NOT_HUNG_MS);
        assert_int_equal(f.rc, -1);
        assert_int_equal(f.err, EINTR);
    }
    close(p[0]);
    close(p[1]);
    assert_nothing_leaked();
    return in_time;
}

static void interrupt_group_makes_foreign_calls_fail_with_eintr(void **state)
{
    (void)state;
    deadline_test(interrupt_round, NULL);
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
    int            p[2];
    struct foreign f;
    leash_group   *g = interrupt_group(p, &f);
    assert_int_equal(leash_go(g, nested_foreign, &f), 0);
    wait_count(&f.entered, 1);
    leash_group_cancel(g);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_int_equal(f.err, EINTR);
    close(p[0]);
    close(p[1]);
    assert_nothing_leaked();
}

static _Atomic int spinners_stop;

static int spin_until_told(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
    while (!atomic_load(&spinners_stop))
        ;
    return 0;
}

static void interrupt_reaches_a_task_that_starts_after_the_cancel(void **state)
{
    (void)state;
    /* a task spinning on every CPU: a new child waits in the pool's queue
       (until the pool's monitor adds a worker), so the cancel below mostly
       comes before it starts; it must be interrupted all the same */
    int          ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    _Atomic int  spinning = 0;
    leash_group *busy;
    atomic_store(&spinners_stop, 0);
    assert_int_equal(leash_group_open(&busy, NULL), 0);
    for (int i = 0; i < ncpu; i++)
        assert_int_equal(leash_go(busy, spin_until_told, &spinning), 0);
    wait_count(&spinning, ncpu);
    for (int round = 0; round < 10; round++) {
        int            p[2];
        struct foreign f;
        leash_group   *g = interrupt_group(p, &f);
        assert_int_equal(leash_go(g, foreign_read, &f), 0);
        leash_group_cancel(g);
        int64_t until = mono_ms() + NOT_HUNG_MS;
        while (!atomic_load(&f.done) && mono_ms() < until)
            poll_pause();
        if (!atomic_load(&f.done)) {
            assert_int_equal(write(p[1], "x", 1), 1); /* let it go, then fail */
            leash_group_wait(g);
            fail_msg("round %d: a task that started in a cancelled LEASH_INTERRUPT group "
                     "was never interrupted",
                     round);
        }
        assert_int_equal(leash_group_wait(g), -ECANCELED);
        assert_int_equal(f.rc, -1);
        assert_int_equal(f.err, EINTR);
        close(p[0]);
        close(p[1]);
    }
    atomic_store(&spinners_stop, 1);
    assert_int_equal(leash_group_wait(busy), 0);
    assert_nothing_leaked();
}

/* The library's hooks for the tests (group.c, timer.c). */
extern void (*leash__begin_hook)(void *arg);
extern _Atomic uint64_t leash__intr_sweeps;
void                    leash__intr_kick(void);

static struct {
    void       *target;
    _Atomic int held, cancelled, stuck;
} late;

/* Holds the child a worker has just taken off the queue, before it goes on
   its group's list, until the timer has swept the cancelled group twice:
   the second sweep began after the cancel and found no child listed. */
static void hold_until_swept(void *arg)
{
    if (arg != late.target)
        return;
    atomic_store(&late.held, 1);
    int64_t until = mono_ms() + TEST_WAIT_MS;
    while (!atomic_load(&late.cancelled)) {
        if (mono_ms() > until) {
            atomic_store(&late.stuck, 1);
            return;
        }
        poll_pause();
    }
    uint64_t seen = atomic_load(&leash__intr_sweeps);
    while (atomic_load(&leash__intr_sweeps) < seen + 2) {
        if (mono_ms() > until) {
            atomic_store(&late.stuck, 1);
            return;
        }
        leash__intr_kick(); /* another sweep, whatever the timer waits for */
        poll_pause();
    }
}

static void interrupt_reaches_a_child_the_sweep_did_not_see(void **state)
{
    (void)state;
    int            p[2];
    struct foreign f;
    leash_group   *g = interrupt_group(p, &f);
    late.target = &f;
    atomic_store(&late.held, 0);
    atomic_store(&late.cancelled, 0);
    atomic_store(&late.stuck, 0);
    leash__begin_hook = hold_until_swept;
    assert_int_equal(leash_go(g, foreign_read, &f), 0);
    wait_count(&late.held, 1); /* off the queue: nothing there keeps the timer awake */
    leash_group_cancel(g);
    atomic_store(&late.cancelled, 1);
    int64_t until = mono_ms() + NOT_HUNG_MS;
    while (!atomic_load(&f.done) && mono_ms() < until)
        poll_pause();
    bool interrupted = atomic_load(&f.done);
    if (!interrupted)
        assert_int_equal(write(p[1], "x", 1), 1); /* let it go, then fail */
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    leash__begin_hook = NULL;
    assert_false(atomic_load(&late.stuck));
    if (!interrupted)
        fail_msg("a child listed after the timer swept its cancelled LEASH_INTERRUPT group "
                 "was never interrupted");
    assert_int_equal(f.rc, -1);
    assert_int_equal(f.err, EINTR);
    close(p[0]);
    close(p[1]);
    assert_nothing_leaked();
}

int main(int argc, char **argv)
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
        cmocka_unit_test(interrupt_reaches_a_task_that_starts_after_the_cancel),
        cmocka_unit_test(interrupt_reaches_a_child_the_sweep_did_not_see),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]); /* one test by name (a glob) */
    return cmocka_run_group_tests_name("cancel", tests, quiet_setup, NULL);
}
