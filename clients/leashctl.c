/*
 * leashctl: the command-line client of leashd's control socket.
 *
 * Options go the GNU way (getopt_long: `--format=json`, `-f json`, anywhere
 * on the line). Each command is a row of `commands` below: its name, what it
 * takes and the function that runs it.
 *
 * Exit status: 0 done, 1 failed (including "no leashd"), 2 bad usage.
 */
#define _GNU_SOURCE
#include "conn.h"
#include "format.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <langinfo.h>
#include <locale.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "top.h"

/* The options a command may take, besides --socket and --help. */
enum {
    OPT_FORMAT = 1u << 0, /* --json, -f/--format */
    OPT_SINCE = 1u << 1,  /* --since */
    OPT_FOLLOW = 1u << 2, /* --follow */
    OPT_LAST = 1u << 3,   /* -n N */
    OPT_NOHEAD = 1u << 4, /* -q, --no-headers */
    OPT_ALL = 1u << 5,    /* -a, --all */
};

/* What the command line said. */
struct ctl {
    const struct command *cmd;
    const char           *socket; /* the control socket to use */
    char                  socket_buf[256];
    enum fmt              fmt;
    bool                  json; /* fmt is FMT_JSON */
    bool                  headers, all, follow;
    bool                  several; /* a dump of more than one process (tree_each) */
    const char           *since;
    size_t                last; /* incidents -n; SIZE_MAX: all */
    char                **pos;  /* the arguments after the command */
    int                   npos;
};

struct command {
    const char *name;
    const char *args;    /* what follows the name in a synopsis */
    const char *summary; /* one line */
    unsigned    opts;    /* OPT_* */
    const char *formats; /* the --format values, when OPT_FORMAT */
    int         min_args, max_args;
    int (*run)(struct ctl *c);
};

static int cmd_status(struct ctl *c);
static int cmd_ps(struct ctl *c);
static int cmd_tasks(struct ctl *c);
static int cmd_dump(struct ctl *c);
static int cmd_incidents(struct ctl *c);
static int cmd_incident(struct ctl *c);
static int cmd_cancel(struct ctl *c);
static int cmd_kill(struct ctl *c);
static int cmd_reload(struct ctl *c);
static int cmd_top(struct ctl *c);
static int cmd_help(struct ctl *c);

