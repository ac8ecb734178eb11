"""Home Assistant discovery (contract §3.7): the retained device discovery
message uses only keys Home Assistant documents for each platform, every
topic an entity reads is one the bridge really publishes, with payloads the
entity's value_template can work on, the message is re-announced when Home
Assistant says `online` and after a broker restart, and --ha-remove clears
it without touching ComfyUI or a running bridge.

The allowed keys below were read from Home Assistant's documentation
(home-assistant.io, source/_integrations/{mqtt,sensor.mqtt,binary_sensor.mqtt,
event.mqtt,image.mqtt,button.mqtt}.markdown): the configuration variables of each
platform, and the "Device discovery payload" section of the MQTT page for
the shared root keys."""

import json
import re

import paho.mqtt.client as mqtt

import harness
from harness import BASE, INSTANCE, PREFIX, sanitize

HA_PREFIX = "homeassistant"
DISCOVERY_TOPIC = "%s/device/%s_%s/config" % (HA_PREFIX, PREFIX, INSTANCE)
TRACE_A = "a_normal_txt2img.jsonl"
PID_A = "8c2f6e1a-4b7d-4e3a-9f05-6d1c2b8a7e94"
TRACE_C = "c_execution_error.jsonl"
PID_C = "f7a3c9e1-5d2b-4a6f-8e0c-3b9d1f5a7c62"
TRACE_F1 = "f1_previews_with_metadata.jsonl"
PID_F1 = "4e9c1b7a-3d8f-4a2e-9c6b-5f1e8a3d7b40"

# --------------------------------------------------------------------------
# what Home Assistant documents

# Device discovery: shared options at the root. Full names, plus the
# abbreviations of the structure keys the docs show in their examples.
ROOT_KEYS = {
    "device", "dev", "origin", "o", "components", "cmps",
    "availability", "availability_mode", "availability_template", "availability_topic",
    "payload_available", "payload_not_available",
    "command_topic", "state_topic", "qos", "encoding",
}
ROOT_REQUIRED = ({"device", "dev"}, {"origin", "o"}, {"components", "cmps"})
DEVICE_KEYS = {
    "configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
    "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device",
}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
AVAILABILITY_ENTRY_KEYS = {"topic", "payload_available", "payload_not_available", "value_template"}

# Keys every entity platform documents.
ENTITY_COMMON = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "device", "enabled_by_default", "encoding", "entity_category", "entity_picture", "icon",
    "json_attributes_template", "json_attributes_topic", "name", "object_id", "unique_id",
    # device discovery: "A platform (p) config option is required for each component"
    "platform", "p",
}
PLATFORM_KEYS = {
    "sensor": ENTITY_COMMON | {
        "device_class", "expire_after", "force_update", "last_reset_value_template", "options",
        "payload_available", "payload_not_available", "qos", "state_class", "state_topic",
        "suggested_display_precision", "unit_of_measurement", "value_template",
    },
    "binary_sensor": ENTITY_COMMON | {
        "device_class", "expire_after", "force_update", "off_delay", "payload_available",
        "payload_not_available", "payload_off", "payload_on", "qos", "state_topic", "value_template",
    },
    "event": ENTITY_COMMON | {
        "device_class", "event_types", "payload_available", "payload_not_available", "qos",
        "state_topic", "value_template",
    },
    "image": ENTITY_COMMON | {
        "content_type", "image_encoding", "image_topic", "url_template", "url_topic",
    },
    "button": ENTITY_COMMON | {
        "command_template", "command_topic", "device_class", "payload_available", "payload_not_available",
        "payload_press", "qos", "retain",
    },
}
# Required per platform ("required: true"; unique_id is required with
# device-based discovery; image needs image_topic or url_topic).
PLATFORM_REQUIRED = {
    "sensor": {"state_topic", "unique_id"},
    "binary_sensor": {"state_topic", "unique_id"},
    "event": {"state_topic", "event_types", "unique_id"},
    "image": {"unique_id"},
    "button": {"command_topic", "unique_id"},
}
SENSOR_STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
TOPIC_KEYS = ("state_topic", "json_attributes_topic", "image_topic", "url_topic")


