"""Shared helpers for the comfy2mqtt integration tests.

Every process a test starts (mosquitto, the ComfyUI simulator, the bridge) is
wrapped in a small class that owns its temp files and logs, starts it, waits
for it to be ready with a deadline (never a bare sleep) and stops it.
The Collector records everything the broker delivers, and assert_all_valid()
checks every recorded payload against schema/.

Used by tests/integration/test_*.py; run with /usr/bin/python3.
"""

import base64
import fnmatch
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import jsonschema
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("C2M_SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
TRACES_DIR = os.environ.get("C2M_TRACES_DIR") or os.path.join(SOURCE_DIR, "tests", "data", "traces")
SAMPLES_DIR = os.environ.get("C2M_SAMPLES_DIR") or os.path.join(SOURCE_DIR, "tests", "data", "http-samples")
SCHEMA_DIR = os.path.join(SOURCE_DIR, "schema")
BRIDGE_BIN = os.environ.get("C2M_BRIDGE") or os.path.join(SOURCE_DIR, "build", "comfy2mqtt")
SIM_SCRIPT = os.path.join(SOURCE_DIR, "tests", "sim", "comfyui_sim.py")
PYTHON = "/usr/bin/python3"
MOSQUITTO = "/usr/sbin/mosquitto"

PREFIX = "comfyui"
INSTANCE = "test"
BASE = PREFIX + "/" + INSTANCE
MAX_PAYLOAD = 256 * 1024

# contract §2: prompt events at QoS 1 are these; every other one goes at QoS 0
QOS1_EVENT_TYPES = {"queued", "execution_start", "execution_success", "execution_error",
                    "execution_interrupted", "cancelled", "lost"}
TERMINAL_TYPES = {"execution_success", "execution_error", "execution_interrupted", "cancelled", "lost"}
TERMINAL_TO_STATUS = {
    "execution_success": "success",
    "execution_error": "error",
    "execution_interrupted": "interrupted",
    "cancelled": "cancelled",
    "lost": "lost",
}


# --------------------------------------------------------------------------
# small utilities


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout, interval=0.02):
    """Polls predicate() until it returns something truthy or the deadline
    passes. Returns the last value (falsy on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def tail(path, lines=60):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return "<cannot read %s: %s>" % (path, e)
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:])


def sanitize(raw):
    """The topic form of an id (contract §2, bridge/core/topic.h): every
    byte outside [A-Za-z0-9._:-] becomes '_', empty -> '_'. Ids longer than
    96 bytes get a hash suffix the tests cannot predict; use
    sanitized_matches() for those."""
    b = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    out = "".join(chr(c) if (chr(c).isascii() and (chr(c).isalnum() or chr(c) in "._:-")) else "_" for c in b)
    return out or "_"


def sanitized_matches(raw, segment):
    """True when segment is what the bridge may put in a topic for raw."""
    full = sanitize(raw)
    if len(full) <= 96:
        return segment == full
    m = re.fullmatch(r"([A-Za-z0-9._:-]+)_[0-9a-f]{8}", segment)
    return bool(m) and len(segment) <= 96 and full.startswith(m.group(1))


def canonical(value):
    """Compact, key-order-preserving JSON text used to compare payloads."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def load_json_nan_null(text):
    """Parses Python-style JSON; NaN / Infinity / -Infinity become None,
    which is what the bridge must publish for them."""
    return json.loads(text, parse_constant=lambda _tok: None)


