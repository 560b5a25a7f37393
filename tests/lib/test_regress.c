/*
 * test_regress.c: faults found by holding leash to its peers' test suites
 * (Go's select fairness, errgroup's and Trio's deadline rules, a task
 * enumeration that misses tasks being started), each as a test of its kind.
 */
#include "helpers.h"

#include <math.h>
#include <stdatomic.h>

/*
 * Bounds for counts of fair choices: with n trials and probability p, the
 * count is outside n*p +- t with probability at most 2*exp(-2 t^2 / n)
 * (Hoeffding). Every bound below makes that under 1e-12 for a fair select,
 * while a select that always picks the same case is far outside it.
 */
static void assert_fair(const long *counts, int k, long n, double t)
{
    for (int i = 0; i < k; i++) {
        double expect = (double)n / k;
        if (fabs((double)counts[i] - expect) > t)
            fail_msg("case %d chosen %ld of %ld times (expected %.0f +- %.0f)", i, counts[i], n,
                     expect, t);
    }
    assert_true(k * 2 * exp(-2 * t * t / (double)n) < 1e-12);
}

/* ------------------------------------------------------------- select */

static leash_chan *sel_chan;
static _Atomic int sel_chosen = -1;

/* Three send cases on one rendezvous channel, and one on a channel
   nobody reads: a receiver can complete any of the first three. */
static int select_three(void *arg)
{
    (void)arg;
    leash_chan *never = NULL;
    assert_int_equal(leash_chan_open(&never, "never", sizeof(int), 0), 0);
    int v0 = 0, v1 = 1, v2 = 2, v3 = 3;
    /* a compound literal passes whole through the macro */
    int i = leash_select((struct leash_case[]){{sel_chan, LEASH_SEND, &v0, 0},
                                               {sel_chan, LEASH_SEND, &v1, 0},
                                               {never, LEASH_SEND, &v3, 0},
                                               {sel_chan, LEASH_SEND, &v2, 0}},
                         4, -1);
    atomic_store(&sel_chosen, i);
    leash_chan_free(never);
    return i < 0 ? i : 0;
}

static int recv_one(void *arg)
{
    return leash_chan_recv(sel_chan, (int *)arg);
}

/* the value sent says which case completed; case 2 never can */
static int case_of(int chosen, int value)
{
    assert_int_not_equal(chosen, 2);
    int want = chosen == 3 ? 2 : chosen;
    assert_int_equal(value, want);
    return want;
}

static void parked_select_completes_a_random_case(void **state)
{
    (void)state;
    enum { TRIALS = 300 };
    long counts[3] = {0};
    for (int trial = 0; trial < TRIALS; trial++) {
        assert_int_equal(leash_chan_open(&sel_chan, "c", sizeof(int), 0), 0);
        leash_group *g;
        assert_int_equal(leash_group_open(&g, NULL), 0);
        assert_int_equal(leash_go(g, select_three, NULL), 0);
        /* the select has queued its cases: a dump shows it blocked */
        wait_blocked("select", 1);
        int v = -1;
        assert_int_equal(leash_chan_recv(sel_chan, &v), 0);
        assert_int_equal(leash_group_wait(g), 0);
        counts[case_of(atomic_load(&sel_chosen), v)]++;
        leash_chan_free(sel_chan);
    }
    print_message("parked select: %ld %ld %ld\n", counts[0], counts[1], counts[2]);
    assert_fair(counts, 3, TRIALS, 70);
    assert_nothing_leaked();
}

static void select_entering_with_a_partner_waiting_completes_a_random_case(void **state)
{
    (void)state;
    enum { TRIALS = 300 };
    long counts[3] = {0};
    for (int trial = 0; trial < TRIALS; trial++) {
        assert_int_equal(leash_chan_open(&sel_chan, "c", sizeof(int), 0), 0);
        leash_group *g;
        int          v = -1;
        assert_int_equal(leash_group_open(&g, NULL), 0);
        assert_int_equal(leash_go(g, recv_one, &v), 0);
        wait_blocked("chan_recv", 1);
        assert_int_equal(select_three(NULL), 0);
        assert_int_equal(leash_group_wait(g), 0);
        counts[case_of(atomic_load(&sel_chosen), v)]++;
        leash_chan_free(sel_chan);
    }
    print_message("entering select: %ld %ld %ld\n", counts[0], counts[1], counts[2]);
    assert_fair(counts, 3, TRIALS, 70);
    assert_nothing_leaked();
}

