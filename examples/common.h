/* common.h: what the examples share: counting threads and tasks. */
#ifndef LEASH_EXAMPLES_COMMON_H
#define LEASH_EXAMPLES_COMMON_H

#define _GNU_SOURCE
#include <leash.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Threads of this process, as the kernel counts them. */
static inline int threads_now(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char  line[256];
    int   n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

static inline long tasks_live(void)
{
    struct leash_stats st;
    leash_stats(&st);
    return (long)st.tasks_live;
}

/* Starts a plain detached thread: the leaky half of each example. */
static inline void spawn_plain(void *(*fn)(void *), long i)
{
    pthread_t th;
    pthread_create(&th, NULL, fn, (void *)(intptr_t)i);
    pthread_detach(th);
}

static inline void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* stdout line by line, so it interleaves with the library's stderr reports */
__attribute__((constructor)) static void line_buffered(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
}

#endif
