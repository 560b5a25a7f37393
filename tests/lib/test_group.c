/* test_group.c: groups, spawning, joining, deadlines, fail-fast and limits. */
#include "helpers.h"

#include <stdatomic.h>

static int ret_arg(void *arg)
{
    return (int)(intptr_t)arg;
}

static int block_on_chan(void *arg)
{
    int v;
    return leash_chan_recv((leash_chan *)arg, &v);
}

static void group_wait_returns_zero_when_children_succeed(void **state)
{
    (void)state;
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "ok"}), 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(leash_go(g, ret_arg, (void *)0), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_nothing_leaked();
}

static void group_open_accepts_null_opts(void **state)
{
    (void)state;
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_nothing_leaked();
}

struct failing {
    leash_chan *c;
    _Atomic int sibling_rc;
};

static int sibling(void *arg)
{
    struct failing *f = arg;
    int             v;
    atomic_store(&f->sibling_rc, leash_chan_recv(f->c, &v));
    return 0;
}

static int fail_after_sibling_blocks(void *arg)
{
    (void)arg;
    wait_blocked("chan_recv", 1);
    return -42;
}

static void first_error_cancels_siblings_and_is_returned(void **state)
{
    (void)state;
    struct failing f = {.sibling_rc = 1};
    assert_int_equal(leash_chan_open(&f.c, "never", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "errgroup"}), 0);
    assert_int_equal(leash_go(g, sibling, &f), 0);
    assert_int_equal(leash_go(g, fail_after_sibling_blocks, NULL), 0);
    assert_int_equal(leash_group_wait(g), -42);
    assert_int_equal(atomic_load(&f.sibling_rc), -ECANCELED);
    leash_chan_free(f.c);
    assert_nothing_leaked();
}

static int fail_now(void *arg)
{
    (void)arg;
    return -7;
}

static void collect_keeps_siblings_running(void **state)
{
    (void)state;
    struct failing f = {.sibling_rc = 1};
    assert_int_equal(leash_chan_open(&f.c, "later", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(
        leash_group_open(&g, &(leash_group_opts){.name = "collect", .flags = LEASH_COLLECT}), 0);
    assert_int_equal(leash_go(g, sibling, &f), 0);
    wait_blocked("chan_recv", 1);
    assert_int_equal(leash_go(g, fail_now, NULL), 0);
    struct leash_stats st;
    do { /* until the failing child has returned */
        sched_yield();
        leash_stats(&st);
    } while (st.tasks_live > 1);
    int v = 5;
    assert_int_equal(leash_chan_send(f.c, &v), 0); /* the sibling is still there */
    assert_int_equal(leash_group_wait(g), -7);     /* the first error, not a cancellation */
    assert_int_equal(atomic_load(&f.sibling_rc), 0);
    leash_chan_free(f.c);
    assert_nothing_leaked();
}

static void deadline_cancels_blocked_child_with_etimedout(void **state)
{
    (void)state;
    leash_chan *c;
    assert_int_equal(leash_chan_open(&c, "nobody", sizeof(int), 0), 0);
    leash_group *g;
    int64_t      t0 = mono_ms();
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "d", .timeout_ms = 30}), 0);
    assert_int_equal(leash_go(g, block_on_chan, c), 0);
    assert_int_equal(leash_group_wait(g), -ETIMEDOUT);
    assert_true(mono_ms() - t0 >= 30);
    leash_chan_free(c);
    assert_nothing_leaked();
}

static void deadline_after_children_returned_changes_nothing(void **state)
{
    (void)state;
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.timeout_ms = 5}), 0);
    assert_int_equal(leash_go(g, ret_arg, (void *)0), 0);
    /* time passing is the point here: the deadline must pass before the wait */
    int64_t until = mono_ms() + 20;
    while (mono_ms() < until)
        sched_yield();
    assert_int_equal(leash_group_wait(g), 0);
    assert_nothing_leaked();
}

struct seen {
    int64_t deadline;
    int     sleep_rc;
};

static int inner_child(void *arg)
{
    struct seen *s = arg;
    s->deadline = leash_deadline();
    s->sleep_rc = leash_sleep(100000);
    return 0;
}

static int opener(void *arg)
{
    leash_group *inner;
    int          err = leash_group_open(&inner, &(leash_group_opts){.name = "inner"});
    if (err)
        return err;
    leash_go(inner, inner_child, arg);
    return leash_group_wait(inner);
}

static void enclosing_deadline_applies_to_nested_groups(void **state)
{
    (void)state;
    struct seen  s = {0};
    leash_group *outer;
    int64_t      before = mono_ms();
    assert_int_equal(
        leash_group_open(&outer, &(leash_group_opts){.name = "outer", .timeout_ms = 40}), 0);
    assert_int_equal(leash_go(outer, opener, &s), 0);
    /* the opener's wait ends with its group cut by the enclosing deadline */
    assert_int_equal(leash_group_wait(outer), -ETIMEDOUT);
    assert_int_equal(s.sleep_rc, -ETIMEDOUT);
    assert_true(s.deadline >= before + 40 && s.deadline <= mono_ms());
    assert_nothing_leaked();
}

