/*
 * test_journal.c: the incident journal against the faults of a bad day: a
 * flipped byte, a torn tail, a file over journal_max, a full disk, and paths
 * that are not leashd's to write (a symlink, another uid's directory). The
 * real leashd writes and reads it; incidents come from a fake agent.
 */
#include "harness.h"

#include "raw.h"

#include <sys/mount.h>

/* n incidents with details "<tag>-0" .. "<tag>-(n-1)", from one agent. */
static void make_incidents(const struct daemon *d, const char *tag, int n)
{
    int a = agent_hello(d, "journaled");
    for (int k = 0; k < n; k++) {
        char detail[64];
        snprintf(detail, sizeof detail, "%s-%d.", tag, k);
        assert_int_equal(report(a, detail, 1), 0);
    }
    char last[64];
    snprintf(last, sizeof last, "%s-%d.", tag, n - 1);
    wait_for(d, last, "incidents", "-n", "3");
    close(a);
}

/* How many of "<tag>-k." for k < n leashctl incidents lists. */
static int count_listed(const struct daemon *d, const char *tag, int n)
{
    static char out[4 << 20];
    ctl_as(d, -1, out, sizeof out, "incidents", "--json", (char *)NULL);
    int got = 0;
    for (int k = 0; k < n; k++) {
        char want[64];
        snprintf(want, sizeof want, "\"%s-%d.\"", tag, k);
        got += strstr(out, want) != NULL;
    }
    return got;
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

static char *journal_path(const struct daemon *d, const char *suffix)
{
    static char p[4][256];
    static int  k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/incidents.journal%s", d->state, suffix);
    return p[k];
}

/* fake agents send no heartbeats: none is expected of them */
static const char conf[] = "report_burst = 1000000;\nheartbeat_timeout = \"1h\";\n";

static void flipped_byte_moves_the_journal_aside_and_keeps_every_valid_record(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, conf);
    make_incidents(&d, "rec", 300);
    assert_int_equal(daemon_stop(&d), 0);
    const char *path = journal_path(&d, "");
    off_t       size = file_size(path);
    int         fd = open(path, O_RDWR);
    uint8_t     b;
    assert_int_equal(pread(fd, &b, 1, size / 2), 1);
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, size / 2), 1);
    close(fd);
    daemon_start(&d);
    /* every record but the one with the flipped byte */
    assert_int_equal(count_listed(&d, "rec", 300), 299);
    assert_true(log_count(&d, "is kept as") == 1);
    /* the damaged file kept aside, byte for byte */
    assert_int_equal(file_size(journal_path(&d, "~")), size);
    fd = open(journal_path(&d, "~"), O_RDONLY);
    uint8_t c;
    assert_int_equal(pread(fd, &c, 1, size / 2), 1);
    close(fd);
    assert_int_equal(c, b);
    char out[8192];
    assert_int_equal(ctl(&d, out, "status"), 0);
    assert_non_null(strstr(out, "moved aside"));
    /* the new journal is whole: the next start finds no damage */
    make_incidents(&d, "after", 10);
    assert_int_equal(daemon_stop(&d), 0);
    daemon_start(&d);
    assert_int_equal(count_listed(&d, "rec", 300), 299);
    assert_int_equal(count_listed(&d, "after", 10), 10);
    assert_true(log_count(&d, "is kept as") == 1);
    daemon_cleanup(&d);
}

static void torn_tail_is_cut_and_nothing_else(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, conf);
    make_incidents(&d, "rec", 300);
    assert_int_equal(daemon_stop(&d), 0);
    const char *path = journal_path(&d, "");
    off_t       size = file_size(path);
    /* the first 20 bytes of a record: as if leashd died mid-write */
    uint8_t head[20];
    int     fd = open(path, O_RDWR);
    assert_int_equal(pread(fd, head, sizeof head, 0), (ssize_t)sizeof head);
    assert_int_equal(pwrite(fd, head, sizeof head, size), (ssize_t)sizeof head);
    close(fd);
    daemon_start(&d);
    assert_int_equal(count_listed(&d, "rec", 300), 300);
    assert_int_equal(file_size(path), size); /* cut back to the last whole record */
    assert_true(log_count(&d, "torn last record") == 1);
    make_incidents(&d, "after", 10);
    assert_int_equal(daemon_stop(&d), 0);
    daemon_start(&d);
    assert_int_equal(count_listed(&d, "rec", 300), 300);
    assert_int_equal(count_listed(&d, "after", 10), 10);
    daemon_cleanup(&d);
}

