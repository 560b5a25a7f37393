/*
 * bench: libleash, its raw-pthreads peers and the floors of the design, one
 * figure a line:
 *   RESULT <name> <value> <unit>
 * bench/run runs this, the Go peers and leashd_bench in interleaved rounds
 * and prints the medians with their ratios to the peers and to the floors.
 * Each figure here is the median of REPS repetitions within one process.
 *
 * The floors are what two threads on two CPUs cannot beat, whatever the
 * library does: a token passed by spinning on one cache line (what a
 * hand-off between two running threads costs at least), and a futex wake
 * to the woken thread running (what a hand-off to a sleeping thread costs).
 * A third is what a rendezvous channel of leash's design costs with nothing
 * else in it (floor_lock).
 *
 * Usage: bench [--quick] [--reps N] [NAME...]   (no NAME: every figure)
 *   --reps N  N repetitions per figure (1-15), each printed on stderr: to
 *             compare two builds, alternate their processes and compare
 *             the medians, so that a slow minute moves both
 */
#define _GNU_SOURCE
#include <leash.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int quick, reps_asked;
#define REPS (reps_asked ? reps_asked : quick ? 1 : 3)

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
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
    for (int i = 0; i < REPS; i++) {
        v[i] = fn(n);
        if (reps_asked)
            fprintf(stderr, "%s %.1f\n", name, v[i]);
    }
    result(name, median(v, REPS), unit);
}

/* --------------------------------------------------------- spawn + join */

static int empty(void *arg)
{
    (void)arg;
    return 0;
}

/* n tasks in groups of 1000 (open, 1000 leash_go, wait): ns per task, of
   the whole or (loop_only) of the leash_go loops alone, which is what a
   spawn costs the spawner while workers may be taking the tasks it queues. */
static double spawn_groups(long n, bool loop_only)
{
    int64_t t0 = now_ns(), loops = 0;
    for (long done = 0; done < n; done += 1000) {
        leash_group *g;
        leash_group_open(&g, NULL);
        int64_t l0 = now_ns();
        for (int i = 0; i < 1000; i++)
            leash_go(g, empty, NULL);
        loops += now_ns() - l0;
        leash_group_wait(g);
    }
    return (double)(loop_only ? loops : now_ns() - t0) / (double)n;
}

static double leash_spawn(long n)
{
    return spawn_groups(n, false);
}

static double leash_spawn_phase(long n)
{
    return spawn_groups(n, true);
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

/* One group, one child, wait: what a request that hands one piece of work
   to a task pays (Go: errgroup.WithContext, Go, Wait). */
static double leash_spawn_lone(long n)
{
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        leash_group *g;
        leash_group_open(&g, NULL);
        leash_go(g, empty, NULL);
        leash_group_wait(g);
    }
    return (double)(now_ns() - t0) / (double)n;
}

/* --------------------------------------------------------------- floors */

/* A token passed back and forth through one cache line by two spinning
   threads: the least a round trip between two running threads costs. */
static _Alignas(64) _Atomic long spin_turn;
static long spin_n;

static void *spin_partner(void *arg)
{
    (void)arg;
    for (long i = 0; i < spin_n; i++) {
        while (atomic_load_explicit(&spin_turn, memory_order_acquire) != 2 * i + 1)
            relax();
        atomic_store_explicit(&spin_turn, 2 * i + 2, memory_order_release);
    }
    return NULL;
}

static double floor_spin(long n)
{
    pthread_t th;
    spin_n = n;
    atomic_store(&spin_turn, 0);
    pthread_create(&th, NULL, spin_partner, NULL);
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        atomic_store_explicit(&spin_turn, 2 * i + 1, memory_order_release);
        while (atomic_load_explicit(&spin_turn, memory_order_acquire) != 2 * i + 2)
            relax();
    }
    double r = (double)(now_ns() - t0) / (double)n;
    pthread_join(th, NULL);
    return r;
}

/* Two threads that sleep in FUTEX_WAIT and wake each other in turn: a
   futex wake until the woken thread runs, per wake. */
static _Alignas(64) _Atomic uint32_t fx_word[2];
static long fx_n;

