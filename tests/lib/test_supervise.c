/*
 * test_supervise.c: supervisors. Children here block on a rendezvous channel
 * the test feeds, so each one ends exactly when and how the test says, and
 * the test waits for states it can observe (start counters, a log of
 * starts and cancellations, the dump), never for time to pass, except where
 * time is what is tested.
 */
#include "helpers.h"

#include <pthread.h>
#include <stdatomic.h>

/* The formula itself (supervise.c): timing alone cannot pin it down. */
int64_t leash__sup_backoff_ms(int64_t min_ms, int64_t max_ms, unsigned k, uint64_t r);

#define MAXK 4

/* What children did, in the order they did it. */
struct log {
    pthread_mutex_t mu;
    int             n;
    struct {
        char ev; /* S started, X cancelled, E ended as told */
        int  idx;
    } e[512];
};

static void log_add(struct log *l, char ev, int idx)
{
    pthread_mutex_lock(&l->mu);
    if (l->n < (int)(sizeof l->e / sizeof l->e[0])) {
        l->e[l->n].ev = ev;
        l->e[l->n].idx = idx;
        l->n++;
    }
    pthread_mutex_unlock(&l->mu);
}

/* The position of the nth (from 0) event ev of child idx in the log; -1: none. */
static int log_pos(struct log *l, char ev, int idx, int nth)
{
    int pos = -1;
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < l->n; i++)
        if (l->e[i].ev == ev && l->e[i].idx == idx && nth-- == 0) {
            pos = i;
            break;
        }
    pthread_mutex_unlock(&l->mu);
    return pos;
}

struct kid {
    int              idx;
    leash_chan      *cmd; /* rendezvous: what to return */
    struct log      *log;
    _Atomic int      starts, cancels, ends;
    _Atomic uint64_t id;           /* task id of the latest instance */
    int64_t          start_ns[64]; /* CLOCK_MONOTONIC, when run i started ... */
    int64_t          end_ns[64];   /* ... and ended as told */
    _Atomic int      fail_now;     /* > 0: the next this many runs fail at once */
};

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int kid_main(void *arg)
{
    struct kid *k = arg;
    int         run = atomic_load(&k->starts) % 64; /* one instance at a time */
    k->start_ns[run] = mono_ns();
    atomic_store(&k->id, leash_task_id());
    log_add(k->log, 'S', k->idx);
    atomic_fetch_add(&k->starts, 1);
    int left = atomic_load(&k->fail_now);
    if (left > 0) {
        atomic_store(&k->fail_now, left - 1);
        k->end_ns[run] = mono_ns();
        log_add(k->log, 'E', k->idx);
        atomic_fetch_add(&k->ends, 1);
        return -100 - k->idx;
    }
    int v;
    int err = leash_chan_recv(k->cmd, &v);
    if (err) {
        log_add(k->log, 'X', k->idx);
        atomic_fetch_add(&k->cancels, 1);
        return err;
    }
    k->end_ns[run] = mono_ns();
    log_add(k->log, 'E', k->idx);
    atomic_fetch_add(&k->ends, 1);
    return v;
}

/* A supervisor run in a task of a group the test opened. */
struct fx {
    struct log       log;
    struct kid       k[MAXK];
    leash_child_spec specs[MAXK];
    size_t           n;
    leash_sup_opts   opts;
    leash_group     *g;
    _Atomic int      rc;
    _Atomic bool     done;
};

static int sup_main(void *arg)
{
    struct fx *f = arg;
    int        rc = leash_supervise(&f->opts, f->specs, f->n);
    atomic_store(&f->rc, rc);
    atomic_store(&f->done, true);
    return rc;
}

static const char *const kid_names[MAXK] = {"kid0", "kid1", "kid2", "kid3"};

static void fx_init(struct fx *f, const char *name, int strategy, const int *restart, size_t n)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->log.mu, NULL);
    f->n = n;
    for (size_t i = 0; i < n; i++) {
        f->k[i].idx = (int)i;
        f->k[i].log = &f->log;
        assert_int_equal(leash_chan_open(&f->k[i].cmd, kid_names[i], sizeof(int), 0), 0);
        f->specs[i] = (leash_child_spec){.name = kid_names[i],
                                         .fn = kid_main,
                                         .arg = &f->k[i],
                                         .restart = restart ? restart[i] : LEASH_PERMANENT};
    }
    /* many restarts allowed, over a window no run of a test outlasts */
    f->opts =
        (leash_sup_opts){.name = name, .strategy = strategy, .intensity = 100, .period_ms = 600000};
}

