/*
 * chan_leak: a send that nobody will ever receive (the seed's example 1).
 *
 * search() starts a worker that sends its result on an unbuffered channel,
 * and returns without receiving it. With plain threads, each worker blocks
 * for ever; with leash, the worker runs in a group whose deadline cancels
 * the send, and the dump names the channel and the line while it waits.
 */
#include "common.h"

#include <errno.h>
#include <stdbool.h>
#include <pthread.h>

/* ---- plain pthreads: an unbuffered channel is a mutex and a condvar */

struct plain_chan {
    pthread_mutex_t mu;
    pthread_cond_t  taken;
    bool            full;
    const char     *value;
};

static void *plain_worker(void *arg)
{
    struct plain_chan *c = arg;
    pthread_mutex_lock(&c->mu);
    c->full = true;
    c->value = "result";
    while (c->full) /* nobody will ever take it */
        pthread_cond_wait(&c->taken, &c->mu);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void plain_search(void)
{
    static struct plain_chan c[3];
    static int               n;
    struct plain_chan       *mine = &c[n++];
    pthread_mutex_init(&mine->mu, NULL);
    pthread_cond_init(&mine->taken, NULL);
    pthread_t th;
    pthread_create(&th, NULL, plain_worker, mine);
    pthread_detach(th);
}

/* ---- leash: the send is a cancellation point of the group's deadline */

static int search_worker(void *arg)
{
    const char *name = "result";
    int         err = leash_chan_send((leash_chan *)arg, &name);
    printf("  worker: send -> %s\n", err == -ETIMEDOUT ? "-ETIMEDOUT (deadline)" : strerror(-err));
    return err;
}

int main(void)
{
    printf("plain threads: 3 searches, nobody receives\n");
    int before = threads_now();
    for (int i = 0; i < 3; i++)
        plain_search();
    pause_ms(200);
    printf("  threads before %d, 200 ms later %d: %d leaked for good\n\n", before, threads_now(),
           threads_now() - before);

    printf("leash: 3 searches in a group with a 100 ms deadline\n");
    leash_chan  *c;
    leash_group *g;
    leash_chan_open(&c, "search.result", sizeof(const char *), 0);
    leash_group_open(&g, &(leash_group_opts){.name = "search", .timeout_ms = 100});
    for (int i = 0; i < 3; i++)
        leash_go(g, search_worker, c);
    pause_ms(20);
    printf("  while they wait, the dump says:\n");
    fflush(stdout);
    leash_dump(1, LEASH_DUMP_TEXT);
    int rc = leash_group_wait(g);
    printf("  group wait -> %s; tasks still alive: %ld\n", rc == -ETIMEDOUT ? "-ETIMEDOUT" : "?",
           tasks_live());
    leash_chan_free(c);
    return tasks_live() == 0 && rc == -ETIMEDOUT ? 0 : 1;
}
