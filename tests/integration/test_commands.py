"""Commands over MQTT (contract §6, --commands): each verb reaches the
simulator as ComfyUI's own API call, a prompt submitted over MQTT streams in
full detail, every answer route (MQTT 5 Response Topic + Correlation Data,
payload fields, the default topic), ComfyUI's 400 bodies passed through,
repeats answered from the first result and never run twice, every bad input
answered ok:false and counted in bridge/health with nothing reaching the
simulator, MQTT 3.1.1, and no commands at all without --commands."""

import json
import subprocess
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import harness
from harness import BASE

CMD = BASE + "/command/"
RESPONSE = CMD + "response"


class Sender:
    """A command client: publishes at QoS 1 and waits for the PUBACK."""

    def __init__(self, port, protocol=mqtt.MQTTv5):
        self.protocol = protocol
        self.c = mqtt.Client(client_id="sender-" + uuid.uuid4().hex[:8], protocol=protocol)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def send(self, verb, payload, response_topic=None, correlation=None):
        props = None
        if response_topic is not None or correlation is not None:
            props = Properties(PacketTypes.PUBLISH)
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        kw = {"properties": props} if self.protocol == mqtt.MQTTv5 else {}
        self.c.publish(CMD + verb, raw, qos=1, **kw).wait_for_publish(10)

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def answers(col, topic=RESPONSE, since=0):
    return [(m, m.json()) for m in col.messages(topic, since)]


def wait_answer(col, pred, topic=RESPONSE, since=0, timeout=15, bridge=None):
    found = []

    def check(_):
        found[:] = [(m, a) for m, a in answers(col, topic, since) if pred(a)]
        return found

    col.wait_for(check, timeout=timeout)
    assert found, "no answer on %s matching the condition\n%s%s" % (
        topic, col.dump(topic, since), bridge.context() if bridge else "")
    return found[0]


def by_corr(corr):
    return lambda a: a.get("correlation") == corr


def posts(sim):
    return sim.req("GET", "/_sim/state?history=count")["posts"]


def start(make_bridge, sim, broker, collector, extra=()):
    b = make_bridge(sim.url, broker.url, extra_args=["--commands", "--health-interval", "1"] + list(extra))
    b.wait_connected(collector, sim)
    return b


def wait_subscribed(sender, col, bridge):
    """The bridge subscribes on connect; a probe (an unknown verb) answered
    shows the subscription is in place."""
    corr = "probe-" + uuid.uuid4().hex[:6]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        mark = col.mark()
        sender.send("probe", {"correlation": corr})
        if col.wait_for(lambda ms: any(m.topic == RESPONSE for m in ms), timeout=1, since=mark):
            return
    raise AssertionError("the bridge never answered a command" + bridge.context())


def health_commands(col, since):
    """The newest bridge/health commands member published after since."""
    ms = [m for m in col.messages(BASE + "/bridge/health", since) if m.payload]
    return ms[-1].json().get("commands") if ms else None


def wait_health(col, pred, since, bridge):
    got = col.wait_for(lambda ms: (health_commands(col, since) is not None
                                   and pred(health_commands(col, since))), timeout=10, since=since)
    assert got, "health never showed the expected commands counters: %s%s" % (
        health_commands(col, since), bridge.context())
    return health_commands(col, since)


