"""Faults and hostile input, end to end (contract §4.1-§4.4, payloads.md,
protocol.md §1.4-§1.6): prompts of other clients, ComfyUI and broker
restarts in the middle of a run, the bound of the offline queue, hostile
WebSocket frames, and link liveness (hung ComfyUI, peers that accept TCP
but never answer).

Counting rule used throughout ("exactly once"): a message is identified by
its topic and its `seq`. A subscriber may see the same message twice without
the bridge publishing it twice: QoS 1 redelivery, the broker's retained copy
sent again on re-subscribe, and the bridge republishing retained topics
byte-identical (same seq) after the broker lost its session. So we count
distinct seq values per topic; a bridge that publishes a message again
gives it a new seq and is caught.
"""

import base64
import socket
import struct
import threading
import time
import uuid

import pytest

import harness
from harness import BASE, TERMINAL_TYPES, sanitize

HEALTH = ["--health-interval", "1"]
TERMINAL_WAIT = 20
POLL_WAIT = 25
# the default workflow: 7 nodes; `executing` for each plus the end frame
NODES = ("3", "4", "5", "6", "7", "8", "9")


# --------------------------------------------------------------------------
# helpers


def ptopic(pid):
    return "%s/prompt/%s" % (BASE, sanitize(pid))


def distinct(pairs):
    """(msg, obj) pairs -> {seq: (msg, obj)}, first arrival kept."""
    out = {}
    for m, o in pairs:
        if isinstance(o, dict) and isinstance(o.get("seq"), int):
            out.setdefault(o["seq"], (m, o))
    return out


def events(col, pid, etype, since=0):
    return list(distinct(col.json_messages(ptopic(pid) + "/event/" + etype, since)).values())


def terminals(col, pid, since=0):
    out = []
    for t in sorted(TERMINAL_TYPES):
        out += [(t, m, o) for m, o in events(col, pid, t, since)]
    return out


def completions(col, pid, since=0):
    pairs = [(m, o) for m, o in col.json_messages(BASE + "/completion", since) if o.get("prompt_id") == pid]
    return list(distinct(pairs).values())


def states(col, pid, since=0):
    """Distinct state messages of a prompt, in seq order."""
    d = distinct(col.json_messages(ptopic(pid) + "/state", since))
    return [d[s] for s in sorted(d)]


def finished(col, pid, since=0):
    return bool(terminals(col, pid, since)) and bool(completions(col, pid, since))


def healths(col, since=0):
    return [o for m, o in col.json_messages(BASE + "/bridge/health", since)]


def wait_health(col, pred, timeout, since=0):
    """The newest health (by seq) satisfying pred, waiting up to timeout."""
    def find(_msgs):
        hs = sorted(healths(col, since), key=lambda o: o.get("seq", 0))
        return hs[-1] if hs and pred(hs[-1]) else None
    return col.wait_for(find, timeout=timeout)


def history_kind(sim, pid):
    hist = sim.history(pid).get(pid) or {}
    kinds = [m[0] for m in hist.get("status", {}).get("messages", [])]
    for k in ("execution_interrupted", "execution_error", "execution_success"):
        if k in kinds:
            return k, hist
    return ("execution_success" if hist.get("status", {}).get("status_str") == "success"
            else "execution_error"), hist


def strip_urls(o):
    if isinstance(o, dict):
        return {k: strip_urls(v) for k, v in o.items() if k != "url"}
    if isinstance(o, list):
        return [strip_urls(v) for v in o]
    return o


def finish_problems(col, broker, pid, kind, sources, since=0, outputs=None, error_node=None):
    """Exactly one terminal event of `kind` (source in sources), exactly one
    completion, exactly one final state (distinct seq), retained state final."""
    problems = []
    status = harness.TERMINAL_TO_STATUS[kind]
    terms = terminals(col, pid, since)
    if [t for t, m, o in terms] != [kind]:
        problems.append("prompt %s: expected exactly one terminal event %s, got %s"
                        % (pid, kind, [(t, o.get("source"), o.get("seq")) for t, m, o in terms]))
    elif terms[0][2].get("source") not in sources:
        problems.append("prompt %s: terminal %s has source %r, expected one of %s"
                        % (pid, kind, terms[0][2].get("source"), sources))
    comps = completions(col, pid, since)
    if len(comps) != 1:
        problems.append("prompt %s: expected exactly one completion, got %d (seqs %s)"
                        % (pid, len(comps), [o.get("seq") for m, o in comps]))
    elif comps[0][1].get("event_type") != status:
        problems.append("prompt %s: completion event_type %r, expected %r"
                        % (pid, comps[0][1].get("event_type"), status))
    elif outputs is not None and strip_urls(comps[0][1].get("outputs")) != strip_urls(outputs):
        problems.append("prompt %s: completion outputs %r, expected %r" % (pid, comps[0][1].get("outputs"), outputs))
    sts = states(col, pid, since)
    final = [(m, o) for m, o in sts if o.get("status") in harness.TERMINAL_TO_STATUS.values()]
    if len(final) != 1 or final[0][1].get("status") != status:
        problems.append("prompt %s: expected exactly one final state %r, got %s"
                        % (pid, status, [(o.get("status"), o.get("seq")) for m, o in final]))
    elif sts[-1][1].get("seq") != final[0][1].get("seq"):
        problems.append("prompt %s: a state %r came after the final one" % (pid, sts[-1][1].get("status")))
    else:
        st = final[0][1]
        if outputs is not None and strip_urls(st.get("outputs")) != strip_urls(outputs):
            problems.append("prompt %s: state outputs %r, expected %r" % (pid, st.get("outputs"), outputs))
        if error_node is not None and (st.get("error") or {}).get("node_id") != error_node:
            problems.append("prompt %s: state error %r, expected node_id %r" % (pid, st.get("error"), error_node))
    ret = harness.read_retained(broker.port, ptopic(pid) + "/state")
    if ret is None or not ret.payload or ret.json().get("status") != status:
        problems.append("prompt %s: retained state is %r, expected status %r"
                        % (pid, ret and ret.payload[:200], status))
    return problems


def lifecycle_counts(col, pid, since=0):
    return {t: len(events(col, pid, t, since)) for t in ("execution_start", "execution_cached", "executing",
                                                         "executed")}


FULL_RUN = {"execution_start": 1, "execution_cached": 1, "executing": len(NODES) + 1, "executed": 1}


def run_seqs(col, run):
    """{seq: (msg, obj)} of every JSON message of one bridge run."""
    return distinct([(m, o) for m, o in col.json_messages(BASE + "/*")
                     if isinstance(o, dict) and o.get("run") == run])


