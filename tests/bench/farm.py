"""A GPU farm in one bridge process (README "A farm in one process"):
N simulated ComfyUI servers (one simulator process, --servers N), one
bridge following all of them, one mosquitto, one subscriber. Each server
runs a STEPS-step prompt every PERIOD seconds for DURATION seconds.

Reports: the time until every instance's bridge/state and upstream/state
read online, whether every lifecycle event of every prompt arrived
(queued, execution_start, each progress step, execution_success, the
completion), the bridge's CPU time per event, and its peak RSS (VmHWM)
against 8 MiB + 256 KiB per server. Not a timed test: it prints numbers
(key=value) and fails only when an event is missing.

    /usr/bin/python3 tests/bench/farm.py [--servers 50] [--duration 30]
        [--period 2] [--steps 20] [--step-ms 40] [--bridge PATH]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402

PREFIX = "comfyui"


def proc_cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        m = re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) if m else 0


def start_sims(workdir, n):
    sim = harness.Proc("sim", workdir)
    sim._spawn([harness.PYTHON, harness.SIM_SCRIPT, "--servers", str(n)])
    ports = harness.wait_until(lambda: re.findall(r"^LISTENING ([\d ]+)$", sim.stdout_text(), re.M), 30)
    if not ports:
        raise RuntimeError("simulator did not start: %s" % sim.stderr_tail())
    return sim, [int(p) for p in ports[0].split()]


def names_of(n):
    return ["gpu%02d" % i for i in range(n)]


def all_online(col, names):
    for n in names:
        for leaf in ("bridge/state", "upstream/state"):
            m = col.last("%s/%s/%s" % (PREFIX, n, leaf))
            if m is None or m.payload != b"online":
                return False
    return True


class Load:
    """Submits one prompt per server every period, from one thread."""

    def __init__(self, names, ports, steps, step_ms):
        self.names, self.ports, self.steps, self.step_ms = names, ports, steps, step_ms
        self.submitted = {n: [] for n in names}
        self.errors = 0

    def round(self):
        for n, port in zip(self.names, self.ports):
            body = {"prompt": harness.default_workflow(), "client_id": "comfy2mqtt-" + n,
                    "extra_data": {"sim": {"steps": self.steps, "step_ms": self.step_ms}}}
            try:
                r = harness.http_json("POST", "http://127.0.0.1:%d/prompt" % port, body, timeout=10)
                self.submitted[n].append(r["prompt_id"])
            except (OSError, AssertionError, ValueError):
                self.errors += 1

    def run(self, period, duration):
        t_end = time.monotonic() + duration
        next_t = time.monotonic()
        while next_t < t_end:
            self.round()
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))


def missing_events(col, load, steps):
    """Every lifecycle event of every prompt, per instance."""
    seen = {}
    for m in col.messages("%s/*/prompt/*/event/*" % PREFIX):
        parts = m.topic.split("/")
        key = (parts[1], parts[3])
        seen.setdefault(key, {}).setdefault(parts[5], 0)
        seen[key][parts[5]] += 1
    done = {(m.topic.split("/")[1], o.get("prompt_id")) for m, o in col.json_messages("%s/*/completion" % PREFIX)}
    missing = []
    for n, pids in load.submitted.items():
        for pid in pids:
            got = seen.get((n, pid), {})
            for t, want in (("queued", 1), ("execution_start", 1), ("progress", steps),
                            ("execution_success", 1)):
                if got.get(t, 0) < want:
                    missing.append("%s/%s: %s %d of %d" % (n, pid, t, got.get(t, 0), want))
            if (n, pid) not in done:
                missing.append("%s/%s: no completion" % (n, pid))
    events = sum(sum(v.values()) for v in seen.values())
    return missing, events


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", type=int, default=50)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--period", type=float, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--step-ms", type=float, default=40)
    ap.add_argument("--bridge", default=harness.BRIDGE_BIN)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="c2m-farm.")
    names = names_of(a.servers)
    broker = harness.Broker(os.path.join(work, "broker"), extra_conf=["max_inflight_messages 0"]).start()
    col = sim = bridge = None
    try:
        col = harness.Collector(broker.port).start()
        sim, ports = start_sims(os.path.join(work, "sim"), a.servers)
        argv = [a.bridge, "--mqtt", broker.url, "--log-level", "warn"]
        for n, p in zip(names, ports):
            argv += ["--comfyui", "%s=http://127.0.0.1:%d" % (n, p)]
        bridge = harness.Proc("bridge", os.path.join(work, "bridge"))
        t0 = time.monotonic()
        bridge._spawn(argv)
        online = harness.wait_until(lambda: all_online(col, names), 30, interval=0.01)
        t_online = time.monotonic() - t0
        pid = bridge.proc.pid
        cpu0, events0 = proc_cpu_s(pid), 0
        load = Load(names, ports, a.steps, a.step_ms)
        load.run(a.period, a.duration)
        # the last round's prompts finish: every completion or a deadline
        want = sum(len(v) for v in load.submitted.values())
        harness.wait_until(lambda: len(col.messages("%s/*/completion" % PREFIX)) >= want, 60)
        col.wait_quiet(1.0, 10)
        cpu1 = proc_cpu_s(pid)
        hwm = proc_hwm_kib(pid)
        missing, events = missing_events(col, load, a.steps)
        budget = 8 * 1024 + 256 * a.servers
        print("servers=%d online=%s online_s=%.2f" % (a.servers, bool(online), t_online))
        print("prompts=%d submit_errors=%d events=%d missing=%d" % (want, load.errors, events - events0,
                                                                     len(missing)))
        print("bridge_cpu_s=%.2f cpu_us_per_event=%.1f" % (cpu1 - cpu0, (cpu1 - cpu0) * 1e6 / max(1, events)))
        print("peak_rss_kib=%d budget_kib=%d within=%s" % (hwm, budget, hwm <= budget))
        for line in missing[:20]:
            print("MISSING " + line)
        return 0 if online and not missing and bridge.alive() else 1
    finally:
        for p in (bridge, sim):
            if p is not None:
                p.terminate()
        if col is not None:
            col.stop()
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
