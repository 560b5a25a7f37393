/*
 * leashd: the supervisor of every leashed process of a host.
 *
 * leashd [--config FILE] [--check-config] [--agent-socket PATH]
 *        [--control-socket PATH] [--state-dir DIR]
 */
#include "leashd.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

struct config      cfg;
struct event_base *base;
int64_t            started_wall;

/* command-line values, which override the file's at start and at reload */
static struct {
    const char *config, *agent_socket, *control_socket, *state_dir;
} opt;

static void usage(FILE *f)
{
    fprintf(f, "usage: leashd [--config FILE] [--check-config] [--agent-socket PATH]\n"
               "              [--control-socket PATH] [--state-dir DIR]\n"
               "Supervises leashed processes. With no --config it runs on built-in defaults.\n");
}

static int override(char **field, const char *value)
{
    if (!value)
        return 0;
    if (value[0] != '/') {
        fprintf(stderr, "leashd: %s: must be an absolute path\n", value);
        return -1;
    }
    free(*field);
    *field = strdup(value);
    return *field ? 0 : -1;
}

static int load(struct config *c, char *err, size_t errlen)
{
    if (config_load(c, opt.config, err, errlen))
        return -1;
    if (override(&c->agent_socket, opt.agent_socket) ||
        override(&c->control_socket, opt.control_socket) ||
        override(&c->state_dir, opt.state_dir)) {
        snprintf(err, errlen, "bad command-line path");
        config_free(c);
        return -1;
    }
    /* what listening would refuse, said by --check-config and reload too */
    bool same = strcmp(c->agent_socket, c->control_socket) == 0;
    if (same)
        snprintf(err, errlen, "%s: the agent and the control socket cannot be one path",
                 c->agent_socket);
    if (same || socket_path_check(c->agent_socket, err, errlen) ||
        socket_path_check(c->control_socket, err, errlen)) {
        config_free(c);
        return -1;
    }
    return 0;
}

int daemon_reload(char *err, size_t errlen)
{
    struct config next;
    if (load(&next, err, errlen))
        return -1;
    if (strcmp(next.agent_socket, cfg.agent_socket) ||
        strcmp(next.control_socket, cfg.control_socket) || strcmp(next.state_dir, cfg.state_dir))
        log_warn("reload: socket and state_dir changes take effect at the next start");
    char *keep[3] = {next.agent_socket, next.control_socket, next.state_dir};
    next.agent_socket = cfg.agent_socket;
    next.control_socket = cfg.control_socket;
    next.state_dir = cfg.state_dir;
    cfg.agent_socket = keep[0];
    cfg.control_socket = keep[1];
    cfg.state_dir = keep[2];
    struct config old = cfg;
    cfg = next;
    policy_reload(); /* before the old policies are freed */
    config_free(&old);
    log_info("config reloaded from %s", cfg.file ? cfg.file : "built-in defaults");
    return 0;
}

/* -------------------------------------------------------------- systemd */

static void notify(const char *msg)
{
    int r = sd_notify(0, msg); /* 0: no NOTIFY_SOCKET, not under systemd */
    if (r < 0)
        log_warn("sd_notify: %s", strerror(-r));
}

/* What `systemctl status leashd` shows under the unit's name: sent when it
   changes, at most once a tick. */
static void notify_status(void)
{
    static char last[160];
    if (!getenv("NOTIFY_SOCKET"))
        return;
    uint64_t groups, tasks, stuck, nproc = 0;
    proc_counts(&groups, &tasks, &stuck);
    for (struct proc *p = procs; p; p = p->next)
        nproc += p->hello;
    char msg[160];
    snprintf(msg, sizeof msg,
             "STATUS=%llu processes, %llu groups, %llu tasks, %llu stuck, %llu incidents",
             (unsigned long long)nproc, (unsigned long long)groups, (unsigned long long)tasks,
             (unsigned long long)stuck, (unsigned long long)incidents_total());
    if (strcmp(msg, last) == 0)
        return;
    notify(msg);
    memcpy(last, msg, sizeof last);
}

static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    notify("WATCHDOG=1");
}

/* ------------------------------------------------------------- the loop */

/* Gives freed peer buffers back to the system once the peers have gone, so
   RSS returns to its baseline (glibc keeps freed heap otherwise). */