def gaps_outside(seqs, windows):
    """Missing seqs that cannot have been produced inside one of the
    windows [(t_from_ms, t_to_ms)] where the bridge queued (its production
    time is bounded by the ts of the received neighbours). The bridge also
    queues before its first broker connection: pass that as a window."""
    got = sorted(seqs)
    bad = []

    def inside(ts_lo, ts_hi):
        return any(ts_hi >= a and ts_lo <= b for a, b in windows)

    for lo, hi in zip([0] + got, got):
        if hi - lo > 1:
            ts_lo = seqs[lo][1]["ts"] if lo else 0
            ts_hi = seqs[hi][1]["ts"]
            if not inside(ts_lo, ts_hi):
                bad.append("seq %d..%d missing (neighbours %s ts %d, %s ts %d)"
                           % (lo + 1, hi - 1, seqs[lo][0].topic if lo else "-", ts_lo, seqs[hi][0].topic, ts_hi))
    return bad


def first_online_ms(col):
    """Collector time of the bridge's first bridge/state online (ms)."""
    for m in col.messages(BASE + "/bridge/state"):
        if m.payload == b"online":
            return int(m.t * 1000) + 200
    return 0


def order_problems(col, run):
    """Non-retained messages of one run arrive in seq order per QoS (first
    arrival of each seq; retained copies may legitimately come out of order
    when a persistent subscriber re-subscribes)."""
    seen, last, problems = set(), {}, []
    for m, o in col.json_messages(BASE + "/*"):
        if not isinstance(o, dict) or o.get("run") != run or not isinstance(o.get("seq"), int):
            continue
        if o["seq"] in seen:
            continue
        seen.add(o["seq"])
        if m.retain:
            continue
        prev = last.get(m.qos)
        if prev and prev[0] >= o["seq"]:
            problems.append("qos %d: seq %d (%s) arrived after seq %d (%s)" % (m.qos, o["seq"], m.topic,
                                                                             prev[0], prev[1]))
        last[m.qos] = (o["seq"], m.topic)
    return problems


def gaps_inside(seqs):
    got = sorted(seqs)
    return sum(hi - lo - 1 for lo, hi in zip(got, got[1:]))


def bridge_run(col):
    for m, o in col.json_messages(BASE + "/bridge/info"):
        return o.get("run")
    return None


