/* test_dump.c: dumps, stats and report lines. */
#include "helpers.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>

struct parked {
    leash_chan *c;
};

static int send_line; /* where park_on_send blocks */

static int park_on_send(void *arg)
{
    int v = 1;
    send_line = __LINE__ + 1;
    return leash_chan_send(((struct parked *)arg)->c, &v);
}

static void json_dump_names_the_channel_the_line_and_the_group(void **state)
{
    (void)state;
    struct parked p;
    assert_int_equal(leash_chan_open(&p.c, "results", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(
        leash_group_open(&g, &(leash_group_opts){.name = "search", .timeout_ms = 600000}), 0);
    assert_int_equal(leash_go(g, park_on_send, &p), 0);
    wait_blocked("chan_send", 1);
    char *d = dump_json();
    assert_non_null(d);
    char want[128];
    snprintf(want, sizeof want, "\"pid\":%d", (int)getpid());
    assert_non_null(strstr(d, want));
    assert_non_null(strstr(d, "\"name\":\"search\""));
    assert_non_null(strstr(d, "\"cancelled\":false"));
    assert_non_null(strstr(d, "\"fn\":\"park_on_send\""));
    assert_non_null(strstr(d, "\"state\":\"blocked\""));
    assert_non_null(strstr(d, "\"op\":\"chan_send\",\"object\":\"results\""));
    snprintf(want, sizeof want, "test_dump.c:%d\"}", send_line);
    assert_non_null(strstr(d, want));
    assert_non_null(strstr(d, "{\"id\":0,\"parent\":null,\"name\":\"root\""));
    assert_null(strstr(d, "\"deadline_ms_left\":null,\"cancelled\":false,\"site\""));
    free(d);
    leash_group_cancel(g);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    leash_chan_free(p.c);
    assert_nothing_leaked();
}

static char *dump_text(void)
{
    int fd = memfd_create("text", 0);
    assert_int_equal(leash_dump(fd, LEASH_DUMP_TEXT), 0);
    off_t n = lseek(fd, 0, SEEK_END);
    char *s = calloc(1, (size_t)n + 1);
    assert_int_equal(pread(fd, s, (size_t)n, 0), n);
    close(fd);
    return s;
}

static void text_dump_reads_like_a_goroutine_dump(void **state)
{
    (void)state;
    struct parked p;
    assert_int_equal(leash_chan_open(&p.c, "results", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "search"}), 0);
    assert_int_equal(leash_go(g, park_on_send, &p), 0);
    wait_blocked("chan_send", 1);
    char *t = dump_text();
    assert_non_null(strstr(t, "leash dump: pid"));
    assert_non_null(strstr(t, "\"search\""));
    assert_non_null(strstr(t, "park_on_send [blocked on chan_send \"results\""));
    char want[64];
    snprintf(want, sizeof want, "test_dump.c:%d\n", send_line);
    assert_non_null(strstr(t, want));
    free(t);
    leash_group_cancel(g);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    leash_chan_free(p.c);
    assert_nothing_leaked();
}

static int lock_held_by_main(void *arg)
{
    int err = leash_mutex_lock((leash_mutex *)arg);
    return err ? err : leash_mutex_unlock((leash_mutex *)arg);
}

static void a_task_waiting_for_a_mutex_is_shown_with_its_holder(void **state)
{
    (void)state;
    leash_mutex m;
    leash_mutex_init(&m, "ledger");
    assert_int_equal(leash_mutex_lock(&m), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, lock_held_by_main, &m), 0);
    wait_blocked("mutex", 1);
    char  want[96];
    char *d = dump_json();
    snprintf(want, sizeof want, "\"op\":\"mutex\",\"object\":\"ledger\"");
    assert_non_null(strstr(d, want));
    snprintf(want, sizeof want, "\"held_by\":%llu}", (unsigned long long)leash_task_id());
    assert_non_null(strstr(d, want));
    free(d);
    char *t = dump_text();
    snprintf(want, sizeof want, "blocked on mutex \"ledger\" held by task %llu",
             (unsigned long long)leash_task_id());
    assert_non_null(strstr(t, want));
    free(t);
    assert_int_equal(leash_mutex_unlock(&m), 0);
    assert_int_equal(leash_group_wait(g), 0);
    leash_mutex_destroy(&m);
    assert_nothing_leaked();
}