def test_every_verb_reaches_comfyui(broker, sim, collector, make_bridge):
    bridge = start(make_bridge, sim, broker, collector)
    s = Sender(broker.port)
    try:
        wait_subscribed(s, collector, bridge)
        # two prompts held, so the queue has something to cancel and clear
        held = [sim.submit(hold=True, steps=1)["prompt_id"] for _ in range(3)]
        before = len(posts(sim))
        s.send("cancel", {"prompt_ids": [held[2]], "correlation": "v-cancel"})
        a = wait_answer(collector, by_corr("v-cancel"), bridge=bridge)[1]
        assert a == {"v": 1, "command": "cancel", "ok": True, "correlation": "v-cancel"}
        assert held[2] not in sim.req("GET", "/_sim/state")["pending"]
        s.send("clear", {"correlation": "v-clear"})
        wait_answer(collector, by_corr("v-clear"), bridge=bridge)
        st = sim.req("GET", "/_sim/state")
        assert st["pending"] == [], st
        s.send("interrupt", {"prompt_id": held[0], "correlation": "v-int"})
        assert wait_answer(collector, by_corr("v-int"), bridge=bridge)[1]["ok"] is True
        s.send("free", {"correlation": "v-free"})
        wait_answer(collector, by_corr("v-free"), bridge=bridge)
        s.send("free", {"free_memory": True, "correlation": "v-free2"})
        wait_answer(collector, by_corr("v-free2"), bridge=bridge)
        st = sim.req("GET", "/_sim/state")
        assert st["interrupts"][-1]["prompt_id"] == held[0]
        assert {k: v for k, v in st["frees"][-2].items() if k in ("unload_models", "free_memory")} == {
            "unload_models": True, "free_memory": True}
        assert {k: v for k, v in st["frees"][-1].items() if k in ("unload_models", "free_memory")} == {
            "free_memory": True}
        sent = [(p["path"], p["body"]) for p in st["posts"][before:]]
        assert sent == [("/queue", {"delete": [held[2]]}), ("/queue", {"clear": True}),
                        ("/interrupt", {"prompt_id": held[0]}),
                        ("/free", {"unload_models": True, "free_memory": True}),
                        ("/free", {"free_memory": True})], sent
        for pid in held[:2]:
            sim.release(pid)
        harness.assert_all_valid(collector, bridge=bridge)
    finally:
        s.stop()


def test_prompt_streams_and_answer_routes(broker, sim, collector, make_bridge):
    bridge = start(make_bridge, sim, broker, collector)
    s = Sender(broker.port)
    try:
        wait_subscribed(s, collector, bridge)
        # 1: the MQTT 5 Response Topic with its Correlation Data
        wf = {"prompt": harness.default_workflow(),
              "extra_data": {"sim": {"steps": 3, "step_ms": 10}}}
        mark = collector.mark()
        s.send("prompt", wf, response_topic="app/answers/1", correlation=b"\x00\x01bin")
        m, a = wait_answer(collector, lambda a: True, topic="app/answers/1", since=mark, bridge=bridge)
        assert m.props.get("CorrelationData") == b"\x00\x01bin"
        assert a["ok"] is True and a["correlation"] is None and a["node_errors"] == {}, a
        pid, number = a["prompt_id"], a["number"]
        post = posts(sim)[-1]
        assert post["path"] == "/prompt" and post["body"]["client_id"] == bridge.client_id
        assert post["body"]["prompt"] == wf["prompt"]
        assert isinstance(number, (int, float))
        assert sim.req("GET", "/_sim/state")["number"] >= number
        # the bridge's client id submitted it: execution events stream
        got = collector.wait_for(lambda ms: any(
            x.topic == "%s/prompt/%s/event/execution_success" % (BASE, pid) for x in ms), timeout=20, since=mark)
        assert got, collector.dump(BASE + "/prompt/*", mark) + bridge.context()
        types = {x.topic.rsplit("/", 1)[1] for x in collector.messages(BASE + "/prompt/%s/event/*" % pid, mark)}
        assert {"execution_start", "executing", "progress"} <= types, types
        assert not answers(collector, RESPONSE, mark), "answered on the default topic too"
        # a text Correlation Data comes back as a string too
        mark = collector.mark()
        s.send("clear", {}, response_topic="app/answers/2", correlation=b"job-7")
        m, a = wait_answer(collector, lambda a: True, topic="app/answers/2", since=mark, bridge=bridge)
        assert a["correlation"] == "job-7" and m.props.get("CorrelationData") == b"job-7"
        # 2: the payload's response_topic and correlation
        mark = collector.mark()
        s.send("clear", {"response_topic": "app/answers/3", "correlation": "p-3"})
        m, a = wait_answer(collector, lambda a: True, topic="app/answers/3", since=mark, bridge=bridge)
        assert a == {"v": 1, "command": "clear", "ok": True, "correlation": "p-3"}
        # 3: the default topic, not retained, QoS 1, JSON
        mark = collector.mark()
        s.send("clear", {"correlation": "d-1"})
        m, a = wait_answer(collector, by_corr("d-1"), since=mark, bridge=bridge)
        assert not m.retain and m.qos == 1 and m.props.get("ContentType") == "application/json"
        harness.assert_all_valid(collector, bridge=bridge)
    finally:
        s.stop()