def entity_key_problems(payload):
    """Every key against the documented sets; required keys present."""
    problems = []
    for k in payload:
        if k not in ROOT_KEYS:
            problems.append("root: %r is not a documented device-discovery key" % k)
    for alts in ROOT_REQUIRED:
        if not alts & set(payload):
            problems.append("root: one of %s is required" % sorted(alts))
    dev = payload.get("device", payload.get("dev")) or {}
    for k in dev:
        if k not in DEVICE_KEYS:
            problems.append("device: %r is not documented" % k)
    if not (dev.get("identifiers") or dev.get("connections")):
        problems.append("device: identifiers or connections required")
    origin = payload.get("origin", payload.get("o")) or {}
    for k in origin:
        if k not in ORIGIN_KEYS:
            problems.append("origin: %r is not documented" % k)
    if "name" not in origin:
        problems.append("origin: name is required")
    for i, a in enumerate(payload.get("availability") or []):
        for k in a:
            if k not in AVAILABILITY_ENTRY_KEYS:
                problems.append("availability[%d]: %r is not documented" % (i, k))
        if "topic" not in a:
            problems.append("availability[%d]: topic is required" % i)
    if payload.get("availability_mode", "latest") not in ("all", "any", "latest"):
        problems.append("availability_mode %r" % payload.get("availability_mode"))

    comps = payload.get("components", payload.get("cmps")) or {}
    uids = set()
    for cid, comp in comps.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", cid):
            problems.append("component id %r outside [A-Za-z0-9_-]" % cid)
        platform = comp.get("platform", comp.get("p"))
        if platform not in PLATFORM_KEYS:
            problems.append("%s: platform %r is not one we checked the docs of" % (cid, platform))
            continue
        for k in comp:
            if k not in PLATFORM_KEYS[platform]:
                problems.append("%s (%s): %r is not a documented key" % (cid, platform, k))
        for k in PLATFORM_REQUIRED[platform]:
            if k not in comp:
                problems.append("%s (%s): required %r missing" % (cid, platform, k))
        if platform == "image" and ("image_topic" in comp) == ("url_topic" in comp):
            problems.append("%s: exactly one of image_topic / url_topic" % cid)
        if platform == "sensor":
            if comp.get("entity_category") not in (None, "diagnostic"):
                problems.append("%s: sensors only take entity_category diagnostic" % cid)
            if "state_class" in comp and comp["state_class"] not in SENSOR_STATE_CLASSES:
                problems.append("%s: state_class %r" % (cid, comp["state_class"]))
        if platform == "event":
            et = comp.get("event_types")
            if not (isinstance(et, list) and et and all(isinstance(x, str) for x in et)):
                problems.append("%s: event_types must be a non-empty list of strings" % cid)
        uid = comp.get("unique_id")
        if uid in uids:
            problems.append("%s: unique_id %r used twice" % (cid, uid))
        uids.add(uid)
    return problems


# --------------------------------------------------------------------------
# the value templates, evaluated by hand


def _progress(v):
    p = v["progress"]
    if v["status"] == "running" and p and p["percent"] is not None:
        return p["percent"]
    return 0


def _last_error(v, prev):
    err = v["error"]
    if v["finished_at"] is None:
        return prev  # states(entity_id): a running prompt keeps the last one
    if v["status"] == "error" and err:
        return ((err.get("exception_type") or "error") + ": " + (err.get("exception_message") or ""))[:255]
    return "none"


def _last_duration(v, prev):
    if v["finished_at"] is not None and v["duration_ms"] is not None:
        return round(v["duration_ms"] / 1000, 3)
    return prev  # states(entity_id) | float(None)


# Python mirrors of the Jinja templates the bridge announces. Indexing is
# strict on purpose: a key the template reads but the payload lacks fails.
TEMPLATES = {
    "{{ value_json.queue_remaining }}": lambda v: v["queue_remaining"],
    "{{ 'ON' if value_json.running | length > 0 else 'OFF' }}":
        lambda v: "ON" if len(v["running"]) > 0 else "OFF",
    "{% if value_json.status == 'running' and value_json.progress and value_json.progress.percent is not none %}"
    "{{ value_json.progress.percent }}{% else %}0{% endif %}": _progress,
    "{{ value_json.prompt_id[:255] }}": lambda v: v["prompt_id"][:255],
    "{% if value_json.finished_at is not none and value_json.duration_ms is not none %}"
    "{{ (value_json.duration_ms / 1000) | round(3) }}{% else %}{{ states(entity_id) | float(None) }}{% endif %}":
        _last_duration,
    "{% if value_json.finished_at is none %}{{ states(entity_id) }}"
    "{% elif value_json.status == 'error' and value_json.error %}"
    "{{ ((value_json.error.get('exception_type') or 'error') ~ ': ' ~"
    " (value_json.error.get('exception_message') or ''))[:255] }}{% else %}none{% endif %}": _last_error,
}


