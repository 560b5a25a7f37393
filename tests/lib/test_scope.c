/*
 * test_scope.c: cancel scopes on the calling task (Trio's CancelScope and
 * shield, Go's context.WithTimeout in the same goroutine), nested with each
 * other, with groups and with deadlines.
 *
 * Deadlines here are what is tested: each check says only "not early" (the
 * call returned after the deadline) and, through the suite's timeout, "not
 * hung". Calls that must complete run with no deadline over them.
 */
#include "helpers.h"

#include <poll.h>
#include <stdatomic.h>

#define FOREVER 600000 /* ms: a sleep that only a cancellation ends */

static void scope_deadline_ends_calls_of_the_task_itself(void **state)
{
    (void)state;
    assert_int_equal(leash_deadline(), INT64_MAX);
    leash_scope *s;
    int64_t      t0 = mono_ms();
    assert_int_equal(leash_scope_open(&s, &(leash_scope_opts){.name = "fetch", .timeout_ms = 50}),
                     0);
    int64_t d = leash_deadline();
    assert_true(d >= t0 + 50 && d <= mono_ms() + 50); /* leash_deadline() sees it */
    assert_int_equal(leash_sleep(FOREVER), -ETIMEDOUT);
    assert_true(mono_ms() >= t0 + 50); /* not early */
    /* level-triggered: every call inside fails from now on */
    assert_int_equal(leash_checkpoint(), -ETIMEDOUT);
    assert_int_equal(leash_scope_close(s), -ETIMEDOUT);
    /* and outside it, nothing is cancelled */
    assert_int_equal(leash_checkpoint(), 0);
    assert_int_equal(leash_sleep(1), 0);
    assert_int_equal(leash_deadline(), INT64_MAX);
    assert_nothing_leaked();
}

static void scope_that_is_not_cancelled_closes_with_zero(void **state)
{
    (void)state;
    leash_scope *s;
    assert_int_equal(leash_scope_open(&s, NULL), 0);
    assert_int_equal(leash_deadline(), INT64_MAX);
    assert_int_equal(leash_sleep(1), 0);
    assert_int_equal(leash_scope_close(s), 0);
    assert_int_equal(leash_scope_open(&s, &(leash_scope_opts){.timeout_ms = FOREVER}), 0);
    assert_int_equal(leash_checkpoint(), 0);
    assert_int_equal(leash_scope_close(s), 0);
    assert_nothing_leaked();
}

static void scope_opts_are_checked(void **state)
{
    (void)state;
    leash_scope *s = (leash_scope *)1;
    assert_int_equal(leash_scope_open(NULL, NULL), -EINVAL);
    assert_int_equal(leash_scope_open(&s, &(leash_scope_opts){.timeout_ms = -1}), -EINVAL);
    assert_null(s);
    assert_int_equal(leash_scope_open(&s, &(leash_scope_opts){.flags = LEASH_COLLECT}), -EINVAL);
    assert_int_equal(leash_scope_open(&s, &(leash_scope_opts){.flags = LEASH_INTERRUPT}), -EINVAL);
    assert_int_equal(leash_scope_close(NULL), -EINVAL);
    leash_scope_cancel(NULL);
    assert_nothing_leaked();
}

/* ------------------------------------------------ cancel from elsewhere */

struct canceller {
    leash_scope *s;
};

static int cancel_once_main_waits(void *arg)
{
    struct canceller *c = arg;
    wait_blocked("chan_recv", 1);
    leash_scope_cancel(c->s);
    return 0;
}

static void scope_cancel_from_another_task_wakes_the_scope_task(void **state)
{
    (void)state;
    leash_chan *ch;
    assert_int_equal(leash_chan_open(&ch, "nobody", sizeof(int), 0), 0);
    leash_group *g; /* opened before the scope: not inside it */
    assert_int_equal(leash_group_open(&g, NULL), 0);
    struct canceller c;
    assert_int_equal(leash_scope_open(&c.s, &(leash_scope_opts){.name = "user"}), 0);
    assert_int_equal(leash_go(g, cancel_once_main_waits, &c), 0);
    int v;
    assert_int_equal(leash_chan_recv(ch, &v), -ECANCELED);
    assert_int_equal(leash_scope_close(c.s), -ECANCELED);
    assert_int_equal(leash_group_wait(g), 0); /* the group was never inside it */
    leash_chan_free(ch);
    assert_nothing_leaked();
}

/* The task waits in a scope opened after its group: the group is not
   inside the scope, but the wait is, and is never cut short (DESIGN.md:
   when the caller's scope is cancelled, the wait cancels the group and
   still joins every child). */