def count_in_log(bridge, text):
    try:
        with open(bridge.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace").count(text)
    except OSError:
        return 0


def make_qos0_broker(procs, tmp_path, name):
    """A persistent broker that also queues QoS 0 for offline persistent
    sessions, so what the subscriber misses is only what the bridge dropped.

    max_inflight_messages 0: mosquitto 2.0.11 loses queued QoS 1 messages
    when an offline session's queue mixes QoS 0 and more QoS 1 than the
    in-flight maximum (src/database.c db__message_reconnect_reset_outgoing
    dequeues the first queued message when a later QoS 0 one is ready, so
    a QoS 1 one lands in flight still marked queued and is never sent).
    Without a maximum every queued message is ready and the bug cannot
    bite; the bridge's own QoS 0 events (progress, event/<type>) are
    interleaved with QoS 1 ones, as the contract has them."""
    return procs.add(harness.Broker(str(tmp_path / name), persistence=True,
                                    extra_conf=["queue_qos0_messages true",
                                                "max_inflight_messages 0"])).start()


def common_checks(col, bridge):
    problems = [p for p in harness.qos_retain_problems(col)]
    outside = [m.topic for m in col.messages() if not m.topic.startswith(BASE + "/")]
    if outside:
        problems.append("published outside %s/: %s" % (BASE, outside[:5]))
    assert not problems, "\n  ".join(problems) + bridge.context()
    harness.assert_all_valid(col, bridge=bridge)


# --------------------------------------------------------------------------
# prompts of another client (contract §4.1 poll + history)


@pytest.mark.parametrize("outcome", ["success", "error", "interrupt"])
def test_foreign_prompt_via_poll_and_history(outcome, broker, sim, collector, make_bridge):
    bridge = make_bridge(sim.url, broker.url, extra_args=HEALTH)
    bridge.wait_connected(collector, sim)
    since = collector.mark()
    pid = sim.submit(client_id="someone-else-" + uuid.uuid4().hex[:6], outcome=outcome,
                     steps=6, step_ms=40)["prompt_id"]
    collector.wait_for(lambda _m: finished(collector, pid, since), timeout=POLL_WAIT)
    # a later queue change makes the bridge poll and read history again:
    # nothing may be reported twice
    mark = collector.mark()
    sim.req("POST", "/_sim/status")
    collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/event/status"], timeout=5, since=mark)
    collector.wait_quiet(quiet=1.0, timeout=6)

    kind, hist = history_kind(sim, pid)
    want_kind = {"success": "execution_success", "error": "execution_error",
                 "interrupt": "execution_interrupted"}[outcome]
    assert kind == want_kind, "simulator history says %s for a %s prompt: %r" % (kind, outcome, hist)
    problems = []
    queued = events(collector, pid, "queued", since)
    if len(queued) != 1:
        problems.append("expected exactly one `queued`, got %d" % len(queued))
    started = events(collector, pid, "execution_start", since)
    if len(started) != 1 or started[0][1].get("source") not in ("poll", "history"):
        problems.append("expected one execution_start with source poll/history, got %r"
                        % [o.get("source") for m, o in started])
    live_only = [t for t in ("executing", "progress", "executed") if events(collector, pid, t, since)]
    if live_only:
        problems.append("per-node events %s published for a prompt the bridge cannot see live" % live_only)
    problems += finish_problems(collector, broker, pid, kind, ("poll", "history"), since,
                                outputs=hist.get("outputs") if outcome == "success" else None,
                                error_node="3" if outcome == "error" else None)
    if outcome == "success" and not (hist.get("outputs") or {}).get("9"):
        problems.append("simulator history has no outputs for node 9: %r" % hist.get("outputs"))
    assert not problems, "foreign %s prompt %s:\n  %s\n%s%s" % (
        outcome, pid, "\n  ".join(problems), collector.dump(ptopic(pid) + "/*", since), bridge.context())
    common_checks(collector, bridge)


# --------------------------------------------------------------------------
# ComfyUI restarts in the middle of a run (contract §4.2)


@pytest.mark.parametrize("finish_as", ["success", "error", "vanish"])
def test_comfyui_restart_mid_run(finish_as, broker, make_sim, collector, make_bridge):
    sim = make_sim(finish_running_as=finish_as)
    bridge = make_bridge(sim.url, broker.url, extra_args=HEALTH)
    bridge.wait_connected(collector, sim)
    since = collector.mark()
    pid = sim.submit(client_id=bridge.client_id, steps=3, step_ms=10, hold=True)["prompt_id"]
    holding = harness.wait_until(lambda: pid in sim.req("GET", "/_sim/state")["holding"], 15)
    assert holding, "simulator never held prompt %s" % pid
    live = collector.wait_for(lambda _m: events(collector, pid, "executed", since), timeout=10)
    assert live, "no live `executed` for %s before the restart%s" % (pid, bridge.context())
    assert not terminals(collector, pid, since), "terminal event before the prompt finished"

    sim.kill()
    sim.start()
    kind = {"success": "execution_success", "error": "execution_error", "vanish": "lost"}[finish_as]
    if finish_as != "vanish":
        assert history_kind(sim, pid)[0] == kind, "restarted simulator history: %r" % sim.history(pid)
    else:
        assert sim.history(pid) == {}, "vanished prompt is in history: %r" % sim.history(pid)
    collector.wait_for(lambda _m: finished(collector, pid, since), timeout=TERMINAL_WAIT)
    # a second reconnect (resync) and more queue changes must not report it again
    connects = sim.clients()["connects"]
    sim.drop(bridge.client_id)
    assert harness.wait_until(lambda: sim.clients()["connects"] > connects and sim.has_client(bridge.client_id),
                              15), "bridge did not reconnect after /_sim/drop%s" % bridge.context()
    mark = collector.mark()
    sim.req("POST", "/_sim/status")
    collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/event/status"], timeout=5, since=mark)
    collector.wait_quiet(quiet=1.0, timeout=6)

    problems = finish_problems(collector, broker, pid, kind,
                               ("history",) if kind != "lost" else ("history", "poll", "live"), since,
                               error_node="3" if finish_as == "error" else None)
    if kind == "lost":
        lost = events(collector, pid, "lost", since)
        if lost and not isinstance((lost[0][1].get("data") or {}).get("reason"), str):
            problems.append("lost event without a reason: %r" % lost[0][1])
        h = wait_health(collector, lambda o: o.get("lost", 0) >= 1, timeout=5, since=since)
        if not h:
            problems.append("bridge/health `lost` never counted the vanished prompt")
    else:
        h = wait_health(collector, lambda o: o.get("recovered_from_history", 0) >= 1, timeout=5, since=since)
        if not h:
            problems.append("bridge/health `recovered_from_history` never counted the prompt")
    assert not problems, "ComfyUI restart (%s):\n  %s\n%s%s" % (
        finish_as, "\n  ".join(problems), collector.dump(ptopic(pid) + "/*", since), bridge.context())
    common_checks(collector, bridge)


# --------------------------------------------------------------------------
# the broker restarts in the middle of a run (contract §4.3)


def test_broker_restart_mid_run_persistent_subscriber(tmp_path, procs, sim, make_collector, make_bridge):
    broker = make_qos0_broker(procs, tmp_path, "pbroker")
    col = make_collector(broker.port, persistent=True, client_id="res-sub-" + uuid.uuid4().hex[:8])
    bridge = make_bridge(sim.url, broker.url, extra_args=HEALTH)
    bridge.wait_connected(col, sim)
    run = bridge_run(col)
    assert run, "no bridge/info with a run%s" % bridge.context()

    steps1 = 40
    p1 = sim.submit(client_id=bridge.client_id, steps=steps1, step_ms=50)["prompt_id"]
    mid = col.wait_for(lambda _m: [o for m, o in events(col, p1, "progress")
                                   if (o.get("data") or {}).get("value", 0) >= 2], timeout=15)
    assert mid, "prompt 1 never streamed progress%s" % bridge.context()
    losses = count_in_log(bridge, "connection to 127.0.0.1:%d lost" % broker.port)
    t_stop = time.time()
    broker.stop()
    # while the broker is away: the rest of p1, an own error, an own success, a foreign prompt
    p2 = sim.submit(client_id=bridge.client_id, outcome="error", steps=3, step_ms=10)["prompt_id"]
    p3 = sim.submit(client_id=bridge.client_id, steps=5, step_ms=10)["prompt_id"]
    p4 = sim.submit(client_id="someone-else", steps=3, step_ms=10)["prompt_id"]
    pids = [p1, p2, p3, p4]
    noticed = harness.wait_until(
        lambda: count_in_log(bridge, "connection to 127.0.0.1:%d lost" % broker.port) > losses, 10)
    assert noticed, "bridge did not log the lost broker connection%s" % bridge.context()
    done = harness.wait_until(
        lambda: all(p in sim.req("GET", "/_sim/state")["history"] for p in pids) and time.time() - t_stop >= 4, 30)
    assert done, "prompts did not finish while the broker was down: %r" % sim.req("GET", "/_sim/state")
    assert not any(finished(col, p) for p in pids), "messages arrived while the broker was down"
    broker.start()
    online = col.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/bridge/state" and m.payload == b"online"
                                      and m.t > t_stop], timeout=40)
    assert online, "bridge/state online not seen after the broker restart%s" % bridge.context()
    t_online = online[0].t
    col.wait_for(lambda _m: all(finished(col, p) for p in pids), timeout=POLL_WAIT)
    drained = wait_health(col, lambda o: o.get("mqtt_connected") and o["queue"]["depth"] == 0
                          and o.get("ts", 0) > t_online * 1000, timeout=10)
    col.wait_quiet(quiet=0.7, timeout=5)

    problems = []
    if not drained:
        problems.append("no bridge/health with an empty queue after the restart")
    problems += finish_problems(col, broker, p1, "execution_success", ("live",), outputs=None)
    problems += finish_problems(col, broker, p2, "execution_error", ("live",), error_node="3")
    problems += finish_problems(col, broker, p3, "execution_success", ("live",))
    problems += finish_problems(col, broker, p4, "execution_success", ("poll", "history"))
    for p in (p1, p3):
        got = lifecycle_counts(col, p)
        if got != FULL_RUN:
            problems.append("prompt %s: lifecycle events (distinct seq) %r, expected %r" % (p, got, FULL_RUN))
    for p in (p1, p2, p3, p4):
        if len(events(col, p, "queued")) > 1:
            problems.append("prompt %s: more than one `queued`" % p)
    # progress is coalesced to the latest value per prompt and node, not lost
    last = sorted(events(col, p1, "progress"), key=lambda mo: mo[1]["seq"])
    if not last or (last[-1][1].get("data") or {}).get("value") != steps1:
        problems.append("prompt 1: latest progress value %r, expected %d (coalescing must keep the latest)"
                        % (last and last[-1][1].get("data"), steps1))
    # seq: gaps only where messages were queued (the outage), and only
    # coalescable kinds can be missing since every lifecycle/critical
    # message of these prompts is present (checked above)
    seqs = run_seqs(col, run)
    problems += gaps_outside(seqs, [(0, first_online_ms(col)),
                                    (int(t_stop * 1000) - 200, int(t_online * 1000) + 200)])
    problems += order_problems(col, run)
    assert not problems, "broker restart:\n  %s%s" % ("\n  ".join(problems), bridge.context())
    common_checks(col, bridge)