static void dump_refuses_bad_arguments(void **state)
{
    (void)state;
    assert_int_equal(leash_dump(1, 7), -EINVAL);
    assert_int_equal(leash_dump(-1, LEASH_DUMP_TEXT), -EBADF);
    int p[2];
    assert_int_equal(pipe(p), 0);
    close(p[0]);
    signal(SIGPIPE, SIG_IGN);
    assert_int_equal(leash_dump(p[1], LEASH_DUMP_TEXT), -EPIPE);
    close(p[1]);
    assert_int_equal(leash_stats(NULL), -EINVAL);
}

static int nothing(void *arg)
{
    (void)arg;
    return 0;
}

static void stats_count_tasks_and_groups(void **state)
{
    (void)state;
    struct leash_stats a, b;
    assert_int_equal(leash_stats(&a), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_stats(&b), 0);
    assert_int_equal(b.groups_live, a.groups_live + 1);
    for (int i = 0; i < 10; i++)
        assert_int_equal(leash_go(g, nothing, NULL), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_int_equal(leash_stats(&b), 0);
    assert_int_equal(b.tasks_started, a.tasks_started + 10);
    assert_true(b.threads >= 1);
    assert_nothing_leaked();
}

static void report_is_one_stderr_line_naming_the_site(void **state)
{
    (void)state;
    unsetenv("LEASH_REPORT");
    int p[2];
    assert_int_equal(pipe(p), 0);
    int saved = dup(2);
    dup2(p[1], 2);
    leash_mutex m;
    leash_mutex_init(&m, "twice");
    assert_int_equal(leash_mutex_lock(&m), 0);
    int line = __LINE__ + 1;
    assert_int_equal(leash_mutex_lock(&m), -EDEADLK);
    leash_mutex_unlock(&m);
    dup2(saved, 2);
    close(saved);
    close(p[1]);
    char    buf[1024] = {0};
    ssize_t n = read(p[0], buf, sizeof buf - 1);
    close(p[0]);
    assert_true(n > 0);
    assert_non_null(strstr(buf, "self_deadlock"));
    assert_non_null(strstr(buf, "\"twice\""));
    char want[64];
    snprintf(want, sizeof want, "test_dump.c:%d", line);
    assert_non_null(strstr(buf, want));
    assert_int_equal(count_of(buf, "\n"), 1);
    assert_int_equal(buf[n - 1], '\n');
    leash_mutex_destroy(&m);
}

/* ------------------------------------------ names of objects that go */

/* The library's hook for the tests (dump.c): called by a snapshot that has
   seen a task blocked, before it copies the name of what it is blocked on. */
extern void (*leash__snap_hook)(uint64_t task, int op);
extern _Atomic uint64_t leash__peek_waits;

/* One race held open: a dump that has seen `target` blocked waits, inside
   the window, until the target's call has returned and freed its object
   (`freed`), or until the call is seen waiting for the dump to finish with
   the name (leash__peek_waits moved): the first can only happen without the
   fix, and is then a read of freed memory (ASan, valgrind). */
static struct {
    _Atomic uint64_t target;
    _Atomic bool     armed, hooked, freed, stuck;
    uint64_t         peek_waits;
} race;

static void race_hook(uint64_t task, int op)
{
    (void)op;
    if (!atomic_load(&race.armed) || task != atomic_load(&race.target))
        return;
    atomic_store(&race.armed, false);
    atomic_store(&race.hooked, true);
    int64_t until = mono_ms() + TEST_WAIT_MS;
    while (!atomic_load(&race.freed) && atomic_load(&leash__peek_waits) == race.peek_waits) {
        if (mono_ms() > until) {
            atomic_store(&race.stuck, true); /* neither: the test fails below */
            return;
        }
        poll_pause();
    }
}

static void race_arm(uint64_t target)
{
    race.peek_waits = atomic_load(&leash__peek_waits);
    atomic_store(&race.hooked, false);
    atomic_store(&race.freed, false);
    atomic_store(&race.stuck, false);
    atomic_store(&race.target, target);
    leash__snap_hook = race_hook;
    atomic_store(&race.armed, true);
}

static void wait_flag(_Atomic bool *f, const char *what)
{
    int64_t until = mono_ms() + TEST_WAIT_MS;
    while (!atomic_load(f)) {
        if (mono_ms() > until)
            fail_msg("never saw %s", what);
        poll_pause();
    }
}

struct freeing {
    leash_chan      *c;
    _Atomic uint64_t id;
    _Atomic bool     sent;
};

/* Receives once, then frees the channel it was blocked on (once the sender
   is out of its call too), as a program may. */
static void *receive_then_free(void *arg)
{
    struct freeing *f = arg;
    atomic_store(&f->id, leash_task_id());
    int v;
    assert_int_equal(leash_chan_recv(f->c, &v), 0);
    wait_flag(&f->sent, "the send return");
    leash_chan_free(f->c);
    atomic_store(&race.freed, true);
    return NULL;
}

/* A helper made a root task before the dump: a dump in its window holds the
   root tasks' lock, which a thread's first call into leash takes. */
static _Atomic bool helper_ready;

static void *send_when_hooked(void *arg)
{
    struct freeing *f = arg;
    (void)leash_task_id();
    atomic_store(&helper_ready, true);
    wait_flag(&race.hooked, "the dump inside its window");
    int v = 7;
    assert_int_equal(leash_chan_send(f->c, &v), 0);
    atomic_store(&f->sent, true);
    return NULL;
}

static void a_dump_copies_the_name_of_a_channel_freed_as_its_call_returns(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        struct freeing f = {0};
        assert_int_equal(leash_chan_open(&f.c, "short-lived-channel", sizeof(int), 0), 0);
        pthread_t r, s;
        assert_int_equal(pthread_create(&r, NULL, receive_then_free, &f), 0);
        wait_blocked("chan_recv", 1);
        race_arm(atomic_load(&f.id));
        atomic_store(&helper_ready, false);
        assert_int_equal(pthread_create(&s, NULL, send_when_hooked, &f), 0);
        wait_flag(&helper_ready, "the sender ready");
        char *d = dump_json(); /* the receiver returns and frees inside it */
        leash__snap_hook = NULL;
        assert_false(atomic_load(&race.stuck));
        assert_true(atomic_load(&race.hooked));
        assert_non_null(d);
        assert_non_null(strstr(d, "\"object\":\"short-lived-channel\""));
        free(d);
        pthread_join(s, NULL);
        pthread_join(r, NULL);
    }
}

