/*
 * test_agent: what the agent tells leashd. Folding (a task that starts and
 * ends within one batch is left out of it, and counted) is checked on
 * batches made by hand, and then end to end against a stand-in for leashd
 * on a socket of this test's own: whatever the timing of the batches, every
 * task that ran is either sent whole (its start and its end) or counted as
 * folded, never half of it.
 */
#include "helpers.h"

#include "../../lib/internal.h"
#include "frame.h"
#include "leash/agent.pb-c.h"

#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <sys/socket.h>
#include <sys/un.h>

static struct leash__aevent ev(int kind, uint64_t task)
{
    return (struct leash__aevent){.kind = kind, .task = task, .group = 1, .fn = "f"};
}

/* These run first, before any group opens: the agent thread, which folds
   with the same table, has not started yet. */
static void a_task_that_starts_and_ends_in_one_batch_is_left_out_and_counted(void **state)
{
    (void)state;
    struct leash__aevent e[] = {
        ev(LEASH_EV_GROUP_OPEN, 99), ev(LEASH_EV_TASK_START, 10), ev(LEASH_EV_TASK_START, 11),
        ev(LEASH_EV_TASK_END, 10),   ev(LEASH_EV_TASK_START, 12), ev(LEASH_EV_TASK_END, 11),
        ev(LEASH_EV_GROUP_END, 0),
    };
    uint64_t folded = 5;
    size_t   n = leash__agent_fold(e, sizeof e / sizeof e[0], 0, &folded);
    assert_int_equal(folded, 5 + 2); /* added to what it was */
    /* what is left keeps its order */
    assert_int_equal(n, 3);
    assert_int_equal(e[0].kind, LEASH_EV_GROUP_OPEN);
    assert_int_equal(e[0].task, 99);
    assert_int_equal(e[1].kind, LEASH_EV_TASK_START);
    assert_int_equal(e[1].task, 12);
    assert_string_equal(e[1].fn, "f");
    assert_int_equal(e[2].kind, LEASH_EV_GROUP_END);
}

static void an_end_whose_start_went_in_an_earlier_batch_is_sent(void **state)
{
    (void)state;
    struct leash__aevent a[] = {ev(LEASH_EV_TASK_START, 20), ev(LEASH_EV_TASK_START, 21)};
    uint64_t             folded = 0;
    assert_int_equal(leash__agent_fold(a, 2, 0, &folded), 2);
    /* the next batch: 20's start is not in it, whatever the last one had */
    struct leash__aevent b[] = {ev(LEASH_EV_TASK_END, 20), ev(LEASH_EV_TASK_START, 22)};
    assert_int_equal(leash__agent_fold(b, 2, 0, &folded), 2);
    assert_int_equal(b[0].kind, LEASH_EV_TASK_END);
    assert_int_equal(b[0].task, 20);
    assert_int_equal(b[1].task, 22);
    assert_int_equal(folded, 0);
}

static void a_task_another_event_names_is_sent_whole(void **state)
{
    (void)state;
    /* 30 opened a group (leashd files the group under it); 31 has a
       supervisor's restart after it ended (leashd logs its id) */
    struct leash__aevent e[] = {
        ev(LEASH_EV_TASK_START, 30), ev(LEASH_EV_GROUP_OPEN, 30), ev(LEASH_EV_GROUP_END, 0),
        ev(LEASH_EV_TASK_END, 30),   ev(LEASH_EV_TASK_START, 31), ev(LEASH_EV_TASK_END, 31),
        ev(LEASH_EV_RESTART, 31),    ev(LEASH_EV_TASK_START, 32), ev(LEASH_EV_TASK_END, 32),
    };
    uint64_t folded = 0;
    size_t   n = leash__agent_fold(e, sizeof e / sizeof e[0], 0, &folded);
    assert_int_equal(folded, 1);
    assert_int_equal(n, 7);
    for (size_t i = 0; i < n; i++)
        assert_int_not_equal(e[i].task, 32);
    assert_int_equal(e[3].kind, LEASH_EV_TASK_END);
    assert_int_equal(e[3].task, 30);
    assert_int_equal(e[6].kind, LEASH_EV_RESTART);
}

