"""MQTT 5 properties on every kind of message (contract §3.8, payloads.md
"MQTT 5 properties"): content type, payload format indicator, message
expiry (state = --state-ttl, bridge/health = 3x --health-interval,
progress events 60 s, nothing else), user properties instance / type /
prompt_id; and --mqtt-protocol 3.1.1 against the same broker: the same
topics and payloads, and no properties at all."""

import json
import struct
import time
import uuid

import harness
from harness import BASE, INSTANCE

TRACE_A = "a_normal_txt2img.jsonl"
PID_A = "8c2f6e1a-4b7d-4e3a-9f05-6d1c2b8a7e94"
TRACE_F1 = "f1_previews_with_metadata.jsonl"
PID_F1 = "4e9c1b7a-3d8f-4a2e-9c6b-5f1e8a3d7b40"
STATE_TTL = 4321
HEALTH_INTERVAL = 2
PROGRESS_EXPIRY = 60
PROGRESS_TYPES = {"progress", "progress_state", "progress_text", "crystools.monitor"}
# payload kind -> user property "type" (payloads.md); availability topics
# carry their own name
KIND_TYPE = {"state": "state", "current": "current", "completion": "completion", "queue": "queue",
             "bridge/info": "info", "bridge/health": "health", "bridge/cursor": "cursor"}
# fields that depend on the wall clock or on the run, not on the trace
VOLATILE = {"ts", "seq", "run", "queued_at", "node_started_at", "node_ms"}


def kind_of(topic):
    rest = topic[len(BASE) + 1:].split("/")
    if rest[0] == "prompt" and len(rest) == 4 and rest[2] == "event":
        return "event", rest[3]
    if rest[0] == "prompt" and len(rest) == 3:
        return rest[2], None  # state / preview
    if rest[0] == "event" and len(rest) == 2:
        return "event", rest[1]
    return "/".join(rest), None


def completion_of(col, pid, since):
    def done(ms):
        for m in ms:
            if m.topic == BASE + "/completion":
                try:
                    if m.json().get("prompt_id") == pid:
                        return True
                except ValueError:
                    pass
        return False

    return col.wait_for(done, timeout=20, since=since)


def expiry_ok(got, want):
    # the broker passes on what is left: the second it spent may be gone
    return isinstance(got, int) and want - 1 <= got <= want


def property_problems(m):
    """What is wrong with the MQTT 5 properties of one message."""
    kind, etype = kind_of(m.topic)
    props, up = m.props, m.user_props()
    problems = []
    if up.get("instance") != INSTANCE:
        problems.append("user property instance %r" % up.get("instance"))
    if kind == "preview":
        ct = props.get("ContentType")
        if ct not in ("image/jpeg", "image/png"):
            problems.append("content type %r" % ct)
        if props.get("PayloadFormatIndicator", 0) != 0:
            problems.append("binary image marked as UTF-8 text")
        if up.get("type") != "preview":
            problems.append("user property type %r" % up.get("type"))
        if "MessageExpiryInterval" in props:
            problems.append("unexpected expiry %r" % props["MessageExpiryInterval"])
        return problems
    if m.payload == b"" and m.retain:
        return problems  # clearing a retained topic: no content at all
    text = kind in ("bridge/state", "upstream/state")
    want_ct = "text/plain" if text else "application/json"
    if props.get("ContentType") != want_ct:
        problems.append("content type %r, expected %s" % (props.get("ContentType"), want_ct))
    if props.get("PayloadFormatIndicator") != 1:
        problems.append("payload format indicator %r, expected 1" % props.get("PayloadFormatIndicator"))
    obj = None if text else m.json()
    if kind == "event":
        want_type = obj.get("type")
        want_expiry = PROGRESS_EXPIRY if want_type in PROGRESS_TYPES else None
        want_pid = obj.get("prompt_id")
    elif text:
        want_type, want_expiry, want_pid = kind, None, None
    else:
        want_type = KIND_TYPE.get(kind)
        want_expiry = {"state": STATE_TTL, "bridge/health": 3 * HEALTH_INTERVAL}.get(kind)
        # bridge/cursor names a history entry, not a prompt the message is about
        want_pid = obj.get("prompt_id") if isinstance(obj, dict) and kind != "bridge/cursor" else None
    if want_type is None or up.get("type") != want_type:
        problems.append("user property type %r, expected %r" % (up.get("type"), want_type))
    if up.get("prompt_id") != want_pid:
        problems.append("user property prompt_id %r, expected %r" % (up.get("prompt_id"), want_pid))
    e = props.get("MessageExpiryInterval")
    if want_expiry is None and e is not None:
        problems.append("message expiry %r on a message that must not expire" % e)
    if want_expiry is not None and not expiry_ok(e, want_expiry):
        problems.append("message expiry %r, expected %d" % (e, want_expiry))
    return problems


