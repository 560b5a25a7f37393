/* test_rwlock.c: read-write locks that know their holders, writers preferred. */
#include "helpers.h"

#include <stdatomic.h>

struct rw {
    leash_rwlock l;
    leash_chan  *step, *done;
    _Atomic int  inside;
    int          rc[4];
};

static int reader_waits_on_step(void *arg)
{
    struct rw *r = arg;
    int        err = leash_rwlock_rdlock(&r->l), v;
    if (err)
        return err;
    atomic_fetch_add(&r->inside, 1);
    leash_chan_recv(r->step, &v);
    atomic_fetch_sub(&r->inside, 1);
    return leash_rwlock_unlock(&r->l);
}

static void readers_share_the_lock(void **state)
{
    (void)state;
    struct rw r = {0};
    leash_rwlock_init(&r.l, "shared");
    assert_int_equal(leash_chan_open(&r.step, "step", sizeof(int), 0), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, reader_waits_on_step, &r), 0);
    assert_int_equal(leash_go(g, reader_waits_on_step, &r), 0);
    wait_blocked("chan_recv", 2); /* both hold the read lock at once */
    assert_int_equal(atomic_load(&r.inside), 2);
    assert_int_equal(leash_chan_close(r.step), 0);
    assert_int_equal(leash_group_wait(g), 0);
    leash_chan_free(r.step);
    leash_rwlock_destroy(&r.l);
    assert_nothing_leaked();
}

static int rdlock_once(void *arg)
{
    struct rw *r = arg;
    int        err = leash_rwlock_rdlock(&r->l);
    if (err)
        return err;
    return leash_rwlock_unlock(&r->l);
}

static int wrlock_once(void *arg)
{
    struct rw *r = arg;
    int        err = leash_rwlock_wrlock(&r->l);
    if (err)
        return err;
    return leash_rwlock_unlock(&r->l);
}

static void waiting_writer_holds_back_new_readers(void **state)
{
    (void)state;
    struct rw r = {0};
    leash_rwlock_init(&r.l, "pref");
    assert_int_equal(leash_rwlock_rdlock(&r.l), 0);
    leash_group *w, *rd;
    assert_int_equal(leash_group_open(&w, NULL), 0);
    assert_int_equal(leash_go(w, wrlock_once, &r), 0);
    wait_blocked("rwlock_wr", 1);
    assert_int_equal(leash_group_open(&rd, NULL), 0);
    assert_int_equal(leash_go(rd, rdlock_once, &r), 0);
    wait_blocked("rwlock_rd", 1); /* a reader waits although only readers hold it */
    assert_int_equal(leash_rwlock_unlock(&r.l), 0);
    assert_int_equal(leash_group_wait(w), 0);
    assert_int_equal(leash_group_wait(rd), 0);
    leash_rwlock_destroy(&r.l);
    assert_nothing_leaked();
}

struct excl {
    leash_rwlock l;
    long         n;
};

static int write_many(void *arg)
{
    struct excl *e = arg;
    for (int i = 0; i < 5000; i++) {
        int err = leash_rwlock_wrlock(&e->l);
        if (err)
            return err;
        e->n++;
        leash_rwlock_unlock(&e->l);
        if ((err = leash_rwlock_rdlock(&e->l)) != 0)
            return err;
        volatile long seen = e->n;
        (void)seen;
        leash_rwlock_unlock(&e->l);
    }
    return 0;
}

static void writers_exclude_everyone(void **state)
{
    (void)state;
    struct excl e = {0};
    leash_rwlock_init(&e.l, "excl");
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(leash_go(g, write_many, &e), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_int_equal(e.n, 4 * 5000);
    leash_rwlock_destroy(&e.l);
    assert_nothing_leaked();
}

static void read_to_write_upgrade_is_edeadlk(void **state)
{
    (void)state;
    leash_rwlock l;
    leash_rwlock_init(&l, "upgrade");
    uint64_t r0 = reports();
    assert_int_equal(leash_rwlock_rdlock(&l), 0);
    assert_int_equal(leash_rwlock_wrlock(&l), -EDEADLK);
    assert_int_equal(leash_rwlock_rdlock(&l), -EDEADLK); /* recursive read */
    assert_int_equal(reports(), r0 + 2);
    assert_int_equal(leash_rwlock_unlock(&l), 0);
    assert_int_equal(leash_rwlock_wrlock(&l), 0);
    assert_int_equal(leash_rwlock_wrlock(&l), -EDEADLK);
    assert_int_equal(leash_rwlock_rdlock(&l), -EDEADLK);
    assert_int_equal(leash_rwlock_unlock(&l), 0);
    assert_int_equal(leash_rwlock_unlock(&l), -EPERM);
    leash_rwlock_destroy(&l);
    assert_nothing_leaked();
}

static int wrlock_and_exit(void *arg)
{
    return leash_rwlock_wrlock((leash_rwlock *)arg);
}

static int rdlock_and_exit(void *arg)
{
    return leash_rwlock_rdlock((leash_rwlock *)arg);
}

static void abandoned_writer_poisons_every_later_lock(void **state)
{
    (void)state;
    leash_rwlock l;
    leash_rwlock_init(&l, "w-gone");
    uint64_t     r0 = reports();
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, wrlock_and_exit, &l), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_int_equal(reports(), r0 + 1);
    assert_int_equal(leash_rwlock_rdlock(&l), -EOWNERDEAD);
    assert_int_equal(leash_rwlock_wrlock(&l), -EOWNERDEAD);
    leash_rwlock_destroy(&l);
    assert_nothing_leaked();
}

