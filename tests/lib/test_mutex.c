/* test_mutex.c: mutexes that know their holder. */
#include "helpers.h"

#include <stdatomic.h>

struct counter {
    leash_mutex m;
    long        n;
    int         each; /* lock+unlock rounds a task makes; 0: 20000 */
};

static int add_many(void *arg)
{
    struct counter *c = arg;
    for (int i = 0; i < (c->each ? c->each : 20000); i++) {
        int err = leash_mutex_lock(&c->m);
        if (err)
            return err;
        c->n++;
        if ((err = leash_mutex_unlock(&c->m)) != 0)
            return err;
    }
    return 0;
}

static void contended_mutex_excludes(void **state)
{
    (void)state;
    struct counter c = {0};
    assert_int_equal(leash_mutex_init(&c.m, "counter"), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(leash_go(g, add_many, &c), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_int_equal(c.n, 4 * 20000);
    leash_mutex_destroy(&c.m);
    assert_nothing_leaked();
}

static void relocking_a_held_mutex_is_edeadlk(void **state)
{
    (void)state;
    leash_mutex m;
    leash_mutex_init(&m, "twice");
    uint64_t r0 = reports();
    assert_int_equal(leash_mutex_lock(&m), 0);
    assert_int_equal(leash_mutex_lock(&m), -EDEADLK);
    assert_int_equal(reports(), r0 + 1);
    assert_int_equal(leash_mutex_unlock(&m), 0);
    assert_int_equal(leash_mutex_unlock(&m), -EPERM); /* not held any more */
    leash_mutex_destroy(&m);
    assert_nothing_leaked();
}

static int unlock_other(void *arg)
{
    return leash_mutex_unlock((leash_mutex *)arg);
}

static void unlock_by_a_non_holder_is_eperm(void **state)
{
    (void)state;
    leash_mutex m;
    leash_mutex_init(&m, "mine");
    assert_int_equal(leash_mutex_lock(&m), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, unlock_other, &m), 0);
    assert_int_equal(leash_group_wait(g), -EPERM);
    assert_int_equal(leash_mutex_unlock(&m), 0);
    leash_mutex_destroy(&m);
    assert_nothing_leaked();
}

static int lock_and_return(void *arg)
{
    return leash_mutex_lock((leash_mutex *)arg); /* and never unlock */
}

static int lock_waiter(void *arg)
{
    return leash_mutex_lock((leash_mutex *)arg);
}

struct abandon {
    leash_mutex m;
    leash_chan *go;
};

static int lock_then_exit_on_signal(void *arg)
{
    struct abandon *a = arg;
    int             err = leash_mutex_lock(&a->m), v;
    if (err)
        return err;
    return leash_chan_recv(a->go, &v); /* returns holding the lock */
}

static void mutex_whose_holder_exited_fails_fast_with_eownerdead(void **state)
{
    (void)state;
    leash_mutex m;
    leash_mutex_init(&m, "abandoned");
    uint64_t     r0 = reports();
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, lock_and_return, &m), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_int_equal(reports(), r0 + 1);
    int64_t t0 = mono_ms();
    assert_int_equal(leash_mutex_lock(&m), -EOWNERDEAD);
    assert_int_equal(leash_mutex_lock(&m), -EOWNERDEAD); /* every later call */
    assert_true(mono_ms() - t0 < NOT_HUNG_MS);           /* no waiting for a holder that is gone */
    assert_int_equal(leash_mutex_unlock(&m), -EPERM);
    assert_int_equal(reports(), r0 + 1); /* once per lock */
    leash_mutex_destroy(&m);
    assert_nothing_leaked();
}

/* A mutex locked back to back from two tasks is saturated: its waiters park
   at once instead of spinning, and the count of lockers that found it held
   shares a word with its magic and its abandoned flag. Each must still
   work: exclusion, the wake-ups, and the report of a holder that exited. */
static void a_saturated_mutex_still_excludes_and_still_knows_its_holder(void **state)
{
    (void)state;
    struct counter c = {.each = 200000};
    assert_int_equal(leash_mutex_init(&c.m, "hot"), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(leash_go(g, add_many, &c), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_int_equal(c.n, 2 * 200000);
    assert_int_equal(leash_mutex_lock(&c.m), 0);
    assert_int_equal(leash_mutex_unlock(&c.m), 0);
    /* a holder exits while the others still lock back to back (the flag
       is set beside the count they write): whoever locks next is told */
    c.n = 0;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.flags = LEASH_COLLECT}), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(leash_go(g, add_many, &c), 0);
    assert_int_equal(leash_go(g, lock_and_return, &c.m), 0);
    int rc = leash_group_wait(g);
    assert_true(rc == 0 || rc == -EOWNERDEAD); /* the lockers may all be done first */
    assert_true(c.n <= 2 * 200000);
    assert_int_equal(leash_mutex_lock(&c.m), -EOWNERDEAD);
    leash_mutex_destroy(&c.m);
    assert_nothing_leaked();
}

static void waiters_are_told_when_the_holder_exits(void **state)
{
    (void)state;
    struct abandon a;
    leash_mutex_init(&a.m, "held");
    assert_int_equal(leash_chan_open(&a.go, "go", sizeof(int), 0), 0);
    leash_group *h, *w;
    assert_int_equal(leash_group_open(&h, NULL), 0);
    assert_int_equal(leash_go(h, lock_then_exit_on_signal, &a), 0);
    wait_blocked("chan_recv", 1);
    assert_int_equal(leash_group_open(&w, &(leash_group_opts){.flags = LEASH_COLLECT}), 0);
    assert_int_equal(leash_go(w, lock_waiter, &a.m), 0);
    assert_int_equal(leash_go(w, lock_waiter, &a.m), 0);
    wait_blocked("mutex", 2);
    int v = 1;
    assert_int_equal(leash_chan_send(a.go, &v), 0);
    assert_int_equal(leash_group_wait(h), 0);
    assert_int_equal(leash_group_wait(w), -EOWNERDEAD);
    leash_chan_free(a.go);
    leash_mutex_destroy(&a.m);
    assert_nothing_leaked();
}

