/*
 * leashd_bench: how fast leashd takes in events, what it costs in CPU and
 * memory per tracked task, and how long leashctl takes with many tasks.
 * Starts its own leashd on sockets in a temporary directory and speaks the
 * agent protocol to it directly. One figure a line:
 *   RESULT <name> <value> <unit>
 *
 * Its floor: protobuf-c unpacking the same frames from memory, with no
 * socket and no model behind it, into a bump arena as leashd does
 * (pbc_decode_events_per_cpu_s).
 *
 * Usage: leashd_bench LEASHD LEASHCTL [--quick] [--ingest-only]
 *   --ingest-only: the ingest figures and the decode floor, not memory
 *   and leashctl (bench/run's later rounds)
 */
#define _GNU_SOURCE
#include "frame.h"
#include "leash/agent.pb-c.h"
#include "leash/control.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *leashd_bin, *leashctl_bin;
static char        dir[64], agent_sock[128], control_sock[128];
static pid_t       leashd_pid;
static bool        quick, ingest_only;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void result(const char *name, double v, const char *unit)
{
    printf("RESULT %s %.3f %s\n", name, v, unit);
    fflush(stdout);
}

static int connect_to(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t             len = strlen(path);
    if (len >= sizeof sa.sun_path)
        return -1;
    memcpy(sa.sun_path, path, len + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            perror("leashd_bench: write");
            exit(1);
        }
        p += w;
        n -= (size_t)w;
    }
}

static uint8_t *frame_msg(const Leash__Agent__AgentMessage *m, size_t *len)
{
    uint8_t *b = leash_frame_pack(&m->base, len);
    if (!b) {
        fprintf(stderr, "leashd_bench: out of memory\n");
        exit(1);
    }
    return b;
}

/* An agent connection after its Hello (the reply is left unread). */
static int agent(const char *name)
{
    int fd = connect_to(agent_sock);
    if (fd < 0) {
        perror("leashd_bench: connect");
        exit(1);
    }
    Leash__Agent__Hello h = LEASH__AGENT__HELLO__INIT;
    h.version = 1;
    h.name = (char *)name;
    Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_HELLO;
    m.hello = &h;
    size_t   n;
    uint8_t *b = frame_msg(&m, &n);
    send_all(fd, b, n);
    free(b);
    return fd;
}

/* A frame of `count` events: task starts (ids from first) in group 1, and
   their ends when ends is set. */
static uint8_t *events_frame(uint64_t first, int count, bool ends, size_t *len)
{
    Leash__Agent__Event  *e = calloc((size_t)count, sizeof *e);
    Leash__Agent__Event **ep = calloc((size_t)count, sizeof *ep);
    for (int i = 0; i < count; i++) {
        leash__agent__event__init(&e[i]);
        bool end = ends && (i & 1);
        e[i].kind =
            end ? LEASH__AGENT__EVENT__KIND__TASK_END : LEASH__AGENT__EVENT__KIND__TASK_START;
        e[i].group = 1;
        e[i].task = first + (uint64_t)(ends ? i / 2 : i);
        if (!end) {
            e[i].fn = "worker";
            e[i].site = "service.c:42";
        }
        ep[i] = &e[i];
    }
    Leash__Agent__Events es = LEASH__AGENT__EVENTS__INIT;
    es.n_events = (size_t)count;
    es.events = ep;
    Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_EVENTS;
    m.events = &es;
    uint8_t *b = frame_msg(&m, len);
    free(e);
    free(ep);
    return b;
}

static void group_open(int fd)
{
    Leash__Agent__Event e = LEASH__AGENT__EVENT__INIT, *ep = &e;
    e.kind = LEASH__AGENT__EVENT__KIND__GROUP_OPEN;
    e.group = 1;
    e.name = "requests";
    e.deadline_ms_left = -1;
    Leash__Agent__Events es = LEASH__AGENT__EVENTS__INIT;
    es.n_events = 1;
    es.events = &ep;
    Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_EVENTS;
    m.events = &es;
    size_t   n;
    uint8_t *b = frame_msg(&m, &n);
    send_all(fd, b, n);
    free(b);
}