static void fx_start(struct fx *f, int64_t timeout_ms)
{
    assert_int_equal(
        leash_group_open(&f->g, &(leash_group_opts){.name = "test", .timeout_ms = timeout_ms}), 0);
    assert_int_equal(leash_go(f->g, sup_main, f), 0);
}

/* Joins the test's group; returns what leash_supervise returned. */
static int fx_wait(struct fx *f)
{
    leash_group_wait(f->g);
    assert_true(atomic_load(&f->done));
    return atomic_load(&f->rc);
}

static void fx_free(struct fx *f)
{
    for (size_t i = 0; i < f->n; i++)
        leash_chan_free(f->k[i].cmd);
    pthread_mutex_destroy(&f->log.mu);
}

/* Every instance of every child has returned. */
static void assert_all_joined(struct fx *f)
{
    for (size_t i = 0; i < f->n; i++)
        assert_int_equal(atomic_load(&f->k[i].starts),
                         atomic_load(&f->k[i].cancels) + atomic_load(&f->k[i].ends));
}

static void tell(struct kid *k, int v)
{
    assert_int_equal(leash_chan_send(k->cmd, &v), 0);
}

/* -------------------------------------------------------------- strategies */

static void one_for_one_restarts_only_the_child_that_failed(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, "s-one", LEASH_ONE_FOR_ONE, NULL, 3);
    fx_start(&f, 0);
    WAIT_FOR(f.k[0].starts == 1 && f.k[1].starts == 1 && f.k[2].starts == 1);
    uint64_t first = atomic_load(&f.k[1].id);
    tell(&f.k[1], -5);
    WAIT_FOR(f.k[1].starts == 2);
    assert_true(atomic_load(&f.k[1].id) > first); /* a new task */
    assert_int_equal(f.k[0].starts, 1);
    assert_int_equal(f.k[2].starts, 1);
    assert_int_equal(f.k[0].cancels + f.k[2].cancels, 0);
    assert_int_equal(group_field("s-one", "restarts"), 1);

    leash_group_cancel(f.g);
    assert_int_equal(fx_wait(&f), -ECANCELED);
    assert_all_joined(&f);
    assert_int_equal(f.k[0].cancels + f.k[1].cancels + f.k[2].cancels, 3);
    fx_free(&f);
    assert_nothing_leaked();
}

static void one_for_all_stops_the_others_in_reverse_order_then_starts_all_in_order(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, "s-all", LEASH_ONE_FOR_ALL, NULL, 3);
    fx_start(&f, 0);
    WAIT_FOR(f.k[0].starts == 1 && f.k[1].starts == 1 && f.k[2].starts == 1);
    uint64_t before = atomic_load(&f.k[2].id);
    tell(&f.k[1], -5);
    WAIT_FOR(f.k[0].starts == 2 && f.k[1].starts == 2 && f.k[2].starts == 2);

    /* the others were cancelled last first, each joined before the next */
    int x2 = log_pos(&f.log, 'X', 2, 0), x0 = log_pos(&f.log, 'X', 0, 0);
    assert_true(x2 >= 0 && x0 > x2);
    assert_true(log_pos(&f.log, 'E', 1, 0) < x2);
    /* every child started again once they were all gone, in spec order */
    for (int i = 0; i < 3; i++)
        assert_true(log_pos(&f.log, 'S', i, 1) > x0);
    uint64_t id0 = f.k[0].id, id1 = f.k[1].id, id2 = f.k[2].id;
    assert_true(before < id0 && id0 < id1 && id1 < id2);
    assert_int_equal(group_field("s-all", "restarts"), 1); /* one restart, of every child */

    leash_group_cancel(f.g);
    assert_int_equal(fx_wait(&f), -ECANCELED);
    assert_all_joined(&f);
    fx_free(&f);
    assert_nothing_leaked();
}

static void rest_for_one_restarts_the_failed_child_and_those_after_it(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, "s-rest", LEASH_REST_FOR_ONE, NULL, 4);
    fx_start(&f, 0);
    WAIT_FOR(f.k[0].starts == 1 && f.k[1].starts == 1 && f.k[2].starts == 1 && f.k[3].starts == 1);
    tell(&f.k[1], -5);
    WAIT_FOR(f.k[1].starts == 2 && f.k[2].starts == 2 && f.k[3].starts == 2);
    int x3 = log_pos(&f.log, 'X', 3, 0), x2 = log_pos(&f.log, 'X', 2, 0);
    assert_true(x3 >= 0 && x2 > x3);
    assert_true(log_pos(&f.log, 'S', 1, 1) > x2);
    assert_true(f.k[1].id < f.k[2].id && f.k[2].id < f.k[3].id);
    assert_int_equal(f.k[0].starts, 1); /* before the failed one: untouched */
    assert_int_equal(f.k[0].cancels, 0);

    leash_group_cancel(f.g);
    assert_int_equal(fx_wait(&f), -ECANCELED);
    assert_all_joined(&f);
    fx_free(&f);
    assert_nothing_leaked();
}

