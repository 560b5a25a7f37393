/* test_chan.c: channels and select. */
#include "helpers.h"

#include <stdatomic.h>

static void buffered_channel_is_fifo(void **state)
{
    (void)state;
    leash_chan *c;
    assert_int_equal(leash_chan_open(&c, "fifo", sizeof(int), 4), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(leash_chan_send(c, &i), 0);
    for (int i = 0; i < 4; i++) {
        int v = -1;
        assert_int_equal(leash_chan_recv(c, &v), 0);
        assert_int_equal(v, i);
    }
    leash_chan_free(c);
    assert_nothing_leaked();
}

struct pair {
    leash_chan *c;
    int         n;
    long        sum;
};

static int producer(void *arg)
{
    struct pair *p = arg;
    for (int i = 1; i <= p->n; i++) {
        int err = leash_chan_send(p->c, &i);
        if (err)
            return err;
    }
    return 0;
}

static void rendezvous_hands_every_value_over(void **state)
{
    (void)state;
    struct pair p = {.n = 1000};
    assert_int_equal(leash_chan_open(&p.c, "rdv", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, producer, &p), 0);
    for (int i = 1; i <= p.n; i++) {
        int v;
        assert_int_equal(leash_chan_recv(p.c, &v), 0);
        assert_int_equal(v, i);
    }
    assert_int_equal(leash_group_wait(g), 0);
    leash_chan_free(p.c);
    assert_nothing_leaked();
}

static int consumer(void *arg)
{
    struct pair *p = arg;
    int          v, err;
    long         sum = 0;
    while ((err = leash_chan_recv(p->c, &v)) == 0)
        sum += v;
    __atomic_fetch_add(&p->sum, sum, __ATOMIC_RELAXED);
    return err == -EPIPE ? 0 : err;
}

static void many_producers_and_consumers_lose_nothing(void **state)
{
    (void)state;
    for (size_t cap = 0; cap <= 8; cap += 8) {
        struct pair p = {.n = 5000};
        assert_int_equal(leash_chan_open(&p.c, "mpmc", sizeof(int), cap), 0);
        leash_group *prod, *cons;
        assert_int_equal(leash_group_open(&cons, NULL), 0);
        for (int i = 0; i < 3; i++)
            assert_int_equal(leash_go(cons, consumer, &p), 0);
        assert_int_equal(leash_group_open(&prod, NULL), 0);
        for (int i = 0; i < 4; i++)
            assert_int_equal(leash_go(prod, producer, &p), 0);
        assert_int_equal(leash_group_wait(prod), 0);
        assert_int_equal(leash_chan_close(p.c), 0);
        assert_int_equal(leash_group_wait(cons), 0);
        assert_int_equal(p.sum, 4L * p.n * (p.n + 1) / 2);
        leash_chan_free(p.c);
    }
    assert_nothing_leaked();
}

/* A buffered stream with several senders and receivers at once, on rings
   of 1, 2, 3 (not a power of two) and 64 slots, with a 12-byte element:
   every element arrives exactly once, and each receiver sees each sender's
   elements in the order they were sent (Go's FIFO rule). While nobody
   waits, these sends and receives take no lock; parked ones meet them. */
#define STREAM_SENDERS   3
#define STREAM_RECEIVERS 3
#define STREAM_N         20000

struct item {
    int sender, seq, check;
};

struct stream {
    leash_chan     *c;
    _Atomic int     next_sender;
    _Atomic uint8_t seen[STREAM_SENDERS][STREAM_N];
    _Atomic int     disorder, bad;
};

static int stream_send(void *arg)
{
    struct stream *s = arg;
    int            me = atomic_fetch_add(&s->next_sender, 1);
    for (int i = 0; i < STREAM_N; i++) {
        struct item it = {me, i, me ^ i ^ 0x5a5a};
        int         err = leash_chan_send(s->c, &it);
        if (err)
            return err;
    }
    return 0;
}

static int stream_recv(void *arg)
{
    struct stream *s = arg;
    int            last[STREAM_SENDERS] = {-1, -1, -1};
    struct item    it;
    int            err;
    while ((err = leash_chan_recv(s->c, &it)) == 0) {
        if (it.sender < 0 || it.sender >= STREAM_SENDERS || it.seq < 0 || it.seq >= STREAM_N ||
            it.check != (it.sender ^ it.seq ^ 0x5a5a)) {
            atomic_fetch_add(&s->bad, 1);
            continue;
        }
        if (it.seq <= last[it.sender])
            atomic_fetch_add(&s->disorder, 1);
        last[it.sender] = it.seq;
        atomic_fetch_add(&s->seen[it.sender][it.seq], 1);
    }
    return err == -EPIPE ? 0 : err;
}

static void buffered_streams_keep_each_senders_order_and_lose_nothing(void **state)
{
    (void)state;
    /* rings too small for a full sender's slack, and rings with it (a
       full ring's sender waits until a quarter of it is free) */
    static const size_t caps[] = {1, 2, 3, 8, 64, 1024};
    for (size_t k = 0; k < sizeof caps / sizeof caps[0]; k++) {
        struct stream *s = calloc(1, sizeof *s);
        assert_non_null(s);
        assert_int_equal(leash_chan_open(&s->c, "stream", sizeof(struct item), caps[k]), 0);
        leash_group *prod, *cons;
        assert_int_equal(leash_group_open(&cons, NULL), 0);
        for (int i = 0; i < STREAM_RECEIVERS; i++)
            assert_int_equal(leash_go(cons, stream_recv, s), 0);
        assert_int_equal(leash_group_open(&prod, NULL), 0);
        for (int i = 0; i < STREAM_SENDERS; i++)
            assert_int_equal(leash_go(prod, stream_send, s), 0);
        assert_int_equal(leash_group_wait(prod), 0);
        assert_int_equal(leash_chan_close(s->c), 0);
        assert_int_equal(leash_group_wait(cons), 0);
        assert_int_equal(s->bad, 0);
        assert_int_equal(s->disorder, 0);
        int missing = 0, twice = 0;
        for (int i = 0; i < STREAM_SENDERS; i++)
            for (int j = 0; j < STREAM_N; j++) {
                missing += s->seen[i][j] == 0;
                twice += s->seen[i][j] > 1;
            }
        assert_int_equal(missing, 0);
        assert_int_equal(twice, 0);
        leash_chan_free(s->c);
        free(s);
    }
    assert_nothing_leaked();
}

/* A close that races sends and receives on a small ring: what a send was
   told went in (0) comes out exactly once, and a receiver once told
   -EPIPE is told -EPIPE again (nothing sent before the close turns up
   after a receiver saw it closed). Many short rounds, so the close lands
   at every point of the ring's traffic. */
struct closing {
    leash_chan *c;
    _Atomic int sent, received, resurrected;
};

static int closing_send(void *arg)
{
    struct closing *x = arg;
    for (int v = 1;; v++) {
        int err = leash_chan_send(x->c, &v);
        if (err == -EPIPE)
            return 0;
        if (err)
            return err;
        atomic_fetch_add(&x->sent, 1);
    }
}

static int closing_recv(void *arg)
{
    struct closing *x = arg;
    int             v, err;
    while ((err = leash_chan_recv(x->c, &v)) == 0)
        atomic_fetch_add(&x->received, 1);
    if (err != -EPIPE)
        return err;
    for (int i = 0; i < 3; i++)
        if (leash_chan_recv(x->c, &v) != -EPIPE)
            atomic_fetch_add(&x->resurrected, 1);
    return 0;
}

static int closing_close(void *arg)
{
    struct closing *x = arg;
    /* after some traffic, whatever the machine's speed */
    while (atomic_load(&x->received) < 50)
        leash_checkpoint();
    return leash_chan_close(x->c);
}

static void close_racing_the_ring_loses_and_resurrects_nothing(void **state)
{
    (void)state;
    for (int round = 0; round < 60; round++) {
        struct closing x = {0};
        assert_int_equal(leash_chan_open(&x.c, "closing", sizeof(int), 1 + round % 8), 0);
        leash_group *g;
        assert_int_equal(leash_group_open(&g, NULL), 0);
        for (int i = 0; i < 2; i++) {
            assert_int_equal(leash_go(g, closing_send, &x), 0);
            assert_int_equal(leash_go(g, closing_recv, &x), 0);
        }
        assert_int_equal(leash_go(g, closing_close, &x), 0);
        assert_int_equal(leash_group_wait(g), 0);
        assert_int_equal(x.resurrected, 0);
        assert_int_equal(x.received, x.sent);
        leash_chan_free(x.c);
    }
    assert_nothing_leaked();
}

/* Selects and plain receives take from the same buffered streams while
   senders run lock-free: every element is received exactly once. */
struct mixed {
    leash_chan  *a, *b;
    _Atomic long sum;
    _Atomic int  count;
};

static int mixed_select(void *arg)
{
    struct mixed     *m = arg;
    int               va, vb;
    struct leash_case cs[2] = {
        {.chan = m->a, .op = LEASH_RECV, .elem = &va},
        {.chan = m->b, .op = LEASH_RECV, .elem = &vb},
    };
    for (;;) {
        int r = leash_select(cs, 2, -1);
        if (r < 0)
            return r;
        if (cs[r].err == -EPIPE) {
            cs[r].chan = NULL; /* that stream is over */
            if (!cs[1 - r].chan)
                return 0;
            continue;
        }
        atomic_fetch_add(&m->sum, r == 0 ? va : vb);
        atomic_fetch_add(&m->count, 1);
    }
}

static int mixed_recv_a(void *arg)
{
    struct mixed *m = arg;
    int           v, err;
    while ((err = leash_chan_recv(m->a, &v)) == 0) {
        atomic_fetch_add(&m->sum, v);
        atomic_fetch_add(&m->count, 1);
    }
    return err == -EPIPE ? 0 : err;
}

static void selects_and_receives_share_buffered_streams(void **state)
{
    (void)state;
    struct mixed m = {0};
    assert_int_equal(leash_chan_open(&m.a, "a", sizeof(int), 4), 0);
    assert_int_equal(leash_chan_open(&m.b, "b", sizeof(int), 3), 0);
    leash_group *prod, *cons;
    assert_int_equal(leash_group_open(&cons, NULL), 0);
    assert_int_equal(leash_go(cons, mixed_select, &m), 0);
    assert_int_equal(leash_go(cons, mixed_select, &m), 0);
    assert_int_equal(leash_go(cons, mixed_recv_a, &m), 0);
    struct pair pa = {.c = m.a, .n = 5000}, pb = {.c = m.b, .n = 5000};
    assert_int_equal(leash_group_open(&prod, NULL), 0);
    assert_int_equal(leash_go(prod, producer, &pa), 0);
    assert_int_equal(leash_go(prod, producer, &pb), 0);
    assert_int_equal(leash_group_wait(prod), 0);
    assert_int_equal(leash_chan_close(m.a), 0);
    assert_int_equal(leash_chan_close(m.b), 0);
    assert_int_equal(leash_group_wait(cons), 0);
    assert_int_equal(m.count, 10000);
    assert_int_equal(m.sum, 2L * 5000 * 5001 / 2);
    leash_chan_free(m.a);
    leash_chan_free(m.b);
    assert_nothing_leaked();
}

static int recv_one(void *arg)
{
    int v;
    return leash_chan_recv((leash_chan *)arg, &v);
}

static int send_one(void *arg)
{
    int v = 1;
    return leash_chan_send((leash_chan *)arg, &v);
}

static void close_wakes_every_waiter_with_epipe(void **state)
{
    (void)state;
    leash_chan *r, *s;
    assert_int_equal(leash_chan_open(&r, "r", sizeof(int), 0), 0);
    assert_int_equal(leash_chan_open(&s, "s", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.flags = LEASH_COLLECT}), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(leash_go(g, recv_one, r), 0);
        assert_int_equal(leash_go(g, send_one, s), 0);
    }
    wait_blocked("chan_recv", 3);
    wait_blocked("chan_send", 3);
    assert_int_equal(leash_chan_close(r), 0);
    assert_int_equal(leash_chan_close(s), 0);
    assert_int_equal(leash_group_wait(g), -EPIPE);
    leash_chan_free(r);
    leash_chan_free(s);
    assert_nothing_leaked();
}

