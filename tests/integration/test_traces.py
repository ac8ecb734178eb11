"""Replays every recorded WebSocket trace (tests/data/traces) through the
simulator into a running bridge and checks what reaches the broker against
contract §2-§4 and /work/notes/payloads.md:

* every text frame is published exactly once on its topic, in trace order,
  with `data` equal to the frame's data (NaN -> null);
* every prompt that ends in the trace gets exactly one terminal event, one
  completion and a retained final state (outputs with url / error);
* binary frames: type 3 -> event/progress_text, types 1/4/7 -> nothing
  (no --previews);
* prompts the bridge cannot see live (e2 foreign, e3 without client id) still
  get queued, execution_start, one terminal event, completion and state
  through /queue + /history polling (contract §4.1);
* nothing outside comfyui/test/, no payload over 256 KiB, every payload valid
  against schema/, seq strictly increasing per run without duplicates.
"""

import urllib.parse

import pytest

import harness
from harness import BASE, canonical, sanitize

TRACES = harness.trace_files()
TERMINAL_WAIT = 15  # seconds for the bridge to finish publishing a prompt
POLL_WAIT = 20      # seconds for /queue + /history derived events


def test_all_twelve_traces_are_covered():
    assert len(TRACES) == 12, "expected the 12 trace files of traces/README.md, found %s" % TRACES


# --------------------------------------------------------------------------
# what the trace says should happen


class Expectation:
    def __init__(self, trace):
        self.frames = harness.load_trace(trace)
        self.text = [f for f in self.frames if f["kind"] == "text"]
        self.binary = [f["desc"] for f in self.frames if f["kind"] == "binary"]
        # topic -> [canonical data, ...] in trace order
        self.by_topic = {}
        for f in self.text:
            obj = f["obj"]
            self.by_topic.setdefault(self.topic_of(obj), []).append(canonical(obj["data"]))
        self.owned = []       # prompts whose execution frames reach the bridge's socket
        self.terminal = {}    # prompt id -> (terminal type, frame data or None, derived?)
        self.executed = {}    # prompt id -> {node: output}
        errors = set()
        for f in self.text:
            t, d = f["obj"]["type"], f["obj"]["data"]
            pid = d.get("prompt_id") if isinstance(d, dict) else None
            if not isinstance(pid, str):
                continue
            if t == "execution_start" and pid not in self.owned:
                self.owned.append(pid)
            if t in ("execution_success", "execution_interrupted") or (t == "execution_error" and "timestamp" in d):
                assert pid not in self.terminal, "trace has two terminal frames for %s" % pid
                self.terminal[pid] = (t, d, False)
                if t == "execution_error":
                    errors.add(pid)
            if t == "execution_error":
                errors.add(pid)
            if t == "executed" and isinstance(d.get("output"), dict):
                self.executed.setdefault(pid, {})[d["node"]] = d["output"]
            if t == "executing" and d.get("node") is None and pid not in self.terminal and pid not in errors:
                # Servers before v0.0.3: `executing` null without an error is the success.
                self.terminal[pid] = ("execution_success", None, True)

    @staticmethod
    def topic_of(obj):
        d = obj["data"]
        pid = d.get("prompt_id") if isinstance(d, dict) else None
        if isinstance(pid, str):
            return "%s/prompt/%s/event/%s" % (BASE, sanitize(pid), sanitize(obj["type"]))
        return "%s/event/%s" % (BASE, sanitize(obj["type"]))


# --------------------------------------------------------------------------
# checks


def check_frames_published_once_in_order(col, exp, since):
    problems = []
    for topic, expected in exp.by_topic.items():
        wanted = set(expected)
        got = []
        for m, obj in col.json_messages(topic, since):
            if obj.get("source") == "live" and isinstance(obj.get("data"), dict):
                c = canonical(obj["data"])
                if c in wanted:
                    got.append(c)
        if got != expected:
            first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
            problems.append(
                "%s: expected %d live message(s) matching the trace frames in trace order, got %d; first "
                "difference at #%d:\n      expected %s\n      got      %s"
                % (topic, len(expected), len(got), first,
                   expected[first][:300] if first < len(expected) else "<nothing>",
                   got[first][:300] if first < len(got) else "<nothing>"))
    return problems


def terminal_messages(col, pid, since):
    out = []
    for t in sorted(harness.TERMINAL_TYPES):
        out += col.json_messages("%s/prompt/%s/event/%s" % (BASE, sanitize(pid), t), since)
    return out


def completions(col, pid, since):
    return [(m, o) for m, o in col.json_messages(BASE + "/completion", since) if o.get("prompt_id") == pid]