static int own_deadline_child(void *arg)
{
    struct seen *s = arg;
    leash_group *inner;
    leash_group_open(&inner, &(leash_group_opts){.name = "short", .timeout_ms = 20});
    leash_go(inner, inner_child, s);
    return leash_group_wait(inner) == -ETIMEDOUT ? 0 : -1;
}

static void shorter_inner_deadline_wins(void **state)
{
    (void)state;
    struct seen  s = {0};
    leash_group *outer;
    int64_t      before = mono_ms();
    assert_int_equal(leash_group_open(&outer, &(leash_group_opts){.timeout_ms = 100000}), 0);
    assert_int_equal(leash_go(outer, own_deadline_child, &s), 0);
    assert_int_equal(leash_group_wait(outer), 0);
    assert_int_equal(s.sleep_rc, -ETIMEDOUT);
    assert_true(s.deadline < before + 1000);
    assert_nothing_leaked();
}

static void cancel_reaches_the_whole_subtree(void **state)
{
    (void)state;
    struct seen  s = {0};
    leash_group *outer;
    assert_int_equal(leash_group_open(&outer, &(leash_group_opts){.name = "outer"}), 0);
    assert_int_equal(leash_go(outer, opener, &s), 0);
    wait_blocked("sleep", 1);
    leash_group_cancel(outer);
    leash_group_cancel(outer); /* idempotent */
    assert_int_equal(leash_group_wait(outer), -ECANCELED);
    assert_int_equal(s.sleep_rc, -ECANCELED);
    assert_nothing_leaked();
}

static int open_in_cancelled_scope(void *arg)
{
    int         *out = arg;
    leash_group *g;
    while (leash_checkpoint() == 0)
        sched_yield();
    int err = leash_group_open(&g, NULL);
    if (err)
        return err;
    out[0] = leash_go(g, ret_arg, (void *)0);
    out[1] = leash_group_wait(g);
    return 0;
}

static void group_opened_in_cancelled_scope_is_born_cancelled(void **state)
{
    (void)state;
    int          out[2] = {1, 1};
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, open_in_cancelled_scope, out), 0);
    leash_group_cancel(g);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_int_equal(out[0], -ECANCELED);
    assert_int_equal(out[1], -ECANCELED);
    assert_nothing_leaked();
}

static void go_on_cancelled_group_is_refused(void **state)
{
    (void)state;
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    leash_group_cancel(g);
    assert_int_equal(leash_go(g, ret_arg, (void *)0), -ECANCELED);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_nothing_leaked();
}

struct limited {
    leash_group *g;
    leash_chan  *c;
    int          spawned;
};

static int spawner(void *arg)
{
    struct limited *l = arg;
    for (int i = 0; i < 6; i++) {
        int err = leash_go(l->g, block_on_chan, l->c);
        if (err)
            return err;
        l->spawned++;
    }
    return 0;
}

static void limit_bounds_running_children(void **state)
{
    (void)state;
    struct limited l = {0};
    assert_int_equal(leash_chan_open(&l.c, "work", sizeof(int), 0), 0);
    assert_int_equal(leash_group_open(&l.g, &(leash_group_opts){.name = "pool", .limit = 2}), 0);
    leash_group *s;
    assert_int_equal(leash_group_open(&s, &(leash_group_opts){.name = "spawner"}), 0);
    assert_int_equal(leash_go(s, spawner, &l), 0);
    wait_blocked("go", 1);
    wait_blocked("chan_recv", 2);
    char *d = dump_json();
    assert_int_equal(count_of(d, "\"fn\":\"block_on_chan\""), 2);
    free(d);
    for (int i = 0; i < 6; i++)
        assert_int_equal(leash_chan_send(l.c, &i), 0);
    assert_int_equal(leash_group_wait(s), 0);
    assert_int_equal(l.spawned, 6);
    assert_int_equal(leash_group_wait(l.g), 0);
    leash_chan_free(l.c);
    assert_nothing_leaked();
}

static int spawn_into_full(void *arg)
{
    return leash_go((leash_group *)arg, ret_arg, (void *)0);
}