def http_json(method, url, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        raise AssertionError("%s %s -> HTTP %d: %s" % (method, url, e.code, e.read()[:500])) from None
    return json.loads(raw) if raw else None


# --------------------------------------------------------------------------
# traces


def trace_files():
    return sorted(f for f in os.listdir(TRACES_DIR) if f.endswith(".jsonl"))


def load_trace(name):
    """Returns a list of frames: {"kind": "text", "raw": line, "obj": parsed}
    or {"kind": "binary", "desc": descriptor}."""
    path = os.path.join(TRACES_DIR, name if name.endswith(".jsonl") else name + ".jsonl")
    frames = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            obj = load_json_nan_null(line)
            if "binary_hex_header" in obj:
                frames.append({"kind": "binary", "desc": obj})
            else:
                frames.append({"kind": "text", "raw": line, "obj": obj})
    return frames


def binary_frame_bytes(desc):
    """Builds the real frame for a binary descriptor (traces/README.md)."""
    out = bytes.fromhex(desc["binary_hex_header"])
    et = desc["event_type"]
    if et == 4:
        out += desc["metadata_json"].encode("utf-8")
    elif et == 3:
        out += desc["text"].encode("utf-8")
    if et in (1, 4):
        img = bytes.fromhex(desc["image_magic_hex"])
        out += img + b"\x00" * (desc["image_len"] - len(img))
    elif et not in (3,):
        out += b"\x00" * (desc["frame_len"] - len(out))
    return out


# --------------------------------------------------------------------------
# processes


class Proc:
    """A child process with stdout/stderr captured to files."""

    def __init__(self, name, workdir):
        self.name = name
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.proc = None
        self.starts = 0

    @property
    def stdout_path(self):
        return os.path.join(self.workdir, "%s.%d.stdout" % (self.name, self.starts))

    @property
    def stderr_path(self):
        return os.path.join(self.workdir, "%s.%d.stderr" % (self.name, self.starts))

    def _spawn(self, argv, env=None, stdout=None):
        self.starts += 1
        self._out = open(self.stdout_path, "wb") if stdout is None else None
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._out if stdout is None else stdout,
            stderr=self._err,
            env=env,
            cwd=SOURCE_DIR,
        )
        self.cmdline = argv

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout):
        """Exit code, or None if still running after timeout seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        """SIGKILL and reap. Returns the exit code."""
        if self.proc is None:
            return None
        if self.alive():
            self.proc.kill()
        rc = self.proc.wait()
        self._close_files()
        return rc

    def terminate(self, timeout=5):
        if self.proc is None:
            return None
        if self.alive():
            self.proc.terminate()
            if self.wait(timeout) is None:
                self.proc.kill()
        rc = self.proc.wait()
        self._close_files()
        return rc

    def _close_files(self):
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f:
                f.close()

    def stderr_tail(self, lines=60):
        return tail(self.stderr_path, lines)

    def stdout_text(self):
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


class Broker(Proc):
    """A private mosquitto on 127.0.0.1:<port>."""

    def __init__(self, workdir, port=None, persistence=False, extra_conf=()):
        super().__init__("mosquitto", workdir)
        self.port = port or free_port()
        self.persistence = persistence
        # more mosquitto.conf lines, e.g. "queue_qos0_messages true"
        self.extra_conf = list(extra_conf)
        self.conf = os.path.join(workdir, "mosquitto.conf")

    @property
    def url(self):
        return "mqtt://127.0.0.1:%d" % self.port

    def start(self, timeout=10):
        lines = [
            "listener %d 127.0.0.1" % self.port,
            "allow_anonymous true",
            "user root",
            "max_queued_messages 0",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if self.persistence:
            lines += ["persistence true", "persistence_location %s/" % self.workdir]
        lines += self.extra_conf
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self._spawn([MOSQUITTO, "-c", self.conf])
        ok = wait_until(lambda: not self.alive() or port_accepts(self.port), timeout)
        if not (ok and self.alive()):
            log = self.stderr_tail()
            self.kill()
            raise RuntimeError("mosquitto did not accept on port %d within %ss:\n%s" % (self.port, timeout, log))
        return self

    def stop(self):
        return self.terminate()

    def restart(self):
        self.stop()
        return self.start()


class Sim(Proc):
    """The project's ComfyUI simulator (tests/sim/comfyui_sim.py)."""

    def __init__(self, workdir, port=0, server_version=None, finish_running_as=None, extra_args=(), persist=True):
        """persist=False: no --state-file (a simulator that is not restarted
        takes hundreds of prompts quickly)."""
        super().__init__("sim", workdir)
        self.persist = persist
        self.port = port
        self.server_version = server_version
        self.finish_running_as = finish_running_as
        self.extra_args = list(extra_args)
        self.state_file = os.path.join(workdir, "sim.json")

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout=15):
        if not os.path.exists(SIM_SCRIPT):
            raise RuntimeError("ComfyUI simulator missing: %s" % SIM_SCRIPT)
        argv = [PYTHON, SIM_SCRIPT, "--port", str(self.port)]
        if self.persist:
            argv += ["--state-file", self.state_file]
        if self.server_version:
            argv += ["--server-version", self.server_version]
        if self.finish_running_as:
            argv += ["--finish-running-as", self.finish_running_as]
        argv += self.extra_args
        self._spawn(argv)
        found = {}

        def listening():
            m = re.search(r"^LISTENING (\d+)\s*$", self.stdout_text(), re.M)
            if m:
                found["port"] = int(m.group(1))
            return bool(m) or not self.alive()

        wait_until(listening, timeout)
        if "port" not in found:
            log = "stdout:\n%s\nstderr:\n%s" % (self.stdout_text()[-2000:], self.stderr_tail())
            self.kill()
            raise RuntimeError("simulator did not print LISTENING within %ss:\n%s" % (timeout, log))
        self.port = found["port"]
        return self

    def stop(self):
        return self.terminate()

    def restart(self):
        """Stops and starts again on the same port (state file kept)."""
        self.stop()
        return self.start()

    # -- HTTP helpers -------------------------------------------------------
    def req(self, method, path, body=None, timeout=60):
        return http_json(method, self.url + path, body, timeout)

    def replay(self, trace, client_id, interval_ms=1):
        """Sends a trace file to client_id; returns {"sent": n, "prompts": [...]}."""
        name = trace[: -len(".jsonl")] if trace.endswith(".jsonl") else trace
        return self.req("POST", "/_sim/replay", {"trace": name, "client_id": client_id, "interval_ms": interval_ms})

    def send(self, client_id, frames, fragment=None):
        """frames: list of str (text), bytes (binary) or ready dicts."""
        out = []
        for f in frames:
            if isinstance(f, dict):
                out.append(f)
            elif isinstance(f, (bytes, bytearray)):
                out.append({"binary_b64": base64.b64encode(bytes(f)).decode()})
            else:
                out.append({"text": f})
        body = {"client_id": client_id, "frames": out}
        if fragment:
            body["fragment"] = fragment
        return self.req("POST", "/_sim/send", body)

    def drop(self, client_id=None):
        return self.req("POST", "/_sim/drop", {"client_id": client_id})

    def clients(self):
        return self.req("GET", "/_sim/clients")

    def has_client(self, client_id):
        try:
            reg = self.clients().get("registry") or {}
        except (OSError, AssertionError, ValueError):
            return False
        if isinstance(reg, dict):
            return client_id in reg
        return client_id in json.dumps(reg)

    def submit(self, prompt=None, client_id=None, prompt_id=None, outcome="success", steps=3, step_ms=10, hold=False):
        body = {
            "prompt": prompt or default_workflow(),
            "extra_data": {"sim": {"outcome": outcome, "steps": steps, "step_ms": step_ms, "hold": hold}},
        }
        if client_id is not None:
            body["client_id"] = client_id
        if prompt_id is not None:
            body["prompt_id"] = prompt_id
        return self.req("POST", "/prompt", body)

    def release(self, prompt_id):
        return self.req("POST", "/_sim/release", {"prompt_id": prompt_id})

    def queue(self):
        return self.req("GET", "/queue")

    def history(self, prompt_id):
        return self.req("GET", "/history/%s" % prompt_id)


