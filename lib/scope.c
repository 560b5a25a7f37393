/*
 * scope.c: cancel scopes on the calling task itself (Trio's CancelScope,
 * move_on_after and shield; Go's context.WithTimeout used in the same
 * goroutine).
 *
 * A scope is a node of the same tree groups make, with no children of its
 * own: the task's calls answer to its innermost scope (leash__node), groups
 * it opens inside hang below it, and the timer, cancellation, dumps and
 * leashd treat it as they treat a group. A shield is a node that its
 * parent's cancellation does not reach: it is not on the parent's kids and
 * inherits no deadline.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int leash_scope_open_at(leash_scope **sp, const leash_scope_opts *opts, const char *file, int line)
{
    static const leash_scope_opts none;
    if (!sp)
        return -EINVAL;
    *sp = NULL;
    if (!opts)
        opts = &none;
    if (opts->timeout_ms < 0 || (opts->flags & ~LEASH_SHIELD))
        return -EINVAL;
    leash_task *self = leash__self();
    if (!self)
        return -ENOMEM;
    struct leash_group *g = aligned_alloc(64, (sizeof *g + 63) & ~(size_t)63);
    if (!g)
        return -ENOMEM;
    memset(g, 0, sizeof *g);
    g->id = leash__next_id();
    leash__copy_name(g->name, sizeof g->name, opts->name ? opts->name : "scope");
    g->open_file = file;
    g->open_line = line;
    g->flags = opts->flags;
    g->strategy = -1;
    g->holder = self;
    g->shield = (opts->flags & LEASH_SHIELD) != 0;
    /* the shield level counts before linking: a stopped task's shield is
       not born cancelled */
    int level = atomic_load_explicit(&self->shield_level, memory_order_relaxed) + g->shield;
    atomic_store_explicit(&self->shield_level, level, memory_order_relaxed);
    g->shield_level = level;
    leash__node_link(g, self, leash__node(self), opts->timeout_ms, g->shield);
    g->outer = self->scope;
    self->scope = g;
    *sp = (leash_scope *)g;
    return 0;
}

void leash_scope_cancel(leash_scope *s)
{
    if (s && !leash__dead(&s->g))
        leash__cancel(&s->g, ECANCELED);
}

/* A scope open across a fork, closed in the child: only taken off the
   task's list of them and freed. */
static int scope_forget(leash_task *self, struct leash_group *g)
{
    for (struct leash_group **pp = &self->fork_scope; *pp; pp = &(*pp)->outer) {
        if (*pp == g) {
            *pp = g->outer;
            int cause = atomic_load_explicit(&g->cancel_cause, memory_order_relaxed);
            free(g);
            return -cause;
        }
    }
    return -EPERM;
}

/* Ends self's innermost scope g and frees it: its cause, negative, or 0. */
static int scope_end(leash_task *self, struct leash_group *g)
{
    int cause = atomic_load_explicit(&g->cancel_cause, memory_order_acquire);
    if (!cause && g->deadline_ns != INT64_MAX && leash__now_ns() >= g->deadline_ns)
        cause = ETIMEDOUT; /* passed, whether or not the timer got to it */
    leash__node_unlink(g);
    /* a leash_scope_cancel from another task may still be leaving g's lock
       (it woke us on the way): let it go before g is freed */
    leash__lock(&g->mu);
    leash__unlock(&g->mu);
    self->scope = g->outer;
    if (g->shield)
        atomic_fetch_sub_explicit(&self->shield_level, 1, memory_order_relaxed);
    free(g);
    return -cause;
}

int leash_scope_close(leash_scope *s)
{
    if (!s)
        return -EINVAL;
    struct leash_group *g = &s->g;
    leash_task         *self = leash__self();
    if (!self)
        return -ENOMEM;
    if (leash__dead(g)) /* inherited across a fork: after the child's own, innermost first */
        return g->holder == self && !self->scope && self->fork_scope == g ? scope_forget(self, g)
                                                                          : -EPERM;
    /* by its task, innermost first, and after the groups opened in it */
    if (g->holder != self || self->scope != g)
        return -EPERM;
    for (struct leash_group *o = self->opened; o; o = o->onext)
        if (o->parent == g)
            return -EPERM;
    return scope_end(self, g);
}

void leash__scopes_exit(leash_task *t)
{
    while (t->scope) {
        struct leash_group *g = t->scope;
        leash__report("unclosed_scope", t, g,
                      "task %llu (%s) returned with scope %llu \"%s\" (opened at %s:%d) still "
                      "open: closed",
                      (unsigned long long)t->id, t->fn_name, (unsigned long long)g->id, g->name,
                      g->open_file ? g->open_file : "?", g->open_line);
        scope_end(t, g);
    }
    while (t->fork_scope)
        scope_forget(t, t->fork_scope);
}
