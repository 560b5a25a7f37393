/* test_group.c: groups, spawning, joining, deadlines, fail-fast and limits. */
#include "helpers.h"

#include <pthread.h>

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

struct blocked_child {
    leash_chan *c;
    int         rc;
};

static int block_and_keep_rc(void *arg)
{
    struct blocked_child *b = arg;
    int                   v;
    b->rc = leash_chan_recv(b->c, &v);
    return b->rc;
}

static bool blocked_child_round(int64_t ms, void *arg)
{
    (void)arg;
    struct blocked_child b = {.rc = 1};
    assert_int_equal(leash_chan_open(&b.c, "nobody", sizeof(int), 0), 0);
    leash_group *g;
    int64_t      t0 = mono_ms();
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "d", .timeout_ms = ms}), 0);
    /* in time: the child was parked in recv when the deadline came */
    bool in_time =
        leash_go(g, block_and_keep_rc, &b) == 0 && blocked_before("chan_recv", 1, t0 + ms);
    int rc = leash_group_wait(g);
    if (in_time) {
        assert_int_equal(rc, -ETIMEDOUT);
        assert_int_equal(b.rc, -ETIMEDOUT);
        assert_true(mono_ms() - t0 >= ms); /* not early */
    }
    leash_chan_free(b.c);
    assert_nothing_leaked();
    return in_time;
}

static void deadline_cancels_blocked_child_with_etimedout(void **state)
{
    (void)state;
    deadline_test(blocked_child_round, NULL);
}

/* Whether the dump shows the group named name cancelled. */
static bool group_cancelled(const char *name)
{
    char want[96];
    snprintf(want, sizeof want, "\"name\":\"%s\",", name);
    char *d = dump_json();
    assert_non_null(d);
    const char *g = strstr(d, want);
    const char *c = g ? strstr(g, "\"cancelled\":") : NULL;
    bool        yes = c && !strncmp(c, "\"cancelled\":true", 16);
    free(d);
    return yes;
}

static bool deadline_after_return_round(int64_t ms, void *arg)
{
    (void)arg;
    leash_group *g;
    int64_t      t0 = mono_ms();
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "late", .timeout_ms = ms}),
                     0);
    int go = leash_go(g, ret_arg, (void *)0);
    wait_tasks_ended();
    /* in time: the child had returned before the deadline passed */
    bool in_time = go == 0 && mono_ms() < t0 + ms;
    if (in_time) {
        /* the deadline passes and the timer acts on it before the wait:
           that is what must change nothing */
        int64_t until = mono_ms() + TEST_WAIT_MS;
        while (!group_cancelled("late")) {
            if (mono_ms() > until)
                fail_msg("the deadline of a group with no child never fired");
            poll_pause();
        }
        assert_int_equal(leash_group_wait(g), 0);
    } else {
        leash_group_wait(g);
    }
    assert_nothing_leaked();
    return in_time;
}

static void deadline_after_children_returned_changes_nothing(void **state)
{
    (void)state;
    deadline_test(deadline_after_return_round, NULL);
}

struct seen {
    int64_t     deadline;
    int         sleep_rc;
    int         inner_rc;
    _Atomic int ran;
};