def run_traces(col, sim, bridge, traces):
    since = col.mark()
    for trace, pid in traces:
        sim.replay(trace, bridge.client_id)
        assert completion_of(col, pid, since), "%s did not complete%s" % (trace, bridge.context())
    col.wait_quiet(quiet=0.7, timeout=8)
    return since


def test_idle_bridge_publishes_health(broker, sim, collector, make_bridge):
    """bridge/health every --health-interval also while nothing happens,
    with expiry 3x the interval."""
    bridge = make_bridge(sim.url, broker.url, extra_args=["--health-interval", str(HEALTH_INTERVAL)])
    bridge.wait_connected(collector, sim)
    got = collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/bridge/health"],
                             timeout=4 * HEALTH_INTERVAL)
    assert got, "no bridge/health within %d s on an idle bridge (--health-interval %d)%s" % (
        4 * HEALTH_INTERVAL, HEALTH_INTERVAL, bridge.context())
    assert expiry_ok(got[0].props.get("MessageExpiryInterval"), 3 * HEALTH_INTERVAL), got[0].props


def test_properties_on_every_message_kind(broker, sim, collector, make_bridge):
    bridge = make_bridge(sim.url, broker.url, extra_args=[
        "--previews", "--state-ttl", str(STATE_TTL), "--health-interval", str(HEALTH_INTERVAL)])
    bridge.wait_connected(collector, sim)
    run_traces(collector, sim, bridge, ((TRACE_A, PID_A), (TRACE_F1, PID_F1)))
    # an event that belongs to no prompt (event/<type>)
    node = b"7"
    sim.send(bridge.client_id, [struct.pack(">II", 3, len(node)) + node + b"hello"])
    assert collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/event/progress_text"], timeout=10)
    assert collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/bridge/health"],
                              timeout=4 * HEALTH_INTERVAL), "no bridge/health%s" % bridge.context()

    seen = {}
    problems = []
    for m in collector.messages(BASE + "/*"):
        kind, etype = kind_of(m.topic)
        seen.setdefault(kind if kind != "event" else "event/" + etype, 0)
        seen[kind if kind != "event" else "event/" + etype] += 1
        for p in property_problems(m):
            problems.append("%s: %s" % (m.topic, p))
    want_kinds = {"bridge/state", "upstream/state", "bridge/info", "bridge/health", "queue", "state", "current",
                  "completion", "preview", "event/execution_start", "event/progress", "event/progress_state",
                  "event/executed", "event/execution_success", "event/status", "event/progress_text"}
    missing = want_kinds - set(seen)
    assert not missing, "kinds never published: %s (seen %s)" % (sorted(missing), sorted(seen))
    assert not problems, "%d problem(s):\n  %s%s" % (len(problems), "\n  ".join(problems[:40]), bridge.context())
    harness.assert_all_valid(collector, bridge=bridge)