static int recv_forever(void *arg)
{
    int v;
    return leash_chan_recv(arg, &v);
}

static int cancel_once_main_waits_the_group(void *arg)
{
    struct canceller *c = arg;
    wait_blocked("group_wait", 1);
    leash_scope_cancel(c->s);
    return 0;
}

static void wait_in_a_later_scope_cancels_the_group_when_the_scope_is_cancelled(void **state)
{
    (void)state;
    leash_chan *ch;
    assert_int_equal(leash_chan_open(&ch, "nobody", sizeof(int), 0), 0);
    leash_group *other, *g;
    assert_int_equal(leash_group_open(&other, &(leash_group_opts){.name = "other"}), 0);
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "before"}), 0);
    assert_int_equal(leash_go(g, recv_forever, ch), 0);
    struct canceller c;
    assert_int_equal(leash_scope_open(&c.s, &(leash_scope_opts){.name = "after"}), 0);
    assert_int_equal(leash_go(other, cancel_once_main_waits_the_group, &c), 0);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_int_equal(leash_scope_close(c.s), -ECANCELED);
    assert_int_equal(leash_group_wait(other), 0);
    leash_chan_free(ch);
    assert_nothing_leaked();
}

static void wait_in_a_later_scope_cancels_the_group_at_the_scope_deadline(void **state)
{
    (void)state;
    leash_chan *ch;
    assert_int_equal(leash_chan_open(&ch, "nobody", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "before"}), 0);
    assert_int_equal(leash_go(g, recv_forever, ch), 0);
    leash_scope *s;
    int64_t      t0 = mono_ms();
    assert_int_equal(leash_scope_open(&s, &(leash_scope_opts){.timeout_ms = 50}), 0);
    assert_int_equal(leash_group_wait(g), -ETIMEDOUT);
    int64_t took = mono_ms() - t0;
    assert_true(took >= 50);         /* not early */
    assert_true(took < NOT_HUNG_MS); /* and not hung */
    assert_int_equal(leash_scope_close(s), -ETIMEDOUT);
    leash_chan_free(ch);
    assert_nothing_leaked();
}

/* ------------------------------------------------------ misuse: -EPERM */

static int close_it(void *arg)
{
    return leash_scope_close((leash_scope *)arg);
}

static void scopes_close_in_reverse_order_by_their_task(void **state)
{
    (void)state;
    leash_scope *outer, *inner;
    assert_int_equal(leash_scope_open(&outer, &(leash_scope_opts){.name = "outer"}), 0);
    assert_int_equal(leash_scope_open(&inner, &(leash_scope_opts){.name = "inner"}), 0);
    assert_int_equal(leash_scope_close(outer), -EPERM);
    /* nothing changed: the inner one still rules the task's calls */
    leash_scope_cancel(inner);
    assert_int_equal(leash_checkpoint(), -ECANCELED);
    /* another task may not close it */
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0); /* born cancelled, in inner */
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_int_equal(leash_scope_close(inner), -ECANCELED);
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "other"}), 0);
    assert_int_equal(leash_go(g, close_it, outer), 0);
    assert_int_equal(leash_group_wait(g), -EPERM);
    /* a group opened inside must be waited first */
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_scope_close(outer), -EPERM);
    assert_int_equal(leash_checkpoint(), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_int_equal(leash_scope_close(outer), 0);
    assert_nothing_leaked();
}

/* ------------------------------------------------ scopes and groups */

static _Atomic int child_rc = 1;

static int sleep_forever(void *arg)
{
    (void)arg;
    int rc = leash_sleep(FOREVER);
    atomic_store(&child_rc, rc);
    return rc;
}

/* the id of the scope or group named name in a dump, and its parent */
static uint64_t node_id(const char *dump, const char *name, uint64_t *parent)
{
    char needle[96];
    snprintf(needle, sizeof needle, "\"name\":\"%s\"", name);
    const char *p = strstr(dump, needle);
    assert_non_null(p);
    const char *id = p;
    while (id > dump && strncmp(id, "{\"id\":", 6) != 0)
        id--;
    unsigned long long i = 0, par = 0;
    assert_int_equal(sscanf(id, "{\"id\":%llu,\"parent\":%llu", &i, &par), 2);
    if (parent)
        *parent = par;
    return i;
}

