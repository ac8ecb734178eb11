"""The two scripts a newcomer runs first, as they run them: scripts/run.sh
builds the daemon alone, starts a mosquitto only when none answers, says so,
and stops it again with the bridge, without mosquitto's warning about root;
scripts/demo.sh prints the MQTT stream itself, from the first message of the
replayed prompt to its completion."""

import os
import select
import signal
import subprocess
import time

import harness

SRC = os.environ.get("C2M_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BROKER_LOG = "/tmp/comfy2mqtt-mosquitto.log"
PID_A = "8c2f6e1a-4b7d-4e3a-9f05-6d1c2b8a7e94"


def run_env(port):
    env = dict(os.environ)
    env["C2M_MQTT_PORT"] = str(port)
    return env


def test_run_script_builds_the_daemon_alone_and_stops_its_broker():
    port = harness.free_port()
    p = subprocess.run([os.path.join(SRC, "scripts", "run.sh"), "--help"], cwd=SRC, env=run_env(port),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=400)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, "run.sh --help exited %d:\n%s" % (p.returncode, out[-3000:])
    assert "--comfyui" in out, "no --help text in:\n%s" % out[-3000:]
    assert "started mosquitto" in out and "stops when this script ends" in out, (
        "run.sh must say that it started a broker and that it stops it:\n%s" % out[-3000:])
    assert not harness.port_accepts(port), "run.sh left its mosquitto running on port %d" % port
    log = open(BROKER_LOG, encoding="utf-8", errors="replace").read()
    assert "should not be run as root" not in log, "mosquitto warned about root:\n%s" % log
    built_tests = os.path.join(SRC, "build", "tests")
    assert not os.path.exists(built_tests), "run.sh built the test targets too (%s)" % built_tests


def test_demo_prints_the_whole_stream_itself():
    port = harness.free_port()
    p = subprocess.Popen([os.path.join(SRC, "scripts", "demo.sh")], cwd=SRC, env=run_env(port),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines = []
    deadline = time.monotonic() + 400
    try:
        # a silent demo must not block the read past the deadline
        while time.monotonic() < deadline:
            if not select.select([p.stdout], [], [], 1)[0]:
                continue
            raw = p.stdout.readline()
            if not raw:
                break
            lines.append(raw.decode(errors="replace").rstrip("\n"))
            if "mqtt> comfyui/demo/completion " in lines[-1]:
                break
        prompt = "comfyui/demo/prompt/%s/event/" % PID_A
        mqtt = [l for l in lines if l.startswith("mqtt> ")]
        for kind in ("queued", "execution_start", "progress", "execution_success"):
            assert any(l.startswith("mqtt> " + prompt + kind + " ") for l in mqtt), (
                "the demo did not print %s of the replayed prompt:\n%s" % (kind, "\n".join(lines[-60:])))
        assert any(l.startswith("mqtt> comfyui/demo/completion ") for l in mqtt), "\n".join(lines[-60:])
        assert any(l.startswith("[SUCCESS]") for l in lines), "no --print line:\n%s" % "\n".join(lines[-60:])
    finally:
        os.killpg(p.pid, signal.SIGINT)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert not harness.port_accepts(port), "demo.sh left its mosquitto running on port %d" % port
