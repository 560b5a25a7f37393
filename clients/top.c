/* top.c: leashctl top. Each second it asks leashd for its status, its
   processes and its incidents, and redraws the terminal (the alternate
   screen when stdout is one); q quits. */
#define _GNU_SOURCE
#include "top.h"

#include "conn.h"
#include "format.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* What one refresh gathered; the responses are leashd's, kept until the next. */
struct view {
    Leash__Control__Response *status, *ps, *incidents;
};

static int keep_cb(void *arg, const Leash__Control__Response *r)
{
    Leash__Control__Response **slot = arg;
    /* conn_call frees r after this: keep a copy by packing it again */
    size_t   n = leash__control__response__get_packed_size(r);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return 1;
    leash__control__response__pack(r, buf);
    if (*slot) /* one answer is expected: the last one counts */
        leash__control__response__free_unpacked(*slot, NULL);
    *slot = leash__control__response__unpack(NULL, n, buf);
    free(buf);
    return *slot ? 0 : 1;
}

static void view_free(struct view *v)
{
    Leash__Control__Response **all[] = {&v->status, &v->ps, &v->incidents};
    for (int i = 0; i < 3; i++) {
        if (*all[i])
            leash__control__response__free_unpacked(*all[i], NULL);
        *all[i] = NULL;
    }
}

/* 0 when leashd answered all three requests. */
static int fetch(const char *socket, struct view *v)
{
    Leash__Control__Request          req = LEASH__CONTROL__REQUEST__INIT;
    Leash__Control__StatusRequest    st = LEASH__CONTROL__STATUS_REQUEST__INIT;
    Leash__Control__PsRequest        ps = LEASH__CONTROL__PS_REQUEST__INIT;
    Leash__Control__IncidentsRequest in = LEASH__CONTROL__INCIDENTS_REQUEST__INIT;
    req.req_case = LEASH__CONTROL__REQUEST__REQ_STATUS;
    req.status = &st;
    if (conn_call(socket, &req, keep_cb, &v->status, 0) || !v->status)
        return -1;
    req.req_case = LEASH__CONTROL__REQUEST__REQ_PS;
    req.ps = &ps;
    if (conn_call(socket, &req, keep_cb, &v->ps, 0) || !v->ps)
        return -1;
    req.req_case = LEASH__CONTROL__REQUEST__REQ_INCIDENTS;
    req.incidents = &in;
    if (conn_call(socket, &req, keep_cb, &v->incidents, 0) || !v->incidents)
        return -1;
    return 0;
}

/* Most stuck first, then most tasks, then by pid. */
static int cmp_proc(const void *a, const void *b)
{
    const Leash__Control__Process *x = *(Leash__Control__Process *const *)a,
                                  *y = *(Leash__Control__Process *const *)b;
    if (x->stuck != y->stuck)
        return x->stuck > y->stuck ? -1 : 1;
    if (x->tasks != y->tasks)
        return x->tasks > y->tasks ? -1 : 1;
    return (x->pid > y->pid) - (x->pid < y->pid);
}

/* The screen as text, one line per row, at most rows lines. */
static char *render(const char *socket, struct view *v, bool ok, int rows)
{
    char  *text = NULL;
    size_t len = 0;
    FILE  *m = open_memstream(&text, &len);
    if (!m)
        return NULL;
    char      clock[16];
    time_t    now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(clock, sizeof clock, "%H:%M:%S", &tm);
    if (!ok) {
        fprintf(m, "leashctl top  %s  no answer from leashd at %s; retrying every second\n", clock,
                socket);
        fprintf(m, "\nq quits\n");
        fclose(m);
        return text;
    }
    const Leash__Control__Status *s = v->status->status;
    fprintf(m,
            "leashd %s (pid %d)  %s  up %llds  processes %llu  groups %llu  tasks %llu  "
            "stuck %llu  incidents %llu\n\n",
            s->version, s->pid, clock, (long long)s->uptime_s, (unsigned long long)s->processes,
            (unsigned long long)s->groups, (unsigned long long)s->tasks,
            (unsigned long long)s->stuck, (unsigned long long)s->incidents);
    Leash__Control__Ps *ps = v->ps->ps;
    if (ps->n_processes > 1)
        qsort(ps->processes, ps->n_processes, sizeof *ps->processes, cmp_proc);
    /* processes get what incidents leave, at least half */
    size_t inc = v->incidents->incidents->n_incidents;
    int    room = rows - 2 /* status */ - 2 /* footer */;
    int    inc_rows = inc ? (int)inc + 2 : 0;
    int    ps_rows = (int)ps->n_processes + 1;
    if (ps_rows + inc_rows > room) {
        inc_rows = room - ps_rows < room / 2 ? room / 2 : room - ps_rows;
        if (inc_rows < 0)
            inc_rows = 0;
        ps_rows = room - inc_rows;
    }
    if (ps_rows < 1)
        ps_rows = 1;
    /* the rows that fit, in a copy: the response frees as many processes
       as its own count says */
    Leash__Control__Ps shown = *ps;
    if ((size_t)ps_rows < shown.n_processes + 1)
        shown.n_processes = (size_t)(ps_rows > 1 ? ps_rows - 1 : 0);
    print_ps(m, &shown, false, true, NULL);
    if (inc_rows > 2) {
        fprintf(m, "\n");
        print_incidents(m, v->incidents->incidents, false, false, true, (size_t)(inc_rows - 2));
    }
    fprintf(m, "\nq quits\n");
    fclose(m);
    return text;
}

