"""Security (issue 5 item 4, contract §1): mqtts:// with verification on by
default, client certificates, credentials from a file or the environment,
--tls-insecure, wss:// to ComfyUI, --comfyui-header for an authenticating
reverse proxy, and secrets kept out of logs, bridge/info and --help.

Everything runs against a real mosquitto with a TLS listener and a password
file, and the project's simulator serving https/wss; the certificates are
made here with openssl. The broker has a second, plain and anonymous
listener on which the test's collector watches what the bridge publishes.
"""

import json
import os
import re
import signal
import ssl
import subprocess
import types
import urllib.error
import urllib.request
import uuid

import pytest

import harness
from harness import BASE

TRACE_A = "a_normal_txt2img.jsonl"
PID_A = "8c2f6e1a-4b7d-4e3a-9f05-6d1c2b8a7e94"
MQTT_USER = "bridge-user"


def token(kind):
    return "%s-%s" % (kind, uuid.uuid4().hex)


# --------------------------------------------------------------------------
# certificates


def openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, timeout=60)
    assert r.returncode == 0, "openssl %s failed:\n%s" % (" ".join(args), r.stderr.decode(errors="replace"))


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "2", "-subj", "/CN=%s" % name, "-keyout", name + ".key", "-out", name + ".crt",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return os.path.join(d, name + ".crt")


def make_leaf(d, name, ca, cn, extensions):
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("\n".join(extensions) + "\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", "/CN=%s" % cn, "-keyout", name + ".key", "-out", name + ".csr", cwd=d)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
            "-CAcreateserial", "-days", "2", "-out", name + ".crt", "-extfile", ext, cwd=d)
    return os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """ca signs the server and client certificates; other_ca is unrelated;
    wrong_name is signed by ca but for another host."""
    d = str(tmp_path_factory.mktemp("pki"))
    ca = make_ca(d, "ca")
    other_ca = make_ca(d, "other-ca")
    server_cert, server_key = make_leaf(
        d, "server", "ca", "localhost",
        ["subjectAltName=DNS:localhost,IP:127.0.0.1", "extendedKeyUsage=serverAuth", "basicConstraints=CA:FALSE"])
    wrong_name_cert, wrong_name_key = make_leaf(
        d, "wrong-name", "ca", "other.example",
        ["subjectAltName=DNS:other.example", "extendedKeyUsage=serverAuth", "basicConstraints=CA:FALSE"])
    client_cert, client_key = make_leaf(
        d, "client", "ca", "comfy2mqtt-client",
        ["extendedKeyUsage=clientAuth", "basicConstraints=CA:FALSE"])
    return types.SimpleNamespace(dir=d, ca=ca, other_ca=other_ca, server_cert=server_cert,
                                 server_key=server_key, wrong_name_cert=wrong_name_cert,
                                 wrong_name_key=wrong_name_key, client_cert=client_cert, client_key=client_key)


# --------------------------------------------------------------------------
# a mosquitto with a TLS listener and a password file


