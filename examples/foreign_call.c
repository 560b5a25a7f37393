/*
 * foreign_call: a call into code with no timeout (the seed's example 4).
 *
 * The stand-in for a third-party HTTP client with no timeout is a plain
 * read(2) from a pipe that nobody writes. With plain threads it blocks for
 * ever. A LEASH_INTERRUPT group interrupts it at the deadline: the read
 * fails with EINTR, and the task returns. (A call that retries on EINTR is
 * leashd's to escalate, up to killing the process.)
 */
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <unistd.h>

static int fds[2];

static void *plain_call(void *arg)
{
    (void)arg;
    char    c;
    ssize_t r = read(fds[0], &c, 1); /* no timeout */
    (void)r;
    return NULL;
}

static int third_party_call(void *arg)
{
    char    c;
    ssize_t r = read(fds[0], &c, 1);
    int     e = errno;
    printf("  task %ld: read -> %zd (%s)\n", (long)(intptr_t)arg, r, r < 0 ? strerror(e) : "data");
    return 0;
}

int main(void)
{
    if (pipe(fds) != 0)
        return 1;
    printf("plain threads: 3 calls with no timeout\n");
    int before = threads_now();
    for (long i = 1; i <= 3; i++)
        spawn_plain(plain_call, i);
    pause_ms(200);
    printf("  200 ms later %d threads are blocked in read(2)\n\n", threads_now() - before);

    printf("leash: 3 calls in a LEASH_INTERRUPT group with a 100 ms deadline\n");
    leash_group *g;
    leash_group_open(
        &g, &(leash_group_opts){.name = "http", .timeout_ms = 100, .flags = LEASH_INTERRUPT});
    for (long i = 1; i <= 3; i++)
        leash_go(g, third_party_call, (void *)(intptr_t)i);
    int rc = leash_group_wait(g);
    printf("  group wait -> %s; tasks still alive: %ld\n", rc == -ETIMEDOUT ? "-ETIMEDOUT" : "?",
           tasks_live());
    return tasks_live() == 0 ? 0 : 1;
}
