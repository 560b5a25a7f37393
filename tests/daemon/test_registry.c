/* test_registry.c: leashd's side of the registry: which memfds it takes,
   and what it makes of one a process may have written anything into. */
#include "stubs.h"

#include "leash/registry.h"

#include <fcntl.h>
#include <sys/mman.h>

#define GROUPS_OFF ((uint64_t)LEASH_REG_HEADER_SIZE)
#define TASKS_OFF  (GROUPS_OFF + (uint64_t)LEASH_REG_GROUPS * sizeof(struct leash_reg_group))
#define STRS_OFF   (TASKS_OFF + (uint64_t)LEASH_REG_TASKS * sizeof(struct leash_reg_task))
#define TOTAL_SIZE (STRS_OFF + (uint64_t)LEASH_REG_STRS * LEASH_REG_STRLEN)

static uint8_t *reg;

static struct leash_reg_header *header(void)
{
    return (void *)reg;
}

static struct leash_reg_group *groups(void)
{
    return (void *)(reg + GROUPS_OFF);
}

static struct leash_reg_task *tasks(void)
{
    return (void *)(reg + TASKS_OFF);
}

static void str(uint32_t i, const char *s)
{
    strcpy((char *)reg + STRS_OFF + (uint64_t)i * LEASH_REG_STRLEN, s);
}

/* A registry as the library writes it: group 12 "requests" with task 7
   parse, spawned at server.c:88, blocked on a channel. */
static int setup(void **state)
{
    (void)state;
    reg = calloc(1, TOTAL_SIZE);
    struct leash_reg_header *h = header();
    *h = (struct leash_reg_header){
        .magic = LEASH_REG_MAGIC,
        .version = LEASH_REG_VERSION,
        .header_size = LEASH_REG_HEADER_SIZE,
        .group_size = sizeof(struct leash_reg_group),
        .task_size = sizeof(struct leash_reg_task),
        .ngroups = LEASH_REG_GROUPS,
        .ntasks = LEASH_REG_TASKS,
        .nstrs = LEASH_REG_STRS,
        .strlen_ = LEASH_REG_STRLEN,
        .groups_off = GROUPS_OFF,
        .tasks_off = TASKS_OFF,
        .strs_off = STRS_OFF,
        .total_size = TOTAL_SIZE,
        .pid = 4242,
        .groups_used = 1,
        .tasks_used = 1,
    };
    strcpy(h->name, "server");
    str(1, "server.c");
    str(2, "parse");
    groups()[0] = (struct leash_reg_group){
        .seq = 2, .live = 1, .id = 12, .file = 1, .line = 80, .deadline_ns = INT64_MAX};
    strcpy(groups()[0].name, "requests");
    tasks()[0] = (struct leash_reg_task){.seq = 2,
                                         .live = 1,
                                         .id = 7,
                                         .group = 12,
                                         .fn = 2,
                                         .file = 1,
                                         .line = 88,
                                         .start_ns = 1000000000,
                                         .since_ns = 2000000000,
                                         .op = LEASH__AGENT__OP__OP_CHAN_RECV,
                                         .bfile = 1,
                                         .bline = 90};
    strcpy(tasks()[0].obj, "inbox");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(reg);
    return 0;
}

static void a_well_formed_registry_gives_the_tree(void **state)
{
    (void)state;
    struct registry_crash     c;
    Leash__Control__TaskTree *t = registry_read(reg, TOTAL_SIZE, 5000000000LL, 4242, "server", &c);
    assert_non_null(t);
    assert_int_equal(t->pid, 4242);
    assert_string_equal(t->name, "server");
    const Leash__Agent__Snapshot *s = t->snapshot;
    assert_int_equal(s->n_groups, 1);
    assert_int_equal(s->n_tasks, 1);
    assert_false(s->truncated);
    assert_string_equal(s->groups[0]->name, "requests");
    assert_string_equal(s->groups[0]->site, "server.c:80");
    assert_int_equal(s->groups[0]->deadline_ms_left, -1);
    const Leash__Agent__Task *x = s->tasks[0];
    assert_string_equal(x->fn, "parse");
    assert_string_equal(x->site, "server.c:88");
    assert_int_equal(x->op, LEASH__AGENT__OP__OP_CHAN_RECV);
    assert_string_equal(x->object, "inbox");
    assert_string_equal(x->blocked_site, "server.c:90");
    assert_int_equal(x->since_ms, 3000);
    assert_int_equal(registry_live_tasks(t), 1);
    assert_string_equal(c.signal, "");
    leash__control__task_tree__free_unpacked(t, NULL);
}

/* The registry is the process's own memory: its header can say it is pid 1,
   "systemd". The tree leashd files names the process leashd knows. */
static void the_tree_is_named_by_leashd_not_by_the_registry(void **state)
{
    (void)state;
    struct leash_reg_header *h = header();
    h->pid = 1;
    strcpy(h->name, "systemd");
    struct registry_crash     c;
    Leash__Control__TaskTree *t = registry_read(reg, TOTAL_SIZE, 5000000000LL, 4715, "worker", &c);
    assert_non_null(t);
    assert_int_equal(t->pid, 4715);
    assert_string_equal(t->name, "worker");
    assert_int_equal(t->snapshot->n_tasks, 1); /* the rest is still read */
    leash__control__task_tree__free_unpacked(t, NULL);
}

