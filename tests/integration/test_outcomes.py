"""How prompts end and in which order their events come, against the
simulator and a real mosquitto: cancelled prompts, one clock, the order
queued -> start -> the rest, --print of every outcome, and the
upstream/state of a start with ComfyUI up (contract §3.1-§3.3, §4.2, §5)."""

import time
import uuid

import pytest

import harness
from harness import BASE, sanitize

OTHER = "sim-browser"


def pid():
    return "p-" + uuid.uuid4().hex[:12]


def prompt_events(collector, prompt_id, since=0):
    """(type, envelope) of every event of one prompt, in arrival order."""
    glob = "%s/prompt/%s/event/*" % (BASE, sanitize(prompt_id))
    return [(obj.get("type"), obj) for _m, obj in collector.json_messages(glob, since)]


def last_json(collector, topic_suffix, prompt_id=None, since=0):
    topic = "%s/%s" % (BASE, topic_suffix) if prompt_id is None else \
        "%s/prompt/%s/%s" % (BASE, sanitize(prompt_id), topic_suffix)
    got = collector.json_messages(topic, since)
    return got[-1][1] if got else None


def completion_of(collector, prompt_id, since=0):
    for _m, obj in collector.json_messages(BASE + "/completion", since):
        if obj.get("prompt_id") == prompt_id:
            return obj
    return None


def wait_terminal(collector, prompt_id, timeout=10, since=0):
    def done():
        return [t for t, _ in prompt_events(collector, prompt_id, since) if t in harness.TERMINAL_TYPES]
    return harness.wait_until(done, timeout)


def hold_queue(sim):
    """A running prompt of another client that holds the queue until
    released, so that prompts queued behind it stay pending."""
    runner = pid()
    sim.submit(client_id=OTHER, prompt_id=runner, hold=True, steps=1)
    harness.wait_until(lambda: runner in (sim.req("GET", "/_sim/state").get("holding") or []), 10)
    return runner


def assert_cancelled(collector, bridge, prompt_id):
    kinds = wait_terminal(collector, prompt_id)
    assert kinds == ["cancelled"], "prompt %s removed from the queue ended with %r, expected cancelled%s\n%s" % (
        prompt_id, kinds, bridge.context(), collector.dump("%s/prompt/%s/*" % (BASE, sanitize(prompt_id))))
    ok = harness.wait_until(lambda: completion_of(collector, prompt_id), 5)
    assert ok and ok.get("event_type") == "cancelled", "completion %r" % ok
    st = last_json(collector, "state", prompt_id)
    assert st and st.get("status") == "cancelled", "state %r" % st
    assert not [t for t, _ in prompt_events(collector, prompt_id) if t == "lost"]


# --------------------------------------------------------------------------
# cancelled


def test_pending_prompt_deleted_is_cancelled(sim, collector, bridge):
    runner = hold_queue(sim)
    victim, keep = pid(), pid()
    sim.submit(client_id=OTHER, prompt_id=victim, steps=1)
    sim.submit(client_id=OTHER, prompt_id=keep, steps=1)
    seen = harness.wait_until(lambda: "queued" in [t for t, _ in prompt_events(collector, victim)], 10)
    assert seen, "no queued event for %s%s" % (victim, bridge.context())
    sim.req("POST", "/queue", {"delete": [victim]})
    assert_cancelled(collector, bridge, victim)
    sim.release(runner)
    assert wait_terminal(collector, keep, 15) == ["execution_success"], bridge.context()
    assert wait_terminal(collector, runner, 5) == ["execution_success"], bridge.context()
    harness.assert_all_valid(collector, bridge=bridge)


def test_queue_clear_cancels_every_pending_prompt(sim, collector, bridge):
    runner = hold_queue(sim)
    victims = [pid() for _ in range(3)]
    for v in victims:
        sim.submit(client_id=OTHER, prompt_id=v, steps=1)
    seen = harness.wait_until(
        lambda: all("queued" in [t for t, _ in prompt_events(collector, v)] for v in victims), 10)
    assert seen, "not every prompt was announced queued%s" % bridge.context()
    sim.req("POST", "/queue", {"clear": True})
    for v in victims:
        assert_cancelled(collector, bridge, v)
    sim.release(runner)
    assert wait_terminal(collector, runner, 10) == ["execution_success"], bridge.context()
    harness.assert_all_valid(collector, bridge=bridge)


# --------------------------------------------------------------------------
# one clock


