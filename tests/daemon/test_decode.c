/* test_decode.c: framing and the checked decoders of both protocols. */
#include "stubs.h"
#include "decode.h"
#include "frame.h"

static void frames_are_cut_whole_or_refused(void **state)
{
    (void)state;
    uint8_t        buf[16] = {0, 0, 0, 3, 'a', 'b', 'c', 0, 0};
    const uint8_t *msg;
    size_t         len;
    assert_int_equal(leash_frame_parse(buf, 3, 100, &msg, &len), 0); /* header incomplete */
    assert_int_equal(leash_frame_parse(buf, 6, 100, &msg, &len), 0); /* payload incomplete */
    assert_int_equal(leash_frame_parse(buf, 9, 100, &msg, &len), 7);
    assert_int_equal(len, 3);
    assert_memory_equal(msg, "abc", 3);
    leash_frame_put_len(buf, 101);
    assert_int_equal(leash_frame_parse(buf, 4, 100, &msg, &len), -90); /* -EMSGSIZE */
    leash_frame_put_len(buf, 0x01020304);
    assert_int_equal(leash_frame_get_len(buf), 0x01020304);
}

/* Packs m into buf and decodes it back. */
static Leash__Agent__AgentMessage *roundtrip(const Leash__Agent__AgentMessage *m, char *why)
{
    static uint8_t buf[65536];
    size_t         n = leash__agent__agent_message__pack(m, buf);
    return agent_decode(buf, n, NULL, why, 256);
}

/* A Hello named name whose snapshot holds group g and task t, packed and
   decoded: the decoded message, or NULL with why. */
static Leash__Agent__AgentMessage *hello_of(Leash__Agent__Group *g, Leash__Agent__Task *t,
                                            char *name, char *why)
{
    Leash__Agent__Snapshot s = LEASH__AGENT__SNAPSHOT__INIT;
    s.n_groups = 1;
    s.groups = &g;
    s.n_tasks = 1;
    s.tasks = &t;
    Leash__Agent__Hello h = LEASH__AGENT__HELLO__INIT;
    h.version = 1;
    h.name = name;
    h.snapshot = &s;
    Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_HELLO;
    m.hello = &h;
    return roundtrip(&m, why);
}

static void good_hello_and_events_pass(void **state)
{
    (void)state;
    Leash__Agent__Group g = LEASH__AGENT__GROUP__INIT;
    g.id = 2;
    g.name = "search";
    g.deadline_ms_left = 100;
    Leash__Agent__Task t = LEASH__AGENT__TASK__INIT;
    t.id = 3;
    t.group = 2;
    t.fn = "worker";
    t.op = LEASH__AGENT__OP__OP_CHAN_SEND;
    char                        why[256];
    Leash__Agent__AgentMessage *d = hello_of(&g, &t, "svc", why);
    assert_non_null(d);
    assert_string_equal(d->hello->name, "svc");
    assert_int_equal(d->hello->snapshot->tasks[0]->op, LEASH__AGENT__OP__OP_CHAN_SEND);
    leash__agent__agent_message__free_unpacked(d, NULL);
}

static Leash__Agent__AgentMessage one_event(Leash__Agent__Event *e, Leash__Agent__Events *es,
                                            Leash__Agent__Event **ep)
{
    *ep = e;
    leash__agent__events__init(es);
    es->n_events = 1;
    es->events = ep;
    Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_EVENTS;
    m.events = es;
    return m;
}