static void a_task_the_last_snapshot_may_have_shown_is_sent_whole(void **state)
{
    (void)state;
    /* the snapshot showed tasks up to 50: one of them may have been 50,
       whose start was queued after the snapshot was taken; leashd holds it
       and must see it end */
    struct leash__aevent e[] = {
        ev(LEASH_EV_TASK_START, 49), ev(LEASH_EV_TASK_START, 50), ev(LEASH_EV_TASK_START, 51),
        ev(LEASH_EV_TASK_END, 49),   ev(LEASH_EV_TASK_END, 50),   ev(LEASH_EV_TASK_END, 51),
    };
    uint64_t folded = 0;
    size_t   n = leash__agent_fold(e, sizeof e / sizeof e[0], 50, &folded);
    assert_int_equal(folded, 1);
    assert_int_equal(n, 4);
    assert_int_equal(e[0].task, 49);
    assert_int_equal(e[1].task, 50);
    assert_int_equal(e[2].task, 49);
    assert_int_equal(e[2].kind, LEASH_EV_TASK_END);
    assert_int_equal(e[3].task, 50);
}

static void a_full_batch_folds_every_pair_in_it(void **state)
{
    (void)state;
    enum { N = 4096 }; /* the agent's batch */
    static struct leash__aevent e[N];
    uint64_t                    folded = 0;
    /* several batches in a row, so that the table's leftovers of one are
       no part of the next; ids that share their low bits */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N / 2; i++) {
            uint64_t id = ((uint64_t)round << 40) + ((uint64_t)i << 13) + 1;
            e[i] = ev(LEASH_EV_TASK_START, id);
            e[N - 1 - i] = ev(LEASH_EV_TASK_END, id);
        }
        assert_int_equal(leash__agent_fold(e, N, 0, &folded), 0);
    }
    assert_int_equal(folded, 3 * N / 2);
    /* an end before its start (never made by the library) is no pair */
    struct leash__aevent odd[] = {ev(LEASH_EV_TASK_END, 40), ev(LEASH_EV_TASK_START, 40)};
    assert_int_equal(leash__agent_fold(odd, 2, 0, &folded), 2);
}

/* ------------------------------------------- a stand-in for leashd */

static struct {
    pthread_mutex_t mu;
    uint64_t        starts, ends, folded, batches, resyncs;
    uint64_t        stuck_task, stuck_seen_end, marker_end; /* the stuck test's */
    _Atomic bool    hello; /* the Hello is in: events queued from now are sent */
    bool            half;  /* an end whose start was never seen */
    char            dir[64], path[96];
    int             lfd;
} fake = {.mu = PTHREAD_MUTEX_INITIALIZER};