static int inner_child(void *arg)
{
    struct seen *s = arg;
    s->deadline = leash_deadline();
    atomic_store(&s->ran, 1);
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

static bool enclosing_round(int64_t ms, void *arg)
{
    (void)arg;
    struct seen  s = {0};
    leash_group *outer;
    int64_t      before = mono_ms();
    assert_int_equal(
        leash_group_open(&outer, &(leash_group_opts){.name = "outer", .timeout_ms = ms}), 0);
    bool spawned = leash_go(outer, opener, &s) == 0;
    int  rc = leash_group_wait(outer);
    /* in time: the inner group took its child before the deadline; the
       child's sleep meets the deadline whenever it starts */
    bool in_time = spawned && atomic_load(&s.ran);
    if (in_time) {
        /* the opener's wait ends with its group cut by the enclosing deadline */
        assert_int_equal(rc, -ETIMEDOUT);
        assert_int_equal(s.sleep_rc, -ETIMEDOUT);
        assert_true(s.deadline >= before + ms && s.deadline <= mono_ms());
    }
    assert_nothing_leaked();
    return in_time;
}

static void enclosing_deadline_applies_to_nested_groups(void **state)
{
    (void)state;
    deadline_test(enclosing_round, NULL);
}

struct inner_deadline {
    struct seen s;
    int64_t     ms;
};

static int own_deadline_child(void *arg)
{
    struct inner_deadline *d = arg;
    leash_group           *inner;
    int err = leash_group_open(&inner, &(leash_group_opts){.name = "short", .timeout_ms = d->ms});
    if (err)
        return err;
    leash_go(inner, inner_child, &d->s);
    d->s.inner_rc = leash_group_wait(inner);
    return 0;
}

/* The outer deadline: far beyond the test's end, so only the inner one can
   pass while it runs. */
#define FAR_MS 600000

static bool inner_round(int64_t ms, void *arg)
{
    (void)arg;
    struct inner_deadline d = {.ms = ms};
    leash_group          *outer;
    int64_t               before = mono_ms();
    assert_int_equal(leash_group_open(&outer, &(leash_group_opts){.timeout_ms = FAR_MS}), 0);
    assert_int_equal(leash_go(outer, own_deadline_child, &d), 0);
    assert_int_equal(leash_group_wait(outer), 0);
    bool in_time = atomic_load(&d.s.ran);
    if (in_time) {
        assert_int_equal(d.s.inner_rc, -ETIMEDOUT);
        assert_int_equal(d.s.sleep_rc, -ETIMEDOUT);
        /* the child saw the inner deadline, which has passed, not the outer */
        assert_true(d.s.deadline >= before + ms && d.s.deadline <= mono_ms());
    }
    assert_nothing_leaked();
    return in_time;
}

static void shorter_inner_deadline_wins(void **state)
{
    (void)state;
    deadline_test(inner_round, NULL);
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

static bool slot_round(int64_t ms, void *arg)
{
    (void)arg;
    leash_chan *c;
    assert_int_equal(leash_chan_open(&c, "hold", sizeof(int), 0), 0);
    leash_group *full, *s;
    assert_int_equal(leash_group_open(&full, &(leash_group_opts){.limit = 1}), 0);
    assert_int_equal(leash_go(full, block_on_chan, c), 0);
    int64_t t0 = mono_ms();
    assert_int_equal(leash_group_open(&s, &(leash_group_opts){.timeout_ms = ms}), 0);
    /* in time: the spawner was waiting for a slot when its deadline came */
    bool in_time = leash_go(s, spawn_into_full, full) == 0 && blocked_before("go", 1, t0 + ms);
    int  rc = leash_group_wait(s);
    if (in_time) /* the spawner's own deadline ends its wait for a slot */
        assert_int_equal(rc, -ETIMEDOUT);
    leash_group_cancel(full);
    assert_int_equal(leash_group_wait(full), -ECANCELED);
    leash_chan_free(c);
    assert_nothing_leaked();
    return in_time;
}

static void waiting_for_a_slot_is_cancellable(void **state)
{
    (void)state;
    deadline_test(slot_round, NULL);
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
    _Atomic int child_started, child_done;
    int         done_at_return; /* child_done when the waiter's wait returned */
};

static int slow_to_stop(void *arg)
{
    struct cut *c = arg;
    int         v;
    atomic_store(&c->child_started, 1);
    leash_chan_recv(c->c, &v); /* cancelled by the enclosing deadline */
    /* cleanup after the cancellation still runs before the wait returns */
    for (int i = 0; i < 1000; i++)
        sched_yield();
    atomic_store(&c->child_done, 1);
    return 0;
}

static int waiter_in_short_scope(void *arg)
{
    struct cut  *c = arg;
    leash_group *g;
    leash_group_open(&g, &(leash_group_opts){.name = "joined"});
    leash_go(g, slow_to_stop, arg);
    int rc = leash_group_wait(g);
    c->done_at_return = atomic_load(&c->child_done);
    return rc;
}

static bool cut_round(int64_t ms, void *arg)
{
    (void)arg;
    struct cut c = {0};
    assert_int_equal(leash_chan_open(&c.c, "never", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.timeout_ms = ms}), 0);
    bool spawned = leash_go(g, waiter_in_short_scope, &c) == 0;
    int  rc = leash_group_wait(g);
    /* in time: the inner group took its child before the deadline */
    bool in_time = spawned && atomic_load(&c.child_started);
    if (in_time) {
        assert_int_equal(rc, -ETIMEDOUT);
        assert_int_equal(c.done_at_return, 1);
    }
    leash_chan_free(c.c);
    assert_nothing_leaked();
    return in_time;
}

static void wait_is_never_cut_short(void **state)
{
    (void)state;
    deadline_test(cut_round, NULL);
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
    struct foreign_readers r = {.fd = p[0]};
    int n = (int)sysconf(_SC_NPROCESSORS_ONLN) + 2; /* more than there are CPUs */
    for (int i = 0; i < n; i++)
        assert_int_equal(leash_go(blocked, read_pipe, &r), 0);
    wait_count(&r.entered, n); /* every worker there is sits in read(2) */
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, say_hello, c), 0);
    int v = 0;
    assert_int_equal(leash_chan_recv(c, &v), 0); /* the pool made room for it */
    assert_int_equal(v, 42);
    assert_int_equal(leash_group_wait(g), 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(write(p[1], "x", 1), 1);
    assert_int_equal(leash_group_wait(blocked), 0);
    close(p[0]);
    close(p[1]);
    leash_chan_free(c);
    assert_nothing_leaked();
}