def template_paths(tpl):
    """value_json.a.b references in a template (method calls excluded)."""
    return [m.split(".")[1:] for m in re.findall(r"value_json(?:\.[A-Za-z_][A-Za-z0-9_]*)+", tpl)
            if not m.endswith(".get")]


def path_problem(obj, path):
    """Why obj lacks path (a None parent ends the walk: templates guard it)."""
    cur = obj
    for i, k in enumerate(path):
        if k == "get":
            return None
        if cur is None:
            return None
        if not isinstance(cur, dict) or k not in cur:
            return "has no %s" % ".".join(path[: i + 1])
        cur = cur[k]
    return None


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# --------------------------------------------------------------------------
# helpers


def components(payload):
    return payload.get("components", payload.get("cmps"))


def by_suffix(payload, suffix):
    for cid, comp in components(payload).items():
        if cid.endswith("_" + suffix):
            return comp
    return None


def wait_discovery(col, since=0, count=1, timeout=15):
    got = col.wait_for(lambda ms: len([m for m in ms if m.topic == DISCOVERY_TOPIC and m.payload]) >= count,
                       timeout=timeout, since=since)
    ms = [m for m in col.messages(DISCOVERY_TOPIC, since) if m.payload]
    return ms if got else []


def publish(port, topic, payload, retain=False):
    c = mqtt.Client(client_id="ha-sim-" + topic.replace("/", "-"), protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        info = c.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=5)
        assert info.is_published(), "could not publish %s" % topic
    finally:
        c.disconnect()
        c.loop_stop()


def wait_completion(col, pid, since, timeout=20):
    def done(ms):
        for m in ms:
            if m.topic == BASE + "/completion":
                try:
                    if m.json().get("prompt_id") == pid:
                        return True
                except ValueError:
                    pass
        return False

    return col.wait_for(done, timeout=timeout, since=since)


# --------------------------------------------------------------------------
# tests


def test_discovery_uses_documented_keys(broker, sim, collector, make_bridge):
    bridge = make_bridge(sim.url, broker.url, extra_args=["--ha-discovery", "--previews"])
    bridge.wait_connected(collector, sim)
    ms = wait_discovery(collector)
    assert ms, "no discovery message on %s%s" % (DISCOVERY_TOPIC, bridge.context())
    m = ms[-1]
    assert m.retain and m.qos == 1, "discovery must be retained QoS 1, got %r" % m
    assert m.props.get("ContentType") == "application/json", m.props
    payload = m.json()

    problems = entity_key_problems(payload)
    dev = payload.get("device", payload.get("dev"))
    if dev.get("name") != "ComfyUI " + INSTANCE:
        problems.append("device name %r" % dev.get("name"))
    if dev.get("configuration_url") != sim.url:
        problems.append("configuration_url %r, ComfyUI is at %s" % (dev.get("configuration_url"), sim.url))
    if (payload.get("origin") or payload.get("o") or {}).get("name") != "comfy2mqtt":
        problems.append("origin name must be comfy2mqtt")
    avail = sorted(a["topic"] for a in payload.get("availability") or [])
    if avail != [BASE + "/bridge/state", BASE + "/upstream/state"] or payload.get("availability_mode") != "all":
        problems.append("availability %r mode %r" % (avail, payload.get("availability_mode")))
    for a in payload.get("availability") or []:
        if a.get("payload_available", "online") != "online" or a.get("payload_not_available", "offline") != "offline":
            problems.append("availability payloads %r" % a)

    want = {"queue_remaining": "sensor", "running": "binary_sensor", "progress": "sensor",
            "current_prompt": "sensor", "last_duration": "sensor", "last_error": "sensor",
            "completion": "event", "preview": "image"}
    for suffix, platform in want.items():
        comp = by_suffix(payload, suffix)
        if comp is None or comp.get("platform", comp.get("p")) != platform:
            problems.append("no %s entity %r" % (platform, suffix))
    if len(components(payload)) != len(want):
        problems.append("expected %d entities, got %s" % (len(want), sorted(components(payload))))
    c = by_suffix(payload, "completion") or {}
    if sorted(c.get("event_types") or []) != sorted(["success", "error", "interrupted", "cancelled", "lost"]):
        problems.append("completion event_types %r" % c.get("event_types"))
    for suffix in ("last_duration", "last_error"):
        # the retained snapshot: these sensors are back after a Home Assistant restart
        if (by_suffix(payload, suffix) or {}).get("state_topic") != BASE + "/current":
            problems.append("%s must read the retained %s/current" % (suffix, BASE))
    if (by_suffix(payload, "last_error") or {}).get("entity_category") != "diagnostic":
        problems.append("last error must be a diagnostic entity")
    ld = by_suffix(payload, "last_duration") or {}
    if ld.get("device_class") != "duration" or ld.get("unit_of_measurement") != "s":
        problems.append("last duration: device_class %r unit %r" % (ld.get("device_class"), ld.get("unit_of_measurement")))
    img = by_suffix(payload, "preview") or {}
    if img.get("image_topic") != BASE + "/preview" or img.get("content_type") != "image/jpeg":
        problems.append("preview image entity %r" % img)
    for comp in components(payload).values():
        tpl = comp.get("value_template")
        if tpl is not None and tpl not in TEMPLATES:
            problems.append("value_template %r has no Python mirror in this test" % tpl)
    assert not problems, "discovery payload:\n  " + "\n  ".join(problems) + "\n" + json.dumps(payload, indent=1)
    harness.assert_all_valid(collector, bridge=bridge)


