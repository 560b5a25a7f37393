/* test_api.c: leash_try_go, the variadic macros, report routing and the version. */
#include "helpers.h"

#include "text.h"

#include <pthread.h>
#include <stdatomic.h>

static int block_on_chan(void *arg)
{
    int v;
    return leash_chan_recv((leash_chan *)arg, &v) == -EPIPE ? 0 : 1;
}

static int ret_zero(void *arg)
{
    (void)arg;
    return 0;
}

static void try_go_refuses_with_eagain_when_the_limit_is_reached(void **state)
{
    (void)state;
    leash_chan *c;
    assert_int_equal(leash_chan_open(&c, "hold", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "one", .limit = 1}), 0);
    assert_int_equal(leash_try_go(g, block_on_chan, c), 0);
    /* the slot stays taken while the child lives, however fast it starts */
    assert_int_equal(leash_try_go(g, ret_zero, NULL), -EAGAIN);
    wait_blocked("chan_recv", 1);
    assert_int_equal(leash_try_go(g, ret_zero, NULL), -EAGAIN);
    char *d = dump_json();
    assert_non_null(d);
    assert_int_equal(count_of(d, "\"fn\":\"ret_zero\""), 0); /* refused: never started */
    assert_int_equal(count_of(d, "\"op\":\"go\""), 0);       /* and nobody waits for a slot */
    free(d);
    assert_int_equal(leash_chan_close(c), 0);
    /* once the child has returned, its slot is free again */
    struct leash_stats st;
    do {
        sched_yield();
        leash_stats(&st);
    } while (st.tasks_live);
    assert_int_equal(leash_try_go(g, ret_zero, NULL), 0);
    /* -EAGAIN is no error of the group's */
    assert_int_equal(leash_group_wait(g), 0);
    leash_chan_free(c);
    assert_nothing_leaked();
}

static void try_go_without_a_limit_is_go(void **state)
{
    (void)state;
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    for (int i = 0; i < 50; i++)
        assert_int_equal(leash_try_go(g, ret_zero, NULL), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_nothing_leaked();
}

static void try_go_on_a_cancelled_group_is_refused_and_wait_says_why(void **state)
{
    (void)state;
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.limit = 2}), 0);
    leash_group_cancel(g);
    assert_int_equal(leash_try_go(g, ret_zero, NULL), -ECANCELED);
    assert_int_equal(leash_try_go(NULL, ret_zero, NULL), -EINVAL);
    assert_int_equal(leash_try_go(g, NULL, NULL), -EINVAL);
    assert_int_equal(leash_group_wait(g), -ECANCELED);
    assert_nothing_leaked();
}

struct pair {
    int a, b;
};

static int sum_pair(void *arg)
{
    struct pair *p = arg;
    return p->a + p->b == 3 ? 0 : 1;
}

/* Every macro whose last argument is a pointer takes a compound literal,
   commas and all. */
static void macros_take_compound_literals(void **state)
{
    (void)state;
    leash_chan *c;
    assert_int_equal(leash_chan_open(&c, "pairs", sizeof(struct pair), 2), 0);
    assert_int_equal(leash_chan_send(c, &(struct pair){1, 2}), 0);
    struct pair got = {0, 0};
    assert_int_equal(leash_chan_recv(c, &got), 0);
    assert_int_equal(got.a + got.b, 3);
    int         v = 5, w = 0;
    leash_chan *d;
    assert_int_equal(leash_chan_open(&d, "ints", sizeof(int), 1), 0);
    assert_int_equal(
        leash_select((struct leash_case[]){{d, LEASH_SEND, &v, 0}, {NULL, LEASH_RECV, &w, 0}}, 2,
                     -1),
        0);
    assert_int_equal(leash_select((struct leash_case[]){{d, LEASH_RECV, &w, 0}}, 1, 0), 0);
    assert_int_equal(w, 5);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, &(leash_group_opts){.name = "lit", .limit = 1}), 0);
    assert_int_equal(leash_go(g, sum_pair, &(struct pair){1, 2}), 0);
    assert_int_equal(leash_group_wait(g), 0);
    leash_chan_free(c);
    leash_chan_free(d);
    assert_nothing_leaked();
}

/* ------------------------------------------------------------ reports */

