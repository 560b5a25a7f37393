/*
 * test_leashctl.c: leashctl as an operator uses it: GNU options, help and
 * version, processes named by pid or name, dump --all, headers off, the last
 * N incidents, columns that stay aligned with multi-byte names, and top in a
 * real terminal (tmux).
 */
#include "harness.h"

static size_t count(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + strlen(needle), needle))
        n++;
    return n;
}

/* Waits until `ps --no-headers` lists n processes. */
static void wait_for_processes(const struct daemon *d, size_t n)
{
    char    out[65536];
    int64_t until = now_ms() + E2E_WAIT_MS;
    while (ctl(d, out, "ps", "--no-headers"), count(out, "\n") != n) {
        if (now_ms() > until)
            fail_msg("never saw %zu processes: %s", n, out);
        pause_ms(20);
    }
}

static size_t varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

/* Sends leashd Request{version 1, kill{pid, name}} as protobuf by hand, and
   reads the whole answer into out. true when leashd answered. */
static bool kill_by_pid_and_name(const struct daemon *d, pid_t pid, const char *name, char *out,
                                 size_t len)
{
    uint8_t kill_msg[128], req[160], frame[168];
    size_t  k = 0, n = 0;
    kill_msg[k++] = 0x08; /* pid = 1, varint */
    k += varint(kill_msg + k, (uint64_t)pid);
    kill_msg[k++] = 0x12; /* name = 2, bytes */
    kill_msg[k++] = (uint8_t)strlen(name);
    memcpy(kill_msg + k, name, strlen(name));
    k += strlen(name);
    req[n++] = 0x08; /* version = 1 */
    req[n++] = 0x01;
    req[n++] = 0x42; /* kill = 8, bytes */
    req[n++] = (uint8_t)k;
    memcpy(req + n, kill_msg, k);
    n += k;
    frame[0] = frame[1] = frame[2] = 0; /* 4-byte big-endian length */
    frame[3] = (uint8_t)n;
    memcpy(frame + 4, req, n);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, d->control, strlen(d->control));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        write(fd, frame, n + 4) != (ssize_t)(n + 4)) {
        close(fd);
        return false;
    }
    size_t  got = 0;
    ssize_t r;
    while (got + 1 < len && (r = read(fd, out + got, len - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    /* the message is a protobuf string: printable between the framing bytes */
    for (size_t i = 0; i < got; i++)
        if ((unsigned char)out[i] < 0x20)
            out[i] = ' ';
    out[got] = '\0';
    return got > 0;
}

static void version_and_every_help_answer_zero(void **state)
{
    (void)state;
    struct daemon d = {0}; /* none runs: none is needed */
    snprintf(d.control, sizeof d.control, "/tmp/leash-none-%d/control.sock", (int)getpid());
    char out[16384];
    assert_int_equal(ctl(&d, out, "--version"), 0);
    assert_true(strncmp(out, "leashctl ", 9) == 0);
    assert_int_equal(ctl(&d, out, "-V"), 0);
    assert_int_equal(ctl(&d, out, "--help"), 0);
    assert_int_equal(ctl(&d, out, "help"), 0);
    static const char *const cmds[] = {"status",    "ps",     "top",  "tasks",  "dump",
                                       "incidents", "cancel", "kill", "reload", "help"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "  %s ", cmds[i]);
        assert_non_null(strstr(out, want)); /* `help` lists it */
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "usage: leashctl %s", cmds[i]);
        assert_int_equal(ctl(&d, out, cmds[i], "--help"), 0);
        assert_true(strncmp(out, want, strlen(want)) == 0);
        assert_int_equal(ctl(&d, out, "help", cmds[i]), 0);
        assert_true(strncmp(out, want, strlen(want)) == 0);
        assert_int_equal(ctl(&d, out, "-h", cmds[i]), 0);
        assert_true(strncmp(out, want, strlen(want)) == 0);
    }
    assert_int_equal(ctl(&d, out, "dump", "--help"), 0);
    assert_non_null(strstr(out, "--all"));
    assert_non_null(strstr(out, "pprof"));

    /* bad usage is 2, said before any leashd is asked */
    assert_int_equal(ctl(&d, out, "help", "frobnicate"), 2);
    assert_non_null(strstr(out, "unknown command 'frobnicate'"));
    assert_int_equal(ctl(&d, out, "ps", "--bogus"), 2);
    assert_non_null(strstr(out, "unknown option --bogus"));
    assert_int_equal(ctl(&d, out, "status", "-n", "3"), 2);
    assert_non_null(strstr(out, "status does not take -n"));
    assert_int_equal(ctl(&d, out, "dump", "--all", "12"), 2);
    assert_int_equal(ctl(&d, out, "dump", "--all", "-f", "pprof"), 2);
    assert_int_equal(ctl(&d, out, "incidents", "-n", "x"), 2);
    assert_int_equal(ctl(&d, out, "--format=yaml", "ps"), 2);
    assert_int_equal(ctl(&d, out, "tasks", "12", "--format=folded"), 2);
    assert_int_equal(ctl(&d, out, "ps", "--json", "--format=text"), 2);
    assert_int_equal(ctl(&d, out, "--socket"), 2);
    /* and a good line still needs a leashd: 1 */
    assert_int_equal(ctl(&d, out, "ps", "-q", "--format=json"), 1);
    assert_non_null(strstr(out, "no leashd at"));
    assert_int_equal(ctl(&d, out, "top"), 1); /* says so, before any screen */
    assert_non_null(strstr(out, "no leashd at"));
    assert_null(strstr(out, "\033["));
}

