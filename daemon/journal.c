/*
 * journal.c: the incident journal, state_dir/incidents.journal. Each record
 * is a frame (4-byte big-endian length, then an Incident) whose last field
 * is a CRC-32 of the bytes before it. It survives any byte pattern:
 *
 * - read back whole, of any size (mmap), record by record; a record that
 *   does not parse or check is damage: the file is renamed aside to
 *   incidents.journal~ (as journald does) and every valid record, before
 *   and after the damage, is written to a fresh journal. A torn last record
 *   (leashd died mid-write) is cut off: it was never a whole record;
 * - appended with one write per record; a short write is cut back to the
 *   record boundary at once, so the file never holds half a record;
 * - on a full disk (or any write error) new records wait in memory, are said
 *   once, and are written when space returns;
 * - capped: past journal_max the file becomes incidents.journal.1 (the older
 *   .1 goes: the oldest records dropped first, said once) and a new one
 *   starts; a journal found over the cap at start is rotated the same way.
 * The files are opened with O_NOFOLLOW, must be regular files of leashd's
 * uid, and get their mode whatever the umask.
 */
#include "leashd.h"

#include "frame.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define RECORD_MAX  (64u << 20) /* max_frame at most: a task tree fits */
#define PENDING_MAX 10000       /* records kept in memory while the disk is full */
#define CRC_TRAILER 5           /* field 15, fixed32: tag 0x7d and 4 bytes */
#define RETRY_MS    1000

struct pending {
    uint8_t        *buf;
    size_t          len;
    struct pending *next;
};

static struct {
    int                  fd;
    char                 path[600], old[610], aside[610];
    uint64_t             bytes;
    struct pending      *head, **tail;
    uint64_t             npending, pending_dropped;
    bool                 failing;     /* writes fail: said once until one succeeds */
    bool                 rotated;     /* the oldest records dropped: said once */
    int64_t              retry_mono;  /* no write attempt before this */
    char                 damage[700]; /* what was found at start, "" if nothing */
    struct journal_stats st;
} j = {.fd = -1};

/* ---------------------------------------------------------------- CRC */

static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    static uint32_t table[256];
    if (!table[1]) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    }
    uint32_t c = 0xffffffffu;
    while (n--)
        c = table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

uint8_t *journal_pack(const Leash__Control__Incident *i, size_t *len)
{
    Leash__Control__Incident c = *i;
    c.crc = 0;
    size_t   n = leash__control__incident__get_packed_size(&c);
    uint8_t *buf = malloc(LEASH_FRAME_HEADER + n + CRC_TRAILER);
    if (!buf)
        return NULL;
    leash__control__incident__pack(&c, buf + LEASH_FRAME_HEADER);
    uint32_t crc = crc32_of(buf + LEASH_FRAME_HEADER, n);
    uint8_t *t = buf + LEASH_FRAME_HEADER + n;
    t[0] = 15 << 3 | 5; /* field 15, fixed32, little-endian */
    for (int k = 0; k < 4; k++)
        t[1 + k] = (uint8_t)(crc >> (8 * k));
    leash_frame_put_len(buf, (uint32_t)(n + CRC_TRAILER));
    *len = LEASH_FRAME_HEADER + n + CRC_TRAILER;
    return buf;
}

/* ------------------------------------------------------------ reading */

static bool known_kind(const char *k)
{
    for (int i = 0; incident_kinds[i]; i++)
        if (strcmp(incident_kinds[i], k) == 0)
            return true;
    return false;
}

/* The record at buf: its size (> 0) with *out the incident; 0 when buf
   ends inside it (a torn tail, if nothing valid follows); -1 when it is
   not a valid record. strict (looking for the next record after damage)
   also wants a known kind, so that bytes inside a record are not taken
   for one; otherwise a kind from a newer leashd is kept. */