/* A process is named by its pid or by its name (every process of that name). */
static const struct command commands[] = {
    {"status", "", "daemon, processes, live groups and tasks, incidents", OPT_FORMAT, "text json",
     0, 0, cmd_status},
    {"ps", "[PID|NAME]", "one row per leashed process (or those named)", OPT_FORMAT | OPT_NOHEAD,
     "text json", 0, 1, cmd_ps},
    {"top", "", "a live view, refreshed every second (q quits)", 0, NULL, 0, 0, cmd_top},
    {"tasks", "PID|NAME", "the group/task tree of a process, as leashd sees it", OPT_FORMAT,
     "text json", 1, 1, cmd_tasks},
    {"dump", "PID|NAME|--all", "a live dump from the process (one object per line in JSON)",
     OPT_FORMAT | OPT_ALL, "text json folded pprof", 0, 1, cmd_dump},
    {"incidents", "", "what leashd saw and did, oldest first",
     OPT_FORMAT | OPT_SINCE | OPT_FOLLOW | OPT_LAST | OPT_NOHEAD, "text json", 0, 0, cmd_incidents},
    {"incident", "ID", "one incident, with the last task tree of a process that died", OPT_FORMAT,
     "text json folded", 1, 1, cmd_incident},
    {"cancel", "PID|NAME GROUP", "cancel one group of a process (admin)", OPT_FORMAT, "text", 2, 2,
     cmd_cancel},
    {"kill", "PID|NAME", "SIGTERM, then SIGKILL after kill_grace (admin)", OPT_FORMAT, "text", 1, 1,
     cmd_kill},
    {"reload", "", "reread leashd's config (admin)", OPT_FORMAT, "text", 0, 0, cmd_reload},
    {"help", "[COMMAND]", "this help, or what a command takes", 0, NULL, 0, 1, cmd_help},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

/* What each option says in help. */
static const struct {
    unsigned    bit;
    const char *spelling, *doc;
} option_docs[] = {
    {OPT_FORMAT, "-f, --format=FMT", "output format:"},
    {OPT_FORMAT, "    --json", "the same as --format=json"},
    {OPT_ALL, "-a, --all", "every leashed process"},
    {OPT_NOHEAD, "-q, --no-headers", "rows only, no header line"},
    {OPT_SINCE, "    --since=AGE", "only those newer than AGE (30s, 10m, 2h, 1d)"},
    {OPT_FOLLOW, "    --follow", "then print each new one as it happens (-f alone, too)"},
    {OPT_LAST, "-n, --last=N", "only the last N (with --follow: then the new ones)"},
};

static const char *prog_version = LEASH_VERSION;

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

/* Whether cmd has options worth a line in its help. */
static bool shows_options(const struct command *cmd)
{
    return (cmd->opts & ~(unsigned)OPT_FORMAT) || (cmd->formats && strcmp(cmd->formats, "text"));
}

static void usage_all(FILE *f)
{
    fprintf(f, "usage: leashctl [--socket=PATH] COMMAND [OPTIONS] [ARGS]\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        char head[64];
        snprintf(head, sizeof head, "%s %s", commands[i].name, commands[i].args);
        fprintf(f, "  %-26s %s\n", head, commands[i].summary);
    }
    fprintf(f, "Options:\n"
               "      --socket=PATH  leashd's control socket: else $LEASH_CONTROL, else where\n"
               "                     leashd puts it\n"
               "  -f, --format=FMT   output format (text, json; dump: folded, pprof too)\n"
               "      --json         the same as --format=json\n"
               "  -h, --help         this help; COMMAND --help: what a command takes\n"
               "  -V, --version      leashctl's version\n"
               "Exit status: 0 done, 1 failed, 2 bad usage.\n");
}

static void usage_command(FILE *f, const struct command *cmd)
{
    fprintf(f, "usage: leashctl %s%s%s%s\n%s\n", cmd->name, *cmd->args ? " " : "", cmd->args,
            shows_options(cmd) ? " [OPTIONS]" : "", cmd->summary);
    if (shows_options(cmd))
        fprintf(f, "Options:\n");
    for (size_t i = 0; i < sizeof option_docs / sizeof option_docs[0]; i++) {
        /* cancel, kill and reload take --json (and ignore it): not worth saying */
        if (!(cmd->opts & option_docs[i].bit) ||
            (option_docs[i].bit == OPT_FORMAT && !strcmp(cmd->formats, "text")))
            continue;
        fprintf(f, "  %-18s %s", option_docs[i].spelling, option_docs[i].doc);
        if (option_docs[i].bit == OPT_FORMAT && option_docs[i].spelling[0] == '-')
            fprintf(f, " %s", cmd->formats);
        fputc('\n', f);
    }
}

static int usage(const struct command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int usage(const struct command *cmd, const char *fmt, ...)
{
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "leashctl: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
    }
    if (cmd)
        fprintf(stderr, "usage: leashctl %s%s%s%s\nTry 'leashctl %s --help'.\n", cmd->name,
                *cmd->args ? " " : "", cmd->args, shows_options(cmd) ? " [OPTIONS]" : "",
                cmd->name);
    else
        fprintf(stderr, "usage: leashctl [--socket=PATH] COMMAND [OPTIONS] [ARGS]\n"
                        "Try 'leashctl --help'.\n");
    return 2;
}

/* ------------------------------------------------------------ arguments */

/* A pid is decimal digits alone, 1 to 2147483647; leading zeros do not
   count (0042 is pid 42). -1 when s is not one: a name, or a number no
   process can have (not_a_pid). */
static int parse_pid(const char *s, int32_t *out)
{
    if (!*s || s[strspn(s, "0123456789")] != '\0')
        return -1;
    int64_t v = 0;
    for (const char *p = s; *p; p++)
        if ((v = v * 10 + (*p - '0')) > INT32_MAX)
            return -1;
    if (!v)
        return -1;
    *out = (int32_t)v;
    return 0;
}

/* True, having said so, when s is a number (an optional sign, then digits:
   meant as a pid, never a name) that no process can have: 0, signed, too
   large. */
static bool not_a_pid(const char *s)
{
    const char *d = s + (*s == '-' || *s == '+');
    if (!*d || d[strspn(d, "0123456789")] != '\0' || !parse_pid(s, &(int32_t){0}))
        return false;
    fprintf(stderr, "leashctl: '%s' is not a pid (digits alone, 1 to 2147483647)\n", s);
    return true;
}

/* What arg names, once not_a_pid has refused what is neither a pid nor a
   name. */
static struct proc_sel proc_sel_of(const char *arg)
{
    struct proc_sel sel = {0, NULL};
    if (parse_pid(arg, &sel.pid))
        sel.name = arg;
    return sel;
}

static int64_t parse_dur(const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v < 0)
        return -1;
    static const struct {
        const char *unit;
        long long   ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        long long ms;
        if (!strcmp(end, units[i].unit))
            return __builtin_mul_overflow(v, units[i].ms, &ms) ? -1 : ms; /* too far back */
    }
    return -1;
}