static void processes_are_named_by_pid_or_by_name(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    struct child a1 = leashed_named(&d, "park", "alpha");
    struct child a2 = leashed_named(&d, "park", "alpha");
    struct child b = leashed_named(&d, "park", "beta");
    wait_for_processes(&d, 3);
    /* a live dump shows what each process does now: wait until every task
       of the three is parked (four each, and the main thread) */
    wait_for_n(&d, " 5 tasks, 5 blocked", 3, "dump", "--all");
    char out[262144], pid[16];

    assert_int_equal(ctl(&d, out, "ps", "alpha", "--json"), 0);
    assert_int_equal(count(out, "\"name\":\"alpha\""), 2);
    assert_null(strstr(out, "beta"));
    snprintf(pid, sizeof pid, "%d", (int)b.pid);
    assert_int_equal(ctl(&d, out, "ps", "-q", "beta"), 0);
    assert_int_equal(count(out, "\n"), 1); /* no header line */
    assert_non_null(strstr(out, pid));
    assert_int_equal(ctl(&d, out, "ps", pid, "--no-headers"), 0);
    assert_non_null(strstr(out, "beta"));
    /* a name or pid not there: the why, no table; [] for a script */
    assert_int_equal(ctl(&d, out, "ps", "gamma"), 1);
    assert_string_equal(out, "leashctl: no leashed process named 'gamma'\n");
    assert_int_equal(ctl(&d, out, "ps", "gamma", "--json"), 1);
    assert_non_null(strstr(out, "[]\n"));
    /* a number no process can have is not taken for a name, and is bad
       usage (exit 2), as no state of the machine would make it right */
    assert_int_equal(ctl(&d, out, "ps", "0"), 2);
    assert_non_null(strstr(out, "'0' is not a pid"));
    assert_int_equal(ctl(&d, out, "kill", "0"), 2);
    assert_non_null(strstr(out, "'0' is not a pid"));
    assert_int_equal(ctl(&d, out, "cancel", "--", "-1", "7"), 2);
    assert_non_null(strstr(out, "'-1' is not a pid"));
    /* rows in pid order, whatever order leashd keeps them in */
    assert_int_equal(ctl(&d, out, "ps", "--json"), 0);
    long last = 0;
    int  rows = 0;
    for (const char *q = out; (q = strstr(q, "{\"pid\":")) != NULL; q++, rows++) {
        long v = strtol(q + 7, NULL, 10);
        assert_true(v > last);
        last = v;
    }
    assert_int_equal(rows, 3);

    /* dump by name: one JSON object per line, one line per process */
    assert_int_equal(ctl(&d, out, "dump", "beta", "-f", "json"), 0);
    assert_int_equal(count(out, "\n"), 1);
    assert_non_null(strstr(out, "\"name\":\"beta\""));
    assert_non_null(strstr(out, "\"op\":\"chan_recv\""));
    assert_int_equal(ctl(&d, out, "dump", "alpha", "--format=json"), 0);
    assert_int_equal(count(out, "\n"), 2);
    assert_int_equal(count(out, "{\"pid\":"), 2);
    assert_int_equal(ctl(&d, out, "dump", "--all", "--json"), 0);
    assert_int_equal(count(out, "\n"), 3);
    assert_int_equal(count(out, "\"name\":\"alpha\",\"groups\""), 2);
    assert_int_equal(count(out, "\"name\":\"beta\",\"groups\""), 1);
    assert_int_equal(ctl(&d, out, "dump", "-a"), 0);
    assert_int_equal(count(out, " 5 tasks, "), 3);
    /* folded stacks of several processes say whose each one is, in the root
       frame (NAME-PID); one process's keep its name alone */
    char root[48];
    assert_int_equal(ctl(&d, out, "dump", "alpha", "--format=folded"), 0);
    assert_null(strstr(out, "\nalpha;"));
    snprintf(root, sizeof root, "alpha-%d;group parked;recv_forever;", (int)a1.pid);
    assert_non_null(strstr(out, root));
    snprintf(root, sizeof root, "alpha-%d;group parked;recv_forever;", (int)a2.pid);
    assert_non_null(strstr(out, root));
    assert_int_equal(ctl(&d, out, "dump", "--all", "--format=folded"), 0);
    snprintf(root, sizeof root, "beta-%d;group parked;", (int)b.pid);
    assert_non_null(strstr(out, root));
    assert_int_equal(ctl(&d, out, "dump", "beta", "--format=folded"), 0);
    assert_non_null(strstr(out, "beta;group parked;recv_forever;"));
    assert_null(strstr(out, "beta-"));
    assert_int_equal(ctl(&d, out, "tasks", "beta", "--json"), 0);
    assert_non_null(strstr(out, "\"name\":\"beta\""));
    /* tasks by a shared name: one object per line too, as documented */
    assert_int_equal(ctl(&d, out, "tasks", "alpha", "--json"), 0);
    assert_int_equal(count(out, "\n"), 2);
    assert_int_equal(count(out, "\"name\":\"alpha\",\"groups\""), 2);
    assert_int_equal(ctl(&d, out, "dump", "gamma"), 1);
    assert_non_null(strstr(out, "no leashed process named 'gamma'"));
    /* a profile, or a change, needs exactly one process */
    assert_int_equal(ctl(&d, out, "dump", "alpha", "-f", "pprof"), 1);
    assert_int_equal(ctl(&d, out, "kill", "alpha"), 1);
    assert_non_null(strstr(out, "'alpha' names 2 processes"));

    /* a kill by name whose pid now belongs to another process does nothing:
       what leashctl sends, with a name that is not the pid's */
    assert_true(kill_by_pid_and_name(&d, b.pid, "alpha", out, sizeof out));
    assert_non_null(strstr(out, "is now \"beta\", not \"alpha\": nothing done"));
    assert_int_equal(waitpid(b.pid, NULL, WNOHANG), 0);
    assert_int_equal(ctl(&d, out, "ps", "-q", "beta"), 0);

    /* kill by name reaches that process and no other */
    assert_int_equal(ctl(&d, out, "kill", "beta"), 0);
    int st = reap(&b, E2E_WAIT_MS);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(waitpid(a1.pid, NULL, WNOHANG), 0);
    assert_int_equal(waitpid(a2.pid, NULL, WNOHANG), 0);
    kill_child(&a1);
    kill_child(&a2);
    daemon_cleanup(&d);
}