def default_workflow():
    """The traces' text-to-image graph in API format (README "Workflow")."""
    return {
        "3": {"class_type": "KSampler", "inputs": {"cfg": 7.0, "denoise": 1.0, "latent_image": ["5", 0],
              "model": ["4", 0], "negative": ["7", 0], "positive": ["6", 0], "sampler_name": "euler",
              "scheduler": "normal", "seed": 8566257, "steps": 20}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"batch_size": 1, "height": 512, "width": 512}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "a lighthouse"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "blurry"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }


class Bridge(Proc):
    """The comfy2mqtt daemon under test."""

    def __init__(self, workdir, comfyui_url, mqtt_url, instance=INSTANCE, client_id=None, extra_args=(), env=None):
        super().__init__("bridge", workdir)
        self.comfyui_url = comfyui_url
        self.mqtt_url = mqtt_url
        self.instance = instance
        self.client_id = client_id or "c2m-test-" + uuid.uuid4().hex[:12]
        self.extra_args = list(extra_args)
        self.env = dict(os.environ)
        # The developer's own environment must not leak options into tests.
        for k in list(self.env):
            if k.startswith("COMFY2MQTT_"):
                del self.env[k]
        self.env.update(env or {})
        self.started_at = None

    def argv(self):
        return [
            BRIDGE_BIN,
            "--comfyui", self.comfyui_url,
            "--mqtt", self.mqtt_url,
            "--instance", self.instance,
            "--client-id", self.client_id,
            "--log-level", "debug",
        ] + self.extra_args

    def start(self):
        if not os.access(BRIDGE_BIN, os.X_OK):
            raise RuntimeError("bridge binary not found: %s (set C2M_BRIDGE)" % BRIDGE_BIN)
        self._spawn(self.argv(), env=self.env)
        self.started_at = time.monotonic()
        return self

    def context(self, lines=40):
        """Text to append to assertion messages."""
        state = "running" if self.alive() else "exited with %s" % (self.proc.returncode if self.proc else None)
        return "\n--- bridge (%s) %s\n--- stderr tail:\n%s" % (state, " ".join(self.cmdline if self.proc else self.argv()), self.stderr_tail(lines))

    def wait_connected(self, collector, sim=None, timeout=20):
        """Waits for retained bridge/state and upstream/state `online`, and
        for the simulator to list our client id."""
        base = "%s/%s" % (PREFIX, self.instance)

        def ready():
            if not self.alive():
                return True
            b = collector.last(base + "/bridge/state")
            u = collector.last(base + "/upstream/state")
            return (b is not None and b.payload == b"online" and u is not None and u.payload == b"online"
                    and (sim is None or sim.has_client(self.client_id)))

        wait_until(ready, timeout, interval=0.05)
        b = collector.last(base + "/bridge/state")
        u = collector.last(base + "/upstream/state")
        sim_ok = sim is None or sim.has_client(self.client_id)
        ok = self.alive() and b and b.payload == b"online" and u and u.payload == b"online" and sim_ok
        assert ok, (
            "bridge not connected within %ss: expected %s/bridge/state=online, upstream/state=online and the "
            "simulator registering client id %r; got bridge/state=%r upstream/state=%r sim_registered=%r%s"
            % (timeout, base, self.client_id, b and b.payload, u and u.payload, sim_ok, self.context())
        )

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Sends sig; returns (exit code or None if still running, seconds)."""
        t0 = time.monotonic()
        self.signal(sig)
        rc = self.wait(timeout)
        return rc, time.monotonic() - t0

    def kill9(self):
        return self.kill()


def run_bridge_once(args, env=None, timeout=10):
    """Runs the bridge binary to completion (for --help, bad flags)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("COMFY2MQTT_")}
    e.update(env or {})
    return subprocess.run([BRIDGE_BIN] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                          env=e, timeout=timeout, cwd=SOURCE_DIR)