static bool in_list(const char *word, const char *list)
{
    size_t n = strlen(word);
    for (const char *p = list; p && *p;) {
        const char *sp = strchr(p, ' ');
        size_t      len = sp ? (size_t)(sp - p) : strlen(p);
        if (len == n && !strncmp(p, word, n))
            return true;
        p += len + (sp != NULL);
    }
    return false;
}

/* -------------------------------------------------------------- process */

struct pids {
    int32_t *v;
    size_t   n;
};

struct resolve {
    const char  *name; /* NULL: every process */
    struct pids *out;
};

static int resolve_cb(void *arg, const Leash__Control__Response *r)
{
    struct resolve *rs = arg;
    if (r->resp_case != LEASH__CONTROL__RESPONSE__RESP_PS)
        return 1;
    free(rs->out->v); /* one answer is expected: the last one counts */
    rs->out->n = 0;
    rs->out->v = calloc(r->ps->n_processes + 1, sizeof *rs->out->v);
    if (!rs->out->v)
        return 1;
    for (size_t i = 0; i < r->ps->n_processes; i++)
        if (!rs->name || !strcmp(rs->name, r->ps->processes[i]->name))
            rs->out->v[rs->out->n++] = r->ps->processes[i]->pid;
    return 0;
}

/* The pids that arg names: a pid as it is, a name as every process of that
   name (leashd asked), NULL as every process. 0; 1 when none is found or
   leashd could not be asked; 2 when arg is a number no process can have,
   which no state of the machine makes right (bad usage). Says why. On 0
   the caller frees out->v; otherwise there is nothing to free. */
static int resolve(struct ctl *c, const char *arg, struct pids *out)
{
    out->v = NULL;
    out->n = 0;
    int32_t pid;
    if (arg && not_a_pid(arg))
        return 2;
    if (arg && !parse_pid(arg, &pid)) {
        out->v = malloc(sizeof *out->v);
        if (!out->v)
            return 1;
        out->v[out->n++] = pid;
        return 0;
    }
    Leash__Control__Request   req = LEASH__CONTROL__REQUEST__INIT;
    Leash__Control__PsRequest ps = LEASH__CONTROL__PS_REQUEST__INIT;
    req.req_case = LEASH__CONTROL__REQUEST__REQ_PS;
    req.ps = &ps;
    struct resolve rs = {arg, out};
    if (conn_call(c->socket, &req, resolve_cb, &rs, 0))
        goto fail;
    if (arg && !out->n) {
        fprintf(stderr, "leashctl: no leashed process named '%s'\n", arg);
        goto fail;
    }
    return 0;
fail:
    free(out->v);
    out->v = NULL;
    out->n = 0;
    return 1;
}

/* Exactly one process, for the commands that change something. When arg
   is a name, *name is set to it, for leashd to check that the pid is still
   that process. */
