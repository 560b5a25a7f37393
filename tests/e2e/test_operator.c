/*
 * test_operator.c: leashd as an operator runs it: sockets passed by socket
 * activation (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES), incidents as
 * structured journal entries when stderr is journald's stream (a
 * journald-style receiver on /run/systemd/journal/socket, in a mount
 * namespace of the test's own), plain lines anywhere else, and what
 * Prometheus scrapes.
 */
#include "harness.h"

#include <sched.h>
#include <sys/mount.h>

/* Starts leashd with env ("K=V"; "LISTEN_PID=" gets leashd's pid) and fds
   as fd 3, 4, ...; returns once it has logged that it runs. */
static void start_with(struct daemon *d, const char *const *env, const int *fds, int nfds)
{
    d->pid = fork();
    assert_true(d->pid >= 0);
    if (d->pid == 0) {
        int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 2);
        for (int i = 0; i < nfds; i++)
            dup2(fds[i], 100 + i);
        for (int i = 0; i < nfds; i++) {
            dup2(100 + i, 3 + i); /* dup2 clears close-on-exec */
            close(100 + i);
        }
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDNAMES");
        unsetenv("JOURNAL_STREAM");
        for (int i = 0; env && env[i]; i++) {
            char pid[64];
            if (!strcmp(env[i], "LISTEN_PID=")) {
                snprintf(pid, sizeof pid, "%d", (int)getpid());
                setenv("LISTEN_PID", pid, 1);
            } else {
                putenv((char *)env[i]);
            }
        }
        execl(LEASHD_BIN, "leashd", "--config", d->conf, "--agent-socket", d->agent,
              "--control-socket", d->control, "--state-dir", d->state, (char *)NULL);
        _exit(127);
    }
    track(d->pid);
    /* a passed socket answers before leashd runs: wait for its word instead */
    int64_t until = now_ms() + E2E_WAIT_MS;
    for (;;) {
        char  buf[8192] = "";
        FILE *f = fopen(d->log, "r");
        if (f) {
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            buf[n] = '\0';
            fclose(f);
        }
        if (strstr(buf, "leashd: leashd "))
            return;
        int st;
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            d->pid = 0;
            fail_msg("leashd exited at start: %s", buf);
        }
        if (now_ms() > until)
            fail_msg("leashd never said it runs: %s", buf);
        pause_ms(10);
    }
}

static void setup_dir(struct daemon *d, const char *conf)
{
    memset(d, 0, sizeof *d);
    snprintf(d->dir, sizeof d->dir, "/tmp/leash-e2e-XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    chmod(d->dir, 0755);
    daemon_paths(d);
    FILE *f = fopen(d->conf, "w");
    fputs(conf ? conf : "", f);
    fclose(f);
}

static int listen_at(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 16), 0);
    return fd;
}

static char *slurp(const char *path)
{
    static char buf[65536];
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
    }
    return buf;
}

