/*
 * leashed: a leashed process for the end-to-end tests. Each mode sets up
 * one situation leashd must see or act on, prints "ready" once it is in
 * place, and says on stdout how it ended.
 *
 *   spin     a task spins with no cancellation point past its deadline
 *   foreign  a task blocks in read(2) past its deadline (no LEASH_INTERRUPT)
 *   park     tasks parked on a channel, a mutex and a sleep, for dumps
 *   stuck    a task blocked on a channel in a group with no deadline
 *   cancel   a task parked until leashd's cancel reaches its group
 *   supervise two supervisors, whose children fail once SIGUSR1 comes:
 *            "flaky-sup" restarts its child once and keeps it; "crash-sup"
 *            restarts its child 3 times, then gives up (restart_limit)
 *   ontime   once SIGUSR1 comes, a group with a 3 s deadline (or
 *            LEASHED_DEADLINE_MS) whose task
 *            sleeps until it: the group closes on time ("closed"); then the
 *            process waits to be killed
 *   overrun  the same, but the task spins: the group overruns
 */
#define _GNU_SOURCE
#include <errno.h>
#include <leash.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int         pipefd[2];
static leash_chan *ch;
static leash_mutex mu;

static int spin(void *arg)
{
    (void)arg;
    volatile unsigned long n = 0;
    for (;;) /* no cancellation point: only leashd can end this */
        n++;
    return 0;
}

static int foreign(void *arg)
{
    (void)arg;
    char    c;
    ssize_t r = read(pipefd[0], &c, 1);
    printf("read: %s\n", r < 0 && errno == EINTR ? "EINTR" : "other");
    fflush(stdout);
    return 0;
}

static int recv_forever(void *arg)
{
    (void)arg;
    int v;
    int err = leash_chan_recv(ch, &v);
    printf("recv: %s\n", err == -ECANCELED   ? "ECANCELED"
                         : err == -ETIMEDOUT ? "ETIMEDOUT"
                                             : "other");
    fflush(stdout);
    return err;
}

static int lock_wait(void *arg)
{
    (void)arg;
    return leash_mutex_lock(&mu);
}

static int nap(void *arg)
{
    (void)arg;
    return leash_sleep(1000000);
}

/* ------------------------------------------------------------ supervise */

static leash_chan *go; /* closed when SIGUSR1 comes: every recv then fails */
static atomic_int  flaky_runs;

static int flaky(void *arg)
{
    (void)arg;
    int v;
    if (atomic_fetch_add(&flaky_runs, 1) == 0)
        return leash_chan_recv(go, &v); /* -EPIPE once closed: one failure */
    return leash_chan_recv(ch, &v);     /* then it stays */
}

static int crasher(void *arg)
{
    (void)arg;
    int v;
    return leash_chan_recv(go, &v); /* -EPIPE, at once, every run after the close */
}

static int supervise_one(void *arg)
{
    bool             crash = arg != NULL;
    leash_sup_opts   o = {.name = crash ? "crash-sup" : "flaky-sup",
                          .intensity = 3,
                          .period_ms = 600000,
                          .backoff_min_ms = 20,
                          .backoff_max_ms = 40};
    leash_child_spec c = {crash ? "crasher" : "flaky", crash ? crasher : flaky, NULL,
                          LEASH_PERMANENT};
    int              rc = leash_supervise(&o, &c, 1);
    printf("%s: %d\n", o.name, rc);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char  *mode = argv[1];
    leash_group *g;
    if (pipe(pipefd))
        return 1;
    leash_chan_open(&ch, "e2e.chan", sizeof(int), 0);
    leash_mutex_init(&mu, "e2e.mutex");
    if (!strcmp(mode, "spin")) {
        leash_group_open(&g, &(leash_group_opts){.name = "spinner", .timeout_ms = 100});
        leash_go(g, spin, NULL);
    } else if (!strcmp(mode, "foreign")) {
        leash_group_open(&g, &(leash_group_opts){.name = "foreign", .timeout_ms = 100});
        leash_go(g, foreign, NULL);
    } else if (!strcmp(mode, "park")) {
        leash_mutex_lock(&mu);
        leash_group_open(&g, &(leash_group_opts){.name = "parked"});
        leash_go(g, recv_forever, NULL);
        leash_go(g, recv_forever, NULL);
        leash_go(g, lock_wait, NULL);
        leash_go(g, nap, NULL);
    } else if (!strcmp(mode, "stuck") || !strcmp(mode, "cancel")) {
        leash_group_open(&g, &(leash_group_opts){.name = mode});
        leash_go(g, recv_forever, NULL);
    } else if (!strcmp(mode, "supervise")) {
        sigset_t usr1;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &usr1, NULL);
        leash_chan_open(&go, "go", sizeof(int), 0);
        leash_group_open(&g, &(leash_group_opts){.name = "supervisors"});
        leash_go(g, supervise_one, NULL);
        leash_go(g, supervise_one, &go);
        printf("ready %d\n", (int)getpid());
        int sig;
        sigwait(&usr1, &sig);
        leash_chan_close(go);
        int rc = leash_group_wait(g); /* flaky-sup runs until the process is killed */
        printf("wait: %d\n", rc);
        return 0;
    } else if (!strcmp(mode, "ontime") || !strcmp(mode, "overrun")) {
        sigset_t usr1;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &usr1, NULL);
        leash_group *idle; /* the runtime and its agent start: leashd sees the process */
        leash_group_open(&idle, &(leash_group_opts){.name = "idle"});
        printf("ready %d\n", (int)getpid());
        int sig;
        sigwait(&usr1, &sig);
        const char *ms = getenv("LEASHED_DEADLINE_MS"); /* the test may ask for longer */
        leash_group_open(&g,
                         &(leash_group_opts){.name = mode, .timeout_ms = ms ? atoll(ms) : 3000});
        leash_go(g, strcmp(mode, "ontime") ? spin : nap, NULL);
        printf("closed %d\n", leash_group_wait(g));
        sigwait(&usr1, &sig);
        return 0;
    } else {
        return 2;
    }
    printf("ready %d\n", (int)getpid());
    int rc = leash_group_wait(g);
    printf("wait: %d\n", rc);
    return 0;
}