/* Two receive cases parked on a buffered channel: a sender fills the
   buffer and hands the element to either. */
static int select_two_recv(void *arg)
{
    int *got = arg;
    int  a = -1, b = -1;
    int  i = leash_select(
         (struct leash_case[]){{sel_chan, LEASH_RECV, &a, 0}, {sel_chan, LEASH_RECV, &b, 0}}, 2, -1);
    *got = i == 0 ? a : b;
    atomic_store(&sel_chosen, i);
    return i < 0 ? i : 0;
}

static void parked_select_on_a_buffered_channel_completes_a_random_case(void **state)
{
    (void)state;
    enum { TRIALS = 300 };
    long counts[2] = {0};
    for (int trial = 0; trial < TRIALS; trial++) {
        assert_int_equal(leash_chan_open(&sel_chan, "buf", sizeof(int), 4), 0);
        leash_group *g;
        int          got = -1;
        assert_int_equal(leash_group_open(&g, NULL), 0);
        assert_int_equal(leash_go(g, select_two_recv, &got), 0);
        wait_blocked("select", 1);
        int v = 7;
        assert_int_equal(leash_chan_send(sel_chan, &v), 0);
        assert_int_equal(leash_group_wait(g), 0);
        assert_int_equal(got, 7);
        int i = atomic_load(&sel_chosen);
        assert_in_range(i, 0, 1);
        counts[i]++;
        leash_chan_free(sel_chan);
    }
    print_message("parked select, buffered: %ld %ld\n", counts[0], counts[1]);
    assert_fair(counts, 2, TRIALS, 75);
    assert_nothing_leaked();
}

/* ------------------------------------------------- deadlines and waits */

