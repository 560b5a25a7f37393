/* report.c: the library's word for a problem it saw, on stderr and to leashd. */
#define _GNU_SOURCE
#include "internal.h"
#include "text.h"

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

/* Where reports go instead of stderr (leash_on_report). Readers hold it
   shared while they call fn, so that once leash_on_report returns, the
   previous fn is never called again. */
static pthread_rwlock_t hook_mu = PTHREAD_RWLOCK_INITIALIZER;
static void (*hook_fn)(const struct leash_report *r, void *ctx);
static void *hook_ctx;

void leash_on_report(void (*fn)(const struct leash_report *r, void *ctx), void *ctx)
{
    pthread_rwlock_wrlock(&hook_mu);
    hook_fn = fn;
    hook_ctx = fn ? ctx : NULL;
    pthread_rwlock_unlock(&hook_mu);
}

void leash__report_atfork_child(void)
{
    /* a thread of the parent may have held it: the child has none of them */
    hook_mu = (pthread_rwlock_t)PTHREAD_RWLOCK_INITIALIZER;
}

/* A detail cut at len bytes ends on a whole UTF-8 character: a name in it
   may have been cut in the middle of one. */
static void cut_whole(char *s, size_t len)
{
    size_t lead = len;
    while (lead > 0 && len - lead < 4 && ((unsigned char)s[lead - 1] & 0xc0) == 0x80)
        lead--;
    if (lead > 0 && (unsigned char)s[lead - 1] >= 0xc0 &&
        leash_utf8_len((const unsigned char *)s + lead - 1, len - lead + 1) == 0)
        s[lead - 1] = '\0';
}

void leash__report(const char *kind, leash_task *t, struct leash_group *g, const char *fmt, ...)
{
    char    detail[512];
    va_list ap;
    va_start(ap, fmt);
    int full = vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (full >= (int)sizeof detail)
        cut_whole(detail, sizeof detail - 1);
    /* names and file names come as the program gave them (a Latin-1 path, a
       chain of names cut to its buffer): the line is clean text all the same */
    leash_text_clean(detail, sizeof detail, detail, SIZE_MAX);
    atomic_fetch_add_explicit(&leash__reports, 1, memory_order_relaxed);
    char line[700];
    /* the prefix fits: kinds are the library's own short words */
    int pre = snprintf(line, sizeof line, "leash[%d]: %s: ", (int)getpid(), kind);
    int n = pre + snprintf(line + pre, sizeof line - (size_t)pre, "%s\n", detail);
    if (n > (int)sizeof line - 1) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    pthread_rwlock_rdlock(&hook_mu);
    if (hook_fn) {
        line[n - 1] = '\0';
        struct leash_report r = {
            .kind = kind,
            .text = line,
            .task = t ? t->id : 0,
            .group = g ? g->id : 0,
            .detail = line + pre,
        };
        hook_fn(&r, hook_ctx);
    } else if (!quiet()) {
        /* one write, so lines from several threads do not interleave */
        ssize_t w = write(STDERR_FILENO, line, (size_t)n);
        (void)w;
    }
    pthread_rwlock_unlock(&hook_mu);
    leash__agent_report(kind, t ? t->id : 0, g ? g->id : 0, g ? g->name : NULL, detail);
}
