/* conn.h: one request to leashd's control socket and its responses. */
#ifndef LEASHCTL_CONN_H
#define LEASHCTL_CONN_H

#include <stddef.h>

#include "leash/control.pb-c.h"

/* The control socket leashctl uses when none is named: $LEASH_CONTROL, else
   where leashd puts it for this uid, else the system one. buf holds the
   path when it is built. */
const char *conn_default_socket(char *buf, size_t len);

/* Called for each response that is neither an error nor a done message;
   returns 0, or 1 to make the command fail (it said why). */
typedef int (*conn_cb)(void *arg, const Leash__Control__Response *r);

/* Sends req to the leashd at path and hands each response to cb until
   leashd closes. Errors and done messages are printed here (errors on
   stderr). quiet_errno: an error with this code is not printed (0: none).
   Returns 0 done, 1 failed (no leashd, an error response, cb said so), or
   the negated errno of an error response whose code is quiet_errno. */
int conn_call(const char *path, Leash__Control__Request *req, conn_cb cb, void *arg,
              int quiet_errno);

#endif
