/*
 * bench: libleash and its raw-pthreads peers, one figure a line:
 *   RESULT <name> <value> <unit>
 * bench/run pairs them with the Go peers from the same run and prints ratios.
 * Each figure is the median of REPS repetitions.
 *
 * Usage: bench [--quick] [NAME...]   (no NAME: every figure)
 */
#define _GNU_SOURCE
#include <leash.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int quick;
#define REPS (quick ? 3 : 7)

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[n / 2];
}

static void result(const char *name, double value, const char *unit)
{
    printf("RESULT %s %.3f %s\n", name, value, unit);
    fflush(stdout);
}

static int    g_argc;
static char **g_argv;

/* Whether the command line asks for this figure (any argument that is part
   of its name; no argument: every figure). */
static bool wanted(const char *name)
{
    bool any = false;
    for (int i = 1; i < g_argc; i++) {
        if (g_argv[i][0] == '-')
            continue;
        any = true;
        if (strstr(name, g_argv[i]))
            return true;
    }
    return !any;
}

/* Runs fn REPS times; fn returns ns per operation. */
static void measure(const char *name, double (*fn)(long), long n, const char *unit)
{
    if (!wanted(name))
        return;
    double v[16];
    fn(n / 10 + 1); /* warm up: threads, caches, pools */
    for (int i = 0; i < REPS; i++)
        v[i] = fn(n);
    result(name, median(v, REPS), unit);
}

/* --------------------------------------------------------- spawn + join */

static int empty(void *arg)
{
    (void)arg;
    return 0;
}

static double leash_spawn(long n)
{
    int64_t t0 = now_ns();
    for (long done = 0; done < n; done += 1000) {
        leash_group *g;
        leash_group_open(&g, NULL);
        for (int i = 0; i < 1000; i++)
            leash_go(g, empty, NULL);
        leash_group_wait(g);
    }
    return (double)(now_ns() - t0) / (double)n;
}

static void *pempty(void *arg)
{
    return arg;
}

static double pthread_spawn(long n)
{
    pthread_t th[1000];
    int64_t   t0 = now_ns();
    for (long done = 0; done < n; done += 1000) {
        for (int i = 0; i < 1000; i++)
            pthread_create(&th[i], NULL, pempty, NULL);
        for (int i = 0; i < 1000; i++)
            pthread_join(th[i], NULL);
    }
    return (double)(now_ns() - t0) / (double)n;
}

/* ------------------------------------------------------------- channels */

struct pingpong {
    leash_chan *ping, *pong;
    long        n;
};

static int ponger(void *arg)
{
    struct pingpong *p = arg;
    int              v;
    for (long i = 0; i < p->n; i++) {
        leash_chan_recv(p->ping, &v);
        leash_chan_send(p->pong, &v);
    }
    return 0;
}

static double leash_roundtrip(long n)
{
    struct pingpong p = {.n = n};
    leash_chan_open(&p.ping, "ping", sizeof(int), 0);
    leash_chan_open(&p.pong, "pong", sizeof(int), 0);
    leash_group *g;
    leash_group_open(&g, NULL);
    leash_go(g, ponger, &p);
    int     v = 1;
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        leash_chan_send(p.ping, &v);
        leash_chan_recv(p.pong, &v);
    }
    double r = (double)(now_ns() - t0) / (double)n;
    leash_group_wait(g);
    leash_chan_free(p.ping);
    leash_chan_free(p.pong);
    return r;
}

struct stream {
    leash_chan *c;
    long        n;
};

static int producer(void *arg)
{
    struct stream *s = arg;
    for (long i = 0; i < s->n; i++)
        leash_chan_send(s->c, &i);
    return 0;
}

static double leash_buffered(long n)
{
    struct stream s = {.n = n};
    leash_chan_open(&s.c, "stream", sizeof(long), 1024);
    leash_group *g;
    leash_group_open(&g, NULL);
    int64_t t0 = now_ns();
    leash_go(g, producer, &s);
    long v;
    for (long i = 0; i < n; i++)
        leash_chan_recv(s.c, &v);
    double r = (double)(now_ns() - t0) / (double)n;
    leash_group_wait(g);
    leash_chan_free(s.c);
    return r;
}

static double leash_select2(long n)
{
    struct stream a = {.n = n / 2}, b = {.n = n - n / 2};
    leash_chan_open(&a.c, "a", sizeof(long), 0);
    leash_chan_open(&b.c, "b", sizeof(long), 0);
    leash_group *g;
    leash_group_open(&g, NULL);
    int64_t t0 = now_ns();
    leash_go(g, producer, &a);
    leash_go(g, producer, &b);
    long              va, vb;
    struct leash_case cs[2] = {
        {.chan = a.c, .op = LEASH_RECV, .elem = &va},
        {.chan = b.c, .op = LEASH_RECV, .elem = &vb},
    };
    for (long i = 0; i < n; i++)
        leash_select(cs, 2, -1);
    double r = (double)(now_ns() - t0) / (double)n;
    leash_group_wait(g);
    leash_chan_free(a.c);
    leash_chan_free(b.c);
    return r;
}

