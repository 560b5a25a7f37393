/*
 * demo_service: a small service with every leak pattern in it, for the
 * demo that runs it under leashd (scripts/demo).
 *
 *   demo_service leaks   each pattern the library catches by itself, then a
 *                        few parked tasks to dump, until SIGTERM
 *   demo_service spin    a loop with no cancellation point past its
 *                        deadline: leashd's to catch, by escalation
 */
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

static leash_chan  *results, *jobs;
static leash_mutex  config_lock, m1, m2;
static leash_rwlock cache;
static int          never[2];

static const char *err_name(int err)
{
    switch (err) {
    case 0: return "0";
    case -ETIMEDOUT: return "-ETIMEDOUT";
    case -ECANCELED: return "-ECANCELED";
    case -EDEADLK: return "-EDEADLK";
    case -EOWNERDEAD: return "-EOWNERDEAD";
    case -EPIPE: return "-EPIPE";
    default: return strerror(-err);
    }
}

/* 1. a send nobody receives */
static int search(void *arg)
{
    (void)arg;
    int v = 1;
    int err = leash_chan_send(results, &v);
    printf("    search: send -> %s\n", err_name(err));
    return err;
}

/* 2. a lock never released */
static int take_and_leave(void *arg)
{
    (void)arg;
    return leash_mutex_lock(&config_lock);
}

/* 3. read lock held, then the write lock asked */
static int upgrade(void *arg)
{
    (void)arg;
    leash_rwlock_rdlock(&cache);
    int err = leash_rwlock_wrlock(&cache);
    printf("    upgrade: wrlock -> %s\n", err_name(err));
    leash_rwlock_unlock(&cache);
    return 0;
}

/* 4. two locks taken in opposite orders: whichever closes the cycle is told */
struct pair {
    leash_chan *step;
};
static int lock_a(void *arg)
{
    struct pair *p = arg;
    int          v = 0;
    leash_mutex_lock(&m1);
    leash_chan_send(p->step, &v); /* b may take m2 now */
    leash_chan_send(p->step, &v); /* b has m2 */
    int err = leash_mutex_lock(&m2);
    printf("    a (holds accounts.lock): lock ledger.lock -> %s\n", err_name(err));
    if (!err)
        leash_mutex_unlock(&m2);
    leash_mutex_unlock(&m1);
    return 0;
}
static int lock_b(void *arg)
{
    struct pair *p = arg;
    int          v;
    leash_chan_recv(p->step, &v);
    leash_mutex_lock(&m2);
    leash_chan_recv(p->step, &v);
    int err = leash_mutex_lock(&m1);
    printf("    b (holds ledger.lock): lock accounts.lock -> %s\n", err_name(err));
    if (!err)
        leash_mutex_unlock(&m1);
    leash_mutex_unlock(&m2);
    return 0;
}

/* 5. a loop that never ends, but sleeps */
static int poller(void *arg)
{
    (void)arg;
    int err, n = 0;
    while ((err = leash_sleep(40)) == 0)
        n++;
    printf("    poller: %d rounds, then sleep -> %s\n", n, err_name(err));
    return 0;
}

/* 6. a foreign call with no timeout */
static int third_party(void *arg)
{
    (void)arg;
    char    c;
    ssize_t r = read(never[0], &c, 1);
    printf("    third_party: read -> %zd (%s)\n", r, r < 0 ? strerror(errno) : "data");
    return 0;
}

/* 7. a group its opener forgot to wait */
static int forgetful(void *arg)
{
    (void)arg;
    leash_group *g;
    leash_group_open(&g, &(leash_group_opts){.name = "forgotten"});
    leash_go(g, poller, NULL);
    return 0;
}

static int fetcher(void *arg)
{
    (void)arg;
    int job;
    return leash_chan_recv(jobs, &job);
}

static int writer(void *arg)
{
    (void)arg;
    int err = leash_mutex_lock(&m1);
    if (!err)
        leash_mutex_unlock(&m1);
    return err;
}

static int spin(void *arg)
{
    (void)arg;
    volatile unsigned long n = 0;
    for (;;)
        n++;
    return 0;
}

