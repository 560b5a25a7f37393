/* make_seeds: writes the seed corpora of the fuzzers (run once; the output
   is committed under tests/fuzz/corpus/). Usage: make_seeds DIR */
#include "frame.h"
#include "leash/agent.pb-c.h"
#include "leash/control.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put(const char *dir, const char *name, const uint8_t *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n)
        exit(1);
    fclose(f);
}

static void frame(const char *dir, const char *name, const Leash__Agent__AgentMessage *m)
{
    uint8_t buf[4096];
    size_t  n = leash__agent__agent_message__pack(m, buf + 4);
    leash_frame_put_len(buf, (uint32_t)n);
    put(dir, name, buf, n + 4);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    char agent[256], control[256];
    snprintf(agent, sizeof agent, "%s/agent", argv[1]);
    snprintf(control, sizeof control, "%s/control", argv[1]);

    Leash__Agent__Group g = LEASH__AGENT__GROUP__INIT, *gp = &g;
    g.id = 2;
    g.name = "search";
    g.site = "svc.c:10";
    g.deadline_ms_left = 100;
    Leash__Agent__Task t = LEASH__AGENT__TASK__INIT, *tp = &t;
    t.id = 3;
    t.group = 2;
    t.fn = "worker";
    t.site = "svc.c:11";
    t.op = LEASH__AGENT__OP__OP_CHAN_SEND;
    t.object = "results";
    t.blocked_site = "svc.c:20";
    t.since_ms = 50;
    Leash__Agent__Snapshot s = LEASH__AGENT__SNAPSHOT__INIT;
    s.n_groups = 1;
    s.groups = &gp;
    s.n_tasks = 1;
    s.tasks = &tp;
    Leash__Agent__Hello h = LEASH__AGENT__HELLO__INIT;
    h.version = 1;
    h.name = "svc";
    h.snapshot = &s;
    Leash__Agent__AgentMessage m = LEASH__AGENT__AGENT_MESSAGE__INIT;
    m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_HELLO;
    m.hello = &h;
    frame(agent, "hello", &m);

    Leash__Agent__Event  e[3] = {LEASH__AGENT__EVENT__INIT, LEASH__AGENT__EVENT__INIT,
                                 LEASH__AGENT__EVENT__INIT};
    Leash__Agent__Event *ep[3] = {&e[0], &e[1], &e[2]};
    e[0].kind = LEASH__AGENT__EVENT__KIND__GROUP_OPEN;
    e[0].group = 5;
    e[0].name = "g";
    e[0].deadline_ms_left = -1;
    e[1].kind = LEASH__AGENT__EVENT__KIND__STUCK;
    e[1].group = 5;
    e[1].task = 6;
    e[1].op = LEASH__AGENT__OP__OP_MUTEX;
    e[1].since_ms = 1000;
    e[2].kind = LEASH__AGENT__EVENT__KIND__REPORT;
    e[2].report_kind = "lock_cycle";
    e[2].detail = "cycle";
    Leash__Agent__Events es = LEASH__AGENT__EVENTS__INIT;
    es.n_events = 3;
    es.events = ep;
    m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_EVENTS;
    m.events = &es;
    frame(agent, "events", &m);

    Leash__Agent__Heartbeat hb = LEASH__AGENT__HEARTBEAT__INIT;
    hb.seq = 9;
    m.msg_case = LEASH__AGENT__AGENT_MESSAGE__MSG_HEARTBEAT;
    m.heartbeat = &hb;
    frame(agent, "heartbeat", &m);

    Leash__Control__Request       r = LEASH__CONTROL__REQUEST__INIT;
    Leash__Control__CancelRequest c = LEASH__CONTROL__CANCEL_REQUEST__INIT;
    c.pid = 10;
    c.group = 2;
    r.version = 1;
    r.req_case = LEASH__CONTROL__REQUEST__REQ_CANCEL;
    r.cancel = &c;
    uint8_t buf[256];
    put(control, "cancel", buf, leash__control__request__pack(&r, buf));
    Leash__Control__IncidentsRequest in = LEASH__CONTROL__INCIDENTS_REQUEST__INIT;
    in.since_ms = 1;
    in.follow = 1;
    r.req_case = LEASH__CONTROL__REQUEST__REQ_INCIDENTS;
    r.incidents = &in;
    put(control, "incidents", buf, leash__control__request__pack(&r, buf));
    return 0;
}