static void groups_opened_in_a_scope_are_inside_it(void **state)
{
    (void)state;
    leash_scope *s;
    assert_int_equal(leash_scope_open(&s, &(leash_scope_opts){.name = "req"}), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "fanout"}), 0);
    char *d = dump_json();
    assert_non_null(d);
    uint64_t parent, sid = node_id(d, "req", NULL);
    node_id(d, "fanout", &parent);
    assert_int_equal(parent, sid); /* the group hangs below the scope */
    char want[64];
    snprintf(want, sizeof want, "\"scope\":{\"task\":%llu,\"shield\":false}",
             (unsigned long long)leash_task_id());
    assert_non_null(strstr(d, want));
    free(d);
    assert_int_equal(leash_group_wait(g), 0);
    assert_int_equal(leash_scope_close(s), 0);
    assert_nothing_leaked();
}

static void scope_deadline_reaches_groups_inside_it(void **state)
{
    (void)state;
    atomic_store(&child_rc, 1);
    leash_scope *s;
    int64_t      t0 = mono_ms();
    assert_int_equal(leash_scope_open(&s, &(leash_scope_opts){.name = "req", .timeout_ms = 50}), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "fanout"}), 0);
    /* refused only if the deadline passed already: wait says so either way */
    int go = leash_go(g, sleep_forever, NULL);
    assert_true(go == 0 || go == -ECANCELED);
    assert_int_equal(leash_group_wait(g), -ETIMEDOUT);
    if (go == 0)
        assert_int_equal(atomic_load(&child_rc), -ETIMEDOUT);
    assert_true(mono_ms() >= t0 + 50);
    assert_int_equal(leash_scope_close(s), -ETIMEDOUT);
    assert_nothing_leaked();
}

static void scope_cancel_reaches_groups_inside_it(void **state)
{
    (void)state;
    atomic_store(&child_rc, 1);
    leash_scope *s;
    assert_int_equal(leash_scope_open(&s, NULL), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, sleep_forever, NULL), 0);
    wait_blocked("sleep", 1);
    leash_scope_cancel(s);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_int_equal(atomic_load(&child_rc), -ECANCELED);
    assert_int_equal(leash_scope_close(s), -ECANCELED);
    assert_nothing_leaked();
}

static void inner_scope_with_a_later_deadline_ends_at_the_outer_one(void **state)
{
    (void)state;
    leash_scope *outer, *inner;
    int64_t      t0 = mono_ms();
    assert_int_equal(leash_scope_open(&outer, &(leash_scope_opts){.timeout_ms = 50}), 0);
    int64_t d = leash_deadline();
    assert_int_equal(leash_scope_open(&inner, &(leash_scope_opts){.timeout_ms = FOREVER}), 0);
    assert_int_equal(leash_deadline(), d); /* the earliest around the task */
    assert_int_equal(leash_sleep(FOREVER), -ETIMEDOUT);
    assert_true(mono_ms() >= t0 + 50);
    assert_int_equal(leash_scope_close(inner), -ETIMEDOUT);
    assert_int_equal(leash_checkpoint(), -ETIMEDOUT);
    assert_int_equal(leash_scope_close(outer), -ETIMEDOUT);
    assert_nothing_leaked();
}

/* A task of a group with a 50 ms deadline opens a scope of 600 s and, in
   it, a group of 600 s with a child: all of it ends at the group's 50 ms. */
static _Atomic int nested_scope_rc = 1, nested_wait_rc = 1, nested_go_rc = 1, nested_deadline_ok;

static int open_long_scope_and_group(void *arg)
{
    (void)arg;
    int64_t      d = leash_deadline();
    leash_scope *s;
    if (leash_scope_open(&s, &(leash_scope_opts){.timeout_ms = FOREVER}) != 0)
        return -1;
    atomic_store(&nested_deadline_ok, leash_deadline() == d);
    leash_group *g;
    if (leash_group_open(&g, &(leash_group_opts){.timeout_ms = FOREVER}) != 0)
        return -1;
    atomic_store(&nested_go_rc, leash_go(g, sleep_forever, NULL));
    atomic_store(&nested_wait_rc, leash_group_wait(g));
    atomic_store(&nested_scope_rc, leash_scope_close(s));
    return 0;
}

static void scopes_nested_with_groups_end_at_the_outer_deadline(void **state)
{
    (void)state;
    atomic_store(&child_rc, 1);
    /* the deadline is what is tested, so it must not pass before the task
       starts: on a machine too slow for that, try again with a longer one */
    for (int64_t ms = 50;; ms *= 4) {
        leash_group *g;
        int64_t      t0 = mono_ms();
        assert_int_equal(
            leash_group_open(&g, &(leash_group_opts){.name = "outer", .timeout_ms = ms}), 0);
        int go = leash_go(g, open_long_scope_and_group, NULL);
        assert_int_equal(leash_group_wait(g), -ETIMEDOUT);
        if (go == -ECANCELED && ms < 60000)
            continue;
        assert_int_equal(go, 0);
        assert_true(mono_ms() >= t0 + ms);
        break;
    }
    assert_true(atomic_load(&nested_deadline_ok));
    int go = atomic_load(&nested_go_rc);
    assert_true(go == 0 || go == -ECANCELED);
    if (go == 0)
        assert_int_equal(atomic_load(&child_rc), -ETIMEDOUT);
    assert_int_equal(atomic_load(&nested_wait_rc), -ETIMEDOUT);
    assert_int_equal(atomic_load(&nested_scope_rc), -ETIMEDOUT);
    assert_nothing_leaked();
}