# --------------------------------------------------------------------------
# backpressure: a connected broker slower than ComfyUI (bridge/README.md#backpressure)


def test_stopped_broker_flood_pauses_reading_and_loses_nothing(broker, sim, collector, make_bridge):
    """The broker stops reading (SIGSTOP, its sockets stay open) while our
    prompts run: the link's queue passes its high mark and the bridge stops
    reading ComfyUI for a while; once the broker reads again (SIGCONT) every
    lifecycle event arrives, nothing is dropped and the bridge stayed up,
    with the pause in bridge/health."""
    import signal as sig
    # past the window of messages handed to libmosquitto (1000), then
    # past the 1 MiB high mark
    n = 250
    bridge = make_bridge(sim.url, broker.url, extra_args=HEALTH)
    bridge.wait_connected(collector, sim)
    collector.wait_quiet(quiet=0.5, timeout=5)
    since = collector.mark()
    broker.signal(sig.SIGSTOP)
    try:
        pids = [sim.submit(client_id=bridge.client_id, steps=3, step_ms=0)["prompt_id"] for _ in range(n)]
        paused = harness.wait_until(lambda: count_in_log(bridge, "reading paused") > 0, 10)
        # stopped past the 2 s guard: reading goes on, the queue holds the rest
        harness.wait_until(lambda: count_in_log(bridge, "reading ComfyUI again") > 0, 5)
    finally:
        broker.signal(sig.SIGCONT)
    if not paused:
        collector.wait_quiet(quiet=1, timeout=10)
        most = max([h["queue"]["bytes"] for h in healths(collector, since)] or [0])
        assert paused, "reading ComfyUI never paused for the stopped broker (queue at most %d bytes)%s" % (
            most, bridge.context())
    collector.wait_for(lambda _m: all(finished(collector, p, since) for p in pids), timeout=60)
    health = wait_health(collector, lambda o: o["queue"]["depth"] == 0 and o["backpressure"]["pauses"] >= 1,
                         timeout=15)
    collector.wait_quiet(quiet=0.5, timeout=5)
    assert bridge.alive(), "the bridge exited%s" % bridge.context()
    problems = []
    if not health:
        problems.append("no bridge/health with an empty queue and backpressure.pauses >= 1")
    elif any(health["dropped"].values()):
        problems.append("dropped %r: the queue's bound was never near" % health["dropped"])
    if count_in_log(bridge, "connection to 127.0.0.1:%d lost" % broker.port):
        problems.append("the broker link dropped: the pause must not outlast keepalive")
    for p in pids:
        problems += finish_problems(collector, broker, p, "execution_success", ("live",), since)
        got = lifecycle_counts(collector, p, since)
        if got != FULL_RUN:
            problems.append("prompt %s: lifecycle events %r, expected %r" % (p, got, FULL_RUN))
    problems += order_problems(collector, bridge_run(collector))
    assert not problems, "stopped broker flood:\n  %s\nhealth: %r%s" % (
        "\n  ".join(problems[:20]), health, bridge.context())
    common_checks(collector, bridge)


# --------------------------------------------------------------------------
# the bound of the offline queue (contract §4.3)


def outage_run(procs, tmp_path, sim, make_collector, make_bridge, extra, n_prompts):
    """Bridge with `extra` args; the broker goes away, n_prompts own prompts
    (steps=1: one progress message each, nothing to coalesce) run, the broker
    comes back. Returns (col, bridge, pids, window (t_from_ms, t_to_ms), health)."""
    broker = make_qos0_broker(procs, tmp_path, "qbroker")
    col = make_collector(broker.port, persistent=True, client_id="res-q-" + uuid.uuid4().hex[:8])
    bridge = make_bridge(sim.url, broker.url, extra_args=HEALTH + extra)
    bridge.wait_connected(col, sim)
    col.wait_quiet(quiet=0.5, timeout=5)
    losses = count_in_log(bridge, "connection to 127.0.0.1:%d lost" % broker.port)
    t_stop = time.time()
    broker.stop()
    noticed = harness.wait_until(
        lambda: count_in_log(bridge, "connection to 127.0.0.1:%d lost" % broker.port) > losses, 10)
    assert noticed, "bridge did not log the lost broker connection%s" % bridge.context()
    pids = [sim.submit(client_id=bridge.client_id, steps=1, step_ms=5)["prompt_id"] for _ in range(n_prompts)]
    done = harness.wait_until(lambda: all(p in sim.req("GET", "/_sim/state")["history"] for p in pids), 30)
    assert done, "prompts did not finish: %r" % sim.req("GET", "/_sim/state")
    broker.start()
    online = col.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/bridge/state" and m.payload == b"online"
                                      and m.t > t_stop], timeout=40)
    assert online, "bridge/state online not seen after the broker restart%s" % bridge.context()
    t_online = online[0].t
    col.wait_for(lambda _m: all(finished(col, p) for p in pids), timeout=TERMINAL_WAIT)
    health = wait_health(col, lambda o: o.get("mqtt_connected") and o["queue"]["depth"] == 0
                         and o.get("ts", 0) > t_online * 1000 + 500, timeout=10)
    assert health, "no bridge/health with an empty queue after the restart%s" % bridge.context()
    col.wait_quiet(quiet=0.5, timeout=5)
    return col, broker, bridge, pids, (int(t_stop * 1000), int(t_online * 1000)), health


def received_in_window(col, pids, etype):
    return {p: len(events(col, p, etype)) for p in pids}


def test_queue_bound_drops_progress_first(tmp_path, procs, sim, make_collector, make_bridge):
    # Only progress and terminal events on event topics: per prompt the
    # outage queues 1 progress + terminal + completion + state (coalesced),
    # plus one `current`, one `queue` and one health slot. 10 prompts:
    # 33 that must stay + 10 progress over a bound of 37: only progress goes.
    n = 10
    col, broker, bridge, pids, window, health = outage_run(
        procs, tmp_path, sim, make_collector, make_bridge,
        ["--queue-max-messages", "37", "--events", "progress,execution_success,execution_error,"
         "execution_interrupted,lost"], n)
    problems = []
    for p in pids:
        problems += finish_problems(col, broker, p, "execution_success", ("live",))
    got = received_in_window(col, pids, "progress")
    missed = sum(1 - min(c, 1) for c in got.values())
    dropped = health["dropped"]
    if dropped["critical"] != 0 or dropped["lifecycle"] != 0:
        problems.append("dropped %r: only progress may go while it is there to drop" % dropped)
    problems += gaps_outside(run_seqs(col, bridge_run(col)), [(0, first_online_ms(col)),
                                                             (window[0] - 200, window[1] + 200)])
    problems += order_problems(col, bridge_run(col))
    if dropped["progress"] != missed:
        problems.append("bridge/health dropped.progress = %d, the subscriber missed %d progress message(s) "
                        "(received per prompt: %r)" % (dropped["progress"], missed, list(got.values())))
    if missed == 0:
        problems.append("the bound of 37 should have dropped progress (test sizing)")
    # oldest first: the missed progress messages are those of the first prompts
    flags = [got[p] > 0 for p in pids]
    if flags != sorted(flags):
        problems.append("progress kept/dropped per prompt %r: drops must take the oldest first" % flags)
    assert not problems, "queue bound (progress):\n  %s\nhealth: %r%s" % (
        "\n  ".join(problems), health, bridge.context())
    common_checks(col, bridge)


