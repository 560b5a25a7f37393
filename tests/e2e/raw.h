/*
 * raw.h: peers that speak leashd's protocols over raw sockets, for the e2e
 * suites that play a hostile or broken peer, and what they watch leashd by
 * (its log, RSS and CPU time). Include after harness.h.
 */
#ifndef LEASH_E2E_RAW_H
#define LEASH_E2E_RAW_H

#include "frame.h"
#include "leash/agent.pb-c.h"
#include "leash/control.pb-c.h"

#include <sys/resource.h>

static __attribute__((unused)) int raw_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -1;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static __attribute__((unused)) int write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static __attribute__((unused)) int send_msg(int fd, const ProtobufCMessage *m)
{
    size_t   n;
    uint8_t *buf = leash_frame_pack(m, &n);
    int      rc = buf ? write_all(fd, buf, n) : -1;
    free(buf);
    return rc;
}

static __attribute__((unused)) int send_hello(int fd, uint32_t version, const char *name)
{
    Leash__Agent__Hello h = LEASH__AGENT__HELLO__INIT;
    h.version = version;
    h.name = (char *)name;
    Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_HELLO;
    m.hello = &h;
    return send_msg(fd, &m.base);
}

/* n events of one kind in one Events frame. */
static __attribute__((unused)) int send_events(int fd, Leash__Agent__Event *proto, size_t n)
{
    Leash__Agent__Event **ev = calloc(n, sizeof *ev);
    for (size_t i = 0; i < n; i++)
        ev[i] = proto;
    Leash__Agent__Events e = LEASH__AGENT__EVENTS__INIT;
    e.n_events = n;
    e.events = ev;
    Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_EVENTS;
    m.events = &e;
    int rc = send_msg(fd, &m.base);
    free(ev);
    return rc;
}

/* Reads one frame, with a generous timeout; NULL on EOF or timeout. */
static __attribute__((unused)) uint8_t *recv_frame(int fd, size_t *len, int timeout_ms)
{
    uint8_t  hdr[LEASH_FRAME_HEADER];
    size_t   got = 0, want = sizeof hdr;
    uint8_t *buf = NULL;
    int64_t  until = now_ms() + timeout_ms;
    for (int phase = 0; phase < 2; phase++) {
        uint8_t *dst = phase ? buf : hdr;
        while (got < want) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            int64_t       left = until - now_ms();
            if (left <= 0 || poll(&p, 1, (int)left) != 1)
                goto bad;
            ssize_t r = read(fd, dst + got, want - got);
            if (r <= 0)
                goto bad;
            got += (size_t)r;
        }
        if (phase == 0) {
            want = leash_frame_get_len(hdr);
            got = 0;
            buf = malloc(want ? want : 1);
        }
    }
    *len = want;
    return buf;
bad:
    free(buf);
    return NULL;
}

/* True once the other end has closed fd (read gives EOF or an error),
   within a generous timeout. */
static __attribute__((unused)) bool closed_within(int fd, int timeout_ms)
{
    int64_t until = now_ms() + timeout_ms;
    char    buf[4096];
    while (now_ms() < until) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) == 1) {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                return true;
        }
    }
    return false;
}

static __attribute__((unused)) long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long  kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

/* utime + stime of pid, in clock ticks. */
static __attribute__((unused)) long cpu_ticks(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *s = strrchr(buf, ')');
    long  ut = 0, st = 0;
    /* after "pid (comm)": state is field 3; utime and stime are 14 and 15 */
    if (!s || sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &ut, &st) != 2)
        return -1;
    return ut + st;
}

static __attribute__((unused)) size_t log_count(const struct daemon *d, const char *needle)
{
    FILE *f = fopen(d->log, "r");
    if (!f)
        return 0;
    char   line[4096];
    size_t n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

static __attribute__((unused)) void wait_log(const struct daemon *d, const char *needle)
{
    int64_t until = now_ms() + E2E_WAIT_MS;
    while (log_count(d, needle) == 0) {
        if (now_ms() > until)
            fail_msg("never saw '%s' in %s", needle, d->log);
        pause_ms(20);
    }
}

/* A copy of leashctl that another uid can run. */
static __attribute__((unused)) void ctl_copy(const struct daemon *d)
{
    static __attribute__((unused)) char copy[160];
    char                                cmd[400];
    snprintf(copy, sizeof copy, "%s/leashctl", d->dir);
    snprintf(cmd, sizeof cmd, "cp %s %s && chmod 755 %s", LEASHCTL_BIN, copy, copy);
    assert_int_equal(system(cmd), 0);
    ctl_bin = copy;
}

/* Forks a child that drops to uid and runs fn(arg, out), where out is a
   pipe back to the test; returns that pipe's read end. */
static __attribute__((unused)) int as_uid(uid_t uid, void (*fn)(void *arg, int out), void *arg,
                                          pid_t *pid)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    *pid = fork();
    assert_true(*pid >= 0);
    if (*pid == 0) {
        close(p[0]);
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (setgid(uid) != 0 || setuid(uid) != 0)
            _exit(126);
        fn(arg, p[1]);
        _exit(0);
    }
    track(*pid);
    close(p[1]);
    return p[0];
}

/* A fake agent that has said Hello; reports flood incidents. It sends no
   heartbeats: a test that keeps it long sets heartbeat_timeout long. */
static __attribute__((unused)) int agent_hello(const struct daemon *d, const char *name)
{
    int fd = raw_connect(d->agent);
    assert_true(fd >= 0);
    assert_int_equal(send_hello(fd, LEASH__AGENT__VERSION__VERSION_CURRENT, name), 0);
    size_t   n;
    uint8_t *reply = recv_frame(fd, &n, E2E_WAIT_MS);
    assert_non_null(reply);
    free(reply);
    return fd;
}

static __attribute__((unused)) int report(int fd, const char *detail, size_t n)
{
    Leash__Agent__Event e = LEASH__AGENT__EVENT__INIT;
    e.kind = LEASH__AGENT__EVENT__KIND__REPORT;
    e.report_kind = (char *)"lock_cycle";
    e.detail = (char *)detail;
    return send_events(fd, &e, n);
}

#endif