/* Each line cut to cols, erased to its end; the rest of the screen erased. */
static void draw(const char *text, int rows, int cols)
{
    fputs("\033[H", stdout);
    int         row = 0;
    const char *p = text;
    while (p && *p && row < rows) {
        const char *nl = strchr(p, '\n');
        size_t      n = nl ? (size_t)(nl - p) : strlen(p);
        char       *line = strndup(p, n);
        if (line) {
            put_cell(stdout, line, text_width(line) < cols ? text_width(line) : cols, true);
            free(line);
        }
        fputs("\033[K", stdout);
        if (++row < rows)
            fputs("\r\n", stdout);
        p = nl ? nl + 1 : NULL;
    }
    fputs("\033[J", stdout);
    fflush(stdout);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int top_run(const char *socket)
{
    struct view v = {0};
    if (fetch(socket, &v)) { /* said why on stderr */
        view_free(&v);
        return 1;
    }
    struct termios saved;
    bool           tty = isatty(0) && tcgetattr(0, &saved) == 0;
    if (tty) {
        struct termios raw = saved;
        raw.c_lflag &= (tcflag_t) ~(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        tcsetattr(0, TCSANOW, &raw);
    }
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: poll returns */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    /* errors go to the screen from here on, not over it */
    int saved_err = dup(2), devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull >= 0) {
        dup2(devnull, 2);
        close(devnull);
    }
    fputs("\033[?1049h\033[?25l", stdout); /* alternate screen, no cursor */
    bool    ok = true, input = true;
    int64_t next = mono_ms();
    while (!stop) {
        struct winsize ws;
        int            rows = 24, cols = 80;
        if (ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col) {
            rows = ws.ws_row;
            cols = ws.ws_col;
        }
        char *text = render(socket, &v, ok, rows);
        draw(text, rows, cols);
        free(text);
        if (ferror(stdout))
            break; /* no screen to draw on: main says so */
        next += 1000;
        for (;;) { /* keys until the next second */
            int64_t       left = next - mono_ms();
            struct pollfd p = {.fd = 0, .events = POLLIN};
            if (stop || left <= 0)
                break;
            int n = poll(&p, input ? 1 : 0, (int)left);
            if (n < 0 && errno != EINTR)
                break;
            if (n <= 0)
                continue;
            char    keys[64];
            ssize_t r = read(0, keys, sizeof keys);
            if (r <= 0) { /* no more input (not a terminal): only signals stop it */
                input = false;
                continue;
            }
            if (memchr(keys, 'q', (size_t)r) || memchr(keys, 'Q', (size_t)r))
                stop = 1;
        }
        if (stop)
            break;
        view_free(&v);
        ok = fetch(socket, &v) == 0;
        if (mono_ms() > next + 1000)
            next = mono_ms(); /* leashd was slow: no burst of redraws */
    }
    fputs("\033[?25h\033[?1049l", stdout);
    fflush(stdout);
    if (saved_err >= 0) {
        dup2(saved_err, 2);
        close(saved_err);
    }
    if (tty)
        tcsetattr(0, TCSANOW, &saved);
    view_free(&v);
    return 0;
}