def normalize(obj, urls):
    """Drops wall-clock fields and writes the ComfyUI URL as <comfyui>."""
    if isinstance(obj, dict):
        return {k: normalize(v, urls) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [normalize(v, urls) for v in obj]
    if isinstance(obj, str):
        for u in urls:
            obj = obj.replace(u, "<comfyui>")
    return obj


def snapshot(col, since, urls):
    """topic -> list of normalized payloads (JSON parsed, text as is)."""
    out = {}
    for m in col.messages(BASE + "/*", since):
        try:
            v = normalize(m.json(), urls)
        except ValueError:
            v = m.payload
        out.setdefault(m.topic, []).append(v)
    return out


def test_mqtt311_same_payloads_no_properties(broker, make_sim, collector, make_bridge):
    runs = []
    client_id = "c2m-test-" + uuid.uuid4().hex[:12]  # the same in both runs
    for proto in ("5", "3.1.1"):
        sim = make_sim()  # fresh queue and history for each run
        since = collector.mark()
        bridge = make_bridge(sim.url, broker.url, extra_args=["--mqtt-protocol", proto, "--health-interval", "1"],
                             client_id=client_id)
        bridge.wait_connected(collector, sim)
        run_traces(collector, sim, bridge, ((TRACE_A, PID_A),))
        # both runs must reach a health report, whatever their timing
        assert collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/bridge/health"],
                                  timeout=5, since=since), "no bridge/health (%s)%s" % (proto, bridge.context())
        rc, _ = bridge.stop()
        assert rc == 0, "bridge (%s) exited %r%s" % (proto, rc, bridge.context())
        collector.wait_quiet(quiet=0.3, timeout=5)
        runs.append((proto, bridge, sim, since, collector.mark()))

    (_, b5, s5, since5, end5), (_, b3, s3, since3, end3) = runs
    urls = (s5.url, s3.url)
    v5 = {t: ms for t, ms in snapshot(collector, since5, urls).items()}
    v3 = {t: ms for t, ms in snapshot(collector, since3, urls).items()}
    # only what each run published (the 3.1.1 run starts after the first)
    v5 = {t: ms[: len([m for m in collector.messages(t, since5) if m.index < end5])] for t, ms in v5.items()}
    v5 = {t: ms for t, ms in v5.items() if ms}

    problems = []
    if set(v5) != set(v3):
        problems.append("topics only with MQTT 5: %s; only with 3.1.1: %s"
                        % (sorted(set(v5) - set(v3)), sorted(set(v3) - set(v5))))
    for topic in sorted(set(v5) & set(v3)):
        kind, _ = kind_of(topic)
        a, b = v5[topic], v3[topic]
        if kind == "event" or kind == "completion":
            if a != b:  # each published once: the same sequence
                problems.append("%s differs:\n    5:     %s\n    3.1.1: %s" % (topic, a, b))
        elif kind in ("state", "current", "queue"):
            # republished on changes, coalesced by time: compare the end
            if a[-1] != b[-1]:
                problems.append("%s: final payload differs:\n    5:     %s\n    3.1.1: %s" % (topic, a[-1], b[-1]))
        elif kind == "bridge/info":
            x, y = dict(a[-1]), dict(b[-1])
            for d, want in ((x, "5"), (y, "3.1.1")):
                if d.pop("mqtt_protocol", None) != want:
                    problems.append("bridge/info mqtt_protocol must be %s" % want)
                d.pop("started_at", None)
                d.get("options", {}).pop("mqtt_protocol", None)
            if x != y:
                problems.append("bridge/info differs beyond the protocol:\n    %s\n    %s" % (x, y))
        elif kind == "bridge/health":
            if set(a[-1]) != set(b[-1]):
                problems.append("bridge/health keys differ")
        elif kind in ("bridge/state", "upstream/state"):
            if a[-1] != b[-1]:
                problems.append("%s: %r vs %r" % (topic, a[-1], b[-1]))
    with_props = [m for m in collector.messages(BASE + "/*", since3) if m.index < end3 and m.props]
    if with_props:
        problems.append("3.1.1 messages carry properties: %r" % [(m.topic, m.props) for m in with_props[:5]])
    without = [m for m in collector.messages(BASE + "/*", since5)
               if m.index < end5 and m.payload and not m.props.get("ContentType")]
    if without:
        problems.append("MQTT 5 messages without content type: %r" % without[:5])
    assert not problems, "\n  ".join(problems) + b3.context()
    harness.assert_all_valid(collector, bridge=b3)