static void every_bad_field_is_refused_with_a_reason(void **state)
{
    (void)state;
    static const struct {
        int         kind;
        uint64_t    group, task;
        int64_t     deadline, since;
        int         op;
        const char *report_kind, *want;
    } cases[] = {
        {LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 0, 1, -1, 0, 0, "", "valid group id"},
        {LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 5, 1, -7, 0, 0, "", "below -1"},
        {LEASH__AGENT__EVENT__KIND__GROUP_END, 0, 0, 0, 0, 0, "", "without a group id"},
        {LEASH__AGENT__EVENT__KIND__TASK_START, 2, 0, 0, 0, 0, "", "task and group ids"},
        {LEASH__AGENT__EVENT__KIND__STUCK, 2, 3, 0, 10, 0, "", "not a blocking one"},
        {LEASH__AGENT__EVENT__KIND__STUCK, 2, 3, 0, 10, 99, "", "not a blocking one"},
        {LEASH__AGENT__EVENT__KIND__STUCK, 2, 3, 0, -1, 1, "", "negative since_ms"},
        {LEASH__AGENT__EVENT__KIND__REPORT, 0, 0, 0, 0, 0, "", "without a kind"},
        {LEASH__AGENT__EVENT__KIND__STATE, 2, 0, 0, 0, 0, "", "state without a task id"},
        {LEASH__AGENT__EVENT__KIND__STATE, 2, 3, 0, 0, 99, "", "state op out of range"},
        {LEASH__AGENT__EVENT__KIND__STATE, 2, 3, 0, -5, 1, "", "negative since_ms"},
        /* times a library keeping int64 ns cannot send, which leashd's
           clock arithmetic would overflow on */
        {LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 5, 1, INT64_MAX, 0, 0, "", "above 9223372036854"},
        {LEASH__AGENT__EVENT__KIND__GROUP_OPEN, 5, 1, INT64_MAX / 1000000 + 1, 0, 0, "",
         "above 9223372036854"},
        {LEASH__AGENT__EVENT__KIND__STUCK, 2, 3, 0, INT64_MAX, 1, "", "since_ms above"},
        {LEASH__AGENT__EVENT__KIND__STATE, 2, 3, 0, INT64_MAX / 1000000 + 1, 1, "",
         "since_ms above"},
        {42, 1, 1, 0, 0, 0, "", "unknown event kind"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Leash__Agent__Event e = LEASH__AGENT__EVENT__INIT, *ep;
        e.kind = cases[i].kind;
        e.group = cases[i].group;
        e.task = cases[i].task;
        e.deadline_ms_left = cases[i].deadline;
        e.since_ms = cases[i].since;
        e.op = cases[i].op;
        e.report_kind = (char *)cases[i].report_kind;
        Leash__Agent__Events        es;
        Leash__Agent__AgentMessage  m = one_event(&e, &es, &ep);
        char                        why[256] = "";
        Leash__Agent__AgentMessage *d = roundtrip(&m, why);
        if (d) {
            leash__agent__agent_message__free_unpacked(d, NULL);
            fail_msg("case %zu accepted", i);
        }
        if (!strstr(why, cases[i].want))
            fail_msg("case %zu: '%s' lacks '%s'", i, why, cases[i].want);
    }
}

/* A Hello whose one group and one task carry these times: refused with
   `want` in the reason, or accepted (want NULL). */
static void hello_with_times(int64_t deadline_ms_left, int64_t since_ms, const char *want)
{
    Leash__Agent__Group g = LEASH__AGENT__GROUP__INIT;
    g.id = 2;
    g.deadline_ms_left = deadline_ms_left;
    Leash__Agent__Task t = LEASH__AGENT__TASK__INIT;
    t.id = 3;
    t.group = 2;
    t.op = LEASH__AGENT__OP__OP_SLEEP;
    t.since_ms = since_ms;
    char                        why[256] = "";
    Leash__Agent__AgentMessage *d = hello_of(&g, &t, "", why);
    if (!want) {
        if (!d)
            fail_msg("deadline %lld since %lld refused: %s", (long long)deadline_ms_left,
                     (long long)since_ms, why);
        leash__agent__agent_message__free_unpacked(d, NULL);
        return;
    }
    if (d) {
        leash__agent__agent_message__free_unpacked(d, NULL);
        fail_msg("deadline %lld since %lld accepted", (long long)deadline_ms_left,
                 (long long)since_ms);
    }
    if (!strstr(why, want))
        fail_msg("'%s' lacks '%s'", why, want);
}

static Leash__Agent__AgentMessage *confirm_with_deadline(int64_t deadline_ms_left, char *why)
{
    Leash__Agent__ConfirmReply r = LEASH__AGENT__CONFIRM_REPLY__INIT;
    r.request = 1;
    r.group = 2;
    r.deadline_ms_left = deadline_ms_left;
    Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_CONFIRM;
    m.confirm = &r;
    return roundtrip(&m, why);
}

/* A library keeps its times as int64 ns, so no time it sends in ms is above
   INT64_MAX / 10^6; leashd adds these to its clock, and a bigger one would
   overflow it (a deadline wrapped into the past). */
static void times_no_library_can_send_are_refused(void **state)
{
    (void)state;
    const int64_t most = INT64_MAX / 1000000;
    hello_with_times(most, most, NULL);
    hello_with_times(-1, 0, NULL);
    hello_with_times(most + 1, 0, "group deadline_ms_left out of");
    hello_with_times(INT64_MAX, 0, "group deadline_ms_left out of");
    hello_with_times(-1, most + 1, "task since_ms out of");
    hello_with_times(-1, INT64_MAX, "task since_ms out of");

    char                        why[256] = "";
    Leash__Agent__AgentMessage *d = confirm_with_deadline(most, why);
    assert_non_null(d);
    leash__agent__agent_message__free_unpacked(d, NULL);
    assert_null(confirm_with_deadline(INT64_MAX - 5, why));
    assert_non_null(strstr(why, "confirm reply deadline_ms_left out of"));
    assert_null(confirm_with_deadline(most + 1, why));
}

static void restarts_and_supervisor_groups_are_checked(void **state)
{
    (void)state;
    static const struct {
        uint64_t    group;
        const char *strategy;
        int64_t     backoff;
        const char *want; /* NULL: accepted */
    } cases[] = {
        {2, "one_for_one", 40, NULL},
        {2, "rest_for_one", 0, NULL},
        {0, "one_for_all", 0, "without a group id"},
        {2, "", 0, "without a group id or a strategy"},
        {2, "one_for_none", 0, "unknown strategy"},
        {2, "one_for_one", -1, "negative backoff"},
        {2, "one_for_one", INT64_MAX, NULL}, /* a library's "never" */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Leash__Agent__Event e = LEASH__AGENT__EVENT__INIT, *ep;
        e.kind = LEASH__AGENT__EVENT__KIND__RESTART;
        e.group = cases[i].group;
        e.task = 7;
        e.fn = "worker";
        e.strategy = (char *)cases[i].strategy;
        e.backoff_ms = cases[i].backoff;
        e.restarts = 3;
        Leash__Agent__Events        es;
        Leash__Agent__AgentMessage  m = one_event(&e, &es, &ep);
        char                        why[256] = "";
        Leash__Agent__AgentMessage *d = roundtrip(&m, why);
        if (!cases[i].want) {
            if (!d)
                fail_msg("case %zu refused: %s", i, why);
            assert_int_equal(d->events->events[0]->restarts, 3);
            leash__agent__agent_message__free_unpacked(d, NULL);
            continue;
        }
        if (d) {
            leash__agent__agent_message__free_unpacked(d, NULL);
            fail_msg("case %zu accepted", i);
        }
        if (!strstr(why, cases[i].want))
            fail_msg("case %zu: '%s' lacks '%s'", i, why, cases[i].want);
    }
    /* a group_open may say it is a supervisor, but only with a known strategy */
    Leash__Agent__Event e = LEASH__AGENT__EVENT__INIT, *ep;
    e.kind = LEASH__AGENT__EVENT__KIND__GROUP_OPEN;
    e.group = 2;
    e.deadline_ms_left = -1;
    e.strategy = "all_for_none";
    Leash__Agent__Events       es;
    Leash__Agent__AgentMessage m = one_event(&e, &es, &ep);
    char                       why[256] = "";
    assert_null(roundtrip(&m, why));
    assert_non_null(strstr(why, "unknown strategy"));
    /* a giving-up supervisor's report is a known kind */
    leash__agent__event__init(&e);
    e.kind = LEASH__AGENT__EVENT__KIND__REPORT;
    e.report_kind = "restart_limit";
    Leash__Agent__AgentMessage *d = roundtrip(&m, why);
    assert_non_null(d);
    leash__agent__agent_message__free_unpacked(d, NULL);
    /* and a snapshot's group, likewise */
    Leash__Agent__Group g = LEASH__AGENT__GROUP__INIT, *gp = &g;
    g.id = 2;
    g.strategy = "one_for_two";
    Leash__Agent__Snapshot s = LEASH__AGENT__SNAPSHOT__INIT;
    s.n_groups = 1;
    s.groups = &gp;
    Leash__Agent__Hello h = LEASH__AGENT__HELLO__INIT;
    h.version = 1;
    h.name = "svc";
    h.snapshot = &s;
    m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_HELLO;
    m.hello = &h;
    assert_null(roundtrip(&m, why));
    assert_non_null(strstr(why, "unknown strategy"));
    g.strategy = "one_for_all";
    g.backoff_ms = -5;
    assert_null(roundtrip(&m, why));
    g.backoff_ms = 5;
    assert_non_null(d = roundtrip(&m, why));
    leash__agent__agent_message__free_unpacked(d, NULL);
}

/* A name never costs a process its supervision: whatever it holds, the
   message passes with the name cleaned and cut on a UTF-8 boundary. */
static void names_are_cleaned_never_refused(void **state)
{
    (void)state;
    char                why[256];
    Leash__Agent__Hello h = LEASH__AGENT__HELLO__INIT;
    h.version = 1;
    Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_HELLO;
    m.hello = &h;
    static const struct {
        const char *in, *out;
    } names[] = {
        {"", ""},
        {"a\x01"
         "b\nc",
         "a?b?c"},
        {"bad\xff\xfe"
         "utf8",
         "bad??utf8"},
        {"over\xc0\xaflong", "over??long"},        /* an overlong '/' */
        {"surrogate\xed\xa0\x80", "surrogate???"}, /* U+D800 */
        {"del\x7f"
         "c1\xc2\x85",
         "del?c1?"},
        {"caf\xc3\xa9", "caf\xc3\xa9"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        h.name = (char *)names[i].in;
        Leash__Agent__AgentMessage *d = roundtrip(&m, why);
        if (!d)
            fail_msg("name %zu refused: %s", i, why);
        assert_string_equal(d->hello->name, names[i].out);
        leash__agent__agent_message__free_unpacked(d, NULL);
    }
    /* 200 bytes, with a 3-byte character across the 63-byte cut */
    char long_name[201];
    memset(long_name, 'x', 200);
    long_name[200] = '\0';
    memcpy(long_name + 62, "\xe2\x82\xac", 3); /* EURO SIGN at bytes 62..64 */
    h.name = long_name;
    Leash__Agent__AgentMessage *d = roundtrip(&m, why);
    assert_non_null(d);
    assert_int_equal(strlen(d->hello->name), 62); /* cut before the euro, not inside it */
    leash__agent__agent_message__free_unpacked(d, NULL);
    /* every other string of a snapshot and an event as well */
    h.name = "ok";
    Leash__Agent__Task     t = LEASH__AGENT__TASK__INIT, *tp = &t;
    Leash__Agent__Group    g = LEASH__AGENT__GROUP__INIT, *gp = &g;
    Leash__Agent__Snapshot s = LEASH__AGENT__SNAPSHOT__INIT;
    char                   big[5000];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    g.id = 2;
    g.name = "grp\n\xff";
    g.site = big;
    t.id = 3;
    t.group = 2;
    t.fn = "fn\t";
    t.object = "chan\x1b[31m";
    s.n_groups = 1;
    s.groups = &gp;
    s.n_tasks = 1;
    s.tasks = &tp;
    h.snapshot = &s;
    d = roundtrip(&m, why);
    assert_non_null(d);
    assert_string_equal(d->hello->snapshot->groups[0]->name, "grp??");
    assert_int_equal(strlen(d->hello->snapshot->groups[0]->site), 4096);
    assert_string_equal(d->hello->snapshot->tasks[0]->fn, "fn?");
    assert_string_equal(d->hello->snapshot->tasks[0]->object, "chan?[31m");
    leash__agent__agent_message__free_unpacked(d, NULL);
    t.id = 0;
    assert_null(roundtrip(&m, why)); /* a bad id is still refused */
    assert_non_null(strstr(why, "task with id 0"));
    /* a report of a kind this leashd does not know is kept, in leashd's alphabet */
    Leash__Agent__Event e = LEASH__AGENT__EVENT__INIT, *ep;
    e.kind = LEASH__AGENT__EVENT__KIND__REPORT;
    e.report_kind = "Restart-Limit\n";
    Leash__Agent__Events es;
    m = one_event(&e, &es, &ep);
    d = roundtrip(&m, why);
    assert_non_null(d);
    assert_string_equal(d->events->events[0]->report_kind, "restart_limit_");
    leash__agent__agent_message__free_unpacked(d, NULL);
}

static void garbage_is_not_a_message(void **state)
{
    (void)state;
    char          why[256];
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff};
    assert_null(agent_decode(junk, sizeof junk, NULL, why, sizeof why));
    assert_non_null(strstr(why, "not an AgentMessage"));
    assert_null(agent_decode(junk, 0, NULL, why, sizeof why)); /* empty: no oneof set */
    assert_non_null(strstr(why, "empty AgentMessage"));
    assert_null(control_decode(junk, sizeof junk, why, sizeof why));
}

static void control_requests_are_checked(void **state)
{
    (void)state;
    uint8_t                      buf[256];
    char                         why[256];
    Leash__Control__Request      r = LEASH__CONTROL__REQUEST__INIT;
    Leash__Control__TasksRequest t = LEASH__CONTROL__TASKS_REQUEST__INIT;
    r.req_case = LEASH__CONTROL__REQUEST__REQ_TASKS;
    r.tasks = &t;
    r.version = 7;
    size_t n = leash__control__request__pack(&r, buf);
    assert_null(control_decode(buf, n, why, sizeof why));
    assert_non_null(strstr(why, "version"));
    r.version = 1;
    n = leash__control__request__pack(&r, buf);
    assert_null(control_decode(buf, n, why, sizeof why));
    assert_non_null(strstr(why, "needs a pid"));
    t.pid = 42;
    n = leash__control__request__pack(&r, buf);
    Leash__Control__Request *d = control_decode(buf, n, why, sizeof why);
    assert_non_null(d);
    assert_int_equal(d->tasks->pid, 42);
    leash__control__request__free_unpacked(d, NULL);

    /* the name a kill or cancel is checked against is cleaned as process
       names are, so the name a user typed matches the one leashd holds */
    Leash__Control__KillRequest k = LEASH__CONTROL__KILL_REQUEST__INIT;
    r.req_case = LEASH__CONTROL__REQUEST__REQ_KILL;
    r.kill = &k;
    k.pid = 42;
    k.name = "web\nserver";
    n = leash__control__request__pack(&r, buf);
    d = control_decode(buf, n, why, sizeof why);
    assert_non_null(d);
    assert_string_equal(d->kill->name, "web?server");
    leash__control__request__free_unpacked(d, NULL);
    k.name = "web-server";
    n = leash__control__request__pack(&r, buf);
    d = control_decode(buf, n, why, sizeof why);
    assert_non_null(d);
    assert_string_equal(d->kill->name, "web-server");
    leash__control__request__free_unpacked(d, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(frames_are_cut_whole_or_refused),
        cmocka_unit_test(good_hello_and_events_pass),
        cmocka_unit_test(every_bad_field_is_refused_with_a_reason),
        cmocka_unit_test(times_no_library_can_send_are_refused),
        cmocka_unit_test(restarts_and_supervisor_groups_are_checked),
        cmocka_unit_test(names_are_cleaned_never_refused),
        cmocka_unit_test(garbage_is_not_a_message),
        cmocka_unit_test(control_requests_are_checked),
    };
    return cmocka_run_group_tests_name("decode", tests, NULL, NULL);
}
