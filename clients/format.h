/* format.h: leashctl's output formats. */
#ifndef LEASHCTL_FORMAT_H
#define LEASHCTL_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "leash/control.pb-c.h"

enum fmt { FMT_TEXT, FMT_JSON, FMT_FOLDED, FMT_PPROF };

int  format_parse(const char *s, enum fmt *out); /* -1: unknown */
void print_status(const Leash__Control__Status *s, bool json);

/* Terminal columns s takes (wcwidth; needs a UTF-8 LC_CTYPE). */
int text_width(const char *s);
/* s padded to width columns (cut there, at a character, if wider). */
void put_cell(FILE *f, const char *s, int width, bool left);

/* The processes a command line names: the one with that pid, or every one
   of that name. */
struct proc_sel {
    int32_t     pid;  /* > 0: this pid, and name is NULL */
    const char *name; /* when pid is 0 */
};

/* Whether p is one that `only` names (NULL: any). */
bool ps_match(const Leash__Control__Process *p, const struct proc_sel *only);
/* The processes (those `only` names) as a table with headers or not, or as
   JSON. */
void print_ps(FILE *f, const Leash__Control__Ps *ps, bool json, bool headers,
              const struct proc_sel *only);

/* Sorts t's snapshot, then prints it. -1 when it could not be written.
   several: the output holds more than one process's tree (--all, or a
   NAME several processes have): folded stacks then name the process
   NAME-PID in their root frame. */
int print_tree(Leash__Control__TaskTree *t, enum fmt f, bool several);
/* The last `last` incidents of l (SIZE_MAX: all). */
void print_incidents(FILE *f, const Leash__Control__Incidents *l, bool json, bool follow,
                     bool headers, size_t last);
void print_incident_followed(const Leash__Control__Incident *i, bool json);
/* One incident with its task tree (text, json or folded). */
int print_incident(const Leash__Control__Incident *i, enum fmt f);

#endif