static void journal_over_the_cap_is_rotated_and_loses_nothing(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, conf);
    make_incidents(&d, "rec", 2000);
    assert_int_equal(daemon_stop(&d), 0);
    off_t size = file_size(journal_path(&d, ""));
    assert_true(size > 65536);
    /* a cap under its size: rotated at start, every record still read */
    FILE *f = fopen(d.conf, "w");
    fprintf(f, "%sjournal_max = 65536;\n", conf);
    fclose(f);
    daemon_start(&d);
    assert_int_equal(count_listed(&d, "rec", 2000), 2000);
    assert_int_equal(file_size(journal_path(&d, ".1")), size);
    /* new records go to a fresh journal that stays under the cap */
    make_incidents(&d, "after", 300);
    assert_true(file_size(journal_path(&d, "")) <= 65536);
    assert_int_equal(daemon_stop(&d), 0);
    daemon_start(&d);
    assert_int_equal(count_listed(&d, "after", 300), 300);
    daemon_cleanup(&d);
}

static void a_cut_listing_says_so(void **state)
{
    (void)state;
    struct daemon d;
    daemon_new(&d, conf);
    int a = agent_hello(&d, "many");
    for (int k = 0; k < 11; k++)
        assert_int_equal(report(a, "one-of-many", 1000), 0);
    assert_int_equal(report(a, "the-last", 1), 0);
    wait_for(&d, "the-last", "incidents", "-n", "3");
    static char out[8 << 20];
    assert_int_equal(ctl(&d, out, "incidents", "--json"), 0);
    assert_non_null(strstr(out, "the listing is cut: leashd keeps the newest 10000"));
    /* a listing of what memory still holds whole is not cut */
    assert_int_equal(ctl(&d, out, "incidents", "--since", "0s"), 0);
    assert_null(strstr(out, "listing is cut"));
    close(a);
    daemon_cleanup(&d);
}

/* Writes zeros into path until the file system is full. */
static void fill(const char *path)
{
    int     fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    uint8_t zero[65536] = {0};
    assert_true(fd >= 0);
    while (write(fd, zero, sizeof zero) > 0)
        ;
    for (size_t n = 4096; n; n /= 2) /* the last few bytes too */
        while (write(fd, zero, n) > 0)
            ;
    close(fd);
}

static void full_disk_keeps_incidents_in_memory_and_writes_them_later(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        fprintf(stderr, "skipped: mounting a tmpfs needs root\n");
        skip();
    }
    struct daemon d;
    memset(&d, 0, sizeof d);
    snprintf(d.dir, sizeof d.dir, "/tmp/leash-e2e-XXXXXX");
    assert_non_null(mkdtemp(d.dir));
    chmod(d.dir, 0755);
    daemon_paths(&d);
    mkdir(d.state, 0750);
    if (mount("tmpfs", d.state, "tmpfs", 0, "size=2m,mode=0750") != 0) {
        fprintf(stderr, "skipped: cannot mount a tmpfs here: %s\n", strerror(errno));
        rmdir(d.state);
        rmdir(d.dir);
        skip();
    }
    FILE *f = fopen(d.conf, "w");
    fputs(conf, f);
    fclose(f);
    daemon_start(&d);
    make_incidents(&d, "before", 100);
    char filler[256];
    snprintf(filler, sizeof filler, "%s/filler", d.state);
    fill(filler);
    make_incidents(&d, "full", 100); /* all listed: kept in memory */
    char out[8192];
    assert_int_equal(ctl(&d, out, "status"), 0);
    assert_non_null(strstr(out, "not writable"));
    assert_int_equal(log_count(&d, "(said once)"), 1);
    /* space returns: what waited is written */
    unlink(filler);
    wait_for(&d, "journal    ok", "status", NULL);
    assert_int_equal(daemon_stop(&d), 0);
    daemon_start(&d);
    assert_int_equal(count_listed(&d, "before", 100), 100);
    assert_int_equal(count_listed(&d, "full", 100), 100);
    assert_int_equal(log_count(&d, "is kept as"), 0); /* nothing damaged */
    daemon_stop(&d);
    assert_int_equal(umount(d.state), 0);
    daemon_cleanup(&d);
}