static void closed_channel_drains_then_says_epipe(void **state)
{
    (void)state;
    leash_chan *c;
    int         v = 7;
    assert_int_equal(leash_chan_open(&c, "drain", sizeof(int), 2), 0);
    assert_int_equal(leash_chan_send(c, &v), 0);
    assert_int_equal(leash_chan_close(c), 0);
    assert_int_equal(leash_chan_close(c), -EPIPE);
    assert_int_equal(leash_chan_send(c, &v), -EPIPE);
    v = 0;
    assert_int_equal(leash_chan_recv(c, &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(leash_chan_recv(c, &v), -EPIPE);
    leash_chan_free(c);
    assert_nothing_leaked();
}

static bool unreceived_send_round(int64_t ms, void *arg)
{
    (void)arg;
    leash_chan *c;
    assert_int_equal(leash_chan_open(&c, "result", sizeof(int), 0), 0);
    leash_group *g;
    int64_t      t0 = mono_ms();
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.timeout_ms = ms}), 0);
    bool spawned = true;
    for (int i = 0; i < 3; i++)
        spawned &= leash_go(g, send_one, c) == 0;
    /* in time: the three were parked in send when the deadline came */
    bool in_time = spawned && blocked_before("chan_send", 3, t0 + ms);
    int  rc = leash_group_wait(g);
    if (in_time) {
        assert_int_equal(rc, -ETIMEDOUT);
        assert_true(mono_ms() - t0 >= ms);
    }
    leash_chan_free(c);
    assert_nothing_leaked();
    return in_time;
}

