/* test_config.c: leashd's configuration table, defaults and errors. */
#include "stubs.h"

static void defaults_hold_without_a_file(void **state)
{
    (void)state;
    char          err[256];
    struct config c;
    assert_int_equal(config_load(&c, NULL, err, sizeof err), 0);
    assert_int_equal(c.heartbeat_timeout_ms, 5000);
    assert_int_equal(c.stuck_after_ms, 120000);
    assert_int_equal(c.max_frame, 1048576);
    assert_null(c.metrics_listen);
    assert_int_equal(c.npolicies, 1);
    assert_string_equal(c.policies[0].match, "*");
    assert_int_equal(c.policies[0].grace_ms, 500);
    assert_int_equal(c.policies[0].kill_grace_ms, 3000);
    assert_int_equal(c.policies[0].nsteps, 4);
    assert_int_equal(c.policies[0].steps[2].action, ACT_INTERRUPT);
    assert_int_equal(c.policies[0].steps[2].at_ms, 2000);
    assert_int_equal(c.policies[0].steps[3].action, ACT_KILL);
    assert_int_equal(c.policies[0].steps[3].at_ms, 10000);
    assert_true(config_is_admin(&c, 0));
    assert_false(config_is_admin(&c, 1000));
    config_free(&c);
}

static void every_key_is_read(void **state)
{
    (void)state;
    load_conf("agent_socket = \"/a/agent.sock\";\n"
              "control_socket = \"/a/control.sock\";\n"
              "state_dir = \"/a/state\";\n"
              "max_frame = 65536;\n"
              "admin_uids = [ 0, 1000 ];\n"
              "heartbeat_timeout = \"2s\";\n"
              "stuck_after = \"1m\";\n"
              "metrics_listen = \"127.0.0.1:9464\";\n"
              "policies = (\n"
              "  { match = \"web-*\"; grace = \"250ms\"; kill_grace = \"1s\";\n"
              "    escalate = [ \"report\", \"kill@1h\" ]; },\n"
              "  { match = \"*\"; escalate = [ \"cancel\" ]; }\n"
              ");\n");
    assert_string_equal(cfg.agent_socket, "/a/agent.sock");
    assert_string_equal(cfg.control_socket, "/a/control.sock");
    assert_string_equal(cfg.state_dir, "/a/state");
    assert_int_equal(cfg.max_frame, 65536);
    assert_true(config_is_admin(&cfg, 1000));
    assert_int_equal(cfg.heartbeat_timeout_ms, 2000);
    assert_int_equal(cfg.stuck_after_ms, 60000);
    assert_string_equal(cfg.metrics_listen, "127.0.0.1:9464");
    assert_int_equal(cfg.npolicies, 2);
    const struct policy *p = config_policy(&cfg, "web-7");
    assert_string_equal(p->match, "web-*");
    assert_int_equal(p->grace_ms, 250);
    assert_int_equal(p->steps[1].at_ms, 3600000);
    p = config_policy(&cfg, "batch");
    assert_string_equal(p->match, "*"); /* the first match wins, in order */
    assert_int_equal(p->nsteps, 1);
    assert_int_equal(p->steps[0].action, ACT_CANCEL);
}