/* ----------------------------------------------------------- restart types */

static void permanent_child_is_restarted_even_when_it_returns_zero(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, "s-perm", LEASH_ONE_FOR_ONE, (int[]){LEASH_PERMANENT}, 1);
    fx_start(&f, 0);
    WAIT_FOR(f.k[0].starts == 1);
    tell(&f.k[0], 0);
    WAIT_FOR(f.k[0].starts == 2);
    leash_group_cancel(f.g);
    assert_int_equal(fx_wait(&f), -ECANCELED);
    assert_all_joined(&f);
    fx_free(&f);
    assert_nothing_leaked();
}

static void transient_restarts_on_error_temporary_never_and_all_done_returns_zero(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, "s-types", LEASH_ONE_FOR_ONE, (int[]){LEASH_TRANSIENT, LEASH_TEMPORARY}, 2);
    fx_start(&f, 0);
    WAIT_FOR(f.k[0].starts == 1 && f.k[1].starts == 1);
    tell(&f.k[1], -3); /* temporary: gone for good, and not a restart */
    tell(&f.k[0], -4); /* transient with an error: restarted */
    WAIT_FOR(f.k[0].starts == 2);
    tell(&f.k[0], 0); /* transient returning 0: done */
    /* nothing left to run: the supervisor returns on its own, with 0 even
       though the temporary child failed */
    assert_int_equal(fx_wait(&f), 0);
    assert_int_equal(f.k[0].starts, 2);
    assert_int_equal(f.k[1].starts, 1);
    assert_int_equal(f.k[0].cancels + f.k[1].cancels, 0);
    assert_all_joined(&f);
    fx_free(&f);
    assert_nothing_leaked();
}

static void one_for_all_does_not_restart_a_temporary_child(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, "s-alltemp", LEASH_ONE_FOR_ALL, (int[]){LEASH_TEMPORARY, LEASH_PERMANENT}, 2);
    fx_start(&f, 0);
    WAIT_FOR(f.k[0].starts == 1 && f.k[1].starts == 1);
    tell(&f.k[1], -5);
    WAIT_FOR(f.k[1].starts == 2);
    assert_int_equal(f.k[0].cancels, 1); /* cancelled with the rest ... */
    leash_group_cancel(f.g);
    assert_int_equal(fx_wait(&f), -ECANCELED);
    assert_int_equal(f.k[0].starts, 1); /* ... and not started again */
    assert_all_joined(&f);
    fx_free(&f);
    assert_nothing_leaked();
}

/* ---------------------------------------------------------------- intensity */

static void intensity_plus_one_failures_within_the_period_give_up_with_the_last_error(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, "s-limit", LEASH_ONE_FOR_ONE, NULL, 3);
    f.opts.intensity = 2;
    f.opts.period_ms = 600000;
    uint64_t reps = reports();
    fx_start(&f, 0);
    WAIT_FOR(f.k[0].starts == 1 && f.k[1].starts == 1 && f.k[2].starts == 1);
    tell(&f.k[1], -11);
    WAIT_FOR(f.k[1].starts == 2);
    tell(&f.k[1], -12);
    WAIT_FOR(f.k[1].starts == 3);
    assert_int_equal(group_field("s-limit", "restarts"), 2);
    tell(&f.k[1], -13); /* the third within the period: one more than intensity */
    assert_int_equal(fx_wait(&f), -13);
    assert_int_equal(f.k[1].starts, 3);
    /* every other child cancelled, last first */
    int x2 = log_pos(&f.log, 'X', 2, 0), x0 = log_pos(&f.log, 'X', 0, 0);
    assert_true(x2 >= 0 && x0 > x2);
    assert_all_joined(&f);
    assert_int_equal(reports() - reps, 1); /* restart_limit */
    fx_free(&f);
    assert_nothing_leaked();
}

static void the_same_failures_spread_beyond_the_period_do_not_give_up(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, "s-spread", LEASH_ONE_FOR_ONE, (int[]){LEASH_TRANSIENT}, 1);
    f.opts.intensity = 1;
    f.opts.period_ms = 30;
    fx_start(&f, 0);
    for (int i = 1; i <= 4; i++) {
        WAIT_FOR(f.k[0].starts == i);
        /* the previous failure was counted before this instance started:
           once this sleep is over it is more than a period old */
        assert_int_equal(leash_sleep(40), 0);
        tell(&f.k[0], -7);
    }
    WAIT_FOR(f.k[0].starts == 5);
    tell(&f.k[0], 0);
    assert_int_equal(fx_wait(&f), 0);
    assert_int_equal(f.k[0].starts, 5);
    assert_all_joined(&f);
    fx_free(&f);
    assert_nothing_leaked();
}