def test_no_image_entity_without_previews(broker, sim, collector, make_bridge):
    bridge = make_bridge(sim.url, broker.url, extra_args=["--ha-discovery"])
    bridge.wait_connected(collector, sim)
    ms = wait_discovery(collector)
    assert ms, "no discovery message%s" % bridge.context()
    payload = ms[-1].json()
    assert by_suffix(payload, "preview") is None, "image entity without --previews"
    assert len(components(payload)) == 7, sorted(components(payload))
    assert not entity_key_problems(payload), entity_key_problems(payload)


def test_no_discovery_without_flag(broker, sim, collector, make_bridge):
    bridge = make_bridge(sim.url, broker.url)
    bridge.wait_connected(collector, sim)
    since = collector.mark()
    publish(broker.port, HA_PREFIX + "/status", "online")
    # the bridge's own traffic after HA's birth is the barrier: a replay
    # ends with a completion, after which any announcement would be queued
    sim.replay(TRACE_A, bridge.client_id)
    assert wait_completion(collector, PID_A, since), "trace a did not complete%s" % bridge.context()
    assert not collector.messages(HA_PREFIX + "/device/*"), collector.dump(HA_PREFIX + "/device/*")


def test_entity_topics_are_published_with_usable_payloads(broker, sim, collector, make_bridge):
    bridge = make_bridge(sim.url, broker.url, extra_args=["--ha-discovery", "--previews"])
    bridge.wait_connected(collector, sim)
    ms = wait_discovery(collector)
    assert ms, "no discovery message%s" % bridge.context()
    payload = ms[-1].json()
    since = collector.mark()
    for trace, pid in ((TRACE_A, PID_A), (TRACE_C, PID_C), (TRACE_F1, PID_F1)):
        sim.replay(trace, bridge.client_id)
        assert wait_completion(collector, pid, since), "%s did not complete%s" % (trace, bridge.context())
    collector.wait_quiet(quiet=0.7, timeout=8)

    problems = []
    for a in payload["availability"]:
        last = collector.last(a["topic"])
        if last is None or last.payload != a.get("payload_available", "online").encode():
            problems.append("availability topic %s: last payload %r" % (a["topic"], last and last.payload))

    for cid, comp in components(payload).items():
        platform = comp.get("platform")
        for key in TOPIC_KEYS:
            topic = comp.get(key)
            if topic is None:
                continue
            got = [m for m in collector.messages(topic) if m.payload]
            if not got:
                problems.append("%s.%s = %s: nothing published there" % (cid, key, topic))
                continue
            if key == "image_topic":
                ct = comp.get("content_type", "image/jpeg")
                for m in got:
                    if m.props.get("ContentType") != ct or not m.payload.startswith(b"\xff\xd8"):
                        problems.append("%s: image %r does not match content_type %s" % (cid, m, ct))
                continue
            objs = []
            for m in got:
                try:
                    objs.append(m.json())
                except ValueError:
                    problems.append("%s: %s payload is not JSON: %r" % (cid, topic, m.payload[:80]))
            if key == "json_attributes_topic":
                problems += ["%s: attributes payload is not an object" % cid for o in objs if not isinstance(o, dict)]
                continue
            tpl = comp.get("value_template")
            values = []
            for o in objs:
                for path in template_paths(tpl or ""):
                    why = path_problem(o, path)
                    if why:
                        problems.append("%s: payload on %s %s: %r" % (cid, topic, why, o))
                if platform == "event":
                    if o.get("event_type") not in comp["event_types"]:
                        problems.append("%s: event_type %r not in %r" % (cid, o.get("event_type"), comp["event_types"]))
                    continue
                if tpl is None:
                    continue
                fn = TEMPLATES[tpl]
                try:
                    if fn.__code__.co_argcount == 2:  # also reads its own last state
                        values.append(fn(o, values[-1] if values else None))
                    else:
                        values.append(fn(o))
                except (KeyError, TypeError, IndexError) as e:
                    problems.append("%s: template fails on %r: %r" % (cid, o, e))
            problems += check_values(cid, comp, values)
    assert not problems, "%d problem(s):\n  %s%s" % (len(problems), "\n  ".join(problems[:40]), bridge.context())
    harness.assert_all_valid(collector, bridge=bridge)


