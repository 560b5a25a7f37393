/*
 * dump: what leash_dump shows of a process with parked tasks: every group,
 * every task, what it is blocked on, since when and from which line.
 */
#include "common.h"

#include <errno.h>

struct app {
    leash_chan *jobs, *results;
    leash_mutex db;
};

static int fetcher(void *arg)
{
    struct app *a = arg;
    int         job;
    return leash_chan_recv(a->jobs, &job); /* nobody sends jobs */
}

static int writer(void *arg)
{
    struct app *a = arg;
    return leash_mutex_lock(&a->db); /* main holds the db lock */
}

static int reporter(void *arg)
{
    struct app *a = arg;
    int         r = 1;
    return leash_chan_send(a->results, &r); /* nobody reads results */
}

static int ticker(void *arg)
{
    (void)arg;
    int err;
    while ((err = leash_sleep(50)) == 0)
        ;
    return err;
}

int main(int argc, char **argv)
{
    struct app a;
    leash_chan_open(&a.jobs, "jobs", sizeof(int), 0);
    leash_chan_open(&a.results, "results", sizeof(int), 0);
    leash_mutex_init(&a.db, "db");
    leash_mutex_lock(&a.db);

    leash_group *server, *workers;
    leash_group_open(&server, &(leash_group_opts){.name = "server"});
    leash_go(server, ticker, NULL);
    leash_group_open(&workers, &(leash_group_opts){.name = "workers", .timeout_ms = 5000});
    for (int i = 0; i < 2; i++)
        leash_go(workers, fetcher, &a);
    leash_go(workers, writer, &a);
    leash_go(workers, reporter, &a);
    pause_ms(100);

    int json = argc > 1 && strcmp(argv[1], "--json") == 0;
    leash_dump(1, json ? LEASH_DUMP_JSON : LEASH_DUMP_TEXT);

    leash_group_cancel(workers);
    leash_group_cancel(server);
    leash_group_wait(workers);
    leash_group_wait(server);
    leash_mutex_unlock(&a.db);
    leash_chan_free(a.jobs);
    leash_chan_free(a.results);
    return tasks_live() == 0 ? 0 : 1;
}
