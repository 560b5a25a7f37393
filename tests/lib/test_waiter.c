/*
 * test_waiter: a task that waits for its group may run the group's queued
 * children on its own thread. Whoever runs a child, it is a task of its
 * own, and a waiter runs only children of the group it waits for, only
 * when whatever cancels the waiter cancels them too, and only on a stack
 * as large as a worker's.
 * (Which thread runs a child is the scheduler's choice: every test here
 * checks its rule in every round, whichever thread ran the child.)
 */
#include "helpers.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

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

/* ------------------------------------------------------------------------ */

/* A task spinning on every CPU, so that a new child waits in the pool's
   queue (until the pool's monitor adds a worker): the waiter then finds it
   there, which is when it may run it itself. */
static _Atomic int  spinners_stop, spinning;
static leash_group *spinners;

static int spin(void *arg)
{
    (void)arg;
    atomic_fetch_add(&spinning, 1);
    while (!atomic_load(&spinners_stop))
        ;
    return 0;
}

static void busy_cpus_begin(void)
{
    int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    atomic_store(&spinners_stop, 0);
    atomic_store(&spinning, 0);
    assert_int_equal(leash_group_open(&spinners, &(leash_group_opts){.name = "spinners"}), 0);
    for (int i = 0; i < ncpu; i++)
        assert_int_equal(leash_go(spinners, spin, NULL), 0);
    wait_count(&spinning, ncpu);
}

static void busy_cpus_end(void)
{
    atomic_store(&spinners_stop, 1);
    assert_int_equal(leash_group_wait(spinners), 0);
}

static pthread_t   small_thread;
static _Atomic int ran_on_small;

static int needs_a_workers_stack(void *arg)
{
    (void)arg;
    if (pthread_equal(pthread_self(), small_thread)) {
        atomic_fetch_add(&ran_on_small, 1); /* and return before overflowing it */
        return 0;
    }
    volatile char big[256 * 1024];
    memset((char *)big, 1, sizeof big);
    return big[sizeof big - 1] == 1 ? 0 : -1;
}

static void *wait_on_a_small_stack(void *arg)
{
    (void)arg;
    int rc = 0;
    /* one child at a time: a waiter takes a child only from a short queue */
    for (int round = 0; round < 100 && rc == 0; round++) {
        leash_group *g;
        if ((rc = leash_group_open(&g, NULL)) != 0)
            break;
        leash_go(g, needs_a_workers_stack, NULL);
        rc = leash_group_wait(g);
    }
    return (void *)(intptr_t)rc;
}

static void a_waiter_on_a_small_stack_runs_no_child(void **state)
{
    (void)state;
    /* a thread the application made with a small stack: the children it
       waits for were written for a worker's */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    assert_int_equal(pthread_attr_setstacksize(&attr, 128 * 1024), 0);
    atomic_store(&ran_on_small, 0);
    busy_cpus_begin();
    assert_int_equal(pthread_create(&small_thread, &attr, wait_on_a_small_stack, NULL), 0);
    pthread_attr_destroy(&attr);
    void *rc;
    pthread_join(small_thread, &rc);
    busy_cpus_end();
    assert_int_equal((intptr_t)rc, 0);
    assert_int_equal(atomic_load(&ran_on_small), 0);
    assert_nothing_leaked();
}

/* ------------------------------------------------------------------------ */

static _Atomic int ran_on_waiter;

static int note_thread(void *arg)
{
    (void)arg;
    if (pthread_equal(pthread_self(), main_thread))
        atomic_fetch_add(&ran_on_waiter, 1);
    return 0;
}

static void a_waiter_in_a_scope_opened_after_its_group_runs_no_child(void **state)
{
    (void)state;
    /* the scope's cancel reaches the waiter, not the group's children: a
       child run on the waiter's thread would keep it from cancelling them */
    main_thread = pthread_self();
    atomic_store(&ran_on_waiter, 0);
    busy_cpus_begin();
    for (int round = 0; round < 100; round++) {
        leash_group *g;
        assert_int_equal(leash_group_open(&g, NULL), 0);
        leash_scope *s;
        assert_int_equal(leash_scope_open(&s, NULL), 0);
        /* one child at a time: a waiter takes a child only from a short queue */
        assert_int_equal(leash_go(g, note_thread, NULL), 0);
        assert_int_equal(leash_group_wait(g), 0);
        assert_int_equal(leash_scope_close(s), 0);
    }
    busy_cpus_end();
    assert_int_equal(atomic_load(&ran_on_waiter), 0);
    assert_nothing_leaked();
}