def history_times(sim, prompt_id):
    entry = sim.history(prompt_id).get(prompt_id) or {}
    msgs = (entry.get("status") or {}).get("messages") or []
    ts = {name: data.get("timestamp") for name, data in msgs if isinstance(data, dict)}
    end = [ts[k] for k in ("execution_success", "execution_error", "execution_interrupted") if k in ts]
    return ts.get("execution_start"), end[0] if end else None


def test_foreign_prompts_take_comfyui_times_and_duration(sim, collector, bridge):
    """Prompts of another client are learned from /queue and /history: their
    start and end are history's timestamps, and the duration is history's
    (an interrupt included)."""
    ids = {pid(): outcome for outcome in ("success", "error", "interrupt")}
    for p, outcome in ids.items():
        sim.submit(client_id=OTHER, prompt_id=p, outcome=outcome, steps=4, step_ms=15)
    for p in ids:
        assert wait_terminal(collector, p, 15), "no terminal event for %s%s" % (p, bridge.context())
    for p in ids:
        state = last_json(collector, "state", p)
        start, end = history_times(sim, p)
        assert (state["started_at"], state["finished_at"]) == (start, end), \
            "state %r, history says start %r end %r" % (state, start, end)
        assert state["duration_ms"] == end - start, "duration %r, history's %d" % (state["duration_ms"], end - start)
        assert state["queued_at"] <= state["started_at"]
    harness.assert_all_valid(collector, bridge=bridge)


# --------------------------------------------------------------------------
# order


def order_problems(collector, prompt_id):
    types = [t for t, _ in prompt_events(collector, prompt_id)]
    if types[:2] != ["queued", "execution_start"]:
        return ["%s: events begin %r, expected queued then execution_start" % (prompt_id, types[:4])]
    if types.count("queued") != 1:
        return ["%s: %d queued events" % (prompt_id, types.count("queued"))]
    return []


def test_every_prompt_begins_with_queued_then_start(sim, collector, bridge):
    """Ours, another client's and a client-less prompt (whose first live
    frame is a broadcast progress_state, and whose execution_start goes to
    nobody)."""
    ours, foreign, clientless = pid(), pid(), pid()
    sim.submit(client_id=bridge.client_id, prompt_id=ours, steps=3)
    sim.submit(client_id=OTHER, prompt_id=foreign, steps=3)
    sim.submit(prompt_id=clientless, steps=3)
    for p in (ours, foreign, clientless):
        assert wait_terminal(collector, p, 15) == ["execution_success"], bridge.context()
    collector.wait_quiet(0.3)
    problems = sum((order_problems(collector, p) for p in (ours, foreign, clientless)), [])
    assert not problems, "\n".join(problems) + bridge.context()
    live = [t for t, _ in prompt_events(collector, clientless)]
    assert "progress_state" in live or "progress" in live, "client-less prompt streamed nothing live: %r" % live
    harness.assert_all_valid(collector, bridge=bridge)


# --------------------------------------------------------------------------
# --print


def test_print_tells_outcomes_learned_from_history(sim, broker, collector, make_bridge):
    bridge = make_bridge(sim.url, broker.url, extra_args=["--print"])
    bridge.wait_connected(collector, sim)
    failed, stopped, ok = pid(), pid(), pid()
    sim.submit(client_id=OTHER, prompt_id=failed, outcome="error", steps=2)
    sim.submit(client_id=OTHER, prompt_id=stopped, outcome="interrupt", steps=4)
    sim.submit(client_id=OTHER, prompt_id=ok, steps=2)
    for p in (failed, stopped, ok):
        assert wait_terminal(collector, p, 15), bridge.context()
    want = ["[ERROR] Prompt %s, Node 3 (KSampler)" % failed,
            "[INTERRUPTED] Prompt %s, Node 3 (KSampler)" % stopped]
    lines = harness.wait_until(
        lambda: (lambda ls: ls if all(w in ls for w in want) else None)(bridge.stdout_text().splitlines()), 5)
    out = bridge.stdout_text()
    assert lines, "--print lacks %r:\n%s" % ([w for w in want if w not in out.splitlines()], out[-3000:])
    assert any(line.startswith("[SUCCESS] Prompt %s (" % ok) for line in lines), out[-3000:]
    # the traceback as ComfyUI wrote it, under "  Traceback:" (two more spaces)
    entry = sim.history(failed)[failed]
    err = [d for name, d in entry["status"]["messages"] if name == "execution_error"][0]
    at = lines.index(want[0])
    assert "  Traceback:" in lines[at:], out[-3000:]
    tb_at = lines.index("  Traceback:", at)
    expected = ["  " + line for frame in err["traceback"] for line in frame.split("\n") if line]
    assert expected and expected[0].startswith("    "), "the simulator sent no indented traceback: %r" % err
    assert lines[tb_at + 1:tb_at + 1 + len(expected)] == expected, \
        "traceback printed as %r, expected %r" % (lines[tb_at + 1:tb_at + 1 + len(expected)], expected)
    harness.assert_all_valid(collector, bridge=bridge)