static void send_nobody_receives_ends_at_the_deadline(void **state)
{
    (void)state;
    deadline_test(unreceived_send_round, NULL);
}

static int op_in_cancelled_scope(void *arg)
{
    leash_chan *c = arg;
    while (leash_checkpoint() == 0)
        sched_yield();
    int v = 1;
    /* there is room, but the scope is cancelled: level-triggered */
    return leash_chan_send(c, &v) == -ECANCELED ? 0 : -1;
}

static void cancelled_scope_fails_even_a_ready_operation(void **state)
{
    (void)state;
    leash_chan *c;
    assert_int_equal(leash_chan_open(&c, "room", sizeof(int), 4), 0);
    leash_group *g, *outer;
    assert_int_equal(leash_group_open(&outer, NULL), 0);
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, op_in_cancelled_scope, c), 0);
    leash_group_cancel(g);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_int_equal(leash_group_wait(outer), 0);
    leash_chan_free(c);
    assert_nothing_leaked();
}

static void select_completes_the_ready_case(void **state)
{
    (void)state;
    leash_chan *a, *b;
    assert_int_equal(leash_chan_open(&a, "a", sizeof(int), 1), 0);
    assert_int_equal(leash_chan_open(&b, "b", sizeof(int), 1), 0);
    int v = 9, got = 0;
    assert_int_equal(leash_chan_send(b, &v), 0);
    struct leash_case cs[] = {
        {.chan = a, .op = LEASH_RECV, .elem = &got},
        {.chan = b, .op = LEASH_RECV, .elem = &got},
    };
    assert_int_equal(leash_select(cs, 2, -1), 1);
    assert_int_equal(cs[1].err, 0);
    assert_int_equal(got, 9);
    leash_chan_free(a);
    leash_chan_free(b);
    assert_nothing_leaked();
}

