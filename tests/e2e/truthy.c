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
 */
#define _GNU_SOURCE
#include <errno.h>
#include <leash.h>
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
    if (!strcmp(mode, "unblock")) {
        leash_chan_open(&jobs, "jobs", sizeof(int), 0);
        leash_group_open(&g, &(leash_group_opts){.name = "serve"});
        leash_go(g, served, NULL);
        printf("ready\n");
        line();
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
    return 2;
}