static long record_at(const uint8_t *buf, size_t len, bool strict, Leash__Control__Incident **out)
{
    if (len < LEASH_FRAME_HEADER)
        return 0;
    uint32_t n = leash_frame_get_len(buf);
    if (n < 2 || n > RECORD_MAX)
        return -1;
    if (len - LEASH_FRAME_HEADER < n)
        return 0;
    const uint8_t *m = buf + LEASH_FRAME_HEADER;
    if (m[0] != (1 << 3 | 0)) /* every record starts with its id */
        return -1;
    Leash__Control__Incident *i = leash__control__incident__unpack(NULL, n, m);
    if (!i)
        return -1;
    bool ok = i->id != 0 && (!strict || known_kind(i->kind));
    /* protobuf-c keeps a field numbered 0 as an unknown field, though no
       encoder writes one, and writes it back in a form it then refuses:
       such bytes are damage, not a record from a newer leashd */
    for (unsigned k = 0; ok && k < i->base.n_unknown_fields; k++)
        ok = i->base.unknown_fields[k].tag != 0;
    if (ok && i->crc != 0) { /* records from before the CRC have none */
        const uint8_t *t = m + n - CRC_TRAILER;
        uint32_t       stored =
            (uint32_t)t[1] | (uint32_t)t[2] << 8 | (uint32_t)t[3] << 16 | (uint32_t)t[4] << 24;
        ok = n > CRC_TRAILER && t[0] == (15 << 3 | 5) && stored == i->crc &&
             crc32_of(m, n - CRC_TRAILER) == i->crc;
    }
    if (!ok) {
        leash__control__incident__free_unpacked(i, NULL);
        return -1;
    }
    *out = i;
    return (long)(LEASH_FRAME_HEADER + n);
}

size_t journal_scan(const uint8_t *buf, size_t len, journal_record_cb cb, void *arg,
                    struct journal_scan *s)
{
    memset(s, 0, sizeof *s);
    s->torn_at = len;
    size_t off = 0;
    while (off < len) {
        Leash__Control__Incident *i;
        long                      r = record_at(buf + off, len - off, false, &i);
        if (r > 0) {
            s->records++;
            if (cb)
                cb(arg, i, buf + off, (size_t)r);
            else
                leash__control__incident__free_unpacked(i, NULL);
            off += (size_t)r;
            continue;
        }
        /* damage (or a torn tail): the next offset where a valid record
           starts, if any */
        size_t q = off + 1;
        for (; q < len; q++) {
            if (record_at(buf + q, len - q, true, &i) > 0) {
                leash__control__incident__free_unpacked(i, NULL);
                break;
            }
        }
        if (q >= len) {
            if (r == 0) { /* a record begun and never finished: a torn tail */
                s->torn_at = off;
                break;
            }
            if (!s->damaged) { /* bytes that are no record, to the end */
                s->damaged = true;
                s->damaged_at = off;
            }
            s->skipped += len - off;
            break;
        }
        if (!s->damaged) {
            s->damaged = true;
            s->damaged_at = off;
        }
        s->skipped += q - off;
        off = q;
    }
    return s->records;
}

/* ------------------------------------------------------------- writing */

static void say_failing(const char *what, int e)
{
    j.st.write_errors++;
    if (j.failing)
        return;
    j.failing = true;
    log_warn("journal %s: %s: %s; new incidents are kept in memory (up to %d) and written "
             "when it takes them again (said once)",
             j.path, what, e ? strerror(e) : "disk full", PENDING_MAX);
}

/* Opens (creating) the journal for appending, safely. */
static int open_append(char *err, size_t errlen)
{
    int fd = open(j.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP)
            snprintf(err, errlen, "%s is a symbolic link: leashd does not follow one there",
                     j.path);
        else
            snprintf(err, errlen, "%s: %s", j.path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        snprintf(err, errlen, "%s: not a regular file owned by uid %u: refused", j.path,
                 (unsigned)geteuid());
        close(fd);
        return -EPERM;
    }
    if (fchmod(fd, 0640) != 0) {
        snprintf(err, errlen, "%s: chmod: %s", j.path, strerror(errno));
        close(fd);
        return -errno;
    }
    j.fd = fd;
    j.bytes = (uint64_t)st.st_size;
    return 0;
}

/* The journal becomes .1 (the older .1 goes) and a new one starts. */
static int rotate(void)
{
    struct stat st;
    bool        dropping = lstat(j.old, &st) == 0;
    if (j.fd >= 0) {
        fsync(j.fd);
        close(j.fd);
        j.fd = -1;
    }
    if (rename(j.path, j.old) != 0) {
        log_warn("journal %s: cannot rotate to %s: %s", j.path, j.old, strerror(errno));
    } else {
        j.st.rotations++;
        if (dropping && !j.rotated) {
            j.rotated = true;
            log_warn("journal %s: over journal_max (%llu bytes): its oldest records dropped "
                     "(said once)",
                     j.path, (unsigned long long)cfg.journal_max);
        }
    }
    char err[512];
    int  e = open_append(err, sizeof err);
    if (e)
        log_warn("journal: %s", err);
    return e;
}

