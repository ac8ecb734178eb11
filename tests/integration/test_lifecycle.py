"""The bridge process as a user meets it: availability topics, bridge/info,
secrets, signals and exit codes, the command line, --print, MQTT 5
properties, and starting / reconnecting while the broker or ComfyUI is down
(contract §1, §2, §3.8, §4.4, §5)."""

import os
import re
import signal
import time
import uuid

import pytest

import harness
from harness import BASE, sanitize

TRACE_A = "a_normal_txt2img.jsonl"
PID_A = "8c2f6e1a-4b7d-4e3a-9f05-6d1c2b8a7e94"


def secret():
    return "s3cr3t-xyz-" + uuid.uuid4().hex


def mqtt_id():
    return "c2m-" + uuid.uuid4().hex[:10]


def last_payload(col, topic):
    m = col.last(topic)
    return m.payload if m else None


# --------------------------------------------------------------------------
# availability, info, secrets


def test_bridge_state_online_retained_and_info_without_secret(broker, sim, collector, make_bridge):
    pw = secret()
    env = {"COMFY2MQTT_MQTT_USERNAME": "tester", "COMFY2MQTT_MQTT_PASSWORD": pw}
    bridge = make_bridge(sim.url, broker.url, env=env)
    bridge.wait_connected(collector, sim)

    state = harness.read_retained(broker.port, BASE + "/bridge/state")
    assert state is not None and state.payload == b"online" and state.retain, \
        "retained bridge/state should be online, got %r%s" % (state, bridge.context())

    info_msg = harness.read_retained(broker.port, BASE + "/bridge/info")
    assert info_msg is not None and info_msg.retain, "no retained bridge/info%s" % bridge.context()
    info = info_msg.json()
    errors = harness.schema_errors("bridge-info.schema.json", info)
    assert not errors, "bridge/info invalid: %s\n%r" % (errors, info)
    expected = {"instance": "test", "prefix": "comfyui", "client_id": bridge.client_id,
                "comfyui_url": sim.url, "mqtt_protocol": "5"}
    got = {k: info.get(k) for k in expected}
    assert got == expected, "bridge/info fields %r, expected %r" % (got, expected)

    # The secret must appear nowhere: payloads, logs, --help.
    leaks = [m.topic for m in collector.messages() if pw.encode() in m.payload]
    assert not leaks, "password published on %s" % leaks
    rc, _ = bridge.stop(signal.SIGTERM)
    logs = open(bridge.stderr_path, "rb").read() + open(bridge.stdout_path, "rb").read()
    assert pw.encode() not in logs, "password appears in the bridge's output:\n%s" % bridge.stderr_tail()
    help_run = harness.run_bridge_once(["--help"], env=env)
    assert pw.encode() not in help_run.stdout + help_run.stderr, "password appears in --help output"
    harness.assert_all_valid(collector, bridge=bridge)


def test_password_file_secret_not_in_info(tmp_path, broker, sim, collector, make_bridge):
    pw = secret()
    pw_file = tmp_path / "pw"
    pw_file.write_text(pw + "\n")
    bridge = make_bridge(sim.url, broker.url,
                         extra_args=["--mqtt-username", "tester", "--mqtt-password-file", str(pw_file)])
    bridge.wait_connected(collector, sim)
    info = collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/bridge/info"], timeout=10)
    assert info, "no bridge/info published%s" % bridge.context()
    leaks = [m.topic for m in collector.messages() if pw.encode() in m.payload]
    assert not leaks, "password from --mqtt-password-file published on %s" % leaks
    assert pw not in bridge.stderr_tail(100000), "password from file appears in the logs"
    harness.assert_all_valid(collector, bridge=bridge)


# --------------------------------------------------------------------------
# signals


