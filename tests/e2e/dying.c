/*
 * dying: a leashed process for the post-mortem tests. Each mode sets up its
 * tasks, prints "ready PID" once they are in place, then:
 *
 *   six    5 tasks blocked on a channel and 1 spinning; waits to be killed
 *   segv   a task reads a byte from stdin, then dereferences NULL
 *   busy   a task spins and another sits in read(2) on a pipe, for dumps
 *   late   the same two in a group whose 100 ms deadline passes
 */
#define _GNU_SOURCE
#include <leash.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static leash_chan *inbox;
static int         pipefd[2];

static int wait_inbox(void *arg)
{
    (void)arg;
    int v;
    return leash_chan_recv(inbox, &v);
}

static int spin_hot(void *arg)
{
    (void)arg;
    volatile unsigned long n = 0;
    for (;;)
        n++;
    return 0;
}

static int read_pipe(void *arg)
{
    (void)arg;
    char c;
    return read(pipefd[0], &c, 1) == 1 ? 0 : 1;
}

/* a real NULL dereference, which UBSan would turn into an exit */
__attribute__((no_sanitize_undefined)) static int parse(void *arg)
{
    (void)arg;
    char c;
    if (read(0, &c, 1) != 1)
        return 1;
    volatile int *p = NULL;
    return *p;
}

/* Returns once the process's own dump shows n tasks blocked on op. */
static void wait_blocked(const char *op, int n)
{
    char needle[64];
    snprintf(needle, sizeof needle, "\"op\":\"%s\"", op);
    for (;;) {
        int fd = memfd_create("dump", 0);
        if (fd < 0 || leash_dump(fd, LEASH_DUMP_JSON) != 0)
            exit(3);
        off_t len = lseek(fd, 0, SEEK_END);
        char *s = calloc(1, (size_t)len + 1);
        if (!s || pread(fd, s, (size_t)len, 0) != len)
            exit(3);
        close(fd);
        int c = 0;
        for (const char *p = s; (p = strstr(p, needle)) != NULL; p++)
            c++;
        free(s);
        if (c >= n)
            return;
        leash_sleep(5);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char  *mode = argv[1];
    leash_group *g;
    int          line = 0; /* where the task of interest is spawned, for the test */
    if (pipe(pipefd) || leash_chan_open(&inbox, "e2e.inbox", sizeof(int), 0))
        return 1;
    leash_group_open(&g, &(leash_group_opts){.name = strcmp(mode, "late") ? "requests" : "late",
                                             .timeout_ms = strcmp(mode, "late") ? 0 : 100});
    if (!strcmp(mode, "six")) {
        line = __LINE__ + 2;
        for (int i = 0; i < 5; i++)
            leash_go(g, wait_inbox, NULL);
        leash_go(g, spin_hot, NULL); /* the line after */
        wait_blocked("chan_recv", 5);
    } else if (!strcmp(mode, "segv")) {
        line = __LINE__ + 1;
        leash_go(g, parse, NULL);
    } else if (!strcmp(mode, "busy") || !strcmp(mode, "late")) {
        leash_go(g, spin_hot, NULL);
        leash_go(g, read_pipe, NULL);
    } else {
        return 2;
    }
    printf("ready %d %d\n", (int)getpid(), line);
    return leash_group_wait(g) == 0 ? 0 : 4;
}
