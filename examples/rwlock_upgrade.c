/*
 * rwlock_upgrade: a read lock held while the same task asks for the write
 * lock (the seed's example 2.2).
 *
 * With plain pthreads the upgrade waits for ever for its own read lock, and
 * every later reader queues behind it. With leash the upgrade is refused at
 * once with -EDEADLK and a report that names both lines.
 */
#include "common.h"

#include <errno.h>
#include <pthread.h>

static pthread_rwlock_t plain;

static void *plain_worker(void *arg)
{
    long i = (long)(intptr_t)arg;
    pthread_rwlock_rdlock(&plain);
    printf("  thread %ld: read-locked, asks for the write lock\n", i);
    pthread_rwlock_wrlock(&plain); /* never returns */
    printf("  thread %ld: write-locked\n", i);
    return NULL;
}

static leash_rwlock rw;

static int worker(void *arg)
{
    long i = (long)(intptr_t)arg;
    int  err = leash_rwlock_rdlock(&rw);
    if (err)
        return err;
    printf("  task %ld: read-locked, asks for the write lock\n", i);
    err = leash_rwlock_wrlock(&rw);
    printf("  task %ld: wrlock -> %s\n", i, err == -EDEADLK ? "-EDEADLK, at once" : strerror(-err));
    leash_rwlock_unlock(&rw);
    return 0;
}

int main(void)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    /* writers preferred, as in Go: later readers queue behind the upgrade */
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&plain, &a);
    printf("plain threads: 3 threads read-lock, then ask for the write lock\n");
    int before = threads_now();
    for (long i = 1; i <= 3; i++)
        spawn_plain(plain_worker, i);
    pause_ms(200);
    printf("  200 ms later %d threads are stuck\n\n", threads_now() - before);

    printf("leash: the same, with a leash_rwlock\n");
    leash_rwlock_init(&rw, "cache.rw");
    leash_group *g;
    leash_group_open(&g, &(leash_group_opts){.name = "readers"});
    for (long i = 1; i <= 3; i++)
        leash_go(g, worker, (void *)(intptr_t)i);
    leash_group_wait(g);
    printf("  tasks still alive: %ld\n", tasks_live());
    return tasks_live() == 0 ? 0 : 1;
}
