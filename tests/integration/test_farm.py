"""Several ComfyUI servers in one bridge process (contract §7): each is
followed as one server is, under its own instance, with its own client id,
bridge/info, --print prefix and broker session; a server that is down, slow
(HTTP answers after 10 s) or hostile (a garbage flood, a frame over 16 MiB)
does not delay the prompts of another; after kill -9 every instance's
retained bridge/state reads offline within 1.5 x keepalive (one session and
one will per instance); instances that would share a topic level or a Home
Assistant device are refused at start-up."""

import base64
import os
import threading
import time

import harness
from harness import PREFIX

KEEPALIVE_S = 5


class FarmBridge(harness.Bridge):
    """The bridge with one --comfyui NAME=URL per server and nothing that
    names one server (no --instance, no --client-id)."""

    def __init__(self, workdir, servers, mqtt_url, extra_args=()):
        super().__init__(workdir, None, mqtt_url, extra_args=extra_args)
        self.servers = servers  # [(instance, url)]

    def argv(self):
        out = [harness.BRIDGE_BIN, "--mqtt", self.mqtt_url, "--log-level", "debug"]
        for name, url in self.servers:
            out += ["--comfyui", "%s=%s" % (name, url)]
        return out + self.extra_args

    def wait_instances_online(self, collector, names, sims=None, timeout=20):
        def online(name):
            b = collector.last("%s/%s/bridge/state" % (PREFIX, name))
            u = collector.last("%s/%s/upstream/state" % (PREFIX, name))
            sim = (sims or {}).get(name)
            return (b is not None and b.payload == b"online" and u is not None and u.payload == b"online"
                    and (sim is None or sim.has_client("comfy2mqtt-" + name)))

        ok = harness.wait_until(lambda: all(online(n) for n in names) or not self.alive(), timeout)
        bad = [n for n in names if not online(n)]
        assert ok and not bad, "instances not online within %ss: %s%s" % (timeout, bad, self.context())


def start_farm(tmp_path, procs, servers, broker, extra_args=()):
    b = FarmBridge(str(tmp_path / "farm"), servers, broker.url, extra_args=extra_args)
    return procs.add(b).start()


def last_payload(collector, topic):
    m = collector.last(topic)
    return m.payload if m else None


def completion_of(collector, name, pid):
    topic = "%s/%s/completion" % (PREFIX, name)
    for m, obj in collector.json_messages(topic):
        if obj.get("prompt_id") == pid:
            return m
    return None


def event_types(collector, name, pid):
    glob = "%s/%s/prompt/%s/event/*" % (PREFIX, name, pid)
    return [m.topic.rsplit("/", 1)[1] for m in collector.messages(glob)]


def test_each_server_followed_under_its_own_instance(tmp_path, procs, broker, collector, make_sim):
    names = ["gpu1", "gpu2", "gpu3"]
    sims = {n: make_sim() for n in names}
    bridge = start_farm(tmp_path, procs, [(n, sims[n].url) for n in names], broker, ["--print"])
    bridge.wait_instances_online(collector, names, sims)

    pids = {n: sims[n].submit(client_id="comfy2mqtt-" + n, steps=4)["prompt_id"] for n in names}
    done = collector.wait_for(lambda ms: all(completion_of(collector, n, pids[n]) for n in names), 20)
    assert done, "not every instance published its completion:\n%s%s" % (
        collector.dump("*/completion"), bridge.context())

    for n in names:
        types = event_types(collector, n, pids[n])
        for want in ("queued", "execution_start", "progress", "executed", "execution_success"):
            assert want in types, "%s: no %s event for %s, got %s" % (n, want, pids[n], types)
        # nothing of one server shows under another instance
        for other in names:
            if other != n:
                assert not collector.messages("%s/%s/prompt/%s/*" % (PREFIX, other, pids[n])), \
                    "prompt %s of %s published under %s" % (pids[n], n, other)
        info = harness.read_retained(broker.port, "%s/%s/bridge/info" % (PREFIX, n)).json()
        assert (info["instance"], info["client_id"], info["comfyui_url"]) == (n, "comfy2mqtt-" + n, sims[n].url)
        assert info["options"]["instance"] == n and info["options"]["comfyui"] == sims[n].url, info["options"]
        assert info["mqtt_client_id"].startswith("comfy2mqtt-%s-" % n), info
        harness.assert_all_valid(collector, instance=n, bridge=bridge)
        assert not harness.seq_problems(collector, instance=n)

    ids = {harness.read_retained(broker.port, "%s/%s/bridge/info" % (PREFIX, n)).json()["mqtt_client_id"]
           for n in names}
    assert len(ids) == len(names), "instances share a broker session: %s" % ids
    out = bridge.stdout_text()
    for n in names:
        assert "%s: [SUCCESS]" % n in out or "%s: [EXECUTING] Prompt %s completed" % (n, pids[n]) in out, \
            "--print lines of %s do not name it:\n%s" % (n, out[-2000:])


