/*
 * test_waiter: a task that waits for its group may run the group's queued
 * children on its own thread. Whoever runs a child, it is a task of its
 * own, and a waiter runs only children of the group it waits for.
 * (Which thread runs a child is the scheduler's choice: every test here
 * checks its rule in every round, whichever thread ran the child.)
 */
#include "helpers.h"

#include <pthread.h>

static pthread_t main_thread;

struct own {
    leash_mutex *held; /* locked by the waiter for the whole wait */
    uint64_t     waiter;
    uint64_t     id;
    int          lock_rc;
    int          listed; /* times the child's id is in its own dump */
    bool         on_waiter_thread;
    bool         waiter_in_wait;
};

static int child_own(void *arg)
{
    struct own *o = arg;
    o->id = leash_task_id();
    o->on_waiter_thread = pthread_equal(pthread_self(), main_thread);
    char *d = dump_json();
    if (d) {
        char needle[64];
        snprintf(needle, sizeof needle, "{\"id\":%llu,\"fn\":\"child_own\"",
                 (unsigned long long)o->id);
        o->listed = count_of(d, needle);
        o->waiter_in_wait = strstr(d, "\"op\":\"group_wait\"") != NULL;
        free(d);
    }
    /* the waiter holds this mutex: as a task of its own the child waits for
       it (until its group is cancelled); run as the waiter, it would get
       -EDEADLK at once */
    o->lock_rc = leash_mutex_lock(o->held);
    if (o->lock_rc == 0)
        leash_mutex_unlock(o->held);
    return 0;
}

/* Cancels the group once the dump shows its child waiting for the mutex:
   from a thread of its own, since the waiter's may be running the child. */
static void *canceller(void *arg)
{
    wait_blocked("mutex", 1);
    leash_group_cancel(arg);
    return NULL;
}

static void a_child_run_by_its_waiter_is_a_task_of_its_own(void **state)
{
    (void)state;
    main_thread = pthread_self();
    leash_mutex m;
    leash_mutex_init(&m, "held by the waiter");
    for (int round = 0; round < 10; round++) {
        struct own o = {.held = &m, .waiter = leash_task_id()};
        assert_int_equal(leash_mutex_lock(&m), 0);
        leash_group *g;
        assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "own"}), 0);
        assert_int_equal(leash_go(g, child_own, &o), 0);
        pthread_t c;
        assert_int_equal(pthread_create(&c, NULL, canceller, g), 0);
        assert_int_equal(leash_group_wait(g), -ECANCELED);
        pthread_join(c, NULL);
        assert_int_equal(leash_mutex_unlock(&m), 0);
        assert_true(o.id != 0 && o.id != o.waiter);
        assert_int_equal(o.listed, 1);
        if (o.on_waiter_thread) /* run by its waiter: which the dump shows waiting */
            assert_true(o.waiter_in_wait);
        assert_int_equal(o.lock_rc, -ECANCELED);
    }
    leash_mutex_destroy(&m);
    assert_nothing_leaked();
}

/* ------------------------------------------------------------------------ */

static _Atomic int main_waits_other; /* set just before main waits "other" */
static _Atomic int foreign_on_main;  /* an "other" child ran on main before that */

static int other_child(void *arg)
{
    (void)arg;
    if (pthread_equal(pthread_self(), main_thread) && !atomic_load(&main_waits_other))
        atomic_fetch_add(&foreign_on_main, 1);
    return 0;
}

static int mine(void *arg)
{
    (void)arg;
    return 0;
}

static void a_waiter_runs_no_child_of_another_group(void **state)
{
    (void)state;
    main_thread = pthread_self();
    for (int round = 0; round < 200; round++) {
        atomic_store(&main_waits_other, 0);
        leash_group *other, *g;
        assert_int_equal(leash_group_open(&other, &(leash_group_opts){.name = "other"}), 0);
        assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "mine"}), 0);
        for (int i = 0; i < 3; i++)
            assert_int_equal(leash_go(other, other_child, NULL), 0);
        assert_int_equal(leash_go(g, mine, NULL), 0);
        assert_int_equal(leash_group_wait(g), 0);
        atomic_store(&main_waits_other, 1);
        assert_int_equal(leash_group_wait(other), 0);
    }
    assert_int_equal(atomic_load(&foreign_on_main), 0);
    assert_nothing_leaked();
}

/* ------------------------------------------------------------------------ */

static int leaf(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
    return 0;
}

static int nested(void *arg)
{
    /* a child that waits for children of its own, possibly run by its own
       waiter: every level joins all of its children */
    leash_group *g;
    if (leash_group_open(&g, NULL) != 0)
        return -1;
    for (int i = 0; i < 4; i++)
        leash_go(g, leaf, arg);
    return leash_group_wait(g);
}

static void children_waiting_for_children_all_run(void **state)
{
    (void)state;
    _Atomic int ran = 0;
    for (int round = 0; round < 20; round++) {
        leash_group *g;
        assert_int_equal(leash_group_open(&g, NULL), 0);
        for (int i = 0; i < 3; i++)
            assert_int_equal(leash_go(g, nested, (void *)&ran), 0);
        assert_int_equal(leash_group_wait(g), 0);
    }
    assert_int_equal(atomic_load(&ran), 20 * 3 * 4);
    assert_nothing_leaked();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_child_run_by_its_waiter_is_a_task_of_its_own),
        cmocka_unit_test(a_waiter_runs_no_child_of_another_group),
        cmocka_unit_test(children_waiting_for_children_all_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