# --------------------------------------------------------------------------
# MQTT collector


class Msg:
    __slots__ = ("index", "topic", "payload", "qos", "retain", "props", "t")

    def __init__(self, index, topic, payload, qos, retain, props, t):
        self.index, self.topic, self.payload = index, topic, payload
        self.qos, self.retain, self.props, self.t = qos, retain, props, t

    def json(self):
        return json.loads(self.payload.decode("utf-8"))

    def user_props(self):
        return dict(self.props.get("UserProperty", []))

    def __repr__(self):
        p = self.payload[:300]
        return "<%d %s qos=%d retain=%d %r>" % (self.index, self.topic, self.qos, self.retain, p)


def props_to_dict(props):
    out = {}
    if props is None:
        return out
    for name in ("ContentType", "PayloadFormatIndicator", "MessageExpiryInterval", "ResponseTopic",
                 "CorrelationData", "TopicAlias"):
        if hasattr(props, name):
            out[name] = getattr(props, name)
    if hasattr(props, "UserProperty"):
        out["UserProperty"] = [tuple(x) for x in props.UserProperty]
    return out


class Collector:
    """Records every message on `topic` (default '#') with MQTT 5 metadata.
    Subscribes with retain-as-published, so `retain` tells whether the
    publisher asked for retention."""

    def __init__(self, port, topic="#", client_id=None, persistent=False, session_expiry=600):
        self.port = port
        self.topic = topic
        self.persistent = persistent
        self.session_expiry = session_expiry
        self.client_id = client_id or ("collector-" + uuid.uuid4().hex[:10])
        self.lock = threading.Lock()
        self.msgs = []
        self.subscribed = threading.Event()
        self.connects = 0
        self.client = mqtt.Client(client_id=self.client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        self.connects += 1
        if rc == 0:
            client.subscribe(self.topic, options=SubscribeOptions(qos=1, retainAsPublished=True))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None):
        self.subscribed.set()

    def _on_message(self, client, userdata, m):
        rec_t = time.time()
        with self.lock:
            self.msgs.append(Msg(len(self.msgs), m.topic, bytes(m.payload), m.qos, bool(m.retain),
                                 props_to_dict(getattr(m, "properties", None)), rec_t))

    def start(self, timeout=10):
        props = None
        if self.persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry
        self.client.connect("127.0.0.1", self.port, keepalive=30, clean_start=not self.persistent,
                            properties=props)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            self.stop()
            raise RuntimeError("collector could not subscribe to %r on port %d" % (self.topic, self.port))
        return self

    def stop(self):
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    # -- queries ------------------------------------------------------------
    def mark(self):
        """Index of the next message; pass as since= to look only at later ones."""
        with self.lock:
            return len(self.msgs)

    def messages(self, topic_glob=None, since=0):
        with self.lock:
            snap = self.msgs[since:]
        if topic_glob is None:
            return snap
        return [m for m in snap if fnmatch.fnmatchcase(m.topic, topic_glob)]

    def json_messages(self, topic_glob=None, since=0):
        """(msg, parsed) pairs for non-empty JSON payloads on matching topics."""
        out = []
        for m in self.messages(topic_glob, since):
            if not m.payload or m.payload in (b"online", b"offline"):
                continue
            try:
                out.append((m, m.json()))
            except ValueError:
                continue
        return out

    def last(self, topic):
        with self.lock:
            for m in reversed(self.msgs):
                if m.topic == topic:
                    return m
        return None

    def wait_for(self, predicate, timeout=10, since=0):
        """Calls predicate(list_of_msgs) until it returns a truthy value or
        the deadline passes; returns that value (falsy on timeout)."""
        return wait_until(lambda: predicate(self.messages(since=since)), timeout, interval=0.02)

    def wait_quiet(self, quiet=0.5, timeout=5):
        """Waits until no message arrived for `quiet` seconds (bounded by
        timeout). Returns True if it became quiet."""
        def is_quiet():
            with self.lock:
                last_t = self.msgs[-1].t if self.msgs else 0
            return time.time() - last_t >= quiet

        return bool(wait_until(is_quiet, timeout, interval=0.05))

    def dump(self, topic_glob=None, since=0, limit=40):
        ms = self.messages(topic_glob, since)
        lines = [repr(m) for m in ms[-limit:]]
        return "%d message(s)%s:\n  %s" % (len(ms), (" on " + topic_glob) if topic_glob else "",
                                           "\n  ".join(lines))