/* Writes one record whole, or not at all. */
static int write_record(const uint8_t *buf, size_t n)
{
    if (j.fd < 0)
        return -EBADF;
    if (j.bytes + n > cfg.journal_max && j.bytes > 0 && rotate() != 0)
        return -EIO;
    ssize_t w = write(j.fd, buf, n);
    if (w == (ssize_t)n) {
        j.bytes += n;
        return 0;
    }
    int e = w < 0 ? errno : ENOSPC; /* a short write sets no errno */
    if (w > 0 && ftruncate(j.fd, (off_t)j.bytes) != 0) {
        /* cannot cut it back: the next start finds a torn record and
           keeps every valid one around it */
        log_warn("journal %s: short write (%zd of %zu bytes), and cannot cut it back: %s", j.path,
                 w, n, strerror(errno));
    }
    return -e;
}

void journal_flush(void)
{
    if (!j.head || mono_ms() < j.retry_mono)
        return;
    while (j.head) {
        struct pending *p = j.head;
        int             e = write_record(p->buf, p->len);
        if (e) {
            say_failing("write failed", -e);
            j.retry_mono = mono_ms() + RETRY_MS;
            return;
        }
        j.head = p->next;
        if (!j.head)
            j.tail = &j.head;
        free(p->buf);
        free(p);
        j.npending--;
    }
    if (j.failing) {
        j.failing = false;
        log_info("journal %s: writing again; every incident kept in memory is written%s", j.path,
                 j.pending_dropped ? " but for those dropped past the memory cap" : "");
    }
}

void journal_append(const Leash__Control__Incident *i)
{
    size_t   n;
    uint8_t *buf = journal_pack(i, &n);
    if (!buf)
        return;
    if (!j.head && !j.failing) {
        int e = write_record(buf, n);
        if (e == 0) {
            free(buf);
            return;
        }
        say_failing("write failed", -e);
        j.retry_mono = mono_ms() + RETRY_MS;
    }
    /* in order, after those already waiting */
    struct pending *p = malloc(sizeof *p);
    if (!p) {
        free(buf);
        return;
    }
    *p = (struct pending){buf, n, NULL};
    if (!j.tail)
        j.tail = &j.head;
    *j.tail = p;
    j.tail = &p->next;
    if (++j.npending > PENDING_MAX) { /* the oldest waiting goes */
        struct pending *o = j.head;
        j.head = o->next;
        free(o->buf);
        free(o);
        j.npending--;
        j.pending_dropped++;
    }
    journal_flush();
}

/* ------------------------------------------------------------- opening */

struct load_ctx {
    void (*keep)(Leash__Control__Incident *);
    int fd; /* rewriting: the fresh journal; -1 otherwise */
    int err;
};

static void load_cb(void *arg, Leash__Control__Incident *i, const uint8_t *raw, size_t len)
{
    struct load_ctx *c = arg;
    if (c->fd >= 0) {
        if (c->err == 0 && write(c->fd, raw, len) != (ssize_t)len)
            c->err = errno ? errno : ENOSPC;
        leash__control__incident__free_unpacked(i, NULL);
        return;
    }
    c->keep(i);
}

/* Maps path (a regular file of ours, never through a link) and scans it. */
static int load_file(const char *path, struct load_ctx *c, struct journal_scan *s, char *err,
                     size_t errlen, uint64_t *size)
{
    *size = 0;
    memset(s, 0, sizeof *s);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        if (errno == ELOOP)
            snprintf(err, errlen, "%s is a symbolic link: leashd does not follow one there", path);
        else
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        snprintf(err, errlen, "%s: not a regular file owned by uid %u: refused", path,
                 (unsigned)geteuid());
        close(fd);
        return -1;
    }
    *size = (uint64_t)st.st_size;
    if (st.st_size == 0) {
        memset(s, 0, sizeof *s);
        close(fd);
        return 0;
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "%s: mmap: %s", path, strerror(errno));
        return -1;
    }
    journal_scan(m, (size_t)st.st_size, load_cb, c, s);
    munmap(m, (size_t)st.st_size);
    return 0;
}

/* The journal at path is damaged mid-file: it goes aside, and a fresh one
   gets every valid record. */
