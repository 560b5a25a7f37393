/* log.c: leashd logs to stderr, one line per thing, systemd style. */
#include "leashd.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static void vlog(const char *prio, const char *fmt, va_list ap)
{
    char line[1024];
    int  n = vsnprintf(line, sizeof line, fmt, ap);
    if (n < 0)
        return;
    /* <N> prefixes let journald set the priority */
    fprintf(stderr, "%sleashd: %s\n", prio, line);
}

void log_info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("<6>", fmt, ap);
    va_end(ap);
}

void log_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("<4>", fmt, ap);
    va_end(ap);
}

int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