def check_values(cid, comp, values):
    """What the rendered states must look like for the replayed traces."""
    problems = []
    suffix = cid.rsplit("_", 1)[-1]
    if cid.endswith("queue_remaining"):
        if not values or not all(isinstance(v, int) and v >= 0 for v in values):
            problems.append("%s: states %r" % (cid, values))
    elif cid.endswith("running"):
        if "ON" not in values or values[-1] != "OFF":
            problems.append("%s: expected ON during a run and OFF at the end, got %r" % (cid, values))
    elif cid.endswith("progress"):
        if not all(is_number(v) and 0 <= v <= 100 for v in values) or not any(v > 0 for v in values):
            problems.append("%s: percent states %r" % (cid, values))
    elif cid.endswith("current_prompt"):
        if not {PID_A, PID_C, PID_F1} <= set(values):
            problems.append("%s: states %r" % (cid, sorted(set(values))))
    elif cid.endswith("last_duration"):
        if not all(v is None or (is_number(v) and v >= 0) for v in values) or not any(is_number(v) for v in values):
            problems.append("%s: states %r" % (cid, values))
    elif cid.endswith("last_error"):
        errors = sorted({v for v in values if v not in ("none", None)})
        if len(errors) != 1 or not errors[0].startswith("torch.OutOfMemoryError: ") or len(errors[0]) > 255:
            problems.append("%s: expected one OOM error and 'none' otherwise, got %r" % (cid, values))
        if "none" not in values:
            problems.append("%s: successes must read 'none', got %r" % (cid, values))
    elif suffix:
        pass
    return problems


def test_reannounce_on_home_assistant_online(broker, sim, collector, make_bridge):
    bridge = make_bridge(sim.url, broker.url, extra_args=["--ha-discovery"])
    bridge.wait_connected(collector, sim)
    first = wait_discovery(collector)
    assert first, "no discovery message%s" % bridge.context()
    collector.wait_quiet(quiet=0.3, timeout=5)
    since = collector.mark()
    # "offline" (HA's will) must not re-announce; "online" must, once
    publish(broker.port, HA_PREFIX + "/status", "offline")
    publish(broker.port, HA_PREFIX + "/status", "online")
    again = wait_discovery(collector, since=since)
    assert again, "no re-announcement after %s/status online%s" % (HA_PREFIX, bridge.context())
    collector.wait_quiet(quiet=0.5, timeout=5)
    again = [m for m in collector.messages(DISCOVERY_TOPIC, since) if m.payload]
    assert len(again) == 1, "expected one re-announcement, got %d" % len(again)
    assert again[0].payload == first[-1].payload and again[0].retain and again[0].qos == 1