/* Spawners and workers trade tasks in every way the pool has: a worker
   takes the queue whole, idle workers take halves of its batch, a task that
   sleeps gives its worker's batch back to the queue. Each task runs once. */
enum { TRADERS = 3, TRADE_GROUPS = 30, TRADE_TASKS = 150 };

static _Atomic int trade_runs[TRADERS][TRADE_TASKS * TRADE_GROUPS];

static int trade_one(void *arg)
{
    _Atomic int *slot = arg;
    if (atomic_fetch_add(slot, 1) == 0 && (slot - &trade_runs[0][0]) % 16 == 0)
        leash_sleep(1); /* parks: its worker's batch goes back */
    return 0;
}

static void *trader(void *arg)
{
    _Atomic int *runs = arg;
    for (int k = 0; k < TRADE_GROUPS; k++) {
        leash_group *g;
        if (leash_group_open(&g, NULL) != 0)
            return (void *)1;
        for (int i = 0; i < TRADE_TASKS; i++)
            if (leash_go(g, trade_one, &runs[k * TRADE_TASKS + i]) != 0)
                return (void *)1;
        if (leash_group_wait(g) != 0)
            return (void *)1;
    }
    return NULL;
}

static void every_task_runs_once_while_workers_trade_batches(void **state)
{
    (void)state;
    memset(trade_runs, 0, sizeof trade_runs);
    pthread_t th[TRADERS];
    for (int i = 0; i < TRADERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, trader, trade_runs[i]), 0);
    for (int i = 0; i < TRADERS; i++) {
        void *rc;
        assert_int_equal(pthread_join(th[i], &rc), 0);
        assert_null(rc);
    }
    for (int i = 0; i < TRADERS; i++)
        for (int j = 0; j < TRADE_TASKS * TRADE_GROUPS; j++)
            if (atomic_load(&trade_runs[i][j]) != 1)
                fail_msg("task %d of spawner %d ran %d times", j, i,
                         atomic_load(&trade_runs[i][j]));
    wait_tasks_ended();
    assert_nothing_leaked();
}

#define SPAWNS 2000

static pid_t tids[SPAWNS];

static int note_thread(void *arg)
{
    tids[(intptr_t)arg] = gettid();
    return 0;
}

static int cmp_tid(const void *a, const void *b)
{
    pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
    return (x > y) - (x < y);
}

static void steady_state_spawns_make_no_threads(void **state)
{
    (void)state;
    leash_group *g;
    for (int round = 0; round < 2; round++) {
        for (intptr_t i = 0; i < SPAWNS; i++) {
            assert_int_equal(leash_group_open(&g, NULL), 0);
            assert_int_equal(leash_go(g, note_thread, (void *)i), 0);
            assert_int_equal(leash_group_wait(g), 0);
        }
    }
    /*
     * One task at a time: the second round runs on the threads the pool
     * has. Linux does not reuse a thread id soon, so the ids the tasks ran
     * on count the threads made. A thread per spawn would be 2000; the
     * pool may add a few while a worker is held off its CPU (its monitor
     * adds one when the queue stands still for 5 ms), so the bound leaves
     * room for that and for nothing like a thread per spawn.
     */
    qsort(tids, SPAWNS, sizeof tids[0], cmp_tid);
    int threads = 1;
    for (int i = 1; i < SPAWNS; i++)
        threads += tids[i] != tids[i - 1];
    if (threads > 20)
        fail_msg("%d spawns, one at a time, ran on %d threads", SPAWNS, threads);
    assert_nothing_leaked();
}

/* A child that asks for a slot of its own group when every slot is held by
   children waiting for one, itself included, would wait for ever: it is
   told -EDEADLK, as a lock cycle is. */
struct own_slots {
    leash_group *g;
    _Atomic int  go_b;
    int          rc_a, rc_b, ran;
};

