/*
 * supervise: tasks that must always run come back when they fail.
 *
 *   supervise          a server (a listener and two workers, one_for_one: a
 *                      worker that crashes is restarted alone) and a pipeline
 *                      (reader -> parser -> writer, rest_for_one: when the
 *                      parser fails, the writer after it restarts with it,
 *                      the reader before it keeps going), both in a group
 *                      whose 1500 ms deadline ends them
 *   supervise crash    a worker that fails every time: restarted after
 *                      50, 100, 200, 400 ms, until the supervisor gives up
 *                      (a restart_limit report). With --park it starts on
 *                      SIGUSR1 (once leashd sees the process) and then waits
 *                      for SIGTERM, so leashd and leashctl can be asked.
 */
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <unistd.h>

static int64_t t0;

static long since_start(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)((ts.tv_sec * 1000 + ts.tv_nsec / 1000000) - t0);
}

/* ----------------------------------------------------------------- server */

struct server {
    int         requests[2]; /* a pipe: what clients send */
    leash_chan *jobs;
};

static int listener(void *arg)
{
    struct server *s = arg;
    printf("%5ld ms  server: listener up (task %llu)\n", since_start(),
           (unsigned long long)leash_task_id());
    for (;;) {
        int rc = leash_fdwait(s->requests[0], POLLIN, -1);
        if (rc < 0)
            return rc; /* the deadline, or the supervisor */
        int req;
        if (read(s->requests[0], &req, sizeof req) != sizeof req)
            return -EIO;
        if ((rc = leash_chan_send(s->jobs, &req)) != 0)
            return rc;
    }
}

static int worker(void *arg)
{
    struct server *s = arg;
    uint64_t       me = leash_task_id();
    printf("%5ld ms  server: worker up (task %llu)\n", since_start(), (unsigned long long)me);
    for (;;) {
        int req, rc = leash_chan_recv(s->jobs, &req);
        if (rc)
            return rc;
        if (req % 7 == 0) { /* a request this worker cannot survive */
            printf("%5ld ms  server: worker %llu crashes on request %d\n", since_start(),
                   (unsigned long long)me, req);
            return -EPROTO;
        }
    }
}

static int server_main(void *arg)
{
    struct server *s = arg;
    leash_sup_opts o = {.name = "server",
                        .strategy = LEASH_ONE_FOR_ONE,
                        .intensity = 10,
                        .period_ms = 1000,
                        .backoff_min_ms = 10,
                        .backoff_max_ms = 200};
    return leash_supervise(&o,
                           (leash_child_spec[]){
                               {"listener", listener, s, LEASH_PERMANENT},
                               {"worker", worker, s, LEASH_PERMANENT},
                               {"worker", worker, s, LEASH_PERMANENT},
                           },
                           3);
}

/* A client: sends a request every 30 ms until the deadline. */
static int client(void *arg)
{
    struct server *s = arg;
    for (int req = 1; leash_sleep(30) == 0; req++)
        if (write(s->requests[1], &req, sizeof req) != sizeof req)
            return -EIO;
    return 0;
}

/* --------------------------------------------------------------- pipeline */

struct pipeline {
    leash_chan *raw, *parsed;
};

static int reader(void *arg)
{
    struct pipeline *p = arg;
    printf("%5ld ms  pipeline: reader up\n", since_start());
    for (int line = 1;; line++) {
        int rc = leash_sleep(40);
        if (!rc)
            rc = leash_chan_send(p->raw, &line);
        if (rc)
            return rc;
    }
}

static int parser(void *arg)
{
    struct pipeline *p = arg;
    printf("%5ld ms  pipeline: parser up\n", since_start());
    for (;;) {
        int line, rc = leash_chan_recv(p->raw, &line);
        if (rc)
            return rc;
        if (line % 12 == 0) {
            printf("%5ld ms  pipeline: parser fails on line %d\n", since_start(), line);
            return -EBADMSG;
        }
        int parsed = line * 10;
        if ((rc = leash_chan_send(p->parsed, &parsed)) != 0)
            return rc;
    }
}

static int writer(void *arg)
{
    struct pipeline *p = arg;
    printf("%5ld ms  pipeline: writer up\n", since_start());
    for (;;) {
        int v, rc = leash_chan_recv(p->parsed, &v);
        if (rc)
            return rc;
    }
}