static void waiting_for_a_slot_is_cancellable(void **state)
{
    (void)state;
    leash_chan *c;
    assert_int_equal(leash_chan_open(&c, "hold", sizeof(int), 0), 0);
    leash_group *full, *s;
    assert_int_equal(leash_group_open(&full, &(leash_group_opts){.limit = 1}), 0);
    assert_int_equal(leash_go(full, block_on_chan, c), 0);
    assert_int_equal(leash_group_open(&s, &(leash_group_opts){.timeout_ms = 20}), 0);
    assert_int_equal(leash_go(s, spawn_into_full, full), 0);
    /* the spawner's own deadline ends its wait for a slot */
    assert_int_equal(leash_group_wait(s), -ETIMEDOUT);
    leash_group_cancel(full);
    assert_int_equal(leash_group_wait(full), -ECANCELED);
    leash_chan_free(c);
    assert_nothing_leaked();
}

static void waiting_for_a_slot_ends_when_the_group_is_cancelled(void **state)
{
    (void)state;
    leash_chan *c;
    assert_int_equal(leash_chan_open(&c, "hold", sizeof(int), 0), 0);
    leash_group *full, *s;
    assert_int_equal(leash_group_open(&full, &(leash_group_opts){.limit = 1}), 0);
    assert_int_equal(leash_go(full, block_on_chan, c), 0);
    assert_int_equal(leash_group_open(&s, &(leash_group_opts){.flags = LEASH_COLLECT}), 0);
    assert_int_equal(leash_go(s, spawn_into_full, full), 0);
    wait_blocked("go", 1);
    leash_group_cancel(full);
    assert_int_equal(leash_group_wait(s), -ECANCELED);
    assert_int_equal(leash_group_wait(full), -ECANCELED);
    leash_chan_free(c);
    assert_nothing_leaked();
}

struct fan {
    leash_group *g;
    _Atomic int  count;
};

static int leaf(void *arg)
{
    atomic_fetch_add(&((struct fan *)arg)->count, 1);
    return 0;
}

static int add_siblings(void *arg)
{
    struct fan *f = arg;
    for (int i = 0; i < 10; i++)
        if (leash_go(f->g, leaf, f) != 0)
            return -1;
    return 0;
}

static void children_may_add_siblings(void **state)
{
    (void)state;
    struct fan f = {0};
    assert_int_equal(leash_group_open(&f.g, NULL), 0);
    assert_int_equal(leash_go(f.g, add_siblings, &f), 0);
    assert_int_equal(leash_group_wait(f.g), 0);
    assert_int_equal(atomic_load(&f.count), 10);
    assert_nothing_leaked();
}

struct unwaited {
    leash_chan *c;
    int         child_rc;
};

static int unwaited_child(void *arg)
{
    struct unwaited *u = arg;
    int              v;
    u->child_rc = leash_chan_recv(u->c, &v);
    return 0;
}

static int forget_to_wait(void *arg)
{
    leash_group *g;
    leash_group_open(&g, &(leash_group_opts){.name = "forgotten"});
    leash_go(g, unwaited_child, arg);
    wait_blocked("chan_recv", 1);
    return 0; /* returns with g open */
}

static void task_returning_with_open_group_gets_it_cancelled_waited_and_reported(void **state)
{
    (void)state;
    struct unwaited u = {.child_rc = 1};
    assert_int_equal(leash_chan_open(&u.c, "never", sizeof(int), 0), 0);
    uint64_t     r0 = reports();
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, forget_to_wait, &u), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_int_equal(u.child_rc, -ECANCELED);
    assert_int_equal(reports(), r0 + 1);
    leash_chan_free(u.c);
    assert_nothing_leaked();
}

static int wait_someone_elses(void *arg)
{
    return leash_group_wait((leash_group *)arg);
}

static void only_the_opener_may_wait(void **state)
{
    (void)state;
    leash_group *mine, *g;
    assert_int_equal(leash_group_open(&mine, NULL), 0);
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.flags = LEASH_COLLECT}), 0);
    assert_int_equal(leash_go(g, wait_someone_elses, mine), 0);
    assert_int_equal(leash_group_wait(g), -EPERM);
    assert_int_equal(leash_group_wait(mine), 0); /* untouched by the refused wait */
    assert_nothing_leaked();
}

static void bad_arguments_are_refused(void **state)
{
    (void)state;
    leash_group *g = (leash_group *)1;
    assert_int_equal(leash_group_open(NULL, NULL), -EINVAL);
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.timeout_ms = -1}), -EINVAL);
    assert_null(g);
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.flags = 0x80}), -EINVAL);
    assert_int_equal(leash_go(NULL, ret_arg, NULL), -EINVAL);
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, NULL, NULL), -EINVAL);
    assert_int_equal(leash_group_wait(NULL), -EINVAL);
    leash_group_cancel(NULL);
    assert_int_equal(leash_group_wait(g), 0);
    assert_nothing_leaked();
}

struct cut {
    leash_chan *c;
    _Atomic int child_done;
};