static int count_ran(void *arg)
{
    struct own_slots *o = arg;
    __atomic_fetch_add(&o->ran, 1, __ATOMIC_RELAXED);
    return 0;
}

static int spawn_sibling_a(void *arg)
{
    struct own_slots *o = arg;
    o->rc_a = leash_go(o->g, count_ran, o); /* waits: b holds the other slot */
    return 0;
}

static int spawn_sibling_b(void *arg)
{
    struct own_slots *o = arg;
    int64_t           until = mono_ms() + TEST_WAIT_MS;
    while (!atomic_load(&o->go_b) && mono_ms() < until)
        poll_pause();
    o->rc_b = leash_go(o->g, count_ran, o); /* a waits too: never */
    return 0;
}

/* A group of limit 2: b takes a slot and waits for a word, a (a_fn) takes
   the other and asks for a third; once a waits, b asks too. Joins it. */
static void b_asks_once_a_waits(struct own_slots *o, int (*a_fn)(void *))
{
    assert_int_equal(leash_group_open(&o->g, &(leash_group_opts){.limit = 2}), 0);
    assert_int_equal(leash_go(o->g, spawn_sibling_b, o), 0);
    assert_int_equal(leash_go(o->g, a_fn, o), 0);
    wait_blocked("go", 1);
    atomic_store(&o->go_b, 1);
    assert_int_equal(leash_group_wait(o->g), 0);
}

static void a_child_waiting_for_a_slot_only_waiters_hold_gets_edeadlk(void **state)
{
    (void)state;
    struct own_slots o = {0};
    /* limit 1: the child holds the only slot */
    assert_int_equal(leash_group_open(&o.g, &(leash_group_opts){.limit = 1}), 0);
    assert_int_equal(leash_go(o.g, spawn_sibling_a, &o), 0);
    assert_int_equal(leash_group_wait(o.g), 0);
    assert_int_equal(o.rc_a, -EDEADLK);
    assert_int_equal(o.ran, 0);
    /* limit 2: a waits for a slot, b holds the other and asks too */
    o = (struct own_slots){0};
    b_asks_once_a_waits(&o, spawn_sibling_a);
    assert_int_equal(o.rc_b, -EDEADLK);
    assert_int_equal(o.rc_a, 0); /* b's end freed a slot */
    assert_int_equal(o.ran, 1);
    assert_nothing_leaked();
}

/* A child whose slot wait has a deadline will give up: a sibling that asks
   then waits for that slot rather than hearing -EDEADLK. */
static int spawn_sibling_in_a_scope(void *arg)
{
    struct own_slots *o = arg;
    leash_scope      *s;
    if (leash_scope_open(&s, &(leash_scope_opts){.timeout_ms = 200}) != 0)
        return -1;
    o->rc_a = leash_go(o->g, count_ran, o); /* gives up at the scope's deadline */
    leash_scope_close(s);
    return 0;
}

static void a_slot_wait_with_a_deadline_is_no_deadlock(void **state)
{
    (void)state;
    struct own_slots o = {0};
    b_asks_once_a_waits(&o, spawn_sibling_in_a_scope);
    assert_int_equal(o.rc_a, -ETIMEDOUT);
    assert_int_equal(o.rc_b, 0); /* a's end freed a slot */
    assert_int_equal(o.ran, 1);
    assert_nothing_leaked();
}

/* Two slots come free at once with two spawners waiting: the oldest takes
   the first, and the next one the second; none sleeps while a slot is
   free. Here the newer spawner's child needs the older one's, so a slot
   left unused would hang both (the group's deadline then ends the test). */
struct two_free {
    leash_group *g;
    leash_chan  *gate, *link;
    int          rc_old, rc_new;
};

static int hold_slot(void *arg)
{
    int v;
    return leash_chan_recv(((struct two_free *)arg)->gate, &v) == -EPIPE ? 0 : -1;
}

static int send_link(void *arg)
{
    int v = 1;
    return leash_chan_send(((struct two_free *)arg)->link, &v);
}

static int recv_link(void *arg)
{
    int v;
    return leash_chan_recv(((struct two_free *)arg)->link, &v);
}

static void *spawn_old(void *arg)
{
    struct two_free *x = arg;
    x->rc_old = leash_go(x->g, send_link, x);
    return NULL;
}

static void *spawn_new(void *arg)
{
    struct two_free *x = arg;
    x->rc_new = leash_go(x->g, recv_link, x);
    return NULL;
}

