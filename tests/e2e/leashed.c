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
 */
#define _GNU_SOURCE
#include <errno.h>
#include <leash.h>
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
    } else {
        return 2;
    }
    printf("ready %d\n", (int)getpid());
    int rc = leash_group_wait(g);
    printf("wait: %d\n", rc);
    return 0;
}