static void trim_memory(void)
{
    static size_t  last_parked;
    static int64_t trim_at; /* a tick later: buffers are freed after the close */
    size_t         parked = limit_parked_total();
    int64_t        now = mono_ms();
    if (parked < last_parked && !trim_at)
        trim_at = now + 500;
    last_parked = parked;
    if (trim_at && now >= trim_at) {
        malloc_trim(0);
        trim_at = 0;
    }
}

static void on_agent(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                     void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    (void)arg;
    int err = agent_accept(base, fd);
    if (err)
        log_warn("agent connection: %s", strerror(-err));
}

static void on_control(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                       void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    (void)arg;
    int err = control_accept(base, fd);
    if (err)
        log_warn("control connection: %s", strerror(-err));
}

/* Out of file descriptors, accept() fails at once while the connection
   waits: a listener left on would spin. Both listeners pause for a moment
   instead, and the first failure of each episode is said. */
#define ACCEPT_PAUSE_MS 250

static struct evconnlistener *listeners[2];
static struct event          *resume_ev;
static bool                   accept_paused;

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    accept_paused = false;
    for (int i = 0; i < 2; i++)
        if (listeners[i])
            evconnlistener_enable(listeners[i]);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    (void)l;
    (void)arg;
    int e = EVUTIL_SOCKET_ERROR();
    if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM) {
        log_warn("accept: %s", strerror(e));
        return;
    }
    limit_hits[LIMIT_FDS]++;
    if (accept_paused)
        return;
    static int64_t said_mono;
    int64_t        now = mono_ms();
    if (said_mono == 0 || now - said_mono > 60000) {
        log_warn("accept: %s: not accepting for %d ms at a time until some close "
                 "(said once a minute)",
                 strerror(e), ACCEPT_PAUSE_MS);
        said_mono = now;
    }
    accept_paused = true;
    for (int i = 0; i < 2; i++)
        if (listeners[i])
            evconnlistener_disable(listeners[i]);
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
    evtimer_add(resume_ev, &tv);
}