static void abandoned_reader_poisons_later_writers_only(void **state)
{
    (void)state;
    leash_rwlock l;
    leash_rwlock_init(&l, "r-gone");
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, rdlock_and_exit, &l), 0);
    assert_int_equal(leash_group_wait(g), 0);
    assert_int_equal(leash_rwlock_wrlock(&l), -EOWNERDEAD);
    assert_int_equal(leash_rwlock_rdlock(&l), 0);
    assert_int_equal(leash_rwlock_unlock(&l), 0);
    leash_rwlock_destroy(&l);
    assert_nothing_leaked();
}

struct wait_writer {
    leash_rwlock l;
    leash_chan  *go;
};

static int read_until_told(void *arg)
{
    struct wait_writer *w = arg;
    int                 v, err = leash_rwlock_rdlock(&w->l);
    if (err)
        return err;
    return leash_chan_recv(w->go, &v); /* then exits holding the read lock */
}

static int wrlock_waiter(void *arg)
{
    return leash_rwlock_wrlock(&((struct wait_writer *)arg)->l);
}

static void waiting_writer_is_told_when_a_reader_exits_holding(void **state)
{
    (void)state;
    struct wait_writer w;
    leash_rwlock_init(&w.l, "r-gone-w-waits");
    assert_int_equal(leash_chan_open(&w.go, "go", sizeof(int), 0), 0);
    leash_group *r, *wr;
    assert_int_equal(leash_group_open(&r, NULL), 0);
    assert_int_equal(leash_go(r, read_until_told, &w), 0);
    wait_blocked("chan_recv", 1);
    assert_int_equal(leash_group_open(&wr, NULL), 0);
    assert_int_equal(leash_go(wr, wrlock_waiter, &w), 0);
    wait_blocked("rwlock_wr", 1);
    int v = 1;
    assert_int_equal(leash_chan_send(w.go, &v), 0);
    assert_int_equal(leash_group_wait(r), 0);
    assert_int_equal(leash_group_wait(wr), -EOWNERDEAD);
    /* with no writer waiting any more, readers go on */
    assert_int_equal(leash_rwlock_rdlock(&w.l), 0);
    assert_int_equal(leash_rwlock_unlock(&w.l), 0);
    leash_chan_free(w.go);
    leash_rwlock_destroy(&w.l);
    assert_nothing_leaked();
}

static bool rwlock_deadline_round(int64_t ms, void *arg)
{
    (void)arg;
    struct rw r = {0};
    leash_rwlock_init(&r.l, "busy");
    assert_int_equal(leash_rwlock_wrlock(&r.l), 0);
    leash_group *g;
    int64_t      t0 = mono_ms();
    assert_int_equal(
        leash_group_open(&g, &(leash_group_opts){.timeout_ms = ms, .flags = LEASH_COLLECT}), 0);
    bool spawned = leash_go(g, rdlock_once, &r) == 0;
    spawned &= leash_go(g, wrlock_once, &r) == 0;
    /* in time: a reader and a writer waited when the deadline came */
    bool in_time = spawned && blocked_before("rwlock_rd", 1, t0 + ms) &&
                   blocked_before("rwlock_wr", 1, t0 + ms);
    int rc = leash_group_wait(g);
    if (in_time)
        assert_int_equal(rc, -ETIMEDOUT);
    assert_int_equal(leash_rwlock_unlock(&r.l), 0);
    /* the writer that gave up no longer holds readers back */
    assert_int_equal(leash_rwlock_rdlock(&r.l), 0);
    assert_int_equal(leash_rwlock_unlock(&r.l), 0);
    leash_rwlock_destroy(&r.l);
    assert_nothing_leaked();
    return in_time;
}

static void waiting_for_a_rwlock_ends_at_the_deadline(void **state)
{
    (void)state;
    deadline_test(rwlock_deadline_round, NULL);
}

static int unlock_not_mine(void *arg)
{
    return leash_rwlock_unlock((leash_rwlock *)arg);
}

static void misuse_is_refused(void **state)
{
    (void)state;
    leash_rwlock l, zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    assert_int_equal(leash_rwlock_init(NULL, "x"), -EINVAL);
    assert_int_equal(leash_rwlock_rdlock(NULL), -EINVAL);
    assert_int_equal(leash_rwlock_wrlock(&zeroed), -EINVAL);
    assert_int_equal(leash_rwlock_unlock(NULL), -EINVAL);
    leash_rwlock_init(&l, "mine");
    assert_int_equal(leash_rwlock_unlock(&l), -EPERM);
    assert_int_equal(leash_rwlock_rdlock(&l), 0);
    leash_group *g;
    assert_int_equal(leash_group_open(&g, NULL), 0);
    assert_int_equal(leash_go(g, unlock_not_mine, &l), 0);
    assert_int_equal(leash_group_wait(g), -EPERM);
    assert_int_equal(leash_rwlock_unlock(&l), 0);
    leash_rwlock_destroy(&l);
    leash_rwlock_destroy(NULL);
    assert_nothing_leaked();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(readers_share_the_lock),
        cmocka_unit_test(waiting_writer_holds_back_new_readers),
        cmocka_unit_test(writers_exclude_everyone),
        cmocka_unit_test(read_to_write_upgrade_is_edeadlk),
        cmocka_unit_test(abandoned_writer_poisons_every_later_lock),
        cmocka_unit_test(abandoned_reader_poisons_later_writers_only),
        cmocka_unit_test(waiting_writer_is_told_when_a_reader_exits_holding),
        cmocka_unit_test(waiting_for_a_rwlock_ends_at_the_deadline),
        cmocka_unit_test(misuse_is_refused),
    };
    return cmocka_run_group_tests_name("rwlock", tests, quiet_setup, NULL);
}
