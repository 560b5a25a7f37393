/* log.c: leashd logs to stderr, one line per thing. Under journald (stderr
   is the stream $JOURNAL_STREAM names) each line carries a <N> priority
   prefix and each incident is a structured journal entry of its own;
   anywhere else (a terminal, a file) lines are plain. */
#include "leashd.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <systemd/sd-journal.h>
#include <time.h>

/* Catalog id of leashd's incident entries (journalctl MESSAGE_ID=...). */
#define INCIDENT_MESSAGE_ID "3f2c8d4be0a74f0c9d1b6a5e7c4f2a91"

static bool journal; /* stderr goes to journald */

void log_init(void)
{
    /* systemd sets JOURNAL_STREAM=DEV:INODE for the stream it connects to
       stderr; a child's inherited variable with another stderr is no proof */
    const char        *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat        st;
    journal = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
              (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

bool log_to_journal(void)
{
    return journal;
}

static void vlog(const char *prio, const char *fmt, va_list ap)
{
    char line[1024];
    int  n = vsnprintf(line, sizeof line, fmt, ap);
    if (n < 0)
        return;
    /* <N> prefixes let journald set the priority; on a terminal they are noise */
    fprintf(stderr, "%sleashd: %s\n", journal ? prio : "", line);
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

void log_limited(struct log_limit *l, bool warn, const char *fmt, ...)
{
    int64_t now = mono_ms();
    if (!l->said || now - l->since >= LOG_LIMIT_WINDOW_MS) {
        if (l->left_out)
            log_warn("%llu more lines like the next were not logged in the last %d s",
                     (unsigned long long)l->left_out, (int)((now - l->since) / 1000));
        l->since = now;
        l->said = 0;
        l->left_out = 0;
    }
    if (l->said >= LOG_LIMIT_BURST) {
        l->left_out++;
        return;
    }
    l->said++;
    va_list ap;
    va_start(ap, fmt);
    vlog(warn ? "<4>" : "<6>", fmt, ap);
    va_end(ap);
}

void log_incident(const Leash__Control__Incident *i)
{
    char msg[1536];
    snprintf(msg, sizeof msg, "incident %llu: %s: process %d (%s): %s [%s]",
             (unsigned long long)i->id, i->kind, i->pid, i->process, i->detail, i->action);
    /* journalctl LEASH_KIND=killed, LEASH_PROCESS=name, ... finds them */
    if (journal &&
        sd_journal_send("MESSAGE=%s", msg, "PRIORITY=4", "MESSAGE_ID=" INCIDENT_MESSAGE_ID,
                        "SYSLOG_IDENTIFIER=leashd", "LEASH_INCIDENT_ID=%llu",
                        (unsigned long long)i->id, "LEASH_KIND=%s", i->kind, "LEASH_ACTION=%s",
                        i->action, "LEASH_PID=%d", i->pid, "LEASH_PROCESS=%s", i->process,
                        "LEASH_GROUP=%llu", (unsigned long long)i->group, "LEASH_GROUP_NAME=%s",
                        i->group_name, "LEASH_TASK=%llu", (unsigned long long)i->task,
                        "LEASH_UID=%u", i->uid, NULL) == 0)
        return;
    log_warn("%s", msg); /* no journald to take it: a line as any other */
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