static int pipeline_main(void *arg)
{
    leash_sup_opts o = {.name = "pipeline",
                        .strategy = LEASH_REST_FOR_ONE,
                        .intensity = 5,
                        .period_ms = 1000,
                        .backoff_min_ms = 20,
                        .backoff_max_ms = 100};
    return leash_supervise(&o,
                           (leash_child_spec[]){
                               {"reader", reader, arg, LEASH_PERMANENT},
                               {"parser", parser, arg, LEASH_PERMANENT},
                               {"writer", writer, arg, LEASH_PERMANENT},
                           },
                           3);
}

static const char *err_name(int err)
{
    switch (err) {
    case 0: return "0";
    case -ETIMEDOUT: return "-ETIMEDOUT";
    case -ECANCELED: return "-ECANCELED";
    case -EPROTO: return "-EPROTO";
    case -EBADMSG: return "-EBADMSG";
    }
    return strerror(-err);
}

struct sup_run {
    int (*fn)(void *);
    void *arg;
    int   rc;
};

static int run_and_keep(void *arg)
{
    struct sup_run *r = arg;
    r->rc = r->fn(r->arg);
    return 0;
}

static int both(void)
{
    struct server   s;
    struct pipeline p;
    if (pipe(s.requests))
        return 1;
    leash_chan_open(&s.jobs, "jobs", sizeof(int), 0);
    leash_chan_open(&p.raw, "raw", sizeof(int), 0);
    leash_chan_open(&p.parsed, "parsed", sizeof(int), 0);
    printf("a server (one_for_one) and a pipeline (rest_for_one), for 1500 ms:\n");

    leash_group *g;
    leash_group_open(&g, &(leash_group_opts){.name = "service", .timeout_ms = 1500});
    struct sup_run srv = {server_main, &s, 0}, pipe_run = {pipeline_main, &p, 0};
    leash_go(g, run_and_keep, &srv);
    leash_go(g, run_and_keep, &pipe_run);
    leash_go(g, client, &s);
    leash_sleep(1000);
    printf("\nthe dump shows each supervisor, its strategy and its restarts:\n");
    leash_dump(1, LEASH_DUMP_TEXT);
    int rc = leash_group_wait(g);
    printf("\n%5ld ms  the deadline: server -> %s, pipeline -> %s, group -> %s, tasks alive %ld\n",
           since_start(), err_name(srv.rc), err_name(pipe_run.rc), err_name(rc), tasks_live());
    leash_chan_free(s.jobs);
    leash_chan_free(p.raw);
    leash_chan_free(p.parsed);
    close(s.requests[0]);
    close(s.requests[1]);
    return tasks_live() == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------ crash */

static long last_end = -1;

static int crasher(void *arg)
{
    (void)arg;
    long now = since_start();
    if (last_end >= 0)
        printf("%5ld ms  crasher restarted, %ld ms after it failed\n", now, now - last_end);
    else
        printf("%5ld ms  crasher up\n", now);
    last_end = since_start();
    return -ECONNREFUSED; /* its database is down, say */
}

static int crash(bool park)
{
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigaddset(&term, SIGINT);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &term, NULL);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    int sig;
    if (park) {
        printf("waiting for SIGUSR1 %d\n", (int)getpid());
        fflush(stdout);
        sigwait(&usr1, &sig);
        t0 += since_start();
    }
    printf("a worker that fails every time: 4 restarts in 10 s allowed, backoff 50..400 ms\n");
    leash_sup_opts o = {.name = "db-sync",
                        .intensity = 4,
                        .period_ms = 10000,
                        .backoff_min_ms = 50,
                        .backoff_max_ms = 400};
    int            rc =
        leash_supervise(&o, (leash_child_spec[]){{"crasher", crasher, NULL, LEASH_PERMANENT}}, 1);
    printf("%5ld ms  the supervisor gave up: %s (the child's last error), tasks alive %ld\n",
           since_start(), strerror(-rc), tasks_live());
    if (park) {
        printf("parked %d\n", (int)getpid());
        fflush(stdout);
        sigwait(&term, &sig);
    }
    return rc == -ECONNREFUSED ? 0 : 1;
}

int main(int argc, char **argv)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t0 = ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (argc > 1 && strcmp(argv[1], "crash") == 0)
        return crash(argc > 2 && strcmp(argv[2], "--park") == 0);
    return both();
}