/* Digits alone are a pid, never a name, leading zeros or not; a sign makes
   a number no pid; anything else is a name, spaces and all. ps shows what
   tasks, dump and kill act on. */
static void a_number_is_a_pid_and_never_a_name(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    /* no process has pid 999999999: pid_max is at most 2^22 */
    struct child n = leashed_named(&d, "park", "999999999");
    struct child s = leashed_named(&d, "park", " 7");
    wait_connected(&d, &n, "999999999");
    wait_connected(&d, &s, " 7");
    static char out[65536];
    assert_int_equal(ctl(&d, out, "ps", "999999999"), 1);
    assert_string_equal(out, "leashctl: no leashed process with pid 999999999\n");
    assert_int_equal(ctl(&d, out, "ps", "999999999", "--json"), 1);
    assert_non_null(strstr(out, "[]\n"));
    assert_int_equal(ctl(&d, out, "tasks", "999999999"), 1);
    assert_string_equal(out, "leashctl: no leashed process 999999999\n");

    char arg[32], want[128];
    snprintf(arg, sizeof arg, "00%d", (int)n.pid);
    assert_int_equal(ctl(&d, out, "ps", "-q", arg), 0);
    assert_int_equal(count(out, "\n"), 1);
    assert_non_null(strstr(out, "999999999"));
    assert_int_equal(ctl(&d, out, "tasks", arg, "--json"), 0);
    assert_non_null(strstr(out, "\"name\":\"999999999\""));

    snprintf(arg, sizeof arg, " %d", (int)n.pid);
    snprintf(want, sizeof want, "leashctl: no leashed process named ' %d'\n", (int)n.pid);
    assert_int_equal(ctl(&d, out, "ps", arg), 1);
    assert_string_equal(out, want);
    assert_int_equal(ctl(&d, out, "tasks", arg), 1);
    assert_string_equal(out, want);
    assert_int_equal(ctl(&d, out, "ps", "-q", " 7"), 0);
    assert_int_equal(count(out, "\n"), 1);
    assert_non_null(strstr(out, pidstr(s.pid)));
    assert_int_equal(ctl(&d, out, "dump", " 7", "--json"), 0);
    assert_non_null(strstr(out, "\"name\":\" 7\""));

    snprintf(arg, sizeof arg, "+%d", (int)n.pid);
    snprintf(want, sizeof want, "leashctl: '+%d' is not a pid", (int)n.pid);
    const char *cmds[] = {"ps", "tasks", "dump", "kill"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        assert_int_equal(ctl(&d, out, cmds[i], arg), 2);
        assert_non_null(strstr(out, want));
    }
    assert_int_equal(ctl(&d, out, "cancel", arg, "1"), 2);
    assert_non_null(strstr(out, want));
    assert_int_equal(waitpid(n.pid, NULL, WNOHANG), 0);
    kill_child(&n);
    kill_child(&s);
    daemon_cleanup(&d);
}

