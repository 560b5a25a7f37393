/* tour.c: the README's tour of the API, whole (a test keeps the two equal). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <leash.h>

struct job {
    int         fd;      /* where the answer comes from */
    leash_chan *results; /* where it goes */
    int         answer;
};

static int fetch(void *arg)
{
    struct job *j = arg;
    int         err = leash_fdwait(j->fd, POLLIN, -1); /* cancellation point */
    if (err < 0)
        return err; /* -ETIMEDOUT at the deadline */
    if (read(j->fd, &j->answer, sizeof j->answer) != sizeof j->answer)
        return -EIO;
    return leash_chan_send(j->results, &j->answer);
}

static int search(struct job *jobs, int n)
{
    leash_group *g;
    int          err =
        leash_group_open(&g, &(leash_group_opts){.name = "search", .timeout_ms = 100, .limit = 8});
    if (err)
        return err;
    for (int i = 0; i < n; i++)
        if ((err = leash_go(g, fetch, &jobs[i])) != 0)
            break;
    return leash_group_wait(g); /* joins every child, whatever happened */
}

/* A deadline on the calling task itself, with no child task. */
static int recv_within(leash_chan *c, int *v, int64_t ms)
{
    leash_scope *s;
    int          err = leash_scope_open(&s, &(leash_scope_opts){.name = "recv", .timeout_ms = ms});
    if (err)
        return err;
    err = leash_chan_recv(c, v);       /* -ETIMEDOUT once ms have passed */
    int caught = leash_scope_close(s); /* and so does the close */
    return err ? err : caught;
}

/* Reports go to the service's own log rather than to stderr. */
static void to_log(const struct leash_report *r, void *log)
{
    fprintf(log, "[leash] %s: %s\n", r->kind, r->detail);
}

int main(void)
{
    enum { N = 4 };
    leash_on_report(to_log, stderr);
    printf("libleash %s\n", leash_version());
    leash_chan *results;
    if (leash_chan_open(&results, "results", sizeof(int), N) != 0)
        return 1;
    struct job jobs[N];
    int        pipes[N][2];
    for (int i = 0; i < N; i++) {
        if (pipe(pipes[i]) != 0)
            return 1;
        jobs[i] = (struct job){.fd = pipes[i][0], .results = results};
        int answer = 40 + i;
        if (i < N - 1 && write(pipes[i][1], &answer, sizeof answer) != sizeof answer)
            return 1; /* the last job never gets its answer */
    }
    int err = search(jobs, N); /* -ETIMEDOUT: one child was still waiting */
    printf("search: %s\n", err ? strerror(-err) : "ok");
    int v, got = 0;
    while (recv_within(results, &v, 10) == 0)
        got++;
    printf("%d answers\n", got);
    for (int i = 0; i < N; i++) {
        close(pipes[i][0]);
        close(pipes[i][1]);
    }
    leash_chan_free(results);
    return err == -ETIMEDOUT && got == N - 1 ? 0 : 1;
}