static int ret_zero(void *arg)
{
    (void)arg;
    return 0;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Opens *g with a deadline ms from now; returns a time (CLOCK_MONOTONIC
   ns) at or after that deadline, and in *before one at or before it. */
static int64_t open_with_deadline(leash_group **g, int64_t ms, int64_t *before)
{
    int64_t t0 = mono_ns();
    assert_int_equal(leash_group_open(g, &(leash_group_opts){.name = "dl", .timeout_ms = ms}), 0);
    if (before)
        *before = t0 + ms * 1000000;
    return mono_ns() + ms * 1000000;
}

/* Waits on the clock, outside leash, until after ns. */
static void sleep_past(int64_t ns)
{
    while (mono_ns() <= ns) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static void deadline_that_refused_a_go_is_reported_by_wait(void **state)
{
    (void)state;
    leash_group *g;
    int64_t      deadline = open_with_deadline(&g, 10, NULL);
    /* the deadline passes before the first leash_go */
    sleep_past(deadline);
    assert_int_equal(leash_go(g, ret_zero, NULL), -ECANCELED);
    assert_int_equal(leash_group_wait(g), -ETIMEDOUT);
    assert_nothing_leaked();
}

static bool returned_before_deadline_round(int64_t ms, void *arg)
{
    (void)arg;
    leash_group *g;
    int64_t      before;
    int64_t      deadline = open_with_deadline(&g, ms, &before);
    int          go = leash_go(g, ret_zero, NULL);
    /* the child has returned once the group counts no task */
    wait_tasks_ended();
    /* in time: it had returned before the deadline (a child still alive
       when the deadline passes is cut by it, and wait says so) */
    bool in_time = go == 0 && mono_ns() < before;
    sleep_past(deadline);
    int rc = leash_group_wait(g);
    if (in_time)
        assert_int_equal(rc, 0);
    assert_nothing_leaked();
    return in_time;
}

static void deadline_after_every_child_returned_changes_nothing(void **state)
{
    (void)state;
    deadline_test(returned_before_deadline_round, NULL);
}

static _Atomic int cut_seen;

static int sleep_until_cut(void *arg)
{
    (void)arg;
    int rc = leash_sleep(600000);
    if (rc == -ETIMEDOUT)
        atomic_fetch_add(&cut_seen, 1);
    return rc;
}

/* A go racing the deadline either starts a child (which the deadline then
   cuts: it sleeps until cancelled) or is refused: wait says -ETIMEDOUT
   either way, never 0. Each round spawns at another point of the
   millisecond in which the deadline falls. */
static void go_racing_the_deadline_counts_or_is_refused(void **state)
{
    (void)state;
    enum { ROUNDS = 200 };
    int started = 0, refused = 0;
    for (int r = 0; r < ROUNDS; r++) {
        leash_group *g;
        int64_t      before;
        open_with_deadline(&g, 1, &before);
        int64_t at = before + (r % 10 - 2) * 100000; /* -200 us .. +700 us */
        while (mono_ns() < at)
            ;
        int rc = leash_go(g, sleep_until_cut, NULL);
        if (rc == 0)
            started++;
        else
            refused++;
        assert_true(rc == 0 || rc == -ECANCELED);
        assert_int_equal(leash_group_wait(g), -ETIMEDOUT);
    }
    assert_int_equal(atomic_load(&cut_seen), started);
    print_message("%d started and cut, %d refused\n", started, refused);
    assert_nothing_leaked();
}

/* A child whose error comes after the deadline passed reports the
   deadline, however late the timer thread is. */
static int fail_after_deadline(void *arg)
{
    sleep_past(*(int64_t *)arg);
    return -EIO;
}

static bool error_after_deadline_round(int64_t ms, void *arg)
{
    (void)arg;
    leash_group *g;
    int64_t      deadline = open_with_deadline(&g, ms, NULL);
    /* in time: the child was spawned before the deadline refused it */
    bool in_time = leash_go(g, fail_after_deadline, &deadline) == 0;
    int  rc = leash_group_wait(g);
    if (in_time)
        assert_int_equal(rc, -ETIMEDOUT);
    assert_nothing_leaked();
    return in_time;
}

static void child_error_after_the_deadline_is_its_consequence(void **state)
{
    (void)state;
    deadline_test(error_after_deadline_round, NULL);
}

struct gate {
    _Atomic int open;
};

static int wait_gate_then_checkpoint(void *arg)
{
    struct gate *gt = arg;
    while (!atomic_load(&gt->open))
        sched_yield();
    return leash_checkpoint();
}

/* A cancel that comes after the deadline passed finds the group cancelled
   by the deadline: the first cause wins, timer or not. */
static bool cancel_after_deadline_round(int64_t ms, void *arg)
{
    (void)arg;
    struct gate  gt = {0};
    leash_group *g;
    int64_t      deadline = open_with_deadline(&g, ms, NULL);
    /* in time: the child was spawned before the deadline refused it */
    bool in_time = leash_go(g, wait_gate_then_checkpoint, &gt) == 0;
    sleep_past(deadline);
    leash_group_cancel(g);
    atomic_store(&gt.open, 1);
    int rc = leash_group_wait(g);
    if (in_time)
        assert_int_equal(rc, -ETIMEDOUT);
    assert_nothing_leaked();
    return in_time;
}

static void cancel_after_the_deadline_keeps_the_deadline_as_cause(void **state)
{
    (void)state;
    deadline_test(cancel_after_deadline_round, NULL);
}

/* ---------------------------------------------------------------- dumps */

static leash_chan *never_chan;

static int blocker(void *arg)
{
    (void)arg;
    int v;
    return leash_chan_recv(never_chan, &v) == -EPIPE ? 0 : 1;
}

static void dump_lists_every_task_while_workers_pick_them_up(void **state)
{
    (void)state;
    enum { N = 200, ROUNDS = 3 };
    for (int r = 0; r < ROUNDS; r++) {
        assert_int_equal(leash_chan_open(&never_chan, "never", sizeof(int), 0), 0);
        leash_group *g;
        assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "G"}), 0);
        for (int i = 0; i < N; i++)
            assert_int_equal(leash_go(g, blocker, NULL), 0);
        /* dumps back to back while the pool starts them, until every one
           blocks (and a few more) */
        int dumps = 0, after = 0;
        while (after < 5) {
            char *d = dump_json();
            assert_non_null(d);
            int listed = count_of(d, "\"fn\":\"blocker\"");
            int blocked = count_of(d, "\"op\":\"chan_recv\"");
            free(d);
            dumps++;
            if (listed != N)
                fail_msg("round %d, dump %d listed %d of the %d live tasks", r, dumps, listed, N);
            struct leash_stats st;
            leash_stats(&st);
            assert_int_equal(st.tasks_live, N);
            if (blocked == N)
                after++;
        }
        assert_int_equal(leash_chan_close(never_chan), 0);
        assert_int_equal(leash_group_wait(g), 0);
        leash_chan_free(never_chan);
    }
    assert_nothing_leaked();
}