class TlsBroker(harness.Broker):
    """mosquitto with per-listener settings: `port` is a plain anonymous
    listener for the test's own clients, `tls_port` is TLS with a password
    file and no anonymous access (optionally requiring client certs)."""

    def __init__(self, workdir, pki, password, require_certificate=False, wrong_name=False):
        super().__init__(workdir)
        self.pki = pki
        self.tls_port = harness.free_port()
        self.require_certificate = require_certificate
        self.cert = pki.wrong_name_cert if wrong_name else pki.server_cert
        self.key = pki.wrong_name_key if wrong_name else pki.server_key
        self.passwd = os.path.join(workdir, "passwd")
        r = subprocess.run(["mosquitto_passwd", "-b", "-c", self.passwd, MQTT_USER, password],
                           capture_output=True, timeout=30)
        assert r.returncode == 0, "mosquitto_passwd failed: %r" % r.stderr

    @property
    def tls_url(self):
        return "mqtts://127.0.0.1:%d" % self.tls_port

    def start(self, timeout=10):
        lines = [
            "per_listener_settings true",
            "user root",
            "max_queued_messages 0",
            "log_dest stderr",
            "log_type all",
            "connection_messages true",
            "listener %d 127.0.0.1" % self.port,
            "allow_anonymous true",
            "listener %d 127.0.0.1" % self.tls_port,
            "cafile %s" % self.pki.ca,
            "certfile %s" % self.cert,
            "keyfile %s" % self.key,
            "require_certificate %s" % ("true" if self.require_certificate else "false"),
            "use_identity_as_username false",
            "password_file %s" % self.passwd,
            "allow_anonymous false",
        ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self._spawn([harness.MOSQUITTO, "-c", self.conf])
        ok = harness.wait_until(
            lambda: not self.alive() or (harness.port_accepts(self.port) and harness.port_accepts(self.tls_port)),
            timeout)
        if not (ok and self.alive()):
            log = self.stderr_tail()
            self.kill()
            raise RuntimeError("mosquitto (TLS) did not start within %ss:\n%s" % (timeout, log))
        return self

    def log(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def tls_attempts(self):
        """Connection attempts on the TLS listener since this start. When the
        client's TLS alert is already waiting at mosquitto's first
        SSL_accept, mosquitto logs "Client connection from X failed"
        instead of "New connection from X on port N"; only the TLS listener
        can produce that line here, so both count."""
        return len(re.findall(r"New connection from \S+ on port %d\b|Client connection from \S+ failed:"
                              % self.tls_port, self.log()))

    def logins(self):
        """Successful logins of the bridge's user since this start."""
        return len(re.findall(r"New client connected from \S+ as \S+ .*u'%s'" % re.escape(MQTT_USER), self.log()))


@pytest.fixture
def make_tls_broker(tmp_path, procs, pki):
    count = [0]

    def make(password, **kw):
        count[0] += 1
        b = TlsBroker(str(tmp_path / ("tlsbroker%d" % count[0])), pki, password, **kw)
        return procs.add(b).start()

    return make


# --------------------------------------------------------------------------
# the simulator behind https and an authenticating proxy


class SecureSim(harness.Sim):
    """The simulator serving https/wss and/or answering 401 without a
    header. The test talks to it the way the bridge must: trusting the
    test CA and sending the header."""

    def __init__(self, workdir, pki=None, header=None, wrong_name=False):
        extra = []
        if pki is not None:
            extra += ["--tls-cert", pki.wrong_name_cert if wrong_name else pki.server_cert,
                      "--tls-key", pki.wrong_name_key if wrong_name else pki.server_key]
        if header is not None:
            extra += ["--require-header", header]
        super().__init__(workdir, extra_args=extra)
        self.pki = pki
        self.header = header
        self.wrong_name = wrong_name

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.pki else "http", self.port)

    def req(self, method, path, body=None, timeout=60):
        data = None if body is None else json.dumps(body).encode()
        r = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            r.add_header("Content-Type", "application/json")
        if self.header:
            name, _, value = self.header.partition(":")
            r.add_header(name.strip(), value.strip())
        ctx = None
        if self.pki:
            ctx = ssl.create_default_context(cafile=self.pki.ca)
            ctx.check_hostname = not self.wrong_name
        try:
            with urllib.request.urlopen(r, timeout=timeout, context=ctx) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise AssertionError("%s %s -> HTTP %d: %s" % (method, path, e.code, e.read()[:500])) from None
        return json.loads(raw) if raw else None


@pytest.fixture
def make_secure_sim(tmp_path, procs):
    count = [0]

    def make(pki=None, header=None, wrong_name=False):
        count[0] += 1
        s = SecureSim(str(tmp_path / ("ssim%d" % count[0])), pki=pki, header=header, wrong_name=wrong_name)
        return procs.add(s).start()

    return make


# --------------------------------------------------------------------------
# helpers

# What a clear line about a refused certificate says (OpenSSL's and
# libmosquitto's wordings included); "SSL error" or "TLS error" alone is not.
CERT_REASON = r"verif|certificate|unknown ca|issuer|mismatch|untrusted|not trusted"
RETRY_DEADLINE = 12  # libmosquitto and ws_client back off 1, 2, 4 s: 3 attempts fit


def bridge_output(bridge):
    text = ""
    for p in (bridge.stderr_path, bridge.stdout_path):
        try:
            with open(p, "rb") as f:
                text += f.read().decode("utf-8", "replace")
        except OSError:
            pass
    return text


def log_lines(bridge, *patterns):
    """Bridge output lines matching every pattern (case-insensitive)."""
    return [ln for ln in bridge_output(bridge).splitlines() if all(re.search(p, ln, re.I) for p in patterns)]


def wait_log(bridge, *patterns, timeout=5, count=1):
    """Waits for `count` bridge log lines matching all patterns; returns them
    (empty on timeout)."""
    harness.wait_until(lambda: len(log_lines(bridge, *patterns)) >= count or not bridge.alive(), timeout)
    lines = log_lines(bridge, *patterns)
    return lines if len(lines) >= count else []


def about(bridge, what):
    """Every bridge line mentioning `what`, for assertion messages."""
    return "\n--- bridge lines about %s:\n%s%s" % (what, "\n".join(log_lines(bridge, re.escape(what))),
                                                 bridge.context())


def assert_alive_then_clean_exit(bridge):
    """Still running after the failures, and shuts down cleanly on SIGTERM."""
    assert bridge.alive(), "bridge died%s" % bridge.context()
    rc, _ = bridge.stop(signal.SIGTERM)
    assert rc == 0, "SIGTERM while retrying should exit 0, got %r%s" % (rc, bridge.context())


def assert_not_online(collector, topic):
    m = collector.last(BASE + topic)
    assert m is None or m.payload != b"online", "%s went online" % topic


def assert_no_secret(bridge, collector, secrets, env=None, args=()):
    """None of the secrets in the bridge's stdout/stderr, in anything it
    published (bridge/info included), or in --help output given the same
    secret-bearing options."""
    out = bridge_output(bridge)
    for s in secrets:
        assert s not in out, "secret %r appears in the bridge's output:\n%s" % (s, bridge.stderr_tail(80))
        leaks = [m.topic for m in collector.messages() if s.encode() in m.payload]
        assert not leaks, "secret %r published on %s" % (s, leaks)
    run = harness.run_bridge_once(list(args) + ["--help"], env=env)
    assert run.returncode == 0, "--help exited %d: %r" % (run.returncode, run.stderr)
    for s in secrets:
        assert s.encode() not in run.stdout + run.stderr, "secret %r appears in --help output" % s


def info_of(collector):
    m = collector.last(BASE + "/bridge/info")
    return m.json() if m is not None and m.payload else None


def wait_info(collector, pred, timeout=15):
    def check():
        i = info_of(collector)
        return i if i is not None and pred(i) else None
    return harness.wait_until(check, timeout)


def replay_and_wait_completion(sim, bridge, collector):
    mark = collector.mark()
    sim.replay(TRACE_A, bridge.client_id)
    done = collector.wait_for(
        lambda ms: [m for m in ms if m.topic == BASE + "/completion" and PID_A.encode() in m.payload],
        timeout=15, since=mark)
    assert done, "no completion for %s after the replay: %s%s" % (
        PID_A, collector.dump(BASE + "/*", since=mark), bridge.context())
    assert done[0].json()["event_type"] == "success", done[0].payload


def assert_broker_refused_with_retries(broker, bridge, collector, reason_pattern, attempts=3):
    """The bridge keeps trying (attempts seen by the broker), never gets
    online, stays alive, and says once, naming the broker, why."""
    harness.wait_until(lambda: broker.tls_attempts() >= attempts or not bridge.alive(), RETRY_DEADLINE)
    where = "127.0.0.1:%d" % broker.tls_port
    assert bridge.alive(), "bridge died%s" % bridge.context()
    assert broker.tls_attempts() >= attempts, (
        "no retries: the broker saw %d connection attempt(s) in %ss, expected >= %d%s"
        % (broker.tls_attempts(), RETRY_DEADLINE, attempts, about(bridge, where)))
    assert broker.logins() == 0, "the bridge logged in:\n%s" % broker.stderr_tail()
    assert_not_online(collector, "/bridge/state")
    clear = log_lines(bridge, re.escape(where), reason_pattern)
    assert clear, "no log line names %s and says why (/%s/)%s" % (where, reason_pattern, about(bridge, where))


# --------------------------------------------------------------------------
# mqtts: the happy paths


def test_mqtts_verified_with_password_file(tmp_path, sim, make_tls_broker, make_collector, make_bridge):
    pw = token("pw")
    broker = make_tls_broker(pw)
    col = make_collector(broker.port)
    pw_file = tmp_path / "mqtt-password"
    pw_file.write_text(pw + "\n")
    args = ["--tls-ca", broker.pki.ca, "--mqtt-username", MQTT_USER, "--mqtt-password-file", str(pw_file)]
    bridge = make_bridge(sim.url, broker.tls_url, extra_args=args)
    bridge.wait_connected(col, sim)
    assert broker.logins() >= 1, "broker did not log our user's login:\n%s" % broker.stderr_tail()
    assert not log_lines(bridge, r"verification is off|--tls-insecure"), \
        "verification must be on by default%s" % bridge.context()
    replay_and_wait_completion(sim, bridge, col)
    assert wait_info(col, lambda i: True), "no bridge/info%s" % bridge.context()
    assert_no_secret(bridge, col, [pw], args=args)
    harness.assert_all_valid(col, bridge=bridge)


def test_mqtts_password_from_environment(sim, make_tls_broker, make_collector, make_bridge):
    pw = token("pw")
    broker = make_tls_broker(pw)
    col = make_collector(broker.port)
    env = {"COMFY2MQTT_MQTT_USERNAME": MQTT_USER, "COMFY2MQTT_MQTT_PASSWORD": pw,
           "COMFY2MQTT_TLS_CA": broker.pki.ca}
    bridge = make_bridge(sim.url, broker.tls_url, env=env)
    bridge.wait_connected(col, sim)
    assert wait_info(col, lambda i: True), "no bridge/info%s" % bridge.context()
    assert_no_secret(bridge, col, [pw], env=env)


# --------------------------------------------------------------------------
# mqtts: refusals give a clear line, retries and no crash


def test_mqtts_wrong_ca(sim, make_tls_broker, make_collector, make_bridge):
    pw = token("pw")
    broker = make_tls_broker(pw)
    col = make_collector(broker.port)
    env = {"COMFY2MQTT_MQTT_PASSWORD": pw}
    bridge = make_bridge(sim.url, broker.tls_url, env=env,
                         extra_args=["--tls-ca", broker.pki.other_ca, "--mqtt-username", MQTT_USER])
    assert_broker_refused_with_retries(broker, bridge, col, CERT_REASON)
    assert_no_secret(bridge, col, [pw], env=env)
    assert_alive_then_clean_exit(bridge)


def test_mqtts_untrusted_server_by_default(sim, make_tls_broker, make_collector, make_bridge):
    """No --tls-ca: the system CAs do not know the test CA, and verification
    is on by default, so the broker is refused."""
    pw = token("pw")
    broker = make_tls_broker(pw)
    col = make_collector(broker.port)
    bridge = make_bridge(sim.url, broker.tls_url, extra_args=["--mqtt-username", MQTT_USER],
                         env={"COMFY2MQTT_MQTT_PASSWORD": pw})
    assert_broker_refused_with_retries(broker, bridge, col, CERT_REASON)
    assert_alive_then_clean_exit(bridge)


def test_mqtts_certificate_for_another_host(sim, make_tls_broker, make_collector, make_bridge):
    """A certificate from the trusted CA but for other.example: the host
    name check must refuse it."""
    pw = token("pw")
    broker = make_tls_broker(pw, wrong_name=True)
    col = make_collector(broker.port)
    bridge = make_bridge(sim.url, broker.tls_url, env={"COMFY2MQTT_MQTT_PASSWORD": pw},
                         extra_args=["--tls-ca", broker.pki.ca, "--mqtt-username", MQTT_USER])
    assert_broker_refused_with_retries(broker, bridge, col, CERT_REASON + r"|host ?name|name")
    assert_alive_then_clean_exit(bridge)


def test_mqtts_wrong_password(sim, make_tls_broker, make_collector, make_bridge):
    pw = token("pw")
    wrong = token("wrongpw")
    broker = make_tls_broker(pw)
    col = make_collector(broker.port)
    env = {"COMFY2MQTT_MQTT_PASSWORD": wrong}
    bridge = make_bridge(sim.url, broker.tls_url, env=env,
                         extra_args=["--tls-ca", broker.pki.ca, "--mqtt-username", MQTT_USER])
    refused = lambda: len(re.findall(r"disconnected, not authori[sz]ed", broker.log()))  # noqa: E731
    harness.wait_until(lambda: refused() >= 3 or not bridge.alive(), RETRY_DEADLINE)
    assert refused() >= 3, "expected >= 3 refused logins in the broker log, saw %d%s" % (
        refused(), bridge.context())
    assert_broker_refused_with_retries(
        broker, bridge, col, r"not authori[sz]ed|bad user ?name or password|credentials|authenticat")
    assert_no_secret(bridge, col, [pw, wrong], env=env)
    assert_alive_then_clean_exit(bridge)


def test_mqtts_client_certificate_missing(sim, make_tls_broker, make_collector, make_bridge):
    pw = token("pw")
    broker = make_tls_broker(pw, require_certificate=True)
    col = make_collector(broker.port)
    bridge = make_bridge(sim.url, broker.tls_url, env={"COMFY2MQTT_MQTT_PASSWORD": pw},
                         extra_args=["--tls-ca", broker.pki.ca, "--mqtt-username", MQTT_USER])
    assert_broker_refused_with_retries(broker, bridge, col, r"certificate|handshake|\bTLS\b|\bSSL\b")
    assert_alive_then_clean_exit(bridge)


def test_mqtts_client_certificate_accepted(sim, make_tls_broker, make_collector, make_bridge):
    pw = token("pw")
    broker = make_tls_broker(pw, require_certificate=True)
    col = make_collector(broker.port)
    env = {"COMFY2MQTT_MQTT_PASSWORD": pw}
    bridge = make_bridge(sim.url, broker.tls_url, env=env,
                         extra_args=["--tls-ca", broker.pki.ca, "--tls-cert", broker.pki.client_cert,
                                     "--tls-key", broker.pki.client_key, "--mqtt-username", MQTT_USER])
    bridge.wait_connected(col, sim)
    assert broker.logins() >= 1
    assert_no_secret(bridge, col, [pw], env=env)


def test_mqtts_insecure_connects_and_warns_on_every_connect(sim, make_tls_broker, make_collector, make_bridge):
    pw = token("pw")
    broker = make_tls_broker(pw)
    col = make_collector(broker.port)
    bridge = make_bridge(sim.url, broker.tls_url, env={"COMFY2MQTT_MQTT_PASSWORD": pw},
                         extra_args=["--tls-ca", broker.pki.other_ca, "--tls-insecure",
                                     "--mqtt-username", MQTT_USER])
    bridge.wait_connected(col, sim)
    warn = (r"\bWARN", r"mqtt", r"verification is off|--tls-insecure")
    assert wait_log(bridge, *warn), "no warning about --tls-insecure on the first connect%s" % bridge.context()
    n_first = len(log_lines(bridge, *warn))

    broker.restart()  # same ports: forces a reconnect
    col2 = make_collector(broker.port)
    back = col2.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/bridge/state" and m.payload == b"online"],
                         timeout=30)
    assert back, "bridge did not reconnect after the broker restart%s" % bridge.context()
    assert wait_log(bridge, *warn, count=n_first + 1), \
        "no new --tls-insecure warning on the reconnect (%d in total)%s" % (len(log_lines(bridge, *warn)),
                                                                            bridge.context())