static int slow_to_stop(void *arg)
{
    struct cut *c = arg;
    int         v;
    leash_chan_recv(c->c, &v); /* cancelled by the enclosing deadline */
    /* cleanup after the cancellation still runs before the wait returns */
    for (int i = 0; i < 1000; i++)
        sched_yield();
    atomic_store(&c->child_done, 1);
    return 0;
}

static int waiter_in_short_scope(void *arg)
{
    leash_group *g;
    leash_group_open(&g, &(leash_group_opts){.name = "joined"});
    leash_go(g, slow_to_stop, arg);
    int rc = leash_group_wait(g);
    return atomic_load(&((struct cut *)arg)->child_done) ? rc : -1000;
}

static void wait_is_never_cut_short(void **state)
{
    (void)state;
    struct cut c = {0};
    assert_int_equal(leash_chan_open(&c.c, "never", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.timeout_ms = 20}), 0);
    assert_int_equal(leash_go(g, waiter_in_short_scope, &c), 0);
    assert_int_equal(leash_group_wait(g), -ETIMEDOUT);
    assert_int_equal(atomic_load(&c.child_done), 1);
    leash_chan_free(c.c);
    assert_nothing_leaked();
}

static int read_pipe(void *arg)
{
    char c;
    /* a foreign call: leash cannot see that this task is blocked */
    return read(*(int *)arg, &c, 1) == 1 ? 0 : -EIO;
}

static int say_hello(void *arg)
{
    int v = 42;
    return leash_chan_send((leash_chan *)arg, &v);
}

static void queued_task_runs_while_every_worker_is_blocked_outside_leash(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    leash_chan *c;
    assert_int_equal(leash_chan_open(&c, "hello", sizeof(int), 0), 0);
    leash_group *blocked, *g;
    assert_int_equal(leash_group_open(&blocked, NULL), 0);
    long n = sysconf(_SC_NPROCESSORS_ONLN) + 2; /* more than there are CPUs */
    for (long i = 0; i < n; i++)
        assert_int_equal(leash_go(blocked, read_pipe, &p[0]), 0);
    wait_task("read_pipe");
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, say_hello, c), 0);
    int v = 0;
    assert_int_equal(leash_chan_recv(c, &v), 0); /* the pool made room for it */
    assert_int_equal(v, 42);
    assert_int_equal(leash_group_wait(g), 0);
    for (long i = 0; i < n; i++)
        assert_int_equal(write(p[1], "x", 1), 1);
    assert_int_equal(leash_group_wait(blocked), 0);
    close(p[0]);
    close(p[1]);
    leash_chan_free(c);
    assert_nothing_leaked();
}

static void steady_state_spawns_make_no_threads(void **state)
{
    (void)state;
    struct leash_stats a, b;
    leash_group       *g;
    for (int round = 0; round < 2; round++) {
        leash_stats(&a);
        for (int i = 0; i < 2000; i++) {
            assert_int_equal(leash_group_open(&g, NULL), 0);
            assert_int_equal(leash_go(g, ret_arg, (void *)0), 0);
            assert_int_equal(leash_group_wait(g), 0);
        }
        leash_stats(&b);
    }
    /* one task at a time: after the first round the pool has what it needs */
    assert_true(b.threads <= a.threads);
    assert_true(b.tasks_started >= a.tasks_started + 2000);
    assert_nothing_leaked();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(group_wait_returns_zero_when_children_succeed),
        cmocka_unit_test(group_open_accepts_null_opts),
        cmocka_unit_test(first_error_cancels_siblings_and_is_returned),
        cmocka_unit_test(collect_keeps_siblings_running),
        cmocka_unit_test(deadline_cancels_blocked_child_with_etimedout),
        cmocka_unit_test(deadline_after_children_returned_changes_nothing),
        cmocka_unit_test(enclosing_deadline_applies_to_nested_groups),
        cmocka_unit_test(shorter_inner_deadline_wins),
        cmocka_unit_test(cancel_reaches_the_whole_subtree),
        cmocka_unit_test(group_opened_in_cancelled_scope_is_born_cancelled),
        cmocka_unit_test(go_on_cancelled_group_is_refused),
        cmocka_unit_test(limit_bounds_running_children),
        cmocka_unit_test(waiting_for_a_slot_is_cancellable),
        cmocka_unit_test(waiting_for_a_slot_ends_when_the_group_is_cancelled),
        cmocka_unit_test(children_may_add_siblings),
        cmocka_unit_test(task_returning_with_open_group_gets_it_cancelled_waited_and_reported),
        cmocka_unit_test(only_the_opener_may_wait),
        cmocka_unit_test(bad_arguments_are_refused),
        cmocka_unit_test(wait_is_never_cut_short),
        cmocka_unit_test(queued_task_runs_while_every_worker_is_blocked_outside_leash),
        cmocka_unit_test(steady_state_spawns_make_no_threads),
    };
    return cmocka_run_group_tests_name("group", tests, quiet_setup, NULL);
}