def read_retained(port, topic, timeout=5):
    """Reads the retained value of topic with a fresh clean session; returns
    a Msg or None when nothing is retained."""
    c = Collector(port, topic=topic)
    c.start()
    try:
        got = c.wait_for(lambda ms: [m for m in ms if m.topic == topic], timeout=timeout)
        # A retained message arrives right after SUBACK; once anything came in
        # we still give the broker a moment to deliver nothing more.
        return got[-1] if got else None
    finally:
        c.stop()


# --------------------------------------------------------------------------
# schema validation


def _load_schemas():
    store, by_file = {}, {}
    for f in sorted(os.listdir(SCHEMA_DIR)):
        if f.endswith(".schema.json"):
            with open(os.path.join(SCHEMA_DIR, f), encoding="utf-8") as fh:
                s = json.load(fh)
            by_file[f] = s
            store[s["$id"]] = s
    return store, by_file


_SCHEMA_CACHE = {}


def validator(schema_file):
    if not _SCHEMA_CACHE:
        store, by_file = _load_schemas()
        _SCHEMA_CACHE["store"], _SCHEMA_CACHE["files"] = store, by_file
    store, by_file = _SCHEMA_CACHE["store"], _SCHEMA_CACHE["files"]
    key = "v:" + schema_file
    if key not in _SCHEMA_CACHE:
        schema = by_file[schema_file]
        resolver = jsonschema.RefResolver(base_uri=schema["$id"], referrer=schema, store=store)
        _SCHEMA_CACHE[key] = jsonschema.Draft202012Validator(schema, resolver=resolver)
    return _SCHEMA_CACHE[key]