/* A name no process has fails, said, with everything leashctl asked leashd
   for freed: in the ASan build, LeakSanitizer would add its report to
   stderr. */
static void a_name_not_there_fails_and_leaks_nothing(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    struct child a = leashed_named(&d, "park", "here");
    wait_connected(&d, &a, "here");
    static char out[65536];
    const char *cmds[][3] = {{"tasks", "nosuch", NULL},
                             {"dump", "nosuch", NULL},
                             {"kill", "nosuch", NULL},
                             {"cancel", "nosuch", "1"}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        int rc = ctl(&d, out, cmds[i][0], cmds[i][1], cmds[i][2]);
        if (rc != 1 || strcmp(out, "leashctl: no leashed process named 'nosuch'\n"))
            fail_msg("leashctl %s nosuch exited %d and said: %s", cmds[i][0], rc, out);
    }
    kill_child(&a);
    daemon_cleanup(&d);
}

/* Terminal columns of s, for the characters these tests use: CJK ideographs
   are two wide, every other character one. */
static int columns(const char *s, size_t n)
{
    int w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c & 0xc0) == 0x80)
            continue;                        /* continuation byte */
        w += c >= 0xe3 && c <= 0xe9 ? 2 : 1; /* U+3000..U+9FFF lead bytes */
    }
    return w;
}

static void columns_stay_aligned_with_multibyte_names(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    struct child a = leashed_named(&d, "park", "ééé-ü");
    struct child b = leashed_named(&d, "park", "日本-x");
    struct child c = leashed_named(&d, "park", "plain");
    wait_for_processes(&d, 3);
    char out[65536];
    assert_int_equal(ctl(&d, out, "ps"), 0);
    /* each line is as wide as the header, and UID ends at the same column */
    char *save, *line = strtok_r(out, "\n", &save);
    assert_non_null(line);
    int         width = columns(line, strlen(line));
    const char *uid = strstr(line, "UID");
    assert_non_null(uid);
    int    uid_end = columns(line, (size_t)(uid - line)) + 3;
    size_t rows = 0, bytes_differ = 0;
    size_t header_bytes = strlen(line);
    while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
        rows++;
        assert_int_equal(columns(line, strlen(line)), width);
        bytes_differ += strlen(line) != header_bytes;
        /* the uid (0 or the test's) ends where the header's UID does */
        char *name_end = strstr(line, "ééé-ü");
        if (!name_end)
            name_end = strstr(line, "日本-x");
        if (!name_end)
            name_end = strstr(line, "plain");
        assert_non_null(name_end);
        char *p = name_end;
        while (*p && *p != ' ')
            p++; /* past the name */
        while (*p == ' ')
            p++;
        while (*p >= '0' && *p <= '9')
            p++; /* past the uid */
        assert_int_equal(columns(line, (size_t)(p - line)), uid_end);
    }
    assert_int_equal(rows, 3);
    assert_true(bytes_differ >= 2); /* the names really are multi-byte */
    kill_child(&a);
    kill_child(&b);
    kill_child(&c);
    daemon_cleanup(&d);
}

