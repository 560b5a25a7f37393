/* helpers.h: what the library tests share. */
#ifndef LEASH_TEST_HELPERS_H
#define LEASH_TEST_HELPERS_H

#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
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
 * Waits until the dump shows at least n tasks blocked on op (e.g.
 * "chan_send"): the observable state a test needs before it acts, instead of
 * a sleep. Fails the test after 10 s.
 */
static inline void wait_blocked(const char *op, int n)
{
    char needle[64];
    snprintf(needle, sizeof needle, "\"op\":\"%s\"", op);
    int64_t until = mono_ms() + 10000;
    for (;;) {
        char *d = dump_json();
        assert_non_null(d);
        int c = count_of(d, needle);
        free(d);
        if (c >= n)
            return;
        if (mono_ms() > until)
            fail_msg("never saw %d tasks blocked on %s", n, op);
        sched_yield();
    }
}

/* Waits until the dump shows a task running fn. */
static inline void wait_task(const char *fn)
{
    char needle[128];
    snprintf(needle, sizeof needle, "\"fn\":\"%s\"", fn);
    int64_t until = mono_ms() + 10000;
    for (;;) {
        char *d = dump_json();
        assert_non_null(d);
        bool found = strstr(d, needle) != NULL;
        free(d);
        if (found)
            return;
        if (mono_ms() > until)
            fail_msg("never saw a task running %s", fn);
        sched_yield();
    }
}

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

#endif
