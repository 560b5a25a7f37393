/* sockets.c: listening Unix sockets made carefully: path length checked, a
   stale socket removed (a live one refused), umask set around bind, mode fixed;
   or handed over by systemd (socket activation). */
#include "leashd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

int mkdir_p(const char *dir, mode_t mode)
{
    char p[512];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
        return -ENAMETOOLONG;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, mode) != 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    if (mkdir(p, mode) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int socket_path_check(const char *path, char *err, size_t errlen)
{
    size_t most = sizeof((struct sockaddr_un *)0)->sun_path - 1;
    if (strlen(path) <= most)
        return 0;
    snprintf(err, errlen, "%s: path too long for a socket (%zu bytes at most)", path, most);
    return -1;
}

int socket_listen(const char *path, mode_t mode, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (socket_path_check(path, err, errlen))
        return -1;
    strcpy(sa.sun_path, path);
    char dir[sizeof sa.sun_path];
    strcpy(dir, path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (dir_check(dir, 0755, err, errlen))
            return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    /* a socket file left behind by a leashd that died is stale if nobody
       answers on it; one that answers belongs to a running leashd */
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s: exists and is not a socket", path);
            close(fd);
            return -1;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0) {
            close(probe);
            close(fd);
            snprintf(err, errlen, "%s: another leashd is listening there", path);
            return -1;
        }
        if (probe >= 0)
            close(probe);
        unlink(path);
    }
    mode_t old = umask(0777 & ~mode);
    int    rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc != 0 || chmod(path, mode) != 0 || listen(fd, 128) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* The sockets systemd passed (LISTEN_FDS), read once: the call clears the
   variables, so a process leashd starts never takes them for its own. */
static int    inherited_n = -1;
static char **inherited_names;
static bool  *inherited_taken;

int socket_inherited(const char *name, const char *path)
{
    if (inherited_n < 0) {
        inherited_n = sd_listen_fds_with_names(1, &inherited_names);
        if (inherited_n < 0) {
            log_warn("socket activation: %s", strerror(-inherited_n));
            inherited_n = 0;
        }
        inherited_taken = inherited_n ? calloc((size_t)inherited_n, sizeof *inherited_taken) : NULL;
        if (inherited_n && !inherited_taken)
            inherited_n = 0;
    }
    /* by FileDescriptorName= first, else by the path it is bound to */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < inherited_n; i++) {
            int fd = SD_LISTEN_FDS_START + i;
            if (inherited_taken[i])
                continue;
            bool match = pass == 0 ? inherited_names && inherited_names[i] &&
                                         strcmp(inherited_names[i], name) == 0
                                   : sd_is_socket_unix(fd, SOCK_STREAM, 1, path, 0) > 0;
            if (!match)
                continue;
            if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
                log_warn("socket activation: the %s socket (fd %d) is not a listening Unix "
                         "stream socket",
                         name, fd);
                return -1;
            }
            int fl = fcntl(fd, F_GETFL);
            if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 ||
                fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
                return -1;
            inherited_taken[i] = true;
            return fd;
        }
    }
    return -1;
}

void socket_inherited_done(void)
{
    for (int i = 0; i < inherited_n; i++) {
        if (!inherited_taken[i]) {
            log_warn("socket activation: fd %d (%s) is none of leashd's sockets; closed",
                     SD_LISTEN_FDS_START + i,
                     inherited_names && inherited_names[i] ? inherited_names[i] : "unnamed");
            close(SD_LISTEN_FDS_START + i);
        }
    }
    if (inherited_names)
        for (int i = 0; i < inherited_n; i++)
            free(inherited_names[i]);
    free(inherited_names);
    free(inherited_taken);
    inherited_names = NULL;
    inherited_taken = NULL;
}

int dir_check(const char *dir, mode_t mode, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(dir, &st) != 0) {
        int e = mkdir_p(dir, mode);
        if (e) {
            snprintf(err, errlen, "%s: %s", dir, strerror(-e));
            return -1;
        }
        if (chmod(dir, mode) != 0 || lstat(dir, &st) != 0) {
            snprintf(err, errlen, "%s: %s", dir, strerror(errno));
            return -1;
        }
    }
    if (S_ISLNK(st.st_mode)) { /* an admin's link is fine; another uid's is not */
        if (st.st_uid != 0 && st.st_uid != geteuid()) {
            snprintf(err, errlen, "%s is a symbolic link owned by uid %u: refused", dir,
                     (unsigned)st.st_uid);
            return -1;
        }
        if (stat(dir, &st) != 0) {
            snprintf(err, errlen, "%s: %s", dir, strerror(errno));
            return -1;
        }
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: not a directory", dir);
        return -1;
    }
    bool sticky_root = st.st_uid == 0 && (st.st_mode & S_ISVTX);
    if (st.st_uid != geteuid() && !sticky_root) {
        snprintf(err, errlen,
                 "%s is owned by uid %u, not by leashd's uid %u: refused (another user could "
                 "replace what leashd keeps there)",
                 dir, (unsigned)st.st_uid, (unsigned)geteuid());
        return -1;
    }
    if ((st.st_mode & 022) && !sticky_root) {
        snprintf(err, errlen,
                 "%s is writable by %s (mode %04o): refused (they could replace what leashd "
                 "keeps there); chmod go-w it",
                 dir, st.st_mode & 002 ? "every user" : "its group", st.st_mode & 07777);
        return -1;
    }
    return 0;
}
