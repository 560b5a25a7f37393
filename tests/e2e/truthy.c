/*
 * truthy: leashed processes for the truth suite, driven over stdin. Each
 * mode prints "ready" once in place; every line read on stdin moves it one
 * step on, and EOF ends it (exit 0).
 *
 *   burst N   a group with a 2 s deadline runs N empty tasks (a burst that
 *             overflows the agent's ring), then the process idles
 *   unblock   a task blocks on channel "jobs"; line 1 serves it, after which
 *             it runs (in read(2), which leash sees as running); line 2 ends
 *             it, and main, which waited for the group, then runs too
 *   names     a group and a channel named by TRUTH_NAME hold a task blocked
 *   later     like unblock, but the task starts (and blocks) on line 1;
 *             line 2 serves it, line 3 ends it
 *   roots     main runs a group (the agent starts); line 1 starts a thread
 *             named "late-root" that calls leash (a root task) and says
 *             "started"; line 2 ends it and says "joined"
 *   report    a task returns with a scope open (an unclosed_scope report),
 *             then the process idles
 */
#define _GNU_SOURCE
#include <errno.h>
#include <leash.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static leash_chan *jobs;
static int         hold[2];

static int nop(void *arg)
{
    (void)arg;
    return 0;
}

static int served(void *arg)
{
    (void)arg;
    int v, err = leash_chan_recv(jobs, &v);
    printf("recv: %s\n", err == 0 ? "ok" : err == -ECANCELED ? "ECANCELED" : "error");
    fflush(stdout);
    char c;
    while (read(hold[0], &c, 1) > 0) /* running, as leash sees it */
        ;
    return err;
}

static void *late_root(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "late-root");
    leash_sleep(1); /* its first blocking leash call: a root task from here */
    printf("started\n");
    fflush(stdout);
    char c;
    while (read(hold[0], &c, 1) > 0)
        ;
    return NULL;
}

static int forgets_its_scope(void *arg)
{
    (void)arg;
    leash_scope *s;
    return leash_scope_open(&s, &(leash_scope_opts){.name = "forgotten"});
}

static void line(void)
{
    char buf[64];
    if (!fgets(buf, sizeof buf, stdin))
        exit(0);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char  *mode = argc > 1 ? argv[1] : "";
    leash_group *g;
    if (pipe(hold))
        return 1;
    if (!strcmp(mode, "burst")) {
        int n = argc > 2 ? atoi(argv[2]) : 100000;
        leash_group_open(&g, &(leash_group_opts){.name = "burst", .timeout_ms = 2000});
        for (int i = 0; i < n; i++)
            leash_go(g, nop, NULL);
        int rc = leash_group_wait(g);
        printf("ready %d\n", rc);
        for (;;)
            line();
    }
    if (!strcmp(mode, "unblock") || !strcmp(mode, "later")) {
        bool later = !strcmp(mode, "later");
        leash_chan_open(&jobs, "jobs", sizeof(int), 0);
        leash_group_open(&g, &(leash_group_opts){.name = "serve"});
        if (!later)
            leash_go(g, served, NULL);
        printf("ready\n");
        line();
        if (later) {
            leash_go(g, served, NULL);
            line();
        }
        int v = 1;
        leash_chan_send(jobs, &v);
        line();
        close(hold[1]);
        int rc = leash_group_wait(g);
        printf("ended %d\n", rc);
        for (;;)
            line();
    }
    if (!strcmp(mode, "names")) {
        const char *name = getenv("TRUTH_NAME");
        leash_chan_open(&jobs, name, sizeof(int), 0);
        leash_group_open(&g, &(leash_group_opts){.name = name});
        leash_go(g, served, NULL);
        printf("ready\n");
        line();
        leash_chan_close(jobs);
        close(hold[1]);
        leash_group_wait(g);
        for (;;)
            line();
    }
    if (!strcmp(mode, "roots")) {
        leash_group_open(&g, &(leash_group_opts){.name = "first"});
        leash_go(g, nop, NULL);
        leash_group_wait(g);
        printf("ready\n");
        line();
        pthread_t th;
        if (pthread_create(&th, NULL, late_root, NULL))
            return 1;
        line();
        close(hold[1]);
        pthread_join(th, NULL);
        printf("joined\n");
        for (;;)
            line();
    }
    if (!strcmp(mode, "report")) {
        leash_group_open(&g, &(leash_group_opts){.name = "forgetful"});
        leash_go(g, forgets_its_scope, NULL);
        leash_group_wait(g);
        printf("ready\n");
        for (;;)
            line();
    }
    return 2;
}