static void incidents_last_n_and_every_format_spelling(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, "stuck_after = \"300ms\";\n");
    struct child s1 = leashed_named(&d, "stuck", "s1");
    wait_for(&d, "\"process\":\"s1\"", "incidents", "--json");
    struct child s2 = leashed_named(&d, "stuck", "s2");
    wait_for(&d, "\"process\":\"s2\"", "incidents", "--json");
    kill_child(&s1);
    kill_child(&s2);
    /* their ends are the last incidents: the list stays as it is then */
    wait_for(&d, "\"process\":\"s1\",\"kind\":\"agent_lost\"", "incidents", "--json");
    wait_for(&d, "\"process\":\"s2\",\"kind\":\"agent_lost\"", "incidents", "--json");
    char all[65536], out[65536];
    assert_int_equal(ctl(&d, all, "incidents", "--json"), 0);
    /* one "time" per incident ("id" is in the task trees of agent_lost too) */
    size_t n = count(all, "\"time\":");
    assert_true(n >= 2);
    const char *lastp = NULL;
    for (const char *p = strstr(all, "\"time\":"); p; p = strstr(p + 1, "\"time\":"))
        lastp = p;
    while (lastp > all && strncmp(lastp, "{\"id\":", 6) != 0)
        lastp--;
    char last_id[64];
    snprintf(last_id, sizeof last_id, "%.*s,\"time\"", (int)strcspn(lastp, ","), lastp);

    assert_int_equal(ctl(&d, out, "incidents", "-n", "1", "--json"), 0);
    assert_int_equal(count(out, "\"time\":"), 1);
    assert_non_null(strstr(out, last_id));
    assert_int_equal(ctl(&d, out, "incidents", "--last=2", "--json"), 0);
    assert_int_equal(count(out, "\"time\":"), 2);
    assert_int_equal(ctl(&d, out, "incidents", "-n", "0", "--json"), 0);
    assert_string_equal(out, "[]\n");
    assert_int_equal(ctl(&d, out, "incidents", "-n", "100000", "--json"), 0);
    assert_string_equal(out, all);

    /* --json, --format=json, --format json, -f json, -fjson: the same */
    const char *spellings[][2] = {
        {"--format=json", NULL}, {"--format", "json"}, {"-f", "json"}, {"-fjson", NULL}};
    for (size_t i = 0; i < 4; i++) {
        if (spellings[i][1])
            assert_int_equal(ctl(&d, out, "incidents", spellings[i][0], spellings[i][1]), 0);
        else
            assert_int_equal(ctl(&d, out, "incidents", spellings[i][0]), 0);
        assert_string_equal(out, all);
    }
    /* options before the command, too */
    assert_int_equal(ctl(&d, out, "--json", "incidents"), 0);
    assert_string_equal(out, all);

    assert_int_equal(ctl(&d, out, "incidents"), 0);
    assert_non_null(strstr(out, "ID  "));
    assert_int_equal(count(out, "\n"), n + 1);
    assert_int_equal(ctl(&d, out, "incidents", "-q"), 0);
    assert_null(strstr(out, "ID  "));
    assert_int_equal(count(out, "\n"), n);
    assert_int_equal(ctl(&d, out, "incidents", "-q", "-n", "1"), 0);
    assert_int_equal(count(out, "\n"), 1);
    daemon_cleanup(&d);
}

static void status_json_has_the_documented_keys(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    char out[16384];
    assert_int_equal(ctl(&d, out, "status", "--json"), 0);
    static const char *const keys[] = {"version", "pid",          "uptime_s",       "processes",
                                       "groups",  "tasks",        "stuck",          "incidents",
                                       "events",  "agent_socket", "control_socket", "state_dir"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "\"%s\":", keys[i]);
        assert_non_null(strstr(out, want));
    }
    char pid[32];
    snprintf(pid, sizeof pid, "\"pid\":%d,", (int)d.pid);
    assert_non_null(strstr(out, pid));
    assert_non_null(strstr(out, d.control));
    daemon_cleanup(&d);
}

/* ------------------------------------------------------------------ top */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char    cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* What the pane shows now. */
static void capture(const char *tmux, char *out, size_t len)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "tmux -S %s capture-pane -p -t top 2>/dev/null", tmux);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, len - 1, f);
    out[n] = '\0';
    pclose(f);
}

static void wait_pane(const char *tmux, const char *needle)
{
    char    out[16384];
    int64_t until = now_ms() + E2E_WAIT_MS;
    for (;;) {
        capture(tmux, out, sizeof out);
        if (strstr(out, needle))
            return;
        if (now_ms() > until)
            fail_msg("top never showed '%s':\n%s", needle, out);
        pause_ms(50);
    }
}

/* Waits until top, started in a tmux pane, exits; its exit status. */
static int top_status(const char *tmux, const char *rcfile)
{
    int64_t until = now_ms() + E2E_WAIT_MS;
    while (access(rcfile, F_OK) != 0) {
        if (now_ms() > until) {
            char out[16384];
            capture(tmux, out, sizeof out);
            sh("tmux -S %s kill-server 2>/dev/null", tmux);
            fail_msg("top did not quit on q:\n%s", out);
        }
        pause_ms(20);
    }
    FILE *f = fopen(rcfile, "r");
    int   rc = -1;
    assert_int_equal(fscanf(f, "%d", &rc), 1);
    fclose(f);
    return rc;
}

