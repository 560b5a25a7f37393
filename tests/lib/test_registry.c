/* test_registry.c: what a running task does, the registry, fatal signals
   and LEASH_LEAKCHECK. */
#include "helpers.h"

#include "internal.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/wait.h>

static char *dump_text(void)
{
    int fd = memfd_create("text", 0);
    assert_int_equal(leash_dump(fd, LEASH_DUMP_TEXT), 0);
    off_t n = lseek(fd, 0, SEEK_END);
    char *s = calloc(1, (size_t)n + 1);
    assert_int_equal(pread(fd, s, (size_t)n, 0), n);
    close(fd);
    return s;
}

/* The JSON object of the task running fn, in d (a pointer into d). */
static const char *task_of(const char *d, const char *fn)
{
    char needle[128];
    snprintf(needle, sizeof needle, "\"fn\":\"%s\"", fn);
    return strstr(d, needle);
}

/* A number after key in the task's object, -1 when null or absent. */
static long long field(const char *t, const char *key)
{
    char needle[64];
    snprintf(needle, sizeof needle, "\"%s\":", key);
    const char *p = t ? strstr(t, needle) : NULL;
    const char *end = t ? strstr(t, "},{") : NULL;
    if (!p || (end && p > end))
        return -1;
    p += strlen(needle);
    return strncmp(p, "null", 4) == 0 ? -1 : atoll(p);
}

static _Atomic int stop;

static int spin(void *arg)
{
    (void)arg;
    volatile uint64_t x = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed))
        x++;
    return 0;
}

static int reader(void *arg)
{
    char    c;
    ssize_t r = read(*(int *)arg, &c, 1);
    return r == 1 ? 0 : -EIO;
}

static void dump_tells_a_spinning_task_from_one_in_read(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    atomic_store(&stop, 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "busy"}), 0);
    assert_int_equal(leash_go(g, spin, NULL), 0);
    assert_int_equal(leash_go(g, reader, &p[0]), 0);

    /* the reader shows in read(2) once it is there; the spinner's CPU time
       grows from one dump to the next, however slow the machine */
    long long first = -1, last = -1, pct = -1;
    bool      in_read = false;
    int64_t   until = mono_ms() + 60000;
    /* its share is known once a sample of it is 100 ms old, and stays so */
    while (mono_ms() < until && !(in_read && first >= 0 && last >= first + 50 && pct >= 0)) {
        char *d = dump_json();
        assert_non_null(d);
        const char *r = task_of(d, "reader");
        const char *rs = r ? strstr(r, "\"syscall\":{\"nr\":") : NULL;
        const char *re = r ? strstr(r, "},{") : NULL;
        if (rs && (!re || rs < re) &&
            strncmp(strstr(rs, "\"name\":"), "\"name\":\"read\"", 13) == 0)
            in_read = true;
        long long ms = field(task_of(d, "spin"), "cpu_ms");
        if (ms >= 0 && first < 0)
            first = ms;
        if (ms >= 0)
            last = ms;
        pct = field(task_of(d, "spin"), "cpu_pct");
        free(d);
        if (!(in_read && first >= 0 && last >= first + 50 && pct >= 0))
            leash_sleep(20);
    }
    assert_true(in_read);
    assert_true(first >= 0);
    assert_true(last >= first + 50);

    char     *d = dump_json();
    long long spin_pct = field(task_of(d, "spin"), "cpu_pct");
    assert_true(spin_pct >= 0 && spin_pct <= 100);
    assert_non_null(strstr(task_of(d, "spin"), "\"syscall\":null"));
    free(d);

    char *t = dump_text();
    /* the running time, then what it does now */
    const char *r = strstr(t, "reader [running, "), *sp = strstr(t, "spin [running, ");
    long long   ms;
    char        call[16];
    int         text_pct;
    assert_non_null(r);
    assert_int_equal(sscanf(r, "reader [running, %lld ms, now in %15[a-z_0-9](2)", &ms, call), 2);
    assert_string_equal(call, "read");
    assert_non_null(sp);
    assert_int_equal(sscanf(sp, "spin [running, %lld ms, on CPU %d%%", &ms, &text_pct), 2);
    free(t);

    atomic_store(&stop, 1);
    assert_int_equal(write(p[1], "x", 1), 1);
    assert_int_equal(leash_group_wait(g), 0);
    close(p[0]);
    close(p[1]);
    assert_nothing_leaked();
}