# --------------------------------------------------------------------------
# upstream/state


def test_start_with_comfyui_up_publishes_no_offline(broker, sim, collector, make_bridge):
    """upstream/state goes offline only when the link is down: neither the
    first start nor a restart with ComfyUI up says offline first."""
    first = make_bridge(sim.url, broker.url)
    first.wait_connected(collector, sim)
    collector.wait_quiet(0.3)
    ups = [m.payload for m in collector.messages(BASE + "/upstream/state")]
    assert ups == [b"online"], "first start: upstream/state %r with ComfyUI up%s" % (ups, first.context())
    rc, _ = first.stop()
    assert rc == 0, first.context()
    since = collector.mark()
    second = make_bridge(sim.url, broker.url)
    second.wait_connected(collector, sim)
    collector.wait_quiet(0.5)
    ups = [m.payload for m in collector.messages(BASE + "/upstream/state", since)]
    assert ups == [b"online"], "restart: upstream/state %r with ComfyUI up%s" % (ups, second.context())
    harness.assert_all_valid(collector, bridge=second)


# --------------------------------------------------------------------------
# the bridge's own restart (contract §4.2a)


def test_kill9_mid_run_then_restart_publishes_the_end(sim, broker, collector, make_bridge):
    """A prompt running when the bridge is killed finishes while it is
    down: the next run publishes its end from history, once, and does not
    publish its queued or start again."""
    first = make_bridge(sim.url, broker.url)
    first.wait_connected(collector, sim)
    runner, waiting = pid(), pid()
    sim.submit(client_id=OTHER, prompt_id=runner, hold=True, steps=1)
    sim.submit(client_id=OTHER, prompt_id=waiting, steps=1)
    running = harness.wait_until(
        lambda: (last_json(collector, "state", runner) or {}).get("status") == "running"
        and (last_json(collector, "state", waiting) or {}).get("status") == "queued", 10)
    assert running, "states never showed running / queued%s" % first.context()
    first.kill9()
    sim.release(runner)
    done = harness.wait_until(lambda: sim.history(waiting).get(waiting), 10)
    assert done, "the simulator never finished the prompts"
    since = collector.mark()
    second = make_bridge(sim.url, broker.url)
    second.wait_connected(collector, sim)
    for p in (runner, waiting):
        kinds = wait_terminal(collector, p, 10, since)
        assert kinds == ["execution_success"], "%s after the restart: %r%s" % (p, kinds, second.context())
        # completion follows the terminal event, its state and current
        assert harness.wait_until(lambda: completion_of(collector, p, since), 10), "no completion for %s" % p
        assert not [t for t, _ in prompt_events(collector, p, since) if t == "queued"], \
            "%s: queued published again" % p
        st = last_json(collector, "state", p)
        assert st["status"] == "success" and st["source"] == "history", st
    collector.wait_quiet(0.5)
    for p in (runner, waiting):
        kinds = [t for t, _ in prompt_events(collector, p) if t in harness.TERMINAL_TYPES]
        assert kinds == ["execution_success"], "%s: terminal events %r over both runs" % (p, kinds)
        starts = [t for t, _ in prompt_events(collector, p) if t == "execution_start"]
        assert len(starts) == 1, "%s: %d execution_start over both runs" % (p, len(starts))
    harness.assert_all_valid(collector, bridge=second)


DOWN_EVENT = {"success": "execution_success", "error": "execution_error", "interrupt": "execution_interrupted"}
DOWN_STATUS = {"success": "success", "error": "error", "interrupt": "interrupted"}