static void top_refreshes_and_quits_on_q(void **state)
{
    (void)state;
    if (sh("tmux -V >/dev/null 2>&1"))
        fail_msg("tmux is missing: scripts/deps installs it");
    struct daemon d;
    daemon_new(&d, NULL);
    struct child a = leashed_named(&d, "park", "first");
    char         tmux[160], rcfile[160];
    snprintf(tmux, sizeof tmux, "%s/tmux.sock", d.dir);
    snprintf(rcfile, sizeof rcfile, "%s/top.rc", d.dir);
    assert_int_equal(sh("tmux -S %s new-session -d -s top -x 100 -y 30 "
                        "'%s --socket %s top; echo $? >%s.tmp; mv %s.tmp %s'",
                        tmux, LEASHCTL_BIN, d.control, rcfile, rcfile, rcfile),
                     0);
    wait_pane(tmux, "first");
    wait_pane(tmux, "q quits");
    /* it is live: a process that connects later shows up without a key */
    struct child b = leashed_named(&d, "park", "second");
    wait_pane(tmux, "second");
    assert_int_equal(sh("tmux -S %s send-keys -t top q", tmux), 0);
    assert_int_equal(top_status(tmux, rcfile), 0);
    sh("tmux -S %s kill-server 2>/dev/null", tmux);
    kill_child(&a);
    kill_child(&b);
    daemon_cleanup(&d);
}

/* On a terminal too small for its processes, top shows what fits and
   frees every refresh whole: in the ASan build, LeakSanitizer would make
   its exit status 1. */
static void top_on_a_small_terminal_frees_each_refresh(void **state)
{
    (void)state;
    if (sh("tmux -V >/dev/null 2>&1"))
        fail_msg("tmux is missing: scripts/deps installs it");
    struct daemon d;
    daemon_new(&d, NULL);
    struct child a = leashed_named(&d, "park", "small1");
    struct child b = leashed_named(&d, "park", "small2");
    wait_connected(&d, &a, "small1");
    wait_connected(&d, &b, "small2");
    char tmux[160], rcfile[160];
    snprintf(tmux, sizeof tmux, "%s/tmux.sock", d.dir);
    snprintf(rcfile, sizeof rcfile, "%s/top.rc", d.dir);
    assert_int_equal(sh("tmux -S %s new-session -d -s top -x 100 -y 3 "
                        "'%s --socket %s top; echo $? >%s.tmp; mv %s.tmp %s'",
                        tmux, LEASHCTL_BIN, d.control, rcfile, rcfile, rcfile),
                     0);
    wait_pane(tmux, "PID");
    /* the status line changes each second: a refresh has replaced the view */
    char first[16384], now[16384];
    capture(tmux, first, sizeof first);
    int64_t until = now_ms() + E2E_WAIT_MS;
    do {
        if (now_ms() > until)
            fail_msg("top never refreshed:\n%s", first);
        pause_ms(50);
        capture(tmux, now, sizeof now);
    } while (!strcmp(first, now) || !strstr(now, "PID"));
    assert_null(strstr(now, "small"));
    assert_int_equal(sh("tmux -S %s send-keys -t top q", tmux), 0);
    assert_int_equal(top_status(tmux, rcfile), 0);
    sh("tmux -S %s kill-server 2>/dev/null", tmux);
    kill_child(&a);
    kill_child(&b);
    daemon_cleanup(&d);
}

/* Reads a whole small file into out. */
static void slurp(const char *path, char *out, size_t len)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, len - 1, f);
    out[n] = '\0';
    fclose(f);
}

/* An output that cannot be written is a failure, said; and a follow that
   leashd ends (it stopped) is one too: a script must not take a cut-off
   listing, or a follow that quietly ended, for success. */
static void lost_output_and_a_lost_follow_fail(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    char err[4096], errfile[160];
    snprintf(errfile, sizeof errfile, "%s/err", d.dir);
    const char *cmds[] = {"ps", "status", "incidents --json", "--version", "help"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        assert_int_equal(
            sh("%s --socket %s %s >/dev/full 2>%s", LEASHCTL_BIN, d.control, cmds[i], errfile), 1);
        slurp(errfile, err, sizeof err);
        if (!strstr(err, "leashctl: cannot write the output: No space left on device"))
            fail_msg("%s >/dev/full said: %s", cmds[i], err);
    }

    int   p[2];
    pid_t pid = follow_incidents(&d, false, errfile, &p[0]);
    char  line[256];
    read_line(p[0], line, sizeof line, E2E_WAIT_MS); /* the header: it follows now */
    assert_non_null(strstr(line, "KIND"));
    daemon_stop(&d);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    close(p[0]);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    slurp(errfile, err, sizeof err);
    assert_non_null(strstr(err, "leashctl: leashd ended the follow"));
    daemon_cleanup(&d);
}

/* leashd closes a connection it will not serve without a word (one past
   peers_per_uid; on the agent socket, one that starts with no Hello):
   leashctl says what that likely means rather than exit 1 in silence. */
