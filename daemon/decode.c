/*
 * decode.c: the decoders. Each unpacks one message and checks every field
 * it carries (ranges, lengths, which fields a kind must have) before any
 * action sees it; a bad message has one exit, with the reason. Nothing here
 * touches the model, so the fuzzers drive these functions alone.
 *
 * Strings are never a reason to refuse: a name that is long, has control
 * characters or is not UTF-8 is cleaned in place (leash_text_clean) and
 * cut on a character boundary, and the process stays supervised.
 */
#include "decode.h"

#include "text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STR_MAX   4096
#define ITEMS_MAX 10000000
/* The longest time in ms a leash library sends (it keeps times as int64
   ns): 292 years. Anything above is a lie, and leashd adds these to its
   clock, which a bigger one would overflow. */
#define MS_MAX (INT64_MAX / 1000000)

#define NAME_MAX_RECV  255 /* group, task fn, channel and lock names */
#define PNAME_MAX_RECV 63  /* the process name, as struct proc holds it */
#define KIND_MAX_RECV  31

/* Cleans a string field in place: valid UTF-8, no control characters, at
   most max bytes. The unpacked message owns it, so this never grows it. */
static void clean(char *s, size_t max)
{
    /* never a write to a clean string: an absent one is protobuf-c's
       read-only "" */
    if (!s)
        return;
    /* one pass for the usual name, printable ASCII and short enough */
    for (size_t n = 0; n <= max; n++) {
        unsigned char c = (unsigned char)s[n];
        if (c == '\0')
            return;
        if (c < 0x20 || c >= 0x7f)
            break;
    }
    if (strnlen(s, max + 1) > max || !leash_text_is_clean(s))
        leash_text_clean(s, max + 1, s, SIZE_MAX);
}

/* A report kind as leashd files it: lower-case letters, digits and '_'; a
   kind this leashd does not know yet is kept (a newer library), never refused. */
static void clean_kind(char *k)
{
    if (!k)
        return;
    clean(k, KIND_MAX_RECV);
    for (char *c = k; *c; c++) {
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
        else if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
            *c = '_';
    }
}

static bool op_ok(int op)
{
    return op >= LEASH__AGENT__OP__OP_RUNNING && op <= LEASH__AGENT__OP__OP_GO;
}

bool report_kind_ok(const char *k)
{
    static const char *const kinds[] = {"lock_abandoned", "self_deadlock", "lock_cycle",
                                        "unwaited_group", "restart_limit", NULL};
    for (int i = 0; k && kinds[i]; i++)
        if (strcmp(k, kinds[i]) == 0)
            return true;
    return false;
}

/* A supervisor's strategy, or "" for any other group. */
static bool strategy_ok(const char *s)
{
    return !s || !*s || !strcmp(s, "one_for_one") || !strcmp(s, "one_for_all") ||
           !strcmp(s, "rest_for_one");
}

static const char *check_snapshot(Leash__Agent__Snapshot *s)
{
    if (!s)
        return NULL;
    if (s->n_groups > ITEMS_MAX || s->n_tasks > ITEMS_MAX)
        return "snapshot too large";
    for (size_t i = 0; i < s->n_groups; i++) {
        Leash__Agent__Group *g = s->groups[i];
        if (!g->id)
            return "group with id 0";
        if (g->id == g->parent)
            return "group is its own parent";
        if (g->deadline_ms_left < -1 || g->deadline_ms_left > MS_MAX)
            return "group deadline_ms_left out of -1..9223372036854 (ms)";
        clean(g->name, NAME_MAX_RECV);
        clean(g->site, STR_MAX);
        /* a backoff of up to INT64_MAX ms is a library's "never" */
        if (!strategy_ok(g->strategy) || g->backoff_ms < 0)
            return "group with an unknown strategy or a negative backoff";
    }
    for (size_t i = 0; i < s->n_tasks; i++) {
        Leash__Agent__Task *t = s->tasks[i];
        if (!t->id)
            return "task with id 0";
        if (!op_ok(t->op))
            return "task op out of range";
        if (t->since_ms < 0 || t->since_ms > MS_MAX)
            return "task since_ms out of 0..9223372036854";
        clean(t->fn, NAME_MAX_RECV);
        clean(t->site, STR_MAX);
        clean(t->object, NAME_MAX_RECV);
        clean(t->blocked_site, STR_MAX);
        clean(t->syscall_name, 64);
        if (t->cpu_known &&
            (t->cpu_ms < 0 || t->cpu_ms > MS_MAX || t->cpu_pct < -1 || t->cpu_pct > 100))
            return "task cpu_ms out of 0..9223372036854 or cpu_pct out of -1..100";
        if (t->n_syscall_args > 6 || (t->in_syscall && t->syscall_nr < 0))
            return "task syscall with more than 6 arguments or a negative number";
    }
    return NULL;
}

