/* test_api.c: leash_try_go, the variadic macros, report routing and the version. */
#include "helpers.h"

#include <stdatomic.h>

static int block_on_chan(void *arg)
{
    int v;
    return leash_chan_recv((leash_chan *)arg, &v) == -EPIPE ? 0 : 1;
}

static int ret_zero(void *arg)
{
    (void)arg;
    return 0;
}

static void try_go_refuses_with_eagain_when_the_limit_is_reached(void **state)
{
    (void)state;
    leash_chan *c;
    assert_int_equal(leash_chan_open(&c, "hold", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "one", .limit = 1}), 0);
    assert_int_equal(leash_try_go(g, block_on_chan, c), 0);
    /* the slot stays taken while the child lives, however fast it starts */
    assert_int_equal(leash_try_go(g, ret_zero, NULL), -EAGAIN);
    wait_blocked("chan_recv", 1);
    assert_int_equal(leash_try_go(g, ret_zero, NULL), -EAGAIN);
    char *d = dump_json();
    assert_non_null(d);
    assert_int_equal(count_of(d, "\"fn\":\"ret_zero\""), 0); /* refused: never started */
    assert_int_equal(count_of(d, "\"op\":\"go\""), 0);       /* and nobody waits for a slot */
    free(d);
    assert_int_equal(leash_chan_close(c), 0);
    /* once the child has returned, its slot is free again */
    struct leash_stats st;
    do {
        sched_yield();
        leash_stats(&st);
    } while (st.tasks_live);
    assert_int_equal(leash_try_go(g, ret_zero, NULL), 0);
    /* -EAGAIN is no error of the group's */
    assert_int_equal(leash_group_wait(g), 0);
    leash_chan_free(c);
    assert_nothing_leaked();
}

static void try_go_without_a_limit_is_go(void **state)
{
    (void)state;
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    for (int i = 0; i < 50; i++)
        assert_int_equal(leash_try_go(g, ret_zero, NULL), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_nothing_leaked();
}

static void try_go_on_a_cancelled_group_is_refused_and_wait_says_why(void **state)
{
    (void)state;
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.limit = 2}), 0);
    leash_group_cancel(g);
    assert_int_equal(leash_try_go(g, ret_zero, NULL), -ECANCELED);
    assert_int_equal(leash_try_go(NULL, ret_zero, NULL), -EINVAL);
    assert_int_equal(leash_try_go(g, NULL, NULL), -EINVAL);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_nothing_leaked();
}

struct pair {
    int a, b;
};

static int sum_pair(void *arg)
{
    struct pair *p = arg;
    return p->a + p->b == 3 ? 0 : 1;
}

/* Every macro whose last argument is a pointer takes a compound literal,
   commas and all. */
static void macros_take_compound_literals(void **state)
{
    (void)state;
    leash_chan *c;
    assert_int_equal(leash_chan_open(&c, "pairs", sizeof(struct pair), 2), 0);
    assert_int_equal(leash_chan_send(c, &(struct pair){1, 2}), 0);
    struct pair got = {0, 0};
    assert_int_equal(leash_chan_recv(c, &got), 0);
    assert_int_equal(got.a + got.b, 3);
    int         v = 5, w = 0;
    leash_chan *d;
    assert_int_equal(leash_chan_open(&d, "ints", sizeof(int), 1), 0);
    assert_int_equal(
        leash_select((struct leash_case[]){{d, LEASH_SEND, &v, 0}, {NULL, LEASH_RECV, &w, 0}}, 2,
                     -1),
        0);
    assert_int_equal(leash_select((struct leash_case[]){{d, LEASH_RECV, &w, 0}}, 1, 0), 0);
    assert_int_equal(w, 5);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "lit", .limit = 1}), 0);
    assert_int_equal(leash_go(g, sum_pair, &(struct pair){1, 2}), 0);
    assert_int_equal(leash_group_wait(g), 0);
    leash_chan_free(c);
    leash_chan_free(d);
    assert_nothing_leaked();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(try_go_refuses_with_eagain_when_the_limit_is_reached),
        cmocka_unit_test(try_go_without_a_limit_is_go),
        cmocka_unit_test(try_go_on_a_cancelled_group_is_refused_and_wait_says_why),
        cmocka_unit_test(macros_take_compound_literals),
    };
    return cmocka_run_group_tests(tests, quiet_setup, NULL);
}