static void a_connection_closed_unanswered_is_said(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, "peers_per_uid = 1;\n");
    static char out[4096];
    char        want[512];
    snprintf(want, sizeof want,
             "leashctl: leashd at %s closed the connection without answering (too many "
             "connections from this user, or not leashd's control socket?)\n",
             d.agent);
    assert_int_equal(ctl(&d, out, "--socket", d.agent, "ps"), 1);
    assert_string_equal(out, want);

    /* a follower holds this uid's one connection */
    int   p[2];
    pid_t pid = follow_incidents(&d, false, NULL, &p[0]);
    char  line[256];
    read_line(p[0], line, sizeof line, E2E_WAIT_MS); /* the header: it follows now */
    assert_non_null(strstr(line, "KIND"));
    snprintf(want, sizeof want,
             "leashctl: leashd at %s closed the connection without answering (too many "
             "connections from this user, or not leashd's control socket?)\n",
             d.control);
    for (int i = 0; i < 3; i++) { /* closed before or after leashctl sent: the same */
        assert_int_equal(ctl(&d, out, "status"), 1);
        assert_string_equal(out, want);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    close(p[0]);
    daemon_cleanup(&d);
}

/* Runs leashctl --socket CONTROL ARG... with fd `closed` (1 or 2) closed
   and SIGPIPE as a shell leaves it (this suite ignores it); the other of
   stdout and stderr goes to out. The exit status, or 128 + the signal. */