def test_queue_bound_drops_lifecycle_before_terminal(tmp_path, procs, sim, make_collector, make_bridge):
    # All events. Per prompt the outage queues ~11 prompt lifecycle events,
    # status frames, 2 progress messages and 3 critical ones; 8 prompts
    # need 25 critical slots: a bound of 30 drops progress and lifecycle,
    # never a terminal event, completion or final state.
    n = 8
    col, broker, bridge, pids, window, health = outage_run(
        procs, tmp_path, sim, make_collector, make_bridge, ["--queue-max-messages", "30"], n)
    problems = []
    for p in pids:
        problems += finish_problems(col, broker, p, "execution_success", ("live",))
    dropped = health["dropped"]
    per_prompt = {p: lifecycle_counts(col, p) for p in pids}
    expected_each = sum(FULL_RUN.values())
    missed_lc = {p: expected_each - sum(c.values()) for p, c in per_prompt.items()}
    for p, c in per_prompt.items():
        over = {k: v for k, v in c.items() if v > FULL_RUN[k]}
        if over:
            problems.append("prompt %s: more lifecycle events than the run produced: %r" % (p, over))
    total_missed_lc = sum(missed_lc.values())
    progress_got = received_in_window(col, pids, "progress")
    missed_progress = sum(1 - min(c, 1) for c in progress_got.values())
    seqs = run_seqs(col, bridge_run(col))
    gaps = gaps_inside(seqs)
    if dropped["critical"] != 0:
        problems.append("dropped.critical = %d: terminal events, completion and state go last" % dropped["critical"])
    if total_missed_lc == 0 or dropped["lifecycle"] == 0:
        problems.append("the bound of 30 should have dropped lifecycle events (test sizing): missed %d, dropped %d"
                        % (total_missed_lc, dropped["lifecycle"]))
    if dropped["lifecycle"] < total_missed_lc:
        problems.append("bridge/health dropped.lifecycle = %d, but the subscriber missed %d prompt lifecycle "
                        "events %r" % (dropped["lifecycle"], total_missed_lc, list(missed_lc.values())))
    if dropped["progress"] < missed_progress:
        problems.append("bridge/health dropped.progress = %d, but the subscriber missed %d progress events"
                        % (dropped["progress"], missed_progress))
    if sum(dropped.values()) > gaps:
        problems.append("bridge/health counts %d drops, but only %d seq values are missing"
                        % (sum(dropped.values()), gaps))
    problems += gaps_outside(seqs, [(0, first_online_ms(col)), (window[0] - 200, window[1] + 200)])
    problems += order_problems(col, bridge_run(col))
    # oldest first: prompts lose lifecycle events front to back
    order = [missed_lc[p] for p in pids]
    full_losses = [m == expected_each for m in order]
    first_partial = next((i for i, m in enumerate(order) if m < expected_each), len(order))
    if any(order[i] for i in range(first_partial + 1, len(order))) or full_losses != sorted(full_losses, reverse=True):
        problems.append("missed lifecycle events per prompt %r: drops must take the oldest first" % order)
    # progress before lifecycle: a progress message older than a dropped
    # lifecycle event would have been dropped before it
    last_lossy = max((i for i, m in enumerate(order) if m), default=-1)
    kept_early = [i for i, p in enumerate(pids) if i < last_lossy and progress_got[p]]
    if kept_early:
        problems.append("progress of prompt(s) %s delivered although later lifecycle events were dropped "
                        "(progress must go first)" % kept_early)
    assert not problems, "queue bound (lifecycle):\n  %s\nhealth: %r%s" % (
        "\n  ".join(problems), health, bridge.context())
    common_checks(col, bridge)


# --------------------------------------------------------------------------
# hostile frames (contract §4.4)

MIB16 = 16 * 1024 * 1024
REJECT_REASONS = ("empty", "invalid_json", "invalid_utf8", "too_deep", "too_many_tokens", "not_object",
                  "missing_type", "bad_field", "too_large", "truncated_binary", "unknown_binary_type",
                  "bad_image_format")