/* ------------------------------------------------------------------------ */

/* A task may block the interrupt signal on its worker: it then runs no
   child of a LEASH_INTERRUPT group itself, or the interrupt could never
   reach that child (its group's deadline would not end a read(2)). */
static int read_forever(void *arg)
{
    char c;
    (void)!read(*(int *)arg, &c, 1);
    return 0;
}

static _Atomic int masked_done;

/* Writes to the pipe once NOT_HUNG_MS has passed without the test ending:
   a read that was never interrupted returns, and the test fails. */
static void *unhang(void *arg)
{
    int64_t until = mono_ms() + NOT_HUNG_MS;
    while (!atomic_load(&masked_done) && mono_ms() < until)
        poll_pause();
    if (!atomic_load(&masked_done)) {
        char x[64] = {0};
        (void)!write(*(int *)arg, x, sizeof x);
    }
    return NULL;
}

static int wait_interrupt_groups_masked(void *arg)
{
    int     *p = arg;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGRTMIN + 5);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    for (int round = 0; round < 20; round++) {
        leash_group *g;
        if (leash_group_open(&g, &(leash_group_opts){.flags = LEASH_INTERRUPT}) != 0)
            return -1;
        leash_go(g, read_forever, &p[0]);
        leash_group_cancel(g); /* the child is interrupted wherever it runs, but here */
        leash_group_wait(g);
        char c;
        if (read(p[0], &c, 0) == 0 && fcntl(p[0], F_SETFL, O_NONBLOCK) == 0 &&
            read(p[0], &c, 1) == 1)
            return -2; /* the watchdog had to let it go */
        fcntl(p[0], F_SETFL, 0);
    }
    return 0;
}

static void a_thread_that_blocks_the_interrupt_signal_runs_no_interrupt_child(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    atomic_store(&masked_done, 0);
    pthread_t w;
    assert_int_equal(pthread_create(&w, NULL, unhang, &p[1]), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, wait_interrupt_groups_masked, p), 0);
    int rc = leash_group_wait(g);
    atomic_store(&masked_done, 1);
    pthread_join(w, NULL);
    close(p[0]);
    close(p[1]);
    assert_int_equal(rc, 0);
    assert_nothing_leaked();
}

/* ------------------------------------------------------------------------ */

/* A waiter on a stack of its own making (a coroutine's, switched to with
   swapcontext) is off its thread's stack: what is left there is not known,
   so it runs no child. */
static ucontext_t  coro_back, coro_ctx;
static _Atomic int ran_on_coro;

static int note_coro_thread(void *arg)
{
    (void)arg;
    if (pthread_equal(pthread_self(), main_thread))
        atomic_fetch_add(&ran_on_coro, 1); /* and return before using much of it */
    return 0;
}

static void coro_body(void)
{
    for (int round = 0; round < 50; round++) {
        leash_group *g;
        if (leash_group_open(&g, NULL) != 0)
            break;
        leash_go(g, note_coro_thread, NULL);
        leash_group_wait(g);
    }
}

static void a_waiter_on_a_coroutine_stack_runs_no_child(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    skip(); /* the sanitizers do not follow swapcontext */
#endif
    main_thread = pthread_self();
    atomic_store(&ran_on_coro, 0);
    size_t size = 128 * 1024;
    char  *stack = malloc(size);
    assert_non_null(stack);
    assert_int_equal(getcontext(&coro_ctx), 0);
    coro_ctx.uc_stack.ss_sp = stack;
    coro_ctx.uc_stack.ss_size = size;
    coro_ctx.uc_link = &coro_back;
    makecontext(&coro_ctx, coro_body, 0);
    assert_int_equal(swapcontext(&coro_back, &coro_ctx), 0);
    free(stack);
    assert_int_equal(atomic_load(&ran_on_coro), 0);
    assert_nothing_leaked();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_child_run_by_its_waiter_is_a_task_of_its_own),
        cmocka_unit_test(a_waiter_runs_no_child_of_another_group),
        cmocka_unit_test(children_waiting_for_children_all_run),
        cmocka_unit_test(a_waiter_on_a_small_stack_runs_no_child),
        cmocka_unit_test(a_waiter_in_a_scope_opened_after_its_group_runs_no_child),
        cmocka_unit_test(a_thread_that_blocks_the_interrupt_signal_runs_no_interrupt_child),
        cmocka_unit_test(a_waiter_on_a_coroutine_stack_runs_no_child),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