static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static struct seen {
    char     kind[32];
    char     text[700];
    char     detail[700];
    uint64_t task, group;
    void    *ctx;
} seen[8];
static int nseen;

static void hook(const struct leash_report *r, void *ctx)
{
    pthread_mutex_lock(&seen_mu);
    if (nseen < 8) {
        struct seen *x = &seen[nseen++];
        snprintf(x->kind, sizeof x->kind, "%s", r->kind);
        snprintf(x->text, sizeof x->text, "%s", r->text);
        snprintf(x->detail, sizeof x->detail, "%s", r->detail);
        x->task = r->task;
        x->group = r->group;
        x->ctx = ctx;
    }
    pthread_mutex_unlock(&seen_mu);
}

static int seen_count(void)
{
    pthread_mutex_lock(&seen_mu);
    int n = nseen;
    pthread_mutex_unlock(&seen_mu);
    return n;
}

/* the id of the group or scope named name, once a dump shows it */
static uint64_t wait_node(const char *name)
{
    char needle[96];
    snprintf(needle, sizeof needle, ",\"name\":\"%s\"", name);
    int64_t until = mono_ms() + 10000;
    for (;;) {
        char *d = dump_json();
        assert_non_null(d);
        char *p = strstr(d, needle);
        if (p) {
            while (p > d && strncmp(p, "{\"id\":", 6) != 0)
                p--;
            unsigned long long id = 0;
            assert_int_equal(sscanf(p, "{\"id\":%llu", &id), 1);
            free(d);
            return id;
        }
        free(d);
        if (mono_ms() > until)
            fail_msg("never saw %s in a dump", name);
        sched_yield();
    }
}

static leash_chan      *go_on;
static _Atomic uint64_t leaker_id;

/* opens a group and a scope, waits for a word, returns with both open */
static int leak_group_and_scope(void *arg)
{
    (void)arg;
    atomic_store(&leaker_id, leash_task_id());
    leash_group *g;
    leash_scope *s;
    if (leash_group_open(&g, &(leash_group_opts){.name = "leaky"}) != 0 ||
        leash_scope_open(&s, &(leash_scope_opts){.name = "forgotten"}) != 0)
        return -1;
    int v;
    return leash_chan_recv(go_on, &v) == -EPIPE ? 0 : -1;
}

static void on_report_routes_reports_with_their_task_and_group(void **state)
{
    (void)state;
    int ctx;
    pthread_mutex_lock(&seen_mu);
    nseen = 0;
    pthread_mutex_unlock(&seen_mu);
    leash_on_report(hook, &ctx);

    /* a self-deadlock of a root task: no group */
    leash_mutex m;
    assert_int_equal(leash_mutex_init(&m, "m"), 0);
    assert_int_equal(leash_mutex_lock(&m), 0);
    assert_int_equal(leash_mutex_lock(&m), -EDEADLK);
    assert_int_equal(leash_mutex_unlock(&m), 0);
    leash_mutex_destroy(&m);
    assert_int_equal(seen_count(), 1);
    assert_string_equal(seen[0].kind, "self_deadlock");
    assert_int_equal(seen[0].task, leash_task_id());
    assert_int_equal(seen[0].group, 0);
    assert_ptr_equal(seen[0].ctx, &ctx);
    assert_non_null(strstr(seen[0].text, "self_deadlock"));
    assert_null(strchr(seen[0].text, '\n'));
    /* the detail is the text without its prefix, for a logger with its own */
    char prefix[64];
    snprintf(prefix, sizeof prefix, "leash[%d]: self_deadlock: ", (int)getpid());
    assert_int_equal(strncmp(seen[0].text, prefix, strlen(prefix)), 0);
    assert_string_equal(seen[0].detail, seen[0].text + strlen(prefix));
    assert_non_null(strstr(seen[0].detail, "that it already holds"));

    /* a task that returns with a group and a scope open: each report
       names the real group (or scope) and the task */
    assert_int_equal(leash_chan_open(&go_on, "go_on", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, leak_group_and_scope, NULL), 0);
    uint64_t leaky = wait_node("leaky"), forgotten = wait_node("forgotten");
    assert_int_equal(leash_chan_close(go_on), 0);
    assert_int_equal(leash_group_wait(g), 0);
    leash_chan_free(go_on);
    assert_int_equal(seen_count(), 3);
    assert_string_equal(seen[1].kind, "unwaited_group");
    assert_int_equal(seen[1].group, leaky);
    assert_int_equal(seen[1].task, atomic_load(&leaker_id));
    assert_string_equal(seen[2].kind, "unclosed_scope");
    assert_int_equal(seen[2].group, forgotten);
    assert_int_equal(seen[2].task, atomic_load(&leaker_id));

    /* NULL: back to stderr; the hook is not called again */
    leash_on_report(NULL, NULL);
    uint64_t before = reports();
    assert_int_equal(leash_mutex_init(&m, "m2"), 0);
    assert_int_equal(leash_mutex_lock(&m), 0);
    assert_int_equal(leash_mutex_lock(&m), -EDEADLK);
    assert_int_equal(leash_mutex_unlock(&m), 0);
    leash_mutex_destroy(&m);
    assert_int_equal(reports(), before + 1);
    assert_int_equal(seen_count(), 3);
    assert_nothing_leaked();
}

