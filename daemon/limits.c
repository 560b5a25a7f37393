/*
 * limits.c: what one uid may make leashd hold. Every quantity a peer
 * controls has a bound here or in the config (peers_per_uid,
 * followers_per_uid, uid_buffer_max, peer_out_max, peer_timeout,
 * report_burst); hitting one is counted for metrics and said once per uid
 * (again only after every peer of that uid has gone), so an attacker cannot
 * turn a bound into a log flood.
 */
#include "leashd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

const char *const limit_names[LIMIT_COUNT] = {
    [LIMIT_PEERS] = "peers_per_uid",   [LIMIT_FOLLOWERS] = "followers_per_uid",
    [LIMIT_BUFFER] = "uid_buffer_max", [LIMIT_OUT] = "peer_out_max",
    [LIMIT_TIMEOUT] = "peer_timeout",  [LIMIT_REPORTS] = "report_burst",
    [LIMIT_FDS] = "file_descriptors",  [LIMIT_IDENTITY] = "peer_identity",
    [LIMIT_NAMES] = "names_max",       [LIMIT_OBJECTS] = "objects_per_process",
    [LIMIT_FOLDED] = "folded_rate",
};
uint64_t limit_hits[LIMIT_COUNT];

struct uid_use {
    uid_t    uid;
    int      peers, followers;
    size_t   parked; /* bytes of unfinished frames across its peers */
    unsigned logged; /* a bit per limit already said for this uid */
};

static struct map uses; /* uid + 1 -> struct uid_use */

static struct uid_use *use_of(uid_t uid, bool create)
{
    struct uid_use *u = map_get(&uses, (uint64_t)uid + 1);
    if (u || !create)
        return u;
    u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->uid = uid;
    if (map_put(&uses, (uint64_t)uid + 1, u) != 0) {
        free(u);
        return NULL;
    }
    return u;
}

static void use_maybe_free(struct uid_use *u)
{
    if (u->peers || u->followers || u->parked)
        return;
    map_del(&uses, (uint64_t)u->uid + 1);
    free(u);
}

void limit_hit(enum limit l, uid_t uid, const char *fmt, ...)
{
    limit_hits[l]++;
    struct uid_use *u = use_of(uid, false);
    if (u) {
        if (u->logged & (1u << l))
            return;
        u->logged |= 1u << l;
    }
    char    msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_warn("uid %u: %s (limit %s; said once for this uid while it stays connected)",
             (unsigned)uid, msg, limit_names[l]);
}

int limit_peer_add(uid_t uid)
{
    struct uid_use *u = use_of(uid, true);
    if (!u)
        return -ENOMEM;
    if (u->peers >= cfg.peers_per_uid) {
        limit_hit(LIMIT_PEERS, uid, "%d connections open: new ones refused", u->peers);
        return -EUSERS;
    }
    u->peers++;
    return 0;
}

int limit_peer_accept(int fd, struct ucred *cred)
{
    socklen_t len = sizeof *cred;
    int       e = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) ? -errno : 0;
    if (!e)
        e = limit_peer_add(cred->uid);
    if (e)
        close(fd);
    return e == -EUSERS ? 1 : e; /* refused: said by limit_peer_add */
}

void limit_peer_del(uid_t uid)
{
    struct uid_use *u = use_of(uid, false);
    if (!u)
        return;
    u->peers--;
    use_maybe_free(u);
}

int limit_follower_add(uid_t uid)
{
    struct uid_use *u = use_of(uid, true);
    if (!u)
        return -ENOMEM;
    if (u->followers >= cfg.followers_per_uid) {
        limit_hit(LIMIT_FOLLOWERS, uid, "%d incident followers: another refused", u->followers);
        return -EUSERS;
    }
    u->followers++;
    return 0;
}

void limit_follower_del(uid_t uid)
{
    struct uid_use *u = use_of(uid, false);
    if (!u)
        return;
    u->followers--;
    use_maybe_free(u);
}

int limit_parked(uid_t uid, size_t *held, size_t now)
{
    struct uid_use *u = use_of(uid, true);
    if (!u)
        return -ENOMEM;
    u->parked = u->parked - *held + now;
    *held = now;
    int over = u->parked > cfg.uid_buffer_max ? -ENOBUFS : 0;
    use_maybe_free(u);
    return over;
}

size_t limit_parked_total(void)
{
    size_t n = 0;
    MAP_EACH(&uses, i)
    n += ((struct uid_use *)uses.vals[i])->parked;
    return n;
}

void limits_free(void)
{
    MAP_EACH(&uses, i) free(uses.vals[i]);
    map_free(&uses);
}