static int set_aside(const char *path, char *err, size_t errlen)
{
    char tmp[620];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    unlink(tmp);
    if (rename(path, j.aside) != 0) {
        snprintf(err, errlen, "%s: cannot move aside to %s: %s", path, j.aside, strerror(errno));
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    struct load_ctx     c = {.fd = fd};
    struct journal_scan s;
    uint64_t            size;
    int                 rc = load_file(j.aside, &c, &s, err, errlen, &size);
    if (rc == 0 && (c.err || fsync(fd) != 0)) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(c.err ? c.err : errno));
        rc = -1;
    }
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = -1;
    }
    return rc;
}

static int load(const char *path, void (*keep)(Leash__Control__Incident *), char *err,
                size_t errlen)
{
    struct load_ctx     c = {.keep = keep, .fd = -1};
    struct journal_scan s;
    uint64_t            size;
    if (load_file(path, &c, &s, err, errlen, &size))
        return -1;
    if (s.damaged) {
        j.st.damaged++;
        snprintf(j.damage, sizeof j.damage,
                 "damaged at byte %zu (%zu bytes skipped): moved aside to %s", s.damaged_at,
                 s.skipped, j.aside);
        log_warn("journal %s: %zu bytes that are no record at byte %zu of %llu; the file is kept "
                 "as %s and its %zu valid records make a new journal",
                 path, s.skipped, s.damaged_at, (unsigned long long)size, j.aside, s.records);
        if (set_aside(path, err, errlen))
            return -1;
    } else if (s.torn_at < size) {
        log_warn("journal %s: a torn last record at byte %zu of %llu (leashd stopped "
                 "mid-write): cut off",
                 path, s.torn_at, (unsigned long long)size);
        if (truncate(path, (off_t)s.torn_at) != 0) {
            snprintf(err, errlen, "%s: cannot cut the torn record: %s", path, strerror(errno));
            return -1;
        }
    }
    if (size)
        log_info("journal %s: %zu incidents read back", path, s.records);
    return 0;
}

int journal_open(const char *state_dir, void (*keep)(Leash__Control__Incident *), char *err,
                 size_t errlen)
{
    if (dir_check(state_dir, 0750, err, errlen))
        return -1;
    snprintf(j.path, sizeof j.path, "%s/incidents.journal", state_dir);
    snprintf(j.old, sizeof j.old, "%s.1", j.path);
    snprintf(j.aside, sizeof j.aside, "%s~", j.path);
    j.tail = &j.head;
    /* the rotated one first: the newest incidents are the ones kept */
    struct stat st;
    if (lstat(j.old, &st) == 0) {
        struct load_ctx     c = {.keep = keep, .fd = -1};
        struct journal_scan s;
        uint64_t            size;
        if (load_file(j.old, &c, &s, err, errlen, &size))
            return -1;
        if (s.damaged || s.torn_at < size)
            log_warn("journal %s: damaged at byte %zu: its valid records were read, the file is "
                     "left as it is",
                     j.old, s.damaged ? s.damaged_at : s.torn_at);
    }
    if (load(j.path, keep, err, errlen))
        return -1;
    if (open_append(err, errlen))
        return -1;
    if (j.bytes > cfg.journal_max) {
        log_info("journal %s: %llu bytes, over journal_max (%llu): rotated to %s", j.path,
                 (unsigned long long)j.bytes, (unsigned long long)cfg.journal_max, j.old);
        rotate();
    }
    return 0;
}

void journal_close(void)
{
    journal_flush();
    if (j.head)
        log_warn("journal %s: %llu incidents could not be written before stopping", j.path,
                 (unsigned long long)j.npending);
    while (j.head) {
        struct pending *p = j.head;
        j.head = p->next;
        free(p->buf);
        free(p);
    }
    j.tail = &j.head;
    j.npending = 0;
    if (j.fd >= 0) {
        fsync(j.fd);
        close(j.fd);
    }
    j.fd = -1;
}

const struct journal_stats *journal_stats(void)
{
    j.st.bytes = j.bytes;
    j.st.pending = j.npending;
    j.st.pending_dropped = j.pending_dropped;
    if (j.fd < 0)
        snprintf(j.st.state, sizeof j.st.state, "not open");
    else if (j.failing)
        snprintf(j.st.state, sizeof j.st.state,
                 "not writable (disk full?): %llu incidents wait "
                 "in memory",
                 (unsigned long long)j.npending);
    else if (j.damage[0])
        snprintf(j.st.state, sizeof j.st.state, "ok; at start: %s", j.damage);
    else
        snprintf(j.st.state, sizeof j.st.state, "ok");
    return &j.st;
}