static bool read_full(int fd, uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

/* Task ids seen starting; a test's tasks number far below this. */
#define SEEN_MAX (1u << 20)
static uint8_t *started;

static void *fake_leashd(void *arg)
{
    (void)arg;
    int fd = accept(fake.lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    bool said_hello = false;
    for (;;) {
        uint8_t hdr[LEASH_FRAME_HEADER];
        if (!read_full(fd, hdr, sizeof hdr))
            break;
        uint32_t n = leash_frame_get_len(hdr);
        uint8_t *b = malloc(n ? n : 1);
        if (!b || !read_full(fd, b, n)) {
            free(b);
            break;
        }
        Leash__Agent__AgentMessage *m = leash__agent__agent_message__unpack(NULL, n, b);
        free(b);
        if (!m)
            break;
        if (!said_hello && m->msg_case == LEASH__AGENT__AGENT_MESSAGE__MSG_HELLO) {
            Leash__Agent__HelloReply hr = LEASH__AGENT__HELLO_REPLY__INIT;
            hr.ok = true;
            /* a heartbeat scan every 100 ms, and a task blocked 50 ms stuck */
            hr.heartbeat_ms = 100;
            hr.stuck_after_ms = 50;
            Leash__Agent__DaemonMessage d = LEASH__AGENT__DAEMON_MESSAGE__INIT;
            d.msg_case = LEASH__AGENT__DAEMON_MESSAGE__MSG_HELLO;
            d.hello = &hr;
            size_t   len;
            uint8_t *out = leash_frame_pack(&d.base, &len);
            bool     ok = out && write(fd, out, len) == (ssize_t)len;
            free(out);
            said_hello = true;
            atomic_store(&fake.hello, true);
            if (!ok)
                break;
        }
        if (m->msg_case == LEASH__AGENT__AGENT_MESSAGE__MSG_RESYNC) {
            pthread_mutex_lock(&fake.mu);
            fake.resyncs++;
            pthread_mutex_unlock(&fake.mu);
        }
        if (m->msg_case == LEASH__AGENT__AGENT_MESSAGE__MSG_EVENTS) {
            pthread_mutex_lock(&fake.mu);
            fake.batches++;
            fake.folded += m->events->folded;
            for (size_t i = 0; i < m->events->n_events; i++) {
                Leash__Agent__Event *e = m->events->events[i];
                if (e->kind == LEASH__AGENT__EVENT__KIND__STUCK && !fake.stuck_task)
                    fake.stuck_task = e->task;
                if (e->kind == LEASH__AGENT__EVENT__KIND__TASK_END && e->task == fake.stuck_task)
                    fake.stuck_seen_end = 1;
                if (e->kind == LEASH__AGENT__EVENT__KIND__GROUP_END && e->group == fake.marker_end)
                    fake.marker_end = 0;
                if (e->task >= SEEN_MAX)
                    continue;
                if (e->kind == LEASH__AGENT__EVENT__KIND__TASK_START) {
                    fake.starts++;
                    started[e->task] = 1;
                } else if (e->kind == LEASH__AGENT__EVENT__KIND__TASK_END) {
                    fake.ends++;
                    if (!started[e->task])
                        fake.half = true;
                }
            }
            pthread_mutex_unlock(&fake.mu);
        }
        leash__agent__agent_message__free_unpacked(m, NULL);
    }
    close(fd);
    return NULL;
}

static int empty(void *arg)
{
    (void)arg;
    return 0;
}

static uint64_t told(void)
{
    pthread_mutex_lock(&fake.mu);
    uint64_t t = fake.ends + fake.folded;
    pthread_mutex_unlock(&fake.mu);
    return t;
}

static void every_task_that_ran_is_sent_whole_or_counted_folded(void **state)
{
    (void)state;
    /* groups of 1000: 2000 events, well inside the agent's ring (16 k), and
       each group told before the next starts, so that none is dropped (a
       drop is told by a snapshot instead, which this does not count) */
    enum { GROUPS = 20, PER = 1000 };
    /* the agent starts with the first group, and sends a snapshot in its
       Hello: what was queued before that is in the snapshot, not sent as
       events. Once the Hello is in, every task is told as events. */
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_group_wait(g), 0);
    WAIT_FOR(atomic_load(&fake.hello));
    uint64_t before = told();
    for (int k = 1; k <= GROUPS; k++) {
        assert_int_equal(leash_group_open(&g, NULL), 0);
        for (int i = 0; i < PER; i++)
            assert_int_equal(leash_go(g, empty, NULL), 0);
        assert_int_equal(leash_group_wait(g), 0);
        /* ended, and so queued: the agent sends them in a batch or a few */
        WAIT_FOR(told() - before >= (uint64_t)k * PER);
    }
    pthread_mutex_lock(&fake.mu);
    uint64_t starts = fake.starts, ends = fake.ends, folded = fake.folded;
    bool     half = fake.half;
    uint64_t resyncs = fake.resyncs;
    pthread_mutex_unlock(&fake.mu);
    assert_int_equal(resyncs, 0); /* nothing was dropped: no snapshot told a task instead */
    assert_false(half);
    assert_int_equal(starts, ends);
    assert_int_equal(ends + folded - before, GROUPS * PER);
}

/* ---------------------------------- a STUCK ahead of its task's start */

static _Thread_local bool hold_here;
static sem_t              hold_sem, leave_sem;
static _Atomic bool       holding;

static void hold_push(void)
{
    if (hold_here) {
        atomic_store(&holding, true);
        while (sem_wait(&hold_sem) != 0)
            ;
    }
}

/* A thread whose first push stops between taking its cell and writing it,
   as if preempted there: every event after it waits behind that cell. */
static void *held_pusher(void *arg)
{
    (void)arg;
    leash_group *g;
    hold_here = true;
    int err = leash_group_open(&g, &(leash_group_opts){.name = "held"});
    hold_here = false;
    if (err == 0)
        leash_group_wait(g);
    /* stays until the test has looked: a root task that leaves makes the
       next heartbeat send a Resync, which would drop what is queued */
    while (sem_wait(&leave_sem) != 0)
        ;
    return NULL;
}

static int sleeper(void *arg)
{
    (void)arg;
    return leash_sleep(300);
}

static uint64_t resyncs_of(void)
{
    pthread_mutex_lock(&fake.mu);
    uint64_t r = fake.resyncs;
    pthread_mutex_unlock(&fake.mu);
    return r;
}

static uint64_t stuck_of(void)
{
    pthread_mutex_lock(&fake.mu);
    uint64_t t = fake.stuck_task;
    pthread_mutex_unlock(&fake.mu);
    return t;
}

static bool marker_seen(void)
{
    pthread_mutex_lock(&fake.mu);
    bool seen = fake.marker_end == 0;
    pthread_mutex_unlock(&fake.mu);
    return seen;
}

/*
 * A heartbeat's scan reports a task stuck while that task's start still
 * waits in the ring behind a producer's unwritten cell: leashd lists the
 * task from the STUCK alone. Its start and end then reach the agent in one
 * batch, and folding them would leave leashd a stuck task that never ends.
 */
static void a_task_reported_stuck_before_its_start_is_seen_to_end(void **state)
{
    (void)state;
    WAIT_FOR(atomic_load(&fake.hello));
    uint64_t resyncs = resyncs_of();
    leash__agent_push_hook = hold_push;
    pthread_t q;
    assert_int_equal(pthread_create(&q, NULL, held_pusher, NULL), 0);
    WAIT_FOR(atomic_load(&holding));
    /* the new thread is a root task, which the next heartbeat's Resync
       shows: then comes the task, which no snapshot but a scan will show */
    WAIT_FOR(resyncs_of() > resyncs);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, sleeper, NULL), 0); /* blocked 300 ms: stuck at 50 */
    WAIT_FOR(stuck_of() != 0);
    assert_int_equal(leash_group_wait(g), 0); /* ended: its end queued too */
    /* the cell is written: the start, the end and a marker group follow */
    assert_int_equal(leash_group_open(&g, NULL), 0);
    pthread_mutex_lock(&fake.mu);
    fake.marker_end = g->id;
    pthread_mutex_unlock(&fake.mu);
    sem_post(&hold_sem);
    assert_int_equal(leash_group_wait(g), 0);
    WAIT_FOR(marker_seen());
    pthread_mutex_lock(&fake.mu);
    bool ended = fake.stuck_seen_end;
    pthread_mutex_unlock(&fake.mu);
    assert_true(ended);
    leash__agent_push_hook = NULL;
    sem_post(&leave_sem);
    pthread_join(q, NULL);
}

