/* A program built against an installed leash: runs one task in a group. */
#include <leash.h>
#include <stdio.h>

static int work(void *arg)
{
    *(int *)arg = 42;
    return 0;
}

int main(void)
{
    int          v = 0;
    leash_group *g;
    if (leash_group_open(&g, &(leash_group_opts){.name = "consumer"}) != 0)
        return 1;
    leash_go(g, work, &v);
    int rc = leash_group_wait(g);
    printf("consumer: wait %d, value %d, leash %s\n", rc, v, LEASH_VERSION_STRING);
    return rc == 0 && v == 42 ? 0 : 1;
}