# --------------------------------------------------------------------------
# ComfyUI over wss:// and behind an authenticating proxy


def test_comfyui_wss_with_ca(pki, broker, collector, make_secure_sim, make_bridge):
    sim = make_secure_sim(pki=pki)
    bridge = make_bridge(sim.url, broker.url, extra_args=["--tls-ca", pki.ca])
    bridge.wait_connected(collector, sim)
    assert wait_log(bridge, r"\[ws\].*connected to wss://127\.0\.0\.1:%d/" % sim.port), \
        "https should become wss%s" % bridge.context()
    # the HTTP side uses TLS with the same CA: /system_stats gives the version
    assert wait_info(collector, lambda i: i.get("comfyui_version") == "0.21.0"), \
        "bridge/info has no comfyui_version: GET /system_stats over https failed? %r%s" % (
            info_of(collector), bridge.context())
    replay_and_wait_completion(sim, bridge, collector)
    harness.assert_all_valid(collector, bridge=bridge)


@pytest.mark.parametrize("case", ["wrong_ca", "no_ca", "wrong_name"])
def test_comfyui_wss_refused(case, pki, broker, collector, make_secure_sim, make_bridge):
    """An https ComfyUI whose certificate must not be trusted: no link, a
    clear line naming the server and the reason, retries, no crash."""
    sim = make_secure_sim(pki=pki, wrong_name=(case == "wrong_name"))
    args = {"wrong_ca": ["--tls-ca", pki.other_ca], "no_ca": [], "wrong_name": ["--tls-ca", pki.ca]}[case]
    bridge = make_bridge(sim.url, broker.url, extra_args=args)
    where = "wss://127.0.0.1:%d/" % sim.port
    assert wait_log(bridge, re.escape(where), timeout=10), "nothing logged about %s%s" % (where, bridge.context())
    assert bridge.alive(), "bridge died%s" % bridge.context()
    assert sim.clients()["connects"] == 0, "a WebSocket reached the simulator through a bad certificate"
    assert_not_online(collector, "/upstream/state")
    assert log_lines(bridge, re.escape(where), CERT_REASON + r"|host ?name|IP address"), \
        "no line names %s and says the certificate was refused%s" % (where, about(bridge, where))
    assert_alive_then_clean_exit(bridge)