static void the_same_failures_within_the_period_give_up(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, "s-within", LEASH_ONE_FOR_ONE, (int[]){LEASH_TRANSIENT}, 1);
    f.opts.intensity = 1;
    f.opts.period_ms = 600000;
    fx_start(&f, 0);
    WAIT_FOR(f.k[0].starts == 1);
    tell(&f.k[0], -7);
    WAIT_FOR(f.k[0].starts == 2);
    tell(&f.k[0], -8);
    assert_int_equal(fx_wait(&f), -8);
    assert_int_equal(f.k[0].starts, 2);
    assert_all_joined(&f);
    fx_free(&f);
    assert_nothing_leaked();
}

static int fail_at_once(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
    return -9;
}

static int always_zero(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
    return 0;
}

static void default_intensity_is_three_in_five_seconds(void **state)
{
    (void)state;
    _Atomic int runs = 0;
    /* four runs take far less than the five seconds on any machine */
    assert_int_equal(
        leash_supervise(
            NULL, (leash_child_spec[]){{.name = "crash", .fn = fail_at_once, .arg = &runs}}, 1),
        -9);
    assert_int_equal(runs, 4);
    assert_nothing_leaked();
}

static void permanent_child_that_keeps_returning_zero_gives_up_with_eagain(void **state)
{
    (void)state;
    _Atomic int    runs = 0;
    leash_sup_opts o = {.intensity = 1, .period_ms = 600000};
    assert_int_equal(
        leash_supervise(
            &o, (leash_child_spec[]){{.name = "quitter", .fn = always_zero, .arg = &runs}}, 1),
        -EAGAIN);
    assert_int_equal(runs, 2);
    assert_nothing_leaked();
}

static void zero_intensity_gives_up_at_the_first_restart(void **state)
{
    (void)state;
    _Atomic int    runs = 0;
    leash_sup_opts o = {.intensity = 0, .period_ms = 1000};
    assert_int_equal(
        leash_supervise(
            &o, (leash_child_spec[]){{.name = "once", .fn = fail_at_once, .arg = &runs}}, 1),
        -9);
    assert_int_equal(runs, 1);
    assert_nothing_leaked();
}

/* ------------------------------------------------------------------ backoff */

static void backoff_formula_doubles_to_the_cap_within_twenty_percent(void **state)
{
    (void)state;
    const uint64_t rs[] = {0, 1, 7, 12345, UINT64_MAX};
    for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++) {
        for (unsigned k = 0; k < 10; k++) {
            int64_t want = 100LL << k;
            if (want > 1000)
                want = 1000;
            int64_t d = leash__sup_backoff_ms(100, 1000, k, rs[i]);
            assert_true(d >= want - want / 5 && d <= want + want / 5);
        }
        /* max 0: a fixed delay; min 0: none */
        int64_t d = leash__sup_backoff_ms(50, 0, 5, rs[i]);
        assert_true(d >= 40 && d <= 60);
        assert_int_equal(leash__sup_backoff_ms(0, 0, 3, rs[i]), 0);
        /* no overflow far past the cap */
        d = leash__sup_backoff_ms(1, INT64_MAX / 4, 200, rs[i]);
        assert_true(d >= INT64_MAX / 4 - INT64_MAX / 20);
    }
    /* the jitter spreads: not every draw is the same */
    int64_t a = leash__sup_backoff_ms(1000, 1000, 0, 1),
            b = leash__sup_backoff_ms(1000, 1000, 0, 300);
    assert_true(a != b);
}

static void restart_delays_double_up_to_the_cap(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, "s-backoff", LEASH_ONE_FOR_ONE, NULL, 1);
    f.opts.backoff_min_ms = 20;
    f.opts.backoff_max_ms = 80;
    const int64_t want[] = {20, 40, 80, 80, 80};
    fx_start(&f, 0);
    for (int i = 0; i < 5; i++) {
        WAIT_FOR(f.k[0].starts == i + 1);
        tell(&f.k[0], -1);
        WAIT_FOR(f.k[0].starts == i + 2);
        /* the delay drawn, exactly (the child now waits: it stays put) */
        int64_t planned = group_field("s-backoff", "backoff_ms");
        assert_true(planned >= want[i] - want[i] / 5 && planned <= want[i] + want[i] / 5);
        /* and waited: never shorter than the backoff less its jitter */
        int64_t waited = f.k[0].start_ns[i + 1] - f.k[0].end_ns[i];
        assert_true(waited >= (want[i] - want[i] / 5) * 1000000);
    }
    leash_group_cancel(f.g);
    assert_int_equal(fx_wait(&f), -ECANCELED);
    assert_all_joined(&f);
    fx_free(&f);
    assert_nothing_leaked();
}