static int fake_setup(void **state)
{
    (void)state;
    setenv("LEASH_REPORT", "quiet", 1);
    started = calloc(SEEN_MAX, 1);
    sem_init(&hold_sem, 0, 0);
    sem_init(&leave_sem, 0, 0);
    snprintf(fake.dir, sizeof fake.dir, "/tmp/leash-agent-test-XXXXXX");
    if (!started || !mkdtemp(fake.dir))
        return -1;
    snprintf(fake.path, sizeof fake.path, "%s/agent.sock", fake.dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", fake.path);
    fake.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fake.lfd < 0 || bind(fake.lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(fake.lfd, 1) != 0)
        return -1;
    /* before the library starts: its agent reads this once */
    setenv("LEASH_SOCKET", fake.path, 1);
    pthread_t th;
    if (pthread_create(&th, NULL, fake_leashd, NULL) != 0)
        return -1;
    pthread_detach(th);
    return 0;
}

static int fake_teardown(void **state)
{
    (void)state;
    unlink(fake.path);
    rmdir(fake.dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_task_that_starts_and_ends_in_one_batch_is_left_out_and_counted),
        cmocka_unit_test(an_end_whose_start_went_in_an_earlier_batch_is_sent),
        cmocka_unit_test(a_task_another_event_names_is_sent_whole),
        cmocka_unit_test(a_task_the_last_snapshot_may_have_shown_is_sent_whole),
        cmocka_unit_test(a_full_batch_folds_every_pair_in_it),
        cmocka_unit_test(every_task_that_ran_is_sent_whole_or_counted_folded),
        cmocka_unit_test(a_task_reported_stuck_before_its_start_is_seen_to_end),
    };
    return cmocka_run_group_tests(tests, fake_setup, fake_teardown);
}