static void a_fatal_signal_names_the_task_its_function_and_group(void **state)
{
    (void)state;
    struct leash_reg_header *h = header();
    h->crash_seq = 2;
    h->crash_signal = 11;
    h->crash_task = 7;
    h->crash_addr = 0;
    struct registry_crash     c;
    Leash__Control__TaskTree *t = registry_read(reg, TOTAL_SIZE, 5000000000LL, 4242, "server", &c);
    assert_non_null(t);
    assert_string_equal(c.signal, "SIGSEGV");
    assert_string_equal(c.detail, "died of SIGSEGV (address 0x0) in task 7 (parse, spawned at "
                                  "server.c:88) in group 12 \"requests\"");
    assert_int_equal(c.group, 12);
    assert_int_equal(c.task, 7);
    leash__control__task_tree__free_unpacked(t, NULL);
    /* a record still being written, or of a signal leash does not handle, is no crash */
    h->crash_seq = 1;
    t = registry_read(reg, TOTAL_SIZE, 5000000000LL, 4242, "server", &c);
    assert_string_equal(c.signal, "");
    leash__control__task_tree__free_unpacked(t, NULL);
    h->crash_seq = 2;
    h->crash_signal = 9;
    t = registry_read(reg, TOTAL_SIZE, 5000000000LL, 4242, "server", &c);
    assert_string_equal(c.signal, "");
    leash__control__task_tree__free_unpacked(t, NULL);
}

static void lies_are_cut_cleaned_and_marked(void **state)
{
    (void)state;
    struct leash_reg_header *h = header();
    h->tasks_used = 0xffffffff; /* past the slots: clamped */
    h->groups_used = 0xffffffff;
    memset(groups()[0].name, '\x1b', sizeof groups()[0].name); /* no NUL, control bytes */
    tasks()[0].fn = 0xffffffff;                                /* no such string */
    tasks()[0].op = 1000;                                      /* no such op */
    tasks()[1] = (struct leash_reg_task){.live = 1, .id = 8, .group = 99}; /* no such group */
    tasks()[2] = (struct leash_reg_task){.live = 7, .id = 9};              /* not live: 1 is */
    memset(reg + STRS_OFF + LEASH_REG_STRLEN, 'x', LEASH_REG_STRLEN);      /* no NUL */
    h->tasks_over = 1;
    struct registry_crash     c;
    Leash__Control__TaskTree *t = registry_read(reg, TOTAL_SIZE, 5000000000LL, 4242, "server", &c);
    assert_non_null(t);
    const Leash__Agent__Snapshot *s = t->snapshot;
    assert_true(s->truncated);
    assert_int_equal(s->n_tasks, 2);
    assert_int_equal(s->n_groups, 2); /* 99 shows as "?" */
    assert_int_equal(strlen(s->groups[0]->name), LEASH_REG_NAMELEN);
    assert_int_equal(strspn(s->groups[0]->name, "?"), LEASH_REG_NAMELEN);
    assert_string_equal(s->groups[1]->name, "?");
    assert_string_equal(s->tasks[0]->fn, "");
    assert_int_equal(s->tasks[0]->op, 0);
    assert_int_equal(strlen(s->tasks[0]->site), LEASH_REG_STRLEN - 1 + 3);
    leash__control__task_tree__free_unpacked(t, NULL);
    /* not a registry at all */
    h->magic = 1;
    assert_null(registry_read(reg, TOTAL_SIZE, 0, 4242, "server", &c));
    h->magic = LEASH_REG_MAGIC;
    h->tasks_off = 0;
    assert_null(registry_read(reg, TOTAL_SIZE, 0, 4242, "server", &c));
}

static void only_a_sealed_memfd_of_the_right_size_is_taken(void **state)
{
    (void)state;
    const void *map;
    size_t      size;
    char        err[128];
    /* a plain file can be shrunk under the reader: refused */
    char tmpl[] = "/tmp/leash-reg-XXXXXX";
    int  fd = mkstemp(tmpl);
    unlink(tmpl);
    assert_int_equal(ftruncate(fd, (off_t)TOTAL_SIZE), 0);
    assert_true(registry_map(fd, &map, &size, err, sizeof err) < 0);
    assert_non_null(strstr(err, "sealed"));
    close(fd);
    /* a memfd that is not sealed, or of another size */
    fd = memfd_create("r", MFD_ALLOW_SEALING);
    assert_int_equal(ftruncate(fd, (off_t)TOTAL_SIZE), 0);
    assert_true(registry_map(fd, &map, &size, err, sizeof err) < 0);
    assert_int_equal(ftruncate(fd, 4096), 0);
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
    assert_true(registry_map(fd, &map, &size, err, sizeof err) < 0);
    assert_non_null(strstr(err, "size 4096"));
    close(fd);
    /* as the library makes it */
    fd = memfd_create("r", MFD_ALLOW_SEALING);
    assert_int_equal(ftruncate(fd, (off_t)TOTAL_SIZE), 0);
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
    assert_int_equal(registry_map(fd, &map, &size, err, sizeof err), 0);
    assert_int_equal(size, TOTAL_SIZE);
    close(fd);
    registry_unmap(map, size);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_well_formed_registry_gives_the_tree, setup, teardown),
        cmocka_unit_test_setup_teardown(the_tree_is_named_by_leashd_not_by_the_registry, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_fatal_signal_names_the_task_its_function_and_group, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(lies_are_cut_cleaned_and_marked, setup, teardown),
        cmocka_unit_test_setup_teardown(only_a_sealed_memfd_of_the_right_size_is_taken, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