def test_comfyui_wss_insecure_connects_and_warns(pki, broker, collector, make_secure_sim, make_bridge):
    """--tls-insecure also applies to an https ComfyUI (contract §1): the
    test CA's certificate is accepted without --tls-ca, with a warning on
    every connect."""
    sim = make_secure_sim(pki=pki)
    bridge = make_bridge(sim.url, broker.url, extra_args=["--tls-insecure"])
    bridge.wait_connected(collector, sim)
    warn = (r"\bWARN", r"\[ws\]", r"verification is off|--tls-insecure")
    assert wait_log(bridge, *warn), "no warning about --tls-insecure%s" % bridge.context()
    n_first = len(log_lines(bridge, *warn))
    sim.drop(bridge.client_id)  # forces a reconnect
    assert wait_log(bridge, *warn, count=n_first + 1, timeout=15), \
        "no new warning on the reconnect%s" % bridge.context()


def test_comfyui_header_through_proxy(pki, broker, collector, make_secure_sim, make_bridge):
    secret_value = token("Bearer")
    header = "Authorization: Bearer %s" % secret_value
    sim = make_secure_sim(pki=pki, header=header)
    args = ["--tls-ca", pki.ca, "--comfyui-header", header]
    bridge = make_bridge(sim.url, broker.url, extra_args=args)
    bridge.wait_connected(collector, sim)
    assert wait_info(collector, lambda i: i.get("comfyui_version") == "0.21.0"), \
        "GET /system_stats did not get through the proxy? bridge/info %r%s" % (info_of(collector), bridge.context())
    replay_and_wait_completion(sim, bridge, collector)
    assert sim.clients()["unauthorized"] == 0, "some bridge request lacked the header%s" % bridge.context()
    env = {"COMFY2MQTT_COMFYUI_HEADER": header}
    assert_no_secret(bridge, collector, [secret_value], args=args, env=env)
    harness.assert_all_valid(collector, bridge=bridge)


def test_comfyui_missing_header_logs_401_and_retries(broker, collector, make_secure_sim, make_bridge):
    sim = make_secure_sim(header="Authorization: Bearer %s" % token("Bearer"))
    bridge = make_bridge(sim.url, broker.url)
    harness.wait_until(lambda: sim.clients()["unauthorized"] >= 3 or not bridge.alive(), RETRY_DEADLINE)
    assert bridge.alive(), "bridge died%s" % bridge.context()
    assert sim.clients()["unauthorized"] >= 3, "expected >= 3 refused attempts, the simulator counted %d%s" % (
        sim.clients()["unauthorized"], bridge.context())
    where = "ws://127.0.0.1:%d/" % sim.port
    assert log_lines(bridge, re.escape(where), r"\b401\b|unauthori[sz]ed"), \
        "no line names %s and says 401/unauthorized%s" % (where, about(bridge, where))
    assert_not_online(collector, "/upstream/state")
    assert_alive_then_clean_exit(bridge)