/* ---------------------------------------------------------- the registry */

static int park(void *arg)
{
    int v;
    return leash_chan_recv(arg, &v);
}

/* The registry is written by the process's threads with no lock and read
   by another process, whose view the sequence words keep sane: the test
   reads it as leashd does, copying bytes while tasks may write, which is
   why the thread sanitizer is told to look away here alone. */
__attribute__((no_sanitize_thread)) static void copy_in(void *dst, const void *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ((unsigned char *)dst)[i] = ((const volatile unsigned char *)src)[i];
}

static void reg_str(uint32_t i, char *out)
{
    copy_in(out,
            (const char *)leash__reg + leash__reg->strs_off + (uint64_t)i * leash__reg->strlen_,
            LEASH_REG_STRLEN);
    out[LEASH_REG_STRLEN - 1] = '\0';
}

static int live_slots(uint64_t group, const char *fn, const char *obj)
{
    const struct leash_reg_task *slots =
        (const void *)((const char *)leash__reg + leash__reg->tasks_off);
    uint32_t used;
    copy_in(&used, &leash__reg->tasks_used, sizeof used);
    int n = 0;
    for (uint32_t i = 0; i < used; i++) {
        struct leash_reg_task t;
        char                  s[LEASH_REG_STRLEN];
        copy_in(&t, &slots[i], sizeof t);
        if (!t.live || t.group != group || (t.seq & 1))
            continue;
        reg_str(t.fn, s);
        if (fn && strcmp(s, fn) != 0)
            continue;
        t.obj[sizeof t.obj - 1] = '\0';
        if (obj && (t.op != LEASH_OP_CHAN_RECV || strcmp(t.obj, obj) != 0))
            continue;
        reg_str(t.file, s);
        if (strcmp(s, __FILE__) != 0 || t.line == 0)
            continue;
        n++;
    }
    return n;
}

static uint64_t group_slot(const char *name)
{
    const struct leash_reg_group *slots =
        (const void *)((const char *)leash__reg + leash__reg->groups_off);
    uint32_t used;
    copy_in(&used, &leash__reg->groups_used, sizeof used);
    for (uint32_t i = 0; i < used; i++) {
        struct leash_reg_group g;
        copy_in(&g, &slots[i], sizeof g);
        g.name[sizeof g.name - 1] = '\0';
        if (g.live && strcmp(g.name, name) == 0)
            return g.id;
    }
    return 0;
}

static void registry_holds_live_tasks_with_sites_and_blocked_on(void **state)
{
    (void)state;
    leash_task_id(); /* the library starts */
    assert_non_null(leash__reg);
    assert_true(leash__reg_fd() >= 0);
    assert_int_equal(leash__reg->magic, LEASH_REG_MAGIC);
    assert_int_equal(leash__reg->pid, getpid());
    leash_chan *c;
    assert_int_equal(leash_chan_open(&c, "inbox", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "parked"}), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(leash_go(g, park, c), 0);
    wait_blocked("chan_recv", 3);
    uint64_t id = group_slot("parked");
    assert_true(id != 0);
    assert_int_equal(live_slots(id, "park", "inbox"), 3);
    leash_group_cancel(g);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_int_equal(live_slots(id, NULL, NULL), 0);
    assert_int_equal(group_slot("parked"), 0);
    leash_chan_free(c);
    assert_nothing_leaked();
}

/* ------------------------------------------------- more tasks than slots */

static _Atomic int burst_go, burst_running;

static int hold_until_told(void *arg)
{
    (void)arg;
    atomic_fetch_add(&burst_running, 1);
    while (!atomic_load(&burst_go))
        sched_yield();
    return 0;
}

/* A burst of n tasks alive at once: the first ones spin on every CPU, so
   the rest wait in the pool's queue (a worker the monitor adds takes one
   and holds it too). Returns the group, with every task spawned. */