def check_image_urls(outputs, sim_url, where):
    """Every file reference in outputs carries url = <base>/view?filename=&subfolder=&type=."""
    problems = []
    for node, out in (outputs or {}).items():
        for key in ("images", "gifs", "audio", "video"):
            for ref in (out or {}).get(key, []) if isinstance(out, dict) else []:
                if not isinstance(ref, dict) or "filename" not in ref:
                    continue
                url = ref.get("url")
                if not isinstance(url, str) or not url.startswith(sim_url + "/view?"):
                    problems.append("%s: node %s %s ref %r has no url on %s/view" % (where, node, key, ref, sim_url))
                    continue
                q = urllib.parse.parse_qs(url.split("?", 1)[1], keep_blank_values=True)
                want = {k: [ref.get(k, "")] for k in ("filename", "subfolder", "type")}
                if {k: q.get(k) for k in want} != want:
                    problems.append("%s: url %s does not encode %r" % (where, url, want))
    return problems


def same_output_files(got, expected):
    """Compares outputs ignoring the bridge-added url."""
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k != "url"}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o
    return strip(got) == strip(expected)


def check_prompt_finished(col, broker, sim, pid, kind, frame_data, derived, executed, since, sources):
    """One terminal event of `kind`, one completion, a matching retained state."""
    problems = []
    status = harness.TERMINAL_TO_STATUS[kind]
    terms = terminal_messages(col, pid, since)
    if len(terms) != 1 or terms[0][0].topic.rsplit("/", 1)[1] != kind:
        problems.append("prompt %s: expected exactly one terminal event %s, got %s"
                        % (pid, kind, [(m.topic.rsplit("/", 1)[1], o.get("source")) for m, o in terms]))
    else:
        m, env = terms[0]
        if env.get("source") not in sources:
            problems.append("prompt %s: terminal event source %r, expected one of %s" % (pid, env.get("source"), sources))
        if env.get("prompt_id") != pid:
            problems.append("prompt %s: terminal event prompt_id %r" % (pid, env.get("prompt_id")))
        if "duration_ms" not in env:
            problems.append("prompt %s: terminal event without duration_ms" % pid)
        elif "live" in sources and not isinstance(env["duration_ms"], int):
            problems.append("prompt %s: execution_start was seen live, duration_ms should be an integer, got %r"
                            % (pid, env["duration_ms"]))
        if derived and env.get("derived") is not True:
            problems.append("prompt %s: success derived from `executing` null must carry \"derived\":true" % pid)
        if not derived and "derived" in env:
            problems.append("prompt %s: terminal event has \"derived\" although the server sent %s" % (pid, kind))
        if frame_data is not None and env.get("source") == "live" and env.get("data") is not None \
                and canonical(env["data"]) != canonical(frame_data):
            problems.append("prompt %s: terminal data differs from the frame" % pid)

    comps = completions(col, pid, since)
    if len(comps) != 1:
        problems.append("prompt %s: expected exactly one completion, got %d" % (pid, len(comps)))
    else:
        c = comps[0][1]
        if c.get("event_type") != status:
            problems.append("prompt %s: completion event_type %r, expected %r" % (pid, c.get("event_type"), status))
        if comps[0][0].retain:
            problems.append("prompt %s: completion must not be retained" % pid)
        problems += check_image_urls(c.get("outputs"), sim.url, "completion of %s" % pid)

    st = harness.read_retained(broker.port, "%s/prompt/%s/state" % (BASE, sanitize(pid)))
    if st is None or not st.payload:
        problems.append("prompt %s: no retained state" % pid)
        return problems
    state = st.json()
    if state.get("status") != status:
        problems.append("prompt %s: retained state status %r, expected %r" % (pid, state.get("status"), status))
    if "live" in sources and not isinstance(state.get("duration_ms"), int):
        problems.append("prompt %s: retained state duration_ms %r, expected an integer" % (pid, state.get("duration_ms")))
    if status == "success":
        if executed:
            outs = state.get("outputs")
            if not isinstance(outs, dict) or not same_output_files(outs, executed):
                problems.append("prompt %s: state outputs %r, expected the executed outputs %r"
                                % (pid, outs, executed))
            problems += check_image_urls(outs, sim.url, "state of %s" % pid)
            if comps and not same_output_files(comps[0][1].get("outputs"), executed):
                problems.append("prompt %s: completion outputs %r, expected %r"
                                % (pid, comps[0][1].get("outputs"), executed))
        if state.get("error") is not None:
            problems.append("prompt %s: success with error %r" % (pid, state.get("error")))
    if status == "error":
        err = state.get("error")
        if not isinstance(err, dict):
            problems.append("prompt %s: error state without error object" % pid)
        elif frame_data is not None:
            for k in ("node_id", "node_type", "exception_type", "exception_message"):
                if err.get(k) != frame_data.get(k):
                    problems.append("prompt %s: state error.%s = %r, frame has %r" % (pid, k, err.get(k), frame_data.get(k)))
            if not err.get("truncated") and err.get("traceback") != frame_data.get("traceback"):
                problems.append("prompt %s: state error.traceback differs from the frame" % pid)
    return problems