static void version_is_the_one_built_with_the_header(void **state)
{
    (void)state;
    const char *v = leash_version();
    assert_non_null(v);
    unsigned a, b, c;
    char     end;
    assert_int_equal(sscanf(v, "%u.%u.%u%c", &a, &b, &c, &end), 3);
    assert_string_equal(v, LEASH_VERSION_STRING);
    assert_int_equal(a, LEASH_VERSION_MAJOR);
    assert_int_equal(b, LEASH_VERSION_MINOR);
    assert_int_equal(c, LEASH_VERSION_PATCH);
}

/* A report is cut to its size on a whole UTF-8 character: a task at the
   end of this file, under a #line naming a file of 300 two-byte characters,
   returns with a group open; with group names one byte apart, one of the two
   cuts would fall inside a character. */
int return_with_a_group_open(void *arg);
int return_with_a_group_open_latin1(void *arg);

static void a_report_cut_to_its_size_ends_on_a_whole_character(void **state)
{
    (void)state;
    pthread_mutex_lock(&seen_mu);
    nseen = 0;
    pthread_mutex_unlock(&seen_mu);
    leash_on_report(hook, NULL);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, return_with_a_group_open, "a"), 0);
    assert_int_equal(leash_go(g, return_with_a_group_open, "ab"), 0);
    /* and a file name that is not UTF-8 at all (Latin-1) */
    assert_int_equal(leash_go(g, return_with_a_group_open_latin1, "c"), 0);
    assert_int_equal(leash_group_wait(g), 0);
    leash_on_report(NULL, NULL);
    assert_int_equal(seen_count(), 3);
    /* the three tasks run at once: their reports come in any order */
    int latin1 = 0;
    for (int i = 0; i < 3; i++) {
        assert_string_equal(seen[i].kind, "unwaited_group");
        if (strstr(seen[i].text, "/home/jos?/worker.c"))
            latin1++;
        else
            assert_true(strlen(seen[i].text) > 500); /* it was cut */
        if (!leash_text_is_clean(seen[i].text))
            fail_msg("report %d is not whole UTF-8: %s", i, seen[i].text);
    }
    assert_int_equal(latin1, 1);
    assert_nothing_leaked();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(try_go_refuses_with_eagain_when_the_limit_is_reached),
        cmocka_unit_test(try_go_without_a_limit_is_go),
        cmocka_unit_test(try_go_on_a_cancelled_group_is_refused_and_wait_says_why),
        cmocka_unit_test(macros_take_compound_literals),
        cmocka_unit_test(on_report_routes_reports_with_their_task_and_group),
        cmocka_unit_test(a_report_cut_to_its_size_ends_on_a_whole_character),
        cmocka_unit_test(version_is_the_one_built_with_the_header),
    };
    return cmocka_run_group_tests(tests, quiet_setup, NULL);
}

/* Last in the file: the #line below names every line after it. */
#line 1 "éééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé"
int return_with_a_group_open(void *arg)
{
    leash_group *g;
    return leash_group_open(&g, &(leash_group_opts){.name = arg});
}

#line 1 "/home/jos\xe9/worker.c"
int return_with_a_group_open_latin1(void *arg)
{
    leash_group *g;
    return leash_group_open(&g, &(leash_group_opts){.name = arg});
}