static void socket_activation_serves_on_the_passed_sockets(void **state)
{
    (void)state;
    struct daemon d;
    setup_dir(&d, NULL);
    int agent = listen_at(d.agent), control = listen_at(d.control);
    /* no names, and not in the unit's order: leashd tells them by path */
    const char *env[] = {"LISTEN_FDS=2", "LISTEN_PID=", NULL};
    int         fds[] = {control, agent};
    start_with(&d, env, fds, 2);
    /* had leashd bound the paths itself it would have found them taken
       (the test listens there) and exited */
    assert_non_null(strstr(slurp(d.log), "(from systemd), control on"));
    char out[16384];
    assert_int_equal(ctl(&d, out, "status", "--json"), 0);
    assert_non_null(strstr(out, d.control));
    struct child c = leashed(&d, "park");
    wait_for(&d, "\"name\":\"park\"", "ps", "--json");

    /* stopping leaves systemd's sockets where they are, still listening */
    assert_int_equal(daemon_stop(&d), 0);
    struct stat st;
    assert_int_equal(lstat(d.control, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(lstat(d.agent, &st), 0);
    assert_true(connectable(d.control));

    /* named (FileDescriptorName=), the names decide */
    const char *named[] = {"LISTEN_FDS=2", "LISTEN_PID=", "LISTEN_FDNAMES=agent:control", NULL};
    int         fds2[] = {agent, control};
    start_with(&d, named, fds2, 2);
    assert_int_equal(ctl(&d, out, "status", "--json"), 0);
    wait_for(&d, "\"name\":\"park\"", "ps", "--json"); /* the agent came back */
    kill_child(&c);
    close(agent);
    close(control);
    daemon_cleanup(&d);
}

static void passed_sockets_for_another_pid_are_not_taken(void **state)
{
    (void)state;
    struct daemon d;
    setup_dir(&d, NULL);
    int         agent = listen_at(d.agent), control = listen_at(d.control);
    const char *env[] = {"LISTEN_FDS=2", "LISTEN_PID=1", NULL}; /* not leashd's */
    d.pid = fork();
    if (d.pid == 0) {
        int fd = open(d.log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 2);
        dup2(agent, 3);
        dup2(control, 4);
        putenv((char *)env[0]);
        putenv((char *)env[1]);
        execl(LEASHD_BIN, "leashd", "--config", d.conf, "--agent-socket", d.agent,
              "--control-socket", d.control, "--state-dir", d.state, (char *)NULL);
        _exit(127);
    }
    track(d.pid);
    int st;
    assert_int_equal(waitpid(d.pid, &st, 0), d.pid);
    d.pid = 0;
    /* it tried to bind the paths itself, found them live, and said so */
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    assert_non_null(strstr(slurp(d.log), "another leashd is listening there"));
    close(agent);
    close(control);
    daemon_cleanup(&d);
}

/* The next notify message that holds needle, within the e2e wait. */
static void wait_notify(int fd, const char *needle)
{
    char    msg[512] = "";
    int64_t until = now_ms() + 20000;
    while (now_ms() < until) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) != 1)
            continue;
        ssize_t n = recv(fd, msg, sizeof msg - 1, 0);
        if (n <= 0)
            continue;
        msg[n] = '\0';
        if (strstr(msg, needle))
            return;
    }
    fail_msg("systemd was never told '%s' (last: %s)", needle, msg);
}