static int resolve_one(struct ctl *c, const char *arg, int32_t *pid, char **name)
{
    int32_t given;
    *name = parse_pid(arg, &given) ? (char *)arg : (char *)"";
    struct pids p;
    int         rc = resolve(c, arg, &p);
    if (rc)
        return rc;
    if (p.n == 1) {
        *pid = p.v[0];
    } else {
        fprintf(stderr, "leashctl: '%s' names %zu processes (", arg, p.n);
        for (size_t i = 0; i < p.n; i++)
            fprintf(stderr, "%s%d", i ? ", " : "", p.v[i]);
        fprintf(stderr, "): name one by its pid\n");
        rc = 1;
    }
    free(p.v);
    return rc;
}

/* ------------------------------------------------------------- commands */

static int status_cb(void *arg, const Leash__Control__Response *r)
{
    struct ctl *c = arg;
    if (r->resp_case != LEASH__CONTROL__RESPONSE__RESP_STATUS)
        return 1;
    print_status(r->status, c->json);
    return 0;
}

static int cmd_status(struct ctl *c)
{
    Leash__Control__Request       req = LEASH__CONTROL__REQUEST__INIT;
    Leash__Control__StatusRequest st = LEASH__CONTROL__STATUS_REQUEST__INIT;
    req.req_case = LEASH__CONTROL__REQUEST__REQ_STATUS;
    req.status = &st;
    return conn_call(c->socket, &req, status_cb, c, 0);
}

static int ps_cb(void *arg, const Leash__Control__Response *r)
{
    struct ctl *c = arg;
    if (r->resp_case != LEASH__CONTROL__RESPONSE__RESP_PS)
        return 1;
    struct proc_sel  sel;
    struct proc_sel *only = NULL;
    if (c->npos) {
        sel = proc_sel_of(c->pos[0]);
        only = &sel;
    }
    bool found = !only;
    for (size_t i = 0; only && i < r->ps->n_processes; i++)
        found |= ps_match(r->ps->processes[i], only);
    if (!found) {
        /* named, and not there: an empty list for a script, the why on stderr */
        if (c->json)
            printf("[]\n");
        if (only->name)
            fprintf(stderr, "leashctl: no leashed process named '%s'\n", only->name);
        else
            fprintf(stderr, "leashctl: no leashed process with pid %d\n", only->pid);
        return 1;
    }
    print_ps(stdout, r->ps, c->json, c->headers, only);
    return 0;
}

static int cmd_ps(struct ctl *c)
{
    if (c->npos && not_a_pid(c->pos[0]))
        return 2; /* bad usage: see resolve */
    Leash__Control__Request   req = LEASH__CONTROL__REQUEST__INIT;
    Leash__Control__PsRequest ps = LEASH__CONTROL__PS_REQUEST__INIT;
    req.req_case = LEASH__CONTROL__REQUEST__REQ_PS;
    req.ps = &ps;
    return conn_call(c->socket, &req, ps_cb, c, 0);
}

static int tree_cb(void *arg, const Leash__Control__Response *r)
{
    struct ctl *c = arg;
    if (r->resp_case != LEASH__CONTROL__RESPONSE__RESP_TASKS)
        return 1;
    if (print_tree(r->tasks, c->fmt, c->several)) {
        fprintf(stderr, "leashctl: cannot write the dump\n");
        return 1;
    }
    return 0;
}

/* tasks and dump: one request per process named. */
static int tree_each(struct ctl *c, bool dump)
{
    struct pids p;
    int         rc = resolve(c, c->all ? NULL : c->pos[0], &p);
    if (rc)
        return rc;
    if (c->fmt == FMT_PPROF && p.n > 1) {
        fprintf(stderr,
                "leashctl: '%s' names %zu processes; a pprof profile holds one: name it "
                "by its pid\n",
                c->pos[0], p.n);
        free(p.v);
        return 1;
    }
    if (!p.n && c->fmt == FMT_TEXT)
        printf("(no leashed processes)\n");
    c->several = c->all || p.n > 1;
    for (size_t i = 0; i < p.n; i++) {
        Leash__Control__Request      req = LEASH__CONTROL__REQUEST__INIT;
        Leash__Control__DumpRequest  dp = LEASH__CONTROL__DUMP_REQUEST__INIT;
        Leash__Control__TasksRequest tk = LEASH__CONTROL__TASKS_REQUEST__INIT;
        if (dump) {
            dp.pid = p.v[i];
            req.req_case = LEASH__CONTROL__REQUEST__REQ_DUMP;
            req.dump = &dp;
        } else {
            tk.pid = p.v[i];
            req.req_case = LEASH__CONTROL__REQUEST__REQ_TASKS;
            req.tasks = &tk;
        }
        if (i && c->fmt == FMT_TEXT)
            printf("\n");
        /* with several processes, one that ended meanwhile is no failure */
        int r = conn_call(c->socket, &req, tree_cb, c, p.n > 1 ? ESRCH : 0);
        if (r > 0)
            rc = r;
    }
    free(p.v);
    return rc;
}