static void backoff_starts_again_once_the_child_has_run_a_period(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, "s-reset", LEASH_ONE_FOR_ONE, NULL, 1);
    f.opts.backoff_min_ms = 10;
    f.opts.backoff_max_ms = 100000;
    /* a period no run that fails at once can reach, even on a slow machine */
    f.opts.period_ms = 2000;
    f.k[0].fail_now = 3;
    fx_start(&f, 0);
    WAIT_FOR(f.k[0].starts == 4); /* after delays of about 10, 20 and 40 ms */
    int64_t planned = group_field("s-reset", "backoff_ms");
    assert_true(planned >= 32 && planned <= 48);
    /* this run lasts more than a period: the next delay is the minimum again */
    assert_int_equal(leash_sleep(2010), 0);
    tell(&f.k[0], -1);
    WAIT_FOR(f.k[0].starts == 5);
    planned = group_field("s-reset", "backoff_ms");
    assert_true(planned >= 8 && planned <= 12);
    leash_group_cancel(f.g);
    assert_int_equal(fx_wait(&f), -ECANCELED);
    assert_all_joined(&f);
    fx_free(&f);
    assert_nothing_leaked();
}

/* ------------------------------------------------ cancellation and deadlines */

static void cancelling_the_scope_during_a_backoff_returns_without_waiting_it(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, "s-cancel", LEASH_ONE_FOR_ONE, NULL, 2);
    f.opts.backoff_min_ms = 600000;
    fx_start(&f, 0);
    WAIT_FOR(f.k[0].starts == 1 && f.k[1].starts == 1);
    tell(&f.k[0], -1);
    WAIT_FOR(group_field("s-cancel", "restarts") == 1); /* pending for ten minutes */
    int64_t t0 = mono_ms();
    leash_group_cancel(f.g);
    assert_int_equal(fx_wait(&f), -ECANCELED);
    assert_true(mono_ms() - t0 < 60000); /* not hung on the backoff */
    assert_int_equal(f.k[0].starts, 1);
    assert_int_equal(f.k[1].cancels, 1);
    assert_all_joined(&f);
    fx_free(&f);
    assert_nothing_leaked();
}

static void supervisor_in_a_group_with_a_deadline_ends_at_that_deadline(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, "s-deadline", LEASH_ONE_FOR_ONE, NULL, 2);
    f.opts.backoff_min_ms = 600000;
    f.k[1].fail_now = 1; /* fails at once, then waits ten minutes for its restart */
    int64_t t0 = mono_ms();
    fx_start(&f, 1000);
    assert_int_equal(fx_wait(&f), -ETIMEDOUT);
    int64_t took = mono_ms() - t0;
    assert_true(took >= 1000 && took < 60000); /* not early, and not the backoff */
    assert_int_equal(f.k[0].cancels, f.k[0].starts);
    assert_true(f.k[1].starts <= 1);
    assert_all_joined(&f);
    fx_free(&f);
    assert_nothing_leaked();
}

struct nest {
    leash_chan *never;
    _Atomic int grandchild_rc;
    _Atomic int blocked;
};

static int grandchild(void *arg)
{
    struct nest *n = arg;
    int          v;
    atomic_fetch_add(&n->blocked, 1);
    atomic_store(&n->grandchild_rc, leash_chan_recv(n->never, &v));
    return 0;
}

static int opens_a_group(void *arg)
{
    leash_group *g;
    int          err = leash_group_open(&g, &(leash_group_opts){.name = "inner"});
    if (err)
        return err;
    leash_go(g, grandchild, arg);
    return leash_group_wait(g);
}

static int fails_when_told(void *arg)
{
    int v;
    int err = leash_chan_recv((leash_chan *)arg, &v);
    return err ? err : v;
}