def flood(sim, client_id, stop, counts):
    """Garbage text frames, invalid JSON and a frame over the 16 MiB cap,
    until stop is set."""
    junk = base64.b64encode(os.urandom(3000)).decode()
    frames = [{"text_b64": junk}, {"text": "{\"type\": \"status\", \"data\": [[[["}, {"binary_b64": junk}] * 60
    while not stop.is_set():
        try:
            sim.req("POST", "/_sim/send", {"client_id": client_id, "frames": frames}, timeout=30)
            counts["garbage"] += len(frames)
            if counts["huge"] < 2:
                sim.req("POST", "/_sim/send", {"client_id": client_id, "frames": [],
                                               "huge_text_bytes": 17 * 1024 * 1024}, timeout=60)
                counts["huge"] += 1
        except (OSError, AssertionError) as e:
            counts["errors"] += 1
            counts["last_error"] = repr(e)
            time.sleep(0.05)


def test_down_slow_and_hostile_servers_do_not_delay_another(tmp_path, procs, broker, collector, make_sim):
    good = make_sim()
    slow = make_sim(extra_args=["--http-delay-ms", "10000"])
    hostile = make_sim()
    down_url = "http://127.0.0.1:%d" % harness.free_port()
    servers = [("down", down_url), ("slow", slow.url), ("hostile", hostile.url), ("good", good.url)]
    bridge = start_farm(tmp_path, procs, servers, broker)
    bridge.wait_instances_online(collector, ["good", "hostile", "slow"],
                                 {"good": good, "hostile": hostile, "slow": slow})
    assert harness.wait_until(lambda: last_payload(collector, PREFIX + "/down/upstream/state") == b"offline", 10), \
        "the down server's upstream/state is not offline%s" % bridge.context()

    # the slow server's prompt starts a 10 s /queue and /history read
    slow.submit(client_id="comfy2mqtt-slow", steps=2)
    stop, counts = threading.Event(), {"garbage": 0, "huge": 0, "errors": 0}
    t = threading.Thread(target=flood, args=(hostile, "comfy2mqtt-hostile", stop, counts), daemon=True)
    t.start()
    try:
        assert harness.wait_until(lambda: counts["huge"] >= 1, 30), "the flood did not start: %r" % counts
        lat = []
        for _ in range(5):
            t0 = time.monotonic()
            pid = good.submit(client_id="comfy2mqtt-good", steps=3, step_ms=10)["prompt_id"]
            got = collector.wait_for(lambda ms: completion_of(collector, "good", pid), 10)
            lat.append(time.monotonic() - t0)
            assert got, "good: no completion for %s within 10 s during the flood (%r)%s" % (
                pid, counts, bridge.context())
    finally:
        stop.set()
        t.join(60)
    assert max(lat) < 2.0, "good's prompts were delayed: %s s (flood %r)" % (["%.2f" % x for x in lat], counts)
    assert bridge.alive(), bridge.context()
    for n in ("good", "hostile", "slow"):
        assert collector.last("%s/%s/bridge/state" % (PREFIX, n)).payload == b"online"
    harness.assert_all_valid(collector, instance="good", bridge=bridge)


def test_kill9_every_instance_offline_within_keepalive(tmp_path, procs, broker, collector, make_sim):
    names = ["a", "b", "c"]
    sims = {n: make_sim() for n in names}
    bridge = start_farm(tmp_path, procs, [(n, sims[n].url) for n in names], broker,
                        ["--mqtt-keepalive", str(KEEPALIVE_S)])
    bridge.wait_instances_online(collector, names, sims)
    since = collector.mark()
    t0 = time.time()
    bridge.kill9()

    def offline():
        return {m.topic: m for m in collector.messages(since=since)
                if m.topic.endswith("/bridge/state") and m.payload == b"offline"}

    bound = 1.5 * KEEPALIVE_S
    got = collector.wait_for(lambda ms: len(offline()) == len(names) and offline(), bound + 5)
    assert got and len(got) == len(names), "offline wills: %s of %s" % (sorted(got or {}), names)
    late = {t: round(m.t - t0, 2) for t, m in got.items() if m.t - t0 > bound}
    assert not late, "bridge/state offline later than %.1f s after kill -9: %s" % (bound, late)
    for n in names:
        m = harness.read_retained(broker.port, "%s/%s/bridge/state" % (PREFIX, n))
        assert m is not None and m.payload == b"offline" and m.retain, (n, m)


def test_colliding_instances_refused(tmp_path):
    r = harness.run_bridge_once(["--comfyui", "gpu.1=http://127.0.0.1:1", "--comfyui",
                                 "gpu_1=http://127.0.0.1:2", "--mqtt", "mqtt://127.0.0.1:1"])
    err = r.stderr.decode()
    assert r.returncode == 64, (r.returncode, err)
    assert '"gpu.1"' in err and '"gpu_1"' in err and "Home Assistant device id" in err, err
    assert len(err.strip().splitlines()) == 1, err

    r = harness.run_bridge_once(["--comfyui", "http://127.0.0.1:1", "--comfyui", "http://127.0.0.1:2"])
    err = r.stderr.decode()
    assert r.returncode == 64 and "topic level" in err and "INSTANCE=" in err, (r.returncode, err)

    r = harness.run_bridge_once(["--comfyui", "a=http://h1", "--comfyui", "b=http://h2", "--instance", "x"])
    assert r.returncode == 64 and "--instance" in r.stderr.decode(), r
