"""schema/ is a usable, self-consistent contract: valid JSON Schema 2020-12,
every $ref resolves, asyncapi.yaml lists every topic of contract §2 with its
QoS and retain flag, and the payload examples of payloads.md validate while
broken ones do not."""

import copy
import json
import os
import re
import urllib.parse

import jsonschema
import pytest
import yaml

import harness

SCHEMA_FILES = sorted(f for f in os.listdir(harness.SCHEMA_DIR) if f.endswith(".schema.json"))
ASYNCAPI = os.path.join(harness.SCHEMA_DIR, "asyncapi.yaml")
CONTRACT_CANDIDATES = [
    os.path.join(harness.SOURCE_DIR, "..", "shared", "design", "contract.md"),
    "/work/shared/design/contract.md",
]

# Contract §2 as (address, retained, qos) with the AsyncAPI parameter names.
# Used when the contract file is not beside the work tree; when it is, the
# test below also checks that this copy still matches it.
CONTRACT_TOPICS = {
    "{prefix}/{instance}/bridge/state": (True, {1}),
    "{prefix}/{instance}/bridge/info": (True, {1}),
    "{prefix}/{instance}/bridge/health": (True, {0}),
    "{prefix}/{instance}/upstream/state": (True, {1}),
    "{prefix}/{instance}/queue": (True, {1}),
    "{prefix}/{instance}/prompt/{prompt_id}/event/{type}": (False, {0, 1}),
    "{prefix}/{instance}/prompt/{prompt_id}/state": (True, {1}),
    "{prefix}/{instance}/prompt/{prompt_id}/preview": (False, {0}),
    "{prefix}/{instance}/preview": (True, {0}),
    "{prefix}/{instance}/completion": (False, {1}),
    "{prefix}/{instance}/event/{type}": (False, {0}),
    "homeassistant/device/{prefix}_{instance}/config": (True, {1}),
}

# Topics the bridge adds to contract §2 (documented in the README and in
# schema/asyncapi.yaml): a fixed topic for the prompt running now, and the
# history cursor remembered across the bridge's own restarts.
BRIDGE_EXTENSIONS = {"{prefix}/{instance}/current": (True, {1}),
                     "{prefix}/{instance}/bridge/cursor": (True, {1}),
                     "{prefix}/{instance}/command/response": (False, {1})}

# Topics the bridge subscribes to (contract §2 lists them without QoS):
# AsyncAPI receive operations.
BRIDGE_RECEIVES = {"{prefix}/{instance}/command/{verb}"}

REQUIRED_SCHEMAS = {
    "envelope.schema.json", "state.schema.json", "completion.schema.json", "queue.schema.json",
    "bridge-info.schema.json", "bridge-health.schema.json", "bridge-cursor.schema.json",
    "command-answer.schema.json",
}


def load(name):
    with open(os.path.join(harness.SCHEMA_DIR, name), encoding="utf-8") as f:
        return json.load(f)


