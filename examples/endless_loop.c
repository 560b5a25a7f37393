/*
 * endless_loop: a loop that never ends (the seed's example 3).
 *
 * With plain threads, three polling loops run until the process dies. With
 * leash, the loop's sleep is a cancellation point: at the group's deadline
 * leash_sleep returns -ETIMEDOUT and the loop ends. (A loop with no
 * cancellation point at all is leashd's to catch: see the demo.)
 */
#include "common.h"

#include <errno.h>
#include <pthread.h>

static void *plain_loop(void *arg)
{
    for (int round = 0;; round++) {
        if (round < 2) /* then it goes on quietly */
            printf("  thread %ld running\n", (long)(intptr_t)arg);
        pause_ms(90);
    }
    return NULL;
}

static int poller(void *arg)
{
    int err;
    while ((err = leash_sleep(90)) == 0)
        printf("  task %ld running\n", (long)(intptr_t)arg);
    printf("  task %ld: sleep -> %s, loop ends\n", (long)(intptr_t)arg,
           err == -ETIMEDOUT ? "-ETIMEDOUT" : strerror(-err));
    return 0;
}

int main(void)
{
    printf("plain threads: 3 loops\n");
    int before = threads_now();
    for (long i = 1; i <= 3; i++)
        spawn_plain(plain_loop, i);
    pause_ms(200);
    printf("  200 ms later %d loops still run, and will until exit\n\n", threads_now() - before);

    printf("leash: 3 loops in a group with a 200 ms deadline\n");
    leash_group *g;
    leash_group_open(&g, &(leash_group_opts){.name = "pollers", .timeout_ms = 200});
    for (long i = 1; i <= 3; i++)
        leash_go(g, poller, (void *)(intptr_t)i);
    int rc = leash_group_wait(g);
    printf("  group wait -> %s; tasks still alive: %ld\n", rc == -ETIMEDOUT ? "-ETIMEDOUT" : "?",
           tasks_live());
    return tasks_live() == 0 ? 0 : 1;
}
