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

#endif