def contract_topics():
    """Parses the topic table of contract §2: {address: (retained, {qos})}."""
    for path in CONTRACT_CANDIDATES:
        if os.path.exists(path):
            break
    else:
        return None
    text = open(path, encoding="utf-8").read()
    section = text.split("## 2. Topic layout", 1)[1].split("\n## 3.", 1)[0]
    out = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*`([^`]+)`\s*\|([^|]*)\|([^|]*)\|", line)
        if not m or "/" not in m.group(1):
            continue
        addr = (m.group(1).replace("<p>", "{prefix}").replace("<i>", "{instance}")
                .replace("<id>", "{prompt_id}").replace("<type>", "{type}"))
        retained = m.group(2).strip().startswith("yes")
        # section references such as "(§3.2)" are not QoS levels
        cell = re.sub(r"§[0-9.]+", "", m.group(3))
        qos = {int(q) for q in re.findall(r"\b([012])\b", cell)}
        if not qos:
            continue  # a topic the bridge subscribes to (commands): no QoS of ours
        out[addr] = (retained, qos)
    return out


def test_required_schema_files_exist():
    missing = REQUIRED_SCHEMAS - set(SCHEMA_FILES)
    assert not missing, "schema files missing: %s" % sorted(missing)


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_is_valid_draft_2020_12(name):
    schema = load(name)
    assert schema.get("$schema") == "https://json-schema.org/draft/2020-12/schema", name
    assert schema.get("$id", "").endswith("/" + name), "$id of %s is %r" % (name, schema.get("$id"))
    jsonschema.Draft202012Validator.check_schema(schema)


def _walk_refs(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield path, v
            else:
                yield from _walk_refs(v, path + "/" + k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_refs(v, "%s/%d" % (path, i))


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_every_ref_resolves(name):
    store = {load(f)["$id"]: load(f) for f in SCHEMA_FILES}
    schema = load(name)
    resolver = jsonschema.RefResolver(base_uri=schema["$id"], referrer=schema, store=store)
    refs = list(_walk_refs(schema))
    bad = []
    for path, ref in refs:
        target = urllib.parse.urljoin(schema["$id"], ref)
        if target.split("#")[0] not in store:
            bad.append("%s: %s -> %s is not a schema in schema/" % (path, ref, target))
            continue
        try:
            resolver.resolve(target)
        except jsonschema.RefResolutionError as e:
            bad.append("%s: %s -> %s" % (path, ref, e))
    assert not bad, "\n".join(bad)


def _pointer(doc, ref):
    node = doc
    for part in ref.lstrip("#/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[part]
    return node


def asyncapi():
    with open(ASYNCAPI, encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_asyncapi_refs_resolve():
    doc = asyncapi()
    bad = []
    for path, ref in _walk_refs(doc):
        if ref.startswith("#/"):
            try:
                _pointer(doc, ref)
            except (KeyError, TypeError):
                bad.append("%s: %s does not resolve" % (path, ref))
        else:
            f = ref.split("#")[0]
            if not os.path.exists(os.path.join(harness.SCHEMA_DIR, f)):
                bad.append("%s: file %s missing" % (path, f))
    assert not bad, "\n".join(bad)


def test_asyncapi_lists_every_contract_topic_with_qos_and_retain():
    doc = asyncapi()
    assert str(doc.get("asyncapi", "")).startswith("3."), "not an AsyncAPI 3 document: %r" % doc.get("asyncapi")
    parsed = contract_topics()
    if parsed is not None:
        assert parsed == CONTRACT_TOPICS, "contract §2 changed; update schema/asyncapi.yaml and this test:\n%s" % parsed
    expected = dict(parsed or CONTRACT_TOPICS)
    expected.update(BRIDGE_EXTENSIONS)

    channels = doc["channels"]
    # the contract writes Home Assistant's prefix as its default
    by_address = {c["address"].replace("{ha_prefix}", "homeassistant"): name for name, c in channels.items()}
    for address in BRIDGE_RECEIVES:
        name = by_address.pop(address, None)
        assert name is not None, "asyncapi has no channel %s" % address
        assert [o["action"] for o in doc["operations"].values()
                if o["channel"]["$ref"] == "#/channels/" + name] == ["receive"], name
    assert set(by_address) == set(expected), "asyncapi channels %s\n!= contract topics %s" % (
        sorted(by_address), sorted(expected))

    problems = []
    for address, (retained, qos_set) in expected.items():
        name = by_address[address]
        ch = channels[name]
        params = set(re.findall(r"\{(\w+)\}", ch["address"]))
        declared = set((ch.get("parameters") or {}).keys())
        if params != declared:
            problems.append("%s: parameters %s, address uses %s" % (name, sorted(declared), sorted(params)))
        if not ch.get("messages"):
            problems.append("%s: no messages" % name)
        ops = [o for o in doc["operations"].values() if o["channel"]["$ref"] == "#/channels/" + name]
        if not ops:
            problems.append("%s: no operation" % name)
        got_qos = set()
        for o in ops:
            if o.get("action") != "send":
                problems.append("%s: action %r" % (name, o.get("action")))
            mq = o.get("bindings", {}).get("mqtt", {})
            got_qos.add(mq.get("qos"))
            if mq.get("retain") is not retained:
                problems.append("%s: retain %r, contract says %r" % (name, mq.get("retain"), retained))
        if got_qos != qos_set:
            problems.append("%s: qos %s, contract says %s" % (name, sorted(got_qos, key=str), sorted(qos_set)))
    assert not problems, "\n".join(problems)


def test_asyncapi_hard_codes_no_prefix():
    """--prefix and --ha-prefix are options: the will and every address use parameters."""
    doc = asyncapi()
    will = doc["servers"]["broker"]["bindings"]["mqtt"]["lastWill"]["topic"]
    assert will.startswith("{prefix}/"), "last will topic %r hard-codes the prefix" % will
    bad = [c["address"] for c in doc["channels"].values()
           if c["address"].startswith(("comfyui/", "homeassistant/"))]
    assert not bad, "addresses with a fixed prefix: %s" % bad


def test_asyncapi_documents_expiry():
    doc = asyncapi()
    ops = doc["operations"]
    by_channel = {}
    for o in ops.values():
        by_channel.setdefault(o["channel"]["$ref"].split("/")[-1], []).append(o)
    # state: --state-ttl; health: 3x interval; progress events: 60 s (contract §3.8)
    assert any("x-message-expiry" in o and "state-ttl" in str(o["x-message-expiry"])
               for o in by_channel["promptState"])
    assert any("x-message-expiry" in o for o in by_channel["bridgeHealth"])
    assert any(o.get("x-message-expiry") == 60 and o["bindings"]["mqtt"]["qos"] == 0
               for o in by_channel["promptEvent"])


def test_asyncapi_message_payloads_reference_schema_files():
    doc = asyncapi()
    refs = {m["payload"].get("$ref") for m in doc["components"]["messages"].values()}
    for name in REQUIRED_SCHEMAS | {"availability.schema.json"}:
        assert "./" + name in refs, "no message uses %s" % name


# --------------------------------------------------------------------------
# examples from /work/notes/payloads.md

PID = "8c2f6e1a-4b7d-4e3a-9f05-6d1c2b8a7e94"
META = {"ts": 1764400000123, "seq": 4711, "run": 1764399000000}


def env(type_, data, prompt_id=PID, node=None, source="live", **derived):
    out = {"v": 1, "type": type_, "instance": "gpu1", "prompt_id": prompt_id, "node": node}
    out.update(META)
    out["source"] = source
    out.update(derived)
    out["data"] = data
    return out


IMG = {"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output",
       "url": "http://127.0.0.1:8188/view?filename=ComfyUI_00001_.png&subfolder=&type=output"}
ERROR = {"node_id": "3", "node_type": "KSampler", "exception_type": "torch.OutOfMemoryError",
         "exception_message": "Allocation on device\n", "traceback": ["  File \"x.py\", line 1, in f\n"]}

STATE_RUNNING = {
    "v": 1, "prompt_id": PID, "instance": "gpu1", "status": "running", "queued_at": 1764399999000,
    "started_at": 1764400000000, "finished_at": None, "duration_ms": None, "node": "3",
    "progress": {"node": "3", "value": 5, "max": 20, "percent": 25.0}, "nodes_cached": ["4"],
    "nodes_done": ["6", "7"], "node_ms": {"6": 412, "7": 398}, "outputs": None, "error": None,
    "source": "live", **META,
}
STATE_SUCCESS = dict(STATE_RUNNING, status="success", finished_at=1764400008123, duration_ms=8123, node=None,
                     progress=None, outputs={"9": {"images": [IMG]}})
STATE_ERROR = dict(STATE_RUNNING, status="error", finished_at=1764400001000, duration_ms=1000, error=ERROR)
COMPLETION = {"v": 1, "event_type": "success", "prompt_id": PID, "instance": "gpu1", "duration_ms": 8123,
              "outputs": {"9": {"images": [IMG]}}, "error": None, "source": "live", **META}
QUEUE = {"v": 1, "queue_remaining": 2, "running": [PID], "pending": ["a1b2"], **META}
INFO = {"v": 1, "version": "0.1.0", "instance": "gpu1", "prefix": "comfyui", "comfyui_url": "http://127.0.0.1:8188",
        "comfyui_version": "0.21.0", "client_id": "comfy2mqtt-gpu1", "mqtt_client_id": "comfy2mqtt-gpu1-ab12",
        "mqtt_protocol": "5", "started_at": 1764399000000, "options": {"prefix": "comfyui", "previews": False},
        **META}
REASONS = ["empty", "invalid_json", "invalid_utf8", "too_deep", "too_many_tokens", "not_object", "missing_type",
           "bad_field", "too_large", "truncated_binary", "unknown_binary_type", "bad_image_format"]
REFUSALS = ["not_authorized", "topic_name_invalid", "packet_too_large", "quota_exceeded",
            "payload_format_invalid", "other"]
HEALTH = {"v": 1, "uptime_s": 120, "comfyui_connected": True, "mqtt_connected": True,
          "frames": {"text": 53, "binary": 0},
          "published": {"critical": 3, "lifecycle": 20, "progress": 30, "preview": 0},
          "queue": {"depth": 0, "bytes": 0}, "dropped": {"critical": 0, "lifecycle": 0, "progress": 0, "preview": 0},
          "refused": {r: 0 for r in REFUSALS},
          "rejected": {r: 0 for r in REASONS}, "reconnects": {"comfyui": 0, "mqtt": 0},
          "backpressure": {"pauses": 0, "paused_ms": 0}, "resyncs": 1,
          "recovered_from_history": 0, "lost": 0, "last_frame_age_s": 1.5, **META}

GOOD = {
    "progress": ("envelope.schema.json", env("progress", {"value": 5, "max": 20, "prompt_id": PID, "node": "3"},
                                              node="3", percent=25.0)),
    "progress max 0": ("envelope.schema.json", env("progress", {"value": 0, "max": 0, "prompt_id": PID, "node": "3"},
                                                    node="3", percent=None)),
    "executing": ("envelope.schema.json", env("executing", {"node": "3", "display_node": "3", "prompt_id": PID},
                                               node="3", node_started_at=1764400000123)),
    "executing end": ("envelope.schema.json", env("executing", {"node": None, "prompt_id": PID},
                                                   node=None, node_started_at=None)),
    "executed": ("envelope.schema.json", env("executed", {"node": "9", "display_node": "9", "output":
                                                          {"images": [IMG]}, "prompt_id": PID},
                                              node="9", node_ms=412, images=1)),
    "success": ("envelope.schema.json", env("execution_success", {"prompt_id": PID, "timestamp": 1},
                                             duration_ms=8123)),
    "derived success": ("envelope.schema.json", dict(env("execution_success", {"prompt_id": PID},
                                                         duration_ms=None), derived=True)),
    "error": ("envelope.schema.json", env("execution_error", dict(ERROR, prompt_id=PID, timestamp=5),
                                           node="3", duration_ms=1000)),
    "blocked error": ("envelope.schema.json", env("execution_error", {"prompt_id": PID, "exception_type":
                                                                      "ExecutionBlocked", "traceback": []},
                                                   node="3")),
    "interrupted from history": ("envelope.schema.json", env("execution_interrupted", {"prompt_id": PID,
                                                             "node_id": "3", "node_type": "KSampler",
                                                             "executed": [], "timestamp": 9},
                                                             node="3", source="history", duration_ms=None)),
    "queued": ("envelope.schema.json", env("queued", {"prompt_id": PID, "number": 5, "client_id": None},
                                            source="poll")),
    "start from poll": ("envelope.schema.json", env("execution_start", {"prompt_id": PID, "timestamp": 7},
                                                     source="poll")),
    "lost": ("envelope.schema.json", env("lost", {"prompt_id": PID, "reason": "not in queue or history after "
                                                  "reconnect"}, source="history", duration_ms=None)),
    "progress_text": ("envelope.schema.json", env("progress_text", {"node": "12", "text": "width: 512"},
                                                   prompt_id=None)),
    "status": ("envelope.schema.json", env("status", {"status": {"exec_info": {"queue_remaining": 1}}},
                                            prompt_id=None)),
    "unknown custom event": ("envelope.schema.json", env("impact-node-feedback", {"node_id": "10", "value": None},
                                                          prompt_id=None)),
    "truncated": ("envelope.schema.json", dict(env("execution_cached", {"nodes": [], "prompt_id": PID}),
                                               truncated=True)),
    "state running": ("state.schema.json", STATE_RUNNING),
    "state success": ("state.schema.json", STATE_SUCCESS),
    "state error": ("state.schema.json", STATE_ERROR),
    "state interrupted": ("state.schema.json", dict(STATE_RUNNING, status="interrupted", finished_at=2,
                                                    error={"node_id": "3", "node_type": "KSampler"})),
    "state lost": ("state.schema.json", dict(STATE_RUNNING, status="lost", finished_at=2, source="history")),
    "completion": ("completion.schema.json", COMPLETION),
    "completion error": ("completion.schema.json", dict(COMPLETION, event_type="error", outputs=None,
                                                        error=ERROR)),
    "queue": ("queue.schema.json", QUEUE),
    "info": ("bridge-info.schema.json", INFO),
    "health": ("bridge-health.schema.json", HEALTH),
    "online": ("availability.schema.json", "online"),
    "offline": ("availability.schema.json", "offline"),
}


def _del(d, key):
    d = copy.deepcopy(d)
    del d[key]
    return d


def _set(d, key, value):
    d = copy.deepcopy(d)
    d[key] = value
    return d


_PROGRESS = GOOD["progress"][1]
BAD = {
    "envelope without seq": ("envelope.schema.json", _del(_PROGRESS, "seq")),
    "envelope extra key": ("envelope.schema.json", _set(_PROGRESS, "extra", 1)),
    "envelope bad source": ("envelope.schema.json", _set(_PROGRESS, "source", "guess")),
    "envelope v2": ("envelope.schema.json", _set(_PROGRESS, "v", 2)),
    "progress without percent": ("envelope.schema.json", _del(_PROGRESS, "percent")),
    "progress without data.max": ("envelope.schema.json", _set(_PROGRESS, "data", {"value": 5})),
    "percent on status": ("envelope.schema.json", _set(GOOD["status"][1], "percent", 1.0)),
    "executing without node_started_at": ("envelope.schema.json", _del(GOOD["executing"][1], "node_started_at")),
    "executed without images": ("envelope.schema.json", _del(GOOD["executed"][1], "images")),
    "node_ms on progress": ("envelope.schema.json", _set(_PROGRESS, "node_ms", 3)),
    "success without duration": ("envelope.schema.json", _del(GOOD["success"][1], "duration_ms")),
    "timestamped error without duration": ("envelope.schema.json", _del(GOOD["error"][1], "duration_ms")),
    "duration on blocked error": ("envelope.schema.json", _set(GOOD["blocked error"][1], "duration_ms", 1)),
    "queued without client_id": ("envelope.schema.json", _set(GOOD["queued"][1], "data", {"prompt_id": PID,
                                                                                         "number": 1})),
    "progress_text without text": ("envelope.schema.json", _set(GOOD["progress_text"][1], "data", {"node": "1"})),
    "derived on progress": ("envelope.schema.json", _set(_PROGRESS, "derived", True)),
    "ts as string": ("envelope.schema.json", _set(_PROGRESS, "ts", "1764400000123")),
    "state wrong status": ("state.schema.json", _set(STATE_RUNNING, "status", "done")),
    "state without seq": ("state.schema.json", _del(STATE_RUNNING, "seq")),
    "state extra key": ("state.schema.json", _set(STATE_RUNNING, "extra", None)),
    "state error without error": ("state.schema.json", _set(STATE_ERROR, "error", None)),
    "state success without finished_at": ("state.schema.json", _set(STATE_SUCCESS, "finished_at", None)),
    "state image without url": ("state.schema.json", _set(STATE_SUCCESS, "outputs", {"9": {"images": [
        {"filename": "a.png", "subfolder": "", "type": "output"}]}})),
    "completion wrong event_type": ("completion.schema.json", _set(COMPLETION, "event_type", "execution_success")),
    "completion without seq": ("completion.schema.json", _del(COMPLETION, "seq")),
    "completion extra key": ("completion.schema.json", _set(COMPLETION, "status", "success")),
    "queue running as string": ("queue.schema.json", _set(QUEUE, "running", PID)),
    "queue extra key": ("queue.schema.json", _set(QUEUE, "queue", [])),
    "info with password": ("bridge-info.schema.json", _set(INFO, "options", {"mqtt_password": "x"})),
    "info with url credentials": ("bridge-info.schema.json", _set(INFO, "comfyui_url", "http://u:p@h:8188")),
    "info wrong protocol": ("bridge-info.schema.json", _set(INFO, "mqtt_protocol", 5)),
    "health missing reason": ("bridge-health.schema.json", _set(HEALTH, "rejected", {"empty": 0})),
    "health extra key": ("bridge-health.schema.json", _set(HEALTH, "cpu", 1)),
    "availability other": ("availability.schema.json", "maybe"),
}


@pytest.mark.parametrize("case", sorted(GOOD))
def test_example_validates(case):
    schema, instance = GOOD[case]
    errors = harness.schema_errors(schema, instance)
    assert not errors, "%s should be valid against %s:\n%s" % (case, schema, "\n".join(errors))


@pytest.mark.parametrize("case", sorted(BAD))
def test_broken_example_is_rejected(case):
    schema, instance = BAD[case]
    assert harness.schema_errors(schema, instance), "%s must not validate against %s" % (case, schema)


# --------------------------------------------------------------------------
# the harness's topic -> schema routing, which every integration test relies on


def _msg(topic, payload, retain=False, qos=1, props=None):
    if not isinstance(payload, (bytes, str)):
        payload = json.dumps(payload, separators=(",", ":"))
    if isinstance(payload, str):
        payload = payload.encode()
    return harness.Msg(0, topic, payload, qos, retain, props or {}, 0.0)


def _test_env(**kw):
    e = env("execution_start", {"prompt_id": PID, "timestamp": 1})
    e["instance"] = "test"
    e.update(kw)
    return e


def test_harness_routes_topics_to_schemas():
    base = harness.BASE
    good = [
        _msg(base + "/prompt/%s/event/execution_start" % PID, _test_env()),
        _msg(base + "/event/status", dict(_test_env(type="status", prompt_id=None), data={})),
        _msg(base + "/bridge/state", "online", retain=True),
        _msg(base + "/prompt/%s/state" % PID, b"", retain=True),
        _msg(base + "/prompt/%s/preview" % PID, b"\xff\xd8", props={"ContentType": "image/jpeg"}),
        _msg(base + "/command/response", {"v": 1, "command": "clear", "ok": True, "correlation": None}),
        _msg(base + "/command/prompt", b"{not json"),  # a client's command: not the bridge's
    ]
    for m in good:
        assert harness.message_problems(m) == [], (m, harness.message_problems(m))
    bad = [
        _msg(base + "/prompt/other/event/execution_start", _test_env()),          # prompt id != topic
        _msg(base + "/prompt/%s/event/executing" % PID, _test_env()),              # type != topic
        _msg(base + "/event/execution_start", _test_env()),                        # prompt_id on event/
        _msg(base + "/prompt/%s/event/execution_start" % PID, _test_env(instance="gpu1")),
        _msg(base + "/bridge/state", "up", retain=True),
        _msg(base + "/queue", QUEUE.__class__(QUEUE, extra=1)),
        _msg(base + "/nonsense", {}),
        _msg(base + "/completion", b'{"v":1,"x":NaN}'),
        _msg(base + "/prompt/%s/preview" % PID, b"\xff\xd8"),
        _msg(base + "/command/response", {"v": 1, "command": "clear", "ok": False, "correlation": None}),
    ]
    for m in bad:
        assert harness.message_problems(m), "harness accepted %r" % m


def test_sanitize_matches_contract():
    assert harness.sanitize("8c2f-1.a:b_c") == "8c2f-1.a:b_c"
    assert harness.sanitize("a/b+c#d e") == "a_b_c_d_e"
    assert harness.sanitize("$SYS") == "_SYS"
    assert harness.sanitize("") == "_"
    assert harness.sanitize("é") == "__"
    long_id = "x" * 200
    assert harness.sanitized_matches(long_id, "x" * 87 + "_0123abcd")
    assert not harness.sanitized_matches(long_id, "x" * 200)