static void a_stopped_child_gets_the_groups_it_opened_cancelled(void **state)
{
    (void)state;
    struct nest n = {.grandchild_rc = 1};
    leash_chan *cmd;
    assert_int_equal(leash_chan_open(&n.never, "never", sizeof(int), 0), 0);
    assert_int_equal(leash_chan_open(&cmd, "cmd", sizeof(int), 0), 0);
    leash_child_spec specs[] = {
        {.name = "opener", .fn = opens_a_group, .arg = &n, .restart = LEASH_TEMPORARY},
        {.name = "failer", .fn = fails_when_told, .arg = cmd, .restart = LEASH_TRANSIENT},
    };
    struct fx f;
    memset(&f, 0, sizeof f);
    memcpy(f.specs, specs, sizeof specs);
    f.n = 2;
    f.opts = (leash_sup_opts){.strategy = LEASH_ONE_FOR_ALL, .intensity = 5, .period_ms = 600000};
    fx_start(&f, 0);
    WAIT_FOR(n.blocked == 1);
    wait_blocked("chan_recv", 2);
    int v = -1;
    assert_int_equal(leash_chan_send(cmd, &v), 0);
    /* the opener is stopped for the restart: its inner group goes with it */
    WAIT_FOR(n.grandchild_rc == -ECANCELED);
    wait_blocked("chan_recv", 1); /* the failer again, alone: the opener was temporary */
    v = 0;
    assert_int_equal(leash_chan_send(cmd, &v), 0);
    assert_int_equal(fx_wait(&f), 0);
    leash_chan_free(cmd);
    leash_chan_free(n.never);
    assert_nothing_leaked();
}

/* Waits until its scope is cancelled, then supervises. */
struct late {
    struct fx  *f;
    leash_chan *hold;
};

static int sup_main_after_cancel(void *arg)
{
    struct late *l = arg;
    int          v;
    leash_chan_recv(l->hold, &v); /* returns once the test cancels */
    return sup_main(l->f);
}

static void a_supervisor_in_a_cancelled_scope_starts_nothing(void **state)
{
    (void)state;
    _Atomic int runs = 0;
    struct fx   f;
    memset(&f, 0, sizeof f);
    f.specs[0] = (leash_child_spec){.name = "never", .fn = always_zero, .arg = &runs};
    f.n = 1;
    assert_int_equal(leash_group_open(&f.g, &(leash_group_opts){.name = "late"}), 0);
    leash_chan *hold;
    assert_int_equal(leash_chan_open(&hold, "hold", sizeof(int), 0), 0);
    struct late l = {&f, hold};
    assert_int_equal(leash_go(f.g, sup_main_after_cancel, &l), 0);
    wait_blocked("chan_recv", 1);
    leash_group_cancel(f.g);
    assert_int_equal(fx_wait(&f), -ECANCELED);
    assert_int_equal(runs, 0);
    leash_chan_free(hold);
    assert_nothing_leaked();
}

/* A supervision tree: an inner supervisor is a child of an outer one. */
struct tree {
    struct fx   inner;
    leash_chan *cmd;
    _Atomic int inner_runs, inner_rc;
};

static int inner_sup(void *arg)
{
    struct tree *t = arg;
    atomic_fetch_add(&t->inner_runs, 1);
    int rc = leash_supervise(&t->inner.opts, t->inner.specs, t->inner.n);
    atomic_store(&t->inner_rc, rc);
    return rc;
}

static void a_supervisor_stopped_by_its_own_supervisor_joins_its_children(void **state)
{
    (void)state;
    struct tree t = {.inner_rc = 1};
    fx_init(&t.inner, "inner", LEASH_ONE_FOR_ONE, NULL, 1);
    assert_int_equal(leash_chan_open(&t.cmd, "cmd", sizeof(int), 0), 0);
    struct fx outer;
    memset(&outer, 0, sizeof outer);
    outer.specs[0] = (leash_child_spec){.name = "inner", .fn = inner_sup, .arg = &t};
    outer.specs[1] = (leash_child_spec){.name = "failer", .fn = fails_when_told, .arg = t.cmd};
    outer.n = 2;
    outer.opts = (leash_sup_opts){
        .name = "outer", .strategy = LEASH_ONE_FOR_ALL, .intensity = 5, .period_ms = 600000};
    fx_start(&outer, 0);
    WAIT_FOR(t.inner.k[0].starts == 1);
    int v = -3;
    assert_int_equal(leash_chan_send(t.cmd, &v), 0);
    /* the inner supervisor was stopped (its child cancelled and joined
       first), then started again with a fresh child of its own */
    WAIT_FOR(t.inner_runs == 2 && t.inner.k[0].starts == 2);
    assert_int_equal(t.inner.k[0].cancels, 1);
    assert_int_equal(t.inner_rc, -ECANCELED);
    leash_group_cancel(outer.g);
    assert_int_equal(fx_wait(&outer), -ECANCELED);
    assert_all_joined(&t.inner);
    fx_free(&t.inner);
    leash_chan_free(t.cmd);
    assert_nothing_leaked();
}