struct waited {
    leash_chan      *c;
    _Atomic uint64_t id;
};

static int recv_until_closed(void *arg)
{
    int v;
    return leash_chan_recv(arg, &v) == -EPIPE ? 0 : -EIO;
}

/* Opens a group whose child waits for a channel, and waits for the group:
   the group is freed as the wait returns. */
static void *open_and_wait(void *arg)
{
    struct waited *w = arg;
    atomic_store(&w->id, leash_task_id());
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "waited-and-freed"}), 0);
    assert_int_equal(leash_go(g, recv_until_closed, w->c), 0);
    assert_int_equal(leash_group_wait(g), 0);
    atomic_store(&race.freed, true);
    return NULL;
}

static void *close_when_hooked(void *arg)
{
    (void)leash_task_id();
    atomic_store(&helper_ready, true);
    wait_flag(&race.hooked, "the dump inside its window");
    assert_int_equal(leash_chan_close(((struct waited *)arg)->c), 0);
    return NULL;
}

static void a_dump_copies_the_name_of_a_group_freed_as_its_wait_returns(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        struct waited w = {0};
        assert_int_equal(leash_chan_open(&w.c, "gate", sizeof(int), 0), 0);
        pthread_t o, c;
        assert_int_equal(pthread_create(&o, NULL, open_and_wait, &w), 0);
        wait_blocked("group_wait", 1);
        race_arm(atomic_load(&w.id));
        atomic_store(&helper_ready, false);
        assert_int_equal(pthread_create(&c, NULL, close_when_hooked, &w), 0);
        wait_flag(&helper_ready, "the closer ready");
        char *d = dump_json();
        leash__snap_hook = NULL;
        assert_false(atomic_load(&race.stuck));
        assert_true(atomic_load(&race.hooked));
        assert_non_null(d);
        assert_non_null(strstr(d, "\"object\":\"waited-and-freed\""));
        free(d);
        pthread_join(c, NULL);
        pthread_join(o, NULL);
        leash_chan_free(w.c);
    }
    assert_nothing_leaked();
}

/* The same race left to chance, many times: groups opened, waited and
   freed by one thread while another dumps, as text and JSON. */
static int quick(void *arg)
{
    (void)arg;
    return 0;
}

static _Atomic bool churn_stop;

static void *churn_groups(void *arg)
{
    (void)arg;
    for (int i = 0; !atomic_load(&churn_stop) && i < 2000; i++) {
        leash_group *g;
        char         name[32];
        snprintf(name, sizeof name, "churn-%d", i);
        assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = name}), 0);
        assert_int_equal(leash_go(g, quick, NULL), 0);
        assert_int_equal(leash_group_wait(g), 0);
    }
    return NULL;
}

