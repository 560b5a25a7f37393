/*
 * proc.c: what a running task's thread is doing, from /proc/self/task/TID:
 * its CPU time (schedstat, else stat) and the system call it is in
 * (syscall). Read only when a dump or a stuck scan is made.
 *
 * The kernel counts CPU per thread, not per task, and reading it costs a
 * system call, which the spawn path must not pay. So a task's share is
 * worked out from samples: each read keeps, per thread, the task it ran and
 * the thread's CPU then. A task's CPU counts from the thread's CPU when the
 * task started, known exactly when the task is the first its thread ran
 * (a new thread's CPU is ~0), else taken from an earlier sample of that
 * thread made before the task started, else from the first sample that saw
 * the task (which then undercounts). cpu_pct is over the last second or
 * so: from a checkpoint of the same task taken at least 100 ms (and at most
 * about 2 s) before, else since the task started when its start CPU is
 * known, else unknown (-1).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int read_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n;
    do
        n = read(fd, buf, size - 1);
    while (n < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    if (n < 0)
        return -e;
    buf[n] = '\0';
    return (int)n;
}

/* The thread's CPU time in ns, or -1. */
static int64_t thread_cpu_ns(int tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", tid);
    if (read_file(path, buf, sizeof buf) > 0) {
        long long ns;
        if (sscanf(buf, "%lld", &ns) == 1 && ns >= 0)
            return ns;
    }
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    if (read_file(path, buf, sizeof buf) <= 0)
        return -1;
    /* the name in parentheses may hold anything: fields count from its end */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long ut, st;
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0)
        hz = 100;
    return (int64_t)((ut + st) * (1000000000ull / (unsigned long long)hz));
}

/* ----------------------------------------------------------- the samples */

struct sample {
    int      tid; /* 0: empty */
    uint64_t task;
    int64_t  start_cpu;           /* the thread's CPU when the task started; -1: unknown */
    int64_t  first_cpu;           /* where its cpu_ms counts from */
    int64_t  last_wall, last_cpu; /* the thread's latest sample */
    /* checkpoints of this task at least a second apart, [1] newest; wall 0: none */
    int64_t wall[2], cpu[2];
};

#define NSAMPLES 1024
static pthread_mutex_t samples_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sample   samples[NSAMPLES];

static struct sample *sample_slot(int tid)
{
    unsigned       h = ((unsigned)tid * 2654435761u) % NSAMPLES;
    struct sample *empty = NULL;
    for (unsigned i = 0; i < 16; i++) {
        struct sample *s = &samples[(h + i) % NSAMPLES];
        if (s->tid == tid)
            return s;
        if (!s->tid && !empty)
            empty = s;
    }
    if (!empty) /* crowded: take over the home slot */
        empty = &samples[h];
    memset(empty, 0, sizeof *empty);
    empty->tid = tid;
    return empty;
}

static void cpu_use(const struct leash__proc_task *in, struct leash__proc_use *out)
{
    int64_t cpu = thread_cpu_ns(in->tid);
    if (cpu < 0)
        return;
    int64_t now = leash__now_ns();
    pthread_mutex_lock(&samples_mu);
    struct sample *s = sample_slot(in->tid);
    if (s->task != in->task) {
        int64_t start_cpu = -1;
        if (in->first_on_thread)
            start_cpu = 0;
        else if (s->task && s->last_wall <= in->start_ns)
            start_cpu = s->last_cpu; /* counts what the thread ran since, too */
        s->task = in->task;
        s->start_cpu = start_cpu;
        s->first_cpu = start_cpu >= 0 ? start_cpu : cpu;
        s->wall[0] = 0;
        s->wall[1] = now;
        s->cpu[1] = cpu;
    }
    int64_t wall_run = now - in->start_ns;
    out->cpu_ms = (cpu - s->first_cpu) / 1000000;
    if (out->cpu_ms < 0)
        out->cpu_ms = 0;
    if (wall_run > 0 && out->cpu_ms > wall_run / 1000000)
        out->cpu_ms = wall_run / 1000000;
    /* the window: from the newest checkpoint once it is 100 ms old, else
       from the one before (then 1 to 2 s), else since the task started */
    int     k = -1;
    int64_t pct = -1;
    if (now - s->wall[1] >= 100000000)
        k = 1;
    else if (s->wall[0])
        k = 0;
    if (k >= 0)
        pct = (cpu - s->cpu[k]) * 100 / (now - s->wall[k]);
    else if (s->start_cpu >= 0 && wall_run >= 1000000)
        pct = (cpu - s->start_cpu) * 100 / wall_run;
    if (k >= 0 || pct >= 0)
        out->cpu_pct = pct < 0 ? 0 : pct > 100 ? 100 : (int)pct;
    if (now - s->wall[1] >= 1000000000) {
        s->wall[0] = s->wall[1];
        s->cpu[0] = s->cpu[1];
        s->wall[1] = now;
        s->cpu[1] = cpu;
    }
    s->last_wall = now;
    s->last_cpu = cpu;
    pthread_mutex_unlock(&samples_mu);
}

