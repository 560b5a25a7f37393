/*
 * config.c: leashd's configuration, as a table: each key with its parser
 * (which validates and applies). Every key is optional; an unknown key, a
 * bad value or a bad duration is an error naming the file, the line and the key.
 */
#include "leashd.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stddef.h>
#include <stdint.h>
#include <libconfig.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *action_name(enum action a)
{
    static const char *const n[] = {"report", "cancel", "interrupt", "kill"};
    return n[a];
}

int64_t config_duration(const char *s)
{
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char              *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || v > 1000000000ULL)
        return -1;
    int64_t mul;
    if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "m") == 0)
        mul = 60 * 1000;
    else if (strcmp(end, "h") == 0)
        mul = 3600 * 1000;
    else
        return -1;
    return (int64_t)v * mul;
}

struct ctx {
    const char *file;
    char       *err;
    size_t      errlen;
};

static int bad(struct ctx *x, const config_setting_t *s, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bad(struct ctx *x, const config_setting_t *s, const char *key, const char *fmt, ...)
{
    char    what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(x->err, x->errlen, "%s:%d: key '%s': %s", x->file,
             s ? config_setting_source_line(s) : 0, key, what);
    return -1;
}

static int get_str(struct ctx *x, const config_setting_t *s, const char *key, char **out)
{
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return bad(x, s, key, "must be a string");
    const char *v = config_setting_get_string(s);
    if (!*v)
        return bad(x, s, key, "must not be empty");
    free(*out);
    *out = strdup(v);
    return *out ? 0 : bad(x, s, key, "out of memory");
}

static int get_dur(struct ctx *x, const config_setting_t *s, const char *key, int64_t *out)
{
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return bad(x, s, key, "must be a duration string such as \"500ms\", \"3s\", \"2m\"");
    const char *v = config_setting_get_string(s);
    int64_t     d = config_duration(v);
    if (d < 0)
        return bad(x, s, key, "bad duration \"%s\" (a whole number then ms, s, m or h)", v);
    *out = d;
    return 0;
}

static int k_path(struct ctx *x, const config_setting_t *s, const char *key, char **out)
{
    if (get_str(x, s, key, out))
        return -1;
    if ((*out)[0] != '/')
        return bad(x, s, key, "must be an absolute path");
    return 0;
}

static int k_agent_socket(struct ctx *x, const config_setting_t *s, struct config *c)
{
    return k_path(x, s, "agent_socket", &c->agent_socket);
}

static int k_control_socket(struct ctx *x, const config_setting_t *s, struct config *c)
{
    return k_path(x, s, "control_socket", &c->control_socket);
}

static int k_state_dir(struct ctx *x, const config_setting_t *s, struct config *c)
{
    return k_path(x, s, "state_dir", &c->state_dir);
}

static int k_admin_uids(struct ctx *x, const config_setting_t *s, struct config *c)
{
    if (!config_setting_is_aggregate(s) || config_setting_type(s) == CONFIG_TYPE_GROUP)
        return bad(x, s, "admin_uids", "must be an array of uids, such as [ 0, 1000 ]");
    int    n = config_setting_length(s);
    uid_t *u = calloc((size_t)n + 1, sizeof *u);
    if (!u)
        return bad(x, s, "admin_uids", "out of memory");
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        int                     t = config_setting_type(e);
        /* a uid above 2^31 - 1 needs the L of an int64; (uid_t)-1 is none */
        long long v = t == CONFIG_TYPE_INT     ? config_setting_get_int(e)
                      : t == CONFIG_TYPE_INT64 ? config_setting_get_int64(e)
                                               : -1;
        if (v < 0 || v >= (long long)UINT32_MAX) {
            free(u);
            return bad(x, e, "admin_uids", "element %d is not a uid", i);
        }
        u[i] = (uid_t)v;
    }
    free(c->admin_uids);
    c->admin_uids = u;
    c->nadmin = n;
    return 0;
}

/* A whole number in [lo, hi] (an int or an int64 in the file). */
static int get_count(struct ctx *x, const config_setting_t *s, const char *key, long long lo,
                     long long hi, long long *out)
{
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
        return bad(x, s, key, "must be a whole number");
    long long v = t == CONFIG_TYPE_INT ? config_setting_get_int(s) : config_setting_get_int64(s);
    if (v < lo || v > hi)
        return bad(x, s, key, "%lld is out of range (%lld to %lld)", v, lo, hi);
    *out = v;
    return 0;
}