def schema_errors(schema_file, instance):
    """Readable validation errors; for anyOf/oneOf failures the reasons of
    each alternative are appended, so the message says what to fix."""
    out = []
    for e in validator(schema_file).iter_errors(instance):
        where = "/".join(str(p) for p in e.absolute_path) or "<root>"
        msg = e.message if len(e.message) < 300 else e.message[:300] + "..."
        if e.context:
            leaves, todo = [], list(e.context)
            while todo:
                c = todo.pop()
                if c.context:
                    todo.extend(c.context)
                else:
                    leaves.append(c)
            why = sorted({"%s: %s" % ("/".join(str(p) for p in c.absolute_path) or "<root>", c.message[:150])
                          for c in leaves})
            msg += " [alternatives failed: %s]" % "; ".join(why[:6])
        out.append("%s: %s" % (where, msg))
    return out


def classify_topic(topic, prefix=PREFIX, instance=INSTANCE):
    """Returns (kind, parts) for a topic under <prefix>/<instance>/, where kind
    is the schema file, 'binary' for previews, or None if not a contract topic."""
    base = prefix + "/" + instance + "/"
    if not topic.startswith(base):
        return None, {}
    rest = topic[len(base):].split("/")
    if rest in (["bridge", "state"], ["upstream", "state"]):
        return "availability.schema.json", {}
    if rest == ["bridge", "info"]:
        return "bridge-info.schema.json", {}
    if rest == ["bridge", "health"]:
        return "bridge-health.schema.json", {}
    if rest == ["bridge", "cursor"]:
        return "bridge-cursor.schema.json", {}
    if rest == ["queue"]:
        return "queue.schema.json", {}
    if rest == ["completion"]:
        return "completion.schema.json", {}
    if rest == ["current"]:
        # the state snapshot of the prompt running now (or last finished)
        return "state.schema.json", {"prompt": None}
    if rest == ["preview"]:
        return "binary", {}
    if rest == ["command", "response"]:
        return "command-answer.schema.json", {}
    if len(rest) == 2 and rest[0] == "command":
        return "client", {}  # a command a client sent (--commands)
    if len(rest) == 2 and rest[0] == "event":
        return "envelope.schema.json", {"type": rest[1], "prompt": None}
    if len(rest) == 4 and rest[0] == "prompt" and rest[2] == "event":
        return "envelope.schema.json", {"type": rest[3], "prompt": rest[1]}
    if len(rest) == 3 and rest[0] == "prompt" and rest[2] == "state":
        return "state.schema.json", {"prompt": rest[1]}
    if len(rest) == 3 and rest[0] == "prompt" and rest[2] == "preview":
        return "binary", {"prompt": rest[1]}
    return None, {}


