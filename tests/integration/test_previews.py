"""Previews (contract §3.6): real JPEG and PNG images sent as ComfyUI binary
frames reach the subscriber byte for byte on prompt/<id>/preview and on the
retained <p>/<i>/preview with the right MQTT 5 content type; the per-prompt
rate limit; the size cap (dropped and counted); type 3 text frames go to
event/progress_text; without --previews nothing is published for types 1/4.

Frames (protocol.md §3): a big-endian u32 event type, then
  type 1: u32 image format (1 JPEG, 2 PNG), image bytes
  type 3: u32 node-id length, node id, UTF-8 text
  type 4: u32 metadata length, metadata JSON, image bytes"""

import io
import json
import random
import struct
import time
import uuid

from PIL import Image

import harness
from harness import BASE, sanitize

META_KEYS = ("node_id", "prompt_id", "display_node_id", "parent_node_id", "real_node_id", "image_type")


def make_image(fmt, seed, size=(64, 48), noise=False):
    """A real image file (JPEG or PNG) whose pixels depend on seed."""
    rnd = random.Random(seed)
    img = Image.new("RGB", size)
    if noise:
        img.putdata([(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))
                     for _ in range(size[0] * size[1])])
    else:
        base = rnd.randrange(256)
        img.putdata([((x * 4 + base) % 256, (y * 5 + seed) % 256, (x + y + base) % 256)
                     for y in range(size[1]) for x in range(size[0])])
    out = io.BytesIO()
    img.save(out, format=fmt)
    data = out.getvalue()
    # what the subscriber gets must be a decodable image of that format
    assert Image.open(io.BytesIO(data)).format == fmt
    return data


def frame_type4(prompt_id, image, mime, node="3"):
    meta = json.dumps({"node_id": node, "prompt_id": prompt_id, "display_node_id": node,
                       "parent_node_id": None, "real_node_id": node, "image_type": mime}).encode()
    return struct.pack(">II", 4, len(meta)) + meta + image


def frame_type1(image, fmt):
    return struct.pack(">II", 1, 1 if fmt == "JPEG" else 2) + image


def frame_type3(node, text):
    n = node.encode()
    return struct.pack(">II", 3, len(n)) + n + text.encode()


def pid():
    return str(uuid.uuid4())


def start_frames(prompt_id):
    """Text frames that make prompt_id the prompt executing node 3."""
    ts = int(time.time() * 1000)
    return [json.dumps({"type": "execution_start", "data": {"prompt_id": prompt_id, "timestamp": ts}}),
            json.dumps({"type": "executing", "data": {"node": "3", "display_node": "3", "prompt_id": prompt_id}})]


def previews_of(col, prompt_id, since=0):
    return col.messages("%s/prompt/%s/preview" % (BASE, sanitize(prompt_id)), since)


def start(broker, sim, collector, make_bridge, args=("--previews",)):
    bridge = make_bridge(sim.url, broker.url, extra_args=list(args))
    bridge.wait_connected(collector, sim)
    return bridge


def wait_progress_text(col, text, since):
    """The progress_text event carrying text: a barrier, since the bridge
    handles frames in order."""
    def seen(ms):
        for m in ms:
            if m.topic == BASE + "/event/progress_text":
                try:
                    if m.json()["data"].get("text") == text:
                        return m
                except (ValueError, KeyError):
                    pass
        return None

    return col.wait_for(seen, timeout=15, since=since)