/* The numeric keys: each a field of struct config, a whole number in
   [lo, hi] or a duration of at least lo milliseconds. */
enum numkind { COUNT, DURATION };
struct numkey {
    const char  *name;
    enum numkind kind;
    size_t       off, size; /* the field's */
    long long    lo, hi;
};
#define FIELD(f) offsetof(struct config, f), sizeof(((struct config *)0)->f)
static const struct numkey numkeys[] = {
    {"max_frame", COUNT, FIELD(max_frame), 1024, 64LL * 1024 * 1024},
    {"heartbeat_timeout", DURATION, FIELD(heartbeat_timeout_ms), 100, 0},
    {"stuck_after", DURATION, FIELD(stuck_after_ms), 10, 0},
    {"journal_max", COUNT, FIELD(journal_max), 64 * 1024, 1LL << 40},
    {"peers_per_uid", COUNT, FIELD(peers_per_uid), 1, 1000000},
    {"followers_per_uid", COUNT, FIELD(followers_per_uid), 0, 1000000},
    {"uid_buffer_max", COUNT, FIELD(uid_buffer_max), 4096, 1LL << 34},
    {"peer_out_max", COUNT, FIELD(peer_out_max), 4096, 1LL << 34},
    {"peer_timeout", DURATION, FIELD(peer_timeout_ms), 100, 0},
    {"report_burst", COUNT, FIELD(report_burst), 1, 100000000},
    {"report_interval", DURATION, FIELD(report_interval_ms), 1, 0},
    {"names_max", COUNT, FIELD(names_max), 65536, 1LL << 40},
    {"objects_per_process", COUNT, FIELD(objects_per_process), 16, 1LL << 32},
};
#undef FIELD

static int parse_number(struct ctx *x, const config_setting_t *s, const struct numkey *k,
                        struct config *c)
{
    long long v = 0;
    if (k->kind == DURATION) {
        int64_t ms = 0; /* set by get_dur when it returns 0 (-O3 cannot see it) */
        if (get_dur(x, s, k->name, &ms))
            return -1;
        if (ms < k->lo)
            return bad(x, s, k->name, "must be at least %lldms", k->lo);
        v = ms;
    } else if (get_count(x, s, k->name, k->lo, k->hi, &v)) {
        return -1;
    }
    /* every value is at least 0 and fits its field (the bounds above) */
    char *field = (char *)c + k->off;
    if (k->size == sizeof(uint32_t)) {
        uint32_t u = (uint32_t)v;
        memcpy(field, &u, sizeof u);
    } else {
        uint64_t u = (uint64_t)v;
        memcpy(field, &u, sizeof u);
    }
    return 0;
}

static int k_metrics_listen(struct ctx *x, const config_setting_t *s, struct config *c)
{
    if (get_str(x, s, "metrics_listen", &c->metrics_listen))
        return -1;
    const char *colon = strrchr(c->metrics_listen, ':');
    char       *end;
    long        port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || colon == c->metrics_listen || !colon[1] || *end || port < 1 || port > 65535)
        return bad(x, s, "metrics_listen", "\"%s\" is not HOST:PORT", c->metrics_listen);
    return 0;
}

static int parse_step(struct ctx *x, const config_setting_t *e, const char *key, struct step *st)
{
    if (config_setting_type(e) != CONFIG_TYPE_STRING)
        return bad(x, e, key, "steps are strings such as \"kill@10s\"");
    const char *v = config_setting_get_string(e);
    char        name[32];
    const char *at = strchr(v, '@');
    size_t      n = at ? (size_t)(at - v) : strlen(v);
    if (n >= sizeof name)
        return bad(x, e, key, "unknown action in \"%s\"", v);
    memcpy(name, v, n);
    name[n] = '\0';
    int a = -1;
    for (int i = ACT_REPORT; i <= ACT_KILL; i++)
        if (strcmp(name, action_name(i)) == 0)
            a = i;
    if (a < 0)
        return bad(x, e, key, "unknown action \"%s\" (report, cancel, interrupt or kill)", name);
    st->action = a;
    st->at_ms = 0;
    if (at && (st->at_ms = config_duration(at + 1)) < 0)
        return bad(x, e, key, "bad duration in \"%s\"", v);
    return 0;
}

