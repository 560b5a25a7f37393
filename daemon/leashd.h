/* leashd.h: what leashd's modules share. */
#ifndef LEASHD_H
#define LEASHD_H

#define _GNU_SOURCE
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h> /* struct ucred */
#include <sys/types.h>

#include "leash/agent.pb-c.h"
#include "leash/control.pb-c.h"

struct event_base;
struct bufferevent;
struct event;

/* ------------------------------------------------------------- log.c */

/* Decides, once at start, whether stderr is journald's stream. */
void log_init(void);
bool log_to_journal(void);
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A kind of line that any local process can cause as often as it likes (a
   bad frame, a connection gone): at most LOG_LIMIT_BURST of the kind per
   LOG_LIMIT_WINDOW_MS, then, with the next one after the window, how many
   were left out (journald limits a service likewise). Zero-initialised. */
#define LOG_LIMIT_BURST     5
#define LOG_LIMIT_WINDOW_MS 10000
struct log_limit {
    int64_t  since;
    unsigned said;
    uint64_t left_out;
};
void log_limited(struct log_limit *l, bool warn, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* An incident: under journald a structured entry (LEASH_INCIDENT_ID,
   LEASH_KIND, LEASH_ACTION, LEASH_PID, LEASH_PROCESS, LEASH_GROUP, ...),
   else a log line. */
void    log_incident(const Leash__Control__Incident *i);
int64_t mono_ms(void);
int64_t wall_ms(void);

/* ---------------------------------------------------------- config.c */

enum action { ACT_REPORT, ACT_CANCEL, ACT_INTERRUPT, ACT_KILL };
const char *action_name(enum action a);

struct step {
    enum action action;
    int64_t     at_ms; /* after the deadline plus grace */
};

struct policy {
    char       *match; /* a glob on the process name */
    int64_t     grace_ms, kill_grace_ms;
    struct step steps[8];
    int         nsteps;
};

struct config {
    char   *file; /* NULL: built-in defaults */
    char   *agent_socket, *control_socket, *state_dir;
    size_t  max_frame;
    uid_t  *admin_uids;
    int     nadmin;
    int64_t heartbeat_timeout_ms, stuck_after_ms;
    char   *metrics_listen; /* NULL: off */
    /* what a lost heartbeat does, ACTION@T after it was found lost: no
       agent answers then, so nothing is confirmed (default: report) */
    struct step hb_steps[8];
    int         hb_nsteps;
    /* bounds on what peers can make leashd hold (see README, Reliability) */
    uint64_t       journal_max;       /* bytes of journal before the oldest records go */
    int            peers_per_uid;     /* agent and control connections of one uid */
    int            followers_per_uid; /* incidents --follow clients of one uid */
    size_t         uid_buffer_max;    /* bytes of unfinished frames one uid may park */
    size_t         peer_out_max;      /* bytes queued to one peer before it is dropped */
    int64_t        peer_timeout_ms;   /* to finish a Hello, a request or a started frame */
    uint64_t       report_burst;      /* report incidents per process per interval */
    int64_t        report_interval_ms;
    size_t         names_max;           /* bytes of unique names held */
    size_t         objects_per_process; /* live groups and tasks of one process */
    struct policy *policies;
    int            npolicies;
};

/* Loads file (NULL: defaults only) into c. On error returns -1 with a
   message naming the file, the line and the key in err. */
int config_load(struct config *c, const char *file, char *err, size_t errlen);
/* The same from text; name is what errors call it. */
int  config_load_string(struct config *c, const char *text, const char *name, char *err,
                        size_t errlen);
void config_free(struct config *c);
/* Parses "500ms", "3s", "2m", "1h". -1 when malformed. */
int64_t config_duration(const char *s);
/* The first policy whose glob matches name (the built-in one if none). */
const struct policy *config_policy(const struct config *c, const char *name);
bool                 config_is_admin(const struct config *c, uid_t uid);

/* ------------------------------------------------------------ model.c */

/* u64 -> pointer, open addressing. */
struct map {
    uint64_t *keys;
    void    **vals;
    size_t    cap, n;
};
void *map_get(const struct map *m, uint64_t k);
int   map_put(struct map *m, uint64_t k, void *v);
void *map_del(struct map *m, uint64_t k);
void  map_free(struct map *m);
#define MAP_EACH(m, i)                                                                             \
    for (size_t i = 0; i < (m)->cap; i++)                                                          \
        if ((m)->keys && (m)->keys[i])

/* One shared copy of s, counted: each intern is matched by one unintern of
   what it returned, and the copy is freed with the last (or, if it is one
   of the last few interned, when it is pushed out of those or by
   intern_trim). "" is static. */
const char *intern(const char *s);
void        unintern(const char *s);
void        intern_trim(void);      /* frees the unused names kept as recent */
size_t      intern_count(void);     /* distinct strings held, unused recent ones too */
const char *leashd_op_name(int op); /* chan_send, mutex, ... as the dump names them */

struct dtask {
    uint64_t    id, group;
    const char *fn, *site; /* interned */
    int         op;
    uint32_t    gen; /* of the snapshot that last showed it */
    const char *object, *bsite;
    int64_t     since_mono;
    bool        stuck;
};

struct dgroup {
    uint64_t      id, parent, opener;
    const char   *name, *site;
    int64_t       deadline_mono; /* INT64_MAX: none */
    bool          cancelled;
    const char   *strategy;     /* a supervisor's (interned); NULL: not one */
    uint64_t      restarts;     /* a supervisor's, as the process counts them */
    int64_t       backoff_ms;   /* the delay of its latest restart */
    int           next_step;    /* escalation */
    int           deferrals;    /* of the step due, while the process had unread bytes */
    uint64_t      confirm_req;  /* the Confirm awaited before the step runs; 0: none */
    bool          confirm_late; /* said once that it is late */
    uint32_t      gen;          /* of the snapshot that last showed it */
    struct event *timer;        /* the next step, or the Confirm's timeout */
    struct proc  *proc;
};

struct pending_dump;

struct proc {
    int                  refs;
    bool                 dead;
    int                  fd, pidfd;
    pid_t                pid;
    uid_t                uid;
    char                 name[64];
    int64_t              connected_wall, last_msg_mono;
    bool                 hello;
    bool                 pinned;  /* pidfd is this exact process */
    bool                 closing; /* flushing a last reply, then closed */
    int64_t              accepted_mono;
    int64_t              partial_mono;             /* when the unfinished frame began; 0: none */
    size_t               parked;                   /* bytes of it, as counted for the uid */
    int64_t              reports_mono;             /* report_interval window: its start */
    uint64_t             reports, reports_dropped; /* in that window */
    struct bufferevent  *bev;
    struct event        *first_ev;  /* until the first read (peer.c): it takes the registry */
    struct event        *exit_ev;   /* its pidfd readable: the process exited (peer.c) */
    uint64_t             in_done;   /* bytes of whole frames taken from the connection */
    uint64_t             exit_in;   /* bytes it had sent when it was seen to exit; 0: not seen */
    int64_t              exit_mono; /* when that was */
    struct map           groups, tasks;
    uint64_t             dropped, stuck;
    uint64_t             restarts;     /* its supervisors', since it connected */
    uint64_t             seq;          /* of the last batch (Events or Resync) */
    int64_t              folded_mono;  /* its last Events (or Hello): the folded bound */
    uint64_t             snap_dropped; /* the agent's drop count its last snapshot covers */
    bool                 resyncing;    /* the model has holes until a fresh snapshot */
    uint32_t             gen;          /* snapshots applied */
    const struct policy *policy;
    bool                 hb_lost;
    int                  hb_step;
    int64_t              hb_lost_mono;
    struct event        *kill_timer;
    const void          *reg; /* the registry memfd, mapped read-only (postmortem.c); NULL: none */
    size_t               reg_size;
    bool                 killing;
    int64_t              kill_grace_ms; /* as it was when the kill began */
    struct proc         *next, *prev;
};

extern struct proc *procs;
extern bool         leashd_stopping; /* connections ending now are not incidents */
extern uint64_t     stat_events, stat_frames_rejected, stat_bad_messages;
extern uint64_t     stat_restarts; /* restarts seen, every process */
/* tasks the agents folded out of their batches (agent.proto's Events.folded) */
extern uint64_t stat_tasks_folded;

/* While on, model_now() is one clock reading (taken by model_clock) for a
   whole batch of messages; off, it reads the clock. */
void    model_clock(bool on);
int64_t model_now(void);

struct proc *proc_new(int fd, pid_t pid, uid_t uid, int pidfd);
void         proc_ref(struct proc *p);
void         proc_unref(struct proc *p);
struct proc *proc_by_pid(pid_t pid);
void         proc_counts(uint64_t *groups, uint64_t *tasks, uint64_t *stuck);

/* actions on the model, from a decoded agent message */
void model_hello(struct proc *p, const Leash__Agent__Hello *h);
void model_event(struct proc *p, const Leash__Agent__Event *e);
/* A numbered batch: a gap or a new drop marks p resyncing. */
void model_events(struct proc *p, const Leash__Agent__Events *e);
/* A fresh snapshot: it replaces the model of p. */
void model_resync(struct proc *p, const Leash__Agent__Resync *r);
/* Takes g, and any task left in it, out of the model. */
void model_group_drop(struct proc *p, struct dgroup *g);
void model_heartbeat(struct proc *p, const Leash__Agent__Heartbeat *h);
void model_gone(struct proc *p, const char *why);
void model_group_free(struct dgroup *g);
/* A snapshot of the model of one process, for `leashctl tasks`. Free with
   snapshot_free. */
Leash__Agent__Snapshot *model_snapshot(struct proc *p);
void                    snapshot_free(Leash__Agent__Snapshot *s);

/* ----------------------------------------------------------- policy.c */

void policy_group_open(struct dgroup *g);
/* Whether the kernel holds bytes from p that leashd has not read yet. After
   leashd itself was stopped or starved (SIGSTOP, a debugger, a suspended VM,
   a CPU hog), they may say the very thing a check is about to conclude the
   opposite of: the group closed in time, the process is alive. */
bool peer_unread(const struct proc *p);
/* The process's answer to the Confirm a step waits for. */
void policy_confirmed(struct proc *p, const Leash__Agent__ConfirmReply *r);
void policy_heartbeat_check(void);
int  policy_kill(struct proc *p, const char *why, const char *by);
void policy_reload(void);

/* -------------------------------------------------------- incident.c */

int  incidents_open(const char *state_dir, char *err, size_t errlen);
void incidents_close(void);
/* Records an incident: logged, journaled, served, counted. */
void incident(struct proc *p, const char *kind, uint64_t group, const char *group_name,
              uint64_t task, const char *action, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
/* The same with what a post-mortem found: signal (NULL: none) and the task
   tree (NULL: none), which the incident takes over. */
void incident_post(struct proc *p, const char *kind, uint64_t group, const char *group_name,
                   uint64_t task, const char *action, const char *signal,
                   Leash__Control__TaskTree *tree, const char *fmt, ...)
    __attribute__((format(printf, 9, 10)));
size_t incidents_list(int64_t since_wall, Leash__Control__Incident ***out);
/* Whether incidents since since_wall were dropped from memory (the
   listing is cut), and how many are kept. */
bool incidents_cut(int64_t since_wall, uint64_t *kept);
/* The incident with that id, while kept in memory; NULL: none. */
const Leash__Control__Incident *incident_get(uint64_t id);
uint64_t                        incidents_total(void);
uint64_t                        incidents_by_kind(const char *kind);
extern const char *const        incident_kinds[];
/* Called for each new incident (leashctl incidents --follow). */
void control_incident_hook(const Leash__Control__Incident *i);

/* ---------------------------------------------------------- limits.c */

enum limit {
    LIMIT_PEERS,     /* connections per uid */
    LIMIT_FOLLOWERS, /* incidents --follow clients per uid */
    LIMIT_BUFFER,    /* unfinished frames parked per uid */
    LIMIT_OUT,       /* a peer's outgoing buffer */
    LIMIT_TIMEOUT,   /* a Hello, request or frame not finished in peer_timeout */
    LIMIT_REPORTS,   /* report incidents per process per report_interval */
    LIMIT_FDS,       /* accept() out of file descriptors */
    LIMIT_IDENTITY,  /* a peer whose process cannot be pinned: never signalled */
    LIMIT_NAMES,     /* bytes of unique names held */
    LIMIT_OBJECTS,   /* live groups and tasks of one process */
    LIMIT_FOLDED,    /* folded tasks an agent claims beyond what it could run */
    LIMIT_COUNT
};
extern const char *const limit_names[LIMIT_COUNT];
extern uint64_t          limit_hits[LIMIT_COUNT]; /* for metrics */

/* Counts a hit and logs it, once per uid while that uid has peers. */
void limit_hit(enum limit l, uid_t uid, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* One more connection of uid: 0, or -EUSERS over peers_per_uid (said). */
int  limit_peer_add(uid_t uid);
void limit_peer_del(uid_t uid);
/* An accepted connection's peer credentials (SO_PEERCRED), counted against
   its uid's peers_per_uid: 0, counted (limit_peer_del when it goes).
   Otherwise fd is closed: 1, refused over the bound (and said), or -errno. */
int limit_peer_accept(int fd, struct ucred *cred);
/* One more follower of uid: 0, or -EUSERS over followers_per_uid (said). */
int  limit_follower_add(uid_t uid);
void limit_follower_del(uid_t uid);
/* A peer of uid now parks `now` bytes of unfinished frames (it held *held,
   which becomes now). -ENOBUFS when the uid is over uid_buffer_max. */
int    limit_parked(uid_t uid, size_t *held, size_t now);
size_t limit_parked_total(void);
void   limits_free(void);

/* ------------------------------------------------------ postmortem.c */

/* What the fatal-signal record of a registry says. */
struct registry_crash {
    char     signal[16]; /* "SIGSEGV"; "": no crash recorded */
    char     detail[768];
    uint64_t task, group;
    char     group_name[64];
};
/* Maps a registry memfd read-only, if it is one (a sealed memfd of the
   registry's size). 0, or -errno with why in err. */
int  registry_map(int fd, const void **base, size_t *size, char *err, size_t errlen);
void registry_unmap(const void *base, size_t size);
/* The task tree a registry holds, checked and copied out (the process may
   have written anything there); NULL when it is not a registry or memory
   ran out. now_ns: CLOCK_MONOTONIC_COARSE, for ages. The tree is named
   pid and name, leashd's own view of the process (SO_PEERCRED's pid): the
   pid and name in the registry's header are the process's word, never
   taken. */
Leash__Control__TaskTree *registry_read(const void *base, size_t size, int64_t now_ns, int pid,
                                        const char *name, struct registry_crash *crash);
size_t                    registry_live_tasks(const Leash__Control__TaskTree *t); /* not root */
/* --------------------------------------------------------- journal.c */

struct journal_stats {
    char     state[800]; /* "ok", or what is wrong */
    uint64_t bytes, pending, pending_dropped, write_errors, rotations, damaged;
};
struct journal_scan {
    size_t records;    /* valid ones */
    bool   damaged;    /* bytes that are no record, with valid records after */
    size_t damaged_at; /* the first such byte */
    size_t skipped;    /* bytes that are no record */
    size_t torn_at;    /* where a torn last record begins; len if none */
};
/* Called for each valid record: i is the caller's to free; raw its bytes. */
typedef void (*journal_record_cb)(void *arg, Leash__Control__Incident *i, const uint8_t *raw,
                                  size_t len);
/* Reads every valid record of buf (len bytes, any pattern), skipping what
   is not one. Returns the number of valid records. */
size_t journal_scan(const uint8_t *buf, size_t len, journal_record_cb cb, void *arg,
                    struct journal_scan *s);
/* i as a journal record (frame, CRC last); malloc'd, *len bytes. */
uint8_t *journal_pack(const Leash__Control__Incident *i, size_t *len);
/* Checks state_dir, reads the journal back (each incident to keep, oldest
   first) and opens it for appending. -1 with why in err. */
int  journal_open(const char *state_dir, void (*keep)(Leash__Control__Incident *), char *err,
                  size_t errlen);
void journal_append(const Leash__Control__Incident *i);
/* Writes what waits in memory, if the disk takes it (from the tick). */
void                        journal_flush(void);
void                        journal_close(void);
const struct journal_stats *journal_stats(void);

/* ------------------------------------------------------------ peer.c */

/* Starts reading frames from a connected agent. */
int agent_accept(struct event_base *base, int fd);
int agent_send(struct proc *p, const Leash__Agent__DaemonMessage *m);
/* Asks the process to cancel, or interrupt, a group (0: every top-level one). */
int agent_cancel(struct proc *p, uint64_t group);
int agent_interrupt(struct proc *p, uint64_t group);
/* A DumpRequest on its way; the reply goes to cb(arg, snapshot or NULL). */
int  agent_dump(struct proc *p, void (*cb)(void *arg, const Leash__Agent__Snapshot *s), void *arg);
void agent_dump_cancel(void *arg);
/* At shutdown: every connection closed, every process let go. */
void agent_close_all(void);
/* Drops agents that have not finished a Hello or a started frame within
   peer_timeout (called from the periodic tick). */
void agent_sweep(int64_t now_mono);
/* Set to refuse SO_PEERPIDFD and use the pidfd_open fallback (tests). */
extern bool agent_no_peerpidfd;

/* --------------------------------------------------------- control.c */

int      control_accept(struct event_base *base, int fd);
void     control_sweep(int64_t now_mono);
void     control_close_all(void);
uint64_t control_followers(void);

/* --------------------------------------------------------- metrics.c */

int  metrics_start(struct event_base *base, const char *listen, char *err, size_t errlen);
void metrics_stop(void);

/* ---------------------------------------------------------- sockets.c */

/* 0 if path fits a unix socket's address, else -1 with why in err. */
int socket_path_check(const char *path, char *err, size_t errlen);
int socket_listen(const char *path, mode_t mode, char *err, size_t errlen);
/* The listening socket systemd passed for name ("agent", "control": its
   FileDescriptorName=) or bound to path; -1 when none was passed. */
int socket_inherited(const char *name, const char *path);
/* Closes the passed sockets nobody took (said in the log). */
void socket_inherited_done(void);
int  mkdir_p(const char *dir, mode_t mode);
/* Makes dir (mode, whatever the umask) if missing, then checks that
   leashd may trust it: a directory of leashd's uid that no other uid can
   write (a root-owned sticky one such as /tmp passes). -1 with why. */
int dir_check(const char *dir, mode_t mode, char *err, size_t errlen);

/* ----------------------------------------------------------- main.c */

/* Reads the config file again; on error keeps the running one and says why. */
int                       daemon_reload(char *err, size_t errlen);
extern struct config      cfg;
extern struct event_base *base;
extern int64_t            started_wall;

#endif
