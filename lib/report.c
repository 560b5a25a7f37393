/* report.c: the library's word for a problem it saw, on stderr and to leashd. */
#define _GNU_SOURCE
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Atomic uint64_t leash__reports;

static bool quiet(void)
{
    static _Atomic int q = -1;
    int                v = atomic_load_explicit(&q, memory_order_relaxed);
    if (v < 0) {
        const char *e = getenv("LEASH_REPORT");
        v = e && strcmp(e, "quiet") == 0;
        atomic_store_explicit(&q, v, memory_order_relaxed);
    }
    return v;
}

void leash__report(const char *kind, leash_task *t, const char *group, const char *fmt, ...)
{
    char    detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    atomic_fetch_add_explicit(&leash__reports, 1, memory_order_relaxed);
    if (!quiet()) {
        char line[700];
        int  n = snprintf(line, sizeof line, "leash[%d]: %s: %s\n", (int)getpid(), kind, detail);
        if (n > (int)sizeof line - 1) {
            n = sizeof line - 1;
            line[n - 1] = '\n';
        }
        /* one write, so lines from several threads do not interleave */
        ssize_t r = write(STDERR_FILENO, line, (size_t)n);
        (void)r;
    }
    leash__agent_report(kind, t ? t->id : 0, group, detail);
}