/* ---------------------------------------------------------------- locks */

static leash_mutex     lm;
static pthread_mutex_t pm = PTHREAD_MUTEX_INITIALIZER;
static volatile long   counter;

static double leash_mutex_uncontended(long n)
{
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        leash_mutex_lock(&lm);
        counter++;
        leash_mutex_unlock(&lm);
    }
    return (double)(now_ns() - t0) / (double)n;
}

static double pthread_mutex_uncontended(long n)
{
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        pthread_mutex_lock(&pm);
        counter++;
        pthread_mutex_unlock(&pm);
    }
    return (double)(now_ns() - t0) / (double)n;
}

static int leash_locker(void *arg)
{
    long n = (long)(intptr_t)arg;
    for (long i = 0; i < n; i++) {
        leash_mutex_lock(&lm);
        counter++;
        leash_mutex_unlock(&lm);
    }
    return 0;
}

static double leash_mutex_contended(long n)
{
    leash_group *g;
    leash_group_open(&g, NULL);
    int64_t t0 = now_ns();
    leash_go(g, leash_locker, (void *)(intptr_t)(n / 2));
    leash_go(g, leash_locker, (void *)(intptr_t)(n / 2));
    leash_group_wait(g);
    return (double)(now_ns() - t0) / (double)n;
}

static void *pthread_locker(void *arg)
{
    long n = (long)(intptr_t)arg;
    for (long i = 0; i < n; i++) {
        pthread_mutex_lock(&pm);
        counter++;
        pthread_mutex_unlock(&pm);
    }
    return NULL;
}

static double pthread_mutex_contended(long n)
{
    pthread_t a, b;
    int64_t   t0 = now_ns();
    pthread_create(&a, NULL, pthread_locker, (void *)(intptr_t)(n / 2));
    pthread_create(&b, NULL, pthread_locker, (void *)(intptr_t)(n / 2));
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return (double)(now_ns() - t0) / (double)n;
}

/* --------------------------------------------------------- cancellation */

static _Atomic int64_t first_return, last_return;
static leash_chan     *never;

static int blocked(void *arg)
{
    (void)arg;
    int v;
    leash_chan_recv(never, &v);
    int64_t t = now_ns(), prev = atomic_load(&last_return), zero = 0;
    atomic_compare_exchange_strong(&first_return, &zero, t);
    while (t > prev && !atomic_compare_exchange_weak(&last_return, &prev, t))
        ;
    return 0;
}

/* 100 tasks blocked on a channel; the group's deadline passes; how long
   until the last one has returned. Median and p99 over runs. */
static void cancellation_latency(void)
{
    int     runs = quick ? 20 : 200;
    double *v = calloc((size_t)runs, sizeof *v), *f = calloc((size_t)runs, sizeof *f);
    leash_chan_open(&never, "never", sizeof(int), 0);
    for (int r = 0; r < runs; r++) {
        atomic_store(&last_return, 0);
        atomic_store(&first_return, 0);
        leash_group *g;
        int64_t      opened = now_ns(); /* before the open: the deadline is no earlier */
        leash_group_open(&g, &(leash_group_opts){.timeout_ms = 20});
        for (int i = 0; i < 100; i++)
            leash_go(g, blocked, NULL);
        leash_group_wait(g);
        v[r] = (double)(atomic_load(&last_return) - (opened + 20 * 1000000LL)) / 1000.0;
        f[r] = (double)(atomic_load(&first_return) - (opened + 20 * 1000000LL)) / 1000.0;
    }
    qsort(v, (size_t)runs, sizeof *v, cmp_d);
    result("cancel_latency_p50", v[runs / 2], "us");
    result("cancel_latency_p99", v[(runs * 99) / 100], "us");
    qsort(f, (size_t)runs, sizeof *f, cmp_d);
    result("cancel_first_p50", f[runs / 2], "us");
    free(f);
    leash_chan_free(never);
    free(v);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
    g_argc = argc;
    g_argv = argv;
    long k = quick ? 10 : 1;
    leash_mutex_init(&lm, "bench");
    measure("spawn_join_leash", leash_spawn, 200000 / k, "ns/task");
    measure("spawn_join_pthread", pthread_spawn, 20000 / k, "ns/task");
    measure("chan_roundtrip_leash", leash_roundtrip, 200000 / k, "ns/roundtrip");
    measure("chan_buffered_leash", leash_buffered, 2000000 / k, "ns/elem");
    measure("select2_leash", leash_select2, 400000 / k, "ns/op");
    measure("mutex_uncontended_leash", leash_mutex_uncontended, 10000000 / k, "ns/op");
    measure("mutex_uncontended_pthread", pthread_mutex_uncontended, 10000000 / k, "ns/op");
    measure("mutex_contended_leash", leash_mutex_contended, 4000000 / k, "ns/op");
    measure("mutex_contended_pthread", pthread_mutex_contended, 4000000 / k, "ns/op");
    if (wanted("cancel_latency"))
        cancellation_latency();
    return 0;
}