static const char *check_event(Leash__Agent__Event *e)
{
    clean(e->name, NAME_MAX_RECV);
    clean(e->site, STR_MAX);
    clean(e->fn, NAME_MAX_RECV);
    clean(e->object, NAME_MAX_RECV);
    clean(e->detail, STR_MAX);
    clean_kind(e->report_kind);
    if (!strategy_ok(e->strategy))
        return "event with an unknown strategy";
    switch (e->kind) {
    case LEASH__AGENT__EVENT__KIND__GROUP_OPEN:
        if (!e->group || e->group == e->parent)
            return "group_open without a valid group id";
        if (e->deadline_ms_left < -1)
            return "group_open deadline_ms_left below -1";
        if (e->deadline_ms_left > MS_MAX)
            return "group_open deadline_ms_left above 9223372036854 (ms)";
        return NULL;
    case LEASH__AGENT__EVENT__KIND__GROUP_END:
        return e->group ? NULL : "group_end without a group id";
    case LEASH__AGENT__EVENT__KIND__TASK_START:
    case LEASH__AGENT__EVENT__KIND__TASK_END:
        return e->task && e->group ? NULL : "task event without task and group ids";
    case LEASH__AGENT__EVENT__KIND__STUCK:
        if (!e->task)
            return "stuck without a task id";
        if (!op_ok(e->op) || e->op == LEASH__AGENT__OP__OP_RUNNING)
            return "stuck with an op that is not a blocking one";
        if (e->since_ms > MS_MAX)
            return "stuck with since_ms above 9223372036854";
        return e->since_ms >= 0 ? NULL : "stuck with negative since_ms";
    case LEASH__AGENT__EVENT__KIND__STATE:
        if (!e->task)
            return "state without a task id";
        if (!op_ok(e->op))
            return "state op out of range";
        if (e->since_ms > MS_MAX)
            return "state with since_ms above 9223372036854";
        return e->since_ms >= 0 ? NULL : "state with negative since_ms";
    case LEASH__AGENT__EVENT__KIND__REPORT:
        return e->report_kind && *e->report_kind ? NULL : "report without a kind";
    case LEASH__AGENT__EVENT__KIND__RESTART:
        if (!e->group || !e->strategy || !*e->strategy)
            return "restart without a group id or a strategy";
        return e->backoff_ms >= 0 ? NULL : "restart with a negative backoff";
    default: return "unknown event kind";
    }
}

Leash__Agent__AgentMessage *agent_decode(const uint8_t *msg, size_t len, ProtobufCAllocator *alloc,
                                         char *why, size_t whylen)
{
    const char                 *bad = NULL;
    Leash__Agent__AgentMessage *m = leash__agent__agent_message__unpack(alloc, len, msg);
    if (!m) {
        bad = "not an AgentMessage";
        goto bad;
    }
    switch (m->msg_case) {
    case LEASH__AGENT__AGENT_MESSAGE__MSG_HELLO:
        /* an empty name after cleaning: the model names it by pid */
        clean(m->hello->name, PNAME_MAX_RECV);
        clean(m->hello->lib_version, 64);
        bad = check_snapshot(m->hello->snapshot);
        break;
    case LEASH__AGENT__AGENT_MESSAGE__MSG_EVENTS:
        if (m->events->n_events > 1000000)
            bad = "too many events in one batch";
        for (size_t i = 0; !bad && i < m->events->n_events; i++) {
            if (i + 8 < m->events->n_events)
                __builtin_prefetch(m->events->events[i + 8]);
            bad = check_event(m->events->events[i]);
        }
        break;
    case LEASH__AGENT__AGENT_MESSAGE__MSG_HEARTBEAT: break;
    case LEASH__AGENT__AGENT_MESSAGE__MSG_RESYNC:
        if (!m->resync->snapshot)
            bad = "resync without a snapshot";
        else
            bad = check_snapshot(m->resync->snapshot);
        break;
    case LEASH__AGENT__AGENT_MESSAGE__MSG_CONFIRM:
        if (!m->confirm->request || !m->confirm->group)
            bad = "confirm reply without a request or group id";
        else if (m->confirm->deadline_ms_left < -1 || m->confirm->deadline_ms_left > MS_MAX)
            bad = "confirm reply deadline_ms_left out of -1..9223372036854 (ms)";
        break;
    case LEASH__AGENT__AGENT_MESSAGE__MSG_DUMP:
        if (!m->dump->request)
            bad = "dump reply without a request id";
        else
            bad = check_snapshot(m->dump->snapshot);
        break;
    default: bad = "empty AgentMessage"; break;
    }
    if (bad)
        goto bad;
    return m;
bad:
    snprintf(why, whylen, "%s", bad);
    if (m)
        leash__agent__agent_message__free_unpacked(m, alloc);
    return NULL;
}

