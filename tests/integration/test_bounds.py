"""Counts past the bridge's first prompt table (1,024 prompts), against the
simulator and a real mosquitto: with MQTT 3.1.1 every retained state is
cleared when --state-ttl passes, in the run that published it and in the
next one; a /history answer that ignores max_items (10,000 entries) finishes
no prompt twice. (That a batch of more than 1,024 pending prompts gets one
queued event each, the engine's unit tests show: the simulator serves a
queue that long too slowly for a test.)"""

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