def test_comfyui_400_passed_through(broker, make_sim, collector, make_bridge):
    sim = make_sim(server_version="0.3.64")
    bridge = start(make_bridge, sim, broker, collector)
    s = Sender(broker.port)
    try:
        wait_subscribed(s, collector, bridge)
        # invalid_prompt: a node without class_type
        bad = {"1": {"inputs": {}}}
        s.send("prompt", {"prompt": bad, "correlation": "e-1"})
        a = wait_answer(collector, by_corr("e-1"), bridge=bridge)[1]
        direct = _post_raw(sim, {"prompt": bad})
        assert a["ok"] is False and a["error"] == direct["error"] and a["node_errors"] == direct["node_errors"]
        assert a["error"]["type"] == "invalid_prompt"
        # prompt_outputs_failed_validation with node_errors
        wf = harness.default_workflow()
        wf["3"]["inputs"]["steps"] = 0
        s.send("prompt", {"prompt": wf, "correlation": "e-2"})
        a = wait_answer(collector, by_corr("e-2"), bridge=bridge)[1]
        direct = _post_raw(sim, {"prompt": wf})
        assert a["error"]["type"] == "prompt_outputs_failed_validation"
        assert a["error"] == direct["error"] and a["node_errors"] == direct["node_errors"], (a, direct)
        assert a["node_errors"]["3"]["class_type"] == "KSampler"
        wait_health(collector, lambda c: c["failed"]["comfyui_rejected"] == 2, 0, bridge)
        harness.assert_all_valid(collector, bridge=bridge)
    finally:
        s.stop()


def _post_raw(sim, body):
    """ComfyUI's own 400 body for body (urllib raises on 400)."""
    import urllib.request
    req = urllib.request.Request(sim.url + "/prompt", data=json.dumps(body).encode(), method="POST")
    try:
        urllib.request.urlopen(req, timeout=10)
    except urllib.error.HTTPError as e:
        assert e.code == 400
        return json.loads(e.read())
    raise AssertionError("the simulator accepted %r" % body)


def test_duplicates_run_once(broker, sim, collector, make_bridge):
    bridge = start(make_bridge, sim, broker, collector)
    s = Sender(broker.port)
    try:
        wait_subscribed(s, collector, bridge)
        before = len(posts(sim))
        payload = {"prompt": harness.default_workflow(), "correlation": "once-1",
                   "extra_data": {"sim": {"steps": 1, "step_ms": 5}}}
        s.send("prompt", payload)
        first = wait_answer(collector, by_corr("once-1"), bridge=bridge)[1]
        s.send("prompt", payload)
        got = collector.wait_for(lambda ms: len(answers(collector)) and len(
            [1 for _, a in answers(collector) if a.get("correlation") == "once-1"]) >= 2, timeout=10)
        assert got, collector.dump(RESPONSE) + bridge.context()
        both = [a for _, a in answers(collector) if a.get("correlation") == "once-1"]
        assert first.get("duplicate") is None
        assert both[1] == dict(first, duplicate=True), both
        assert [p["path"] for p in posts(sim)[before:]] == ["/prompt"]
        # the same button twice without a correlation runs twice
        mark = collector.mark()
        s.send("free", {})
        s.send("free", {})
        got = collector.wait_for(lambda ms: len(answers(collector, since=mark)) >= 2, timeout=10)
        assert got and all("duplicate" not in a for _, a in answers(collector, since=mark))
        assert [p["path"] for p in posts(sim)[before:]] == ["/prompt", "/free", "/free"]
        wait_health(collector, lambda c: c["duplicates"] == 1, 0, bridge)
    finally:
        s.stop()