/* Runs n copies of fn in a group and says how the group ended. A macro
   passes fn's own name, which leash_go would otherwise take from the
   expression ("fn"). */
#define run_group(title, name, timeout_ms, flags, fn, arg, n)                                      \
    run_group_((title), (name), (timeout_ms), (flags), (fn), #fn, (arg), (n))
static int run_group_(const char *title, const char *name, int64_t timeout_ms, unsigned flags,
                      int (*fn)(void *), const char *fn_name, void *arg, int n)
{
    printf("\n  %s\n", title);
    leash_group *g;
    leash_group_open(&g, &(leash_group_opts){.name = name,
                                             .timeout_ms = timeout_ms,
                                             .flags = flags | LEASH_COLLECT});
    for (int i = 0; i < n; i++)
        leash_go_at(g, fn, arg, fn_name, __FILE__, __LINE__);
    int rc = leash_group_wait(g);
    printf("    group \"%s\" wait -> %s, tasks alive: %ld\n", name, err_name(rc), tasks_live());
    return rc;
}

static int leaks(void)
{
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigaddset(&term, SIGINT);
    pthread_sigmask(SIG_BLOCK, &term, NULL);
    if (pipe(never))
        return 1;
    leash_chan_open(&results, "search.results", sizeof(int), 0);
    leash_chan_open(&jobs, "jobs", sizeof(int), 0);
    leash_mutex_init(&config_lock, "config.lock");
    leash_mutex_init(&m1, "accounts.lock");
    leash_mutex_init(&m2, "ledger.lock");
    leash_rwlock_init(&cache, "cache.rw");

    run_group("1. a send nobody will ever receive: the deadline ends it", "search", 100, 0, search,
              NULL, 3);
    run_group("2. a task returns holding a lock: reported, later lockers fail fast",
              "config-writer", 0, 0, take_and_leave, NULL, 1);
    printf("    main: lock config.lock -> %s\n", err_name(leash_mutex_lock(&config_lock)));
    run_group("3. read lock held, write lock asked by the same task", "cache-user", 0, 0, upgrade,
              NULL, 1);
    struct pair p;
    leash_chan_open(&p.step, "step", sizeof(int), 0);
    printf("\n  4. two tasks take two locks in opposite orders\n");
    leash_group *g;
    leash_group_open(&g, &(leash_group_opts){.name = "transfer", .flags = LEASH_COLLECT});
    leash_go(g, lock_a, &p);
    leash_go(g, lock_b, &p);
    leash_group_wait(g);
    leash_chan_free(p.step);
    run_group("5. a polling loop that never ends: its sleep is a cancellation point", "pollers",
              150, 0, poller, NULL, 2);
    close(never[1]);
    if (pipe(never))
        return 1;
    run_group("6. a foreign call with no timeout: LEASH_INTERRUPT makes it fail with EINTR",
              "http-client", 100, LEASH_INTERRUPT, third_party, NULL, 2);
    run_group("7. a task returns with a group still open: cancelled, waited, reported", "api", 0, 0,
              forgetful, NULL, 1);

    printf("\n  and now some tasks park for the dump, until SIGTERM\n");
    leash_mutex_lock(&m1);
    leash_group *workers;
    leash_group_open(&workers, &(leash_group_opts){.name = "workers", .timeout_ms = 600000});
    for (int i = 0; i < 3; i++)
        leash_go(workers, fetcher, NULL);
    leash_go(workers, writer, NULL);
    leash_go(workers, poller, NULL);
    printf("parked %d\n", (int)getpid());
    fflush(stdout);
    int sig;
    sigwait(&term, &sig);
    leash_group_cancel(workers);
    leash_mutex_unlock(&m1);
    leash_group_wait(workers);
    printf("  %s: workers cancelled and joined, tasks alive: %ld\n", strsignal(sig), tasks_live());
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "spin")) {
        leash_group *g;
        leash_group_open(&g, &(leash_group_opts){.name = "cruncher", .timeout_ms = 300});
        leash_go(g, spin, NULL);
        printf("  spinning with no cancellation point in a group with a 300 ms deadline\n");
        return leash_group_wait(g) == 0 ? 0 : 1;
    }
    return leaks();
}