/* Raises the soft limit on open files to the hard one: each agent holds a
   socket and a pidfd. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        log_warn("RLIMIT_NOFILE: cannot raise %llu to %llu: %s", (unsigned long long)was,
                 (unsigned long long)rl.rlim_max, strerror(errno));
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    policy_heartbeat_check();
    notify_status();
    int64_t now = mono_ms();
    agent_sweep(now);
    control_sweep(now);
    journal_flush();
    trim_memory();
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    (void)arg;
    if (sig == SIGHUP) {
        notify("RELOADING=1");
        char err[512];
        if (daemon_reload(err, sizeof err))
            log_warn("reload failed, the running config stays: %s", err);
        notify("READY=1");
        return;
    }
    log_info("%s: shutting down", strsignal((int)sig));
    notify("STOPPING=1");
    event_base_loopbreak(base);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'k'},
        {"agent-socket", required_argument, NULL, 'a'},
        {"control-socket", required_argument, NULL, 'C'},
        {"state-dir", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    bool check = false;
    int  ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': opt.config = optarg; break;
        case 'k': check = true; break;
        case 'a': opt.agent_socket = optarg; break;
        case 'C': opt.control_socket = optarg; break;
        case 's': opt.state_dir = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("leashd %s\n", LEASH_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "leashd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    log_init();
    char err[512];
    if (load(&cfg, err, sizeof err)) {
        fprintf(stderr, "leashd: %s\n", err);
        return 1;
    }
    if (check) {
        printf("%s: ok\n", opt.config ? opt.config : "(built-in defaults)");
        config_free(&cfg);
        return 0;
    }
    started_wall = wall_ms();
    signal(SIGPIPE, SIG_IGN);
    umask(077); /* every file and directory gets the mode it is given */
    raise_nofile();
    agent_no_peerpidfd = getenv("LEASHD_NO_PEERPIDFD") != NULL;
    if (incidents_open(cfg.state_dir, err, sizeof err)) {
        fprintf(stderr, "leashd: state dir %s: %s\n", cfg.state_dir, err);
        return 1;
    }
    /* Signal handling is in place before any socket opens: whoever sees a
       socket may signal leashd (a SIGHUP to reload), and must not kill it.
       Blocked until the loop's handlers are set, then delivered to them. */
    sigset_t handled, old;
    sigemptyset(&handled);
    sigaddset(&handled, SIGHUP);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGINT);
    sigprocmask(SIG_BLOCK, &handled, &old);
    base = event_base_new();
    if (!base) {
        fprintf(stderr, "leashd: cannot start the event loop\n");
        return 1;
    }
    struct event *sigs[3];
    int           signums[] = {SIGHUP, SIGTERM, SIGINT};
    for (int i = 0; i < 3; i++) {
        sigs[i] = evsignal_new(base, signums[i], on_signal, NULL);
        if (!sigs[i] || event_add(sigs[i], NULL) != 0) {
            fprintf(stderr, "leashd: cannot handle signals\n");
            return 1;
        }
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    /* sockets systemd passed (leashd.socket) are its to remove, not ours */
    int  afd = socket_inherited("agent", cfg.agent_socket);
    int  cfd = socket_inherited("control", cfg.control_socket);
    bool own_afd = afd < 0, own_cfd = cfd < 0;
    socket_inherited_done();
    if (own_afd)
        afd = socket_listen(cfg.agent_socket, 0666, err, sizeof err);
    if (afd >= 0 && own_cfd)
        cfd = socket_listen(cfg.control_socket, 0666, err, sizeof err);
    if (afd < 0 || cfd < 0) {
        fprintf(stderr, "leashd: %s\n", err);
        if (afd >= 0) {
            close(afd);
            if (own_afd)
                unlink(cfg.agent_socket);
        }
        if (cfd >= 0)
            close(cfd); /* passed by systemd: made here, it would not be failing */
        incidents_close();
        return 1;
    }
    struct evconnlistener *al =
        evconnlistener_new(base, on_agent, NULL, LEV_OPT_CLOSE_ON_FREE, -1, afd);
    struct evconnlistener *cl =
        evconnlistener_new(base, on_control, NULL, LEV_OPT_CLOSE_ON_FREE, -1, cfd);
    resume_ev = evtimer_new(base, on_resume, NULL);
    if (!al || !cl || !resume_ev) {
        fprintf(stderr, "leashd: cannot start the event loop\n");
        return 1;
    }
    listeners[0] = al;
    listeners[1] = cl;
    evconnlistener_set_error_cb(al, on_accept_error);
    evconnlistener_set_error_cb(cl, on_accept_error);
    if (cfg.metrics_listen && metrics_start(base, cfg.metrics_listen, err, sizeof err)) {
        fprintf(stderr, "leashd: %s\n", err);
        return 1;
    }
    struct event  *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 250000};
    event_add(tick, &tv);
    struct event *wd = NULL;
    uint64_t      wusec = 0;
    if (sd_watchdog_enabled(0, &wusec) > 0 && wusec > 0) {
        uint64_t       half = wusec / 2; /* fed twice per period, as systemd advises */
        struct timeval wtv = {(time_t)(half / 1000000), (suseconds_t)(half % 1000000)};
        wd = event_new(base, -1, EV_PERSIST, watchdog_cb, NULL);
        event_add(wd, &wtv);
    }
    log_info("leashd %s: agents on %s%s, control on %s%s, state in %s%s%s", LEASH_VERSION,
             cfg.agent_socket, own_afd ? "" : " (from systemd)", cfg.control_socket,
             own_cfd ? "" : " (from systemd)", cfg.state_dir,
             cfg.metrics_listen ? ", metrics on " : "",
             cfg.metrics_listen ? cfg.metrics_listen : "");
    notify("READY=1");

    event_base_dispatch(base);

    evconnlistener_free(al);
    evconnlistener_free(cl);
    listeners[0] = listeners[1] = NULL;
    event_free(resume_ev);
    leashd_stopping = true;
    control_close_all();
    agent_close_all();
    if (own_afd)
        unlink(cfg.agent_socket);
    if (own_cfd)
        unlink(cfg.control_socket);
    metrics_stop();
    incidents_close();
    for (int i = 0; i < 3; i++)
        event_free(sigs[i]);
    event_free(tick);
    if (wd)
        event_free(wd);
    log_info("stopped");
    limits_free();
    config_free(&cfg);
    return 0;
}