def test_reannounce_after_broker_restart(make_broker, sim, make_collector, make_bridge):
    broker = make_broker()
    col = make_collector(broker.port)
    bridge = make_bridge(sim.url, broker.url, extra_args=["--ha-discovery"])
    bridge.wait_connected(col, sim)
    assert wait_discovery(col), "no discovery message%s" % bridge.context()
    since = col.mark()
    sim.replay(TRACE_A, bridge.client_id)
    assert wait_completion(col, PID_A, since), "trace a did not complete%s" % bridge.context()
    col.wait_quiet(quiet=0.5, timeout=5)
    broker.restart()  # no persistence: every retained message is gone
    assert harness.wait_until(lambda: col.connects >= 2, 15), "collector did not reconnect"
    msg = harness.read_retained(broker.port, DISCOVERY_TOPIC, timeout=15)
    assert msg is not None and msg.payload, "discovery not re-published after a broker restart%s" % bridge.context()
    # the retained topics the entities read must come back too, or the
    # entities stay empty until the next prompt
    missing = [leaf for leaf in ("bridge/state", "upstream/state", "queue", "current")
               if harness.read_retained(broker.port, BASE + "/" + leaf, timeout=3) is None]
    assert not missing, "not re-published after a broker restart: %s%s" % (missing, bridge.context())


def test_ha_remove_clears_discovery(broker, sim, collector, make_bridge):
    bridge = make_bridge(sim.url, broker.url, extra_args=["--ha-discovery"])
    bridge.wait_connected(collector, sim)
    assert wait_discovery(collector), "no discovery message%s" % bridge.context()
    assert harness.read_retained(broker.port, DISCOVERY_TOPIC) is not None
    connects = sim.clients().get("connects")
    since = collector.mark()

    # same options as the running bridge, so the same discovery topic
    res = harness.run_bridge_once(["--comfyui", sim.url, "--mqtt", broker.url, "--instance", INSTANCE,
                                   "--client-id", bridge.client_id, "--ha-remove"], timeout=20)
    assert res.returncode == 0, "--ha-remove exited %d:\n%s" % (res.returncode, res.stderr.decode()[-2000:])
    # the broker forwards the clearing message to the collector after
    # --ha-remove got its PUBACK and exited
    collector.wait_for(lambda ms: [m for m in ms if m.topic == DISCOVERY_TOPIC], timeout=5, since=since)
    cleared = [m for m in collector.messages(DISCOVERY_TOPIC, since)]
    assert cleared and cleared[-1].payload == b"" and cleared[-1].retain, collector.dump(DISCOVERY_TOPIC, since)
    assert harness.read_retained(broker.port, DISCOVERY_TOPIC, timeout=2) is None, "discovery still retained"
    assert sim.clients().get("connects") == connects, "--ha-remove connected to ComfyUI"
    # its own client id: the running bridge was neither kicked off nor marked offline
    offline = [m for m in collector.messages(BASE + "/bridge/state", since) if m.payload != b"online"]
    assert not offline and bridge.alive(), "running bridge disturbed: %r" % offline
    # nothing but the empty config was published
    others = [m for m in collector.messages(since=since) if m.topic != DISCOVERY_TOPIC and not m.topic.startswith(BASE)]
    assert not others, others


def test_ha_remove_fails_without_broker(sim):
    port = harness.free_port()
    res = harness.run_bridge_once(["--comfyui", sim.url, "--mqtt", "mqtt://127.0.0.1:%d" % port,
                                   "--instance", INSTANCE, "--ha-remove"], timeout=30)
    assert res.returncode == 1, "--ha-remove without a broker exited %d" % res.returncode
    assert sanitize(INSTANCE) in res.stderr.decode() and "not cleared" in res.stderr.decode(), res.stderr.decode()


def test_discovery_matches_the_asyncapi_schema(broker, sim, collector, make_bridge):
    """The payload schema in schema/asyncapi.yaml (origin included: Home
    Assistant requires it) accepts what the bridge really announces."""
    import jsonschema
    import yaml

    doc = yaml.safe_load(open(harness.SCHEMA_DIR + "/asyncapi.yaml", encoding="utf-8"))
    schema = doc["components"]["messages"]["haDiscovery"]["payload"]
    assert "origin" in schema.get("required", []), "the schema must require origin"
    bridge = make_bridge(sim.url, broker.url, extra_args=["--ha-discovery"])
    bridge.wait_connected(collector, sim)
    ms = wait_discovery(collector)
    assert ms, "no discovery message on %s%s" % (DISCOVERY_TOPIC, bridge.context())
    errors = sorted(e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(ms[-1].json()))
    assert not errors, "discovery payload does not match schema/asyncapi.yaml: %s" % errors