def message_problems(m, prefix=PREFIX, instance=INSTANCE):
    """Everything wrong with one recorded message under <prefix>/<instance>/."""
    kind, parts = classify_topic(m.topic, prefix, instance)
    if kind is None:
        return ["topic is not part of contract §2"]
    if kind == "client":
        return []  # not the bridge's: bad commands are part of the tests
    if kind == "binary":
        ct = m.props.get("ContentType")
        return [] if ct in ("image/jpeg", "image/png") else ["preview without image content type (%r)" % ct]
    if kind == "state.schema.json" and m.payload == b"" and m.retain:
        return []  # clearing a retained state after its TTL
    try:
        text = m.payload.decode("utf-8")
    except UnicodeDecodeError as e:
        return ["payload is not UTF-8: %s" % e]
    if kind == "availability.schema.json":
        return schema_errors(kind, text)
    try:
        obj = json.loads(text, parse_constant=lambda tok: (_ for _ in ()).throw(ValueError("bare " + tok)))
    except ValueError as e:
        return ["payload is not RFC 8259 JSON: %s" % e]
    problems = schema_errors(kind, obj)
    if len(m.payload) > MAX_PAYLOAD:
        problems.append("payload of %d bytes exceeds 256 KiB" % len(m.payload))
    if isinstance(obj, dict):
        if "instance" in obj and obj["instance"] != instance:
            problems.append("instance %r, topic says %r" % (obj["instance"], instance))
        if kind == "envelope.schema.json":
            if isinstance(obj.get("type"), str) and not sanitized_matches(obj["type"], parts["type"]):
                problems.append("type %r does not match topic level %r" % (obj["type"], parts["type"]))
            if parts["prompt"] is None and obj.get("prompt_id") is not None:
                problems.append("prompt_id must be null on event/<type> topics")
            if parts["prompt"] is not None:
                pid = obj.get("prompt_id")
                if not (isinstance(pid, str) and sanitized_matches(pid, parts["prompt"])):
                    problems.append("prompt_id %r does not match topic level %r" % (pid, parts["prompt"]))
        if kind == "state.schema.json" and parts["prompt"] is not None:
            pid = obj.get("prompt_id")
            if isinstance(pid, str) and not sanitized_matches(pid, parts["prompt"]):
                problems.append("prompt_id %r does not match topic level %r" % (pid, parts["prompt"]))
            problems += clock_problems(obj)
    return problems