static leash_group *burst(int n, const char *name)
{
    int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    atomic_store(&burst_go, 0);
    atomic_store(&burst_running, 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = name}), 0);
    for (int i = 0; i < ncpu; i++)
        assert_int_equal(leash_go(g, hold_until_told, NULL), 0);
    wait_count(&burst_running, ncpu);
    for (int i = ncpu; i < n; i++)
        assert_int_equal(leash_go(g, hold_until_told, NULL), 0);
    return g;
}

static void registry_lists_every_task_again_after_a_burst_beyond_its_slots(void **state)
{
    (void)state;
    /* more tasks alive at once than the registry has slots: it says it is
       truncated, and the records made last have no slot */
    leash_group *g = burst(LEASH_REG_TASKS + 500, "beyond");
    uint64_t     over;
    copy_in(&over, &leash__reg->tasks_over, sizeof over);
    assert_true(over >= 500);
    atomic_store(&burst_go, 1);
    assert_int_equal(leash_group_wait(g), 0);
    copy_in(&over, &leash__reg->tasks_over, sizeof over);
    assert_int_equal(over, 0);
    /* then fewer than it has slots, reusing those records: every one is
       there, and nothing is marked truncated */
    for (int round = 0; round < 3; round++) {
        g = burst(LEASH_REG_TASKS - 100, "within");
        uint64_t id = group_slot("within");
        assert_true(id != 0);
        copy_in(&over, &leash__reg->tasks_over, sizeof over);
        assert_int_equal(over, 0);
        assert_int_equal(live_slots(id, "hold_until_told", NULL), LEASH_REG_TASKS - 100);
        atomic_store(&burst_go, 1);
        assert_int_equal(leash_group_wait(g), 0);
    }
    assert_nothing_leaked();
}

/* A group opened while its parent is being cancelled: the cancel can reach
   it before it has its registry slot. Whichever comes first, its slot says
   cancelled once the group is (what a post-mortem reads), and under TSan
   the two sides do not race on the group's slot pointer. */
static _Atomic int opening, slot_said_not;

static int open_as_parent_is_cancelled(void *arg)
{
    (void)arg;
    atomic_store(&opening, 1);
    leash_group *g;
    if (leash_group_open(&g, &(leash_group_opts){.name = "racing"}) != 0)
        return 1;
    /* until the parent's cancel has reached g itself and left its lock,
       under which a cancel marks the slot */
    while (!atomic_load(&g->cancel_cause))
        leash_checkpoint();
    leash__lock(&g->mu);
    leash__unlock(&g->mu);
    struct leash_reg_group *r = __atomic_load_n(&g->reg, __ATOMIC_ACQUIRE);
    uint32_t                cancelled = 0;
    if (r)
        copy_in(&cancelled, &r->cancelled, sizeof cancelled);
    if (r && !cancelled)
        atomic_fetch_add(&slot_said_not, 1);
    leash_group_wait(g);
    return 0;
}

static void a_group_opened_as_its_parent_is_cancelled_has_its_slot_say_so(void **state)
{
    (void)state;
    atomic_store(&slot_said_not, 0);
    for (int round = 0; round < 300; round++) {
        leash_group *p;
        assert_int_equal(leash_group_open(&p, NULL), 0);
        atomic_store(&opening, 0);
        assert_int_equal(leash_go(p, open_as_parent_is_cancelled, NULL), 0);
        while (!atomic_load(&opening))
            leash_checkpoint(); /* (a worker may have to start it) */
        leash_group_cancel(p);
        assert_int_equal(leash_group_wait(p), -ECANCELED);
    }
    /* a child's return does not count once its group is cancelled: the
       child says what it saw here */
    assert_int_equal(atomic_load(&slot_said_not), 0);
    assert_nothing_leaked();
}

/* ------------------------------------------------- in a child process */

static char self_exe[4096];