static int cmd_tasks(struct ctl *c)
{
    return tree_each(c, false);
}

static int cmd_dump(struct ctl *c)
{
    if (c->all && c->npos)
        return usage(c->cmd, "dump takes a process or --all, not both");
    if (!c->all && !c->npos)
        return usage(c->cmd, "dump needs a PID or a NAME (or --all)");
    if (c->all && c->fmt == FMT_PPROF)
        return usage(c->cmd, "a pprof profile holds one process: not with --all");
    return tree_each(c, true);
}

static int incidents_cb(void *arg, const Leash__Control__Response *r)
{
    struct ctl *c = arg;
    if (r->resp_case == LEASH__CONTROL__RESPONSE__RESP_INCIDENTS) {
        print_incidents(stdout, r->incidents, c->json, c->follow, c->headers, c->last);
        if (r->incidents->cut) /* on stderr: the JSON shape stays a list */
            fprintf(stderr,
                    "leashctl: the listing is cut: leashd keeps the newest %llu incidents in "
                    "memory; older ones are in its journal\n",
                    (unsigned long long)r->incidents->kept);
    } else if (r->resp_case == LEASH__CONTROL__RESPONSE__RESP_INCIDENT)
        print_incident_followed(r->incident, c->json);
    else
        return 1;
    return 0;
}

static int cmd_incidents(struct ctl *c)
{
    Leash__Control__Request          req = LEASH__CONTROL__REQUEST__INIT;
    Leash__Control__IncidentsRequest in = LEASH__CONTROL__INCIDENTS_REQUEST__INIT;
    if (c->since) {
        int64_t         d = parse_dur(c->since);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        in.since_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - d;
        if (in.since_ms < 0)
            in.since_ms = 0;
    }
    in.follow = c->follow;
    req.req_case = LEASH__CONTROL__REQUEST__REQ_INCIDENTS;
    req.incidents = &in;
    return conn_call(c->socket, &req, incidents_cb, c, 0);
}

static int incident_cb(void *arg, const Leash__Control__Response *r)
{
    struct ctl *c = arg;
    if (r->resp_case != LEASH__CONTROL__RESPONSE__RESP_INCIDENT)
        return 1;
    return print_incident(r->incident, c->fmt) ? 1 : 0;
}

static int cmd_incident(struct ctl *c)
{
    Leash__Control__Request         req = LEASH__CONTROL__REQUEST__INIT;
    Leash__Control__IncidentRequest ir = LEASH__CONTROL__INCIDENT_REQUEST__INIT;
    char                           *end;
    errno = 0;
    ir.id = strtoull(c->pos[0], &end, 10);
    if (errno || *end || !ir.id || c->pos[0][0] == '-')
        return usage(c->cmd, "ID must be an incident id (leashctl incidents shows them)");
    req.req_case = LEASH__CONTROL__REQUEST__REQ_INCIDENT;
    req.incident = &ir;
    return conn_call(c->socket, &req, incident_cb, c, 0);
}

static int cmd_cancel(struct ctl *c)
{
    Leash__Control__Request       req = LEASH__CONTROL__REQUEST__INIT;
    Leash__Control__CancelRequest cn = LEASH__CONTROL__CANCEL_REQUEST__INIT;
    char                         *end;
    errno = 0;
    cn.group = strtoull(c->pos[1], &end, 10);
    if (errno || *end || !cn.group || c->pos[1][0] == '-')
        return usage(c->cmd, "GROUP must be a group id (leashctl tasks PID shows them)");
    int rc = resolve_one(c, c->pos[0], &cn.pid, &cn.name);
    if (rc)
        return rc;
    req.req_case = LEASH__CONTROL__REQUEST__REQ_CANCEL;
    req.cancel = &cn;
    return conn_call(c->socket, &req, NULL, NULL, 0);
}