static void two_slots_freed_at_once_go_to_two_waiters_oldest_first(void **state)
{
    (void)state;
    for (int round = 0; round < 20; round++) {
        struct two_free x = {0};
        assert_int_equal(leash_chan_open(&x.gate, "gate", sizeof(int), 0), 0);
        assert_int_equal(leash_chan_open(&x.link, "link", sizeof(int), 0), 0);
        assert_int_equal(
            leash_group_open(&x.g, &(leash_group_opts){.limit = 2, .timeout_ms = NOT_HUNG_MS}), 0);
        assert_int_equal(leash_go(x.g, hold_slot, &x), 0);
        assert_int_equal(leash_go(x.g, hold_slot, &x), 0);
        pthread_t o, n;
        assert_int_equal(pthread_create(&o, NULL, spawn_old, &x), 0);
        wait_blocked("go", 1);
        assert_int_equal(pthread_create(&n, NULL, spawn_new, &x), 0);
        wait_blocked("go", 2);
        assert_int_equal(leash_chan_close(x.gate), 0); /* both holders end */
        pthread_join(o, NULL);
        pthread_join(n, NULL);
        assert_int_equal(leash_group_wait(x.g), 0);
        assert_int_equal(x.rc_old, 0);
        assert_int_equal(x.rc_new, 0);
        leash_chan_free(x.gate);
        leash_chan_free(x.link);
    }
    assert_nothing_leaked();
}

/* A slot that comes free is the oldest waiter's: a spawner that comes
   later, leash_try_go included, does not take it first. */
static _Atomic int order_next;

static int note_order(void *arg)
{
    *(int *)arg = atomic_fetch_add(&order_next, 1);
    return 0;
}

struct late_spawner {
    leash_group *g;
    int          order, rc;
};

static void *spawn_noting_order(void *arg)
{
    struct late_spawner *w = arg;
    w->rc = leash_go(w->g, note_order, &w->order);
    return NULL;
}

static void a_freed_slot_goes_to_the_oldest_waiter_not_a_newcomer(void **state)
{
    (void)state;
    for (int round = 0; round < 20; round++) {
        struct two_free x = {0};
        assert_int_equal(leash_chan_open(&x.gate, "gate", sizeof(int), 0), 0);
        assert_int_equal(leash_group_open(&x.g, &(leash_group_opts){.limit = 1}), 0);
        assert_int_equal(leash_go(x.g, hold_slot, &x), 0);
        struct late_spawner w = {.g = x.g, .order = -1};
        pthread_t           th;
        atomic_store(&order_next, 0);
        assert_int_equal(pthread_create(&th, NULL, spawn_noting_order, &w), 0);
        wait_blocked("go", 1);
        assert_int_equal(leash_chan_close(x.gate), 0); /* the slot comes free */
        int mine[8], n = 0;
        while (n < 8) {
            int rc = leash_try_go(x.g, note_order, &mine[n]);
            assert_true(rc == 0 || rc == -EAGAIN);
            n += rc == 0;
        }
        pthread_join(th, NULL);
        assert_int_equal(leash_group_wait(x.g), 0);
        assert_int_equal(w.rc, 0);
        assert_int_equal(w.order, 0); /* first to run, though the newcomer kept asking */
        leash_chan_free(x.gate);
    }
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
        cmocka_unit_test(a_child_waiting_for_a_slot_only_waiters_hold_gets_edeadlk),
        cmocka_unit_test(a_slot_wait_with_a_deadline_is_no_deadlock),
        cmocka_unit_test(two_slots_freed_at_once_go_to_two_waiters_oldest_first),
        cmocka_unit_test(a_freed_slot_goes_to_the_oldest_waiter_not_a_newcomer),
        cmocka_unit_test(waiting_for_a_slot_is_cancellable),
        cmocka_unit_test(waiting_for_a_slot_ends_when_the_group_is_cancelled),
        cmocka_unit_test(children_may_add_siblings),
        cmocka_unit_test(task_returning_with_open_group_gets_it_cancelled_waited_and_reported),
        cmocka_unit_test(only_the_opener_may_wait),
        cmocka_unit_test(bad_arguments_are_refused),
        cmocka_unit_test(wait_is_never_cut_short),
        cmocka_unit_test(queued_task_runs_while_every_worker_is_blocked_outside_leash),
        cmocka_unit_test(every_task_runs_once_while_workers_trade_batches),
        cmocka_unit_test(steady_state_spawns_make_no_threads),
    };
    return cmocka_run_group_tests_name("group", tests, quiet_setup, NULL);
}
