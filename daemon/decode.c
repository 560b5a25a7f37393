/*
 * decode.c: the decoders. Each unpacks one message and checks every field
 * it carries (ranges, lengths, which fields a kind must have) before any
 * action sees it; a bad message has one exit, with the reason. Nothing here
 * touches the model, so the fuzzers drive these functions alone.
 */
#include "decode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STR_MAX   4096
#define ITEMS_MAX 10000000

static bool str_ok(const char *s, size_t max)
{
    if (!s)
        return true; /* protobuf-c gives "" for absent strings; NULL is tolerated */
    /* one pass finds the end and any control character: every byte of
       every name of every event goes through here */
    for (size_t i = 0; i <= max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20) {
            if (c == '\0')
                return true;
            if (c != '\t')
                return false;
        }
    }
    return false; /* longer than max */
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

static const char *check_snapshot(const Leash__Agent__Snapshot *s)
{
    if (!s)
        return NULL;
    if (s->n_groups > ITEMS_MAX || s->n_tasks > ITEMS_MAX)
        return "snapshot too large";
    for (size_t i = 0; i < s->n_groups; i++) {
        const Leash__Agent__Group *g = s->groups[i];
        if (!g->id)
            return "group with id 0";
        if (g->id == g->parent)
            return "group is its own parent";
        if (g->deadline_ms_left < -1)
            return "group deadline_ms_left below -1";
        if (!str_ok(g->name, 256) || !str_ok(g->site, STR_MAX))
            return "group name or site too long or not text";
        if (!strategy_ok(g->strategy) || g->backoff_ms < 0)
            return "group with an unknown strategy or a negative backoff";
    }
    for (size_t i = 0; i < s->n_tasks; i++) {
        const Leash__Agent__Task *t = s->tasks[i];
        if (!t->id)
            return "task with id 0";
        if (!op_ok(t->op))
            return "task op out of range";
        if (t->since_ms < 0)
            return "task since_ms negative";
        if (!str_ok(t->fn, 256) || !str_ok(t->site, STR_MAX) || !str_ok(t->object, 256) ||
            !str_ok(t->blocked_site, STR_MAX) || !str_ok(t->syscall_name, 64))
            return "task string too long or not text";
        if (t->cpu_known && (t->cpu_ms < 0 || t->cpu_pct < -1 || t->cpu_pct > 100))
            return "task cpu_ms negative or cpu_pct out of -1..100";
        if (t->n_syscall_args > 6 || (t->in_syscall && t->syscall_nr < 0))
            return "task syscall with more than 6 arguments or a negative number";
    }
    return NULL;
}

static const char *check_event(const Leash__Agent__Event *e)
{
    if (!str_ok(e->name, 256) || !str_ok(e->site, STR_MAX) || !str_ok(e->fn, 256) ||
        !str_ok(e->object, 256) || !str_ok(e->detail, STR_MAX) || !str_ok(e->report_kind, 64))
        return "event string too long or not text";
    if (!strategy_ok(e->strategy))
        return "event with an unknown strategy";
    switch (e->kind) {
    case LEASH__AGENT__EVENT__KIND__GROUP_OPEN:
        if (!e->group || e->group == e->parent)
            return "group_open without a valid group id";
        if (e->deadline_ms_left < -1)
            return "group_open deadline_ms_left below -1";
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
        return e->since_ms >= 0 ? NULL : "stuck with negative since_ms";
    case LEASH__AGENT__EVENT__KIND__REPORT:
        return report_kind_ok(e->report_kind) ? NULL : "report of an unknown kind";
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
        if (!str_ok(m->hello->name, 63) || !m->hello->name || !*m->hello->name)
            bad = "hello name empty, over 63 bytes or not text";
        else if (!str_ok(m->hello->lib_version, 64))
            bad = "hello lib_version too long";
        else
            bad = check_snapshot(m->hello->snapshot);
        break;
    case LEASH__AGENT__AGENT_MESSAGE__MSG_EVENTS:
        if (m->events->n_events > 1000000)
            bad = "too many events in one batch";
        for (size_t i = 0; !bad && i < m->events->n_events; i++)
            bad = check_event(m->events->events[i]);
        break;
    case LEASH__AGENT__AGENT_MESSAGE__MSG_HEARTBEAT: break;
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
        if (r->cancel->pid <= 0 || !r->cancel->group)
            bad = "cancel needs a pid and a group id";
        else if (!str_ok(r->cancel->name, STR_MAX))
            bad = "cancel: the process name is too long or has control characters";
        break;
    case LEASH__CONTROL__REQUEST__REQ_KILL:
        if (r->kill->pid <= 0)
            bad = "kill needs a pid";
        else if (!str_ok(r->kill->name, STR_MAX))
            bad = "kill: the process name is too long or has control characters";
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
