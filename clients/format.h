/* format.h: leashctl's output formats. */
#ifndef LEASHCTL_FORMAT_H
#define LEASHCTL_FORMAT_H

#include <stdbool.h>

#include "leash/control.pb-c.h"

enum fmt { FMT_TEXT, FMT_JSON, FMT_FOLDED, FMT_PPROF };

int  format_parse(const char *s, enum fmt *out); /* -1: unknown */
void print_status(const Leash__Control__Status *s, bool json);
void print_ps(const Leash__Control__Ps *ps, bool json);
/* Sorts t's snapshot, then prints it. -1 when it could not be written. */
int  print_tree(Leash__Control__TaskTree *t, enum fmt f);
void print_incidents(const Leash__Control__Incidents *l, bool json, bool follow);
void print_incident_followed(const Leash__Control__Incident *i, bool json);

#endif
