/* stubs.h: what leashd's main.c defines, for tests that link the daemon's core. */
#ifndef LEASH_TEST_DAEMON_STUBS_H
#define LEASH_TEST_DAEMON_STUBS_H

#include "leashd.h"

#include <event2/event.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

struct config      cfg;
struct event_base *base;
int64_t            started_wall;

int daemon_reload(char *err, size_t errlen)
{
    snprintf(err, errlen, "not in tests");
    return -1;
}

/* A fresh config from text, failing the test on error. */
static inline void load_conf(const char *text)
{
    char err[512];
    config_free(&cfg);
    if (config_load_string(&cfg, text, "test.conf", err, sizeof err))
        fail_msg("config: %s", err);
}

/* A suite's fixture: an event base, the built-in config and an incident
   journal in a fresh directory, removed with it. */
static char journal_dir[64];

static inline int journal_setup(void **state)
{
    (void)state;
    snprintf(journal_dir, sizeof journal_dir, "/tmp/leash-test-XXXXXX");
    if (!mkdtemp(journal_dir))
        return -1;
    base = event_base_new();
    load_conf("");
    char err[512];
    return incidents_open(journal_dir, err, sizeof err);
}

static inline int journal_teardown(void **state)
{
    (void)state;
    incidents_close();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", journal_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Incidents of kind (and action, unless NULL) in the journal. */
static inline size_t count_incidents(const char *kind, const char *action)
{
    Leash__Control__Incident **l;
    size_t                     n = incidents_list(0, &l), k = 0;
    for (size_t i = 0; i < n; i++)
        k += !strcmp(l[i]->kind, kind) && (!action || !strcmp(l[i]->action, action));
    free(l);
    return k;
}

#endif
