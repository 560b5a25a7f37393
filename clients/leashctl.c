/*
 * leashctl: the command-line client of leashd's control socket.
 *
 * Exit status: 0 done, 1 failed (including "no leashd"), 2 bad usage.
 */
#define _GNU_SOURCE
#include "format.h"

#include "frame.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: leashctl [--socket PATH] COMMAND [ARGS]\n"
    "  status [--json]                      daemon, processes, live groups and tasks, incidents\n"
    "  ps [--json]                          one row per leashed process\n"
    "  tasks PID [--json]                   the group/task tree of one process, as leashd sees it\n"
    "  dump PID [--format text|json|folded|pprof] [--json]\n"
    "                                       a live dump from the process\n"
    "  incidents [--since 10m] [--follow] [--json]\n"
    "  cancel PID GROUP                     cancel one group of a process (admin)\n"
    "  kill PID                             SIGTERM, then SIGKILL after kill_grace (admin)\n"
    "  reload                               reread leashd's config (admin)\n"
    "The control socket: --socket, else $LEASH_CONTROL, else where leashd puts it.\n";

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const char *fmt, ...)
{
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "leashctl: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
    }
    fputs(usage_text, stderr);
    return 2;
}

static const char *default_socket(char *buf, size_t len)
{
    const char *e = getenv("LEASH_CONTROL");
    if (e && *e)
        return e;
    if (geteuid() == 0)
        return "/run/leash/control.sock";
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg && *xdg == '/')
        snprintf(buf, len, "%s/leash/control.sock", xdg);
    else
        snprintf(buf, len, "/tmp/leash-%u/control.sock", (unsigned)geteuid());
    struct stat st;
    /* a user with no leashd of its own talks to the system one */
    if (stat(buf, &st) != 0 && stat("/run/leash/control.sock", &st) == 0)
        return "/run/leash/control.sock";
    return buf;
}

static int conn(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "leashctl: socket path too long: %s\n", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "leashctl: no leashd at %s (%s)\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int send_req(int fd, Leash__Control__Request *r)
{
    r->version = LEASH__CONTROL__VERSION__VERSION_CURRENT;
    size_t   n;
    uint8_t *buf = leash_frame_pack(&r->base, &n);
    if (!buf)
        return -1;
    size_t off = 0;
    while (off < n) {
        ssize_t w = send(fd, buf + off, n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            fprintf(stderr, "leashctl: send: %s\n", strerror(errno));
            free(buf);
            return -1;
        }
        off += (size_t)w;
    }
    free(buf);
    return 0;
}

static int read_full(int fd, uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* The next response, or NULL when leashd closed the connection. */
static Leash__Control__Response *recv_resp(int fd)
{
    uint8_t hdr[LEASH_FRAME_HEADER];
    if (read_full(fd, hdr, sizeof hdr))
        return NULL;
    uint32_t n = leash_frame_get_len(hdr);
    if (n > 256u * 1024 * 1024) {
        fprintf(stderr, "leashctl: response of %u bytes is too large\n", n);
        return NULL;
    }
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf || read_full(fd, buf, n)) {
        free(buf);
        fprintf(stderr, "leashctl: leashd closed the connection mid-response\n");
        return NULL;
    }
    Leash__Control__Response *r = leash__control__response__unpack(NULL, n, buf);
    free(buf);
    if (!r)
        fprintf(stderr, "leashctl: cannot decode leashd's response\n");
    return r;
}

static int parse_pid(const char *s, int32_t *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v <= 0 || v > 0x7fffffff)
        return -1;
    *out = (int32_t)v;
    return 0;
}

static int64_t parse_dur(const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v < 0)
        return -1;
    if (!strcmp(end, "ms"))
        return v;
    if (!strcmp(end, "s"))
        return v * 1000;
    if (!strcmp(end, "m"))
        return v * 60000;
    if (!strcmp(end, "h"))
        return v * 3600000;
    if (!strcmp(end, "d"))
        return v * 86400000;
    return -1;
}

struct args {
    const char *socket, *format, *since;
    bool        json, follow;
    const char *pos[4];
    int         npos;
};