/* An escalation: up to 8 steps, in time order. */
static int parse_steps(struct ctx *x, const config_setting_t *e, const char *key,
                       struct step steps[8], int *nsteps)
{
    if (config_setting_type(e) != CONFIG_TYPE_ARRAY && config_setting_type(e) != CONFIG_TYPE_LIST)
        return bad(x, e, key, "must be an array of steps");
    int n = config_setting_length(e);
    if (n > 8)
        return bad(x, e, key, "at most 8 steps");
    for (int j = 0; j < n; j++) {
        if (parse_step(x, config_setting_get_elem(e, (unsigned)j), key, &steps[j]))
            return -1;
        if (j && steps[j].at_ms < steps[j - 1].at_ms)
            return bad(x, e, key, "steps must come in time order");
    }
    *nsteps = n;
    return 0;
}

static int k_heartbeat_escalate(struct ctx *x, const config_setting_t *s, struct config *c)
{
    return parse_steps(x, s, "heartbeat_escalate", c->hb_steps, &c->hb_nsteps);
}

static int parse_policy(struct ctx *x, const config_setting_t *s, struct policy *p)
{
    memset(p, 0, sizeof *p);
    p->grace_ms = 500;
    p->kill_grace_ms = 3000;
    if (config_setting_type(s) != CONFIG_TYPE_GROUP)
        return bad(x, s, "policies", "each policy is a group { match = \"...\"; ... }");
    bool matched = false;
    for (int i = 0; i < config_setting_length(s); i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char             *k = config_setting_name(e);
        if (strcmp(k, "match") == 0) {
            if (get_str(x, e, "policies.match", &p->match))
                return -1;
            matched = true;
        } else if (strcmp(k, "grace") == 0) {
            if (get_dur(x, e, "policies.grace", &p->grace_ms))
                return -1;
        } else if (strcmp(k, "kill_grace") == 0) {
            if (get_dur(x, e, "policies.kill_grace", &p->kill_grace_ms))
                return -1;
        } else if (strcmp(k, "escalate") == 0) {
            if (parse_steps(x, e, "policies.escalate", p->steps, &p->nsteps))
                return -1;
        } else {
            return bad(x, e, k, "unknown key in a policy (match, grace, kill_grace, escalate)");
        }
    }
    if (!matched)
        return bad(x, s, "policies.match", "every policy needs a match");
    return 0;
}

static void policy_free(struct policy *p)
{
    free(p->match);
}

static int k_policies(struct ctx *x, const config_setting_t *s, struct config *c)
{
    if (config_setting_type(s) != CONFIG_TYPE_LIST)
        return bad(x, s, "policies", "must be a list ( { ... }, { ... } )");
    int            n = config_setting_length(s);
    struct policy *ps = calloc((size_t)n + 1, sizeof *ps);
    if (!ps)
        return bad(x, s, "policies", "out of memory");
    for (int i = 0; i < n; i++) {
        if (parse_policy(x, config_setting_get_elem(s, (unsigned)i), &ps[i])) {
            for (int j = 0; j <= i; j++)
                policy_free(&ps[j]);
            free(ps);
            return -1;
        }
    }
    for (int i = 0; i < c->npolicies; i++)
        policy_free(&c->policies[i]);
    free(c->policies);
    c->policies = ps;
    c->npolicies = n;
    return 0;
}

static const struct key {
    const char *name;
    int (*parse)(struct ctx *, const config_setting_t *, struct config *);
} keys[] = {
    {"agent_socket", k_agent_socket},
    {"control_socket", k_control_socket},
    {"state_dir", k_state_dir},
    {"admin_uids", k_admin_uids},
    {"metrics_listen", k_metrics_listen},
    {"policies", k_policies},
    {"heartbeat_escalate", k_heartbeat_escalate},
};

static const struct policy builtin_policy = {
    .match = "*",
    .grace_ms = 500,
    .kill_grace_ms = 3000,
    .steps = {{ACT_REPORT, 0}, {ACT_CANCEL, 0}, {ACT_INTERRUPT, 2000}, {ACT_KILL, 10000}},
    .nsteps = 4,
};