static int ctl_closed(const struct daemon *d, int closed, char *out, size_t len, const char *a1,
                      const char *a2)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGPIPE, SIG_DFL);
        alarm(E2E_WAIT_MS / 1000); /* a leashctl that never ends fails */
        dup2(p[1], closed == 1 ? 2 : 1);
        close(p[0]);
        close(p[1]);
        close(closed);
        execl(LEASHCTL_BIN, "leashctl", "--socket", d->control, a1, a2, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    size_t  got = 0;
    ssize_t r;
    while (got + 1 < len && (r = read(p[0], out + got, len - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    close(p[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A closed stdout is an output that cannot be written, as /dev/full is:
   the control socket must not take its number, or leashctl would write its
   output into the socket. A closed stderr leaves stdout as it is. */
static void a_closed_stdout_is_an_output_not_written(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, "stuck_after = \"300ms\";\n");
    struct child a = leashed_named(&d, "stuck", "closed-out");
    wait_for(&d, "\"process\":\"closed-out\"", "incidents", "--json");
    static char out[65536];
    const char *cmds[][2] = {{"incidents", NULL}, {"incidents", "--json"}, {"ps", NULL},
                             {"status", NULL},    {"dump", "closed-out"},  {"--version", NULL},
                             {"top", NULL}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        int rc = ctl_closed(&d, 1, out, sizeof out, cmds[i][0], cmds[i][1]);
        if (rc != 1 || strncmp(out, "leashctl: cannot write the output: ", 35))
            fail_msg("leashctl %s %s >&- exited %d and said: %s", cmds[i][0],
                     cmds[i][1] ? cmds[i][1] : "", rc, out);
    }
    assert_int_equal(ctl_closed(&d, 2, out, sizeof out, "ps", "-q"), 0);
    assert_non_null(strstr(out, "closed-out"));
    assert_int_equal(ctl_closed(&d, 2, out, sizeof out, "incidents", "--json"), 0);
    assert_non_null(strstr(out, "\"process\":\"closed-out\""));
    kill_child(&a);
    daemon_cleanup(&d);
}

/* As leashctl(1) says: a pipe whose reader has gone ends leashctl by
   SIGPIPE, as it does other tools; and incidents --follow --json is JSON
   Lines from its first line, those already there included. */
static void a_gone_reader_is_sigpipe_and_a_json_follow_is_lines(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, "stuck_after = \"300ms\";\n");
    struct child a = leashed_named(&d, "stuck", "lines");
    wait_for(&d, "\"process\":\"lines\"", "incidents", "--json");

    int p[2];
    assert_int_equal(pipe(p), 0);
    close(p[0]); /* the reader is gone before leashctl writes */
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGPIPE, SIG_DFL);
        dup2(p[1], 1);
        execl(LEASHCTL_BIN, "leashctl", "--socket", d.control, "ps", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGPIPE);

    pid = follow_incidents(&d, true, NULL, &p[0]);
    char line[65536];
    read_line(p[0], line, sizeof line, E2E_WAIT_MS);
    assert_int_equal(line[0], '{');
    assert_non_null(strstr(line, "\"process\":\"lines\""));
    assert_int_equal(line[strlen(line) - 1], '}');
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    close(p[0]);
    kill_child(&a);
    daemon_cleanup(&d);
}

/* A -f with no format after it means --follow, for incidents; to any other
   command it was a format, missing or misspelt, and the error says that
   rather than "does not take --follow". */
static void a_lone_f_elsewhere_is_a_missing_format(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    static char out[4096];
    assert_int_equal(ctl(&d, out, "dump", "--all", "-f"), 2);
    assert_non_null(strstr(out, "leashctl: -f needs a format (text json folded pprof)"));
    assert_int_equal(ctl(&d, out, "ps", "-f", "xml"), 2);
    assert_non_null(strstr(out, "leashctl: unknown format 'xml' (text json)"));
    assert_int_equal(ctl(&d, out, "top", "-f"), 2);
    assert_non_null(strstr(out, "leashctl: top does not take -f"));
    assert_null(strstr(out, "--follow"));
    assert_int_equal(ctl(&d, out, "incidents", "-f", "-n", "0", "--socket", "/nonexistent"), 1);
    assert_non_null(strstr(out, "no leashd at /nonexistent"));
    daemon_cleanup(&d);
}

/* leashd takes a name of at most 63 bytes of text: a process whose
   LEASH_NAME is longer, or holds a control character, is still supervised,
   under its name cut at a character boundary, with '?' for the control. */
static void a_long_or_odd_name_is_still_supervised(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    char longname[128] = "", cut[128] = "";
    for (int i = 0; i < 40; i++)
        strcat(longname, "\xc3\xa9"); /* é: 80 bytes */
    for (int i = 0; i < 31; i++)
        strcat(cut, "\xc3\xa9"); /* 62 bytes: the 32nd would end past 63 */
    struct child a = leashed_named(&d, "park", longname);
    struct child b = leashed_named(&d, "park", "line\nbreak\tand\x01");
    char         want[256];
    snprintf(want, sizeof want, "{\"pid\":%d,\"name\":\"%s\"", (int)a.pid, cut);
    wait_for(&d, want, "ps", "--json");
    snprintf(want, sizeof want, "{\"pid\":%d,\"name\":\"line?break?and?\"", (int)b.pid);
    wait_for(&d, want, "ps", "--json");
    static char out[65536];
    assert_int_equal(ctl(&d, out, "dump", pidstr(a.pid), "--json"), 0);
    snprintf(want, sizeof want, "\"name\":\"%s\",\"groups\"", cut);
    assert_non_null(strstr(out, want));
    kill_child(&a);
    kill_child(&b);
    daemon_cleanup(&d);
}

/* Counts and ages too large for leashctl's integers are bad usage, said,
   not a wrapped number (nor undefined behaviour, which UBSan stops on). */
static void counts_and_ages_too_large_are_refused(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, NULL);
    static char out[4096];
    const char *ages[] = {"9999999999999999d", "999999999999999h", "9999999999999999999s"};
    for (size_t i = 0; i < sizeof ages / sizeof ages[0]; i++) {
        assert_int_equal(ctl(&d, out, "incidents", "--since", ages[i]), 2);
        assert_non_null(strstr(out, "bad --since"));
    }
    assert_int_equal(ctl(&d, out, "incidents", "-n", "99999999999999999999"), 2);
    assert_non_null(strstr(out, "-n takes a count"));
    /* the largest that fits is a time before any incident: all of them */
    assert_int_equal(ctl(&d, out, "incidents", "--since", "106751991167d", "--json"), 0);
    assert_string_equal(out, "[]\n");
    daemon_cleanup(&d);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(version_and_every_help_answer_zero, teardown),
        cmocka_unit_test_teardown(processes_are_named_by_pid_or_by_name, teardown),
        cmocka_unit_test_teardown(a_number_is_a_pid_and_never_a_name, teardown),
        cmocka_unit_test_teardown(a_name_not_there_fails_and_leaks_nothing, teardown),
        cmocka_unit_test_teardown(columns_stay_aligned_with_multibyte_names, teardown),
        cmocka_unit_test_teardown(incidents_last_n_and_every_format_spelling, teardown),
        cmocka_unit_test_teardown(status_json_has_the_documented_keys, teardown),
        cmocka_unit_test_teardown(top_refreshes_and_quits_on_q, teardown),
        cmocka_unit_test_teardown(top_on_a_small_terminal_frees_each_refresh, teardown),
        cmocka_unit_test_teardown(lost_output_and_a_lost_follow_fail, teardown),
        cmocka_unit_test_teardown(a_closed_stdout_is_an_output_not_written, teardown),
        cmocka_unit_test_teardown(a_gone_reader_is_sigpipe_and_a_json_follow_is_lines, teardown),
        cmocka_unit_test_teardown(counts_and_ages_too_large_are_refused, teardown),
        cmocka_unit_test_teardown(a_lone_f_elsewhere_is_a_missing_format, teardown),
        cmocka_unit_test_teardown(a_connection_closed_unanswered_is_said, teardown),
        cmocka_unit_test_teardown(a_long_or_odd_name_is_still_supervised, teardown),
    };
    return cmocka_run_group_tests_name("leashctl", tests, NULL, NULL);
}
