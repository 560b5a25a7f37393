/*
 * test_fork.c: the child of fork() gets a fresh runtime, whatever the
 * parent's pool, timer and groups were doing at the fork, and no call hangs
 * because of it. Each child reports through its exit status (cmocka runs in
 * the parent); the parent gives it a generous time before calling it hung.
 */
#include "helpers.h"

#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>

#define FOREVER 600000

/* -------------------------------------------------- checks in the child */

static int child_fails;

#define CHILD_CHECK(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "child %d: %s:%d: %s\n", (int)getpid(), __FILE__, __LINE__, #cond);    \
            child_fails++;                                                                         \
        }                                                                                          \
    } while (0)

/*
 * Ends a child with its verdict as exit status. Through exec: memory that
 * only the parent's other threads pointed to (their stacks are not in the
 * child) would otherwise count as lost for a leak checker running the
 * child, which says nothing about the library.
 */
static void child_exit(void)
{
    execl("/bin/sh", "sh", "-c", child_fails ? "exit 1" : "exit 0", (char *)NULL);
    _exit(child_fails ? 1 : 0);
}

/* Waits for pid; fails the test if it does not exit 0 within 60 s. */
static void wait_child(pid_t pid)
{
    int64_t until = mono_ms() + 60000;
    int     status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        assert_true(r >= 0);
        if (r == pid)
            break;
        if (mono_ms() > until) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("the child of the fork hung");
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("the child of the fork failed (status %#x)", status);
}

static int ret_zero(void *arg)
{
    (void)arg;
    return 0;
}

static int sleep_forever(void *arg)
{
    (void)arg;
    return leash_sleep(FOREVER);
}

static int add_one(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
    return 0;
}

/* What a fresh runtime must do in the child: groups, tasks (a new pool),
   deadlines (a new timer), channels and dumps. */
static void child_uses_the_runtime(void)
{
    struct leash_stats st;
    leash_stats(&st);
    CHILD_CHECK(st.tasks_live == 0);
    CHILD_CHECK(st.groups_live == 0);
    _Atomic int  n = 0;
    leash_group *g;
    CHILD_CHECK(leash_group_open(&g, &(leash_group_opts){.name = "child"}) == 0);
    for (int i = 0; i < 50; i++)
        CHILD_CHECK(leash_go(g, add_one, &n) == 0);
    CHILD_CHECK(leash_group_wait(g) == 0);
    CHILD_CHECK(atomic_load(&n) == 50);
    /* a deadline is the thing tested: it ends the sleep, not early */
    int64_t t0 = mono_ms();
    CHILD_CHECK(leash_group_open(&g, &(leash_group_opts){.timeout_ms = 30}) == 0);
    int go = leash_go(g, sleep_forever, NULL);
    CHILD_CHECK(go == 0 || go == -ECANCELED);
    CHILD_CHECK(leash_group_wait(g) == -ETIMEDOUT);
    CHILD_CHECK(mono_ms() >= t0 + 30);
    leash_chan *c;
    int         v = 7;
    CHILD_CHECK(leash_chan_open(&c, "c", sizeof v, 1) == 0);
    CHILD_CHECK(leash_chan_send(c, &v) == 0);
    CHILD_CHECK(leash_chan_recv(c, &v) == 0 && v == 7);
    leash_chan_free(c);
    char *d = dump_json();
    CHILD_CHECK(d != NULL);
    if (d) {
        CHILD_CHECK(strstr(d, "\"name\":\"busy\"") == NULL); /* the parent's groups */
        CHILD_CHECK(count_of(d, "\"fn\":") == 1);            /* the forking thread only */
        free(d);
    }
    leash_stats(&st);
    CHILD_CHECK(st.tasks_live == 0);
    CHILD_CHECK(st.groups_live == 0);
}

/* ------------------------------------------------------------- the tests */

static leash_chan *hold;
static _Atomic int spinners_stop, spinning;

static int block_on_hold(void *arg)
{
    (void)arg;
    int v;
    return leash_chan_recv(hold, &v) == -EPIPE ? 0 : 1;
}

static int spin(void *arg)
{
    (void)arg;
    atomic_fetch_add(&spinning, 1);
    while (!atomic_load(&spinners_stop))
        sched_yield();
    return 0;
}