static int defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    char dir[512];
    if (geteuid() == 0) {
        c->agent_socket = strdup("/run/leash/agent.sock");
        c->control_socket = strdup("/run/leash/control.sock");
        c->state_dir = strdup("/var/lib/leash");
    } else {
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        if (xdg && *xdg == '/')
            snprintf(dir, sizeof dir, "%s/leash", xdg);
        else
            snprintf(dir, sizeof dir, "/tmp/leash-%u", (unsigned)geteuid());
        if (asprintf(&c->agent_socket, "%s/agent.sock", dir) < 0)
            c->agent_socket = NULL;
        if (asprintf(&c->control_socket, "%s/control.sock", dir) < 0)
            c->control_socket = NULL;
        c->state_dir = strdup(dir);
    }
    c->max_frame = 1024 * 1024;
    c->admin_uids = calloc(1, sizeof *c->admin_uids);
    c->nadmin = 1; /* root */
    c->heartbeat_timeout_ms = 5000;
    /* a silent process may be stopped or short of CPU, not wedged: report */
    c->hb_steps[0] = (struct step){ACT_REPORT, 0};
    c->hb_nsteps = 1;
    c->stuck_after_ms = 120000;
    c->journal_max = 64ULL * 1024 * 1024;
    c->peers_per_uid = 1024;
    c->followers_per_uid = 16;
    c->uid_buffer_max = 16 * 1024 * 1024;
    c->peer_out_max = 4 * 1024 * 1024;
    c->peer_timeout_ms = 10000;
    c->report_burst = 1000;
    c->report_interval_ms = 10000;
    c->names_max = 64 * 1024 * 1024;
    c->objects_per_process = 200000;
    c->policies = calloc(1, sizeof *c->policies);
    if (!c->agent_socket || !c->control_socket || !c->state_dir || !c->admin_uids || !c->policies)
        return -1;
    c->policies[0] = builtin_policy;
    c->policies[0].match = strdup("*");
    c->npolicies = 1;
    return c->policies[0].match ? 0 : -1;
}

/*
 * libconfig 1.5 (Debian 12's) reads a whole number written without an L
 * suffix as a 32-bit int and cuts a bigger one silently: `admin_uids = [
 * 4295032830 ]` became uid 65534, `objects_per_process = 4294967312`
 * became 16, and no range check can see it. So the text is read first, and
 * a number that does not fit 32 bits without its L is refused, with its
 * line. Strings and comments are skipped; floats are left to libconfig.
 * An @include is refused: the file it names is not scanned.
 * 0 if every literal fits, else -1 with err set.
 */
/* Past the rest of a float's digits, dots and exponent, up to the text's end. */
static const char *past_float(const char *p)
{
    while (*p && (isdigit((unsigned char)*p) || strchr(".eE+-", *p)))
        p++;
    return p;
}

static int literals_fit(const char *text, const char *name, char *err, size_t errlen)
{
    int line = 1;
    for (const char *p = text; *p;) {
        char c = *p;
        if (c == '\n') {
            line++;
            p++;
        } else if (c == '"') { /* a string, with backslash escapes */
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1])
                    p++;
                if (*p == '\n')
                    line++;
            }
            if (*p)
                p++;
        } else if (c == '#' || (c == '/' && p[1] == '/')) {
            p += strcspn(p, "\n");
        } else if (c == '/' && p[1] == '*') {
            for (p += 2; *p && !(p[0] == '*' && p[1] == '/'); p++)
                if (*p == '\n')
                    line++;
            if (*p)
                p += 2;
        } else if (isalpha((unsigned char)c) || c == '_' || c == '*' || c == '@') { /* a name */
            const char *start = p;
            while (isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '*' || *p == '@')
                p++;
            /* libconfig would read the file it names, which this scan
               cannot follow: leashd's config is one file */
            if (p - start == 8 && strncmp(start, "@include", 8) == 0) {
                snprintf(err, errlen, "%s:%d: @include is not taken: leashd's config is one file",
                         name, line);
                return -1;
            }
        } else if (c == '.' && isdigit((unsigned char)p[1])) { /* a float such as .5 */
            p = past_float(p);
        } else if (isdigit((unsigned char)c) ||
                   ((c == '-' || c == '+') && isdigit((unsigned char)p[1]))) {
            const char *start = p;
            if (c == '-' || c == '+')
                p++;
            bool hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
            if (hex)
                p += 2;
            while (hex ? isxdigit((unsigned char)*p) : isdigit((unsigned char)*p))
                p++;
            if (!hex && (*p == '.' || *p == 'e' || *p == 'E')) { /* a float */
                p = past_float(p);
                continue;
            }
            if (*p == 'L') { /* an int64, which libconfig keeps whole */
                while (*p == 'L')
                    p++;
                continue;
            }
            errno = 0;
            long long v = strtoll(start, NULL, hex ? 16 : 10);
            if (errno == ERANGE || v < INT32_MIN || v > INT32_MAX) {
                snprintf(err, errlen,
                         "%s:%d: %.*s does not fit 32 bits: write it %.*sL (without the L "
                         "libconfig would cut it)",
                         name, line, (int)(p - start), start, (int)(p - start), start);
                return -1;
            }
        } else {
            p++;
        }
    }
    return 0;
}