static int cmd_kill(struct ctl *c)
{
    Leash__Control__Request     req = LEASH__CONTROL__REQUEST__INIT;
    Leash__Control__KillRequest kl = LEASH__CONTROL__KILL_REQUEST__INIT;
    int                         rc = resolve_one(c, c->pos[0], &kl.pid, &kl.name);
    if (rc)
        return rc;
    req.req_case = LEASH__CONTROL__REQUEST__REQ_KILL;
    req.kill = &kl;
    return conn_call(c->socket, &req, NULL, NULL, 0);
}

static int cmd_reload(struct ctl *c)
{
    Leash__Control__Request       req = LEASH__CONTROL__REQUEST__INIT;
    Leash__Control__ReloadRequest rl = LEASH__CONTROL__RELOAD_REQUEST__INIT;
    req.req_case = LEASH__CONTROL__REQUEST__REQ_RELOAD;
    req.reload = &rl;
    return conn_call(c->socket, &req, NULL, NULL, 0);
}

static int cmd_top(struct ctl *c)
{
    return top_run(c->socket);
}

static int cmd_help(struct ctl *c)
{
    if (!c->npos) {
        usage_all(stdout);
        return 0;
    }
    const struct command *cmd = find_command(c->pos[0]);
    if (!cmd)
        return usage(NULL, "unknown command '%s'", c->pos[0]);
    usage_command(stdout, cmd);
    return 0;
}

/* ------------------------------------------------------------------ main */