static void dumps_racing_groups_that_are_waited_and_freed_read_nothing_freed(void **state)
{
    (void)state;
    pthread_t t;
    atomic_store(&churn_stop, false);
    assert_int_equal(pthread_create(&t, NULL, churn_groups, NULL), 0);
    for (int i = 0; i < 200; i++) {
        char *d = i % 2 ? dump_json() : dump_text();
        assert_non_null(d);
        free(d);
    }
    atomic_store(&churn_stop, true);
    pthread_join(t, NULL);
}

/* A task waiting for a thread is in the pool's queue or in a worker's batch,
   and moves from one to the other (a stuck worker's batch goes back to the
   queue) and then to its group's list: each dump shows it once, wherever it
   is. Every task here blocks outside leash, so the workers that take them
   get stuck with batches behind them; the monitor gives those back (without
   it, the tasks never all start, and so does queued_task_runs_while_every_
   worker_is_blocked_outside_leash in test_group). */
static void a_dump_shows_each_waiting_task_once_wherever_it_waits(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    struct foreign_readers r = {.fd = p[0]};
    enum { N = 40 };
    for (int i = 0; i < N; i++)
        assert_int_equal(leash_go(g, read_pipe, &r), 0);
    int64_t until = mono_ms() + TEST_WAIT_MS;
    int     dumps = 0;
    do {
        char *d = dump_json();
        assert_non_null(d);
        int n = 0;
        for (const char *q = d; (q = strstr(q, "\"fn\":\"read_pipe\"")) != NULL; q++)
            n++;
        free(d);
        if (n != N)
            fail_msg("dump %d showed %d of the %d tasks", dumps, n, N);
        if (mono_ms() > until)
            fail_msg("only %d of %d tasks started", atomic_load(&r.entered), N);
        dumps++;
    } while (atomic_load(&r.entered) < N);
    for (int i = 0; i < N; i++)
        assert_int_equal(write(p[1], "x", 1), 1);
    assert_int_equal(leash_group_wait(g), 0);
    close(p[0]);
    close(p[1]);
    assert_nothing_leaked();
}

/* Sites are the compiler's file names, which may hold quotes and
   backslashes (a #line directive, a generated file): the JSON dump stays
   JSON. park_at_an_odd_site is at the end of this file, under such a #line. */
int park_at_an_odd_site(void *arg);

static void json_dump_escapes_a_site_with_quotes_and_backslashes(void **state)
{
    (void)state;
    leash_chan *c;
    assert_int_equal(leash_chan_open(&c, "odd", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, park_at_an_odd_site, c), 0);
    wait_blocked("chan_send", 1);
    char *d = dump_json();
    assert_non_null(d);
    assert_non_null(strstr(d, "\"object\":\"odd\",\"site\":\"odd \\\"dir\\\"\\\\site.c:4245\""));
    assert_null(strstr(d, "odd \"dir\"")); /* never unescaped */
    free(d);
    leash_group_cancel(g);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    leash_chan_free(c);
    assert_nothing_leaked();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_dump_names_the_channel_the_line_and_the_group),
        cmocka_unit_test(text_dump_reads_like_a_goroutine_dump),
        cmocka_unit_test(a_task_waiting_for_a_mutex_is_shown_with_its_holder),
        cmocka_unit_test(dump_refuses_bad_arguments),
        cmocka_unit_test(stats_count_tasks_and_groups),
        cmocka_unit_test(report_is_one_stderr_line_naming_the_site),
        cmocka_unit_test(a_dump_copies_the_name_of_a_channel_freed_as_its_call_returns),
        cmocka_unit_test(a_dump_copies_the_name_of_a_group_freed_as_its_wait_returns),
        cmocka_unit_test(dumps_racing_groups_that_are_waited_and_freed_read_nothing_freed),
        cmocka_unit_test(a_dump_shows_each_waiting_task_once_wherever_it_waits),
        cmocka_unit_test(json_dump_escapes_a_site_with_quotes_and_backslashes),
    };
    /* the report test reads LEASH_REPORT itself, before any report is made */
    return cmocka_run_group_tests_name("dump", tests, NULL, NULL);
}

/* Last in the file: the #line below names every line after it. */
#line 4242 "odd \"dir\"\\site.c"
int park_at_an_odd_site(void *arg)
{
    int v = 1;
    return leash_chan_send(arg, &v);
}