/* --------------------------------------------------------- system calls */

static const struct {
    long        nr;
    const char *name;
} sysnames[] = {
#define S(n)                                                                                       \
    {                                                                                              \
        SYS_##n, #n                                                                                \
    }
    S(read),           S(write),
    S(openat),         S(close),
    S(readv),          S(writev),
    S(pread64),        S(pwrite64),
    S(ioctl),          S(fsync),
    S(fdatasync),      S(flock),
    S(fcntl),          S(ppoll),
    S(pselect6),       S(epoll_pwait),
    S(futex),          S(clock_nanosleep),
    S(nanosleep),      S(sched_yield),
    S(socket),         S(connect),
    S(accept4),        S(sendto),
    S(recvfrom),       S(sendmsg),
    S(recvmsg),        S(shutdown),
    S(wait4),          S(waitid),
    S(msgrcv),         S(msgsnd),
    S(semtimedop),     S(io_getevents),
    S(getrandom),      S(mmap),
    S(munmap),         S(brk),
    S(execve),         S(exit),
    S(exit_group),     S(rt_sigtimedwait),
    S(rt_sigsuspend),  S(splice),
    S(sendfile),       S(copy_file_range),
#ifdef SYS_poll
    S(poll),
#endif
#ifdef SYS_select
    S(select),
#endif
#ifdef SYS_epoll_wait
    S(epoll_wait),
#endif
#ifdef SYS_accept
    S(accept),
#endif
#ifdef SYS_pause
    S(pause),
#endif
#ifdef SYS_open
    S(open),
#endif
#ifdef SYS_io_uring_enter
    S(io_uring_enter),
#endif
#ifdef SYS_epoll_pwait2
    S(epoll_pwait2),
#endif
#undef S
};

const char *leash__syscall_name(long nr, char *buf, size_t size)
{
    for (size_t i = 0; i < sizeof sysnames / sizeof sysnames[0]; i++)
        if (sysnames[i].nr == nr)
            return sysnames[i].name;
    snprintf(buf, size, "syscall_%ld", nr);
    return buf;
}

/* The system call the thread is in, from /proc/.../syscall: "nr a1 .. a6 sp
   pc" when in one, "running", or "-1 sp pc" when not. */
static void syscall_use(int tid, struct leash__proc_use *out)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    if (read_file(path, buf, sizeof buf) <= 0)
        return;
    long               nr;
    unsigned long long a[6];
    if (sscanf(buf, "%ld %llx %llx %llx %llx %llx %llx", &nr, &a[0], &a[1], &a[2], &a[3], &a[4],
               &a[5]) != 7 ||
        nr < 0)
        return;
    out->sys_nr = nr;
    for (int i = 0; i < 6; i++)
        out->sys_args[i] = a[i];
}

void leash__proc_read(const struct leash__proc_task *in, struct leash__proc_use *out)
{
    out->cpu_ms = -1;
    out->cpu_pct = -1;
    out->sys_nr = -1;
    memset(out->sys_args, 0, sizeof out->sys_args);
    if (in->tid <= 0)
        return;
    cpu_use(in, out);
    /* the thread making the dump is in read(2) of its own syscall file */
    if (in->tid != (int)syscall(SYS_gettid))
        syscall_use(in->tid, out);
}

void leash__proc_atfork_child(void)
{
    samples_mu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
}