static int run(int argc, char **argv)
{
    /* widths of names in columns: any UTF-8 locale will do */
    setlocale(LC_CTYPE, "");
    if (strcmp(nl_langinfo(CODESET), "UTF-8"))
        setlocale(LC_CTYPE, "C.UTF-8");

    enum { LONG_SOCKET = 256, LONG_JSON, LONG_SINCE, LONG_FOLLOW };
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, LONG_SOCKET},
        {"format", required_argument, NULL, 'f'},
        {"json", no_argument, NULL, LONG_JSON},
        {"since", required_argument, NULL, LONG_SINCE},
        {"follow", no_argument, NULL, LONG_FOLLOW},
        {"last", required_argument, NULL, 'n'},
        {"no-headers", no_argument, NULL, 'q'},
        {"all", no_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    /* `-f` alone (not followed by a format) is the --follow it always was;
       to a command with no --follow it was a format, missing or misspelt */
    const char *f_alone = NULL; /* what followed such a -f ("": nothing) */
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "-f") &&
            (i + 1 == argc || !in_list(argv[i + 1], "text json folded pprof"))) {
            argv[i] = (char *)"--follow";
            f_alone = i + 1 < argc ? argv[i + 1] : "";
        }

    struct ctl  c = {.headers = true, .last = SIZE_MAX};
    const char *format = NULL, *last = NULL;
    unsigned    given = 0;
    bool        help = false;
    int         ch;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":f:n:qahV", longopts, NULL)) != -1) {
        switch (ch) {
        case LONG_SOCKET: c.socket = optarg; break;
        case 'f':
            format = optarg;
            given |= OPT_FORMAT;
            break;
        case LONG_JSON:
            c.json = true;
            given |= OPT_FORMAT;
            break;
        case LONG_SINCE:
            c.since = optarg;
            given |= OPT_SINCE;
            break;
        case LONG_FOLLOW:
            c.follow = true;
            given |= OPT_FOLLOW;
            break;
        case 'n':
            last = optarg;
            given |= OPT_LAST;
            break;
        case 'q':
            c.headers = false;
            given |= OPT_NOHEAD;
            break;
        case 'a':
            c.all = true;
            given |= OPT_ALL;
            break;
        case 'h': help = true; break;
        case 'V': printf("leashctl %s\n", prog_version); return 0;
        case ':': return usage(NULL, "%s needs a value", argv[optind - 1]);
        default:
            if (optopt)
                return usage(NULL, "unknown option -%c", optopt);
            return usage(NULL, "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind == argc) {
        if (help) {
            usage_all(stdout);
            return 0;
        }
        return usage(NULL, NULL);
    }
    c.cmd = find_command(argv[optind]);
    if (!c.cmd)
        return usage(NULL, "unknown command '%s'", argv[optind]);
    if (help) {
        usage_command(stdout, c.cmd);
        return 0;
    }
    c.pos = argv + optind + 1;
    c.npos = argc - optind - 1;

    /* what the command takes: every check before leashd is asked */
    static const struct {
        unsigned    bit;
        const char *name;
    } names[] = {{OPT_FORMAT, "--format"}, {OPT_SINCE, "--since"},       {OPT_FOLLOW, "--follow"},
                 {OPT_LAST, "-n"},         {OPT_NOHEAD, "--no-headers"}, {OPT_ALL, "--all"}};
    if (f_alone && (given & OPT_FOLLOW) && !(c.cmd->opts & OPT_FOLLOW)) {
        if (!(c.cmd->opts & OPT_FORMAT))
            return usage(c.cmd, "%s does not take -f", c.cmd->name);
        if (!*f_alone)
            return usage(c.cmd, "-f needs a format (%s)", c.cmd->formats);
        return usage(c.cmd, "unknown format '%s' (%s)", f_alone, c.cmd->formats);
    }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((given & names[i].bit) && !(c.cmd->opts & names[i].bit))
            return usage(c.cmd, "%s does not take %s", c.cmd->name, names[i].name);
    if (c.npos < c.cmd->min_args)
        return usage(c.cmd, "%s needs %s", c.cmd->name, c.cmd->args);
    if (c.npos > c.cmd->max_args)
        return usage(c.cmd, "%s: unexpected argument '%s'", c.cmd->name, c.pos[c.cmd->max_args]);
    c.fmt = c.json ? FMT_JSON : FMT_TEXT;
    if (format) {
        if (format_parse(format, &c.fmt))
            return usage(c.cmd, "unknown format '%s' (text, json, folded or pprof)", format);
        if (!in_list(format, c.cmd->formats))
            return usage(c.cmd, "%s takes --format %s", c.cmd->name, c.cmd->formats);
        if (c.json && c.fmt != FMT_JSON)
            return usage(c.cmd, "--json and --format=%s disagree", format);
    }
    c.json = c.fmt == FMT_JSON;
    if (c.since && parse_dur(c.since) < 0)
        return usage(c.cmd, "bad --since '%s' (such as 30s, 10m, 2h, 1d)", c.since);
    if (last) {
        char *end;
        errno = 0;
        long long n = strtoll(last, &end, 10);
        if (errno || end == last || *end || n < 0)
            return usage(c.cmd, "-n takes a count, not '%s'", last);
        c.last = (size_t)n;
    }
    if (!c.socket)
        c.socket = conn_default_socket(c.socket_buf, sizeof c.socket_buf);
    return c.cmd->run(&c);
}

/* Puts /dev/null, open the wrong way round, on each of fds 0-2 that is
   closed, as gnulib's stdopen does: the control socket must never take one
   of their numbers (leashctl would print into it), and a closed stdout must
   fail as an unwritable one does. -1 when /dev/null cannot be opened. */
static int std_fds_open(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        /* the lowest free number: fd itself, as those below it are open */
        int null = open("/dev/null", fd == 0 ? O_WRONLY : O_RDONLY);
        if (null != fd) {
            if (null >= 0)
                close(null);
            return -1;
        }
    }
    return 0;
}

/* An output that could not be written (a full disk, a closed file) is a
   failure, said, as GNU tools do: a script must not take a cut-off listing
   for a whole one. A closed pipe still ends leashctl by SIGPIPE. */
int main(int argc, char **argv)
{
    if (std_fds_open())
        return 1; /* with no stderr, perhaps: nothing to say it on */
    int rc = run(argc, argv);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "leashctl: cannot write the output: %s\n",
                errno ? strerror(errno) : "write error");
        return 1;
    }
    return rc;
}
