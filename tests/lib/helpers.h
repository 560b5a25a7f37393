/* helpers.h: what the library tests share. */
#ifndef LEASH_TEST_HELPERS_H
#define LEASH_TEST_HELPERS_H

#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "leash.h"

/* The process's dump as JSON, in a malloc'd string. */
static inline char *dump_json(void)
{
    int fd = memfd_create("dump", 0);
    if (fd < 0)
        return NULL;
    if (leash_dump(fd, LEASH_DUMP_JSON) != 0) {
        close(fd);
        return NULL;
    }
    off_t n = lseek(fd, 0, SEEK_END);
    char *s = malloc((size_t)n + 1);
    if (pread(fd, s, (size_t)n, 0) != n) {
        free(s);
        close(fd);
        return NULL;
    }
    s[n] = '\0';
    close(fd);
    return s;
}

static inline int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static inline int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * How long a test waits for a state it expects before it calls the test
 * failed. Reached only when the state never comes, so it is generous: a
 * loaded machine, valgrind or TSan may take seconds to start a thread.
 */
#define TEST_WAIT_MS 60000

/* A moment between two looks at a state, so that looking does not take a
   CPU from the tasks that are to reach it. */
static inline void poll_pause(void)
{
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
}

/* How many tasks the dump shows blocked on op (e.g. "chan_send"). */
static inline int blocked_count(const char *op)
{
    char needle[64];
    snprintf(needle, sizeof needle, "\"op\":\"%s\"", op);
    char *d = dump_json();
    assert_non_null(d);
    int c = count_of(d, needle);
    free(d);
    return c;
}

/*
 * Waits until the dump shows at least n tasks blocked on op: the observable
 * state a test needs before it acts, instead of a sleep.
 */
static inline void wait_blocked(const char *op, int n)
{
    int64_t until = mono_ms() + TEST_WAIT_MS;
    while (blocked_count(op) < n) {
        if (mono_ms() > until)
            fail_msg("never saw %d tasks blocked on %s", n, op);
        poll_pause();
    }
}

/*
 * Whether the dump shows at least n tasks blocked on op before the
 * CLOCK_MONOTONIC time until_ms: what a deadline test asks of its setup
 * (see deadline_test).
 */
static inline bool blocked_before(const char *op, int n, int64_t until_ms)
{
    for (;;) {
        if (mono_ms() >= until_ms)
            return false;
        if (blocked_count(op) >= n)
            return true;
        poll_pause();
    }
}

/* Waits until the dump lists a task running fn. */
static inline void wait_task(const char *fn)
{
    char needle[128];
    snprintf(needle, sizeof needle, "\"fn\":\"%s\"", fn);
    int64_t until = mono_ms() + TEST_WAIT_MS;
    for (;;) {
        char *d = dump_json();
        assert_non_null(d);
        bool found = strstr(d, needle) != NULL;
        free(d);
        if (found)
            return;
        if (mono_ms() > until)
            fail_msg("never saw a task running %s", fn);
        poll_pause();
    }
}

/* Tasks that count themselves in, then block in read(2) on fd until a
   byte comes: a foreign call, which leash cannot see. */
struct foreign_readers {
    int         fd;
    _Atomic int entered;
};

static inline int read_pipe(void *arg)
{
    struct foreign_readers *r = arg;
    char                    c;
    atomic_fetch_add(&r->entered, 1);
    return read(r->fd, &c, 1) == 1 ? 0 : -EIO;
}

/* Waits until *counter reaches n (a task counts itself in when it gets
   where the test needs it). */
static inline void wait_count(_Atomic int *counter, int n)
{
    int64_t until = mono_ms() + TEST_WAIT_MS;
    while (atomic_load(counter) < n) {
        if (mono_ms() > until)
            fail_msg("the counter stayed at %d of %d", atomic_load(counter), n);
        poll_pause();
    }
}

/* Waits until no task started by leash_go is alive. */
static inline void wait_tasks_ended(void)
{
    int64_t            until = mono_ms() + TEST_WAIT_MS;
    struct leash_stats st;
    for (;;) {
        assert_int_equal(leash_stats(&st), 0);
        if (st.tasks_live == 0)
            return;
        if (mono_ms() > until)
            fail_msg("%llu tasks never ended", (unsigned long long)st.tasks_live);
        poll_pause();
    }
}

/*
 * A test about a deadline needs its setup (a child started, a task blocked
 * where the deadline is to find it) done before the deadline passes, and
 * how long that takes is up to the machine: a first spawn under valgrind
 * takes 100 ms, and a CPU hog can hold a thread back for longer. So such
 * a test is written as a round that takes the deadline to use: the round
 * returns false when its setup came too late (which it can observe), and
 * true after it has asserted everything the test proves. deadline_test runs
 * a round with 20 ms, then with twice as long each time one came too late,
 * up to 20 s, and fails if none was in time. A quiet machine runs one
 * round; a slow one pays only what it needs. A round that came too late
 * still cleans up, and asserts nothing that depends on when things ran.
 */
#define DEADLINE_FIRST_MS 20
#define DEADLINE_LAST_MS  20480

static inline void deadline_test(bool (*round)(int64_t timeout_ms, void *arg), void *arg)
{
    for (int64_t ms = DEADLINE_FIRST_MS;; ms *= 2) {
        if (round(ms, arg))
            return;
        if (ms >= DEADLINE_LAST_MS)
            fail_msg("the setup was never done before a %lld ms deadline", (long long)ms);
        print_message("setup not done before a %lld ms deadline: again with %lld ms\n",
                      (long long)ms, (long long)ms * 2);
    }
}

/*
 * Bound of a call that must not hang (a lock that must fail at once, a
 * wait that must end): far above any time a loaded machine takes, far
 * below for ever. Never a speed test: speed is for bench/.
 */
#define NOT_HUNG_MS 30000

/* Every test ends here: nothing of the library is left alive. */
static inline void assert_nothing_leaked(void)
{
    struct leash_stats st;
    assert_int_equal(leash_stats(&st), 0);
    assert_int_equal(st.tasks_live, 0);
    assert_int_equal(st.groups_live, 0);
}

static inline uint64_t reports(void)
{
    struct leash_stats st;
    leash_stats(&st);
    return st.reports;
}

static inline int quiet_setup(void **state)
{
    (void)state;
    setenv("LEASH_REPORT", "quiet", 1);
    setenv("LEASH_SOCKET", "off", 1);
    return 0;
}

/* Polls until cond holds, failing the test after TEST_WAIT_MS. */
#define WAIT_FOR(cond)                                                                             \
    do {                                                                                           \
        int64_t until_ = mono_ms() + TEST_WAIT_MS;                                                 \
        while (!(cond)) {                                                                          \
            if (mono_ms() > until_)                                                                \
                fail_msg("never saw %s", #cond);                                                   \
            poll_pause();                                                                          \
        }                                                                                          \
    } while (0)

/* The number after "key": in the dump's object of group `name`, before its
   tasks; -1: none. */
static inline int64_t group_field(const char *name, const char *key)
{
    char *d = dump_json();
    assert_non_null(d);
    char needle[96];
    snprintf(needle, sizeof needle, "\"name\":\"%s\"", name);
    char   *g = strstr(d, needle);
    int64_t v = -1;
    if (g) {
        char *tasks = strstr(g, "\"tasks\":");
        snprintf(needle, sizeof needle, "\"%s\":", key);
        char *p = strstr(g, needle);
        if (p && (!tasks || p < tasks))
            v = strtoll(p + strlen(needle), NULL, 10);
    }
    free(d);
    return v;
}

#endif