/* Runs this test binary as a child in mode; returns its wait status. */
static int run_child(const char *mode, const char *env, char *err, size_t errlen)
{
    int ep[2];
    assert_int_equal(pipe(ep), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(ep[1], 2);
        close(ep[0]);
        if (env)
            putenv((char *)env);
        /* the sanitizers' own fatal-signal handlers would exit 1 instead */
        setenv("ASAN_OPTIONS", "handle_segv=0:handle_abort=0:detect_leaks=0", 1);
        setenv("TSAN_OPTIONS", "handle_segv=0:handle_abort=0:die_after_fork=0", 1);
        execl(self_exe, self_exe, "--child", mode, (char *)NULL);
        _exit(127);
    }
    close(ep[1]);
    size_t  n = 0;
    ssize_t r;
    while (n + 1 < errlen && (r = read(ep[0], err + n, errlen - 1 - n)) > 0)
        n += (size_t)r;
    err[n] = '\0';
    close(ep[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return st;
}

static void leakcheck_fails_a_process_that_exits_with_a_live_task(void **state)
{
    (void)state;
    char err[8192];
    int  st = run_child("leak", "LEASH_LEAKCHECK=1", err, sizeof err);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 70);
    assert_non_null(strstr(err, "LEASH_LEAKCHECK: 1 task(s) still alive"));
    assert_non_null(strstr(err, "park [blocked on chan_recv \"never\""));
    /* without it, the same process exits 0; with every task joined, too */
    st = run_child("leak", NULL, err, sizeof err);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    st = run_child("clean", "LEASH_LEAKCHECK=1", err, sizeof err);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
#if !defined(__SANITIZE_ADDRESS__)
    /* in a forked child too: the task that forked is not counted there.
       Not under ASan: its allocator in this toolchain (GCC 12's
       libsanitizer) takes no lock around fork, so the forked child hung in
       malloc once in 132 runs, when another thread allocated at the
       fork (as in test_fork). */
    st = run_child("forkleak", "LEASH_LEAKCHECK=1", err, sizeof err);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_non_null(strstr(err, "LEASH_LEAKCHECK: 1 task(s) still alive"));
#endif
    /* a task that calls exit() itself is not a task left behind */
    st = run_child("exit", "LEASH_LEAKCHECK=1", err, sizeof err);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 5);
    assert_null(strstr(err, "LEASH_LEAKCHECK"));
}

static void registry_off_makes_none(void **state)
{
    (void)state;
    char err[1024];
    int  st = run_child("noreg", "LEASH_REGISTRY=off", err, sizeof err);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    st = run_child("noreg", NULL, err, sizeof err);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
}

static void fatal_signals_kill_as_without_leash(void **state)
{
    (void)state;
    char err[8192];
    int  st = run_child("segv", NULL, err, sizeof err);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGSEGV);
    st = run_child("abort", NULL, err, sizeof err);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGABRT);
    st = run_child("segv", "LEASH_CRASH=off", err, sizeof err);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGSEGV);
    /* a handler the program had before leash still runs */
    st = run_child("chain", NULL, err, sizeof err);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 42);
    assert_non_null(strstr(err, "crash recorded: signal 11 task "));
}

/* A program whose own handler recovers from a fault (siglongjmp) did not
   die of it: once the thread runs on, the registry holds no crash, and the
   next fault is recorded again. */
static void a_fault_the_program_recovers_from_is_taken_back(void **state)
{
    (void)state;
    char err[8192];
    int  st = run_child("recover", NULL, err, sizeof err);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    if (!strstr(err, "recovered: crash_seq 2, then 0, then 2, then 0\n"))
        fail_msg("the child said: %s", err);
}

/* a real NULL dereference, which UBSan would turn into an exit */
__attribute__((no_sanitize_undefined)) static int deref(void *arg)
{
    return *(volatile int *)arg;
}

static int do_abort(void *arg)
{
    (void)arg;
    abort();
}

static void own_segv(int sig, siginfo_t *si, void *uc)
{
    (void)si;
    (void)uc;
    char line[128];
    int  n = snprintf(line, sizeof line, "crash recorded: signal %d task %llu\n",
                      leash__reg->crash_signal, (unsigned long long)leash__reg->crash_task);
    if (leash__reg->crash_seq == 2 && leash__reg->crash_task != 0 && sig == SIGSEGV)
        (void)!write(2, line, (size_t)n);
    _exit(42);
}

static sigjmp_buf recover_at;

static void recover_segv(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)si;
    (void)uc;
    siglongjmp(recover_at, 1);
}

static int fault_and_recover(void *arg)
{
    uint32_t *seen = arg;
    if (sigsetjmp(recover_at, 1) == 0)
        deref(NULL);
    seen[0] = __atomic_load_n(&leash__reg->crash_seq, __ATOMIC_ACQUIRE);
    return 0;
}