def hostile_frames():
    """[(frame spec for /_sim/send, expected reject reason or None)]. Every
    rejected frame carries the marker HOSTILE so nothing of it may appear
    in a published payload."""
    def text(s):
        return {"text": s}

    def raw(b):
        return {"text_b64": base64.b64encode(b).decode()}

    def binary(b):
        return {"binary_b64": base64.b64encode(b).decode()}

    deep_arr = '{"type":"HOSTILE-deep1","data":{"x":' + "[" * 100 + "]" * 100 + "}}"
    deep_obj = '{"type":"HOSTILE-deep2","data":' + '{"a":' * 70 + "1" + "}" * 70 + "}"
    many_nums = '{"type":"HOSTILE-tok1","data":{"x":[' + ",".join(["1"] * 9000) + "]}}"
    many_strs = '{"type":"HOSTILE-tok2","data":{"x":[' + ",".join(['"a"'] * 9000) + "]}}"
    return [
        (text(""), "empty"),
        (text('{"type":"HOSTILE-j1","data":'), "invalid_json"),
        (text('{"type":"HOSTILE-j2" "data":{}}'), "invalid_json"),
        (text("HOSTILE-j3 is not json"), "invalid_json"),
        (text("{'type':'HOSTILE-j4'}"), "invalid_json"),
        (text('{"type":"HOSTILE-j5","data":{}}}'), "invalid_json"),
        (raw(b'{"type":"HOSTILE-u1","data":{"x":"\xff\xfe"}}'), "invalid_utf8"),
        (raw(b'{"type":"HOSTILE-u2","data":{"x":"\xc0\xaf"}}'), "invalid_utf8"),
        (raw(b'{"type":"HOSTILE-u3","data":{"x":"\xed\xa0\x80"}}'), "invalid_utf8"),
        (text('{"type":"progress","data":{"value":"HOSTILE-f1","max":20,"prompt_id":"hp-f1","node":"3"}}'),
         "bad_field"),
        (text('{"type":"status","data":{"status":"HOSTILE-f2"}}'), "bad_field"),
        (text('{"type":"executing","data":{"node":11,"prompt_id":"HOSTILE-f3"}}'), "bad_field"),
        (text('{"type":"execution_start","data":["HOSTILE-f4"]}'), "bad_field"),
        (text('{"type":"status","data":{"status":{"exec_info":{"queue_remaining":"HOSTILE-f5"}}}}'), "bad_field"),
        (text('{"type":"executed","data":{"node":"9","output":"HOSTILE-f6","prompt_id":"hp-f6"}}'), "bad_field"),
        (text('{"type":"execution_start","data":{"prompt_id":16,"m":"HOSTILE-f7"}}'), "bad_field"),
        (text('{"type":"execution_start","data":{"prompt_id":"a\\u0000HOSTILE-f8"}}'), "bad_field"),
        (text('{"type":"executing","data":{"node":"4\\u0000x","prompt_id":"HOSTILE-f9"}}'), "bad_field"),
        (text('{"type":"execution_success","m":"HOSTILE-f10"}'), "bad_field"),
        (text('{"data":{"m":"HOSTILE-t1"}}'), "missing_type"),
        (text('{"type":20,"data":{"m":"HOSTILE-t2"}}'), "missing_type"),
        (text('{"type":"","data":{"m":"HOSTILE-t3"}}'), "missing_type"),
        (text('{"type":null,"data":"HOSTILE-t4"}'), "missing_type"),
        (text('["HOSTILE-o1"]'), "not_object"),
        (text('"HOSTILE-o2"'), "not_object"),
        (text(deep_arr), "too_deep"),
        (text(deep_obj), "too_deep"),
        (text(many_nums), "too_many_tokens"),
        (text(many_strs), "too_many_tokens"),
        ({"huge_text_bytes": MIB16 + 1}, "too_large"),
        (binary(b"\x00\x00"), "truncated_binary"),
        (binary(struct.pack("!I", 1) + b"\x00"), "truncated_binary"),
        (binary(struct.pack("!II", 4, 4096) + b'{"HOSTILE":1}'), "truncated_binary"),
        (binary(struct.pack("!II", 3, 16) + b"HOSTILE"), "truncated_binary"),
        (binary(struct.pack("!I", 99) + b"HOSTILE-b1"), "unknown_binary_type"),
        (binary(struct.pack("!I", 0xFFFFFFFF) + b"HOSTILE-b2"), "unknown_binary_type"),
        # accepted: NaN/Infinity become null; hostile ids stay inside <p>/<i>/
        (text('{"type":"sim.nan","data":{"a":NaN,"b":Infinity,"c":-Infinity,"m":"NANMARK"}}'), None),
        (text('{"type":"sim.ids","data":{"prompt_id":"x/../+/#/$SYS/IDMARK1","m":"IDMARK1"}}'), None),
        (text('{"type":"sim.ids","data":{"prompt_id":"$share/g/#","m":"IDMARK2"}}'), None),
        (text('{"type":"$SYS/#/+/IDMARK3","data":{"m":"IDMARK3"}}'), None),
        (text('{"type":"../../..","data":{"m":"IDMARK4"}}'), None),
    ]


def test_hostile_frames_one_connection_then_normal_run(broker, sim, collector, make_bridge):
    bridge = make_bridge(sim.url, broker.url, extra_args=HEALTH)
    bridge.wait_connected(collector, sim)
    connects = sim.clients()["connects"]
    since = collector.mark()

    frames = hostile_frames()
    # one more: the same oversized frame arriving in 1 MiB continuation frames
    specs = [f for f, _ in frames]
    resp = sim.send(bridge.client_id, specs)
    resp2 = sim.req("POST", "/_sim/send", {"client_id": bridge.client_id, "fragment": 1024 * 1024,
                                           "frames": [{"huge_text_bytes": MIB16 + 1}]})
    assert resp["sent"] == len(specs) and resp2["sent"] == 1, "simulator wrote %r / %r" % (resp, resp2)

    # then a normal run on the same connection
    pid = sim.submit(client_id=bridge.client_id, steps=4, step_ms=10)["prompt_id"]
    collector.wait_for(lambda _m: finished(collector, pid, since), timeout=TERMINAL_WAIT)

    # a fresh bridge starts with every reason at 0 (payloads.md: keys always present)
    expected = {k: 0 for k in REJECT_REASONS}
    for _, reason in frames:
        if reason:
            expected[reason] += 1
    expected["too_large"] += 1
    h = wait_health(collector, lambda o: o["rejected"] == expected, timeout=10)
    last = sorted(healths(collector), key=lambda o: o["seq"])
    got = last[-1]["rejected"] if last else None
    collector.wait_quiet(quiet=0.5, timeout=5)

    problems = []
    if not h:
        problems.append("bridge/health rejected %r, expected %r" % (got, expected))
    clients = sim.clients()
    if clients["connects"] != connects or bridge.client_id not in clients["registry"]:
        problems.append("the WebSocket reconnected (connects %d -> %d, registry %r)"
                        % (connects, clients["connects"], clients["registry"]))
    ups = collector.messages(BASE + "/upstream/state", since)
    if ups:
        problems.append("upstream/state changed: %r" % ups)
    if last and last[-1]["reconnects"]["comfyui"] != 0:
        problems.append("health reconnects %r: the WebSocket must stay up" % last[-1]["reconnects"])
    leaked = [m.topic for m in collector.messages(since=since) if b"HOSTILE" in m.payload or "HOSTILE" in m.topic]
    if leaked:
        problems.append("parts of rejected frames were published on %s" % leaked[:10])
    # accepted frames
    nan = collector.json_messages(BASE + "/event/sim.nan", since)
    if [o.get("data") for m, o in nan] != [{"a": None, "b": None, "c": None, "m": "NANMARK"}]:
        problems.append("NaN/Infinity frame: expected one event/sim.nan with nulls, got %r" % nan)
    for raw_id, mark in (("x/../+/#/$SYS/IDMARK1", "IDMARK1"), ("$share/g/#", "IDMARK2")):
        ms = collector.json_messages(ptopic(raw_id) + "/event/sim.ids", since)
        if [(o.get("prompt_id"), (o.get("data") or {}).get("m")) for m, o in ms] != [(raw_id, mark)]:
            problems.append("id %r: expected one event on %s/event/sim.ids with the raw id, got %r; topics "
                            "with the mark: %r" % (raw_id, ptopic(raw_id), ms,
                                                   [m.topic for m in collector.messages(since=since)
                                                    if mark.encode() in m.payload]))
    for raw_type, mark in (("$SYS/#/+/IDMARK3", "IDMARK3"), ("../../..", "IDMARK4")):
        ms = collector.json_messages("%s/event/%s" % (BASE, sanitize(raw_type)), since)
        if [(o.get("type"), (o.get("data") or {}).get("m")) for m, o in ms] != [(raw_type, mark)]:
            problems.append("type %r: expected one event on %s/event/%s, got %r" % (raw_type, BASE,
                                                                                   sanitize(raw_type), ms))
    for m in collector.messages(since=since):
        levels = m.topic.split("/")
        if not m.topic.startswith(BASE + "/") or "" in levels or any(c in m.topic for c in "+#\x00") \
                or any(lv.startswith("$") for lv in levels) or ".." in levels:
            problems.append("topic escapes or is unsafe: %r" % m.topic)
    # the normal run came through intact
    problems += finish_problems(collector, broker, pid, "execution_success", ("live",), since)
    got_lc = lifecycle_counts(collector, pid, since)
    if got_lc != FULL_RUN:
        problems.append("normal run: lifecycle events %r, expected %r" % (got_lc, FULL_RUN))
    prog = [(o.get("data") or {}).get("value") for m, o in events(collector, pid, "progress", since)]
    if sorted(prog) != [1, 2, 3, 4]:
        problems.append("normal run: progress values %r, expected 1..4" % prog)
    assert not problems, "hostile frames:\n  %s%s" % ("\n  ".join(problems), bridge.context())
    common_checks(collector, bridge)


