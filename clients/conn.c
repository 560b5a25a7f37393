/* conn.c: leashctl's side of the control protocol: connect, send one
   framed Request, read framed Responses until leashd closes. */
#define _GNU_SOURCE
#include "conn.h"

#include "frame.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

const char *conn_default_socket(char *buf, size_t len)
{
    const char *e = getenv("LEASH_CONTROL");
    if (e && *e)
        return e;
    if (geteuid() == 0)
        return "/run/leash/control.sock";
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg && *xdg == '/')
        snprintf(buf, len, "%s/leash/control.sock", xdg);
    else
        snprintf(buf, len, "/tmp/leash-%u/control.sock", (unsigned)geteuid());
    struct stat st;
    /* a user with no leashd of its own talks to the system one */
    if (stat(buf, &st) != 0 && stat("/run/leash/control.sock", &st) == 0)
        return "/run/leash/control.sock";
    return buf;
}

/* How long leashctl waits for leashd to take its request or to answer (a
   dump waits up to 3 s in leashd); --follow waits for ever after the first
   answer. */
#define CONN_TIMEOUT_S 10

static void set_timeout(int fd, int opt, int secs)
{
    struct timeval tv = {secs, 0};
    setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv);
}

static bool timed_out(void)
{
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINPROGRESS)
        return false;
    fprintf(stderr, "leashctl: leashd did not answer within %d s\n", CONN_TIMEOUT_S);
    return true;
}

static int connect_to(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "leashctl: socket path too long: %s\n", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        set_timeout(fd, SO_SNDTIMEO, CONN_TIMEOUT_S); /* connect and send */
        set_timeout(fd, SO_RCVTIMEO, CONN_TIMEOUT_S);
    }
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0 && timed_out()) {
            close(fd);
            return -1;
        }
        fprintf(stderr, "leashctl: no leashd at %s (%s)\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* leashd closes a connection it will not serve (peers_per_uid reached),
   and its agent socket closes one that does not start with a Hello. */
static void closed_unanswered(const char *path)
{
    fprintf(stderr,
            "leashctl: leashd at %s closed the connection without answering (too many "
            "connections from this user, or not leashd's control socket?)\n",
            path);
}

/* Whether errno says the peer had closed its end. */
static bool peer_closed(void)
{
    return errno == EPIPE || errno == ECONNRESET;
}

static int send_req(int fd, const char *path, Leash__Control__Request *r)
{
    r->version = LEASH__CONTROL__VERSION__VERSION_CURRENT;
    size_t   n;
    uint8_t *buf = leash_frame_pack(&r->base, &n);
    if (!buf)
        return -1;
    size_t off = 0;
    while (off < n) {
        ssize_t w = send(fd, buf + off, n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            if (peer_closed())
                closed_unanswered(path);
            else if (!timed_out())
                fprintf(stderr, "leashctl: send: %s\n", strerror(errno));
            free(buf);
            return -1;
        }
        off += (size_t)w;
    }
    free(buf);
    return 0;
}

static int read_full(int fd, uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* The next response; NULL with *closed set when leashd closed the
   connection between responses, NULL alone when something else went wrong
   (said). */
static Leash__Control__Response *recv_resp(int fd, bool *closed)
{
    uint8_t hdr[LEASH_FRAME_HEADER];
    *closed = false;
    errno = 0;
    if (read_full(fd, hdr, sizeof hdr)) {
        /* a close before leashd read the request is a reset, not an EOF */
        if (errno == 0 || peer_closed())
            *closed = true;
        else if (!timed_out())
            fprintf(stderr, "leashctl: read: %s\n", strerror(errno));
        return NULL;
    }
    uint32_t n = leash_frame_get_len(hdr);
    if (n > 256u * 1024 * 1024) {
        fprintf(stderr, "leashctl: response of %u bytes is too large\n", n);
        return NULL;
    }
    uint8_t *buf = malloc(n ? n : 1);
    errno = 0;
    if (!buf || read_full(fd, buf, n)) {
        free(buf);
        if (!timed_out())
            fprintf(stderr, "leashctl: leashd closed the connection mid-response\n");
        return NULL;
    }
    Leash__Control__Response *r = leash__control__response__unpack(NULL, n, buf);
    free(buf);
    if (!r)
        fprintf(stderr, "leashctl: cannot decode leashd's response\n");
    return r;
}

int conn_call(const char *path, Leash__Control__Request *req, conn_cb cb, void *arg,
              int quiet_errno)
{
    int fd = connect_to(path);
    if (fd < 0)
        return 1;
    if (send_req(fd, path, req)) {
        close(fd);
        return 1;
    }
    int                       rc = 0;
    bool                      any = false, closed;
    Leash__Control__Response *r;
    bool follow = req->req_case == LEASH__CONTROL__REQUEST__REQ_INCIDENTS && req->incidents->follow;
    while ((r = recv_resp(fd, &closed)) != NULL) {
        if (!any && follow)
            set_timeout(fd, SO_RCVTIMEO, 0); /* new incidents come when they come */
        any = true;
        switch (r->resp_case) {
        case LEASH__CONTROL__RESPONSE__RESP_ERROR:
            if (quiet_errno && r->error->code == quiet_errno) {
                rc = -quiet_errno;
                break;
            }
            fprintf(stderr, "leashctl: %s\n", r->error->message);
            rc = 1;
            break;
        case LEASH__CONTROL__RESPONSE__RESP_DONE: printf("%s\n", r->done->message); break;
        case LEASH__CONTROL__RESPONSE__RESP_STATUS:
        case LEASH__CONTROL__RESPONSE__RESP_PS:
        case LEASH__CONTROL__RESPONSE__RESP_TASKS:
        case LEASH__CONTROL__RESPONSE__RESP_INCIDENTS:
        case LEASH__CONTROL__RESPONSE__RESP_INCIDENT:
            if (cb && cb(arg, r))
                rc = 1;
            break;
        default: fprintf(stderr, "leashctl: unexpected response from leashd\n"); rc = 1;
        }
        leash__control__response__free_unpacked(r, NULL);
        if (fflush(stdout) != 0 || ferror(stdout)) {
            rc = 1; /* main says why; a follower stops rather than print into nothing */
            closed = false;
            break;
        }
    }
    close(fd);
    if (!closed) /* said why */
        return 1;
    if (!any) {
        closed_unanswered(path);
        return 1;
    }
    if (follow) {
        /* leashd never ends a follow by itself: it stopped, or dropped a
           follower that did not read (peer_out_max) */
        fprintf(stderr, "leashctl: leashd ended the follow (it stopped, or dropped this follower "
                        "for reading too slowly)\n");
        return 1;
    }
    return rc;
}