static int apply(struct config *c, config_t *cf, struct ctx *x)
{
    config_setting_t *root = config_root_setting(cf);
    for (int i = 0; i < config_setting_length(root); i++) {
        config_setting_t    *s = config_setting_get_elem(root, (unsigned)i);
        const char          *name = config_setting_name(s);
        const struct key    *k = NULL;
        const struct numkey *nk = NULL;
        for (size_t j = 0; j < sizeof keys / sizeof keys[0]; j++)
            if (strcmp(keys[j].name, name) == 0)
                k = &keys[j];
        for (size_t j = 0; j < sizeof numkeys / sizeof numkeys[0]; j++)
            if (strcmp(numkeys[j].name, name) == 0)
                nk = &numkeys[j];
        if (!k && !nk)
            return bad(x, s, name, "unknown key");
        if (k ? k->parse(x, s, c) : parse_number(x, s, nk, c))
            return -1;
    }
    return 0;
}

int config_load_string(struct config *c, const char *text, const char *name, char *err,
                       size_t errlen)
{
    if (defaults(c)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    config_t cf;
    config_init(&cf);
    struct ctx x = {.file = name, .err = err, .errlen = errlen};
    int        rc = 0;
    if (literals_fit(text, name, err, errlen)) {
        rc = -1;
    } else if (config_read_string(&cf, text) != CONFIG_TRUE) {
        snprintf(err, errlen, "%s:%d: %s", name, config_error_line(&cf), config_error_text(&cf));
        rc = -1;
    } else {
        rc = apply(c, &cf, &x);
    }
    config_destroy(&cf);
    if (rc)
        config_free(c);
    return rc;
}

int config_load(struct config *c, const char *file, char *err, size_t errlen)
{
    if (!file)
        return config_load_string(c, "", "(built-in)", err, errlen);
    FILE *f = fopen(file, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", file, strerror(errno));
        return -1;
    }
    char  *text = NULL;
    size_t n = 0;
    FILE  *m = open_memstream(&text, &n);
    char   buf[4096];
    size_t r;
    while (m && (r = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, r, m);
    bool ioerr = ferror(f);
    fclose(f);
    if (m)
        fclose(m);
    if (!text || ioerr) {
        free(text);
        snprintf(err, errlen, "%s: cannot read", file);
        return -1;
    }
    int rc = config_load_string(c, text, file, err, errlen);
    free(text);
    if (!rc)
        c->file = strdup(file);
    return rc;
}

void config_free(struct config *c)
{
    free(c->file);
    free(c->agent_socket);
    free(c->control_socket);
    free(c->state_dir);
    free(c->admin_uids);
    free(c->metrics_listen);
    for (int i = 0; i < c->npolicies; i++)
        policy_free(&c->policies[i]);
    free(c->policies);
    memset(c, 0, sizeof *c);
}

const struct policy *config_policy(const struct config *c, const char *name)
{
    for (int i = 0; i < c->npolicies; i++)
        if (fnmatch(c->policies[i].match, name, 0) == 0)
            return &c->policies[i];
    return &builtin_policy;
}

bool config_is_admin(const struct config *c, uid_t uid)
{
    if (uid == 0)
        return true;
    for (int i = 0; i < c->nadmin; i++)
        if (c->admin_uids[i] == uid)
            return true;
    return false;
}