BAD_INPUTS = [
    # (verb, raw payload, error type, part of the message)
    ("prompt", b"{not json", "bad_json", "not a JSON object"),
    ("prompt", b"[1, 2]", "bad_json", "not a JSON object"),
    ("prompt", b"{}", "bad_field", '"prompt" is missing'),
    ("prompt", b'{"prompt": "x"}', "bad_field", '"prompt" must be an object'),
    ("cancel", b'{"prompt_ids": []}', "bad_field", "non-empty array"),
    ("free", b'{"unload_model": true}', "bad_field", 'unknown field "unload_model"'),
    ("reboot", b"{}", "unknown_verb", 'unknown verb "reboot"'),
    ("clear", b'{"response_topic": "comfyui/test/queue"}', "bad_response_topic", "the bridge's topics"),
    # another instance's topics
    ("clear", b'{"response_topic": "comfyui/other/state"}', "bad_response_topic", "another instance"),
    ("clear", b'{"response_topic": "a/+/b"}', "bad_response_topic", "wildcard"),
    ("clear", b'{"response_topic": "$SYS/x"}', "bad_response_topic", "starts with $"),
    ("prompt", b'{"prompt": {}, "pad": "' + b"x" * 2048 + b'"}', "too_large", "--command-max-bytes (1024)"),
]


def test_bad_input_never_reaches_comfyui(broker, sim, collector, make_bridge):
    bridge = start(make_bridge, sim, broker, collector, extra=["--command-max-bytes", "1K"])
    s = Sender(broker.port)
    try:
        wait_subscribed(s, collector, bridge)
        before = posts(sim)
        mark = collector.mark()
        for i, (verb, raw, _, _) in enumerate(BAD_INPUTS):
            s.send(verb, raw)
        got = collector.wait_for(lambda ms: len(answers(collector, since=mark)) >= len(BAD_INPUTS), timeout=15)
        got_answers = [a for _, a in answers(collector, since=mark)]
        assert got, got_answers
        for (verb, _, etype, part), a in zip(BAD_INPUTS, got_answers):
            assert a["ok"] is False and a["command"] == verb and a["error"]["type"] == etype, (verb, a)
            assert part in a["error"]["message"], (part, a)
        # a bad Response Topic property: answered on the default topic
        mark = collector.mark()
        s.send("clear", {"correlation": "rt"}, response_topic=BASE + "/command/clear")
        a = wait_answer(collector, by_corr("rt"), since=mark, bridge=bridge)[1]
        assert a["error"]["type"] == "bad_response_topic"
        assert posts(sim) == before, "a bad command reached ComfyUI"
        want = {"bad_json": 2, "bad_field": 4, "unknown_verb": 2, "bad_response_topic": 4, "too_large": 1}
        c = wait_health(collector, lambda c: all(c["failed"][k] >= v for k, v in want.items()), 0, bridge)
        # the probe is an unknown verb too: at least one, here
        assert c["failed"]["bad_json"] == 2 and c["failed"]["too_large"] == 1, c
        assert bridge.alive()
        harness.assert_all_valid(collector, bridge=bridge)
    finally:
        s.stop()


def test_comfyui_down_and_5xx(broker, sim, collector, make_bridge):
    bridge = start(make_bridge, sim, broker, collector)
    s = Sender(broker.port)
    try:
        wait_subscribed(s, collector, bridge)
        sim.req("POST", "/_sim/fail_posts", {"status": 503, "count": 1})
        s.send("clear", {"correlation": "x-503"})
        a = wait_answer(collector, by_corr("x-503"), bridge=bridge)[1]
        assert a["ok"] is False and a["error"]["type"] == "comfyui_error", a
        assert a["error"]["message"] == "ComfyUI answered HTTP 503"
        assert a["error"]["details"].startswith("503 Service Unavailable"), a
        # not kept: the same command again runs
        s.send("clear", {"correlation": "x-503"})
        got = collector.wait_for(lambda ms: len([1 for _, a in answers(collector)
                                                 if a.get("correlation") == "x-503"]) >= 2, timeout=10)
        assert got
        assert [a for _, a in answers(collector) if a.get("correlation") == "x-503"][1]["ok"] is True
        sim.stop()
        s.send("free", {"correlation": "x-down"})
        a = wait_answer(collector, by_corr("x-down"), timeout=40, bridge=bridge)[1]
        assert a["ok"] is False and a["error"]["type"] == "comfyui_down", a
        assert sim.url.split("//")[1].split("/")[0] in a["error"]["message"], a
        wait_health(collector, lambda c: c["failed"]["comfyui_down"] == 1 and c["failed"]["comfyui_error"] == 1,
                    0, bridge)
        assert bridge.alive()
    finally:
        s.stop()