def test_kill9_makes_broker_publish_offline_will(broker, sim, collector, make_bridge):
    bridge = make_bridge(sim.url, broker.url)
    bridge.wait_connected(collector, sim)
    since = collector.mark()
    bridge.kill9()
    got = collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/bridge/state"], timeout=10,
                             since=since)
    assert got and got[-1].payload == b"offline" and got[-1].retain, \
        "after kill -9 the broker should publish the retained will `offline` on bridge/state, got %r%s" % (
            got, bridge.context())
    retained = harness.read_retained(broker.port, BASE + "/bridge/state")
    assert retained is not None and retained.payload == b"offline", "retained bridge/state is %r" % retained
    harness.assert_all_valid(collector, bridge=bridge)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_signal_publishes_offline_and_exits_0_within_2s(sig, broker, sim, collector, make_bridge):
    mid = mqtt_id()
    bridge = make_bridge(sim.url, broker.url, extra_args=["--mqtt-client-id", mid])
    bridge.wait_connected(collector, sim)
    since = collector.mark()
    rc, elapsed = bridge.stop(sig, timeout=10)
    assert rc == 0 and elapsed <= 2.0, "after %s expected exit 0 within 2 s, got exit %r after %.2f s%s" % (
        sig.name, rc, elapsed, bridge.context())
    got = collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/bridge/state"], timeout=5,
                             since=since)
    assert got and got[-1].payload == b"offline" and got[-1].retain, \
        "expected a retained `offline` on bridge/state after %s, got %r" % (sig.name, got)
    # Published by the bridge itself before a clean DISCONNECT, not by the will.
    clean = harness.wait_until(lambda: ("Client %s disconnected." % mid) in broker.stderr_tail(400), 5)
    assert clean, "broker did not see a clean DISCONNECT from %s:\n%s" % (mid, broker.stderr_tail(30))
    harness.assert_all_valid(collector, bridge=bridge)


def test_signal_with_broker_down_still_exits_0(broker, sim, collector, make_bridge):
    """Contract §4.4: the flush waits for the broker at most 2 s, then the
    bridge exits 0 even though `offline` could not be published."""
    bridge = make_bridge(sim.url, broker.url)
    bridge.wait_connected(collector, sim)
    broker.kill()
    gone = harness.wait_until(lambda: "lost (" in bridge.stderr_tail(400), 10)
    assert gone, "the bridge never noticed the broker going away%s" % bridge.context()
    rc, elapsed = bridge.stop(signal.SIGTERM, timeout=10)
    assert rc == 0 and elapsed <= 3.0, \
        "with the broker down, SIGTERM should end the bridge with exit 0 after at most the 2 s flush, " \
        "got exit %r after %.2f s%s" % (rc, elapsed, bridge.context())


def test_second_signal_exits_at_once(broker, sim, collector, make_bridge):
    bridge = make_bridge(sim.url, broker.url, extra_args=["--print"])
    bridge.wait_connected(collector, sim)
    # Without a broker the first signal's flush may wait up to 2 s for it.
    broker.kill()
    bridge.signal(signal.SIGTERM)
    # Standard signals coalesce: send the second only once the first was handled.
    handled = harness.wait_until(lambda: "Shutting down..." in bridge.stdout_text().splitlines()
                                 or not bridge.alive(), 5)
    assert handled, "no `Shutting down...` line within 5 s of SIGTERM%s" % bridge.context()
    rc, elapsed = bridge.stop(signal.SIGTERM, timeout=5)
    assert rc is not None and elapsed < 0.5, \
        "a second SIGTERM should end the bridge at once; %s after %.2f s%s" % (
            "still running" if rc is None else "exited with %d" % rc, elapsed, bridge.context())


# --------------------------------------------------------------------------
# command line


def test_help_exits_0_and_lists_options():
    r = harness.run_bridge_once(["--help"])
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, "--help exited %d:\n%s%s" % (r.returncode, out, r.stderr.decode(errors="replace"))
    missing = [o for o in ("--comfyui", "--mqtt", "--client-id", "--instance", "--prefix", "--events",
                           "--previews", "--state-ttl", "--print", "--log-level", "--config",
                           "--mqtt-password-file", "--mqtt-protocol", "--tls-ca", "--ha-discovery",
                           "--commands", "--command-max-bytes")
               if o not in out]
    assert not missing, "--help does not list %s:\n%s" % (missing, out)


@pytest.mark.parametrize("args,named", [
    (["--no-such-flag"], "--no-such-flag"),
    (["--state-ttl", "soon"], "--state-ttl"),
    (["--mqtt-protocol", "4"], "--mqtt-protocol"),
    (["--instance", ""], "--instance"),
    (["--comfyui-header", "X-A: 1\r\nX-Injected: 2"], "--comfyui-header"),
    (["--command-max-bytes", "100"], "--command-max-bytes"),
], ids=["unknown", "bad-number", "bad-enum", "empty-instance", "header-crlf", "command-max-bytes"])
def test_bad_flag_exits_64_with_one_line(args, named):
    r = harness.run_bridge_once(args)
    err = r.stderr.decode("utf-8", "replace").strip()
    assert r.returncode == 64, "%s: expected exit 64, got %d; stderr:\n%s" % (args, r.returncode, err)
    assert err and "\n" not in err, "%s: expected a one-line message, got:\n%s" % (args, err)
    assert named in err, "%s: message should name %s: %r" % (args, named, err)