def test_mqtt311_clears_states_an_earlier_run_left(broker, make_sim, collector, make_bridge):
    """Contract §3.3: with 3.1.1 (no message expiry) a finished prompt's
    retained state is cleared when --state-ttl passes, also when the run
    that published it died before that: the next run reads it back."""
    ttl = 3
    args = ["--mqtt-protocol", "3.1.1", "--state-ttl", str(ttl)]
    client_id = "c2m-test-" + uuid.uuid4().hex[:12]
    state = "%s/prompt/%s/state" % (BASE, harness.sanitize(PID_A))
    sim = make_sim()
    first = make_bridge(sim.url, broker.url, extra_args=args, client_id=client_id)
    first.wait_connected(collector, sim)
    run_traces(collector, sim, first, ((TRACE_A, PID_A),))
    first.kill9()  # its TTL timer dies with it
    left = harness.read_retained(broker.port, state)
    assert left is not None and left.payload, "no retained state after the run%s" % first.context()
    assert json.loads(left.payload)["status"] == "success"

    second = make_bridge(make_sim().url, broker.url, extra_args=args, client_id=client_id)
    second.wait_connected(collector)
    cleared = harness.wait_until(lambda: harness.read_retained(broker.port, state, timeout=0.5) is None,
                                 ttl + 10)
    assert cleared, "the state the first run left is still retained %d s after its TTL%s" % (
        ttl, second.context())



def sys_subscription_count(tmp_path, procs):
    """A broker that reports its subscription count every second, a
    collector of that count (started; the caller stops it) and a function
    giving its latest value, once one has arrived."""
    broker = procs.add(harness.Broker(str(tmp_path / "sysbroker"), extra_conf=["sys_interval 1"]))
    broker.start()
    counts = harness.Collector(broker.port, topic="$SYS/broker/subscriptions/count")
    counts.start()

    def latest():
        with counts.lock:
            return int(counts.msgs[-1].payload) if counts.msgs else None

    if not harness.wait_until(lambda: latest() is not None, 10):
        counts.stop()
        raise AssertionError("no $SYS subscription count")
    return broker, counts, latest


def test_mqtt311_read_back_ends(tmp_path, procs, make_sim, make_bridge):
    """MQTT 3.1.1 has no no-local option: as long as the bridge stays
    subscribed to its own state topics, the broker sends back every state
    it publishes. The read-back of what earlier runs left retained (states
    and the cursor) ends 10 s after the connection: the broker counts two
    subscriptions fewer then, and not before."""
    broker, counts, latest = sys_subscription_count(tmp_path, procs)
    try:
        base = latest()
        bridge = make_bridge(make_sim().url, broker.url, extra_args=["--mqtt-protocol", "3.1.1"])
        assert harness.wait_until(lambda: (latest() or 0) >= base + 2, 10), (
            "the bridge never subscribed (count %s, %s before)%s" % (latest(), base, bridge.context()))
        subscribed = latest()
        t0 = time.monotonic()
        assert harness.wait_until(lambda: latest() == subscribed - 2, 20), (
            "still %s subscriptions 20 s later (%s while reading back)%s" % (latest(), subscribed, bridge.context()))
        # $SYS counts come once a second: the window was at least 10 s
        # minus the second the first count may have lagged
        assert time.monotonic() - t0 >= 8, "the read-back ended after %.1f s" % (time.monotonic() - t0)
        assert bridge.alive()
    finally:
        counts.stop()


def test_mqtt5_read_back_stays(tmp_path, procs, make_sim, make_bridge):
    """With MQTT 5 the read-back subscriptions use no local: nothing the
    bridge publishes comes back, so they stay (a state read late after a
    stall is still read). The broker's count does not drop past the 3.1.1
    window."""
    broker, counts, latest = sys_subscription_count(tmp_path, procs)
    try:
        base = latest()
        bridge = make_bridge(make_sim().url, broker.url)
        assert harness.wait_until(lambda: (latest() or 0) >= base + 2, 10), (
            "the bridge never subscribed (count %s, %s before)%s" % (latest(), base, bridge.context()))
        subscribed = latest()
        # the 3.1.1 window is 10 s; 15 s gives its end 5 counts to show
        dropped = harness.wait_until(lambda: latest() < subscribed, 15)
        assert not dropped, "the subscriptions ended (%s, %s before)%s" % (latest(), subscribed, bridge.context())
        assert bridge.alive()
    finally:
        counts.stop()