/* Starts leashd expecting it to refuse; returns its log. */
static const char *refused(struct daemon *d)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 2);
        execl(LEASHD_BIN, "leashd", "--config", d->conf, "--agent-socket", d->agent,
              "--control-socket", d->control, "--state-dir", d->state, (char *)NULL);
        _exit(127);
    }
    track(pid);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    assert_false(connectable(d->control));
    static char text[8192];
    FILE       *f = fopen(d->log, "r");
    size_t      n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    return text;
}

static void new_daemon_dir(struct daemon *d)
{
    memset(d, 0, sizeof *d);
    snprintf(d->dir, sizeof d->dir, "/tmp/leash-e2e-XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    chmod(d->dir, 0755);
    daemon_paths(d);
    FILE *f = fopen(d->conf, "w");
    fclose(f);
}

static void symlink_at_the_journal_path_is_refused(void **state)
{
    (void)state;
    struct daemon d;
    new_daemon_dir(&d);
    mkdir(d.state, 0750);
    char target[256];
    snprintf(target, sizeof target, "%s/target", d.dir);
    FILE *f = fopen(target, "w");
    fputs("not a journal\n", f);
    fclose(f);
    assert_int_equal(symlink(target, journal_path(&d, "")), 0);
    const char *log = refused(&d);
    assert_non_null(strstr(log, "is a symbolic link"));
    assert_int_equal(file_size(target), 14); /* untouched */
    daemon_cleanup(&d);
}

static void state_dir_others_can_write_is_refused(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip(); /* gives the directory to another uid */
    struct daemon d;
    new_daemon_dir(&d);
    mkdir(d.state, 0750);
    assert_int_equal(chown(d.state, 65534, 65534), 0);
    assert_non_null(strstr(refused(&d), "is owned by uid 65534, not by leashd's uid 0"));
    assert_int_equal(chown(d.state, 0, 0), 0);
    assert_int_equal(chmod(d.state, 0777), 0);
    assert_non_null(strstr(refused(&d), "is writable by every user"));
    assert_int_equal(chmod(d.state, 0770), 0);
    assert_non_null(strstr(refused(&d), "is writable by its group"));
    /* the directory leashd makes gets its mode whatever the umask */
    rmdir(d.state);
    mode_t old = umask(0);
    daemon_start(&d);
    umask(old);
    struct stat st;
    assert_int_equal(stat(d.state, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0750);
    daemon_cleanup(&d);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(flipped_byte_moves_the_journal_aside_and_keeps_every_valid_record,
                                  teardown),
        cmocka_unit_test_teardown(torn_tail_is_cut_and_nothing_else, teardown),
        cmocka_unit_test_teardown(journal_over_the_cap_is_rotated_and_loses_nothing, teardown),
        cmocka_unit_test_teardown(full_disk_keeps_incidents_in_memory_and_writes_them_later,
                                  teardown),
        cmocka_unit_test_teardown(symlink_at_the_journal_path_is_refused, teardown),
        cmocka_unit_test_teardown(a_cut_listing_says_so, teardown),
        cmocka_unit_test_teardown(state_dir_others_can_write_is_refused, teardown),
    };
    return cmocka_run_group_tests_name("journal", tests, NULL, NULL);
}