struct seen_report {
    char     kind[32];
    char     text[512];
    uint64_t group;
    int      n;
};

static void keep_report(const struct leash_report *r, void *ctx)
{
    struct seen_report *s = ctx;
    s->n++;
    snprintf(s->kind, sizeof s->kind, "%s", r->kind);
    snprintf(s->text, sizeof s->text, "%s", r->text);
    s->group = r->group;
}

static void giving_up_is_a_restart_limit_report_about_the_supervisor(void **state)
{
    (void)state;
    struct seen_report seen = {0};
    _Atomic int        runs = 0;
    leash_on_report(keep_report, &seen);
    leash_sup_opts o = {.name = "gives-up", .intensity = 1, .period_ms = 600000};
    assert_int_equal(
        leash_supervise(
            &o, (leash_child_spec[]){{.name = "crash", .fn = fail_at_once, .arg = &runs}}, 1),
        -9);
    leash_on_report(NULL, NULL);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.kind, "restart_limit");
    assert_true(seen.group != 0);
    assert_non_null(strstr(seen.text, "\"gives-up\""));
    assert_non_null(strstr(seen.text, "child \"crash\" returned -9 last"));
    assert_nothing_leaked();
}

static void supervisor_in_a_scope_with_a_deadline_ends_at_that_deadline(void **state)
{
    (void)state;
    leash_chan *never;
    assert_int_equal(leash_chan_open(&never, "never", sizeof(int), 0), 0);
    int64_t      t0 = mono_ms();
    leash_scope *sc;
    assert_int_equal(leash_scope_open(&sc, &(leash_scope_opts){.name = "s", .timeout_ms = 300}), 0);
    /* on the calling thread itself, a root task: the scope is its only deadline */
    assert_int_equal(
        leash_supervise(
            NULL, (leash_child_spec[]){{.name = "waits", .fn = fails_when_told, .arg = never}}, 1),
        -ETIMEDOUT);
    assert_int_equal(leash_scope_close(sc), -ETIMEDOUT);
    int64_t took = mono_ms() - t0;
    assert_true(took >= 300 && took < 60000);
    leash_chan_free(never);
    assert_nothing_leaked();
}

static int cancel_when_child_waits(void *arg)
{
    wait_blocked("chan_recv", 1); /* the supervised child */
    leash_scope_cancel(arg);
    return 0;
}

static void cancelling_the_callers_scope_from_another_task_stops_the_supervisor(void **state)
{
    (void)state;
    leash_chan *never;
    assert_int_equal(leash_chan_open(&never, "never", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "canceller"}), 0);
    leash_scope *sc;
    assert_int_equal(leash_scope_open(&sc, &(leash_scope_opts){.name = "s"}), 0);
    assert_int_equal(leash_go(g, cancel_when_child_waits, sc), 0);
    assert_int_equal(
        leash_supervise(
            NULL, (leash_child_spec[]){{.name = "waits", .fn = fails_when_told, .arg = never}}, 1),
        -ECANCELED);
    assert_int_equal(leash_scope_close(sc), -ECANCELED);
    assert_int_equal(leash_group_wait(g), 0);
    leash_chan_free(never);
    assert_nothing_leaked();
}

/* ------------------------------------------------------------------- dumps */

static void dump_shows_the_supervisor_its_strategy_restarts_and_child_names(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, "s-dump", LEASH_REST_FOR_ONE, NULL, 2);
    fx_start(&f, 0);
    WAIT_FOR(f.k[0].starts == 1 && f.k[1].starts == 1);
    tell(&f.k[0], -2);
    WAIT_FOR(f.k[0].starts == 2 && f.k[1].starts == 2);
    wait_blocked("chan_recv", 2);
    wait_blocked("group_wait", 1); /* the supervisor, on its group */
    char *d = dump_json();
    assert_non_null(d);
    assert_non_null(strstr(d, "\"name\":\"s-dump\",\"deadline_ms_left\":null,\"cancelled\":false,"
                              "\"restarts\":1,\"strategy\":\"rest_for_one\""));
    assert_non_null(strstr(d, "\"fn\":\"kid0\""));
    assert_non_null(strstr(d, "\"fn\":\"kid1\""));
    assert_non_null(strstr(d, "\"strategy\":null")); /* an ordinary group */
    free(d);

    int fd = memfd_create("text", 0);
    assert_true(fd >= 0);
    assert_int_equal(leash_dump(fd, LEASH_DUMP_TEXT), 0);
    char  buf[8192];
    off_t len = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    assert_true(len > 0);
    buf[len] = '\0';
    assert_non_null(strstr(buf, "\"s-dump\""));
    assert_non_null(strstr(buf, "supervisor rest_for_one, 1 restarts (the latest after 0 ms)"));

    leash_group_cancel(f.g);
    assert_int_equal(fx_wait(&f), -ECANCELED);
    fx_free(&f);
    assert_nothing_leaked();
}

