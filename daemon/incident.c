/*
 * incident.c: every overrun, stuck task, library report, lost heartbeat,
 * lost agent and kill becomes an incident: logged, appended to the journal
 * (journal.c, read back at start), kept in memory for leashctl (the newest
 * KEEP), counted for metrics.
 */
#include "leashd.h"

#include "frame.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEEP 10000 /* incidents kept in memory */

const char *const incident_kinds[] = {
    "deadline_overrun", "stuck_task",     "lock_abandoned", "self_deadlock",
    "lock_cycle",       "unwaited_group", "heartbeat_lost", "agent_lost",
    "killed",           "restart_limit",  "crashed",        NULL,
};

static Leash__Control__Incident **ring;
static size_t                     first, count;
static uint64_t                   next_id = 1, total;
static uint64_t                   by_kind[16];
static uint64_t                   evicted;        /* dropped from memory (kept in the journal) */
static int64_t                    evicted_newest; /* the newest of those, unix ms */

static int kind_index(const char *k)
{
    for (int i = 0; incident_kinds[i]; i++)
        if (strcmp(incident_kinds[i], k) == 0)
            return i;
    return -1;
}

static void keep(Leash__Control__Incident *i)
{
    if (count == KEEP) {
        evicted++;
        if (ring[first]->time_ms > evicted_newest)
            evicted_newest = ring[first]->time_ms;
        leash__control__incident__free_unpacked(ring[first], NULL);
        ring[first] = i;
        first = (first + 1) % KEEP;
    } else {
        ring[(first + count++) % KEEP] = i;
    }
    if (i->id >= next_id)
        next_id = i->id + 1;
    total++;
    int k = kind_index(i->kind);
    if (k >= 0)
        by_kind[k]++;
}

int incidents_open(const char *state_dir, char *err, size_t errlen)
{
    ring = calloc(KEEP, sizeof *ring);
    if (!ring) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    return journal_open(state_dir, keep, err, errlen) ? -1 : 0;
}

bool incidents_cut(int64_t since_wall, uint64_t *kept)
{
    *kept = count;
    return evicted && since_wall <= evicted_newest;
}

void incidents_close(void)
{
    journal_close();
    for (size_t k = 0; ring && k < count; k++)
        leash__control__incident__free_unpacked(ring[(first + k) % KEEP], NULL);
    free(ring);
    ring = NULL;
    count = first = 0;
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

/* Reports (incidents that took no action) are limited per process to
   report_burst per report_interval, as journald limits each client; what
   is dropped is counted and said when the window ends. Actions are always
   recorded. */
static bool report_allowed(struct proc *p)
{
    int64_t now = mono_ms();
    if (now - p->reports_mono >= cfg.report_interval_ms) {
        if (p->reports_dropped)
            log_warn("process %d (%s): %llu reports dropped in %lld ms (report_burst %llu)",
                     (int)p->pid, p->name, (unsigned long long)p->reports_dropped,
                     (long long)(now - p->reports_mono), (unsigned long long)cfg.report_burst);
        p->reports_mono = now;
        p->reports = p->reports_dropped = 0;
    }
    if (p->reports < cfg.report_burst) {
        p->reports++;
        return true;
    }
    if (p->reports_dropped++ == 0)
        limit_hit(LIMIT_REPORTS, p->uid,
                  "process %d (%s) reports over %llu per %lld ms: the rest dropped and counted",
                  (int)p->pid, p->name, (unsigned long long)cfg.report_burst,
                  (long long)cfg.report_interval_ms);
    else
        limit_hits[LIMIT_REPORTS]++;
    return false;
}

static void vincident(struct proc *p, const char *kind, uint64_t group, const char *group_name,
                      uint64_t task, const char *action, const char *signal,
                      Leash__Control__TaskTree *tree, const char *fmt, va_list ap)
{
    char detail[1024];
    vsnprintf(detail, sizeof detail, fmt, ap);
    /* allocated as protobuf-c frees unpacked messages, so loaded and new
       incidents are freed alike */
    Leash__Control__Incident *i = malloc(sizeof *i);
    if (!i) {
        if (tree)
            leash__control__task_tree__free_unpacked(tree, NULL);
        return;
    }
    leash__control__incident__init(i);
    i->id = next_id++;
    i->time_ms = wall_ms();
    i->pid = p ? p->pid : 0;
    i->uid = p ? p->uid : 0;
    i->process = dup_or_empty(p ? p->name : NULL);
    i->kind = dup_or_empty(kind);
    i->group = group;
    i->group_name = dup_or_empty(group_name);
    i->task = task;
    i->detail = dup_or_empty(detail);
    i->action = dup_or_empty(action);
    i->signal = dup_or_empty(signal);
    i->tree = tree;
    log_incident(i);
    journal_append(i);
    keep(i);
    control_incident_hook(i);
}

void incident(struct proc *p, const char *kind, uint64_t group, const char *group_name,
              uint64_t task, const char *action, const char *fmt, ...)
{
    if (p && strcmp(action, "report") == 0 && !report_allowed(p))
        return;
    va_list ap;
    va_start(ap, fmt);
    vincident(p, kind, group, group_name, task, action, NULL, NULL, fmt, ap);
    va_end(ap);
}

/* Not limited as reports are: a process dies once. */
void incident_post(struct proc *p, const char *kind, uint64_t group, const char *group_name,
                   uint64_t task, const char *action, const char *signal,
                   Leash__Control__TaskTree *tree, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vincident(p, kind, group, group_name, task, action, signal, tree, fmt, ap);
    va_end(ap);
}

const Leash__Control__Incident *incident_get(uint64_t id)
{
    /* ids grow with the ring's order: a binary search would do, but a
       leashctl request is rare */
    for (size_t k = count; k-- > 0;) {
        Leash__Control__Incident *i = ring[(first + k) % KEEP];
        if (i->id == id)
            return i;
    }
    return NULL;
}

size_t incidents_list(int64_t since_wall, Leash__Control__Incident ***out)
{
    *out = calloc(count + 1, sizeof **out);
    if (!*out)
        return 0;
    size_t n = 0;
    for (size_t k = 0; k < count; k++) {
        Leash__Control__Incident *i = ring[(first + k) % KEEP];
        if (i->time_ms >= since_wall)
            (*out)[n++] = i;
    }
    return n;
}

uint64_t incidents_total(void)
{
    return total;
}

uint64_t incidents_by_kind(const char *kind)
{
    int k = kind_index(kind);
    return k >= 0 ? by_kind[k] : 0;
}
