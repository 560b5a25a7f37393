/* format.c: how leashctl shows leashd's answers: aligned tables, the JSON
   shapes of DESIGN.md, folded stacks and pprof profiles. */
#define _GNU_SOURCE
#include "format.h"

#include "pprof/profile.pb-c.h"
#include "text.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wchar.h>
#include <zlib.h>

int format_parse(const char *s, enum fmt *out)
{
    static const char *const names[] = {"text", "json", "folded", "pprof"};
    for (int i = 0; i < 4; i++) {
        if (!strcmp(s, names[i])) {
            *out = (enum fmt)i;
            return 0;
        }
    }
    return -1;
}

static void jstr(FILE *f, const char *s)
{
    if (!s) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    const unsigned char *p = (const unsigned char *)s;
    size_t               n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t len = leash_utf8_len(p + i, n - i);
        if (len > 1) {
            fwrite(p + i, 1, len, f);
            i += len;
            continue;
        }
        unsigned char c = p[i++];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (len == 0) /* not UTF-8 (an old journal, say): JSON stays valid */
            fputs("\\ufffd", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void rfc3339(int64_t ms, char *buf, size_t len)
{
    time_t    t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03dZ", (int)(ms % 1000));
}

static const char *op_name(int op)
{
    static const char *const n[] = {"running", "chan_send",  "chan_recv", "select",
                                    "mutex",   "rwlock_rd",  "rwlock_wr", "sleep",
                                    "fdwait",  "group_wait", "go"};
    return op >= 0 && op < (int)(sizeof n / sizeof n[0]) ? n[op] : "?";
}

static void duration(int64_t s, char *buf, size_t len)
{
    if (s < 120)
        snprintf(buf, len, "%llds", (long long)s);
    else if (s < 7200)
        snprintf(buf, len, "%lldm", (long long)s / 60);
    else
        snprintf(buf, len, "%lldh%02lldm", (long long)s / 3600, (long long)(s % 3600) / 60);
}

void print_status(const Leash__Control__Status *s, bool json)
{
    if (json) {
        printf("{\"version\":");
        jstr(stdout, s->version);
        printf(",\"pid\":%d,\"uptime_s\":%lld,\"processes\":%llu,\"groups\":%llu,\"tasks\":%llu,"
               "\"stuck\":%llu,\"incidents\":%llu,\"events\":%llu,\"resyncing\":%llu,"
               "\"agent_socket\":",
               s->pid, (long long)s->uptime_s, (unsigned long long)s->processes,
               (unsigned long long)s->groups, (unsigned long long)s->tasks,
               (unsigned long long)s->stuck, (unsigned long long)s->incidents,
               (unsigned long long)s->events, (unsigned long long)s->resyncing);
        jstr(stdout, s->agent_socket);
        printf(",\"control_socket\":");
        jstr(stdout, s->control_socket);
        printf(",\"state_dir\":");
        jstr(stdout, s->state_dir);
        printf(",\"journal\":");
        jstr(stdout, s->journal);
        printf(",\"journal_bytes\":%llu,\"journal_pending\":%llu}\n",
               (unsigned long long)s->journal_bytes, (unsigned long long)s->journal_pending);
        return;
    }
    char up[32];
    duration(s->uptime_s, up, sizeof up);
    printf("leashd %s (pid %d), up %s\n", s->version, s->pid, up);
    printf("  processes  %llu\n  groups     %llu\n  tasks      %llu\n  stuck      %llu\n"
           "  incidents  %llu\n  events     %llu\n",
           (unsigned long long)s->processes, (unsigned long long)s->groups,
           (unsigned long long)s->tasks, (unsigned long long)s->stuck,
           (unsigned long long)s->incidents, (unsigned long long)s->events);
    if (s->resyncing)
        printf("  resyncing  %llu (views waiting for a fresh snapshot)\n",
               (unsigned long long)s->resyncing);
    printf("  agents on  %s\n  control    %s\n  state in   %s\n", s->agent_socket,
           s->control_socket, s->state_dir);
    if (s->journal && *s->journal)
        printf("  journal    %s (%llu bytes)\n", s->journal, (unsigned long long)s->journal_bytes);
}

/* ------------------------------------------------------------ columns */

/* Bytes of s that fit in max terminal columns, whole characters only; their
   width in *cols. A byte that is not UTF-8 counts as one column. */
static size_t fit(const char *s, int max, int *cols)
{
    mbstate_t st;
    size_t    len = strlen(s), off = 0;
    int       w = 0;
    memset(&st, 0, sizeof st);
    while (off < len) {
        wchar_t wc;
        size_t  n = mbrtowc(&wc, s + off, len - off, &st);
        int     cw;
        if (n == (size_t)-1 || n == (size_t)-2) {
            n = 1;
            cw = 1;
            memset(&st, 0, sizeof st);
        } else {
            if (n == 0)
                break;
            cw = wcwidth(wc);
            if (cw < 0)
                cw = 1;
        }
        if (w + cw > max)
            break;
        w += cw;
        off += n;
    }
    *cols = w;
    return off;
}

int text_width(const char *s)
{
    int w;
    fit(s, INT_MAX, &w);
    return w;
}

void put_cell(FILE *f, const char *s, int width, bool left)
{
    int    w;
    size_t n = fit(s, width, &w);
    if (!left)
        fprintf(f, "%*s", width - w, "");
    fwrite(s, 1, n, f);
    if (left)
        fprintf(f, "%*s", width - w, "");
}

static void cell_pid(const Leash__Control__Process *p, bool json, char *b, size_t n)
{
    (void)json;
    snprintf(b, n, "%d", p->pid);
}

static void cell_name(const Leash__Control__Process *p, bool json, char *b, size_t n)
{
    if (!json) {
        snprintf(b, n, "%s", p->name);
        return;
    }
    FILE *m = fmemopen(b, n, "w");
    if (m) {
        jstr(m, p->name);
        fclose(m);
    }
}

static void cell_connected(const Leash__Control__Process *p, bool json, char *b, size_t n)
{
    if (json)
        snprintf(b, n, "%lld", (long long)p->connected_s);
    else
        duration(p->connected_s, b, n);
}

#define CELL_U64(field)                                                                            \
    static void cell_##field(const Leash__Control__Process *p, bool json, char *b, size_t n)       \
    {                                                                                              \
        (void)json;                                                                                \
        snprintf(b, n, "%llu", (unsigned long long)p->field);                                      \
    }
CELL_U64(uid)
CELL_U64(groups)
CELL_U64(tasks)
CELL_U64(stuck)
CELL_U64(dropped)
CELL_U64(restarts)

/* leashd's view of the process: live, or stale until a fresh snapshot */
static void cell_view(const Leash__Control__Process *p, bool json, char *b, size_t n)
{
    if (json)
        snprintf(b, n, "%s", p->resyncing ? "true" : "false");
    else
        snprintf(b, n, "%s", p->resyncing ? "resyncing" : "live");
}

/* One column of `ps` (and `top`): a text header, a JSON key, or both. To add
   one, write its cell function and add a row here. */
static const struct ps_column {
    const char *head; /* NULL: JSON only */
    const char *key;  /* NULL: text only */
    int         min;  /* at least this many terminal columns wide */
    bool        left; /* text left-aligned (numbers are right-aligned) */
    /* the cell as text, or as a JSON value */
    void (*cell)(const Leash__Control__Process *p, bool json, char *buf, size_t len);
} ps_columns[] = {
    {"PID", "pid", 7, false, cell_pid},
    {"NAME", "name", 4, true, cell_name},
    {"UID", "uid", 6, false, cell_uid},
    {"GROUPS", "groups", 6, false, cell_groups},
    {"TASKS", "tasks", 7, false, cell_tasks},
    {"STUCK", "stuck", 6, false, cell_stuck},
    {"RESTARTS", "restarts", 8, false, cell_restarts},
    {"CONNECTED", "connected_s", 9, false, cell_connected},
    {NULL, "dropped", 0, false, cell_dropped},
    {"VIEW", "resyncing", 4, true, cell_view},
};
#define NCOLS (sizeof ps_columns / sizeof ps_columns[0])

bool ps_match(const Leash__Control__Process *p, const struct proc_sel *only)
{
    if (!only)
        return true;
    return only->pid ? p->pid == only->pid : !strcmp(only->name, p->name);
}

static void print_procs(FILE *f, const Leash__Control__Process *const *procs, size_t n, bool json,
                        bool headers, const struct proc_sel *only)
{
    char cell[512];
    if (json) {
        fprintf(f, "[");
        bool first = true;
        for (size_t i = 0; i < n; i++) {
            const Leash__Control__Process *p = procs[i];
            if (!ps_match(p, only))
                continue;
            fprintf(f, "%s{", first ? "" : ",");
            first = false;
            bool firstkey = true;
            for (size_t c = 0; c < NCOLS; c++) {
                if (!ps_columns[c].key)
                    continue;
                ps_columns[c].cell(p, true, cell, sizeof cell);
                fprintf(f, "%s\"%s\":%s", firstkey ? "" : ",", ps_columns[c].key, cell);
                firstkey = false;
            }
            fprintf(f, "}");
        }
        fprintf(f, "]\n");
        return;
    }
    int    width[NCOLS];
    size_t rows = 0, last = 0;
    for (size_t c = 0; c < NCOLS; c++) {
        width[c] = ps_columns[c].head ? text_width(ps_columns[c].head) : 0;
        if (width[c] < ps_columns[c].min)
            width[c] = ps_columns[c].min;
        if (ps_columns[c].head)
            last = c;
    }
    for (size_t i = 0; i < n; i++) {
        if (!ps_match(procs[i], only))
            continue;
        rows++;
        for (size_t c = 0; c < NCOLS; c++) {
            if (!ps_columns[c].head)
                continue;
            ps_columns[c].cell(procs[i], false, cell, sizeof cell);
            int w = text_width(cell);
            if (w > width[c])
                width[c] = w;
        }
    }
    for (size_t i = 0; i <= n; i++) {
        const Leash__Control__Process *p = i ? procs[i - 1] : NULL;
        if (p ? !ps_match(p, only) : !headers)
            continue;
        for (size_t c = 0, sep = 0; c < NCOLS; c++) {
            if (!ps_columns[c].head)
                continue;
            const char *s = ps_columns[c].head;
            if (p) {
                ps_columns[c].cell(p, false, cell, sizeof cell);
                s = cell;
            }
            fputs(sep++ ? "  " : "", f);
            /* the last column is not padded: no trailing blanks */
            put_cell(f, s, c == last && ps_columns[c].left ? text_width(s) : width[c],
                     ps_columns[c].left);
        }
        fputc('\n', f);
    }
    if (!rows && headers && !only)
        fprintf(f, "(no leashed processes)\n");
}

static int cmp_pid(const void *a, const void *b)
{
    const Leash__Control__Process *x = *(const Leash__Control__Process *const *)a,
                                  *y = *(const Leash__Control__Process *const *)b;
    return (x->pid > y->pid) - (x->pid < y->pid);
}

/* In pid order, whatever order leashd keeps them in. */
void print_ps(FILE *f, const Leash__Control__Ps *ps, bool json, bool headers,
              const struct proc_sel *only)
{
    size_t                          n = ps->n_processes;
    const Leash__Control__Process **v = malloc((n ? n : 1) * sizeof *v);
    if (!v) { /* unsorted, rather than nothing */
        print_procs(f, (const Leash__Control__Process *const *)ps->processes, n, json, headers,
                    only);
        return;
    }
    if (n) { /* with none, processes may be NULL: no memcpy from it */
        memcpy(v, ps->processes, n * sizeof *v);
        qsort(v, n, sizeof *v, cmp_pid);
    }
    print_procs(f, v, n, json, headers, only);
    free(v);
}

/* ------------------------------------------------------------- the tree */

static int cmp_group(const void *a, const void *b)
{
    const Leash__Agent__Group *x = *(Leash__Agent__Group *const *)a,
                              *y = *(Leash__Agent__Group *const *)b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int cmp_task(const void *a, const void *b)
{
    const Leash__Agent__Task *x = *(Leash__Agent__Task *const *)a,
                             *y = *(Leash__Agent__Task *const *)b;
    if (x->group != y->group)
        return x->group < y->group ? -1 : 1;
    if ((x->op != 0) != (y->op != 0))
        return x->op ? -1 : 1; /* blocked first */
    if (x->since_ms != y->since_ms)
        return x->since_ms > y->since_ms ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void sort_tree(Leash__Agent__Snapshot *s)
{
    if (s->n_groups > 1)
        qsort(s->groups, s->n_groups, sizeof *s->groups, cmp_group);
    if (s->n_tasks > 1)
        qsort(s->tasks, s->n_tasks, sizeof *s->tasks, cmp_task);
}

static void print_json_tree(FILE *f, const Leash__Control__TaskTree *t)
{
    const Leash__Agent__Snapshot *s = t->snapshot;
    fprintf(f, "{\"pid\":%d,\"name\":", t->pid);
    jstr(f, t->name);
    fprintf(f, ",\"groups\":[");
    size_t ng = s ? s->n_groups : 0;
    for (size_t gi = 0; gi <= ng; gi++) {
        const Leash__Agent__Group *g = gi ? s->groups[gi - 1] : NULL;
        uint64_t                   id = g ? g->id : 0;
        if (g) {
            fprintf(f, ",{\"id\":%llu,\"parent\":%llu,\"name\":", (unsigned long long)g->id,
                    (unsigned long long)g->parent);
            jstr(f, g->name);
            fprintf(f, ",\"deadline_ms_left\":");
            if (g->deadline_ms_left >= 0)
                fprintf(f, "%lld", (long long)g->deadline_ms_left);
            else
                fprintf(f, "null");
            fprintf(f, ",\"cancelled\":%s", g->cancelled ? "true" : "false");
            fprintf(f, ",\"restarts\":%llu,\"strategy\":", (unsigned long long)g->restarts);
            jstr(f, g->strategy && *g->strategy ? g->strategy : NULL);
            if (g->strategy && *g->strategy)
                fprintf(f, ",\"backoff_ms\":%lld", (long long)g->backoff_ms);
            fprintf(f, ",\"site\":");
            jstr(f, g->site);
        } else {
            fprintf(f, "{\"id\":0,\"parent\":null,\"name\":\"root\",\"deadline_ms_left\":null,"
                       "\"cancelled\":false,\"restarts\":0,\"strategy\":null");
        }
        fprintf(f, ",\"tasks\":[");
        bool first = true;
        for (size_t i = 0; s && i < s->n_tasks; i++) {
            const Leash__Agent__Task *x = s->tasks[i];
            if (x->group != id)
                continue;
            fprintf(f, "%s{\"id\":%llu,\"fn\":", first ? "" : ",", (unsigned long long)x->id);
            first = false;
            jstr(f, x->fn);
            fprintf(f, ",\"site\":");
            jstr(f, x->site && *x->site ? x->site : NULL);
            fprintf(f, ",\"state\":\"%s\",\"blocked_on\":", x->op ? "blocked" : "running");
            if (x->op) {
                fprintf(f, "{\"op\":\"%s\",\"object\":", op_name(x->op));
                jstr(f, x->object && *x->object ? x->object : NULL);
                fprintf(f, ",\"site\":");
                jstr(f, x->blocked_site);
                if (x->held_by)
                    fprintf(f, ",\"held_by\":%llu", (unsigned long long)x->held_by);
                fprintf(f, "}");
            } else {
                fprintf(f, "null");
            }
            fprintf(f, ",\"since_ms\":%lld", (long long)x->since_ms);
            if (x->cpu_known && !x->op)
                fprintf(f, ",\"cpu_ms\":%lld", (long long)x->cpu_ms);
            else
                fprintf(f, ",\"cpu_ms\":null");
            if (x->cpu_known && !x->op && x->cpu_pct >= 0)
                fprintf(f, ",\"cpu_pct\":%d", x->cpu_pct);
            else
                fprintf(f, ",\"cpu_pct\":null");
            if (x->in_syscall && !x->op) {
                fprintf(f, ",\"syscall\":{\"nr\":%lld,\"name\":", (long long)x->syscall_nr);
                jstr(f, x->syscall_name);
                fprintf(f, ",\"args\":[");
                for (size_t a = 0; a < x->n_syscall_args; a++)
                    fprintf(f, "%s%llu", a ? "," : "", (unsigned long long)x->syscall_args[a]);
                fprintf(f, "]}");
            } else {
                fprintf(f, ",\"syscall\":null");
            }
            if (x->crashed)
                fprintf(f, ",\"crashed\":true");
            fprintf(f, "}");
        }
        fprintf(f, "]}");
    }
    fprintf(f, "],\"truncated\":%s}", s && s->truncated ? "true" : "false");
}

static void print_text_tree(const Leash__Control__TaskTree *t)
{
    const Leash__Agent__Snapshot *s = t->snapshot;
    size_t                        ng = s ? s->n_groups : 0, nt = s ? s->n_tasks : 0, blocked = 0;
    for (size_t i = 0; i < nt; i++)
        blocked += s->tasks[i]->op != 0;
    printf("pid %d (%s): %zu groups, %zu tasks, %zu blocked%s\n", t->pid, t->name, ng, nt, blocked,
           s && s->truncated ? " (TRUNCATED: more than the registry holds)" : "");
    for (size_t gi = 0; gi <= ng; gi++) {
        const Leash__Agent__Group *g = gi ? s->groups[gi - 1] : NULL;
        uint64_t                   id = g ? g->id : 0;
        if (g) {
            printf("\ngroup %llu \"%s\" (parent %llu), opened at %s", (unsigned long long)g->id,
                   g->name, (unsigned long long)g->parent, g->site);
            if (g->deadline_ms_left >= 0)
                printf(", deadline in %lld ms", (long long)g->deadline_ms_left);
            if (g->strategy && *g->strategy) {
                printf(", supervisor %s, %llu restarts", g->strategy,
                       (unsigned long long)g->restarts);
                if (g->restarts)
                    printf(" (the latest after %lld ms)", (long long)g->backoff_ms);
            }
            if (g->cancelled)
                printf(", CANCELLED");
            printf(":\n");
        } else {
            printf("\ngroup 0 \"root\": threads that called leash\n");
        }
        for (size_t i = 0; i < nt; i++) {
            const Leash__Agent__Task *x = s->tasks[i];
            if (x->group != id)
                continue;
            if (x->op) {
                printf("  task %llu %s [blocked on %s", (unsigned long long)x->id, x->fn,
                       op_name(x->op));
                if (x->object && *x->object)
                    printf(" \"%s\"", x->object);
                if (x->held_by)
                    printf(" held by task %llu", (unsigned long long)x->held_by);
                printf(", %lld ms]:\n      blocked at %s\n", (long long)x->since_ms,
                       x->blocked_site);
            } else if (x->in_syscall) {
                printf("  task %llu %s [running, %lld ms, now in %s(2)", (unsigned long long)x->id,
                       x->fn, (long long)x->since_ms, x->syscall_name);
                if (x->cpu_known)
                    printf(", %lld ms on CPU", (long long)x->cpu_ms);
                printf("]:\n");
            } else if (x->cpu_known && x->cpu_pct >= 0) {
                printf("  task %llu %s [running, %lld ms, on CPU %d%%, %lld ms on CPU]:\n",
                       (unsigned long long)x->id, x->fn, (long long)x->since_ms, x->cpu_pct,
                       (long long)x->cpu_ms);
            } else {
                printf("  task %llu %s [running, %lld ms]:\n", (unsigned long long)x->id, x->fn,
                       (long long)x->since_ms);
            }
            if (x->crashed)
                printf("      CRASHED: the fatal signal hit this task\n");
            if (x->site && *x->site)
                printf("      spawned at %s\n", x->site);
        }
    }
}

static const Leash__Agent__Group *find_group(const Leash__Agent__Snapshot *s, uint64_t id)
{
    for (size_t i = 0; i < s->n_groups; i++)
        if (s->groups[i]->id == id)
            return s->groups[i];
    return NULL;
}

/* The frames of one task, leaf first: what it blocks on, its function,
   its groups up to the root, the process ("NAME-PID" when with_pid, as
   stackcollapse-perf.pl --pid writes it). */
static size_t frames(const Leash__Control__TaskTree *t, const Leash__Agent__Task *x, char **out,
                     size_t max, bool with_pid)
{
    size_t n = 0;
    char  *f;
    if (!x->op && x->in_syscall && n < max && asprintf(&f, "syscall %s", x->syscall_name) >= 0)
        out[n++] = f;
    if (x->op && n < max &&
        asprintf(&f, "%s%s%s", op_name(x->op), x->object && *x->object ? " " : "",
                 x->object ? x->object : "") >= 0)
        out[n++] = f;
    if (n < max && (f = strdup(x->fn)) != NULL)
        out[n++] = f;
    const Leash__Agent__Group *g = find_group(t->snapshot, x->group);
    for (int depth = 0; g && depth < 64 && n < max; depth++) {
        if (asprintf(&f, "group %s", g->name) >= 0)
            out[n++] = f;
        g = g->parent ? find_group(t->snapshot, g->parent) : NULL;
    }
    if (n < max && (with_pid ? asprintf(&f, "%s-%d", t->name, (int)t->pid) >= 0
                             : (f = strdup(t->name)) != NULL))
        out[n++] = f;
    return n;
}

static int cmp_line(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void print_folded(const Leash__Control__TaskTree *t, bool with_pid)
{
    const Leash__Agent__Snapshot *s = t->snapshot;
    /* identical stacks add up: print sorted, counting runs */
    size_t nt = s ? s->n_tasks : 0;
    char **lines = calloc(nt + 1, sizeof *lines);
    size_t nl = 0;
    for (size_t i = 0; lines && i < nt; i++) {
        char  *fr[80];
        size_t n = frames(t, s->tasks[i], fr, 80, with_pid);
        char  *line = NULL;
        size_t len = 0;
        FILE  *m = open_memstream(&line, &len);
        for (size_t k = n; k-- > 0;) {
            /* ';' separates frames and ' ' ends them in folded stacks */
            for (char *c = fr[k]; *c; c++)
                if (*c == ';')
                    *c = ':';
            fprintf(m, "%s%s", fr[k], k ? ";" : "");
            free(fr[k]);
        }
        fclose(m);
        lines[nl++] = line;
    }
    if (nl > 1)
        qsort(lines, nl, sizeof *lines, cmp_line);
    for (size_t i = 0; i < nl;) {
        size_t j = i;
        while (j < nl && !strcmp(lines[j], lines[i]))
            j++;
        printf("%s %zu\n", lines[i], j - i);
        i = j;
    }
    for (size_t i = 0; i < nl; i++)
        free(lines[i]);
    free(lines);
}

/* ---------------------------------------------------------------- pprof */

struct strtab {
    char **s;
    size_t n, cap;
};

static int64_t str_idx(struct strtab *t, const char *s)
{
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->s[i], s))
            return (int64_t)i;
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->s = realloc(t->s, t->cap * sizeof *t->s);
    }
    t->s[t->n] = strdup(s);
    return (int64_t)t->n++;
}

/* "file.c:12" -> file and line */
static void split_site(const char *site, char *file, size_t len, int64_t *line)
{
    const char *colon = site ? strrchr(site, ':') : NULL;
    *line = 0;
    if (!colon) {
        snprintf(file, len, "%s", site ? site : "");
        return;
    }
    snprintf(file, len, "%.*s", (int)(colon - site), site);
    *line = atoll(colon + 1);
}

static int print_pprof(const Leash__Control__TaskTree *t)
{
    const Leash__Agent__Snapshot *s = t->snapshot;
    size_t                        nt = s ? s->n_tasks : 0;
    struct strtab                 st = {0};
    str_idx(&st, "");
    /* one function and one location per distinct frame */
    size_t                         cap = nt * 80 + 1;
    Perftools__Profiles__Function *fn = calloc(cap, sizeof *fn);
    Perftools__Profiles__Location *loc = calloc(cap, sizeof *loc);
    Perftools__Profiles__Line     *ln = calloc(cap, sizeof *ln);
    Perftools__Profiles__Line    **lnp = calloc(cap, sizeof *lnp);
    Perftools__Profiles__Sample   *sm = calloc(nt + 1, sizeof *sm);
    uint64_t                      *ids = calloc(cap, sizeof *ids);
    int64_t                       *vals = calloc(nt + 1, sizeof *vals);
    char                         **keys = calloc(cap, sizeof *keys);
    /* what a task does, as labels: state, and for running ones cpu_ms, cpu_pct, syscall */
    Perftools__Profiles__Label  *lb = calloc(nt * 4 + 1, sizeof *lb);
    Perftools__Profiles__Label **lbp = calloc(nt * 4 + 1, sizeof *lbp);
    if (!fn || !loc || !ln || !lnp || !sm || !ids || !vals || !keys || !lb || !lbp)
        return -1;
    size_t nlb = 0;
    size_t nf = 0, nids = 0;
    for (size_t i = 0; i < nt; i++) {
        const Leash__Agent__Task *x = s->tasks[i];
        char                     *fr[80];
        size_t                    n = frames(t, x, fr, 80, false);
        sm[i] = (Perftools__Profiles__Sample)PERFTOOLS__PROFILES__SAMPLE__INIT;
        sm[i].location_id = &ids[nids];
        vals[i] = 1;
        sm[i].n_value = 1;
        sm[i].value = &vals[i];
        sm[i].label = &lbp[nlb];
        lb[nlb] = (Perftools__Profiles__Label)PERFTOOLS__PROFILES__LABEL__INIT;
        lb[nlb].key = str_idx(&st, "state");
        lb[nlb].str = str_idx(&st, x->op ? "blocked" : "running");
        lbp[nlb] = &lb[nlb];
        nlb++;
        if (!x->op && x->cpu_known) {
            lb[nlb] = (Perftools__Profiles__Label)PERFTOOLS__PROFILES__LABEL__INIT;
            lb[nlb].key = str_idx(&st, "cpu_ms");
            lb[nlb].num = x->cpu_ms;
            lb[nlb].num_unit = str_idx(&st, "milliseconds");
            lbp[nlb] = &lb[nlb];
            nlb++;
            if (x->cpu_pct >= 0) {
                lb[nlb] = (Perftools__Profiles__Label)PERFTOOLS__PROFILES__LABEL__INIT;
                lb[nlb].key = str_idx(&st, "cpu_pct");
                lb[nlb].num = x->cpu_pct;
                lbp[nlb] = &lb[nlb];
                nlb++;
            }
        }
        if (!x->op && x->in_syscall) {
            lb[nlb] = (Perftools__Profiles__Label)PERFTOOLS__PROFILES__LABEL__INIT;
            lb[nlb].key = str_idx(&st, "syscall");
            lb[nlb].str = str_idx(&st, x->syscall_name);
            lbp[nlb] = &lb[nlb];
            nlb++;
        }
        sm[i].n_label = (size_t)(&lbp[nlb] - sm[i].label);
        for (size_t k = 0; k < n; k++) {
            /* the leaf frame carries where it blocked; the function frame where it was spawned */
            bool        leaf = x->op || x->in_syscall; /* a frame below the function */
            const char *site = leaf && k == 0 ? (x->op ? x->blocked_site : "")
                                              : (k == (leaf ? 1u : 0u) ? x->site : "");
            char        key[1024], file[512];
            int64_t     line;
            split_site(site, file, sizeof file, &line);
            snprintf(key, sizeof key, "%s\n%s\n%lld", fr[k], file, (long long)line);
            size_t f = 0;
            while (f < nf && strcmp(keys[f], key))
                f++;
            if (f == nf) {
                keys[nf] = strdup(key);
                fn[nf] = (Perftools__Profiles__Function)PERFTOOLS__PROFILES__FUNCTION__INIT;
                fn[nf].id = nf + 1;
                fn[nf].name = fn[nf].system_name = str_idx(&st, fr[k]);
                fn[nf].filename = str_idx(&st, file);
                fn[nf].start_line = line;
                ln[nf] = (Perftools__Profiles__Line)PERFTOOLS__PROFILES__LINE__INIT;
                ln[nf].function_id = nf + 1;
                ln[nf].line = line;
                lnp[nf] = &ln[nf];
                loc[nf] = (Perftools__Profiles__Location)PERFTOOLS__PROFILES__LOCATION__INIT;
                loc[nf].id = nf + 1;
                loc[nf].n_line = 1;
                loc[nf].line = &lnp[nf];
                nf++;
            }
            ids[nids++] = f + 1;
            sm[i].n_location_id++;
            free(fr[k]);
        }
    }
    Perftools__Profiles__Function **fnp = calloc(nf + 1, sizeof *fnp);
    Perftools__Profiles__Location **locp = calloc(nf + 1, sizeof *locp);
    Perftools__Profiles__Sample   **smp = calloc(nt + 1, sizeof *smp);
    for (size_t i = 0; i < nf; i++) {
        fnp[i] = &fn[i];
        locp[i] = &loc[i];
    }
    for (size_t i = 0; i < nt; i++)
        smp[i] = &sm[i];
    Perftools__Profiles__ValueType vt = PERFTOOLS__PROFILES__VALUE_TYPE__INIT;
    vt.type = str_idx(&st, "tasks");
    vt.unit = str_idx(&st, "count");
    Perftools__Profiles__ValueType *vtp = &vt;
    Perftools__Profiles__Profile    p = PERFTOOLS__PROFILES__PROFILE__INIT;
    p.n_sample_type = 1;
    p.sample_type = &vtp;
    p.period_type = &vt;
    p.period = 1;
    p.n_sample = nt;
    p.sample = smp;
    p.n_location = nf;
    p.location = locp;
    p.n_function = nf;
    p.function = fnp;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    p.time_nanos = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    p.n_string_table = st.n;
    p.string_table = st.s;
    size_t   n = perftools__profiles__profile__get_packed_size(&p);
    uint8_t *raw = malloc(n + 1);
    perftools__profiles__profile__pack(&p, raw);

    /* gzip it, as go tool pprof expects */
    int      rc = 0;
    z_stream z = {0};
    uLong    bound = compressBound((uLong)n) + 64;
    uint8_t *gz = malloc(bound);
    if (!gz ||
        deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        rc = -1;
    } else {
        z.next_in = raw;
        z.avail_in = (uInt)n;
        z.next_out = gz;
        z.avail_out = (uInt)bound;
        if (deflate(&z, Z_FINISH) != Z_STREAM_END ||
            fwrite(gz, 1, z.total_out, stdout) != z.total_out)
            rc = -1;
        deflateEnd(&z);
    }
    free(gz);
    free(raw);
    for (size_t i = 0; i < st.n; i++)
        free(st.s[i]);
    for (size_t i = 0; i < nf; i++)
        free(keys[i]);
    free(st.s);
    free(keys);
    free(lb);
    free(lbp);
    free(fn);
    free(loc);
    free(ln);
    free(lnp);
    free(sm);
    free(ids);
    free(vals);
    free(fnp);
    free(locp);
    free(smp);
    return rc;
}

int print_tree(Leash__Control__TaskTree *t, enum fmt f, bool several)
{
    if (t->snapshot)
        sort_tree(t->snapshot);
    switch (f) {
    case FMT_JSON:
        print_json_tree(stdout, t);
        printf("\n");
        return 0;
    case FMT_FOLDED: print_folded(t, several); return 0;
    case FMT_PPROF: return print_pprof(t);
    default: print_text_tree(t); return 0;
    }
}

static void incident_json(FILE *f, const Leash__Control__Incident *i)
{
    char when[40];
    rfc3339(i->time_ms, when, sizeof when);
    fprintf(f, "{\"id\":%llu,\"time\":\"%s\",\"pid\":%d,\"process\":", (unsigned long long)i->id,
            when, i->pid);
    jstr(f, i->process);
    fprintf(f, ",\"kind\":");
    jstr(f, i->kind);
    fprintf(f, ",\"group\":%llu,\"group_name\":", (unsigned long long)i->group);
    jstr(f, i->group_name);
    fprintf(f, ",\"task\":%llu,\"detail\":", (unsigned long long)i->task);
    jstr(f, i->detail);
    fprintf(f, ",\"action\":");
    jstr(f, i->action);
    fprintf(f, ",\"signal\":");
    jstr(f, i->signal && *i->signal ? i->signal : NULL);
    fprintf(f, ",\"tree\":");
    if (i->tree) {
        if (i->tree->snapshot)
            sort_tree(i->tree->snapshot);
        print_json_tree(f, i->tree);
    } else {
        fprintf(f, "null");
    }
    fprintf(f, "}");
}

static void incident_row(FILE *f, const Leash__Control__Incident *i)
{
    char when[40];
    rfc3339(i->time_ms, when, sizeof when);
    fprintf(f, "%5llu  %s  %7d  ", (unsigned long long)i->id, when, i->pid);
    put_cell(f, i->process, 12, true);
    fprintf(f, "  %-16s  %-9s  %s\n", i->kind, i->action, i->detail);
}

static void incident_header(FILE *f)
{
    fprintf(f, "%5s  %-24s  %7s  %-12s  %-16s  %-9s  %s\n", "ID", "TIME", "PID", "PROCESS", "KIND",
            "ACTION", "DETAIL");
}

void print_incidents(FILE *f, const Leash__Control__Incidents *l, bool json, bool follow,
                     bool headers, size_t last)
{
    size_t from = l->n_incidents > last ? l->n_incidents - last : 0;
    if (json && follow) { /* one object per line, the same as what follows */
        for (size_t i = from; i < l->n_incidents; i++) {
            incident_json(f, l->incidents[i]);
            fprintf(f, "\n");
        }
        return;
    }
    if (json) {
        fprintf(f, "[");
        for (size_t i = from; i < l->n_incidents; i++) {
            fprintf(f, i > from ? "," : "");
            incident_json(f, l->incidents[i]);
        }
        fprintf(f, "]\n");
        return;
    }
    if (headers)
        incident_header(f);
    for (size_t i = from; i < l->n_incidents; i++)
        incident_row(f, l->incidents[i]);
    if (!l->n_incidents && !follow && headers)
        fprintf(f, "(no incidents)\n");
}

int print_incident(const Leash__Control__Incident *i, enum fmt f)
{
    if (f == FMT_JSON) {
        incident_json(stdout, i);
        printf("\n");
        return 0;
    }
    if (i->tree && i->tree->snapshot)
        sort_tree(i->tree->snapshot);
    if (f == FMT_FOLDED) {
        if (i->tree)
            print_folded(i->tree, false);
        return 0;
    }
    char when[40];
    rfc3339(i->time_ms, when, sizeof when);
    printf("incident %llu: %s, %s\nprocess %d (%s)", (unsigned long long)i->id, i->kind, when,
           i->pid, i->process);
    if (i->group)
        printf(", group %llu \"%s\"", (unsigned long long)i->group, i->group_name);
    if (i->task)
        printf(", task %llu", (unsigned long long)i->task);
    printf("\n%s\naction: %s\n", i->detail, i->action);
    if (i->signal && *i->signal)
        printf("signal: %s\n", i->signal);
    if (i->tree) {
        printf("\nthe last task tree, ");
        print_text_tree(i->tree);
    }
    return 0;
}

void print_incident_followed(const Leash__Control__Incident *i, bool json)
{
    if (json) {
        incident_json(stdout, i);
        printf("\n");
    } else {
        incident_row(stdout, i);
    }
}
