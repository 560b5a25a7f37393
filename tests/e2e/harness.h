/*
 * harness.h: what every end-to-end suite shares: a real leashd on its own
 * sockets in a temporary directory, leashed processes, and leashctl run as a
 * child. Each suite is one tests/e2e/test_e2e*.c that includes this once.
 */
#ifndef LEASH_E2E_HARNESS_H
#define LEASH_E2E_HARNESS_H
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/*
 * How long a test waits for something it expects (leashd listening, a
 * process ready, an incident, a line of output) before it fails. Reached
 * only when the thing never comes, so it is generous: under ASan or TSan on
 * a loaded machine, a process can take seconds to start and connect. Tests
 * wait for states they can see, never for a time.
 */
#define E2E_WAIT_MS 60000

struct daemon {
    pid_t pid;
    char  dir[64], agent[128], control[128], state[128], conf[128], log[128];
};

/* What a test started, so a failing test leaves nothing running. */
static pid_t started[64];
static int   nstarted;

static __attribute__((unused)) void track(pid_t p)
{
    if (nstarted < 64)
        started[nstarted++] = p;
}

/* The leashctl to run: another uid may not reach the build tree (a clone
   under /root), so the non-admin test runs a copy. */
static const char *ctl_bin = LEASHCTL_BIN;

static __attribute__((unused)) int teardown(void **state)
{
    (void)state;
    ctl_bin = LEASHCTL_BIN;
    for (int i = 0; i < nstarted; i++) {
        if (started[i] > 0 && kill(started[i], SIGKILL) == 0)
            waitpid(started[i], NULL, 0);
    }
    nstarted = 0;
    return 0;
}

static __attribute__((unused)) int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static __attribute__((unused)) void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static __attribute__((unused)) bool connectable(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t             n = strlen(path);
    if (n >= sizeof sa.sun_path)
        return false;
    memcpy(sa.sun_path, path, n);
    int  fd = socket(AF_UNIX, SOCK_STREAM, 0);
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static __attribute__((unused)) void daemon_paths(struct daemon *d)
{
    snprintf(d->agent, sizeof d->agent, "%s/agent.sock", d->dir);
    snprintf(d->control, sizeof d->control, "%s/control.sock", d->dir);
    snprintf(d->state, sizeof d->state, "%s/state", d->dir);
    snprintf(d->conf, sizeof d->conf, "%s/leashd.conf", d->dir);
    snprintf(d->log, sizeof d->log, "%s/leashd.log", d->dir);
}

/* Starts leashd and returns once its control socket answers. */
static __attribute__((unused)) void daemon_start(struct daemon *d)
{
    d->pid = fork();
    assert_true(d->pid >= 0);
    if (d->pid == 0) {
        int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 2);
        execl(LEASHD_BIN, "leashd", "--config", d->conf, "--agent-socket", d->agent,
              "--control-socket", d->control, "--state-dir", d->state, (char *)NULL);
        _exit(127);
    }
    track(d->pid);
    int64_t until = now_ms() + E2E_WAIT_MS;
    while (!connectable(d->control)) {
        int st;
        if (waitpid(d->pid, &st, WNOHANG) == d->pid)
            fail_msg("leashd exited at start; see %s", d->log);
        if (now_ms() > until)
            fail_msg("leashd never listened on %s", d->control);
        pause_ms(10);
    }
}

static __attribute__((unused)) void daemon_new(struct daemon *d, const char *conf)
{
    memset(d, 0, sizeof *d);
    snprintf(d->dir, sizeof d->dir, "/tmp/leash-e2e-XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    chmod(d->dir, 0755);
    daemon_paths(d);
    FILE *f = fopen(d->conf, "w");
    fputs(conf ? conf : "", f);
    fclose(f);
    daemon_start(d);
}

static __attribute__((unused)) int daemon_stop(struct daemon *d)
{
    int st = 0;
    if (d->pid > 0) {
        kill(d->pid, SIGTERM);
        waitpid(d->pid, &st, 0);
        d->pid = 0;
    }
    return st;
}

static __attribute__((unused)) void daemon_cleanup(struct daemon *d)
{
    daemon_stop(d);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", d->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", d->dir);
}

/* Runs leashctl --socket ... args, as uid when uid >= 0. Returns the exit
   status; out gets stdout and stderr. */