struct cycle {
    leash_mutex m1, m2;
    leash_chan *step;
    int         a_rc, b_rc;
};

static int task_a(void *arg)
{
    struct cycle *c = arg;
    int           v = 0;
    leash_mutex_lock(&c->m1);
    leash_chan_send(c->step, &v);       /* m1 held */
    c->a_rc = leash_mutex_lock(&c->m2); /* waits for b */
    leash_mutex_unlock(&c->m2);
    leash_mutex_unlock(&c->m1);
    return 0;
}

static int task_b(void *arg)
{
    struct cycle *c = arg;
    int           v;
    leash_mutex_lock(&c->m2);
    leash_chan_recv(c->step, &v); /* a holds m1 */
    wait_blocked("mutex", 1);     /* a waits for m2 */
    c->b_rc = leash_mutex_lock(&c->m1);
    leash_mutex_unlock(&c->m2); /* lets a through */
    return 0;
}

static void lock_cycle_is_edeadlk_not_a_hang(void **state)
{
    (void)state;
    struct cycle c = {.a_rc = 1, .b_rc = 1};
    leash_mutex_init(&c.m1, "m1");
    leash_mutex_init(&c.m2, "m2");
    assert_int_equal(leash_chan_open(&c.step, "step", sizeof(int), 0), 0);
    uint64_t     r0 = reports();
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, task_a, &c), 0);
    assert_int_equal(leash_go(g, task_b, &c), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_int_equal(c.b_rc, -EDEADLK);
    assert_int_equal(c.a_rc, 0);
    assert_int_equal(reports(), r0 + 1);
    leash_chan_free(c.step);
    leash_mutex_destroy(&c.m1);
    leash_mutex_destroy(&c.m2);
    assert_nothing_leaked();
}

static bool mutex_deadline_round(int64_t ms, void *arg)
{
    (void)arg;
    leash_mutex m;
    leash_mutex_init(&m, "busy");
    assert_int_equal(leash_mutex_lock(&m), 0);
    leash_group *g;
    int64_t      t0 = mono_ms();
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.timeout_ms = ms}), 0);
    /* in time: the child waited for the lock when the deadline came */
    bool in_time = leash_go(g, lock_waiter, &m) == 0 && blocked_before("mutex", 1, t0 + ms);
    int  rc = leash_group_wait(g);
    if (in_time)
        assert_int_equal(rc, -ETIMEDOUT);
    assert_int_equal(leash_mutex_unlock(&m), 0);
    /* the cancelled waiter left nothing behind: the lock is free */
    assert_int_equal(leash_mutex_lock(&m), 0);
    assert_int_equal(leash_mutex_unlock(&m), 0);
    leash_mutex_destroy(&m);
    assert_nothing_leaked();
    return in_time;
}

static void waiting_for_a_mutex_ends_at_the_deadline(void **state)
{
    (void)state;
    deadline_test(mutex_deadline_round, NULL);
}

static int lock_in_cancelled_scope(void *arg)
{
    leash_mutex *m = arg;
    while (leash_checkpoint() == 0)
        sched_yield();
    int err = leash_mutex_lock(m); /* free: taken, cleanup needs locks */
    if (err)
        return err;
    return leash_mutex_unlock(m) == 0 ? 0 : -1;
}

static void free_mutex_is_taken_even_in_a_cancelled_scope(void **state)
{
    (void)state;
    leash_mutex m;
    leash_mutex_init(&m, "cleanup");
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.flags = LEASH_COLLECT}), 0);
    assert_int_equal(leash_go(g, lock_in_cancelled_scope, &m), 0);
    leash_group_cancel(g);
    assert_int_equal(leash_group_wait(g), -ECANCELED); /* cancelled, and no child error */
    leash_mutex_destroy(&m);
    assert_nothing_leaked();
}

static void misuse_is_refused(void **state)
{
    (void)state;
    leash_mutex zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    assert_int_equal(leash_mutex_init(NULL, "x"), -EINVAL);
    assert_int_equal(leash_mutex_lock(NULL), -EINVAL);
    assert_int_equal(leash_mutex_unlock(NULL), -EINVAL);
    assert_int_equal(leash_mutex_lock(&zeroed), -EINVAL); /* never initialised */
    leash_mutex m;
    leash_mutex_init(&m, "gone");
    leash_mutex_destroy(&m);
    assert_int_equal(leash_mutex_lock(&m), -EINVAL); /* destroyed */
    leash_mutex_destroy(NULL);
    assert_nothing_leaked();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(contended_mutex_excludes),
        cmocka_unit_test(relocking_a_held_mutex_is_edeadlk),
        cmocka_unit_test(unlock_by_a_non_holder_is_eperm),
        cmocka_unit_test(mutex_whose_holder_exited_fails_fast_with_eownerdead),
        cmocka_unit_test(a_saturated_mutex_still_excludes_and_still_knows_its_holder),
        cmocka_unit_test(waiters_are_told_when_the_holder_exits),
        cmocka_unit_test(lock_cycle_is_edeadlk_not_a_hang),
        cmocka_unit_test(waiting_for_a_mutex_ends_at_the_deadline),
        cmocka_unit_test(free_mutex_is_taken_even_in_a_cancelled_scope),
        cmocka_unit_test(misuse_is_refused),
    };
    return cmocka_run_group_tests_name("mutex", tests, quiet_setup, NULL);
}