static void every_limit_key_lands_in_its_field_within_its_bounds(void **state)
{
    (void)state;
    load_conf("journal_max = 70000;\n"
              "peers_per_uid = 7;\n"
              "followers_per_uid = 0;\n"
              "uid_buffer_max = 17179869184L;\n" /* 1 << 34, an int64 in the file */
              "peer_out_max = 5000;\n"
              "peer_timeout = \"250ms\";\n"
              "report_burst = 3;\n"
              "report_interval = \"2m\";\n"
              "names_max = 70001;\n"
              "objects_per_process = 16;\n");
    assert_int_equal(cfg.journal_max, 70000);
    assert_int_equal(cfg.peers_per_uid, 7);
    assert_int_equal(cfg.followers_per_uid, 0);
    assert_int_equal(cfg.uid_buffer_max, 1ULL << 34);
    assert_int_equal(cfg.peer_out_max, 5000);
    assert_int_equal(cfg.peer_timeout_ms, 250);
    assert_int_equal(cfg.report_burst, 3);
    assert_int_equal(cfg.report_interval_ms, 120000);
    assert_int_equal(cfg.names_max, 70001);
    assert_int_equal(cfg.objects_per_process, 16);
    /* the keys it did not name keep their defaults */
    assert_int_equal(cfg.heartbeat_timeout_ms, 5000);
    assert_int_equal(cfg.max_frame, 1048576);

    /* one past each bound is refused, naming the key */
    static const char *const refused[] = {
        "journal_max = 65535;",
        "peers_per_uid = 0;",
        "peers_per_uid = 1000001;",
        "followers_per_uid = -1;",
        "uid_buffer_max = 4095;",
        "uid_buffer_max = 17179869185L;",
        "peer_out_max = 4095;",
        "peer_timeout = \"99ms\";",
        "report_burst = 0;",
        "report_interval = \"0ms\";",
        "names_max = 65535;",
        "objects_per_process = 15;",
        "objects_per_process = 4294967297L;",
        "max_frame = 1023;",
        "stuck_after = \"9ms\";",
        "report_burst = \"3\";",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char          err[512], key[64];
        struct config c;
        assert_int_equal(config_load_string(&c, refused[i], "t.conf", err, sizeof err), -1);
        snprintf(key, sizeof key, "key '%.*s'", (int)strcspn(refused[i], " "), refused[i]);
        if (!strstr(err, key))
            fail_msg("%s: \"%s\" does not name %s", refused[i], err, key);
    }
}

static void durations_need_a_unit(void **state)
{
    (void)state;
    assert_int_equal(config_duration("500ms"), 500);
    assert_int_equal(config_duration("3s"), 3000);
    assert_int_equal(config_duration("2m"), 120000);
    assert_int_equal(config_duration("1h"), 3600000);
    assert_int_equal(config_duration("0s"), 0);
    assert_int_equal(config_duration("5"), -1);
    assert_int_equal(config_duration("5x"), -1);
    assert_int_equal(config_duration("-5s"), -1);
    assert_int_equal(config_duration("s"), -1);
    assert_int_equal(config_duration(""), -1);
    assert_int_equal(config_duration("1.5s"), -1);
    assert_int_equal(config_duration("99999999999999s"), -1);
}

static void bad_input_names_file_line_and_key(void **state)
{
    (void)state;
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"\nnope = 1;\n", "test.conf:2: key 'nope': unknown key"},
        {"heartbeat_timeout = 5;\n", "key 'heartbeat_timeout': must be a duration"},
        {"heartbeat_timeout = \"50ms\";\n", "must be at least 100ms"},
        {"stuck_after = \"soon\";\n", "key 'stuck_after': bad duration \"soon\""},
        {"max_frame = \"big\";\n", "key 'max_frame': must be a whole number"},
        {"max_frame = 999999999;\n", "out of range"},
        {"admin_uids = 0;\n", "key 'admin_uids': must be an array"},
        {"admin_uids = [ -1 ];\n", "element 0 is not a uid"},
        {"state_dir = \"\";\n", "must not be empty"},
        {"control_socket = 7;\n", "must be a string"},
        {"metrics_listen = \"localhost\";\n", "is not HOST:PORT"},
        {"metrics_listen = \"127.0.0.1:99999\";\n", "is not HOST:PORT"},
        {"policies = { match = \"*\"; };\n", "must be a list"},
        {"policies = ( { grace = \"1s\"; } );\n", "every policy needs a match"},
        {"policies = ( { match = \"*\"; color = \"red\"; } );\n", "key 'color': unknown key"},
        {"policies = ( { match = \"*\"; escalate = [ \"kill@soon\" ]; } );\n",
         "bad duration in \"kill@soon\""},
        {"policies = ( { match = \"*\"; escalate = [ \"kill@2s\", \"report@1s\" ]; } );\n",
         "steps must come in time order"},
        {"policies = ( { match = \"*\"; escalate = \"kill\"; } );\n", "must be an array"},
        {"stuck_after = \"1s\";\nx = = 2;\n", "test.conf:2: syntax error"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char          err[512];
        struct config c;
        if (config_load_string(&c, cases[i].text, "test.conf", err, sizeof err) == 0) {
            config_free(&c);
            fail_msg("case %zu accepted: %s", i, cases[i].text);
        }
        if (!strstr(err, cases[i].want))
            fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].want);
    }
}