static __attribute__((unused)) int ctl_as(const struct daemon *d, int uid, char *out, size_t outlen,
                                          ...)
{
    const char *argv[16] = {"leashctl", "--socket", d->control};
    int         n = 3;
    va_list     ap;
    va_start(ap, outlen);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < 15)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        if (uid >= 0 && setuid((uid_t)uid) != 0)
            _exit(126);
        execv(ctl_bin, (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    size_t  got = 0;
    ssize_t r;
    while ((r = read(p[0], out + got, outlen - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    close(p[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#define ctl(d, out, ...) ctl_as((d), -1, (out), sizeof(out), __VA_ARGS__, (char *)NULL)

static __attribute__((unused)) int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* Polls leashctl WHAT ARGS... until its output holds needle at least times
   times (leashd is another process: its state can only be watched). */
static void wait_for_va(const struct daemon *d, const char *needle, int times, const char *what,
                        va_list ap)
{
    char        out[65536];
    const char *argv[8];
    int         n = 0;
    argv[n++] = what;
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < 7)
        argv[n++] = a;
    int64_t until = now_ms() + E2E_WAIT_MS;
    for (;;) {
        ctl_as(d, -1, out, sizeof out, argv[0], n > 1 ? argv[1] : NULL, n > 2 ? argv[2] : NULL,
               n > 3 ? argv[3] : NULL, n > 4 ? argv[4] : NULL, (char *)NULL);
        if (count_of(out, needle) >= times)
            return;
        if (now_ms() > until)
            fail_msg("never saw '%s' %d times in leashctl %s: %s", needle, times, what, out);
        pause_ms(50);
    }
}

static __attribute__((unused)) void wait_for_(const struct daemon *d, const char *needle,
                                              const char *what, ...)
{
    va_list ap;
    va_start(ap, what);
    wait_for_va(d, needle, 1, what, ap);
    va_end(ap);
}

static __attribute__((unused)) void wait_for_n_(const struct daemon *d, const char *needle,
                                                int times, const char *what, ...)
{
    va_list ap;
    va_start(ap, what);
    wait_for_va(d, needle, times, what, ap);
    va_end(ap);
}

/* wait_for(d, needle, "tasks", pid, "--json"): until leashctl's output has needle. */
#define wait_for(d, needle, ...) wait_for_((d), (needle), __VA_ARGS__, (char *)NULL)
/* The same, until it has needle n times. */
#define wait_for_n(d, needle, n, ...) wait_for_n_((d), (needle), (n), __VA_ARGS__, (char *)NULL)

struct child {
    pid_t pid;
    int   out; /* its stdout */
};

static __attribute__((unused)) void read_line(int fd, char *buf, size_t len, int timeout_ms)
{
    size_t  n = 0;
    int64_t until = now_ms() + timeout_ms;
    while (n + 1 < len) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int64_t       left = until - now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        char c;
        if (read(fd, &c, 1) != 1)
            break;
        if (c == '\n')
            break;
        buf[n++] = c;
    }
    buf[n] = '\0';
}

/* `leashctl incidents --follow` (--json too when json): its stdout is a
   pipe whose read end goes to *out, its stderr goes to errfile (NULL: this
   process's). Tracked, so teardown kills it. */
static __attribute__((unused)) pid_t follow_incidents(const struct daemon *d, bool json,
                                                      const char *errfile, int *out)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(p[1], 1);
        if (errfile)
            dup2(open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0644), 2);
        close(p[0]);
        execl(LEASHCTL_BIN, "leashctl", "--socket", d->control, "incidents", "--follow",
              json ? "--json" : (char *)NULL, (char *)NULL);
        _exit(127);
    }
    track(pid);
    close(p[1]);
    *out = p[0];
    return pid;
}

/* A leashed process in mode `mode`, known to leashd as `name`. */
static __attribute__((unused)) struct child leashed_named(const struct daemon *d, const char *mode,
                                                          const char *name)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct child c = {.pid = fork()};
    if (c.pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        setenv("LEASH_SOCKET", d->agent, 1);
        setenv("LEASH_REPORT", "quiet", 1);
        setenv("LEASH_NAME", name, 1);
        execl(LEASHED_BIN, "leashed", mode, (char *)NULL);
        _exit(127);
    }
    track(c.pid);
    close(p[1]);
    c.out = p[0];
    char line[128];
    read_line(c.out, line, sizeof line, E2E_WAIT_MS);
    if (strncmp(line, "ready", 5) != 0)
        fail_msg("leashed %s never said ready (said '%s')", name, line);
    return c;
}

/* A leashed process in mode `mode`, known to leashd by its mode. */
static __attribute__((unused)) struct child leashed(const struct daemon *d, const char *mode)
{
    return leashed_named(d, mode, mode);
}

static __attribute__((unused)) int reap(struct child *c, int timeout_ms)
{
    int     st;
    int64_t until = now_ms() + timeout_ms;
    while (waitpid(c->pid, &st, WNOHANG) == 0) {
        if (now_ms() > until) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &st, 0);
            fail_msg("leashed %d did not end in %d ms", (int)c->pid, timeout_ms);
        }
        pause_ms(10);
    }
    close(c->out);
    c->pid = 0;
    return st;
}

static __attribute__((unused)) void kill_child(struct child *c)
{
    if (c->pid > 0) {
        kill(c->pid, SIGKILL);
        reap(c, E2E_WAIT_MS);
    }
}

static char                                pidstr_buf[16];
static __attribute__((unused)) const char *pidstr(pid_t p)
{
    snprintf(pidstr_buf, sizeof pidstr_buf, "%d", (int)p);
    return pidstr_buf;
}

/*
 * Waits until leashd lists the process (its agent has connected and said
 * hello). A leashed process says "ready" once its tasks are set up, but its
 * agent connects in the background: a test that asks leashd about it must
 * wait for this first.
 */
static __attribute__((unused)) void wait_connected(const struct daemon *d, const struct child *c,
                                                   const char *name)
{
    char want[96];
    snprintf(want, sizeof want, "{\"pid\":%d,\"name\":\"%s\"", (int)c->pid, name);
    wait_for_(d, want, "ps", "--json", (char *)NULL);
}

/* A TCP port on 127.0.0.1 that nothing listens on now (the kernel's pick,
   rather than one derived from the pid that another test run may hold). */
static __attribute__((unused)) int free_port(void)
{
    int                fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(0x7f000001);
    socklen_t len = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* GET path from leashd's metrics port on 127.0.0.1; the whole response,
   NUL-terminated, cut at len - 1 bytes. */
static inline void http_get(int port, const char *path, char *out, size_t len)
{
    int                fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(0x7f000001);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[512];
    int  n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\n\r\n", path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t  got = 0;
    ssize_t r;
    while (got < len - 1 && (r = read(fd, out + got, len - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    close(fd);
}

#endif