@pytest.mark.parametrize("sim_args, n_down", [
    ([], 3),
    (["--history-fill", "300", "--ignore-max-items"], 3),
    (["--history-fill", "300"], 300),
], ids=["honours-max-items", "ignores-max-items", "more-than-a-page"])
def test_stop_prompts_run_start_publishes_each_once_in_order(broker, make_sim, collector, make_bridge, sim_args,
                                                             n_down):
    """Prompts that ran while the bridge was stopped (successes, errors,
    interrupts) get queued, start, terminal, state and completion from
    history once each, in finishing order; the one published before the stop
    is not published again. Also with a server that lists its whole history
    whatever max_items says, and with more prompts than one history page
    holds behind an old history (read in pages from the oldest entry)."""
    sim = make_sim(extra_args=sim_args, persist=False)
    first = make_bridge(sim.url, broker.url)
    first.wait_connected(collector, sim)
    before = pid()
    sim.submit(client_id=OTHER, prompt_id=before, steps=1)
    assert wait_terminal(collector, before, 10) == ["execution_success"], first.context()
    # the cursor follows the terminal event, and the baseline's may come first
    harness.wait_until(lambda: (last_json(collector, "bridge/cursor") or {}).get("prompt_id") == before, 5)
    cursor = last_json(collector, "bridge/cursor")
    assert cursor and cursor.get("prompt_id") == before, "bridge/cursor %r%s" % (cursor, first.context())
    rc, _ = first.stop()
    assert rc == 0, first.context()
    down = [pid() for _ in range(n_down)]
    outcomes = {p: ("success", "error", "interrupt")[i % 3] for i, p in enumerate(down)}
    for p in down:
        sim.submit(client_id=OTHER, prompt_id=p, outcome=outcomes[p], steps=1, step_ms=1)
    assert harness.wait_until(lambda: sim.history(down[-1]).get(down[-1]), 30), "the simulator never finished"
    since = collector.mark()
    second = make_bridge(sim.url, broker.url)
    second.wait_connected(collector, sim)
    kinds = wait_terminal(collector, down[-1], 20, since)
    assert kinds == [DOWN_EVENT[outcomes[down[-1]]]], "%s after the restart: %r%s" % (down[-1], kinds,
                                                                                     second.context())
    collector.wait_quiet(0.5)
    for p in down:
        types = [t for t, _ in prompt_events(collector, p)]
        assert types == ["queued", "execution_start", DOWN_EVENT[outcomes[p]]], "%s: events %r over both runs" % (
            p, types)
        st = last_json(collector, "state", p)
        assert st["status"] == DOWN_STATUS[outcomes[p]] and st["source"] == "history", st
    comps = [o.get("prompt_id") for _m, o in collector.json_messages(BASE + "/completion", since)]
    assert comps == down, "completions after the restart %r, finishing order %r" % (comps[:8], down[:8])
    terminals = [o.get("prompt_id") for _m, o in collector.json_messages(BASE + "/prompt/*/event/*", since)
                 if o.get("type") in harness.TERMINAL_TYPES]
    assert terminals == down, "terminal events in order %r, finishing order %r" % (terminals[:8], down[:8])
    assert not prompt_events(collector, before, since), "%s published again%s" % (before, second.context())
    cursor = last_json(collector, "bridge/cursor")
    assert cursor and cursor.get("prompt_id") == down[-1], "bridge/cursor %r after the catch-up" % cursor
    harness.assert_all_valid(collector, bridge=second)


def test_first_start_with_long_history_replays_nothing_and_is_quick(broker, make_sim, collector, make_bridge):
    """A first start (nothing remembered) against 10,000 old history entries
    publishes none of them, and within 2 s is connected and has read its
    history baseline (the cursor it publishes then)."""
    sim = make_sim(extra_args=["--history-fill", "10000", "--ignore-max-items"])
    t0 = time.monotonic()
    bridge = make_bridge(sim.url, broker.url)
    bridge.wait_connected(collector, sim, timeout=2)
    connected = time.monotonic() - t0
    cursor = harness.wait_until(lambda: last_json(collector, "bridge/cursor"), max(0.0, t0 + 2 - time.monotonic()))
    took = time.monotonic() - t0
    assert cursor and took < 2, "no bridge/cursor (history baseline) within 2 s: %.2f s%s" % (took, bridge.context())
    collector.wait_quiet(0.5)
    replayed = collector.messages(BASE + "/prompt/*") + collector.messages(BASE + "/completion")
    assert not replayed, "old history replayed: %r" % [m.topic for m in replayed[:5]]
    print("first start with 10000 history entries: connected in %.3f s, baseline read in %.3f s" % (connected, took))
    harness.assert_all_valid(collector, bridge=bridge)