static void fx_wait(int w, uint32_t val)
{
    while (atomic_load_explicit(&fx_word[w], memory_order_acquire) == val)
        syscall(SYS_futex, &fx_word[w], FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void fx_post(int w)
{
    atomic_fetch_add_explicit(&fx_word[w], 1, memory_order_release);
    syscall(SYS_futex, &fx_word[w], FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void *fx_partner(void *arg)
{
    (void)arg;
    for (long i = 0; i < fx_n; i++) {
        fx_wait(0, (uint32_t)i);
        fx_post(1);
    }
    return NULL;
}

static double floor_futex(long n)
{
    pthread_t th;
    fx_n = n;
    atomic_store(&fx_word[0], 0);
    atomic_store(&fx_word[1], 0);
    pthread_create(&th, NULL, fx_partner, NULL);
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        fx_post(0);
        fx_wait(1, (uint32_t)i);
    }
    double r = (double)(now_ns() - t0) / (double)(2 * n);
    pthread_join(th, NULL);
    return r;
}

/* The least a rendezvous channel built as leash's is (a lock, a queue of
   waiters, a waiter spinning on its own record) costs: two such channels
   with nothing else, ping and pong, and the hand-offs made by spinning.
   Each hand-off moves the channel's line and the waiter's record's line
   between the CPUs, where the spin floor moves one line. */
struct bare_waiter {
    _Atomic int         done;
    int                 val;
    struct bare_waiter *next;
} __attribute__((aligned(64)));

struct bare_chan {
    _Atomic int         lock;
    struct bare_waiter *recvq, *sendq;
} __attribute__((aligned(64)));

static struct bare_chan bare_ping, bare_pong;
static long             bare_n;

/* Reads before it tries, as leash's lock does: a compare-and-swap retried
   blind takes the line from the holder each time. (In 10 alternated
   processes, this floor went from 3.95x the spin floor to 3.63x, medians.) */
static void bare_lock(struct bare_chan *c)
{
    for (;;) {
        int z = 0;
        if (atomic_load_explicit(&c->lock, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&c->lock, &z, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
        relax();
    }
}

static void bare_unlock(struct bare_chan *c)
{
    atomic_store_explicit(&c->lock, 0, memory_order_release);
}

static void bare_wait(struct bare_waiter *w)
{
    while (!atomic_load_explicit(&w->done, memory_order_acquire))
        relax();
}

static void bare_send(struct bare_chan *c, int v)
{
    bare_lock(c);
    struct bare_waiter *r = c->recvq;
    if (r) {
        c->recvq = r->next;
        r->val = v;
        atomic_store_explicit(&r->done, 1, memory_order_release);
        bare_unlock(c);
        return;
    }
    struct bare_waiter me = {.val = v};
    c->sendq = &me;
    bare_unlock(c);
    bare_wait(&me);
}

static int bare_recv(struct bare_chan *c)
{
    bare_lock(c);
    struct bare_waiter *s = c->sendq;
    if (s) {
        c->sendq = s->next;
        int v = s->val;
        atomic_store_explicit(&s->done, 1, memory_order_release);
        bare_unlock(c);
        return v;
    }
    struct bare_waiter me = {0};
    c->recvq = &me;
    bare_unlock(c);
    bare_wait(&me);
    return me.val;
}

static void *bare_partner(void *arg)
{
    (void)arg;
    for (long i = 0; i < bare_n; i++)
        bare_send(&bare_pong, bare_recv(&bare_ping));
    return NULL;
}

static double floor_lock(long n)
{
    pthread_t th;
    bare_n = n;
    pthread_create(&th, NULL, bare_partner, NULL);
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        bare_send(&bare_ping, 1);
        bare_recv(&bare_pong);
    }
    double r = (double)(now_ns() - t0) / (double)n;
    pthread_join(th, NULL);
    return r;
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

/* The caller's task sends on p->ping and waits for p->pong, n times, while
   a ponger answers: ns per round trip. Frees both channels. */
static double pingpong_time(struct pingpong *p, long n)
{
    p->n = n;
    leash_group *g;
    leash_group_open(&g, NULL);
    leash_go(g, ponger, p);
    int     v = 1;
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        leash_chan_send(p->ping, &v);
        leash_chan_recv(p->pong, &v);
    }
    double r = (double)(now_ns() - t0) / (double)n;
    leash_group_wait(g);
    leash_chan_free(p->ping);
    leash_chan_free(p->pong);
    return r;
}

static double leash_roundtrip(long n)
{
    struct pingpong p;
    leash_chan_open(&p.ping, "ping", sizeof(int), 0);
    leash_chan_open(&p.pong, "pong", sizeof(int), 0);
    return pingpong_time(&p, n);
}

/* A request into a buffered channel kept full (capacity 8), then its
   reply on an unbuffered one: each send waits for the one slot that the
   partner frees before it waits for the reply. A sender that waited for
   more room than that would wait in vain. */
static double leash_full_reply(long n)
{
    struct pingpong p;
    leash_chan_open(&p.ping, "requests", sizeof(int), 8);
    leash_chan_open(&p.pong, "replies", sizeof(int), 0);
    int v = 1;
    for (int i = 0; i < 8; i++)
        leash_chan_send(p.ping, &v);
    return pingpong_time(&p, n);
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

/* Contention needs both lockers running: each waits at this start line
   until the other is there, and the clock starts when the second arrives.
   Without it a locker could run its share before the other had started,
   and the figure would be of no contention at all (seen as a second mode
   at the uncontended cost). The end is when the last one is joined. */
static _Atomic int     lockers_ready;
static _Atomic int64_t lockers_t0;

static void start_line(void)
{
    if (atomic_fetch_add(&lockers_ready, 1) + 1 == 2) {
        atomic_store(&lockers_t0, now_ns());
        return;
    }
    for (long i = 0; atomic_load_explicit(&lockers_ready, memory_order_acquire) < 2; i++) {
        relax();
        if (i % 1024 == 1023)
            sched_yield(); /* the other one may need this CPU to start */
    }
}

static void start_line_reset(void)
{
    atomic_store(&lockers_ready, 0);
}

static double since_start_line(long n)
{
    return (double)(now_ns() - atomic_load(&lockers_t0)) / (double)n;
}

static int leash_locker(void *arg)
{
    long n = (long)(intptr_t)arg;
    start_line();
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
    start_line_reset();
    leash_go(g, leash_locker, (void *)(intptr_t)(n / 2));
    leash_go(g, leash_locker, (void *)(intptr_t)(n / 2));
    leash_group_wait(g);
    return since_start_line(n);
}

static pthread_mutex_t *locker_mutex = &pm;

static void *pthread_locker(void *arg)
{
    long n = (long)(intptr_t)arg;
    start_line();
    for (long i = 0; i < n; i++) {
        pthread_mutex_lock(locker_mutex);
        counter++;
        pthread_mutex_unlock(locker_mutex);
    }
    return NULL;
}

/* Two threads taking m n/2 times each, both running: ns per lock+unlock. */
static double two_lockers(pthread_mutex_t *m, long n)
{
    locker_mutex = m;
    pthread_t a, b;
    start_line_reset();
    pthread_create(&a, NULL, pthread_locker, (void *)(intptr_t)(n / 2));
    pthread_create(&b, NULL, pthread_locker, (void *)(intptr_t)(n / 2));
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return since_start_line(n);
}

/* glibc's adaptive mutex (spins a bounded number of tries, then sleeps),
   the policy leash's mutex follows; the default one sleeps at once */
static pthread_mutex_t pam;

static double pthread_adaptive_contended(long n)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&pam, &a);
    pthread_mutexattr_destroy(&a);
    double r = two_lockers(&pam, n);
    pthread_mutex_destroy(&pam);
    return r;
}

static double pthread_mutex_contended(long n)
{
    return two_lockers(&pm, n);
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

/* The agent's state, which no public call shows: set once its session
   with leashd has begun (leash_bench links the static library). */
extern _Atomic int leash__agent_on;

/*
 * With LEASH_SOCKET naming a socket, the figures are of a process that
 * leashd follows: the agent connects in the background once the first group
 * opens, so without this wait a run would measure some repetitions before
 * it did and some after (with --quick, one repetition that it connected in
 * the middle of).
 */
static void wait_for_leashd(void)
{
    const char *s = getenv("LEASH_SOCKET");
    if (!s || !*s || !strcmp(s, "off"))
        return;
    leash_group *g;
    if (leash_group_open(&g, NULL) == 0)
        leash_group_wait(g);
    for (int i = 0; i < 5000 && !atomic_load(&leash__agent_on); i++)
        usleep(1000);
    if (!atomic_load(&leash__agent_on))
        fprintf(stderr, "bench: the agent did not connect to %s within 5 s\n", s);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--reps")) {
            reps_asked = i + 1 < argc ? atoi(argv[i + 1]) : 0;
            if (reps_asked < 1 || reps_asked > 15) {
                fprintf(stderr, "usage: bench [--quick] [--reps 1-15] [NAME...]\n");
                return 2;
            }
            argv[++i] = "-"; /* not a NAME */
        }
    }
    g_argc = argc;
    g_argv = argv;
    long k = quick ? 10 : 1;
    wait_for_leashd();
    leash_mutex_init(&lm, "bench");
    measure("floor_spin_roundtrip", floor_spin, 2000000 / k, "ns/roundtrip");
    measure("floor_futex_wake", floor_futex, 100000 / k, "ns/wake");
    measure("floor_lock_roundtrip", floor_lock, 200000 / k, "ns/roundtrip");
    measure("spawn_join_leash", leash_spawn, 200000 / k, "ns/task");
    measure("spawn_go_loop_leash", leash_spawn_phase, 200000 / k, "ns/task");
    measure("spawn_lone_leash", leash_spawn_lone, 200000 / k, "ns/group");
    measure("spawn_join_pthread", pthread_spawn, 20000 / k, "ns/task");
    measure("chan_roundtrip_leash", leash_roundtrip, 200000 / k, "ns/roundtrip");
    measure("chan_buffered_leash", leash_buffered, 2000000 / k, "ns/elem");
    measure("chan_full_reply_leash", leash_full_reply, 200000 / k, "ns/roundtrip");
    measure("select2_leash", leash_select2, 400000 / k, "ns/op");
    measure("mutex_uncontended_leash", leash_mutex_uncontended, 10000000 / k, "ns/op");
    measure("mutex_uncontended_pthread", pthread_mutex_uncontended, 10000000 / k, "ns/op");
    measure("mutex_contended_leash", leash_mutex_contended, 4000000 / k, "ns/op");
    measure("mutex_contended_pthread", pthread_mutex_contended, 4000000 / k, "ns/op");
    measure("mutex_contended_adaptive", pthread_adaptive_contended, 4000000 / k, "ns/op");
    if (wanted("cancel_latency"))
        cancellation_latency();
    return 0;
}