def test_image_entity_content_type_follows_png_previews(broker, sim, collector, make_bridge):
    """Home Assistant's image entity has one content type: when the retained
    preview turns PNG the device is re-announced with image/png, so the entity
    never decodes a PNG as JPEG."""
    import uuid

    from test_previews import frame_type4, make_image

    bridge = make_bridge(sim.url, broker.url, extra_args=["--ha-discovery", "--previews"])
    bridge.wait_connected(collector, sim)
    first = wait_discovery(collector)
    assert first, "no discovery message%s" % bridge.context()
    img = by_suffix(first[-1].json(), "preview") or {}
    assert img.get("content_type") == "image/jpeg", img
    since = collector.mark()
    sim.send(bridge.client_id, [frame_type4(str(uuid.uuid4()), make_image("PNG", 7), "image/png")])
    got = collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/preview"], timeout=10, since=since)
    assert got, "no retained preview published%s" % bridge.context()
    again = wait_discovery(collector, since=since)
    assert again, "the PNG preview did not re-announce the device%s" % bridge.context()
    img = by_suffix(again[-1].json(), "preview") or {}
    assert img.get("content_type") == "image/png", "image entity content_type %r after a PNG preview" % img


def test_buttons_with_commands_drive_comfyui(broker, sim, collector, make_bridge):
    """With --commands the device has three buttons (documented keys only);
    a press, published the way Home Assistant does (payload_press on
    command_topic, the device's QoS), makes the ComfyUI call and is answered
    on command/response. Without --commands there are none (see
    test_no_image_entity_without_previews: seven entities)."""
    bridge = make_bridge(sim.url, broker.url, extra_args=["--ha-discovery", "--commands"])
    bridge.wait_connected(collector, sim)
    ms = wait_discovery(collector)
    assert ms, "no discovery message%s" % bridge.context()
    payload = ms[-1].json()
    assert not entity_key_problems(payload), entity_key_problems(payload)
    assert len(components(payload)) == 10, sorted(components(payload))
    want = {"interrupt": ("Interrupt", "interrupt"), "clear_queue": ("Clear queue", "clear"),
            "free_memory": ("Free memory", "free")}
    buttons = {}
    for suffix, (name, verb) in want.items():
        comp = by_suffix(payload, suffix)
        assert comp is not None and comp.get("platform") == "button", (suffix, comp)
        assert comp.get("name") == name and comp.get("command_topic") == BASE + "/command/" + verb, comp
        buttons[verb] = comp

    # something to interrupt and something to clear: one held prompt, one pending
    running = sim.submit(client_id=bridge.client_id, hold=True)["prompt_id"]
    pending = sim.submit(client_id=bridge.client_id)["prompt_id"]
    harness.wait_until(lambda: running in sim.req("GET", "/_sim/state")["holding"], 10)
    before = sim.req("GET", "/_sim/state")
    assert pending in before["pending"], before

    since = collector.mark()
    for verb in ("clear", "free", "interrupt"):
        comp = buttons[verb]
        c = mqtt.Client(client_id="ha-button-" + verb, protocol=mqtt.MQTTv5)
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        try:
            info = c.publish(comp["command_topic"], comp["payload_press"], qos=payload.get("qos", 0),
                             retain=comp.get("retain", False))
            info.wait_for_publish(timeout=5)
        finally:
            c.disconnect()
            c.loop_stop()
        got = collector.wait_for(lambda ms: [m for m in ms if m.topic == BASE + "/command/response"
                                             and m.json().get("command") == verb], timeout=10, since=since)
        assert got, "no answer to the %s button%s" % (verb, bridge.context())
        assert got[-1].json()["ok"] is True, got[-1].json()
    sim.release(running)
    after = sim.req("GET", "/_sim/state")
    assert pending not in after["pending"], after
    assert len(after["interrupts"]) == len(before["interrupts"]) + 1, after["interrupts"]
    frees = after["frees"][len(before["frees"]):]
    assert len(frees) == 1 and frees[0].get("unload_models") and frees[0].get("free_memory"), frees