/* leashd's status over the control socket: events received, tasks tracked. */
static void status(uint64_t *events, uint64_t *tasks)
{
    int                           fd = connect_to(control_sock);
    Leash__Control__Request       r = LEASH__CONTROL__REQUEST__INIT;
    Leash__Control__StatusRequest s = LEASH__CONTROL__STATUS_REQUEST__INIT;
    r.version = 1;
    r.req_case = LEASH__CONTROL__REQUEST__REQ_STATUS;
    r.status = &s;
    uint8_t buf[64];
    size_t  n = leash__control__request__pack(&r, buf + 4);
    leash_frame_put_len(buf, (uint32_t)n);
    send_all(fd, buf, n + 4);
    uint8_t in[4096];
    size_t  got = 0;
    ssize_t k;
    while ((k = read(fd, in + got, sizeof in - got)) > 0)
        got += (size_t)k;
    close(fd);
    Leash__Control__Response *resp =
        got > 4 ? leash__control__response__unpack(NULL, got - 4, in + 4) : NULL;
    if (!resp || resp->resp_case != LEASH__CONTROL__RESPONSE__RESP_STATUS) {
        fprintf(stderr, "leashd_bench: no status from leashd\n");
        exit(1);
    }
    *events = resp->status->events;
    *tasks = resp->status->tasks;
    leash__control__response__free_unpacked(resp, NULL);
}

static double cpu_s(void)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)leashd_pid);
    int     fd = open(path, O_RDONLY);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    const char   *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* fields after the command: state is 3rd; utime 14th, stime 15th */
    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long rss_kb(void)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)leashd_pid);
    FILE *f = fopen(path, "r");
    long  kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static void start_leashd(void)
{
    snprintf(dir, sizeof dir, "/tmp/leashd-bench-XXXXXX");
    if (!mkdtemp(dir))
        exit(1);
    snprintf(agent_sock, sizeof agent_sock, "%s/agent.sock", dir);
    snprintf(control_sock, sizeof control_sock, "%s/control.sock", dir);
    char state[128], conf[128];
    snprintf(state, sizeof state, "%s/state", dir);
    /* The 50 agents here are one process of one uid, each sending 4096-event
       frames as fast as it can: together they park more unfinished frame
       bytes than the per-uid bound that protects leashd from one hostile
       user (uid_buffer_max), and a loaded machine can leave a frame
       unfinished past peer_timeout. Ingest is measured with both lifted,
       and memory per task at 1M tasks with objects_per_process above that. */
    snprintf(conf, sizeof conf, "%s/leashd.conf", dir);
    FILE *cf = fopen(conf, "w");
    if (!cf ||
        fprintf(cf, "uid_buffer_max = 1073741824;\npeer_timeout = \"60s\";\n"
                    "objects_per_process = 2000000;\n") < 0 ||
        fclose(cf) != 0) {
        fprintf(stderr, "leashd_bench: cannot write %s\n", conf);
        exit(1);
    }
    leashd_pid = fork();
    if (leashd_pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 2);
        execl(leashd_bin, "leashd", "--config", conf, "--agent-socket", agent_sock,
              "--control-socket", control_sock, "--state-dir", state, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        int fd = connect_to(control_sock);
        if (fd >= 0) {
            close(fd);
            return;
        }
        usleep(10000);
    }
    fprintf(stderr, "leashd_bench: leashd did not start\n");
    exit(1);
}

static void stop_leashd(void)
{
    kill(leashd_pid, SIGTERM);
    waitpid(leashd_pid, NULL, 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "leashd_bench: cannot remove %s\n", dir);
}

/* Waits until leashd has counted `want` events in all. */
static void wait_events(uint64_t want)
{
    uint64_t ev, tasks;
    for (;;) {
        status(&ev, &tasks);
        if (ev >= want)
            return;
        usleep(500); /* leave leashd the CPU it is measured on */
    }
}

struct sender {
    int      fd;
    uint8_t *frame;
    size_t   len;
    int      frames;
};

static void *send_frames(void *arg)
{
    struct sender *s = arg;
    for (int i = 0; i < s->frames; i++)
        send_all(s->fd, s->frame, s->len);
    return NULL;
}

/* events/s with `agents` connections, each sending start/end pairs. */
static void ingest(int agents, uint64_t total)
{
    enum { PER_FRAME = 4096 };
    struct sender *s = calloc((size_t)agents, sizeof *s);
    pthread_t     *th = calloc((size_t)agents, sizeof *th);
    uint64_t       ev0, tasks;
    for (int a = 0; a < agents; a++) {
        char name[32];
        snprintf(name, sizeof name, "agent-%d", a);
        s[a].fd = agent(name);
        group_open(s[a].fd);
        s[a].frame = events_frame(1000, PER_FRAME, true, &s[a].len);
        s[a].frames = (int)(total / (uint64_t)agents / PER_FRAME);
    }
    uint64_t sent = (uint64_t)agents * (uint64_t)s[0].frames * PER_FRAME;
    status(&ev0, &tasks);
    double  c0 = cpu_s();
    int64_t t0 = now_ns();
    for (int a = 0; a < agents; a++)
        pthread_create(&th[a], NULL, send_frames, &s[a]);
    for (int a = 0; a < agents; a++)
        pthread_join(th[a], NULL);
    wait_events(ev0 + sent);
    double secs = (double)(now_ns() - t0) / 1e9;
    double cpu = cpu_s() - c0;
    char   name[64];
    snprintf(name, sizeof name, "leashd_events_%d_agents", agents);
    result(name, (double)sent / secs, "events/s");
    snprintf(name, sizeof name, "leashd_events_per_cpu_s_%d_agents", agents);
    result(name, (double)sent / (cpu > 0 ? cpu : 1e-9), "events/cpu-s");
    snprintf(name, sizeof name, "leashd_cpu_%d_agents", agents);
    result(name, 100.0 * cpu / secs, "%");
    for (int a = 0; a < agents; a++) {
        close(s[a].fd);
        free(s[a].frame);
    }
    free(s);
    free(th);
}

