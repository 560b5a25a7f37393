/* sys.c: clocks, futexes, the internal lock and small string helpers. */
#define _GNU_SOURCE
#include "internal.h"
#include "text.h"

#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int64_t leash__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t leash__coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t leash__deadline_after(int64_t ms)
{
    if (ms < 0)
        return INT64_MAX;
    int64_t now = leash__now_ns();
    if (ms > (INT64_MAX - now) / 1000000)
        return INT64_MAX;
    return now + ms * 1000000;
}

int leash__futex_wait(_Atomic uint32_t *word, uint32_t val, int64_t abs_ns)
{
    struct timespec ts, *tp = NULL;
    if (abs_ns != INT64_MAX) {
        if (abs_ns <= leash__now_ns())
            return -ETIMEDOUT;
        ts.tv_sec = abs_ns / 1000000000;
        ts.tv_nsec = abs_ns % 1000000000;
        tp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time. */
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, val, tp,
                     NULL, FUTEX_BITSET_MATCH_ANY);
    if (r < 0 && errno == ETIMEDOUT)
        return -ETIMEDOUT;
    return 0;
}

void leash__futex_wake(_Atomic uint32_t *word, int n)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n, NULL, NULL, 0);
}

int leash__ncpu(void)
{
    static _Atomic int n;
    int                v = atomic_load_explicit(&n, memory_order_relaxed);
    if (v == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        v = c > 0 ? (int)c : 1;
        atomic_store_explicit(&n, v, memory_order_relaxed);
    }
    return v;
}

void leash__lock_slow(leash__lock_t *l)
{
    /* Spin while the holder runs (critical sections are short), then sleep. */
    int spin = leash__ncpu() > 1 ? 100 : 0;
    for (int i = 0; i < spin; i++) {
        leash__cpu_relax();
        uint32_t z = 0;
        if (atomic_load_explicit(&l->v, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&l->v, &z, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
    }
    while (atomic_exchange_explicit(&l->v, 2, memory_order_acquire) != 0)
        leash__futex_wait(&l->v, 2, INT64_MAX);
}

struct start {
    void *(*fn)(void *);
    void *arg;
};

/* Library threads sleep until deadlines: the kernel's default 50 us of
   timer slack would be added to every cancellation. */
static void *thread_entry(void *p)
{
    struct start s = *(struct start *)p;
    free(p);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    void *alt = leash__altstack_on();
    void *r = s.fn(s.arg);
    leash__altstack_off(alt);
    return r;
}

int leash__thread_start(void *(*fn)(void *), void *arg, const char *name, int allow_sig)
{
    struct start *st = malloc(sizeof *st);
    if (!st)
        return -ENOMEM;
    st->fn = fn;
    st->arg = arg;
    pthread_t      th;
    pthread_attr_t attr;
    sigset_t       all, old;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* the library's threads take none of the application's signals */
    sigfillset(&all);
    if (allow_sig)
        sigdelset(&all, allow_sig);
    /* a fault on a blocked fatal signal kills at once, with no handler */
    leash__fatal_signals(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&th, &attr, thread_entry, st);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err)
        free(st);
    else
        pthread_setname_np(th, name);
    return -err;
}

void leash__copy_name(char *dst, size_t size, const char *src)
{
    leash_text_clean(dst, size, src, SIZE_MAX);
}

void leash__bprintf(struct leash__buf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int    n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

void leash__bjson_str(struct leash__buf *b, const char *s)
{
    if (!s) {
        leash__bprintf(b, "null");
        return;
    }
    leash__bprintf(b, "\"");
    leash__bjson_chars(b, s);
    leash__bprintf(b, "\"");
}

void leash__bjson_chars(struct leash__buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t               n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t len = leash_utf8_len(p + i, n - i);
        if (len > 1) { /* valid multi-byte: as it is */
            leash__bprintf(b, "%.*s", (int)len, (const char *)p + i);
            i += len;
            continue;
        }
        unsigned char c = p[i++];
        switch (c) {
        case '"': leash__bprintf(b, "\\\""); break;
        case '\\': leash__bprintf(b, "\\\\"); break;
        case '\n': leash__bprintf(b, "\\n"); break;
        case '\t': leash__bprintf(b, "\\t"); break;
        case '\r': leash__bprintf(b, "\\r"); break;
        default:
            if (len == 0) /* not UTF-8: JSON output stays valid UTF-8 */
                leash__bprintf(b, "\\ufffd");
            else if (c < 0x20 || c == 0x7f)
                leash__bprintf(b, "\\u%04x", c);
            else
                leash__bprintf(b, "%c", c);
        }
    }
}
