"""Commands and the broker's ACL (contract §6, README "Who may send
commands"): with a real mosquitto that has a password_file (made with
`mosquitto_passwd -b -c`) and an acl_file, a user without write access to
<p>/<i>/command/# cannot make the bridge do anything: its prompt,
interrupt and free commands, over MQTT 5 or 3.1.1, never reach ComfyUI (the
simulator's POST counter, queue and history stay as they were) and are never
answered, while an allowed user's command is answered and submitted."""

import json
import os
import subprocess
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

import harness
from harness import BASE, default_workflow

MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"

USERS = {"bridge": "br1dge-pw", "renderbot": "r3nder-pw", "guest": "gu3st-pw", "watcher": "w4tch-pw"}

ACL = """\
# every user: read the bridge's topics, and its own answers
pattern read comfyui/#
pattern read replies/%u/#

user bridge
topic readwrite comfyui/#
topic readwrite homeassistant/#
topic write replies/#

user renderbot
topic write comfyui/+/command/#

user guest
"""


class AuthCollector(harness.Collector):
    """harness.Collector with a username and password."""

    def __init__(self, port, user, **kw):
        super().__init__(port, **kw)
        self.client.username_pw_set(user, USERS[user])


def acl_broker(tmp_path, procs):
    d = tmp_path / "acl-broker"
    d.mkdir()
    passwd, acl = str(d / "passwd"), str(d / "acl")
    first = True
    for user, pw in USERS.items():
        subprocess.run([MOSQUITTO_PASSWD, "-b"] + (["-c"] if first else []) + [passwd, user, pw],
                       check=True, capture_output=True)
        first = False
    with open(acl, "w") as f:
        f.write(ACL)
    conf = ["allow_anonymous false", "password_file %s" % passwd, "acl_file %s" % acl]
    return procs.add(harness.Broker(str(d), extra_conf=conf)).start()


def pub(port, user, topic, payload, version="mqttv5", props=()):
    """mosquitto_pub at QoS 1 as user: returns its completed process (it
    waits for the PUBACK, and with MQTT 5 reports a refusal on stderr)."""
    argv = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(port), "-V", version, "-q", "1",
            "-i", "acl-%s-%s" % (user, uuid.uuid4().hex[:8]), "-t", topic, "-m", json.dumps(payload)]
    if user is not None:
        argv += ["-u", user, "-P", USERS[user]]
    for name, value in props:
        argv += ["-D", "publish", name, value]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20)


def sim_state(sim):
    return sim.req("GET", "/_sim/state")


def known_ids(state):
    ids = set(state["pending"]) | set(state["running"]) | set(state["holding"])
    for h in state["history"] or []:
        ids.add(h if isinstance(h, str) else json.dumps(h))
    return ids


def test_acl_refuses_commands_of_users_without_write_access(tmp_path, procs, make_sim, make_bridge, collectors):
    broker = acl_broker(tmp_path, procs)
    sim = make_sim()
    watcher = AuthCollector(broker.port, "watcher").start()
    collectors.append(watcher)
    guest_inbox = AuthCollector(broker.port, "guest", topic="replies/guest/#").start()
    collectors.append(guest_inbox)
    bot_inbox = AuthCollector(broker.port, "renderbot", topic="replies/renderbot/#").start()
    collectors.append(bot_inbox)

    pwfile = tmp_path / "bridge.pw"
    pwfile.write_text(USERS["bridge"] + "\n")
    bridge = make_bridge(sim.url, broker.url,
                         extra_args=["--commands", "--mqtt-username", "bridge", "--mqtt-password-file", str(pwfile)])
    bridge.wait_connected(watcher, sim)
    before = sim_state(sim)

    # a user without write access: MQTT 5 (the broker says "not authorized"),
    # 3.1.1 (silently dropped), several verbs; and a client with no login
    denied_ids = []
    for version in ("mqttv5", "mqttv311"):
        pid = str(uuid.uuid4())
        denied_ids.append(pid)
        r = pub(broker.port, "guest", BASE + "/command/prompt",
                {"prompt": default_workflow(), "prompt_id": pid, "response_topic": "replies/guest/" + version},
                version=version,
                props=[("response-topic", "replies/guest/p5"), ("correlation-data", "g1")]
                if version == "mqttv5" else ())
        assert r.returncode == 0, r.stderr
        if version == "mqttv5":
            assert "not authorized" in r.stderr.lower(), r.stderr
        for verb, payload in (("interrupt", {}), ("free", {"unload_models": True, "free_memory": True}),
                              ("clear", {})):
            r = pub(broker.port, "guest", BASE + "/command/" + verb, payload, version=version)
            assert r.returncode == 0, r.stderr
    r = pub(broker.port, None, BASE + "/command/prompt", {"prompt": default_workflow()})
    assert r.returncode != 0, "an anonymous client was let in: " + r.stdout + r.stderr

    # an allowed user: answered on its MQTT 5 response topic and submitted
    allowed = str(uuid.uuid4())
    mark = bot_inbox.mark()
    r = pub(broker.port, "renderbot", BASE + "/command/prompt", {"prompt": default_workflow(), "prompt_id": allowed},
            props=[("response-topic", "replies/renderbot/a"), ("correlation-data", "job-7")])
    assert r.returncode == 0 and "failed" not in r.stderr.lower(), r.stderr
    got = bot_inbox.wait_for(lambda ms: [m for m in ms if m.topic == "replies/renderbot/a"], timeout=15, since=mark)
    assert got, "the allowed command was not answered: %s%s" % (watcher.dump(BASE + "/command/#"), bridge.context())
    answer = got[0].json()
    assert answer["ok"] is True and answer["command"] == "prompt", answer
    assert answer["prompt_id"] == allowed, answer
    assert got[0].props.get("CorrelationData") in (b"job-7", "job-7"), got[0].props

    # the refused commands never reached ComfyUI and were never answered
    watcher.wait_quiet(quiet=0.5, timeout=5)
    after = sim_state(sim)
    assert after["number"] - before["number"] == 1, (before, after)
    assert after["interrupts"] == before["interrupts"], (before, after)
    assert after["frees"] == before["frees"], (before, after)
    ids = known_ids(after)
    assert any(allowed in i for i in ids), (allowed, after)
    for pid in denied_ids:
        assert not any(pid in i for i in ids), (pid, after)
    assert guest_inbox.messages() == [], guest_inbox.dump()
    assert watcher.messages(BASE + "/command/response") == [], watcher.dump(BASE + "/command/#")
    assert bridge.alive(), bridge.context()