/* libconfig 1.5 cuts a number without an L to 32 bits: 2^32 + 65534 would
   be uid 65534 (nobody) as an admin. Every such number is refused, with its
   line, before libconfig reads it. */
static void numbers_libconfig_would_cut_are_refused(void **state)
{
    (void)state;
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"admin_uids = [ 4295032830 ];\n", "t.conf:1: 4295032830 does not fit 32 bits"},
        {"\nobjects_per_process = 4294967312;\n", "t.conf:2: 4294967312 does not fit"},
        {"journal_max = 9999999999999999;\n", "write it 9999999999999999L"},
        {"max_frame = 999999999999;\n", "999999999999 does not fit"},
        {"max_frame = 0x100000400;\n", "0x100000400 does not fit"},
        {"followers_per_uid = -2147483649;\n", "-2147483649 does not fit"},
        {"/* a comment\n */ max_frame =\n 4294968320;\n", "t.conf:3: 4294968320"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char          err[512];
        struct config c;
        if (config_load_string(&c, cases[i].text, "t.conf", err, sizeof err) == 0) {
            config_free(&c);
            fail_msg("case %zu accepted: %s", i, cases[i].text);
        }
        if (!strstr(err, cases[i].want))
            fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].want);
    }

    /* what is not a whole number is libconfig's to read, to the text's end */
    static const struct {
        const char *text, *want;
    } floats[] = {
        {"max_frame = 2.5", "key 'max_frame': must be a whole number"},
        {"max_frame = .12345678901;", "key 'max_frame': must be a whole number"},
        {"max_frame = 1e10;", "key 'max_frame': must be a whole number"},
    };
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        char          err[512];
        struct config c;
        /* a heap copy, so that a scan past its end is seen (ASan) */
        char *text = strdup(floats[i].text);
        assert_int_equal(config_load_string(&c, text, "t.conf", err, sizeof err), -1);
        free(text);
        if (!strstr(err, floats[i].want))
            fail_msg("float %zu: '%s' lacks '%s'", i, err, floats[i].want);
    }

    /* a file libconfig would include is one this scan cannot follow */
    {
        char          err[512];
        struct config c;
        assert_int_equal(config_load_string(&c, "# settings\n@include \"/etc/more.conf\"\n",
                                            "t.conf", err, sizeof err),
                         -1);
        assert_non_null(strstr(err, "t.conf:2: @include is not taken"));
    }

    /* with the L, or where libconfig does not read a number, they stand */
    load_conf("admin_uids = [ 0L, 2147483647L, 4294967294L ];\n" /* an array is of one type */
              "journal_max = 1099511627776L; # 99999999999 in a comment\n"
              "// 99999999999 too\n"
              "state_dir = \"/var/lib/leash-99999999999\";\n"
              "policies = ( { match = \"svc-4294967296\"; escalate = [ \"kill@2s\" ]; } );\n");
    assert_int_equal(cfg.nadmin, 3);
    assert_int_equal(cfg.admin_uids[1], 2147483647);
    assert_int_equal(cfg.admin_uids[2], 4294967294u);
    assert_int_equal(cfg.journal_max, 1ULL << 40);
    assert_string_equal(cfg.state_dir, "/var/lib/leash-99999999999");

    char          err[512];
    struct config c;
    assert_int_equal(
        config_load_string(&c, "admin_uids = [ 4294967295L ];", "t.conf", err, sizeof err), -1);
    assert_non_null(strstr(err, "element 0 is not a uid"));
}

static void missing_file_is_named(void **state)
{
    (void)state;
    char          err[512];
    struct config c;
    assert_int_equal(config_load(&c, "/nonexistent/leashd.conf", err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/leashd.conf: No such file"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_hold_without_a_file),
        cmocka_unit_test(every_key_is_read),
        cmocka_unit_test(every_limit_key_lands_in_its_field_within_its_bounds),
        cmocka_unit_test(durations_need_a_unit),
        cmocka_unit_test(bad_input_names_file_line_and_key),
        cmocka_unit_test(numbers_libconfig_would_cut_are_refused),
        cmocka_unit_test(missing_file_is_named),
    };
    int rc = cmocka_run_group_tests_name("config", tests, NULL, NULL);
    config_free(&cfg);
    return rc;
}
