/*
 * fork.c: a fresh runtime in the child of fork().
 *
 * Only the forking thread lives on in the child, so every list of the
 * runtime (groups, root tasks, the pool's queue and workers, the timer's
 * heap, the interrupt registry) describes threads that are not there, and
 * any internal lock may have been held by one of them. The prepare handler
 * takes the runtime's global locks (in their lock order), so the lists are
 * whole at the fork; the parent lets them go; the child starts each module
 * afresh. Pool, timer and agent threads start again on first use. What the
 * parent's lists held stays reachable, never freed nor walked: groups
 * inherited from the parent are dead in the child (their generation is an
 * older one), and answer -ECHILD.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <pthread.h>

void *leash__fork_kept[LEASH_KEPT_N];

static void prepare(void)
{
    leash__group_atfork(LEASH_FORK_PREPARE);
    leash__pool_atfork(LEASH_FORK_PREPARE);
    leash__timer_atfork(LEASH_FORK_PREPARE);
    leash__task_atfork(LEASH_FORK_PREPARE);
    leash__mutex_atfork(LEASH_FORK_PREPARE);
}

static void parent(void)
{
    leash__mutex_atfork(LEASH_FORK_PARENT);
    leash__task_atfork(LEASH_FORK_PARENT);
    leash__timer_atfork(LEASH_FORK_PARENT);
    leash__pool_atfork(LEASH_FORK_PARENT);
    leash__group_atfork(LEASH_FORK_PARENT);
}

static void child(void)
{
    leash__group_atfork(LEASH_FORK_CHILD);
    leash__pool_atfork(LEASH_FORK_CHILD);
    leash__timer_atfork(LEASH_FORK_CHILD);
    leash__task_atfork(LEASH_FORK_CHILD);
    leash__mutex_atfork(LEASH_FORK_CHILD);
    leash__agent_atfork_child();
    leash__report_atfork_child();
    leash__supervise_atfork_child();
    leash__proc_atfork_child();
}

void leash__fork_init(void)
{
    pthread_atfork(prepare, parent, child);
}