def test_jpeg_and_png_arrive_byte_for_byte(broker, sim, collector, make_bridge):
    bridge = start(broker, sim, collector, make_bridge)
    jpeg = make_image("JPEG", 1)
    png = make_image("PNG", 2)
    p_jpeg, p_png, p_legacy = pid(), pid(), pid()
    since = collector.mark()
    sim.send(bridge.client_id, [frame_type4(p_jpeg, jpeg, "image/jpeg")])
    sim.send(bridge.client_id, [frame_type4(p_png, png, "image/png")])
    # type 1 carries no prompt id: it belongs to the prompt executing now
    legacy = make_image("PNG", 3)
    sim.send(bridge.client_id, start_frames(p_legacy) + [frame_type1(legacy, "PNG")])
    legacy_jpeg = make_image("JPEG", 4)

    problems = []
    for prompt_id, data, mime in ((p_jpeg, jpeg, "image/jpeg"), (p_png, png, "image/png"),
                                  (p_legacy, legacy, "image/png")):
        got = collector.wait_for(lambda ms, p=prompt_id: previews_of(collector, p, since), timeout=10)
        if not got:
            problems.append("%s: no preview on prompt/<id>/preview" % prompt_id)
            continue
        m = got[0]
        if m.payload != data:
            problems.append("%s: payload differs (%d bytes, sent %d)" % (prompt_id, len(m.payload), len(data)))
        if m.props.get("ContentType") != mime:
            problems.append("%s: content type %r, expected %s" % (prompt_id, m.props.get("ContentType"), mime))
        if m.retain or m.qos != 0:
            problems.append("%s: per-prompt preview must be QoS 0, not retained: %r" % (prompt_id, m))
        up = m.user_props()
        if up.get("prompt_id") != prompt_id or up.get("instance") != harness.INSTANCE:
            problems.append("%s: user properties %r" % (prompt_id, up))
    retained = collector.messages(BASE + "/preview", since)
    if [m.payload for m in retained] != [jpeg, png, legacy]:
        problems.append("retained preview topic got %r" % [(len(m.payload), m.props.get("ContentType")) for m in retained])
    if [m.props.get("ContentType") for m in retained] != ["image/jpeg", "image/png", "image/png"]:
        problems.append("retained preview content types %r" % [m.props.get("ContentType") for m in retained])
    if not all(m.retain and m.qos == 0 for m in retained):
        problems.append("retained preview flags %r" % retained)

    # the legacy JPEG format too (type 1, format 1), after the rate gap
    def legacy_jpeg_passed(_ms):
        sim.send(bridge.client_id, [frame_type1(legacy_jpeg, "JPEG")])
        return [m for m in previews_of(collector, p_legacy, since) if m.payload == legacy_jpeg]

    got = harness.wait_until(lambda: legacy_jpeg_passed(None), 10, interval=0.2)
    if not got or got[0].props.get("ContentType") != "image/jpeg":
        problems.append("type 1 JPEG: %r" % got)
    last = harness.read_retained(broker.port, BASE + "/preview")
    if last is None or last.payload != legacy_jpeg:
        problems.append("a fresh subscriber does not get the latest preview")
    assert not problems, "\n  ".join(problems) + bridge.context()
    harness.assert_all_valid(collector, bridge=bridge)


def test_rate_limit_per_prompt(broker, sim, collector, make_bridge):
    rate = 2.0
    bridge = start(broker, sim, collector, make_bridge, ("--previews", "--preview-rate", str(rate)))
    p1, p2 = pid(), pid()
    images = [make_image("JPEG", 100 + i) for i in range(10)]
    since = collector.mark()
    t0 = time.monotonic()
    sim.send(bridge.client_id, [frame_type4(p1, img, "image/jpeg") for img in images])
    burst_s = time.monotonic() - t0
    # another prompt has its own budget
    other = make_image("JPEG", 999)
    sim.send(bridge.client_id, [frame_type4(p2, other, "image/jpeg")])
    assert collector.wait_for(lambda ms: previews_of(collector, p2, since), timeout=10), \
        "preview of the second prompt missing%s" % bridge.context()
    # the limit keeps the latest: the burst's last preview follows when
    # the window opens
    assert collector.wait_for(
        lambda ms: [m for m in previews_of(collector, p1, since) if m.payload == images[-1]], timeout=5), \
        "the last preview of the burst never came%s" % bridge.context()
    collector.wait_quiet(quiet=0.3, timeout=5)

    passed = previews_of(collector, p1, since)
    allowed = 2 + int(burst_s * rate)
    assert 2 <= len(passed) <= allowed, "%d of 10 previews passed in a %.3f s burst at %.1f/s (allowed %d)%s" % (
        len(passed), burst_s, rate, allowed, bridge.context())
    assert passed[0].payload == images[0], "the first preview of a burst must pass"
    assert passed[-1].payload == images[-1], "the last preview of a burst must pass"
    assert passed[-1].t - passed[0].t >= 0.8 / rate, "the held preview came %.3f s after the first" % (
        passed[-1].t - passed[0].t)
    retained = [m for m in collector.messages(BASE + "/preview", since) if m.payload in images]
    assert len(retained) == len(passed), "retained preview not limited like the prompt's: %d vs %d" % (
        len(retained), len(passed))

    # once the gap has passed the next one goes through, not before
    t_first = passed[-1].t
    fresh = make_image("JPEG", 555)

    def next_passes():
        sim.send(bridge.client_id, [frame_type4(p1, fresh, "image/jpeg")])
        return [m for m in previews_of(collector, p1, since) if m.payload == fresh]

    got = harness.wait_until(next_passes, 10, interval=0.05)
    assert got, "no preview passed after the rate gap%s" % bridge.context()
    gap = got[0].t - t_first
    assert gap >= 0.8 / rate, "previews %.3f s apart at %.1f/s" % (gap, rate)