static int ret_zero(void *arg)
{
    (void)arg;
    return 0;
}

static void scope_opened_in_a_cancelled_group_is_born_cancelled(void **state)
{
    (void)state;
    leash_scope *outer, *s;
    assert_int_equal(leash_scope_open(&outer, NULL), 0);
    leash_scope_cancel(outer);
    assert_int_equal(leash_scope_open(&s, NULL), 0);
    assert_int_equal(leash_checkpoint(), -ECANCELED);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, ret_zero, NULL), -ECANCELED);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_int_equal(leash_scope_close(s), -ECANCELED);
    assert_int_equal(leash_scope_close(outer), -ECANCELED);
    assert_nothing_leaked();
}

/* --------------------------------------------------------------- shield */

static _Atomic int cleanup_done;

static int sleep_a_little(void *arg)
{
    (void)arg;
    return leash_sleep(5);
}

/* What cleanup needs: sleeps, channels and child tasks all complete. */
static int cleanup(void)
{
    int rc = leash_sleep(5);
    if (rc)
        return rc;
    leash_chan *c;
    if ((rc = leash_chan_open(&c, "log", sizeof(int), 1)) != 0)
        return rc;
    int v = 1;
    if ((rc = leash_chan_send(c, &v)) != 0 || (rc = leash_chan_recv(c, &v)) != 0)
        return rc;
    leash_chan_free(c);
    leash_group *g;
    if ((rc = leash_group_open(&g, &(leash_group_opts){.name = "flush"})) != 0)
        return rc;
    for (int i = 0; i < 3; i++)
        if ((rc = leash_go(g, sleep_a_little, NULL)) != 0)
            break;
    int w = leash_group_wait(g);
    return rc ? rc : w;
}

static void shielded_scope_in_a_cancelled_one_finishes_its_cleanup(void **state)
{
    (void)state;
    leash_scope *outer, *shield;
    assert_int_equal(leash_scope_open(&outer, &(leash_scope_opts){.name = "work"}), 0);
    leash_scope_cancel(outer);
    assert_int_equal(leash_sleep(1), -ECANCELED);
    assert_int_equal(cleanup(), -ECANCELED); /* without the shield it cannot */
    assert_int_equal(
        leash_scope_open(&shield, &(leash_scope_opts){.name = "cleanup", .flags = LEASH_SHIELD}),
        0);
    assert_int_equal(leash_checkpoint(), 0);
    assert_int_equal(cleanup(), 0);
    assert_int_equal(leash_scope_close(shield), 0);
    assert_int_equal(leash_checkpoint(), -ECANCELED); /* back in the cancelled scope */
    assert_int_equal(leash_scope_close(outer), -ECANCELED);
    assert_nothing_leaked();
}

static _Atomic int shield_deadline_none;

static int cut_then_clean_up(void *arg)
{
    (void)arg;
    int          rc = leash_sleep(FOREVER); /* cut by its group's cancellation */
    leash_scope *s;
    if (leash_scope_open(&s, &(leash_scope_opts){.flags = LEASH_SHIELD}) != 0)
        return -1;
    /* the deadlines around a shield do not apply inside it */
    atomic_store(&shield_deadline_none, leash_deadline() == INT64_MAX);
    if (cleanup() == 0)
        atomic_store(&cleanup_done, 1);
    if (leash_scope_close(s) != 0)
        return -1;
    return rc;
}

static void shield_in_a_task_of_a_cancelled_group_finishes_its_cleanup(void **state)
{
    (void)state;
    atomic_store(&cleanup_done, 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.timeout_ms = FOREVER}), 0);
    assert_int_equal(leash_go(g, cut_then_clean_up, NULL), 0);
    wait_blocked("sleep", 1);
    leash_group_cancel(g);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_int_equal(atomic_load(&cleanup_done), 1);
    assert_true(atomic_load(&shield_deadline_none));
    assert_nothing_leaked();
}