int main(int argc, char **argv)
{
    struct args a = {0};
    const char *cmd = NULL;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (!strcmp(s, "--json")) {
            a.json = true;
        } else if (!strcmp(s, "--follow") || !strcmp(s, "-f")) {
            a.follow = true;
        } else if (!strcmp(s, "--socket") || !strcmp(s, "--format") || !strcmp(s, "--since")) {
            if (i + 1 >= argc)
                return usage("%s needs a value", s);
            const char **dst = s[2] == 's' && s[3] == 'o' ? &a.socket
                               : s[2] == 'f'              ? &a.format
                                                          : &a.since;
            *dst = argv[++i];
        } else if (s[0] == '-' && s[1]) {
            return usage("unknown option %s", s);
        } else if (!cmd) {
            cmd = s;
        } else if (a.npos < 4) {
            a.pos[a.npos++] = s;
        } else {
            return usage("too many arguments");
        }
    }
    if (!cmd)
        return usage(NULL);

    Leash__Control__Request          req = LEASH__CONTROL__REQUEST__INIT;
    Leash__Control__StatusRequest    st = LEASH__CONTROL__STATUS_REQUEST__INIT;
    Leash__Control__PsRequest        ps = LEASH__CONTROL__PS_REQUEST__INIT;
    Leash__Control__TasksRequest     tk = LEASH__CONTROL__TASKS_REQUEST__INIT;
    Leash__Control__DumpRequest      dp = LEASH__CONTROL__DUMP_REQUEST__INIT;
    Leash__Control__IncidentsRequest in = LEASH__CONTROL__INCIDENTS_REQUEST__INIT;
    Leash__Control__CancelRequest    cn = LEASH__CONTROL__CANCEL_REQUEST__INIT;
    Leash__Control__KillRequest      kl = LEASH__CONTROL__KILL_REQUEST__INIT;
    Leash__Control__ReloadRequest    rl = LEASH__CONTROL__RELOAD_REQUEST__INIT;
    int                              want_pos = 0;
    enum fmt                         fmt = a.json ? FMT_JSON : FMT_TEXT;
    if (!strcmp(cmd, "status")) {
        req.req_case = LEASH__CONTROL__REQUEST__REQ_STATUS;
        req.status = &st;
    } else if (!strcmp(cmd, "ps")) {
        req.req_case = LEASH__CONTROL__REQUEST__REQ_PS;
        req.ps = &ps;
    } else if (!strcmp(cmd, "tasks") || !strcmp(cmd, "dump")) {
        want_pos = 1;
        bool dump = cmd[0] == 'd';
        if (a.format) {
            if (!dump && strcmp(a.format, "text") && strcmp(a.format, "json"))
                return usage("tasks takes --format text or json");
            if (format_parse(a.format, &fmt))
                return usage("unknown format '%s' (text, json, folded or pprof)", a.format);
        }
        if (a.npos < 1 || parse_pid(a.pos[0], dump ? &dp.pid : &tk.pid))
            return usage("%s needs a PID", cmd);
        if (dump) {
            req.req_case = LEASH__CONTROL__REQUEST__REQ_DUMP;
            req.dump = &dp;
        } else {
            req.req_case = LEASH__CONTROL__REQUEST__REQ_TASKS;
            req.tasks = &tk;
        }
    } else if (!strcmp(cmd, "incidents")) {
        if (a.since) {
            int64_t d = parse_dur(a.since);
            if (d < 0)
                return usage("bad --since '%s' (such as 30s, 10m, 2h, 1d)", a.since);
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            in.since_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - d;
            if (in.since_ms < 0)
                in.since_ms = 0;
        }
        in.follow = a.follow;
        req.req_case = LEASH__CONTROL__REQUEST__REQ_INCIDENTS;
        req.incidents = &in;
    } else if (!strcmp(cmd, "cancel")) {
        want_pos = 2;
        char *end;
        if (a.npos < 2 || parse_pid(a.pos[0], &cn.pid))
            return usage("cancel needs PID GROUP");
        errno = 0;
        cn.group = strtoull(a.pos[1], &end, 10);
        if (errno || *end || !cn.group)
            return usage("GROUP must be a group id (leashctl tasks PID shows them)");
        req.req_case = LEASH__CONTROL__REQUEST__REQ_CANCEL;
        req.cancel = &cn;
    } else if (!strcmp(cmd, "kill")) {
        want_pos = 1;
        if (a.npos < 1 || parse_pid(a.pos[0], &kl.pid))
            return usage("kill needs a PID");
        req.req_case = LEASH__CONTROL__REQUEST__REQ_KILL;
        req.kill = &kl;
    } else if (!strcmp(cmd, "reload")) {
        req.req_case = LEASH__CONTROL__REQUEST__REQ_RELOAD;
        req.reload = &rl;
    } else {
        return usage("unknown command '%s'", cmd);
    }
    if (a.npos > want_pos)
        return usage("%s: unexpected argument '%s'", cmd, a.pos[want_pos]);
    if (a.follow && strcmp(cmd, "incidents"))
        return usage("--follow goes with incidents");
    if (a.since && strcmp(cmd, "incidents"))
        return usage("--since goes with incidents");

    char        buf[256];
    const char *path = a.socket ? a.socket : default_socket(buf, sizeof buf);
    int         fd = conn(path);
    if (fd < 0 || send_req(fd, &req))
        return 1;
    int                       rc = 0;
    Leash__Control__Response *r;
    bool                      first = true;
    while ((r = recv_resp(fd)) != NULL) {
        switch (r->resp_case) {
        case LEASH__CONTROL__RESPONSE__RESP_ERROR:
            fprintf(stderr, "leashctl: %s\n", r->error->message);
            rc = 1;
            break;
        case LEASH__CONTROL__RESPONSE__RESP_DONE: printf("%s\n", r->done->message); break;
        case LEASH__CONTROL__RESPONSE__RESP_STATUS: print_status(r->status, a.json); break;
        case LEASH__CONTROL__RESPONSE__RESP_PS: print_ps(r->ps, a.json); break;
        case LEASH__CONTROL__RESPONSE__RESP_TASKS:
            if (print_tree(r->tasks, fmt)) {
                fprintf(stderr, "leashctl: cannot write the dump\n");
                rc = 1;
            }
            break;
        case LEASH__CONTROL__RESPONSE__RESP_INCIDENTS:
            print_incidents(r->incidents, a.json, a.follow);
            break;
        case LEASH__CONTROL__RESPONSE__RESP_INCIDENT:
            print_incident_followed(r->incident, a.json);
            break;
        default: fprintf(stderr, "leashctl: unexpected response from leashd\n"); rc = 1;
        }
        fflush(stdout);
        first = false;
        leash__control__response__free_unpacked(r, NULL);
    }
    close(fd);
    if (first)
        return 1; /* no response at all: said why already */
    return rc;
}