def test_too_large_is_dropped_and_counted(broker, sim, collector, make_bridge):
    big = make_image("PNG", 7, size=(160, 160), noise=True)
    small = make_image("JPEG", 8)
    cap = 20000
    assert len(big) > cap > len(small)
    bridge = start(broker, sim, collector, make_bridge,
                   ("--previews", "--preview-max-bytes", str(cap), "--health-interval", "1"))
    p_big, p_small = pid(), pid()
    since = collector.mark()
    sim.send(bridge.client_id, [frame_type4(p_big, big, "image/png"), frame_type4(p_small, small, "image/jpeg")])
    assert collector.wait_for(lambda ms: previews_of(collector, p_small, since), timeout=10), \
        "the small preview after the big one is missing%s" % bridge.context()
    # A finished prompt gets the engine's timer going, so bridge/health
    # comes even where the idle-bridge health bug (test_mqtt5) bites.
    sim.replay("a_normal_txt2img", bridge.client_id)

    def too_large(ms):
        for m in ms:
            if m.topic == BASE + "/bridge/health":
                try:
                    if m.json()["rejected"]["too_large"] >= 1:
                        return m
                except (ValueError, KeyError):
                    pass
        return None

    health = collector.wait_for(too_large, timeout=10, since=since)
    assert health, "bridge/health never counted rejected.too_large; last health: %r%s" % (
        collector.last(BASE + "/bridge/health"), bridge.context())
    assert health.json()["rejected"]["too_large"] == 1, health.json()["rejected"]
    assert not previews_of(collector, p_big, since), "a preview over --preview-max-bytes was published"
    assert not [m for m in collector.messages(BASE + "/preview", since) if m.payload == big]
    harness.assert_all_valid(collector, bridge=bridge)


def test_text_frame_goes_to_progress_text(broker, sim, collector, make_bridge):
    bridge = start(broker, sim, collector, make_bridge)
    since = collector.mark()
    text = "Image size: 512x512 \u2713"
    sim.send(bridge.client_id, [frame_type3("42", text)])
    m = wait_progress_text(collector, text, since)
    assert m, "no event/progress_text%s" % bridge.context()
    obj = m.json()
    assert obj["type"] == "progress_text" and obj["prompt_id"] is None, obj
    assert obj["data"] == {"node": "42", "text": text}, obj["data"]
    assert m.qos == 0 and not m.retain
    harness.assert_all_valid(collector, bridge=bridge)


def test_no_previews_without_flag(broker, sim, collector, make_bridge):
    bridge = start(broker, sim, collector, make_bridge, args=())
    p4, p1 = pid(), pid()
    since = collector.mark()
    sim.send(bridge.client_id, [frame_type4(p4, make_image("JPEG", 1), "image/jpeg")]
             + start_frames(p1) + [frame_type1(make_image("PNG", 2), "PNG"), frame_type3("9", "barrier")])
    assert wait_progress_text(collector, "barrier", since), "type 3 must still be published%s" % bridge.context()
    collector.wait_quiet(quiet=0.3, timeout=5)
    leaked = collector.messages(BASE + "/preview", since) + collector.messages(BASE + "/prompt/*/preview", since)
    assert not leaked, "previews published without --previews: %r" % leaked


def test_preview_burst_ends_with_its_last_step(broker, sim, collector, make_bridge):
    """A sampler's last steps come in a burst: the last step's preview is
    published and is the retained one (Home Assistant's image entity)."""
    bridge = start(broker, sim, collector, make_bridge)
    prompt_id = pid()
    since = collector.mark()
    sim.req("POST", "/prompt", {
        "prompt": harness.default_workflow(), "client_id": bridge.client_id, "prompt_id": prompt_id,
        "extra_data": {"sim": {"steps": 8, "step_ms": 40, "previews": True, "preview_burst": 5}}})
    last_step = b"step 8"
    got = collector.wait_for(
        lambda ms: [m for m in previews_of(collector, prompt_id, since) if last_step in m.payload], timeout=15)
    assert got, "the burst's last preview (step 8) was never published; got %d previews%s" % (
        len(previews_of(collector, prompt_id, since)), bridge.context())
    collector.wait_quiet(quiet=0.8, timeout=5)
    passed = previews_of(collector, prompt_id, since)
    assert last_step in passed[-1].payload, "the last preview published is not step 8"
    assert len(passed) < 8, "no rate limit: %d previews of 8 passed" % len(passed)
    retained = harness.read_retained(broker.port, BASE + "/preview")
    assert retained is not None and last_step in retained.payload, \
        "the retained preview is not the last step's%s" % bridge.context()
    harness.assert_all_valid(collector, bridge=bridge)
