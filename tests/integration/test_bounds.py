"""Counts past the bridge's first prompt table (1,024 prompts), against the
simulator and a real mosquitto: with MQTT 3.1.1 every retained state is
cleared when --state-ttl passes, in the run that published it and in the
next one; a /history answer that ignores max_items (10,000 entries) finishes
no prompt twice; a batch of more than 1,024 pending prompts gets one queued
event each."""

import json
import time
import uuid

import harness
from harness import BASE

BATCH = 3000  # states: the table (1,024) and 1,024 read back are not enough


def finish_batch(sim, client_id, n):
    """n prompts start and succeed on the bridge's socket (live frames)."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    now = int(time.time() * 1000)
    for k in range(0, n, 100):
        frames = []
        for pid in ids[k:k + 100]:
            for kind in ("execution_start", "execution_success"):
                frames.append(json.dumps({"type": kind, "data": {"prompt_id": pid, "timestamp": now}}))
        sim.send(client_id, frames)
    return ids


def retained_states(port):
    """The prompt ids with a non-empty retained state on the broker."""
    c = harness.Collector(port, topic=BASE + "/prompt/+/state").start()
    try:
        time.sleep(2.0)  # retained copies arrive right after SUBACK
        return {m.topic for m in c.messages() if m.retain and m.payload}
    finally:
        c.stop()


def wait_completions(collector, n, since, bridge, timeout=120):
    done = harness.wait_until(lambda: len(collector.messages(BASE + "/completion", since)) >= n, timeout,
                              interval=0.2)
    got = len(collector.messages(BASE + "/completion", since))
    assert done, "%d of %d completions%s" % (got, n, bridge.context())


def test_mqtt311_clears_every_state_past_the_table(broker, make_sim, collector, make_bridge):
    ttl = 6
    args = ["--mqtt-protocol", "3.1.1", "--state-ttl", str(ttl)]
    client_id = "c2m-test-bounds"
    sim = make_sim()
    first = make_bridge(sim.url, broker.url, extra_args=args, client_id=client_id)
    first.wait_connected(collector, sim)

    # one run: every state goes when its TTL passes
    mark = collector.mark()
    finish_batch(sim, client_id, BATCH)
    wait_completions(collector, BATCH, mark, first)
    left = harness.wait_until(lambda: not retained_states(broker.port), ttl + 20, interval=1.0)
    assert left, "%d retained states %d s after their TTL%s" % (
        len(retained_states(broker.port)), ttl, first.context())

    # the next run clears every state the first left behind
    mark = collector.mark()
    finish_batch(sim, client_id, BATCH)
    wait_completions(collector, BATCH, mark, first)
    first.kill9()  # its TTL timers die with it
    assert len(retained_states(broker.port)) == BATCH
    second = make_bridge(sim.url, broker.url, extra_args=args, client_id=client_id)
    second.wait_connected(collector)
    left = harness.wait_until(lambda: not retained_states(broker.port), ttl + 20, interval=1.0)
    assert left, "%d states of the first run still retained %d s after their TTL%s" % (
        len(retained_states(broker.port)), ttl, second.context())


def test_history_ignoring_max_items_finishes_each_prompt_once(broker, make_sim, collector, make_bridge):
    sim = make_sim(extra_args=["--history-fill", "10000", "--ignore-max-items"])
    bridge = make_bridge(sim.url, broker.url)
    bridge.wait_connected(collector, sim)
    time.sleep(2.0)  # the first history list: 10,000 old entries
    mark = collector.mark()
    ids = []
    for _ in range(4):
        # foreign prompts: each ends with a queue that shrank, a history read
        ids.append(sim.submit(client_id="someone-else", steps=1, step_ms=0)["prompt_id"])
        harness.wait_until(lambda: sim.history(ids[-1]), 20, interval=0.1)
        time.sleep(1.5)
    wait_completions(collector, len(ids), mark, bridge, timeout=20)
    time.sleep(2.0)
    done = [m.json()["prompt_id"] for m in collector.messages(BASE + "/completion", mark)]
    assert sorted(done) == sorted(ids), "%d completions for %d prompts (%r...)%s" % (
        len(done), len(ids), done[:3], bridge.context())


def test_batch_past_the_table_is_queued_once(broker, make_sim, collector, make_bridge):
    """1,100 pending prompts (past the table's first size, 256) and a running one,
    listed by four /queue polls: one queued event and one state each; the
    running one is never evicted, so its end is its one terminal."""
    sim = make_sim()
    bridge = make_bridge(sim.url, broker.url)
    bridge.wait_connected(collector, sim)
    mark = collector.mark()
    running = "run-" + str(uuid.uuid4())
    pending = ["pend-%04d-%s" % (i, uuid.uuid4()) for i in range(1100)]
    extra = {"client_id": "someone-else"}
    sim.req("POST", "/_sim/queue", {"running": [[0, running, {}, extra, []]],
                                    "pending": [[i + 1, pid, {}, extra, []] for i, pid in enumerate(pending)]})
    for _ in range(4):
        reads = sim.req("GET", "/_sim/state?history=count")["queue_reads"]
        sim.req("POST", "/_sim/status")  # a status frame: the bridge reads /queue again
        polled = harness.wait_until(
            lambda: sim.req("GET", "/_sim/state?history=count")["queue_reads"] > reads, 15, interval=0.1)
        assert polled, "no /queue poll after a status frame%s" % bridge.context()
        harness.wait_until(lambda: len(collector.messages(BASE + "/prompt/*/event/queued", mark)) >= 1101, 15,
                           interval=0.2)
    collector.wait_quiet(1.0, timeout=15)
    queued = [m.topic.split("/")[-3] for m in collector.messages(BASE + "/prompt/*/event/queued", mark)]
    assert len(queued) == 1101 and len(set(queued)) == 1101, "%d queued events for %d prompts%s%s" % (
        len(queued), len(set(queued)), collector.dump(since=mark, limit=5), bridge.context())
    states = [m.topic.split("/")[-2] for m in collector.messages(BASE + "/prompt/*/state", mark)]
    pending_states = [pid for pid in states if pid != running]
    assert sorted(pending_states) == sorted(pending), "%d states for %d pending prompts%s" % (
        len(pending_states), len(pending), bridge.context())

    # the running prompt ends: one terminal, no second queued
    sim.req("POST", "/_sim/queue", {"running": [], "pending": []})
    sim.req("POST", "/_sim/history", {"prompt_id": running, "entry": {
        "prompt": [0, running, {}, extra, []], "outputs": {},
        "status": {"status_str": "success", "completed": True, "messages": []}, "meta": {}}})
    sim.req("POST", "/_sim/status")
    done = harness.wait_until(lambda: any(m.json()["prompt_id"] == running
                                          for m in collector.messages(BASE + "/completion", mark)), 20, interval=0.2)
    assert done, "the running prompt never completed%s" % bridge.context()
    again = collector.messages(BASE + "/prompt/%s/event/queued" % running, mark)
    assert len(again) == 1, "%d queued events for the running prompt" % len(again)