static void shield_is_ended_by_its_own_deadline_and_cancel(void **state)
{
    (void)state;
    leash_scope *outer, *shield;
    assert_int_equal(leash_scope_open(&outer, NULL), 0);
    leash_scope_cancel(outer);
    int64_t t0 = mono_ms();
    assert_int_equal(
        leash_scope_open(&shield, &(leash_scope_opts){.timeout_ms = 40, .flags = LEASH_SHIELD}), 0);
    assert_true(leash_deadline() >= t0 + 40);
    assert_int_equal(leash_sleep(FOREVER), -ETIMEDOUT);
    assert_true(mono_ms() >= t0 + 40);
    assert_int_equal(leash_scope_close(shield), -ETIMEDOUT);
    assert_int_equal(leash_scope_open(&shield, &(leash_scope_opts){.flags = LEASH_SHIELD}), 0);
    leash_scope_cancel(shield);
    assert_int_equal(leash_checkpoint(), -ECANCELED);
    assert_int_equal(leash_scope_close(shield), -ECANCELED);
    assert_int_equal(leash_scope_close(outer), -ECANCELED);
    assert_nothing_leaked();
}

/* ------------------------------------------- scopes and LEASH_INTERRUPT */

static _Atomic int read_errno;

static int read_in_a_scope(void *arg)
{
    int         *fds = arg;
    leash_scope *s;
    if (leash_scope_open(&s, &(leash_scope_opts){.timeout_ms = 50}) != 0)
        return -1;
    char    c;
    ssize_t n = read(fds[0], &c, 1); /* a foreign call: leash cannot wake it */
    atomic_store(&read_errno, n < 0 ? errno : 0);
    return leash_scope_close(s);
}

static void scope_deadline_interrupts_a_foreign_call_in_an_interrupt_group(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    leash_group *g;
    int64_t      t0 = mono_ms(); /* the scope opens later, in the task */
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.flags = LEASH_INTERRUPT}), 0);
    assert_int_equal(leash_go(g, read_in_a_scope, fds), 0);
    assert_int_equal(leash_group_wait(g), -ETIMEDOUT);
    assert_int_equal(atomic_load(&read_errno), EINTR);
    assert_true(mono_ms() >= t0 + 50);
    close(fds[0]);
    close(fds[1]);
    assert_nothing_leaked();
}

/* ------------------------------------------------------- unclosed scopes */

static int return_with_a_scope_open(void *arg)
{
    (void)arg;
    leash_scope *s;
    return leash_scope_open(&s, &(leash_scope_opts){.name = "forgotten"});
}

static void task_returning_with_a_scope_open_gets_it_closed_and_a_report(void **state)
{
    (void)state;
    uint64_t     before = reports();
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, return_with_a_scope_open, NULL), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_int_equal(reports(), before + 1);
    char *d = dump_json();
    assert_null(strstr(d, "forgotten"));
    free(d);
    assert_nothing_leaked();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(scope_deadline_ends_calls_of_the_task_itself),
        cmocka_unit_test(scope_that_is_not_cancelled_closes_with_zero),
        cmocka_unit_test(scope_opts_are_checked),
        cmocka_unit_test(scope_cancel_from_another_task_wakes_the_scope_task),
        cmocka_unit_test(wait_in_a_later_scope_cancels_the_group_when_the_scope_is_cancelled),
        cmocka_unit_test(wait_in_a_later_scope_cancels_the_group_at_the_scope_deadline),
        cmocka_unit_test(scopes_close_in_reverse_order_by_their_task),
        cmocka_unit_test(groups_opened_in_a_scope_are_inside_it),
        cmocka_unit_test(scope_deadline_reaches_groups_inside_it),
        cmocka_unit_test(scope_cancel_reaches_groups_inside_it),
        cmocka_unit_test(inner_scope_with_a_later_deadline_ends_at_the_outer_one),
        cmocka_unit_test(scopes_nested_with_groups_end_at_the_outer_deadline),
        cmocka_unit_test(scope_opened_in_a_cancelled_group_is_born_cancelled),
        cmocka_unit_test(shielded_scope_in_a_cancelled_one_finishes_its_cleanup),
        cmocka_unit_test(shield_in_a_task_of_a_cancelled_group_finishes_its_cleanup),
        cmocka_unit_test(shield_is_ended_by_its_own_deadline_and_cancel),
        cmocka_unit_test(scope_deadline_interrupts_a_foreign_call_in_an_interrupt_group),
        cmocka_unit_test(task_returning_with_a_scope_open_gets_it_closed_and_a_report),
    };
    return cmocka_run_group_tests(tests, quiet_setup, NULL);
}
