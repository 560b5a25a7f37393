/*
 * crash.c: what a fatal signal leaves behind, and LEASH_LEAKCHECK.
 *
 * On SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT the handler writes the
 * signal, the faulting address and the task its thread ran into the
 * registry (leashd reads it once the process is gone), with stores and
 * system calls that are async-signal-safe. Then it puts back the handler it
 * replaced and lets the signal happen again: a fault re-executes the
 * faulting instruction, any other cause is raised anew (blocked until the
 * handler returns). So the previous handler runs as it would have, and with
 * none the process dies of the signal, with its core dump and exit status
 * as without leash. A previous handler that recovers (siglongjmp) lets the
 * thread run on: when that thread next gets to leash (a blocking call, or
 * its task's end), the record is taken back, since the process did not die
 * of it, and leash's handler is put in front again for the next one.
 *
 * Handlers run on an alternate stack, so a stack overflow is recorded too:
 * library threads get one when they start, threads that call leash when
 * they first do, unless they have one already.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "snapshot.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
#define NFATAL (sizeof fatal / sizeof fatal[0])

static struct sigaction old_act[NFATAL];
static bool             installed;
/* the tid of a thread that took a fatal signal, until it is seen running
   leash code again (it recovered); 0: none. A lock-free atomic: written by
   a signal handler, read by every thread. */
_Atomic int leash__crash_tid;

static int fatal_index(int sig)
{
    for (size_t i = 0; i < NFATAL; i++)
        if (fatal[i] == sig)
            return (int)i;
    return -1;
}

static void on_fatal(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    int saved = errno;
    int i = fatal_index(sig);
    if (i < 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    int tid = (int)syscall(SYS_gettid);
    leash__reg_crash(sig, si ? si->si_code : 0, si ? si->si_addr : NULL, leash__self_tls, tid,
                     (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec);
    atomic_store_explicit(&leash__crash_tid, tid, memory_order_relaxed);
    sigaction(sig, &old_act[i], NULL);
    /* a fault (si_code > 0, from the kernel) comes again when the
       instruction is re-executed; anything else is raised again, and lands
       once this handler returns */
    if (!si || si->si_code <= 0)
        syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), sig);
    errno = saved;
}

static void arm(int i)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fatal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(fatal[i], &sa, &old_act[i]);
}

void leash__crash_survived(leash_task *t)
{
    if (atomic_load_explicit(&leash__crash_tid, memory_order_relaxed) != leash__gettid())
        return; /* another thread's: it may still be dying of it */
    atomic_store_explicit(&leash__crash_tid, 0, memory_order_relaxed);
    leash__reg_crash_undo(t);
    /* the handler that recovered is the one in place: leash's goes in
       front of it again, for each signal whose handler was put back */
    for (size_t i = 0; i < NFATAL; i++) {
        struct sigaction cur;
        if (sigaction(fatal[i], NULL, &cur) == 0 && cur.sa_sigaction != on_fatal)
            arm((int)i);
    }
}

void leash__crash_install(void)
{
    const char *e = getenv("LEASH_CRASH");
    if (e && strcmp(e, "off") == 0)
        return;
    for (size_t i = 0; i < NFATAL; i++)
        arm((int)i);
    installed = true;
}

static _Thread_local int my_tid;

int leash__gettid(void)
{
    if (unlikely(!my_tid))
        my_tid = (int)syscall(SYS_gettid);
    return my_tid;
}

void leash__gettid_forget(void)
{
    my_tid = 0;
}

/* ------------------------------------------------------- alternate stacks */

static size_t altstack_size(void)
{
    long s = sysconf(_SC_SIGSTKSZ);
    if (s < 0 || s < 16384)
        s = 16384;
    return (size_t)s + 16384; /* room for the handler's calls */
}

void *leash__altstack_on(void)
{
    stack_t cur;
    if (!installed || sigaltstack(NULL, &cur) != 0 || !(cur.ss_flags & SS_DISABLE))
        return NULL; /* not wanted, or the thread has one of its own */
    /* mapped, not malloc'd: in the child of a fork, the stacks of the
       parent's other threads are gone with them, and no leak to report */
    stack_t ss = {.ss_size = altstack_size()};
    ss.ss_sp = mmap(NULL, ss.ss_size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (ss.ss_sp == MAP_FAILED)
        return NULL;
    if (sigaltstack(&ss, NULL) != 0) {
        munmap(ss.ss_sp, ss.ss_size);
        return NULL;
    }
    return ss.ss_sp;
}

void leash__altstack_off(void *stack)
{
    if (!stack)
        return;
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && cur.ss_sp == stack && !(cur.ss_flags & SS_ONSTACK)) {
        stack_t off = {.ss_flags = SS_DISABLE};
        sigaltstack(&off, NULL);
        munmap(stack, altstack_size());
    }
}

void leash__fatal_signals(sigset_t *set)
{
    for (size_t i = 0; i < NFATAL; i++)
        sigdelset(set, fatal[i]);
}

/* --------------------------------------------------------------- leakcheck */

/* goleak's VerifyNone for C: a test binary that leaves a task running fails */
static void leakcheck_at_exit(void)
{
    struct leash_stats st;
    if (leash_stats(&st) != 0)
        return;
    /* a task that calls exit() itself is not left behind by it (goleak
       leaves out the goroutine that verifies, too) */
    leash_task *self = leash__self_tls;
    /* (a task that forked is in no group in the child, and not counted) */
    uint64_t live = st.tasks_live - (self && !self->root && self->group && st.tasks_live);
    if (live == 0)
        return;
    char    line[160];
    int     n = snprintf(line, sizeof line,
                         "leash[%d]: LEASH_LEAKCHECK: %llu task(s) still alive at exit:\n",
                         (int)getpid(), (unsigned long long)live);
    ssize_t r = write(STDERR_FILENO, line, (size_t)n);
    (void)r;
    leash_dump(STDERR_FILENO, LEASH_DUMP_TEXT);
    fflush(NULL);
    _exit(70);
}

void leash__leakcheck_install(void)
{
    const char *e = getenv("LEASH_LEAKCHECK");
    if (e && strcmp(e, "1") == 0)
        atexit(leakcheck_at_exit);
}