static void select_picks_among_ready_cases_at_random(void **state)
{
    (void)state;
    leash_chan *a, *b;
    assert_int_equal(leash_chan_open(&a, "a", sizeof(int), 1), 0);
    assert_int_equal(leash_chan_open(&b, "b", sizeof(int), 1), 0);
    int hits[2] = {0}, v = 1, got;
    for (int i = 0; i < 200; i++) {
        struct leash_case cs[] = {
            {.chan = a, .op = LEASH_SEND, .elem = &v},
            {.chan = b, .op = LEASH_SEND, .elem = &v},
        };
        int k = leash_select(cs, 2, 0);
        assert_true(k == 0 || k == 1);
        hits[k]++;
        assert_int_equal(leash_chan_recv(k ? b : a, &got), 0);
    }
    assert_true(hits[0] > 20 && hits[1] > 20);
    leash_chan_free(a);
    leash_chan_free(b);
    assert_nothing_leaked();
}

static void select_times_out(void **state)
{
    (void)state;
    leash_chan *a;
    assert_int_equal(leash_chan_open(&a, "a", sizeof(int), 0), 0);
    int               got;
    struct leash_case cs[] = {
        {.chan = a, .op = LEASH_RECV, .elem = &got},
        {.chan = NULL, .op = LEASH_RECV, .elem = NULL}, /* never ready */
    };
    assert_int_equal(leash_select(cs, 2, 0), -ETIMEDOUT);
    int64_t t0 = mono_ms();
    assert_int_equal(leash_select(cs, 2, 20), -ETIMEDOUT);
    assert_true(mono_ms() - t0 >= 20);
    leash_chan_free(a);
    assert_nothing_leaked();
}