def test_mqtt_311_with_payload_fields(broker, sim, collector, make_bridge):
    bridge = start(make_bridge, sim, broker, collector, extra=["--mqtt-protocol", "3.1.1"])
    s = Sender(broker.port, protocol=mqtt.MQTTv311)
    try:
        wait_subscribed(s, collector, bridge)
        mark = collector.mark()
        s.send("free", {"response_topic": "app/v3", "correlation": "v3"})
        m, a = wait_answer(collector, lambda a: True, topic="app/v3", since=mark, bridge=bridge)
        assert a == {"v": 1, "command": "free", "ok": True, "correlation": "v3"}
        assert posts(sim)[-1]["path"] == "/free"
    finally:
        s.stop()


def test_commands_off_by_default(broker, sim, collector, make_bridge):
    bridge = make_bridge(sim.url, broker.url, extra_args=["--health-interval", "1"])
    bridge.wait_connected(collector, sim)
    s = Sender(broker.port)
    try:
        mark = collector.mark()
        # sent after a health message: the bridge has been connected a while
        collector.wait_for(lambda ms: any(m.topic == BASE + "/bridge/health" for m in ms), timeout=10,
                           since=mark)
        s.send("free", {"correlation": "off"})
        s.send("clear", {"correlation": "off2"})
        # two more health messages: time enough for an answer
        collector.wait_for(lambda ms: len([m for m in ms if m.topic == BASE + "/bridge/health"]) >= 3,
                           timeout=10, since=mark)
        assert answers(collector, since=mark) == []
        assert posts(sim) == []
        assert "commands" not in collector.last(BASE + "/bridge/health").json()
    finally:
        s.stop()