/* A leash_go waiting for a slot when its caller's deadline passes, before
   the timer thread fires it: the waiter did the timer's work, cancelling the
   deadline's owner with the slot group's lock held, and that cancel took the
   same lock again: the whole runtime hung (about 1 run in 7). Each round
   here must end, with the deadline as the cause. */
static leash_chan *slot_gate;
static _Atomic int slot_wrong;

static int slot_blocker(void *arg)
{
    (void)arg;
    int v;
    return leash_chan_recv(slot_gate, &v);
}

static int slot_nothing(void *arg)
{
    (void)arg;
    return 0;
}

static int slot_parent(void *arg)
{
    bool         scoped = *(bool *)arg;
    leash_scope *s = NULL;
    if (scoped && leash_scope_open(&s, &(leash_scope_opts){.timeout_ms = 2}) != 0)
        return -100;
    /* how far the setup gets before the deadline is the machine's doing:
       every call answers 0 or the deadline, none hangs */
    leash_group *g;
    int          e = leash_group_open(&g, &(leash_group_opts){.name = "limited", .limit = 1});
    if (e) {
        int c = s ? leash_scope_close(s) : -ETIMEDOUT;
        if ((e != -ETIMEDOUT && e != -ECANCELED) || c != -ETIMEDOUT)
            atomic_store(&slot_wrong, 1);
        return 0;
    }
    int  r0 = leash_go(g, slot_blocker, NULL);
    int  r = leash_go(g, slot_nothing, NULL); /* waits for the slot */
    int  w = leash_group_wait(g);
    int  c = s ? leash_scope_close(s) : -ETIMEDOUT;
    bool ok = (r0 == 0 || r0 == -ETIMEDOUT || r0 == -ECANCELED) &&
              (r == -ETIMEDOUT || r == -ECANCELED) && w == -ETIMEDOUT && c == -ETIMEDOUT;
    if (!ok) {
        fprintf(stderr, "go %d, go %d, wait %d, close %d\n", r0, r, w, c);
        atomic_store(&slot_wrong, 1); /* an outer deadline would hide a return value */
    }
    return ok ? 0 : -102;
}

static void a_slot_wait_past_its_deadline_never_hangs(void **state)
{
    (void)state;
    assert_int_equal(leash_chan_open(&slot_gate, "gate", sizeof(int), 0), 0);
    for (int round = 0; round < 100; round++) {
        bool         scoped = round % 2;
        leash_group *p;
        assert_int_equal(leash_group_open(&p, &(leash_group_opts){.name = "outer",
                                                                  .timeout_ms = scoped ? 0 : 2}),
                         0);
        /* refused only when the 2 ms passed before it: the wait says so too */
        int go = leash_go(p, slot_parent, &scoped);
        assert_true(go == 0 || (!scoped && go == -ECANCELED));
        int w = leash_group_wait(p);
        if (scoped)
            assert_int_equal(w, 0);
        else
            assert_int_equal(w, -ETIMEDOUT);
        assert_int_equal(atomic_load(&slot_wrong), 0);
    }
    leash_chan_close(slot_gate);
    leash_chan_free(slot_gate);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parked_select_completes_a_random_case),
        cmocka_unit_test(select_entering_with_a_partner_waiting_completes_a_random_case),
        cmocka_unit_test(parked_select_on_a_buffered_channel_completes_a_random_case),
        cmocka_unit_test(deadline_that_refused_a_go_is_reported_by_wait),
        cmocka_unit_test(deadline_after_every_child_returned_changes_nothing),
        cmocka_unit_test(go_racing_the_deadline_counts_or_is_refused),
        cmocka_unit_test(child_error_after_the_deadline_is_its_consequence),
        cmocka_unit_test(cancel_after_the_deadline_keeps_the_deadline_as_cause),
        cmocka_unit_test(dump_lists_every_task_while_workers_pick_them_up),
        cmocka_unit_test(a_slot_wait_past_its_deadline_never_hangs),
    };
    return cmocka_run_group_tests(tests, quiet_setup, NULL);
}