static void select_reports_a_closed_channel(void **state)
{
    (void)state;
    leash_chan *a;
    assert_int_equal(leash_chan_open(&a, "a", sizeof(int), 0), 0);
    assert_int_equal(leash_chan_close(a), 0);
    int               got;
    struct leash_case cs[] = {{.chan = a, .op = LEASH_RECV, .elem = &got}};
    assert_int_equal(leash_select(cs, 1, -1), 0);
    assert_int_equal(cs[0].err, -EPIPE);
    leash_chan_free(a);
    assert_nothing_leaked();
}

struct sel {
    leash_chan *a, *b;
    int         got, rc;
};

static int selector(void *arg)
{
    struct sel       *s = arg;
    struct leash_case cs[] = {
        {.chan = s->a, .op = LEASH_RECV, .elem = &s->got},
        {.chan = s->b, .op = LEASH_RECV, .elem = &s->got},
    };
    s->rc = leash_select(cs, 2, -1);
    return s->rc < 0 ? s->rc : 0;
}

static void blocked_select_is_completed_by_a_sender(void **state)
{
    (void)state;
    struct sel s = {0};
    assert_int_equal(leash_chan_open(&s.a, "a", sizeof(int), 0), 0);
    assert_int_equal(leash_chan_open(&s.b, "b", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, selector, &s), 0);
    wait_blocked("select", 1);
    int v = 33;
    assert_int_equal(leash_chan_send(s.b, &v), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_int_equal(s.rc, 1);
    assert_int_equal(s.got, 33);
    /* its case on a was withdrawn: a send there finds nobody */
    struct leash_case cs[] = {{.chan = s.a, .op = LEASH_SEND, .elem = &v}};
    assert_int_equal(leash_select(cs, 1, 0), -ETIMEDOUT);
    leash_chan_free(s.a);
    leash_chan_free(s.b);
    assert_nothing_leaked();
}

static bool blocked_select_round(int64_t ms, void *arg)
{
    (void)arg;
    struct sel s = {.rc = 1};
    assert_int_equal(leash_chan_open(&s.a, "a", sizeof(int), 0), 0);
    assert_int_equal(leash_chan_open(&s.b, "b", sizeof(int), 0), 0);
    leash_group *g;
    int64_t      t0 = mono_ms();
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.timeout_ms = ms}), 0);
    /* in time: the select was parked when the deadline came */
    bool in_time = leash_go(g, selector, &s) == 0 && blocked_before("select", 1, t0 + ms);
    int  rc = leash_group_wait(g);
    if (in_time) {
        assert_int_equal(rc, -ETIMEDOUT);
        assert_int_equal(s.rc, -ETIMEDOUT);
    }
    leash_chan_free(s.a);
    leash_chan_free(s.b);
    assert_nothing_leaked();
    return in_time;
}

