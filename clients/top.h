/* top.h: leashctl top, a live view. */
#ifndef LEASHCTL_TOP_H
#define LEASHCTL_TOP_H

/* Shows leashd's status, its processes (most stuck first) and the latest
   incidents, redrawn every second until q (or SIGINT, SIGTERM). Returns
   the exit status: 0, or 1 when leashd does not answer at the start. */
int top_run(const char *socket);

#endif