/* A bump arena for protobuf-c, emptied after each message. */
static uint8_t arena[8 << 20];
static size_t  arena_used;

static void *arena_alloc(void *ctx, size_t n)
{
    (void)ctx;
    n = (n + 15) & ~(size_t)15;
    if (arena_used + n > sizeof arena)
        return NULL;
    void *p = arena + arena_used;
    arena_used += n;
    return p;
}

static void arena_free(void *ctx, void *p)
{
    (void)ctx;
    (void)p;
}

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The floor of ingest: unpacking the agent's frames, events per CPU-second. */
static void decode_floor(void)
{
    enum { PER_FRAME = 4096 };
    size_t             len;
    uint8_t           *b = events_frame(1000, PER_FRAME, true, &len);
    ProtobufCAllocator a = {.alloc = arena_alloc, .free = arena_free};
    int                frames = quick ? 200 : 2000;
    uint64_t           n = 0;
    double             c0 = thread_cpu_s();
    for (int i = 0; i < frames; i++) {
        arena_used = 0;
        Leash__Agent__AgentMessage *m = leash__agent__agent_message__unpack(
            &a, len - LEASH_FRAME_HEADER, b + LEASH_FRAME_HEADER);
        if (!m || m->msg_case != LEASH__AGENT__AGENT_MESSAGE__MSG_EVENTS) {
            fprintf(stderr, "leashd_bench: cannot unpack its own frame\n");
            exit(1);
        }
        n += m->events->n_events;
    }
    double cpu = thread_cpu_s() - c0;
    result("pbc_decode_events_per_cpu_s", (double)n / (cpu > 0 ? cpu : 1e-9), "events/cpu-s");
    free(b);
}

/* RSS per task while leashd tracks `n` live tasks. */
static int track(uint64_t n, const char *label)
{
    uint64_t ev0, tasks;
    status(&ev0, &tasks);
    long before = rss_kb();
    int  fd = agent(label);
    group_open(fd);
    enum { PER_FRAME = 8192 };
    for (uint64_t first = 1; first <= n; first += PER_FRAME) {
        int      count = (int)(n - first + 1 < PER_FRAME ? n - first + 1 : PER_FRAME);
        size_t   len;
        uint8_t *b = events_frame(first, count, false, &len);
        send_all(fd, b, len);
        free(b);
    }
    wait_events(ev0 + n + 1);
    long after = rss_kb();
    char name[64];
    snprintf(name, sizeof name, "leashd_bytes_per_task_%s", label);
    result(name, (double)(after - before) * 1024.0 / (double)n, "bytes/task");
    return fd;
}

static double run_ctl(const char *what)
{
    int64_t t0 = now_ns();
    pid_t   p = fork();
    if (p == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        execl(leashctl_bin, "leashctl", "--socket", control_sock, what, (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(p, &st, 0);
    return (double)(now_ns() - t0) / 1e6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void ctl_latency(const char *what)
{
    double v[21];
    int    n = quick ? 5 : 21;
    for (int i = 0; i < n; i++)
        v[i] = run_ctl(what);
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    char name[64];
    snprintf(name, sizeof name, "leashctl_%s_100k_tasks", what);
    result(name, v[n / 2], "ms");
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: leashd_bench LEASHD LEASHCTL [--quick] [--ingest-only]\n");
        return 2;
    }
    leashd_bin = argv[1];
    leashctl_bin = argv[2];
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = true;
        else if (!strcmp(argv[i], "--ingest-only"))
            ingest_only = true;
        else {
            fprintf(stderr, "leashd_bench: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    decode_floor();
    start_leashd();
    uint64_t total = quick ? 2000000 : 20000000;
    ingest(1, total);
    ingest(50, total);
    stop_leashd();
    if (ingest_only)
        return 0; /* a fresh leashd for memory: its heap starts empty */
    start_leashd();
    int a = track(100000, "100k");
    ctl_latency("ps");
    ctl_latency("status");
    close(a);
    if (!quick) {
        stop_leashd();
        start_leashd();
        close(track(1000000, "1M"));
    }
    stop_leashd();
    return 0;
}