static void blocked_select_ends_at_the_deadline(void **state)
{
    (void)state;
    deadline_test(blocked_select_round, NULL);
}

static void select_with_no_cases_waits_for_the_scope(void **state)
{
    (void)state;
    assert_int_equal(leash_select(NULL, 0, 10), -ETIMEDOUT);
    assert_nothing_leaked();
}

static void bad_arguments_are_refused(void **state)
{
    (void)state;
    leash_chan *c = (leash_chan *)1;
    int         v = 0;
    assert_int_equal(leash_chan_open(NULL, "x", 4, 0), -EINVAL);
    assert_int_equal(leash_chan_open(&c, "x", 0, 0), -EINVAL);
    assert_null(c);
    assert_int_equal(leash_chan_open(&c, "x", SIZE_MAX / 2, 4), -EINVAL);
    assert_int_equal(leash_chan_send(NULL, &v), -EINVAL);
    assert_int_equal(leash_chan_recv(NULL, &v), -EINVAL);
    assert_int_equal(leash_chan_close(NULL), -EINVAL);
    assert_int_equal(leash_chan_open(&c, NULL, 4, 0), 0);
    assert_int_equal(leash_chan_send(c, NULL), -EINVAL);
    assert_int_equal(leash_chan_recv(c, NULL), -EINVAL);
    struct leash_case bad_op[] = {{.chan = c, .op = 3, .elem = &v}};
    assert_int_equal(leash_select(bad_op, 1, 0), -EINVAL);
    struct leash_case no_elem[] = {{.chan = c, .op = LEASH_RECV, .elem = NULL}};
    assert_int_equal(leash_select(no_elem, 1, 0), -EINVAL);
    assert_int_equal(leash_select(NULL, 2, 0), -EINVAL);
    leash_chan_free(c);
    leash_chan_free(NULL);
    assert_nothing_leaked();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(buffered_channel_is_fifo),
        cmocka_unit_test(rendezvous_hands_every_value_over),
        cmocka_unit_test(many_producers_and_consumers_lose_nothing),
        cmocka_unit_test(buffered_streams_keep_each_senders_order_and_lose_nothing),
        cmocka_unit_test(close_racing_the_ring_loses_and_resurrects_nothing),
        cmocka_unit_test(selects_and_receives_share_buffered_streams),
        cmocka_unit_test(close_wakes_every_waiter_with_epipe),
        cmocka_unit_test(closed_channel_drains_then_says_epipe),
        cmocka_unit_test(send_nobody_receives_ends_at_the_deadline),
        cmocka_unit_test(cancelled_scope_fails_even_a_ready_operation),
        cmocka_unit_test(select_completes_the_ready_case),
        cmocka_unit_test(select_picks_among_ready_cases_at_random),
        cmocka_unit_test(select_times_out),
        cmocka_unit_test(select_reports_a_closed_channel),
        cmocka_unit_test(blocked_select_is_completed_by_a_sender),
        cmocka_unit_test(blocked_select_ends_at_the_deadline),
        cmocka_unit_test(select_with_no_cases_waits_for_the_scope),
        cmocka_unit_test(bad_arguments_are_refused),
    };
    return cmocka_run_group_tests_name("chan", tests, quiet_setup, NULL);
}
