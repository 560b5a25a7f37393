/*
 * idle: how often an idle leashed process wakes up, with no leashd and
 * connected to one whose heartbeat is 1 s (heartbeat_timeout 4s). A
 * wake-up is a context switch: the voluntary and nonvoluntary switches of
 * every thread of the process (/proc/PID/task/TID/status), counted over a
 * window of 10 s (3 s with --quick) once the process has settled.
 *
 *   idle LEASHD [--quick]     prints RESULT idle_wakeups_alone|_connected N (per second)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <leash.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int nop(void *arg)
{
    (void)arg;
    return 0;
}

/* The idle process: leash in use (pool, agent), then nothing at all. */
static __attribute__((noreturn)) int child(void)
{
    leash_group *g;
    leash_group_open(&g, &(leash_group_opts){.name = "once"});
    leash_go(g, nop, NULL);
    leash_group_wait(g);
    printf("ready\n");
    fflush(stdout);
    for (;;)
        pause();
}

/* Context switches of each thread of pid: tids[] and counts[], n of them. */
struct sw {
    int       n;
    long      tids[256];
    long long counts[256];
};

static void switches(pid_t pid, struct sw *w)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    w->n = 0;
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) && w->n < 256) {
        if (e->d_name[0] == '.')
            continue;
        char f[384], line[256];
        snprintf(f, sizeof f, "%s/%s/status", path, e->d_name);
        FILE     *s = fopen(f, "r");
        long long sum = 0, v;
        while (s && fgets(line, sizeof line, s))
            if (sscanf(line, "voluntary_ctxt_switches: %lld", &v) == 1 ||
                sscanf(line, "nonvoluntary_ctxt_switches: %lld", &v) == 1)
                sum += v;
        if (s)
            fclose(s);
        w->tids[w->n] = atol(e->d_name);
        w->counts[w->n++] = sum;
    }
    closedir(d);
}

/* Switches between a and b: of threads alive at b (a thread that ended
   meanwhile, a pool worker retiring, takes its count with it). */
static long long delta(const struct sw *a, const struct sw *b)
{
    long long sum = 0;
    for (int i = 0; i < b->n; i++) {
        long long before = 0;
        for (int j = 0; j < a->n; j++)
            if (a->tids[j] == b->tids[i])
                before = a->counts[j];
        sum += b->counts[i] - before;
    }
    return sum;
}

static void nap(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Wake-ups per second of an idle process with socket (NULL: no leashd). */
static double measure(const char *self, const char *socket, double window)
{
    int p[2];
    if (pipe(p))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        setenv("LEASH_SOCKET", socket ? socket : "off", 1);
        execl(self, self, "--child", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char buf[16];
    if (read(p[0], buf, sizeof buf) <= 0)
        return -1;
    nap(2.0); /* connected, its Hello answered, first heartbeats sent */
    struct sw a, b;
    switches(pid, &a);
    nap(window);
    switches(pid, &b);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(p[0]);
    return (double)delta(&a, &b) / window;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--child"))
        return child();
    if (argc < 2) {
        fprintf(stderr, "usage: idle LEASHD [--quick]\n");
        return 2;
    }
    double  window = argc > 2 && !strcmp(argv[2], "--quick") ? 3 : 10;
    char    self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return 1;
    self[n] = '\0';
    printf("RESULT idle_wakeups_alone %.2f\n", measure(self, NULL, window));

    char dir[] = "/tmp/leash-idle-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char conf[128], agent[128], control[128], state[128];
    snprintf(conf, sizeof conf, "%s/leashd.conf", dir);
    snprintf(agent, sizeof agent, "%s/agent.sock", dir);
    snprintf(control, sizeof control, "%s/control.sock", dir);
    snprintf(state, sizeof state, "%s/state", dir);
    FILE *f = fopen(conf, "w");
    fputs("heartbeat_timeout = \"4s\";\n", f); /* a heartbeat every second */
    fclose(f);
    pid_t d = fork();
    if (d == 0) {
        freopen("/dev/null", "w", stderr);
        execl(argv[1], "leashd", "--config", conf, "--agent-socket", agent, "--control-socket",
              control, "--state-dir", state, (char *)NULL);
        _exit(127);
    }
    struct stat st;
    for (int i = 0; i < 500 && stat(control, &st) != 0; i++)
        nap(0.02);
    printf("RESULT idle_wakeups_connected %.2f\n", measure(self, agent, window));
    kill(d, SIGTERM);
    waitpid(d, NULL, 0);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) != 0;
}