def test_health_published_every_interval_while_idle(broker, sim, collector, make_bridge):
    """bridge/health every --health-interval seconds, also when nothing
    happens (the other tests here read their counters from it)."""
    bridge = make_bridge(sim.url, broker.url, extra_args=HEALTH)
    bridge.wait_connected(collector, sim)
    t0 = time.time()
    got = collector.wait_for(lambda ms: len([m for m in ms if m.topic == BASE + "/bridge/health"]) >= 3
                             and ms, timeout=6)
    hs = collector.messages(BASE + "/bridge/health")
    assert got, ("with --health-interval 1 expected 3 bridge/health messages within 6 s of connecting, got %d "
                 "after %.1f s%s" % (len(hs), time.time() - t0, bridge.context()))
    common_checks(collector, bridge)


# --------------------------------------------------------------------------
# liveness (contract §4.4)


def test_hung_comfyui_detected_by_ping(broker, sim, collector, make_bridge):
    """SIGSTOP: the socket stays open, nothing answers, no pong. The one
    slow test here (~30 s): ping after 20 s idle, dead 10 s later."""
    import signal as sig
    bridge = make_bridge(sim.url, broker.url)
    bridge.wait_connected(collector, sim)
    # a frame right before the hang, so the idle time starts now
    mark = collector.mark()
    sim.req("POST", "/_sim/status")
    assert collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/event/status"], timeout=5,
                              since=mark), "no status frame reached the broker"
    since = collector.mark()
    t0 = time.monotonic()
    sim.signal(sig.SIGSTOP)
    try:
        off = collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/upstream/state"
                                             and m.payload == b"offline"], timeout=45, since=since)
        elapsed = time.monotonic() - t0
    finally:
        sim.signal(sig.SIGCONT)
    assert off, "upstream/state stayed online for 45 s with a hung ComfyUI%s" % bridge.context()
    assert 19 <= elapsed <= 36, ("upstream/state went offline %.1f s after the hang; expected after the "
                                 "20 s ping plus up to 10 s for the pong%s" % (elapsed, bridge.context()))
    # once the server answers again, the bridge is back and streams its prompts
    on = collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/upstream/state"
                                        and m.payload == b"online" and m.index > off[0].index],
                            timeout=30, since=since)
    assert on, "no upstream/state online after SIGCONT%s" % bridge.context()
    harness.wait_until(lambda: sim.has_client(bridge.client_id), 10)
    mark = collector.mark()
    pid = sim.submit(client_id=bridge.client_id, steps=2, step_ms=10)["prompt_id"]
    collector.wait_for(lambda _m: finished(collector, pid, mark), timeout=TERMINAL_WAIT)
    problems = finish_problems(collector, broker, pid, "execution_success", ("live",), mark)
    if lifecycle_counts(collector, pid, mark) != FULL_RUN:
        problems.append("after the hang: lifecycle events %r, expected %r"
                        % (lifecycle_counts(collector, pid, mark), FULL_RUN))
    assert not problems, "after the hang:\n  %s\nsim clients: %r%s" % (
        "\n  ".join(problems), sim.clients(), bridge.context())
    common_checks(collector, bridge)


class SilentListener:
    """Accepts TCP on a port and never says a word; keeps every accepted
    socket open until close()."""

    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.accepted = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted.append(conn)

    def first_bytes(self):
        """What each accepted peer sent so far (read without blocking long)."""
        out = []
        for c in self.accepted:
            c.settimeout(0.2)
            try:
                out.append(c.recv(4096, socket.MSG_PEEK))
            except OSError:
                out.append(b"")
        return out

    def stop_listening(self):
        """Closes the listener; accepted connections stay open (and silent)."""
        self.stopping.set()
        self.thread.join(2)
        self.sock.close()

    def close(self):
        self.stop_listening()
        for c in self.accepted:
            c.close()


def test_comfyui_that_never_answers_the_upgrade(broker, make_sim, collector, make_bridge):
    port = harness.free_port()
    fake = SilentListener(port)
    try:
        bridge = make_bridge("http://127.0.0.1:%d" % port, broker.url)
        assert harness.wait_until(lambda: fake.accepted, 10), "bridge never connected to the silent port"
        up = collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/upstream/state"
                                            and m.payload == b"online"], timeout=1)
        assert not up, "upstream/state online although nothing answered the upgrade"
        sent = harness.wait_until(lambda: [b for b in fake.first_bytes() if b.startswith(b"GET ")
                                           and b"/ws?clientId=" in b and b"Upgrade: websocket" in b], 5)
        assert sent, "no WebSocket upgrade request reached the silent port: %r" % fake.first_bytes()
        # the hung connection stays open; the real server takes the port
        fake.stop_listening()
        sim = make_sim(port=port)
        bridge.wait_connected(collector, sim, timeout=30)
    finally:
        fake.close()
    mark = collector.mark()
    pid = sim.submit(client_id=bridge.client_id, steps=2, step_ms=10)["prompt_id"]
    collector.wait_for(lambda _m: finished(collector, pid, mark), timeout=TERMINAL_WAIT)
    problems = finish_problems(collector, broker, pid, "execution_success", ("live",), mark)
    assert not problems, "after a silent ComfyUI:\n  %s%s" % ("\n  ".join(problems), bridge.context())
    common_checks(collector, bridge)