class HeaderSim(harness.Sim):
    """The simulator behind an authenticating proxy: every request needs the
    header (else 401); the test's own requests send it."""

    def __init__(self, workdir, header):
        super().__init__(workdir, extra_args=["--require-header", header])
        self.header = header

    def req(self, method, path, body=None, timeout=60):
        import urllib.request
        data = None if body is None else json.dumps(body).encode()
        r = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            r.add_header("Content-Type", "application/json")
        name, _, value = self.header.partition(":")
        r.add_header(name.strip(), value.strip())
        with urllib.request.urlopen(r, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None


def test_headers_apply_and_credentials_stay_out(broker, collector, make_bridge, procs, tmp_path):
    secret = "Bearer s3cret-token-42"
    sim = procs.add(HeaderSim(str(tmp_path / "hsim"), "Authorization: " + secret)).start()
    bridge = start(make_bridge, sim, broker, collector, extra=["--comfyui-header", "Authorization: " + secret])
    s = Sender(broker.port)
    try:
        wait_subscribed(s, collector, bridge)
        s.send("free", {"correlation": "h-1"})
        a = wait_answer(collector, by_corr("h-1"), bridge=bridge)[1]
        assert a["ok"] is True, a  # a missing header would be ComfyUI's 401
        assert sim.req("GET", "/_sim/clients")["unauthorized"] == 0
        sim.stop()
        s.send("free", {"correlation": "h-2"})
        a = wait_answer(collector, by_corr("h-2"), timeout=40, bridge=bridge)[1]
        assert a["error"]["type"] == "comfyui_down", a
        leaked = [m for m in collector.messages() if b"s3cret" in m.payload]
        assert not leaked, leaked
        assert "s3cret" not in open(bridge.stderr_path).read()
    finally:
        s.stop()


def test_busy_beyond_16_pending(broker, make_sim, collector, make_bridge):
    """A slow ComfyUI: 16 commands wait for it, the 17th is refused at once
    (busy, not kept) and the 16 are answered when ComfyUI is done."""
    sim = make_sim(extra_args=["--http-delay-ms", "300"])
    bridge = start(make_bridge, sim, broker, collector)
    s = Sender(broker.port)
    try:
        wait_subscribed(s, collector, bridge)
        mark = collector.mark()
        for i in range(17):
            s.send("interrupt", {"prompt_id": "nope-%d" % i, "correlation": "b-%d" % i})
        got = collector.wait_for(lambda ms: len(answers(collector, since=mark)) >= 17, timeout=30)
        got_answers = {a["correlation"]: a for _, a in answers(collector, since=mark)}
        assert got, got_answers
        busy = [c for c, a in got_answers.items() if not a["ok"]]
        assert busy == ["b-16"] and got_answers["b-16"]["error"]["type"] == "busy", got_answers
        # the busy one was the first answered: nothing waited for it
        assert answers(collector, since=mark)[0][1]["correlation"] == "b-16"
        assert len([p for p in posts(sim) if p["path"] == "/interrupt"]) == 16
        wait_health(collector, lambda c: c["failed"]["busy"] == 1 and c["ok"] == 16 and c["pending"] == 0,
                    0, bridge)
    finally:
        s.stop()


def test_repeat_while_in_flight_waits_for_the_first(broker, make_sim, collector, make_bridge):
    sim = make_sim(extra_args=["--http-delay-ms", "500"])
    bridge = start(make_bridge, sim, broker, collector)
    s = Sender(broker.port)
    try:
        wait_subscribed(s, collector, bridge)
        before = len(posts(sim))
        mark = collector.mark()
        s.send("clear", {"correlation": "w-1"})
        s.send("clear", {"correlation": "w-1"})
        got = collector.wait_for(lambda ms: len(answers(collector, since=mark)) >= 2, timeout=15)
        both = [a for _, a in answers(collector, since=mark)]
        assert got, both
        assert both == [{"v": 1, "command": "clear", "ok": True, "correlation": "w-1"},
                        {"v": 1, "command": "clear", "ok": True, "correlation": "w-1", "duplicate": True}], both
        assert [p["path"] for p in posts(sim)[before:]] == ["/queue"]
    finally:
        s.stop()


def test_retained_command_is_not_run(broker, sim, collector, make_bridge):
    """A command left retained would run again at every reconnect: it is
    refused with `retained` (the broker delivers it at subscribe), and a
    plain command after it still runs."""
    s = Sender(broker.port)
    try:
        s.c.publish(CMD + "clear", json.dumps({"correlation": "kept"}).encode(), qos=1,
                    retain=True).wait_for_publish(10)
        before = posts(sim)
        mark = collector.mark()
        bridge = start(make_bridge, sim, broker, collector)
        a = wait_answer(collector, by_corr("kept"), since=mark, bridge=bridge)[1]
        assert a["ok"] is False and a["error"]["type"] == "retained", a
        assert "retain" in a["error"]["message"] and "clear" in a["error"]["message"], a
        c = wait_health(collector, lambda c: c["failed"]["retained"] >= 1, mark, bridge)
        assert c["failed"]["retained"] == 1, c
        assert posts(sim) == before, "a retained command reached ComfyUI"
        s.send("clear", {"correlation": "live"})
        a = wait_answer(collector, by_corr("live"), since=mark, bridge=bridge)[1]
        assert a["ok"] is True, a
        assert len(posts(sim)) == len(before) + 1
        # retained while the bridge is subscribed: MQTT 5 keeps the flag
        # (Retain As Published), so it is refused too
        s.c.publish(CMD + "interrupt", json.dumps({"correlation": "kept-live"}).encode(), qos=1,
                    retain=True).wait_for_publish(10)
        a = wait_answer(collector, by_corr("kept-live"), since=mark, bridge=bridge)[1]
        assert a["ok"] is False and a["error"]["type"] == "retained", a
        assert len(posts(sim)) == len(before) + 1, "a retained command reached ComfyUI"
        harness.assert_all_valid(collector, bridge=bridge)
    finally:
        for verb in ("clear", "interrupt"):
            s.c.publish(CMD + verb, b"", qos=1, retain=True).wait_for_publish(10)
        s.stop()


def _own_prompt_events(col, pid, since):
    return [(m, m.json()) for m in col.messages(BASE + "/prompt/%s/event/*" % pid, since)]


def test_prompt_queued_event_carries_number_and_client_id(broker, make_sim, collector, make_bridge):
    """A prompt submitted over MQTT is known from ComfyUI's answer: its
    queued event carries the answer's number and the bridge's client id
    and is out before the answer, even though ComfyUI's /queue answers late
    (a slow server: the poll would see the prompt only after the answer,
    or after it started). 1: a held prompt runs ahead, so the answer comes
    before the start frame; 2: an empty queue, the start frame and the
    answer race: the client id is the bridge's either way, the number too
    when the answer came first (source poll)."""
    sim = make_sim(extra_args=["--http-delay-ms", "1500"])
    bridge = start(make_bridge, sim, broker, collector)
    s = Sender(broker.port)
    try:
        wait_subscribed(s, collector, bridge)
        held = sim.submit(hold=True, steps=1)["prompt_id"]
        assert harness.wait_until(lambda: held in sim.req("GET", "/_sim/state")["holding"], 15)
        wf = {"prompt": harness.default_workflow(), "extra_data": {"sim": {"steps": 2, "step_ms": 10}}}
        mark = collector.mark()
        s.send("prompt", dict(wf, correlation="q-1"))
        am, a = wait_answer(collector, by_corr("q-1"), since=mark, timeout=20, bridge=bridge)
        assert a["ok"] is True, a
        pid, number = a["prompt_id"], a["number"]
        queued = collector.messages(BASE + "/prompt/%s/event/queued" % pid, mark)
        assert queued and queued[0].index < am.index, (
            "no queued event before the answer\n" + collector.dump(BASE + "/prompt/*", mark) + bridge.context())
        q = queued[0].json()
        assert q["data"]["number"] == number and q["data"]["client_id"] == bridge.client_id, q
        assert q["source"] == "poll", q
        states = [m for m in collector.messages(BASE + "/prompt/%s/state" % pid, mark) if m.index < am.index]
        assert states and states[-1].json()["status"] == "queued", collector.dump(BASE + "/prompt/*", mark)
        sim.release(held)
        done = collector.wait_for(lambda ms: any(
            x.topic == "%s/prompt/%s/event/execution_success" % (BASE, pid) for x in ms), timeout=20, since=mark)
        assert done, collector.dump(BASE + "/prompt/*", mark) + bridge.context()
        types = [m.topic.rsplit("/", 1)[1] for m, _ in _own_prompt_events(collector, pid, mark)]
        assert types[:2] == ["queued", "execution_start"] and types.count("queued") == 1, types
        # 2: nothing ahead of it
        mark = collector.mark()
        s.send("prompt", dict(wf, correlation="q-2"))
        am, a = wait_answer(collector, by_corr("q-2"), since=mark, timeout=20, bridge=bridge)
        pid2, number2 = a["prompt_id"], a["number"]
        done = collector.wait_for(lambda ms: any(
            x.topic == "%s/prompt/%s/event/execution_success" % (BASE, pid2) for x in ms), timeout=20, since=mark)
        assert done, collector.dump(BASE + "/prompt/*", mark) + bridge.context()
        evs = _own_prompt_events(collector, pid2, mark)
        types = [m.topic.rsplit("/", 1)[1] for m, _ in evs]
        assert types[:2] == ["queued", "execution_start"] and types.count("queued") == 1, types
        q = evs[0][1]
        assert q["data"]["client_id"] == bridge.client_id, q
        if q["source"] == "poll":
            assert q["data"]["number"] == number2, q
        # the terminal, once each
        for p in (pid, pid2):
            assert len(collector.messages(BASE + "/prompt/%s/event/execution_success" % p, 0)) == 1
        harness.assert_all_valid(collector, bridge=bridge)
    finally:
        s.stop()


def test_giant_command_dropped_by_the_broker(broker, sim, collector, make_bridge):
    """With --commands the bridge's MQTT 5 CONNECT names its Maximum Packet
    Size (four times the command limit, at least 1 MiB, plus 64 KiB): the broker drops
    a 3 MiB command instead of sending it, so the bridge never allocates
    it. No answer, nothing counted; the bridge keeps answering."""
    bridge = start(make_bridge, sim, broker, collector, extra=["--command-max-bytes", "1K"])
    s = Sender(broker.port)
    try:
        wait_subscribed(s, collector, bridge)
        before = posts(sim)
        mark = collector.mark()
        s.send("clear", b'{"correlation": "giant", "pad": "' + b"x" * (3 << 20) + b'"}')
        # one publisher's messages arrive in order: the small one's answer
        # comes after the giant one's, had there been one
        s.send("free", {"correlation": "small"})
        a = wait_answer(collector, by_corr("small"), since=mark, bridge=bridge)[1]
        assert a["ok"] is True, a
        got = [a for _, a in answers(collector, since=mark)]
        assert got == [a], "the giant command was answered: %s" % got
        assert [p["path"] for p in posts(sim)[len(before):]] == ["/free"]
        c = wait_health(collector, lambda c: True, collector.mark(), bridge)
        assert c["failed"]["too_large"] == 0, c
        assert bridge.alive()
    finally:
        s.stop()


def test_command_queued_while_stopped_is_not_run(broker, sim, collector, make_bridge):
    """A QoS 1 command published while the bridge is stopped is kept by the
    broker for its MQTT 5 session and sent at the next connect, before the
    SUBACK: it is answered `stale` and never reaches ComfyUI; a live command
    after it runs. Passes only with the core's stale rule (wt-fixa)."""
    extra = ["--mqtt-client-id", "c2m-stale-" + uuid.uuid4().hex[:8]]
    first = start(make_bridge, sim, broker, collector, extra=extra)
    s = Sender(broker.port)
    try:
        wait_subscribed(s, collector, first)
        rc, _ = first.stop()
        assert rc == 0, first.context()
        before = posts(sim)
        mark = collector.mark()
        s.send("clear", {"correlation": "late"})
        second = start(make_bridge, sim, broker, collector, extra=extra)
        wait_subscribed(s, collector, second)
        s.send("free", {"correlation": "live"})
        # the kept one arrived first: its answer (if any) is out by now
        a = wait_answer(collector, by_corr("live"), since=mark, bridge=second)[1]
        assert a["ok"] is True, a
        assert [p["path"] for p in posts(sim)[len(before):]] == ["/free"], (
            "the command kept while the bridge was stopped reached ComfyUI: %s%s"
            % (posts(sim)[len(before):], second.context()))
        late = wait_answer(collector, by_corr("late"), since=mark, bridge=second)[1]
        assert late["ok"] is False and late["error"]["type"] == "stale", late
        assert second.alive()
    finally:
        s.stop()


def test_pending_command_answered_at_shutdown(broker, make_sim, collector, make_bridge):
    """A command still waiting for ComfyUI when the bridge stops is answered
    (bridge_stopping, it may have run) in the final drain, not dropped."""
    sim = make_sim(extra_args=["--http-delay-ms", "5000"])
    bridge = start(make_bridge, sim, broker, collector)
    s = Sender(broker.port)
    try:
        wait_subscribed(s, collector, bridge)
        mark = collector.mark()
        s.send("free", {}, response_topic="app/answers", correlation=b"stop-1")
        wait_health(collector, lambda c: c["pending"] == 1, mark, bridge)
        bridge.stop()
        m, a = wait_answer(collector, lambda a: True, topic="app/answers", since=mark, bridge=bridge)
        assert a["ok"] is False and a["error"]["type"] == "bridge_stopping", a
        assert "may have run" in a["error"]["message"], a
        assert m.props.get("CorrelationData") == b"stop-1", m.props
    finally:
        s.stop()
