/* metrics.c: Prometheus text format on metrics_listen, through evhttp. */
#include "leashd.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct evhttp *http;

static void serve(struct evhttp_request *req, void *arg)
{
    (void)arg;
    /* the path alone: a scraper may add a query string (?x=1) */
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char              *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path || strcmp(path, "/metrics") != 0) {
        evhttp_send_error(req, HTTP_NOTFOUND, "try /metrics");
        return;
    }
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    uint64_t groups, tasks, stuck, nproc = 0, dropped = 0;
    proc_counts(&groups, &tasks, &stuck);
    for (struct proc *p = procs; p; p = p->next) {
        nproc += p->hello;
        /* each agent's own word: saturates, never wraps */
        dropped = p->dropped > UINT64_MAX - dropped ? UINT64_MAX : dropped + p->dropped;
    }
    evbuffer_add_printf(
        b,
        "# HELP leashd_processes Leashed processes connected.\n"
        "# TYPE leashd_processes gauge\nleashd_processes %llu\n"
        "# HELP leashd_groups Live groups across processes.\n"
        "# TYPE leashd_groups gauge\nleashd_groups %llu\n"
        "# HELP leashd_tasks Live tasks across processes.\n"
        "# TYPE leashd_tasks gauge\nleashd_tasks %llu\n"
        "# HELP leashd_stuck_tasks Tasks reported blocked past stuck_after.\n"
        "# TYPE leashd_stuck_tasks gauge\nleashd_stuck_tasks %llu\n"
        "# HELP leashd_events_total Lifecycle events received.\n"
        "# TYPE leashd_events_total counter\nleashd_events_total %llu\n"
        "# HELP leashd_tasks_folded_total Tasks that started and ended between two batches of "
        "their agent, whose events it left out.\n"
        "# TYPE leashd_tasks_folded_total counter\nleashd_tasks_folded_total %llu\n"
        "# HELP leashd_agent_events_dropped Events agents dropped (queue full).\n"
        "# TYPE leashd_agent_events_dropped gauge\nleashd_agent_events_dropped %llu\n"
        "# HELP leashd_frames_rejected_total Oversized frames refused.\n"
        "# TYPE leashd_frames_rejected_total counter\n"
        "leashd_frames_rejected_total %llu\n"
        "# HELP leashd_bad_messages_total Messages that failed decoding.\n"
        "# TYPE leashd_bad_messages_total counter\n"
        "leashd_bad_messages_total %llu\n"
        "# HELP leashd_uptime_seconds Seconds since leashd started.\n"
        "# TYPE leashd_uptime_seconds gauge\nleashd_uptime_seconds %lld\n"
        "# HELP leashd_incidents_total Incidents recorded, by kind.\n"
        "# TYPE leashd_incidents_total counter\n",
        (unsigned long long)nproc, (unsigned long long)groups, (unsigned long long)tasks,
        (unsigned long long)stuck, (unsigned long long)stat_events,
        (unsigned long long)stat_tasks_folded, (unsigned long long)dropped,
        (unsigned long long)stat_frames_rejected, (unsigned long long)stat_bad_messages,
        (long long)((wall_ms() - started_wall) / 1000));
    for (int i = 0; incident_kinds[i]; i++)
        evbuffer_add_printf(b, "leashd_incidents_total{kind=\"%s\"} %llu\n", incident_kinds[i],
                            (unsigned long long)incidents_by_kind(incident_kinds[i]));
    evbuffer_add_printf(b,
                        "# HELP leashd_restarts_total Children restarted by supervisors "
                        "(leash_supervise), every process.\n"
                        "# TYPE leashd_restarts_total counter\nleashd_restarts_total %llu\n",
                        (unsigned long long)stat_restarts);
    evbuffer_add_printf(b,
                        "# HELP leashd_build_info leashd's version, as a label; the value is 1.\n"
                        "# TYPE leashd_build_info gauge\n"
                        "leashd_build_info{version=\"%s\"} 1\n",
                        LEASH_VERSION);
    evbuffer_add_printf(b, "# HELP leashd_limit_hits_total Times a peer hit a bound, by bound "
                           "(the config key).\n"
                           "# TYPE leashd_limit_hits_total counter\n");
    for (int i = 0; i < LIMIT_COUNT; i++)
        evbuffer_add_printf(b, "leashd_limit_hits_total{limit=\"%s\"} %llu\n", limit_names[i],
                            (unsigned long long)limit_hits[i]);
    evbuffer_add_printf(b,
                        "# HELP leashd_followers Clients following incidents.\n"
                        "# TYPE leashd_followers gauge\nleashd_followers %llu\n"
                        "# HELP leashd_parked_bytes Bytes of unfinished frames held for peers.\n"
                        "# TYPE leashd_parked_bytes gauge\nleashd_parked_bytes %zu\n",
                        (unsigned long long)control_followers(), limit_parked_total());
    const struct journal_stats *js = journal_stats();
    evbuffer_add_printf(
        b,
        "# HELP leashd_journal_bytes Size of the incident journal.\n"
        "# TYPE leashd_journal_bytes gauge\nleashd_journal_bytes %llu\n"
        "# HELP leashd_journal_pending Incidents waiting in memory for the disk.\n"
        "# TYPE leashd_journal_pending gauge\nleashd_journal_pending %llu\n"
        "# HELP leashd_journal_pending_dropped_total Incidents never written: memory cap.\n"
        "# TYPE leashd_journal_pending_dropped_total counter\n"
        "leashd_journal_pending_dropped_total %llu\n"
        "# HELP leashd_journal_write_errors_total Journal writes that failed.\n"
        "# TYPE leashd_journal_write_errors_total counter\n"
        "leashd_journal_write_errors_total %llu\n"
        "# HELP leashd_journal_rotations_total Times the journal passed journal_max.\n"
        "# TYPE leashd_journal_rotations_total counter\nleashd_journal_rotations_total %llu\n"
        "# HELP leashd_journal_damaged Damaged journals moved aside at start.\n"
        "# TYPE leashd_journal_damaged gauge\nleashd_journal_damaged %llu\n",
        (unsigned long long)js->bytes, (unsigned long long)js->pending,
        (unsigned long long)js->pending_dropped, (unsigned long long)js->write_errors,
        (unsigned long long)js->rotations, (unsigned long long)js->damaged);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4");
    evhttp_send_reply(req, HTTP_OK, "OK", b);
    evbuffer_free(b);
}

int metrics_start(struct event_base *b, const char *listen, char *err, size_t errlen)
{
    char        host[256];
    const char *colon = strrchr(listen, ':');
    size_t      hl = (size_t)(colon - listen);
    if (hl >= sizeof host) {
        snprintf(err, errlen, "metrics_listen \"%s\": host too long", listen);
        return -1;
    }
    memcpy(host, listen, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') { /* [::1]:9464 */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    http = evhttp_new(b);
    if (!http || evhttp_bind_socket(http, host, (ev_uint16_t)atoi(colon + 1)) != 0) {
        snprintf(err, errlen, "metrics_listen \"%s\": cannot listen there", listen);
        if (http)
            evhttp_free(http);
        http = NULL;
        return -1;
    }
    evhttp_set_gencb(http, serve, NULL);
    return 0;
}

void metrics_stop(void)
{
    if (http)
        evhttp_free(http);
    http = NULL;
}