def test_broker_that_never_sends_connack(make_broker, sim, make_collector, make_bridge):
    port = harness.free_port()
    fake = SilentListener(port)
    try:
        bridge = make_bridge(sim.url, "mqtt://127.0.0.1:%d" % port, extra_args=["--mqtt-keepalive", "5"])
        assert harness.wait_until(lambda: fake.accepted, 10), "bridge never connected to the silent port"
        assert bridge.alive(), "bridge exited%s" % bridge.context()
        # an MQTT CONNECT packet (type 1) that will never get its CONNACK
        sent = harness.wait_until(lambda: [b for b in fake.first_bytes() if b[:1] == b"\x10"], 5)
        assert sent, "no MQTT CONNECT reached the silent port: %r" % fake.first_bytes()
        fake.stop_listening()
        broker = make_broker(port=port)
        col = make_collector(broker.port)
        bridge.wait_connected(col, sim, timeout=30)
    finally:
        fake.close()
    common_checks(col, bridge)


# --------------------------------------------------------------------------
# the reconnect race (protocol.md §1.4)


def test_reconnect_after_drop_still_receives_targeted_frames(broker, sim, collector, make_bridge):
    bridge = make_bridge(sim.url, broker.url)
    bridge.wait_connected(collector, sim)
    for round_ in range(3):
        connects = sim.clients()["connects"]
        since = collector.mark()
        sim.drop(bridge.client_id)
        back = harness.wait_until(lambda: sim.clients()["connects"] > connects and sim.has_client(bridge.client_id),
                                  15)
        assert back, "round %d: bridge did not reconnect after /_sim/drop: %r%s" % (
            round_, sim.clients(), bridge.context())
        pid = sim.submit(client_id=bridge.client_id, steps=3, step_ms=10)["prompt_id"]
        collector.wait_for(lambda _m: finished(collector, pid, since), timeout=TERMINAL_WAIT)
        collector.wait_quiet(quiet=0.3, timeout=3)
        problems = finish_problems(collector, broker, pid, "execution_success", ("live",), since)
        got = lifecycle_counts(collector, pid, since)
        if got != FULL_RUN:
            problems.append("lifecycle events %r, expected %r (targeted frames lost?)" % (got, FULL_RUN))
        prog = sorted((o.get("data") or {}).get("value") for m, o in events(collector, pid, "progress", since))
        if prog != [1, 2, 3]:
            problems.append("progress values %r, expected [1, 2, 3]" % prog)
        socks = [s for s in sim.clients()["sockets"] if s["client_id"] == bridge.client_id]
        if len(socks) != 1 or not socks[0]["registered"]:
            problems.append("simulator sockets for our id: %r (want exactly one, registered)" % socks)
        assert not problems, "round %d after /_sim/drop:\n  %s%s" % (round_, "\n  ".join(problems), bridge.context())
    common_checks(collector, bridge)


def test_orphaned_socket_is_detected_and_replaced(broker, sim, collector, make_bridge):
    """protocol.md §1.4: the race can leave the bridge's socket open but
    unregistered, so ComfyUI sends it nothing, not even broadcasts. With
    --upstream-watchdog 1, a silent second makes the bridge compare /queue
    and /history with what it heard; a prompt that ran meanwhile proves the
    socket deaf, the bridge reconnects, and the prompt is still reported
    exactly once."""
    bridge = make_bridge(sim.url, broker.url, extra_args=("--upstream-watchdog", "1"))
    bridge.wait_connected(collector, sim)
    connects = sim.clients()["connects"]
    since = collector.mark()
    assert sim.req("POST", "/_sim/orphan", {"client_id": bridge.client_id})["orphaned"], sim.clients()
    pid = sim.submit(client_id=bridge.client_id, steps=3, step_ms=10)["prompt_id"]
    back = harness.wait_until(lambda: sim.clients()["connects"] > connects and sim.has_client(bridge.client_id),
                              20)
    assert back, "the orphaned bridge did not reconnect: %r%s" % (sim.clients(), bridge.context())
    collector.wait_for(lambda _m: finished(collector, pid, since), timeout=TERMINAL_WAIT)
    collector.wait_quiet(quiet=0.5, timeout=5)
    problems = finish_problems(collector, broker, pid, "execution_success", ("live", "poll", "history"), since)
    assert not problems, "\n  ".join(problems) + bridge.context()
    assert "looks orphaned" in bridge.stderr_tail(400), bridge.context()
    # the new socket is registered and hears broadcasts again
    pid2 = sim.submit(client_id=bridge.client_id, steps=3, step_ms=10)["prompt_id"]
    collector.wait_for(lambda _m: finished(collector, pid2, since), timeout=TERMINAL_WAIT)
    common_checks(collector, bridge)


# --------------------------------------------------------------------------
# a broker's maximum packet (issue 16 item 1)


@pytest.mark.parametrize("max_packet", [None, "2048"])
def test_mqtt311_oversize_message_does_not_stop_delivery(max_packet, tmp_path, procs, sim, make_collector,
                                                        make_bridge):
    """A 3.1.1 broker with max_packet_size 2048 drops the connection of a
    client that sends more; a prompt whose execution_error carries 6 kB used
    to make the bridge resend it after every reconnect, for ever, so no
    later completion arrived. With --mqtt-max-packet what does not fit is
    dropped before it leaves; without it, the message the broker keeps
    dropping the link for is dropped as poison. Either way the next prompt's
    completion arrives, and what was dropped is counted."""
    broker = procs.add(harness.Broker(str(tmp_path / "broker"), extra_conf=["max_packet_size 2048"])).start()
    col = make_collector(broker.port)
    args = ["--mqtt-protocol", "3.1.1", "--health-interval", "1"]
    if max_packet:
        args += ["--mqtt-max-packet", max_packet]
    bridge = make_bridge(sim.url, broker.url, extra_args=args)
    bridge.wait_connected(col, sim)
    body = {"prompt": harness.default_workflow(), "client_id": bridge.client_id,
            "extra_data": {"sim": {"outcome": "error", "steps": 1, "step_ms": 10, "error_message": "x" * 6000}}}
    p1 = sim.req("POST", "/prompt", body)["prompt_id"]
    time.sleep(1.0)
    p2 = sim.submit(client_id=bridge.client_id, steps=1, step_ms=10)["prompt_id"]
    got = col.wait_for(lambda ms: completions(col, p2), timeout=30)
    problems = []
    if not got:
        problems.append("the next prompt's completion never arrived")
    # the oversize messages are dropped (by the link, or by the engine
    # when they do not fit the known maximum packet) and counted
    health = col.wait_for(lambda ms: [o for m, o in col.json_messages(BASE + "/bridge/health")
                                      if o["dropped"]["critical"] > 0], timeout=10)
    if not health:
        problems.append("bridge/health never counted the dropped critical messages")
    assert not problems, "\n  ".join(problems) + bridge.context()
    assert bridge.alive(), "bridge exited%s" % bridge.context()