@pytest.mark.parametrize("content", [
    "prefix = comfyui\nthis line has no equals sign\n",
    "# comment\nno_such_option = 1\n",
], ids=["syntax", "unknown-key"])
def test_bad_config_file_exits_78(tmp_path, content):
    path = tmp_path / "bad.conf"
    path.write_text(content)
    r = harness.run_bridge_once(["--config", str(path)])
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 78, "expected exit 78 for a bad config file, got %d; stderr:\n%s" % (r.returncode, err)
    assert "bad.conf" in err, "message should name the config file: %r" % err


def test_endless_config_file_exits_78_at_the_cap():
    t0 = time.monotonic()
    r = harness.run_bridge_once(["--config", "/dev/zero"], timeout=10)
    took = time.monotonic() - t0
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 78, "expected exit 78 for /dev/zero as config file, got %d; stderr:\n%s" % (
        r.returncode, err)
    assert "/dev/zero" in err and "1 MiB" in err, "message should name the file and the cap: %r" % err
    assert took < 5, "reading /dev/zero took %.1f s: the read is not bounded" % took


def test_header_with_line_break_never_echoed():
    secret = "Zebra-S3cr3t-hdr"
    for args, env in ((["--comfyui-header", "Authorization: Bearer %s\nX-Injected: 1" % secret], None),
                      ([], {"COMFY2MQTT_COMFYUI_HEADER": "Authorization: Bearer %s\r\nX-Injected: 1" % secret})):
        r = harness.run_bridge_once(args, env=env)
        out = r.stdout + r.stderr
        assert r.returncode == 64, "expected exit 64 for a header with a line break, got %d: %r" % (r.returncode, out)
        assert b"COMFYUI_HEADER" in out.upper().replace(b"-", b"_"), "message should name the option: %r" % out
        assert secret.encode() not in out, "the header value appears in the output: %r" % out


# --------------------------------------------------------------------------
# --print


def test_print_human_lines_flushed(broker, sim, collector, make_bridge):
    bridge = make_bridge(sim.url, broker.url, extra_args=["--print"])
    bridge.wait_connected(collector, sim)
    sim.replay(TRACE_A, bridge.client_id)
    success = re.compile(r"^\[SUCCESS\] Prompt %s \(\d+ ms\)$" % re.escape(PID_A), re.M)
    expected = [
        "Connecting to ComfyUI WebSocket...",
        "Connected! Listening for events...",
        "[STATUS] Queue remaining: 1",
        "[EXECUTING] Prompt %s, Node 4" % PID_A,
        "[PROGRESS] 1/20 (5.0%)",
        "[PROGRESS] 20/20 (100.0%)",
        "[EXECUTED] Node 9 in prompt %s" % PID_A,
        "  → Produced 1 image(s)",
        "[EXECUTING] Prompt %s completed" % PID_A,
    ]
    # Read while the bridge still runs: lines must be flushed one by one
    # (the trace's `executing` null comes after its success).
    harness.wait_until(lambda: success.search(bridge.stdout_text())
                       and all(e in bridge.stdout_text().splitlines() for e in expected), 15)
    out = bridge.stdout_text()
    assert bridge.alive(), "bridge exited%s" % bridge.context()
    lines = out.splitlines()
    missing = [e for e in expected if e not in lines]
    assert not missing and success.search(out), \
        "--print output (read while running) lacks %s%s:\n%s%s" % (
            missing, "" if success.search(out) else " and the [SUCCESS] line", out[-3000:], bridge.context())
    executed_at = lines.index("[EXECUTED] Node 9 in prompt %s" % PID_A)
    assert lines[executed_at + 1] == "  → Produced 1 image(s)", "image count line must follow [EXECUTED]"
    rc, _ = bridge.stop(signal.SIGTERM)
    assert "Shutting down..." in bridge.stdout_text().splitlines(), "no `Shutting down...` line on SIGTERM"
    harness.assert_all_valid(collector, bridge=bridge)


# --------------------------------------------------------------------------
# MQTT 5 properties