/* --------------------------------------------------------------- arena */

#define ARENA_BLOCK (256 * 1024)

struct block {
    struct block *next;
    size_t        cap, used;
    _Alignas(16) char data[];
};

static struct block *arena_first, *arena_cur;

static void *arena_alloc(void *ctx, size_t n)
{
    (void)ctx;
    n = (n + 15) & ~(size_t)15;
    if (!arena_cur || arena_cur->cap - arena_cur->used < n) {
        struct block *b = arena_cur ? arena_cur->next : NULL;
        if (!b || b->cap < n) {
            size_t        cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
            struct block *nb = malloc(sizeof *nb + cap);
            if (!nb)
                return NULL;
            nb->cap = cap;
            nb->next = b;
            if (arena_cur)
                arena_cur->next = nb;
            else
                arena_first = nb;
            b = nb;
        }
        b->used = 0;
        arena_cur = b;
    }
    void *p = arena_cur->data + arena_cur->used;
    arena_cur->used += n;
    return p;
}

static void arena_free(void *ctx, void *p)
{
    (void)ctx;
    (void)p; /* all at once, in arena_reset */
}

ProtobufCAllocator *arena_allocator(void)
{
    static ProtobufCAllocator a = {.alloc = arena_alloc, .free = arena_free};
    return &a;
}

/* What the arena keeps between messages: a batch of a few thousand events
   needs a few blocks, and giving them back to malloc after every message
   made each one an munmap, then page faults on fresh pages for the next. */
#define ARENA_KEEP (16u * 1024 * 1024)

void arena_reset(void)
{
    /* keep the blocks for the next message, up to ARENA_KEEP; give back
       the rest, made by a huge message */
    size_t kept = 0;
    for (struct block *b = arena_first; b; b = b->next) {
        kept += b->cap;
        while (b->next && kept + b->next->cap > ARENA_KEEP) {
            struct block *n = b->next;
            b->next = n->next;
            free(n);
        }
        b->used = 0;
    }
    arena_cur = arena_first;
}

Leash__Control__Request *control_decode(const uint8_t *msg, size_t len, char *why, size_t whylen)
{
    const char              *bad = NULL;
    Leash__Control__Request *r = leash__control__request__unpack(NULL, len, msg);
    if (!r) {
        bad = "not a Request";
        goto bad;
    }
    if (r->version != LEASH__CONTROL__VERSION__VERSION_CURRENT) {
        bad = "unsupported control protocol version (leashd speaks 1)";
        goto bad;
    }
    switch (r->req_case) {
    case LEASH__CONTROL__REQUEST__REQ_TASKS:
        if (r->tasks->pid <= 0)
            bad = "tasks needs a pid";
        break;
    case LEASH__CONTROL__REQUEST__REQ_DUMP:
        if (r->dump->pid <= 0)
            bad = "dump needs a pid";
        break;
    case LEASH__CONTROL__REQUEST__REQ_CANCEL:
        /* a name as leashd holds them, so the one a user typed matches */
        clean(r->cancel->name, PNAME_MAX_RECV);
        if (r->cancel->pid <= 0 || !r->cancel->group)
            bad = "cancel needs a pid and a group id";
        break;
    case LEASH__CONTROL__REQUEST__REQ_KILL:
        clean(r->kill->name, PNAME_MAX_RECV);
        if (r->kill->pid <= 0)
            bad = "kill needs a pid";
        break;
    case LEASH__CONTROL__REQUEST__REQ_INCIDENTS:
        if (r->incidents->since_ms < 0)
            bad = "since must not be negative";
        break;
    case LEASH__CONTROL__REQUEST__REQ_INCIDENT:
        if (!r->incident->id)
            bad = "incident needs an id";
        break;
    case LEASH__CONTROL__REQUEST__REQ_STATUS:
    case LEASH__CONTROL__REQUEST__REQ_PS:
    case LEASH__CONTROL__REQUEST__REQ_RELOAD: break;
    default: bad = "empty Request"; break;
    }
    if (bad)
        goto bad;
    return r;
bad:
    snprintf(why, whylen, "%s", bad);
    if (r)
        leash__control__request__free_unpacked(r, NULL);
    return NULL;
}