static void systemd_is_told_ready_status_reload_and_stop(void **state)
{
    (void)state;
    struct daemon d;
    setup_dir(&d, NULL);
    static char env0[160];
    snprintf(env0, sizeof env0, "NOTIFY_SOCKET=%s/notify", d.dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    assert_true(strlen(d.dir) + strlen("/notify") < sizeof sa.sun_path);
    memcpy(sa.sun_path, env0 + strlen("NOTIFY_SOCKET="), strlen(d.dir) + strlen("/notify"));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    const char *env[] = {env0, NULL};
    start_with(&d, env, NULL, 0);
    wait_notify(fd, "READY=1");
    /* what `systemctl status` shows follows the processes */
    struct child c = leashed(&d, "park");
    wait_notify(fd, "STATUS=1 processes, 1 groups, ");
    kill_child(&c);
    wait_notify(fd, "STATUS=0 processes, 0 groups, 0 tasks, 0 stuck, 1 incidents");
    kill(d.pid, SIGHUP);
    wait_notify(fd, "RELOADING=1");
    wait_notify(fd, "READY=1");
    kill(d.pid, SIGTERM);
    wait_notify(fd, "STOPPING=1");
    int st;
    assert_int_equal(waitpid(d.pid, &st, 0), d.pid);
    d.pid = 0;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(fd);
    daemon_cleanup(&d);
}

/* ------------------------------------------------------------- journald */

struct entry {
    char text[8192]; /* KEY=value lines */
};

/* One datagram of journald's native protocol as KEY=value lines: a field is
   KEY=value\n, or KEY\n, a 64-bit little-endian length, the value, \n. */
static bool parse_entry(const char *buf, size_t n, struct entry *e)
{
    size_t off = 0, out = 0;
    e->text[0] = '\0';
    while (off < n) {
        const char *key = buf + off;
        const char *nl = memchr(key, '\n', n - off);
        const char *eq = memchr(key, '=', n - off);
        if (!nl)
            return false;
        const char *val;
        size_t      klen, vlen;
        if (eq && eq < nl) {
            klen = (size_t)(eq - key);
            val = eq + 1;
            vlen = (size_t)(nl - val);
            off = (size_t)(nl - buf) + 1;
        } else {
            klen = (size_t)(nl - key);
            size_t at = (size_t)(nl - buf) + 1;
            if (at + 8 > n)
                return false;
            uint64_t len = 0;
            for (int i = 7; i >= 0; i--)
                len = len << 8 | (unsigned char)buf[at + (size_t)i];
            if (len > n - at - 8)
                return false;
            val = buf + at + 8;
            vlen = (size_t)len;
            off = at + 8 + vlen + 1;
        }
        int w = snprintf(e->text + out, sizeof e->text - out, "%.*s=%.*s\n", (int)klen, key,
                         (int)vlen, val);
        if (w < 0 || (size_t)w >= sizeof e->text - out)
            return false;
        out += (size_t)w;
    }
    return true;
}

/* The value of KEY in e ("" when absent). */
static const char *field(const struct entry *e, const char *key)
{
    static char val[1024];
    char        pat[64];
    snprintf(pat, sizeof pat, "%s=", key);
    val[0] = '\0';
    for (const char *p = e->text; p && *p;) {
        if (!strncmp(p, pat, strlen(pat))) {
            p += strlen(pat);
            snprintf(val, sizeof val, "%.*s", (int)strcspn(p, "\n"), p);
            return val;
        }
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    return val;
}

/* The next entry from the receiver, within timeout_ms. */
static bool next_entry(int fd, struct entry *e, int timeout_ms)
{
    static char   buf[65536];
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1)
        return false;
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    return n > 0 && parse_entry(buf, (size_t)n, e);
}

/* A private /run with a journald-style receiver on its socket. false when
   this test may not make a mount namespace (not root). */
static bool fake_journald(int *fd)
{
    if (unshare(CLONE_NEWNS) != 0)
        return false;
    assert_int_equal(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
    assert_int_equal(mount("none", "/run", "tmpfs", 0, "mode=0755"), 0);
    assert_int_equal(mkdir("/run/systemd", 0755), 0);
    assert_int_equal(mkdir("/run/systemd/journal", 0755), 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "/run/systemd/journal/socket");
    *fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(*fd >= 0);
    assert_int_equal(bind(*fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return true;
}

static void under_journald_each_incident_is_a_structured_entry(void **state)
{
    (void)state;
    int jfd = -1;
    if (!fake_journald(&jfd)) {
        fprintf(stderr, "journald test needs root (a mount namespace): skipped\n");
        skip();
    }
    struct daemon d;
    setup_dir(&d, "stuck_after = \"300ms\";\n");
    /* stderr is the stream JOURNAL_STREAM names, as under systemd */
    int         log = open(d.log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    struct stat st;
    assert_int_equal(fstat(log, &st), 0);
    close(log);
    static char js[64];
    snprintf(js, sizeof js, "JOURNAL_STREAM=%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    const char *env[] = {js, NULL};
    start_with(&d, env, NULL, 0);
    while (!connectable(d.control))
        pause_ms(10);
    struct child c = leashed(&d, "stuck");
    struct entry e;
    bool         got = false;
    int64_t      until = now_ms() + E2E_WAIT_MS;
    while (!got && now_ms() < until)
        got = next_entry(jfd, &e, 1000) && !strcmp(field(&e, "LEASH_KIND"), "stuck_task");
    assert_true(got);
    char out[65536];
    assert_int_equal(ctl(&d, out, "incidents", "--json"), 0);
    char want[128];
    snprintf(want, sizeof want, "{\"id\":%s,", field(&e, "LEASH_INCIDENT_ID"));
    const char *inc = strstr(out, want);
    assert_non_null(inc);
    snprintf(want, sizeof want, "\"group\":%s,", field(&e, "LEASH_GROUP"));
    assert_non_null(strstr(inc, want));
    assert_string_not_equal(field(&e, "LEASH_GROUP"), "0");
    assert_string_equal(field(&e, "LEASH_PID"), pidstr(c.pid));
    assert_string_equal(field(&e, "LEASH_PROCESS"), "stuck");
    assert_string_equal(field(&e, "LEASH_ACTION"), "report");
    assert_string_equal(field(&e, "LEASH_GROUP_NAME"), "stuck");
    assert_string_equal(field(&e, "PRIORITY"), "4");
    assert_string_equal(field(&e, "SYSLOG_IDENTIFIER"), "leashd");
    assert_non_null(strstr(field(&e, "MESSAGE"), "stuck_task: process "));

    /* the next incident is the next entry, with its own id */
    char first_id[32];
    snprintf(first_id, sizeof first_id, "%s", field(&e, "LEASH_INCIDENT_ID"));
    kill_child(&c);
    got = false;
    until = now_ms() + E2E_WAIT_MS;
    while (!got && now_ms() < until)
        got = next_entry(jfd, &e, 1000) && !strcmp(field(&e, "LEASH_KIND"), "agent_lost");
    assert_true(got);
    assert_string_not_equal(field(&e, "LEASH_INCIDENT_ID"), first_id);
    assert_string_equal(field(&e, "LEASH_ACTION"), "report");

    /* stderr: prefixed lines for journald to read, the incidents not twice */
    assert_int_equal(daemon_stop(&d), 0);
    const char *text = slurp(d.log);
    assert_true(strncmp(text, "<6>leashd: ", 11) == 0);
    assert_null(strstr(text, "incident "));
    close(jfd);
    daemon_cleanup(&d);
}

static void elsewhere_lines_are_plain_and_say_the_incident(void **state)
{
    (void)state;
    struct daemon d;
    setup_dir(&d, "stuck_after = \"300ms\";\n");
    /* inherited from some parent, naming another stream: no proof */
    const char *env[] = {"JOURNAL_STREAM=1:1", NULL};
    start_with(&d, env, NULL, 0);
    while (!connectable(d.control))
        pause_ms(10);
    struct child c = leashed(&d, "stuck");
    wait_for(&d, "\"kind\":\"stuck_task\"", "incidents", "--json");
    kill_child(&c);
    assert_int_equal(daemon_stop(&d), 0);
    const char *text = slurp(d.log);
    assert_true(strncmp(text, "leashd: leashd ", 15) == 0);
    assert_null(strstr(text, "<6>"));
    assert_null(strstr(text, "<4>"));
    assert_non_null(strstr(text, "\nleashd: incident 1: stuck_task: process "));
    daemon_cleanup(&d);
}

/* ----------------------------------------------------------- Prometheus */

static void metrics_carry_build_info_and_ignore_the_query(void **state)
{
    (void)state;
    struct daemon d;
    int           port = free_port();
    char          conf[128];
    snprintf(conf, sizeof conf, "metrics_listen = \"127.0.0.1:%d\";\n", port);
    daemon_new(&d, conf);
    char out[32768], version[64];
    assert_int_equal(ctl(&d, out, "--version"), 0);
    /* "leashctl 0.1.0\n": leashd and leashctl are built together */
    snprintf(version, sizeof version, "leashd_build_info{version=\"%.*s\"} 1\n",
             (int)strcspn(out + 9, "\n"), out + 9);
    http_get(port, "/metrics", out, sizeof out);
    assert_non_null(strstr(out, "200 OK"));
    assert_non_null(strstr(out, "# TYPE leashd_build_info gauge\n"));
    assert_non_null(strstr(out, version));
    http_get(port, "/metrics?x=1&name[]=leashd_tasks", out, sizeof out);
    assert_non_null(strstr(out, "200 OK"));
    assert_non_null(strstr(out, "leashd_processes 0\n"));
    assert_non_null(strstr(out, version));
    http_get(port, "/metrics/x", out, sizeof out);
    assert_non_null(strstr(out, "404"));
    http_get(port, "/?/metrics", out, sizeof out);
    assert_non_null(strstr(out, "404"));
    daemon_cleanup(&d);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(socket_activation_serves_on_the_passed_sockets, teardown),
        cmocka_unit_test_teardown(passed_sockets_for_another_pid_are_not_taken, teardown),
        cmocka_unit_test_teardown(systemd_is_told_ready_status_reload_and_stop, teardown),
        cmocka_unit_test_teardown(elsewhere_lines_are_plain_and_say_the_incident, teardown),
        cmocka_unit_test_teardown(metrics_carry_build_info_and_ignore_the_query, teardown),
        /* last: it leaves this process in a mount namespace of its own */
        cmocka_unit_test_teardown(under_journald_each_incident_is_a_structured_entry, teardown),
    };
    return cmocka_run_group_tests_name("operator", tests, NULL, NULL);
}
