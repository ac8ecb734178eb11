"""Counts past the bridge's first prompt table (1,024 prompts), against the
simulator and a real mosquitto: with MQTT 3.1.1 every retained state is
cleared when --state-ttl passes, in the run that published it and in the
next one. (That a batch of more than 1,024 pending prompts gets one queued
event each, and that a history answer ignoring max_items finishes no prompt
twice, the engine's unit tests show: the simulator serves a queue that long
too slowly for a test.)"""

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