def test_mqtt5_properties_on_event_and_state(broker, sim, collector, make_bridge):
    bridge = make_bridge(sim.url, broker.url)
    bridge.wait_connected(collector, sim)
    since = collector.mark()
    sim.replay(TRACE_A, bridge.client_id)
    ptopic = "%s/prompt/%s" % (BASE, sanitize(PID_A))
    done = collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/completion"], timeout=15, since=since)
    assert done, "no completion for trace a%s" % bridge.context()

    problems = []

    def check(topic, want_type, expiry_max=None):
        ms = collector.messages(topic, since)
        if not ms:
            problems.append("%s: nothing published" % topic)
            return
        m = ms[-1]
        up = m.user_props()
        want = {"instance": "test", "type": want_type, "prompt_id": PID_A}
        if {k: up.get(k) for k in want} != want:
            problems.append("%s: user properties %r, expected %r" % (topic, up, want))
        if m.props.get("ContentType") != "application/json":
            problems.append("%s: content type %r" % (topic, m.props.get("ContentType")))
        if m.props.get("PayloadFormatIndicator") != 1:
            problems.append("%s: payload format indicator %r" % (topic, m.props.get("PayloadFormatIndicator")))
        if expiry_max is not None:
            e = m.props.get("MessageExpiryInterval")
            if not (isinstance(e, int) and 0 < e <= expiry_max):
                problems.append("%s: message expiry %r, expected 1..%d" % (topic, e, expiry_max))

    check(ptopic + "/event/execution_start", "execution_start")
    check(ptopic + "/event/progress", "progress", expiry_max=60)
    check(ptopic + "/state", "state", expiry_max=86400)
    check(BASE + "/completion", "completion")
    st = collector.last(BASE + "/bridge/state")
    if st is None or st.props.get("ContentType") != "text/plain":
        problems.append("bridge/state: content type %r" % (st and st.props.get("ContentType")))
    assert not problems, "MQTT 5 properties:\n  " + "\n  ".join(problems) + bridge.context()
    harness.assert_all_valid(collector, bridge=bridge)


# --------------------------------------------------------------------------
# starting and reconnecting while a peer is down


def test_starts_while_broker_down_then_connects(make_broker, sim, make_collector, make_bridge):
    broker = make_broker(start=False)
    bridge = make_bridge(sim.url, broker.url)
    exited = harness.wait_until(lambda: not bridge.alive(), 1.5)
    assert not exited, "bridge must keep running while the broker is down%s" % bridge.context()
    broker.start()
    col = make_collector(broker.port)
    bridge.wait_connected(col, sim, timeout=30)
    harness.assert_all_valid(col, bridge=bridge)


def test_starts_while_comfyui_down_then_connects(broker, make_sim, collector, make_bridge):
    sim = make_sim(start=False, port=harness.free_port())
    bridge = make_bridge(sim.url, broker.url)
    got = collector.wait_for(lambda ms: last_payload(collector, BASE + "/bridge/state") == b"online"
                             and last_payload(collector, BASE + "/upstream/state") == b"offline", timeout=15)
    assert got, "with ComfyUI down expected bridge/state online and upstream/state offline, got %r / %r%s" % (
        last_payload(collector, BASE + "/bridge/state"), last_payload(collector, BASE + "/upstream/state"),
        bridge.context())
    sim.start()
    bridge.wait_connected(collector, sim, timeout=30)
    harness.assert_all_valid(collector, bridge=bridge)


def test_upstream_state_follows_comfyui_restart(broker, make_sim, collector, make_bridge):
    sim = make_sim()
    bridge = make_bridge(sim.url, broker.url)
    bridge.wait_connected(collector, sim)
    since = collector.mark()
    sim.kill()
    off = collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/upstream/state"
                                         and m.payload == b"offline"], timeout=15, since=since)
    assert off and off[-1].retain, "upstream/state should go offline (retained) when ComfyUI dies, got %r%s" % (
        collector.messages(BASE + "/upstream/state", since), bridge.context())
    assert bridge.alive(), "bridge exited when ComfyUI died%s" % bridge.context()
    since = collector.mark()
    sim.start()  # same port
    on = collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/upstream/state"
                                        and m.payload == b"online"], timeout=30, since=since)
    assert on, "upstream/state should go online again after ComfyUI restarts on the same port%s" % bridge.context()
    assert harness.wait_until(lambda: sim.has_client(bridge.client_id), 10), \
        "restarted simulator does not list client id %s" % bridge.client_id
    harness.assert_all_valid(collector, bridge=bridge)