def check_binary_frames(col, exp, since):
    problems = []
    texts = [d for d in exp.binary if d["event_type"] == 3]
    got = [(o.get("data") or {}) for m, o in col.json_messages(BASE + "/event/progress_text", since)]
    want = [{"node": d["node_id"], "text": d["text"]} for d in texts]
    if [canonical(g) for g in got] != [canonical(w) for w in want]:
        problems.append("event/progress_text: expected exactly %r (one per type-3 frame), got %r" % (want, got))
    previews = col.messages(BASE + "/preview", since) + col.messages(BASE + "/prompt/*/preview", since)
    if previews:
        problems.append("previews published without --previews: %r" % previews[:3])
    return problems


def check_topics_sizes_qos(col):
    problems = []
    for m in col.messages():
        if not m.topic.startswith(BASE + "/"):
            problems.append("published outside %s/: %r" % (BASE, m))
        if len(m.payload) > harness.MAX_PAYLOAD:
            problems.append("%s: payload of %d bytes > 256 KiB" % (m.topic, len(m.payload)))
    problems += harness.qos_retain_problems(col)
    return problems


# --------------------------------------------------------------------------


@pytest.mark.parametrize("trace", TRACES)
def test_trace(trace, make_broker, make_sim, make_collector, make_bridge):
    broker = make_broker()
    sim = make_sim(server_version="0.0.2" if trace.startswith("g_") else None)
    col = make_collector(broker.port)
    bridge = make_bridge(sim.url, broker.url)
    bridge.wait_connected(col, sim)
    # Let the connect-time frames (status with sid, feature_flags reply) pass
    # so they are not counted against the trace's identical frames.
    col.wait_quiet(quiet=0.5, timeout=5)
    since = col.mark()

    exp = Expectation(trace)
    resp = sim.replay(trace, bridge.client_id)
    assert resp["sent"] == len(exp.frames), "simulator sent %r of %d frames" % (resp, len(exp.frames))
    foreign = [p for p in resp.get("prompts", []) if p not in exp.owned]
    if trace.startswith(("e2_", "e3_")):
        assert foreign, "replay of %s named no foreign/no-client prompt: %r" % (trace, resp)

    def all_finished(_msgs):
        for pid in list(exp.terminal) + foreign:
            if not terminal_messages(col, pid, since) or not completions(col, pid, since):
                return False
        return True

    col.wait_for(all_finished, timeout=POLL_WAIT if foreign else TERMINAL_WAIT)
    col.wait_quiet(quiet=0.7, timeout=8)

    problems = []
    problems += check_frames_published_once_in_order(col, exp, since)
    for pid, (kind, data, derived) in exp.terminal.items():
        problems += check_prompt_finished(col, broker, sim, pid, kind, data, derived,
                                          exp.executed.get(pid), since, sources=("live",))
    # Prompts the bridge can only learn about through /queue and /history.
    for pid in foreign:
        queued = col.json_messages("%s/prompt/%s/event/queued" % (BASE, sanitize(pid)), since)
        started = col.json_messages("%s/prompt/%s/event/execution_start" % (BASE, sanitize(pid)), since)
        if len(queued) != 1:
            problems.append("foreign prompt %s: expected exactly one `queued` event, got %d" % (pid, len(queued)))
        # payloads.md: a start the bridge did not see live comes from poll or history.
        # A prompt without client id (e3) broadcasts its progress_state to every
        # socket: whichever of that frame and the /queue poll comes first starts it.
        start_sources = ("poll", "history", "live") if trace.startswith("e3_") else ("poll", "history")
        if len(started) != 1 or started[0][1].get("source") not in start_sources:
            problems.append("foreign prompt %s: expected exactly one execution_start with source in %r, "
                            "got sources %r"
                            % (pid, start_sources, [o.get("source") for m, o in started]))
        hist = sim.history(pid).get(pid) or {}
        kinds = [msg[0] for msg in hist.get("status", {}).get("messages", [])]
        kind = next((k for k in ("execution_interrupted", "execution_error") if k in kinds), None)
        if kind is None:
            kind = "execution_success" if hist.get("status", {}).get("status_str") == "success" else "execution_error"
        problems += check_prompt_finished(col, broker, sim, pid, kind, None, False, None, since,
                                          sources=("history", "poll"))
    problems += check_binary_frames(col, exp, since)
    problems += check_topics_sizes_qos(col)
    problems += harness.seq_problems(col)

    assert not problems, "%s: %d problem(s):\n  - %s%s" % (trace, len(problems), "\n  - ".join(problems),
                                                          bridge.context())
    harness.assert_all_valid(col, bridge=bridge)
