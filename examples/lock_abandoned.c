/*
 * lock_abandoned: a task returns holding a mutex (the seed's example 2.1).
 *
 * With plain pthreads, the first thread to lock returns without unlocking
 * and every later one waits for ever. With leash, the lock knows its holder:
 * when the holder exits, a report names it and the line it locked at, and
 * every later lock call fails at once with -EOWNERDEAD.
 */
#include "common.h"

#include <errno.h>
#include <pthread.h>

static pthread_mutex_t plain = PTHREAD_MUTEX_INITIALIZER;

static void *plain_worker(void *arg)
{
    printf("  thread %ld: lock before\n", (long)(intptr_t)arg);
    pthread_mutex_lock(&plain);
    printf("  thread %ld: locked, returns without unlocking\n", (long)(intptr_t)arg);
    return NULL;
}

static leash_mutex mu;

static int worker(void *arg)
{
    long i = (long)(intptr_t)arg;
    int  err = leash_mutex_lock(&mu);
    if (err == 0)
        printf("  task %ld: locked, returns without unlocking\n", i);
    else
        printf("  task %ld: lock -> %s\n", i,
               err == -EOWNERDEAD ? "-EOWNERDEAD, at once" : strerror(-err));
    return 0;
}

int main(void)
{
    printf("plain threads: 3 threads lock, the first never unlocks\n");
    int before = threads_now();
    for (long i = 1; i <= 3; i++)
        spawn_plain(plain_worker, i);
    pause_ms(200);
    printf("  200 ms later %d threads are still waiting for the lock\n\n", threads_now() - before);

    printf("leash: the same, with a leash_mutex\n");
    leash_mutex_init(&mu, "config.lock");
    leash_group *g;
    leash_group_open(&g, &(leash_group_opts){.name = "workers"});
    leash_go(g, worker, (void *)1);
    leash_group_wait(g); /* the first has exited holding the lock */
    leash_group_open(&g, &(leash_group_opts){.name = "workers"});
    for (long i = 2; i <= 3; i++)
        leash_go(g, worker, (void *)(intptr_t)i);
    leash_group_wait(g);
    printf("  tasks still alive: %ld\n", tasks_live());
    return tasks_live() == 0 ? 0 : 1;
}