def clock_problems(state):
    """Contract §3.3, one clock: queued_at <= started_at <= finished_at (the
    known ones), duration_ms = finished_at - started_at."""
    times = [(k, state.get(k)) for k in ("queued_at", "started_at", "finished_at")]
    known = [(k, v) for k, v in times if isinstance(v, int)]
    problems = ["%s %d after %s %d" % (k1, v1, k2, v2)
                for (k1, v1), (k2, v2) in zip(known, known[1:]) if v1 > v2]
    s, f, d = state.get("started_at"), state.get("finished_at"), state.get("duration_ms")
    if isinstance(s, int) and isinstance(f, int):
        if d != f - s:
            problems.append("duration_ms %r, finished_at - started_at is %d" % (d, f - s))
    elif d is not None:
        problems.append("duration_ms %r without both started_at and finished_at" % d)
    return problems


def assert_all_valid(collector, prefix=PREFIX, instance=INSTANCE, bridge=None, since=0):
    """Every message recorded under <prefix>/<instance>/ is a contract topic
    and its payload validates against the matching schema."""
    bad = []
    for m in collector.messages(prefix + "/" + instance + "/*", since):
        for p in message_problems(m, prefix, instance):
            bad.append("%s: %s\n    payload: %r" % (m.topic, p, m.payload[:400]))
    assert not bad, "%d invalid message(s):\n%s%s" % (
        len(bad), "\n".join(bad[:30]), bridge.context() if bridge else "")


# --------------------------------------------------------------------------
# invariants shared by several tests


def seq_problems(collector, prefix=PREFIX, instance=INSTANCE, since=0):
    """seq/run checks: per run, seq strictly increases in arrival order
    within each QoS level (MQTT orders per QoS), and no seq repeats among
    non-retained messages."""
    problems = []
    by_run = {}
    for m, obj in collector.json_messages(prefix + "/" + instance + "/*", since):
        if not isinstance(obj, dict) or not isinstance(obj.get("seq"), int) or "run" not in obj:
            continue
        by_run.setdefault(obj["run"], []).append((m, obj["seq"]))
    for run, items in by_run.items():
        for qos in (0, 1, 2):
            seqs = [(m, s) for m, s in items if m.qos == qos]
            for (m1, s1), (m2, s2) in zip(seqs, seqs[1:]):
                if s2 <= s1:
                    problems.append("run %s qos %d: seq %d (%s) arrived after seq %d (%s)"
                                    % (run, qos, s2, m2.topic, s1, m1.topic))
        seen = {}
        for m, s in items:
            if m.retain:
                continue
            if s in seen:
                problems.append("run %s: seq %d on both %s and %s" % (run, s, seen[s].topic, m.topic))
            seen[s] = m
    return problems


def qos_retain_problems(collector, prefix=PREFIX, instance=INSTANCE, since=0):
    """QoS and retain flag of every recorded message against contract §2 and
    payloads.md (the collector subscribes at QoS 1 with retain-as-published,
    so both arrive as published)."""
    problems = []
    for m in collector.messages(prefix + "/" + instance + "/*", since):
        kind, parts = classify_topic(m.topic, prefix, instance)
        if kind is None:
            continue
        if kind == "envelope.schema.json":
            want_retain = False
            try:
                etype = m.json().get("type")
            except ValueError:
                continue
            # contract §2: QoS 1 for queued, execution_start and the terminal types
            # of a prompt; QoS 0 for the rest and for events of no prompt
            want_qos = 1 if etype in QOS1_EVENT_TYPES and parts.get("prompt") is not None else 0
        elif kind in ("availability.schema.json", "bridge-info.schema.json", "bridge-cursor.schema.json",
                      "queue.schema.json", "state.schema.json"):
            want_retain, want_qos = True, 1
        elif kind == "bridge-health.schema.json":
            want_retain, want_qos = True, 0
        elif kind == "completion.schema.json":
            want_retain, want_qos = False, 1
        else:  # previews
            want_retain, want_qos = parts.get("prompt") is None, 0
        if m.retain != want_retain or m.qos != want_qos:
            problems.append("%s: qos %d retain %s, contract says qos %d retain %s"
                            % (m.topic, m.qos, m.retain, want_qos, want_retain))
    return problems