static int recover(void)
{
    struct sigaction sa = {.sa_sigaction = recover_segv, .sa_flags = SA_SIGINFO};
    sigaction(SIGSEGV, &sa, NULL);
    uint32_t     seen[1] = {0};
    leash_group *g;
    leash_group_open(&g, &(leash_group_opts){.name = "child"});
    leash_go(g, fault_and_recover, seen);
    if (leash_group_wait(g) != 0)
        return 1;
    uint32_t after = __atomic_load_n(&leash__reg->crash_seq, __ATOMIC_ACQUIRE);
    /* the next fault is leash's to record again, then the program's */
    uint32_t again[1] = {0};
    leash_group_open(&g, &(leash_group_opts){.name = "again"});
    leash_go(g, fault_and_recover, again);
    leash_group_wait(g);
    fprintf(stderr, "recovered: crash_seq %u, then %u, then %u, then %u\n", seen[0], after,
            again[0], leash__reg->crash_seq);
    return 0;
}

static int call_exit(void *arg)
{
    (void)arg;
    exit(5);
}

/* Forks; the child starts a task that never ends and exits: LEASH_LEAKCHECK
   makes that 70. Returns 0 when it did. */
static int fork_and_leak(void *arg)
{
    (void)arg;
    pid_t pid = fork();
    if (pid == 0) {
        static leash_chan *c;
        leash_group       *g;
        leash_chan_open(&c, "never", sizeof(int), 0);
        leash_group_open(&g, NULL);
        leash_go(g, park, c);
        wait_blocked("chan_recv", 1);
        exit(0);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return 1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 70 ? 0 : 2;
}

static int child(const char *mode)
{
    if (strcmp(mode, "recover") == 0)
        return recover();
    if (strcmp(mode, "forkleak") == 0) {
        leash_group *g;
        leash_group_open(&g, NULL);
        leash_go(g, fork_and_leak, NULL);
        return leash_group_wait(g) == 0 ? 0 : 1;
    }
    if (strcmp(mode, "exit") == 0) {
        leash_group *g;
        leash_group_open(&g, NULL);
        leash_go(g, call_exit, NULL);
        leash_group_wait(g);
        return 1; /* not reached */
    }
    if (strcmp(mode, "noreg") == 0) {
        leash_task_id(); /* the library starts */
        return leash__reg == NULL && leash__reg_fd() < 0 ? 0 : 1;
    }
    if (strcmp(mode, "chain") == 0) {
        struct sigaction sa = {.sa_sigaction = own_segv, .sa_flags = SA_SIGINFO};
        sigaction(SIGSEGV, &sa, NULL);
    }
    leash_group *g;
    leash_group_open(&g, &(leash_group_opts){.name = "child"});
    if (strcmp(mode, "leak") == 0 || strcmp(mode, "clean") == 0) {
        static leash_chan *c;
        leash_chan_open(&c, "never", sizeof(int), 0);
        leash_go(g, park, c);
        wait_blocked("chan_recv", 1);
        if (strcmp(mode, "clean") == 0) {
            leash_group_cancel(g);
            leash_group_wait(g);
        }
        return 0;
    }
    leash_go(g, strcmp(mode, "abort") == 0 ? do_abort : deref, NULL);
    leash_group_wait(g);
    return 3;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--child") == 0)
        return child(argv[2]);
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0)
        return 1;
    self_exe[n] = '\0';
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dump_tells_a_spinning_task_from_one_in_read),
        cmocka_unit_test(registry_holds_live_tasks_with_sites_and_blocked_on),
        cmocka_unit_test(leakcheck_fails_a_process_that_exits_with_a_live_task),
        cmocka_unit_test(fatal_signals_kill_as_without_leash),
        cmocka_unit_test(a_fault_the_program_recovers_from_is_taken_back),
        cmocka_unit_test(registry_off_makes_none),
        cmocka_unit_test(registry_lists_every_task_again_after_a_burst_beyond_its_slots),
        cmocka_unit_test(a_group_opened_as_its_parent_is_cancelled_has_its_slot_say_so),
    };
    return cmocka_run_group_tests(tests, quiet_setup, NULL);
}