/* -------------------------------------------------------------- bad input */

static int noop(void *arg)
{
    (void)arg;
    return 0;
}

static void bad_options_and_specs_are_refused(void **state)
{
    (void)state;
    leash_child_spec ok = {.name = "ok", .fn = noop};
    assert_int_equal(leash_supervise(NULL, NULL, 1), -EINVAL);
    assert_int_equal(leash_supervise(NULL, (leash_child_spec[]){{.name = "nofn"}}, 1), -EINVAL);
    assert_int_equal(leash_supervise(NULL, (leash_child_spec[]){{.fn = noop, .restart = 3}}, 1),
                     -EINVAL);
    assert_int_equal(leash_supervise(NULL, (leash_child_spec[]){{.fn = noop, .restart = -1}}, 1),
                     -EINVAL);
    assert_int_equal(leash_supervise(&(leash_sup_opts){.strategy = 3}, &ok, 1), -EINVAL);
    assert_int_equal(leash_supervise(&(leash_sup_opts){.strategy = -1}, &ok, 1), -EINVAL);
    assert_int_equal(leash_supervise(&(leash_sup_opts){.intensity = 1}, &ok, 1), -EINVAL);
    assert_int_equal(leash_supervise(&(leash_sup_opts){.period_ms = -1}, &ok, 1), -EINVAL);
    assert_int_equal(leash_supervise(&(leash_sup_opts){.backoff_min_ms = -1}, &ok, 1), -EINVAL);
    assert_int_equal(
        leash_supervise(&(leash_sup_opts){.backoff_min_ms = 10, .backoff_max_ms = 5}, &ok, 1),
        -EINVAL);
    /* nothing to run: done at once; a child that ends well and is transient: done */
    assert_int_equal(leash_supervise(NULL, NULL, 0), 0);
    assert_int_equal(
        leash_supervise(NULL, (leash_child_spec[]){{.fn = noop, .restart = LEASH_TRANSIENT}}, 1),
        0);
    assert_nothing_leaked();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_for_one_restarts_only_the_child_that_failed),
        cmocka_unit_test(one_for_all_stops_the_others_in_reverse_order_then_starts_all_in_order),
        cmocka_unit_test(rest_for_one_restarts_the_failed_child_and_those_after_it),
        cmocka_unit_test(permanent_child_is_restarted_even_when_it_returns_zero),
        cmocka_unit_test(transient_restarts_on_error_temporary_never_and_all_done_returns_zero),
        cmocka_unit_test(one_for_all_does_not_restart_a_temporary_child),
        cmocka_unit_test(intensity_plus_one_failures_within_the_period_give_up_with_the_last_error),
        cmocka_unit_test(the_same_failures_spread_beyond_the_period_do_not_give_up),
        cmocka_unit_test(the_same_failures_within_the_period_give_up),
        cmocka_unit_test(default_intensity_is_three_in_five_seconds),
        cmocka_unit_test(permanent_child_that_keeps_returning_zero_gives_up_with_eagain),
        cmocka_unit_test(zero_intensity_gives_up_at_the_first_restart),
        cmocka_unit_test(backoff_formula_doubles_to_the_cap_within_twenty_percent),
        cmocka_unit_test(restart_delays_double_up_to_the_cap),
        cmocka_unit_test(backoff_starts_again_once_the_child_has_run_a_period),
        cmocka_unit_test(cancelling_the_scope_during_a_backoff_returns_without_waiting_it),
        cmocka_unit_test(supervisor_in_a_group_with_a_deadline_ends_at_that_deadline),
        cmocka_unit_test(a_stopped_child_gets_the_groups_it_opened_cancelled),
        cmocka_unit_test(a_supervisor_in_a_cancelled_scope_starts_nothing),
        cmocka_unit_test(a_supervisor_stopped_by_its_own_supervisor_joins_its_children),
        cmocka_unit_test(giving_up_is_a_restart_limit_report_about_the_supervisor),
        cmocka_unit_test(supervisor_in_a_scope_with_a_deadline_ends_at_that_deadline),
        cmocka_unit_test(cancelling_the_callers_scope_from_another_task_stops_the_supervisor),
        cmocka_unit_test(dump_shows_the_supervisor_its_strategy_restarts_and_child_names),
        cmocka_unit_test(bad_options_and_specs_are_refused),
    };
    return cmocka_run_group_tests_name("supervise", tests, quiet_setup, NULL);
}