static void fork_from_a_busy_process_gives_the_child_a_fresh_runtime(void **state)
{
    (void)state;
    atomic_store(&spinners_stop, 0);
    atomic_store(&spinning, 0);
    assert_int_equal(leash_chan_open(&hold, "hold", sizeof(int), 0), 0);
    leash_group *busy;
    assert_int_equal(
        leash_group_open(&busy, &(leash_group_opts){.name = "busy", .timeout_ms = FOREVER}), 0);
    for (int i = 0; i < 20; i++)
        assert_int_equal(leash_go(busy, block_on_hold, NULL), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(leash_go(busy, spin, NULL), 0);
    wait_blocked("chan_recv", 20);
    while (atomic_load(&spinning) < 2)
        sched_yield();
    /* and tasks still queued or starting at the fork */
    for (int i = 0; i < 20; i++)
        assert_int_equal(leash_go(busy, ret_zero, NULL), 0);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* a group inherited from the parent is dead here */
        CHILD_CHECK(leash_go(busy, ret_zero, NULL) == -ECHILD);
        CHILD_CHECK(leash_try_go(busy, ret_zero, NULL) == -ECHILD);
        leash_group_cancel(busy); /* a no-op, and no hang */
        CHILD_CHECK(leash_group_wait(busy) == -ECHILD);
        CHILD_CHECK(leash_checkpoint() == 0);
        child_uses_the_runtime();
        child_exit();
    }
    wait_child(pid);
    /* the parent is untouched */
    struct leash_stats st;
    leash_stats(&st);
    assert_true(st.tasks_live >= 22);
    atomic_store(&spinners_stop, 1);
    assert_int_equal(leash_chan_close(hold), 0);
    assert_int_equal(leash_group_wait(busy), 0);
    leash_chan_free(hold);
    assert_nothing_leaked();
}

/* A task forks (as one that starts a subprocess does); in the child it is
   the only task, in no group. */
static _Atomic pid_t task_child;

static int fork_in_a_task(void *arg)
{
    leash_group *own = arg;
    leash_scope *s, *in;
    if (leash_scope_open(&s, &(leash_scope_opts){.name = "around-fork", .timeout_ms = FOREVER}) ||
        leash_scope_open(&in, &(leash_scope_opts){.name = "inner"}))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        CHILD_CHECK(leash_go(own, ret_zero, NULL) == -ECHILD);
        CHILD_CHECK(leash_deadline() == INT64_MAX); /* its scopes stayed behind */
        child_uses_the_runtime();
        /* inherited scopes close as scopes do: innermost first, and after
           the ones the child opened itself */
        leash_scope *mine;
        CHILD_CHECK(leash_scope_open(&mine, NULL) == 0);
        CHILD_CHECK(leash_scope_close(in) == -EPERM);
        CHILD_CHECK(leash_scope_close(mine) == 0);
        CHILD_CHECK(leash_scope_close(s) == -EPERM);
        CHILD_CHECK(leash_scope_close(in) == 0);
        CHILD_CHECK(leash_scope_close(s) == 0);
        child_exit();
    }
    atomic_store(&task_child, pid);
    if (leash_scope_close(in) != 0)
        return -1;
    return leash_scope_close(s);
}

static void fork_from_a_task_gives_the_child_a_fresh_runtime(void **state)
{
    (void)state;
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "forker"}), 0);
    assert_int_equal(leash_go(g, fork_in_a_task, g), 0);
    assert_int_equal(leash_group_wait(g), 0);
    pid_t pid = atomic_load(&task_child);
    assert_true(pid > 0);
    wait_child(pid);
    assert_nothing_leaked();
}

/* Forks while other threads spawn, end, block and cancel as fast as they
   can, so that the fork lands inside the runtime's critical sections: no
   child may hang. */
static _Atomic int churn_stop;

static int churn(void *arg)
{
    (void)arg;
    while (!atomic_load(&churn_stop)) {
        leash_group *g;
        if (leash_group_open(&g, &(leash_group_opts){.timeout_ms = 1}) != 0)
            return -1;
        for (int i = 0; i < 8; i++)
            leash_go(g, i % 2 ? ret_zero : sleep_forever, NULL);
        leash_group_wait(g);
        free(dump_json());
    }
    return 0;
}

static void fork_while_the_runtime_churns_never_hangs_the_child(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    /* ASan's allocator in this toolchain (GCC 12's libsanitizer) takes no
       lock around fork: a child can hang in malloc when another thread
       allocated at the fork, whatever leash does. glibc's malloc is
       fork-safe, so the release, valgrind and TSan runs hold this test. */
    skip();
#endif
    atomic_store(&churn_stop, 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "churn"}), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(leash_go(g, churn, NULL), 0);
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            leash_group *k;
            _Atomic int  n = 0;
            CHILD_CHECK(leash_group_open(&k, NULL) == 0);
            for (int i = 0; i < 10; i++)
                CHILD_CHECK(leash_go(k, add_one, &n) == 0);
            CHILD_CHECK(leash_group_wait(k) == 0);
            CHILD_CHECK(atomic_load(&n) == 10);
            free(dump_json());
            child_exit();
        }
        wait_child(pid);
    }
    atomic_store(&churn_stop, 1);
    assert_int_equal(leash_group_wait(g), 0);
    assert_nothing_leaked();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fork_from_a_busy_process_gives_the_child_a_fresh_runtime),
        cmocka_unit_test(fork_from_a_task_gives_the_child_a_fresh_runtime),
        cmocka_unit_test(fork_while_the_runtime_churns_never_hangs_the_child),
    };
    return cmocka_run_group_tests(tests, quiet_setup, NULL);
}
