"""Self-test of the ComfyUI simulator (tests/sim/comfyui_sim.py).

Every test starts its own simulator on a free port and talks to it with
aiohttp's client (and, for fragmented or invalid frames, a tiny raw RFC 6455
reader), checking the behaviour the bridge's integration tests rely on.
"""

import asyncio
import base64
import json
import os
import re
import selectors
import signal
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

REPO = Path(__file__).resolve().parents[2]
SIM = REPO / "tests" / "sim" / "comfyui_sim.py"
TRACES = Path(os.environ.get("C2M_TRACES_DIR", REPO / "tests" / "data" / "traces"))
SAMPLES = Path(os.environ.get("C2M_SAMPLES_DIR", REPO / "tests" / "data" / "http-samples"))
BRIDGE_ID = "5f0c2a8e-3b1d-4c7e-9a62-1d4e8b7f0c35"  # the traces' socket
FLAGS = {"type": "feature_flags", "data": {"supports_preview_metadata": True}}


def load_sample(name):
    return json.loads((SAMPLES / name).read_text())


WORKFLOW = next(iter(load_sample("history_by_id_success.json").values()))["prompt"][2]


class Sim:
    """One simulator subprocess."""

    def __init__(self, tmp_path, *extra, port=0, state_file=None):
        self.state_file = state_file or str(tmp_path / "sim-state.json")
        cmd = [sys.executable, str(SIM), "--port", str(port), "--state-file",
               self.state_file, "--step-ms", "5", *extra]
        self.stderr = open(tmp_path / ("sim-%d.log" % time.monotonic_ns()), "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr)
        line = self._read_line(15.0)
        assert line.startswith("LISTENING "), line
        self.port = int(line.split()[1])
        self.base = "http://127.0.0.1:%d" % self.port

    def _read_line(self, timeout):
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            self.proc.kill()
            raise AssertionError("simulator did not announce its port")
        return self.proc.stdout.readline().decode()

    def url(self, path):
        return self.base + path

    def ws_url(self, client_id=None, prefix=""):
        query = "" if client_id is None else "?clientId=" + client_id
        return "ws://127.0.0.1:%d%s/ws%s" % (self.port, prefix, query)

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Signal the simulator and return how long it took to exit."""
        if self.proc.poll() is None:
            started = time.monotonic()
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("simulator ignored signal %d" % sig)
            return time.monotonic() - started
        return 0.0

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.stderr.close()


@pytest.fixture
def sim(tmp_path):
    instance = Sim(tmp_path)
    yield instance
    elapsed = instance.stop()
    instance.close()
    assert elapsed < 3.0, "SIGTERM must stop the simulator promptly"


def run(coro, timeout=40):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ---- client helpers ------------------------------------------------------------


class Frame:
    """A received frame: text (with parsed JSON) or binary."""

    def __init__(self, msg):
        self.binary = msg.type == aiohttp.WSMsgType.BINARY
        self.raw = msg.data
        self.obj = None if self.binary else json.loads(msg.data)

    @property
    def type(self):
        return "binary" if self.binary else self.obj["type"]

    @property
    def data(self):
        return self.obj["data"]

    def __repr__(self):
        return "<binary %d>" % len(self.raw) if self.binary else self.raw[:120]


async def recv(ws, timeout=10.0):
    msg = await ws.receive(timeout=timeout)
    assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
    return Frame(msg)


async def recv_until(ws, predicate, timeout=15.0):
    """Frames up to and including the first that matches, within a deadline."""
    deadline = time.monotonic() + timeout
    frames = []
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "condition not met; got %r" % frames[-5:]
        frame = await recv(ws, remaining)
        frames.append(frame)
        if predicate(frame):
            return frames


def is_end_of(prompt_id):
    return lambda f: (not f.binary and f.type == "executing" and f.data.get("node") is None
                      and f.data.get("prompt_id") == prompt_id)


async def connect(session, sim, client_id, flags=False, prefix=""):
    """Connect, read the connect status (and the flags reply), return the socket."""
    ws = await session.ws_connect(sim.ws_url(client_id, prefix), max_msg_size=0)
    first = await recv(ws)
    assert first.type == "status"
    if flags:
        await ws.send_str(json.dumps(FLAGS))
        reply = await recv(ws)
        assert reply.type == "feature_flags"
    return ws


async def marker(session, sim, *sockets):
    """Broadcast a marker and return what each socket received before it (FIFO)."""
    token = uuid.uuid4().hex
    text = json.dumps({"type": "sim.marker", "data": {"token": token}})
    async with session.post(sim.url("/_sim/send"),
                            json={"client_id": None, "frames": [{"text": text}]}) as resp:
        assert resp.status == 200
    before = []
    for ws in sockets:
        frames = await recv_until(ws, lambda f: not f.binary and f.raw == text)
        # Earlier markers reach sockets that were not waited on: skip them.
        before.append([f for f in frames[:-1] if f.binary or f.type != "sim.marker"])
    return before


async def get_json(session, sim, path):
    async with session.get(sim.url(path)) as resp:
        assert resp.status == 200, path
        return await resp.json()


async def post_json(session, sim, path, body):
    async with session.post(sim.url(path), json=body) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else None)


async def submit(session, sim, client_id=None, prompt=None, **sim_opts):
    body = {"prompt": prompt or WORKFLOW, "prompt_id": str(uuid.uuid4()),
            "extra_data": {"sim": sim_opts}}
    if client_id is not None:
        body["client_id"] = client_id
    status, reply = await post_json(session, sim, "/prompt", body)
    assert status == 200, reply
    assert reply["prompt_id"] == body["prompt_id"]
    return reply["prompt_id"]


async def wait_for(check, timeout=10.0):
    """Poll an async condition until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in %.1fs" % timeout
        await asyncio.sleep(0.02)


async def history_of(session, sim, prompt_id):
    return (await get_json(session, sim, "/history/" + prompt_id)).get(prompt_id)


# ---- connect, flags, routing ----------------------------------------------------


def test_connect_frames_and_generated_id(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(sim.ws_url())
            first = await recv(ws)
            sid = first.data["sid"]
            assert len(sid) == 32 and int(sid, 16) >= 0
            assert first.raw == json.dumps({"type": "status", "data": {
                "status": {"exec_info": {"queue_remaining": 0}}, "sid": sid}})
            ws2 = await session.ws_connect(sim.ws_url("my id", prefix="/api"))
            assert (await recv(ws2)).data["sid"] == "my id"
            clients = await get_json(session, sim, "/_sim/clients")
            assert clients["registry"] == {sid: 1, "my id": 2}
            assert clients["connects"] == 2
            await ws.close()
            await ws2.close()
    run(body())


def test_feature_flag_negotiation(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            a = await session.ws_connect(sim.ws_url("a"))
            await recv(a)
            await a.send_str("not json at all")  # ignored, slot not used up
            await a.send_str(json.dumps(FLAGS))
            reply = await recv(a)
            assert reply.type == "feature_flags"
            assert reply.data == load_sample("features.json")

            b = await session.ws_connect(sim.ws_url("b"))
            await recv(b)
            await b.send_str(json.dumps({"type": "hello", "data": {}}))
            await b.send_str(json.dumps(FLAGS))

            async def b_processed():
                clients = await get_json(session, sim, "/_sim/clients")
                return [s for s in clients["sockets"]
                        if s["client_id"] == "b" and s["text_frames"] == 2]
            sock = (await wait_for(b_processed))[0]
            assert sock["feature_flags"] == {}
            before, = await marker(session, sim, b)
            assert [f.type for f in before] == []
            await a.close()
            await b.close()
    run(body())


def test_previews_type4_with_metadata_and_type1_legacy(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            meta = await connect(session, sim, "meta", flags=True)
            legacy = await connect(session, sim, "legacy")
            p1 = await submit(session, sim, "meta", steps=3, previews=True)
            frames = await recv_until(meta, is_end_of(p1))
            bins = [f.raw for f in frames if f.binary]
            assert len(bins) == 3
            for raw in bins:
                event, size = struct.unpack("!II", raw[:8])
                metadata = json.loads(raw[8:8 + size])
                assert event == 4
                assert metadata["prompt_id"] == p1 and metadata["node_id"] == "3"
                assert raw[8 + size:8 + size + 2] == b"\xff\xd8"
            types = [f.type for f in frames]
            first_bin = types.index("binary")
            assert types[first_bin - 1:first_bin + 2] == ["progress_state", "binary", "progress"]

            p2 = await submit(session, sim, "legacy", steps=3, previews=True)
            frames = await recv_until(legacy, is_end_of(p2))
            bins = [f.raw for f in frames if f.binary]
            assert len(bins) == 3
            assert all(raw[:8] == b"\0\0\0\1\0\0\0\1" and raw[8:10] == b"\xff\xd8"
                       for raw in bins)
            types = [f.type for f in frames]
            first_bin = types.index("binary")
            assert types[first_bin - 2:first_bin + 1] == ["progress_state", "progress", "binary"]
            await meta.close()
            await legacy.close()
    run(body())


def test_targeted_and_broadcast_routing(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            a = await connect(session, sim, "A", flags=True)
            b = await connect(session, sim, "B", flags=True)
            pid = await submit(session, sim, "A", steps=2)
            a_frames = await recv_until(a, is_end_of(pid))
            assert {"execution_start", "executing", "progress", "executed",
                    "execution_success"} <= {f.type for f in a_frames}
            b_before, = await marker(session, sim, b)
            assert [f.type for f in b_before] == ["status", "status", "status"]

            anon = await submit(session, sim, None, steps=2, previews=True)
            await wait_for(lambda: history_of(session, sim, anon))
            seen = await marker(session, sim, a, b)
            for frames in seen:
                types = {f.type for f in frames}
                assert {"progress", "progress_state", "binary", "status"} == types
                assert all(f.raw[:4] == b"\0\0\0\1" for f in frames if f.binary)
                assert all(f.data.get("prompt_id") == anon for f in frames
                           if not f.binary and f.type.startswith("progress"))
            await a.close()
            await b.close()
    run(body())


def test_registry_race_orphans_the_newer_socket(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            old = await connect(session, sim, "X")
            new = await connect(session, sim, "X")
            watcher = await connect(session, sim, "W")
            clients = await get_json(session, sim, "/_sim/clients")
            assert clients["registry"]["X"] == 2  # replaced, old socket still open
            assert [s["registered"] for s in clients["sockets"]] == [False, True, True]
            await old.close()

            async def unregistered():
                c = await get_json(session, sim, "/_sim/clients")
                return "X" not in c["registry"] and len(c["sockets"]) == 2
            await wait_for(unregistered)
            status, reply = await post_json(session, sim, "/_sim/send", {
                "client_id": "X", "frames": [{"text": "{\"type\": \"t\", \"data\": {}}"}]})
            assert status == 200 and reply == {"sent": 0}
            await submit(session, sim, "X", steps=1)
            await marker(session, sim, watcher)  # everything before it was routed
            with pytest.raises(asyncio.TimeoutError):
                await new.receive(timeout=0.3)
            assert not new.closed
            await new.close()
            await watcher.close()
    run(body())


# ---- execution ---------------------------------------------------------------------


def test_success_frame_order_and_history(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, sim, "c", flags=True)
            pid = await submit(session, sim, "c", steps=4)
            frames = await recv_until(ws, is_end_of(pid))
            types = [f.type for f in frames]
            assert types[:4] == ["status", "status", "execution_start", "execution_cached"]
            assert types[-3:] == ["execution_success", "status", "executing"]
            assert [f.data["status"]["exec_info"]["queue_remaining"] for f in frames
                    if f.type == "status"] == [1, 1, 0]
            executing = [f.data["node"] for f in frames if f.type == "executing"]
            assert executing == ["4", "6", "7", "5", "3", "8", "9", None]
            assert [f.data["value"] for f in frames if f.type == "progress"] == [1, 2, 3, 4]
            # every node: progress_state running -> executing ... -> progress_state finished
            for index, frame in enumerate(frames):
                if frame.type == "executing" and frame.data["node"]:
                    node = frame.data["node"]
                    state = frames[index - 1]
                    assert state.type == "progress_state"
                    assert state.data["nodes"][node]["state"] == "running"
            last_state = [f for f in frames if f.type == "progress_state"][-1]
            assert all(n["state"] == "finished" for n in last_state.data["nodes"].values())
            assert list(last_state.data["nodes"]) == ["4", "6", "7", "5", "3", "8", "9"]

            entry = await history_of(session, sim, pid)
            assert list(entry) == ["prompt", "outputs", "status", "meta"]
            assert entry["status"]["status_str"] == "success"
            assert entry["status"]["completed"] is True
            assert [m[0] for m in entry["status"]["messages"]] == [
                "execution_start", "execution_cached", "execution_success"]
            executed = [f for f in frames if f.type == "executed"][0]
            assert entry["outputs"] == {"9": executed.data["output"]}
            assert entry["prompt"][1] == pid and entry["prompt"][3]["client_id"] == "c"
            await ws.close()
    run(body())


@pytest.mark.parametrize("outcome,terminal", [("error", "execution_error"),
                                              ("interrupt", "execution_interrupted")])
def test_failed_outcomes(sim, outcome, terminal):
    async def body():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, sim, "c", flags=True)
            pid = await submit(session, sim, "c", steps=6, outcome=outcome)
            frames = await recv_until(ws, is_end_of(pid))
            types = [f.type for f in frames]
            assert "execution_success" not in types
            assert types[-3:] == [terminal, "status", "executing"]
            data = frames[-3].data
            assert data["node_id"] == "3" and data["node_type"] == "KSampler"
            assert sorted(data["executed"]) == ["4", "5", "6", "7"]
            assert isinstance(data["timestamp"], int)
            if outcome == "error":
                reference = json.loads((TRACES / "c_execution_error.jsonl")
                                       .read_text().splitlines()[20])["data"]
                assert list(data) == list(reference)
                assert "progress" not in types
            else:
                assert list(data) == ["prompt_id", "node_id", "node_type", "executed",
                                      "timestamp"]
                assert [f.data["value"] for f in frames if f.type == "progress"] == [1, 2, 3]
            entry = await history_of(session, sim, pid)
            assert entry["status"]["status_str"] == "error"
            assert entry["status"]["completed"] is False
            assert entry["status"]["messages"][-1] == [terminal, data]
            assert entry["outputs"] == {}
            await ws.close()
    run(body())


def test_post_interrupt_stops_the_running_prompt(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, sim, "c", flags=True)
            pid = await submit(session, sim, "c", steps=400)
            await recv_until(ws, lambda f: f.type == "progress")
            status, _ = await post_json(session, sim, "/interrupt", {"prompt_id": "other"})
            assert status == 200
            await recv_until(ws, lambda f: f.type == "progress")  # still running
            status, _ = await post_json(session, sim, "/interrupt", {"prompt_id": pid})
            frames = await recv_until(ws, is_end_of(pid))
            assert [f.type for f in frames][-3:] == ["execution_interrupted", "status",
                                                     "executing"]
            assert frames[-3].data["node_id"] == "3"
            await ws.close()
    run(body())


def test_hold_release_and_reconnect_hint(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, sim, "h", flags=True)
            pid = await submit(session, sim, "h", steps=2, hold=True)
            second = await submit(session, sim, "h", steps=2)

            async def holding():
                return (await get_json(session, sim, "/_sim/state"))["holding"] == [pid]
            await wait_for(holding)
            queue = await get_json(session, sim, "/queue")
            assert [i[1] for i in queue["queue_running"]] == [pid]
            assert [i[1] for i in queue["queue_pending"]] == [second]
            # Reconnect with the owner's id: status, then the executing hint.
            again = await session.ws_connect(sim.ws_url("h"))
            assert (await recv(again)).data["status"]["exec_info"]["queue_remaining"] == 2
            hint = await recv(again)
            assert hint.raw == json.dumps({"type": "executing", "data": {"node": "9"}})
            status, reply = await post_json(session, sim, "/_sim/release", {"prompt_id": pid})
            assert reply == {"released": True}
            await recv_until(again, is_end_of(pid))
            await recv_until(again, is_end_of(second))
            await ws.close()
            await again.close()
    run(body())


# ---- replay --------------------------------------------------------------------------


def test_replay_delivers_every_trace_frame(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(sim.ws_url(BRIDGE_ID), max_msg_size=0)
            await recv(ws)
            for path in sorted(TRACES.glob("*.jsonl")):
                lines = path.read_text().splitlines()
                status, reply = await post_json(session, sim, "/_sim/replay", {
                    "trace": path.stem, "client_id": BRIDGE_ID, "interval_ms": 0})
                assert status == 200, reply
                assert reply["sent"] == len(lines), path.name
                for line in lines:
                    frame = await recv(ws)
                    desc = json.loads(line)
                    if "binary_hex_header" in desc:
                        assert frame.binary, (path.name, line[:80])
                        assert len(frame.raw) == desc["frame_len"]
                        assert frame.raw.startswith(bytes.fromhex(desc["binary_hex_header"]))
                    else:
                        assert frame.raw == line
                queue = await get_json(session, sim, "/queue")
                assert queue == {"queue_running": [], "queue_pending": []}, path.name
                for pid in reply["prompts"]:
                    assert await history_of(session, sim, pid), (path.name, pid)
            await ws.close()
    run(body(), timeout=60)


def test_replay_model_foreign_prompt_and_outcomes(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, sim, BRIDGE_ID)
            status, reply = await post_json(session, sim, "/_sim/replay",
                                            {"trace": "e2_foreign_prompt"})
            assert reply["sent"] == 44
            own, foreign = reply["prompts"]
            assert own == "0f6c8a2d-4e1b-4d7a-9b3e-6a2f8c0d5e49"
            history = await get_json(session, sim, "/history")
            assert list(history) == [own, foreign]
            assert history[foreign]["prompt"][3]["client_id"] == "sim-browser"
            assert history[foreign]["status"]["status_str"] == "success"
            assert history[own]["prompt"][3]["client_id"] == BRIDGE_ID
            assert history[own]["outputs"]["9"]["images"][0]["filename"] == "ComfyUI_00005_.png"
            assert [m[0] for m in history[own]["status"]["messages"]] == [
                "execution_start", "execution_cached", "execution_success"]

            expected = {"c_execution_error": ("error", "execution_error"),
                        "d_interrupted": ("error", "execution_interrupted"),
                        "g_old_protocol_v0.0.2": ("success", "execution_cached")}
            for trace, (status_str, last) in expected.items():
                status, reply = await post_json(session, sim, "/_sim/replay", {"trace": trace})
                pid, = reply["prompts"]
                entry = await history_of(session, sim, pid)
                assert entry["status"]["status_str"] == status_str, trace
                assert entry["status"]["messages"][-1][0] == last, trace
            # The back-to-back trace queues the second prompt mid-run: the model
            # shows it pending while the first runs (checked through the result).
            status, reply = await post_json(session, sim, "/_sim/replay",
                                            {"trace": "e_back_to_back"})
            assert len(reply["prompts"]) == 2
            status, reply = await post_json(session, sim, "/_sim/replay",
                                            {"trace": "e3_prompt_without_client_id"})
            pid, = reply["prompts"]
            assert "client_id" not in (await history_of(session, sim, pid))["prompt"][3]
            await ws.close()
    run(body())


# ---- restart with a state file -------------------------------------------------------


@pytest.mark.parametrize("finish", ["success", "error", "interrupted", "vanish"])
def test_restart_finishes_the_running_prompt(tmp_path, finish):
    first = Sim(tmp_path)
    state = {}

    async def before_kill():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, first, "r", flags=True)
            done = await submit(session, first, "r", steps=1)
            await recv_until(ws, is_end_of(done))
            held = await submit(session, first, "r", steps=2, hold=True)
            queued = await submit(session, first, "r", steps=1)

            async def holding():
                return (await get_json(session, first, "/_sim/state"))["holding"] == [held]
            await wait_for(holding)
            state.update(done=done, held=held, queued=queued)
            await ws.close()
    try:
        run(before_kill())
        first.stop(signal.SIGKILL)
    finally:
        first.close()
    second = Sim(tmp_path, "--finish-running-as", finish, port=first.port,
                 state_file=first.state_file)

    async def after_restart():
        async with aiohttp.ClientSession() as session:
            assert (await history_of(session, second, state["done"]))["status"][
                "status_str"] == "success"
            entry = await history_of(session, second, state["held"])
            queue = await get_json(session, second, "/queue")
            assert state["held"] not in [i[1] for i in queue["queue_running"]
                                         + queue["queue_pending"]]
            if finish == "vanish":
                assert entry is None
            else:
                messages = [m[0] for m in entry["status"]["messages"]]
                terminal = {"success": "execution_success", "error": "execution_error",
                            "interrupted": "execution_interrupted"}[finish]
                assert messages == ["execution_start", "execution_cached", terminal]
                assert entry["status"]["status_str"] == (
                    "success" if finish == "success" else "error")
                if finish == "success":
                    assert entry["outputs"]["9"]["images"][0]["filename"].startswith("ComfyUI_")
            # The pending prompt survived the restart and runs now.
            await wait_for(lambda: history_of(session, second, state["queued"]))
            status, reply = await post_json(session, second, "/prompt", {"prompt": WORKFLOW})
            assert reply["number"] == 3  # the counter survived too
    try:
        run(after_restart())
        assert second.stop() < 3.0
    finally:
        second.close()


# ---- raw frames ---------------------------------------------------------------------------


async def raw_ws(port, client_id):
    """A minimal WebSocket client that exposes frames exactly as they arrive."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(("GET /ws?clientId=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n" % (client_id, port, key)).encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split()[1] == b"101"
    return reader, writer


async def raw_frame(reader):
    """(fin, opcode, payload) of the next server frame."""
    b0, b1 = await reader.readexactly(2)
    assert b1 & 0x80 == 0, "server frames are unmasked"
    size = b1 & 0x7F
    if size == 126:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", await reader.readexactly(8))[0]
    return bool(b0 & 0x80), b0 & 0x0F, await reader.readexactly(size)


def test_send_fragmented_and_invalid_frames(sim):
    async def body():
        reader, writer = await raw_ws(sim.port, "raw")
        fin, opcode, payload = await raw_frame(reader)
        assert (fin, opcode) == (True, 1) and json.loads(payload)["data"]["sid"] == "raw"
        text = json.dumps({"type": "frag", "data": {"s": "caf\u00e9 fragmented"}})
        invalid = b'{"type": "x\xff\xfe", "data": {}}'
        blob = bytes(range(256)) * 3
        async with aiohttp.ClientSession() as session:
            status, reply = await post_json(session, sim, "/_sim/send", {
                "client_id": "raw", "fragment": 7,
                "frames": [{"text": text}, {"binary_b64": base64.b64encode(blob).decode()}]})
            assert reply == {"sent": 2}
            status, reply = await post_json(session, sim, "/_sim/send", {
                "client_id": "raw", "frames": [{"text_b64": base64.b64encode(invalid).decode()}]})
            assert reply == {"sent": 1}
        for opcode, expected in ((1, text.encode()), (2, blob)):
            pieces = [await raw_frame(reader)]
            while not pieces[-1][0]:
                pieces.append(await raw_frame(reader))
            assert len(pieces) == -(-len(expected) // 7)
            assert [p[1] for p in pieces] == [opcode] + [0] * (len(pieces) - 1)
            assert all(len(p[2]) == 7 for p in pieces[:-1])
            assert b"".join(p[2] for p in pieces) == expected
        assert await raw_frame(reader) == (True, 1, invalid)
        writer.close()
    run(body())


def test_huge_text_frame_and_drop(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, sim, "big")
            size = 17 * 1024 * 1024
            status, reply = await post_json(session, sim, "/_sim/send",
                                            {"client_id": "big", "huge_text_bytes": size})
            assert reply == {"sent": 1}
            frame = await recv(ws)
            assert len(frame.raw.encode()) == size and frame.type == "sim.huge"

            status, reply = await post_json(session, sim, "/_sim/drop", {"client_id": "big"})
            assert reply == {"dropped": 1}
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            assert ws.close_code == 1006  # no close frame

            async def gone():
                return (await get_json(session, sim, "/_sim/clients"))["sockets"] == []
            await wait_for(gone)
    run(body())


# ---- HTTP routes ---------------------------------------------------------------------------


def test_http_routes(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            status, reply = await post_json(session, sim, "/prompt", {"client_id": "x"})
            assert status == 400 and reply == load_sample("prompt_post_error_400_no_prompt.json")
            async with session.post(sim.url("/prompt"), data=b"{not json") as resp:
                assert resp.status == 500
            assert await get_json(session, sim, "/api/features") == load_sample("features.json")
            stats = await get_json(session, sim, "/system_stats")
            assert stats["system"]["comfyui_version"] == "0.21.0"
            assert set(stats["devices"][0]) == set(load_sample("system_stats.json")["devices"][0])
            for path in ("/nope", "/api/nope"):
                async with session.get(sim.url(path)) as resp:
                    assert resp.status == 404
            async with session.get(sim.url("/view?filename=ComfyUI_00001_.png")) as resp:
                assert resp.status == 200 and (await resp.read())[:8] == b"\x89PNG\r\n\x1a\n"

            # numbers: the failed POST used one; a given number comes back as a float
            ws = await connect(session, sim, "q")
            status, reply = await post_json(session, sim, "/prompt", {
                "prompt": WORKFLOW, "number": 7, "client_id": "q",
                "extra_data": {"sim": {"hold": True}, "api_key_comfy_org": "secret"}})
            held = reply["prompt_id"]
            assert reply["number"] == 7.0 and isinstance(reply["number"], float)

            async def holding():
                return (await get_json(session, sim, "/_sim/state"))["holding"] == [held]
            await wait_for(holding)
            ids = []
            for _ in range(3):
                status, reply = await post_json(session, sim, "/prompt", {"prompt": WORKFLOW})
                ids.append(reply["prompt_id"])
            assert reply["number"] == 3
            assert await get_json(session, sim, "/prompt") == {"exec_info": {"queue_remaining": 4}}
            queue = await get_json(session, sim, "/api/queue")
            running, = queue["queue_running"]
            assert running[1] == held and "api_key_comfy_org" not in running[3]
            assert sorted(i[1] for i in queue["queue_pending"]) == sorted(ids)
            assert all(len(i) == 5 for i in queue["queue_pending"])
            # delete: one status each; deleting the last item sends two
            await recv_until(ws, lambda f: f.type == "status"
                             and f.data["status"]["exec_info"]["queue_remaining"] == 4)
            await post_json(session, sim, "/queue", {"delete": ids[:1]})
            await post_json(session, sim, "/queue", {"clear": True})
            before, = await marker(session, sim, ws)
            assert [f.data["status"]["exec_info"]["queue_remaining"] for f in before] == [3, 1]
            status, _ = await post_json(session, sim, "/interrupt", None)
            await recv_until(ws, is_end_of(held))
            assert (await history_of(session, sim, held))["status"]["messages"][-1][0] == \
                "execution_interrupted"

            for n in range(3):
                await post_json(session, sim, "/_sim/history",
                                {"prompt_id": "h%d" % n, "entry": {"n": n}})
            assert list(await get_json(session, sim, "/history?max_items=2")) == ["h1", "h2"]
            assert list(await get_json(session, sim, "/history?max_items=2&offset=1")) == [
                "h0", "h1"]
            assert await get_json(session, sim, "/history/unknown") == {}
            await post_json(session, sim, "/history", {"delete": ["h1"]})
            assert list(await get_json(session, sim, "/history"))[-2:] == ["h0", "h2"]
            await post_json(session, sim, "/history", {"clear": True})
            assert await get_json(session, sim, "/history") == {}

            status, _ = await post_json(session, sim, "/_sim/queue", {
                "running": [[9, "raw-run", {}, {"client_id": "zz"}, []]],
                "pending": [[11, "p11", {}, {}, []], [10, "p10", {}, {}, []]]})
            queue = await get_json(session, sim, "/queue")
            assert [i[1] for i in queue["queue_running"]] == ["raw-run"]
            assert sorted(i[0] for i in queue["queue_pending"]) == [10, 11]
            status, reply = await post_json(session, sim, "/_sim/status", None)
            assert reply == {"queue_remaining": 3}
            frame = await recv(ws)
            assert frame.data == {"status": {"exec_info": {"queue_remaining": 3}}}
            await ws.close()
    run(body())


def test_old_server_version(tmp_path):
    old = Sim(tmp_path, "--server-version", "0.0.2")

    async def body():
        async with aiohttp.ClientSession() as session:
            async with session.get(old.url("/features")) as resp:
                assert resp.status == 404
            stats = await get_json(session, old, "/system_stats")
            assert "comfyui_version" not in stats["system"]
            ws = await connect(session, old, "o")
            await ws.send_str(json.dumps(FLAGS))  # no reply on this server
            pid = await submit(session, old, "o", steps=3, previews=True)
            frames = await recv_until(ws, is_end_of(pid))
            types = [f.type for f in frames]
            assert "feature_flags" not in types and "progress_state" not in types
            assert "execution_success" not in types
            assert types[-2:] == ["status", "executing"]
            assert [f.data["node"] for f in frames if f.type == "executing"] == [
                "5", "4", "7", "6", "3", "8", "9", None]
            assert all(list(f.data) == ["node", "prompt_id"] for f in frames
                       if f.type == "executing")
            assert all("timestamp" not in f.data for f in frames
                       if f.type.startswith("execution_"))
            assert [f.raw[:4] for f in frames if f.binary] == [b"\0\0\0\1"] * 3
            entry = await history_of(session, old, pid)
            assert entry["status"]["status_str"] == "success" and "meta" not in entry
            await ws.close()
    try:
        run(body())
        assert old.stop() < 3.0
    finally:
        old.close()


# ---- POST /prompt validation (execution.py validate_prompt) ---------------------------------


def edited(**changes):
    """WORKFLOW with inputs changed: {"3__steps": 0}; None deletes the input."""
    prompt = json.loads(json.dumps(WORKFLOW))
    for path, value in changes.items():
        node, name = path.split("__")
        if value is None:
            del prompt[node]["inputs"][name]
        else:
            prompt[node]["inputs"][name] = value
    return prompt


STEPS_ZERO_400 = {
    "error": {"type": "prompt_outputs_failed_validation",
              "message": "Prompt outputs failed validation",
              # only the output nodes' own errors are listed here: none
              "details": "", "extra_info": {}},
    "node_errors": {"3": {"errors": [{
        "type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1",
        "details": "steps", "extra_info": {
            "input_name": "steps",
            "input_config": ["INT", {"default": 20, "min": 1, "max": 10000, "tooltip":
                                     "The number of steps used in the denoising process."}],
            "received_value": 0}}],
        "dependent_outputs": ["9"], "class_type": "KSampler"}}}


def test_prompt_validation_failures(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, sim, "v")
            status, reply = await post_json(session, sim, "/prompt", {"prompt": edited(**{
                "3__steps": 0})})
            assert (status, reply) == (400, STEPS_ZERO_400)

            status, reply = await post_json(session, sim, "/prompt", {"prompt": edited(**{
                "3__seed": None})})
            assert status == 400
            assert reply["node_errors"]["3"]["errors"] == [{
                "type": "required_input_missing", "message": "Required input is missing",
                "details": "seed", "extra_info": {"input_name": "seed"}}]
            assert reply["error"]["details"] == ""
            # an error on the output node itself is listed in the details
            status, reply = await post_json(session, sim, "/prompt", {"prompt": edited(**{
                "9__images": None})})
            assert reply["error"]["details"] == "Required input is missing: images"
            assert reply["node_errors"]["9"]["dependent_outputs"] == ["9"]

            status, reply = await post_json(session, sim, "/prompt", {"prompt": edited(**{
                "4__ckpt_name": "sd3.safetensors"})})
            error, = reply["node_errors"]["4"]["errors"]
            assert error["type"] == "value_not_in_list"
            assert error["details"] == ("ckpt_name: 'sd3.safetensors' not in "
                                        "['sd_xl_base_1.0.safetensors', "
                                        "'v1-5-pruned-emaonly.safetensors']")
            assert error["extra_info"]["input_config"][0] == [
                "sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors"]
            # more than 20 choices: the list is not sent back
            status, reply = await post_json(session, sim, "/prompt", {"prompt": edited(**{
                "3__sampler_name": "nope"})})
            error, = reply["node_errors"]["3"]["errors"]
            assert error["details"] == "sampler_name: 'nope' not in (list of length 42)"
            assert error["extra_info"]["input_config"] is None

            status, reply = await post_json(session, sim, "/prompt", {"prompt": edited(**{
                "8__vae": ["4", 1]})})
            error, = reply["node_errors"]["8"]["errors"]
            assert error["type"] == "return_type_mismatch"
            assert error["details"] == "vae, received_type(CLIP) mismatch input_type(VAE)"

            status, reply = await post_json(session, sim, "/prompt", {"prompt": edited(**{
                "8__vae": ["99", 0]})})
            error, = reply["node_errors"]["8"]["errors"]
            assert error["type"] == "exception_during_inner_validation"
            assert error["details"] == "'99'"
            assert error["extra_info"]["exception_type"] == "KeyError"

            no_output = {k: v for k, v in WORKFLOW.items() if k != "9"}
            status, reply = await post_json(session, sim, "/prompt", {"prompt": no_output})
            assert (status, reply) == (400, {"error": {
                "type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                "extra_info": {}}, "node_errors": {}})

            # v0.21.0 (the default): missing_node_type, with the node's title
            unknown = dict(WORKFLOW, **{"15": {"class_type": "Image Comparer (rgthree)",
                                               "inputs": {}}})
            status, reply = await post_json(session, sim, "/prompt", {"prompt": unknown})
            assert (status, reply["error"]["type"]) == (400, "missing_node_type")
            assert reply["error"]["extra_info"] == {
                "node_id": "15", "class_type": "Image Comparer (rgthree)",
                "node_title": "Image Comparer (rgthree)"}
            no_class = dict(WORKFLOW, **{"15": {"inputs": {}, "_meta": {"title": "Lost"}}})
            status, reply = await post_json(session, sim, "/prompt", {"prompt": no_class})
            assert reply["error"]["message"] == ("Node 'Lost' has no class_type. The workflow "
                                                 "may be corrupted or a custom node is missing.")
            for bad in ([1, 2], "text", 5):
                async with session.post(sim.url("/prompt"), json={"prompt": bad}) as resp:
                    assert resp.status == 500

            # Nothing was queued and no status frame went out; every POST used a number.
            assert await get_json(session, sim, "/queue") == {"queue_running": [],
                                                              "queue_pending": []}
            before, = await marker(session, sim, ws)
            assert before == []
            status, reply = await post_json(session, sim, "/prompt", {"prompt": edited(**{
                "3__steps": "3"})})
            assert status == 200 and reply["number"] == 13 and reply["node_errors"] == {}
            entry = await wait_for(lambda: history_of(session, sim, reply["prompt_id"]))
            assert entry["prompt"][2]["3"]["inputs"]["steps"] == 3  # converted, as ComfyUI
            await ws.close()
    run(body())


def test_partial_validation_failure_runs_the_valid_output(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, sim, "p", flags=True)
            prompt = edited(**{"3__steps": 0})
            prompt["10"] = {"class_type": "EmptyImage", "inputs": {
                "width": 8, "height": 8, "batch_size": 1, "color": 0}}
            prompt["11"] = {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}}
            status, reply = await post_json(session, sim, "/prompt", {
                "prompt": prompt, "client_id": "p", "prompt_id": "partial"})
            assert status == 200
            assert reply["node_errors"] == STEPS_ZERO_400["node_errors"]
            frames = await recv_until(ws, is_end_of("partial"))
            assert [f.data["node"] for f in frames if f.type == "executing"] == ["10", "11", None]
            queue_item = (await history_of(session, sim, "partial"))["prompt"]
            assert queue_item[4] == ["11"]
            status, reply = await post_json(session, sim, "/prompt", {
                "prompt": prompt, "partial_execution_targets": ["9"]})
            assert status == 400 and reply["error"]["type"] == "prompt_outputs_failed_validation"
            await ws.close()
    run(body())


def test_prompt_validation_of_0_3_64(tmp_path):
    old = Sim(tmp_path, "--server-version", "0.3.64")

    async def body():
        async with aiohttp.ClientSession() as session:
            no_class = dict(WORKFLOW, **{"15": {"inputs": {}}})
            status, reply = await post_json(session, old, "/prompt", {"prompt": no_class})
            assert (status, reply) == (400, {"error": {
                "type": "invalid_prompt",
                "message": "Cannot execute because a node is missing the class_type property.",
                "details": "Node ID '#15'", "extra_info": {}}, "node_errors": {}})
            unknown = dict(WORKFLOW, **{"15": {"class_type": "Nope", "inputs": {}}})
            status, reply = await post_json(session, old, "/prompt", {"prompt": unknown})
            assert reply["error"] == {
                "type": "invalid_prompt", "message": "Cannot execute because node Nope does "
                "not exist.", "details": "Node ID '#15'", "extra_info": {}}
            # the real server's validation_error workflow (real-server/workflows)
            blur = {"1": {"class_type": "EmptyImage", "inputs": {
                        "width": 64, "height": 64, "batch_size": 1, "color": 0}},
                    "2": {"class_type": "ImageBlur", "inputs": {
                        "image": ["1", 0], "blur_radius": 99, "sigma": 1.0}},
                    "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
            status, reply = await post_json(session, old, "/prompt", {"prompt": blur})
            assert (status, reply) == (400, {
                "error": {"type": "prompt_outputs_failed_validation",
                          "message": "Prompt outputs failed validation",
                          "details": "",
                          "extra_info": {}},
                "node_errors": {"2": {"errors": [{
                    "type": "value_bigger_than_max", "message": "Value 99 bigger than max of 31",
                    "details": "blur_radius", "extra_info": {
                        "input_name": "blur_radius",
                        "input_config": ["INT", {"default": 1, "min": 1, "max": 31, "step": 1}],
                        "received_value": 99}}],
                    "dependent_outputs": ["3"], "class_type": "ImageBlur"}}})
            pid = await submit(session, old, None, steps=1)
            entry = await wait_for(lambda: history_of(session, old, pid))
            assert "create_time" not in entry["prompt"][3]  # v0.3.69+
    try:
        run(body())
    finally:
        old.stop()
        old.close()


# ---- interrupt, queue delete / clear, free ---------------------------------------------------


def remaining(frames):
    """queue_remaining of each status frame."""
    return [f.data["status"]["exec_info"]["queue_remaining"] for f in frames
            if not f.binary and f.type == "status"]


def test_queue_delete_and_clear_touch_pending_prompts_only(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, sim, "d")
            running = await submit(session, sim, "d", steps=2, hold=True)
            pending = [await submit(session, sim, "d", steps=1) for _ in range(4)]

            async def holding():
                return (await get_json(session, sim, "/_sim/state"))["holding"] == [running]
            await wait_for(holding)
            await recv_until(ws, lambda f: f.type == "status"
                             and f.data["status"]["exec_info"]["queue_remaining"] == 5)
            # deleting the running prompt, or an unknown one, changes nothing
            for ids in ([running], ["unknown"], []):
                status, text = await post_json(session, sim, "/queue", {"delete": ids})
                assert (status, text) == (200, None)
            status, _ = await post_json(session, sim, "/queue", {"delete": pending[:2]})
            status, _ = await post_json(session, sim, "/queue", {"clear": False})
            before, = await marker(session, sim, ws)
            assert remaining(before) == [4, 3]
            queue = await get_json(session, sim, "/queue")
            assert [i[1] for i in queue["queue_running"]] == [running]
            assert sorted(i[1] for i in queue["queue_pending"]) == sorted(pending[2:])
            status, _ = await post_json(session, sim, "/queue", {"clear": True})
            before, = await marker(session, sim, ws)
            assert remaining(before) == [1]
            for bad in (None, [1], "x"):
                async with session.post(sim.url("/queue"), data=json.dumps(bad)
                                        if bad is not None else b"") as resp:
                    assert resp.status == 500
            await post_json(session, sim, "/_sim/release", {"prompt_id": running})
            await recv_until(ws, is_end_of(running))
            assert (await history_of(session, sim, running))["status"]["status_str"] == "success"
            await asyncio.sleep(0.3)
            state = await get_json(session, sim, "/_sim/state")
            assert state["pending"] == [] and state["running"] == []
            for pid in pending:
                assert await history_of(session, sim, pid) is None
            await ws.close()
    run(body())


def test_interrupt_targeted_global_and_idle(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, sim, "i")
            running = await submit(session, sim, "i", steps=400)
            queued = await submit(session, sim, "i", steps=2)
            await recv_until(ws, lambda f: f.type == "progress")
            # a pending prompt's id: nothing happens, neither to it nor to the running one
            status, text = await post_json(session, sim, "/interrupt", {"prompt_id": queued})
            assert (status, text) == (200, None)
            await recv_until(ws, lambda f: f.type == "progress")
            # an empty prompt_id is a global interrupt
            await post_json(session, sim, "/interrupt", {"prompt_id": ""})
            frames = await recv_until(ws, is_end_of(running))
            assert frames[-3].type == "execution_interrupted"
            # the queued prompt then runs to success
            await recv_until(ws, is_end_of(queued))
            assert (await history_of(session, sim, queued))["status"]["status_str"] == "success"
            # an interrupt while idle does not reach the next prompt
            async with session.post(sim.url("/interrupt"), data=b"not json") as resp:
                assert resp.status == 200
            later = await submit(session, sim, "i", steps=2)
            await recv_until(ws, is_end_of(later))
            assert (await history_of(session, sim, later))["status"]["completed"] is True
            async with session.post(sim.url("/interrupt"), json=[1]) as resp:
                assert resp.status == 500
            state = await get_json(session, sim, "/_sim/state")
            assert [i["prompt_id"] for i in state["interrupts"]] == [queued, "", None]
            await ws.close()
    run(body())


def test_post_free(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            for payload in ({"unload_models": True}, {"free_memory": True, "unload_models": False},
                            {}):
                async with session.post(sim.url("/api/free"), json=payload) as resp:
                    assert resp.status == 200 and await resp.read() == b""
            for raw in (b"", b"[]", b"{bad"):
                async with session.post(sim.url("/free"), data=raw) as resp:
                    assert resp.status == 500
            frees = (await get_json(session, sim, "/_sim/state"))["frees"]
            assert [{k: v for k, v in f.items() if k != "at_ms"} for f in frees] == [
                {"unload_models": True, "during": None}, {"free_memory": True, "during": None},
                {"during": None}]
    run(body())


# ---- history paging and a long old history ---------------------------------------------------


def test_history_paging(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            for n in range(5):
                await post_json(session, sim, "/_sim/history",
                                {"prompt_id": "h%d" % n, "entry": {"n": n}})

            async def page(query):
                return list(await get_json(session, sim, "/history" + query))
            assert await page("") == ["h0", "h1", "h2", "h3", "h4"]  # oldest first
            assert await page("?max_items=2") == ["h3", "h4"]  # the newest
            assert await page("?max_items=2&offset=0") == ["h0", "h1"]  # from the oldest
            assert await page("?max_items=2&offset=4") == ["h4"]
            assert await page("?max_items=2&offset=-7") == ["h3", "h4"]  # negative: as none
            assert await page("?offset=3") == ["h3", "h4"]
            assert await page("?offset=9") == []
            assert await page("?max_items=0") == []
            assert await page("?max_items=0&offset=1") == ["h1"]  # counted after adding
            async with session.get(sim.url("/history?max_items=x")) as resp:
                assert resp.status == 500
            # a repeated id keeps its place (dict assignment)
            await post_json(session, sim, "/_sim/history", {"prompt_id": "h1", "entry": {}})
            assert await page("") == ["h0", "h1", "h2", "h3", "h4"]
    run(body())


def test_history_fill_starts_fast_and_caps_at_10000(tmp_path):
    started = time.monotonic()
    big = Sim(tmp_path, "--history-fill", "10001")
    assert time.monotonic() - started < 2.0

    async def body():
        async with aiohttp.ClientSession() as session:
            state = await get_json(session, big, "/_sim/state?history=count")
            assert state["history_count"] == 10001 and state["number"] == 10001
            newest = await get_json(session, big, "/history?max_items=3")
            oldest = await get_json(session, big, "/history?max_items=1&offset=0")
            entries = list(oldest.values()) + list(newest.values())
            ends = [e["status"]["messages"][-1][1]["timestamp"] for e in entries]
            assert ends == sorted(ends) and ends[-1] < time.time() * 1000 - 3500 * 1000
            for entry in entries:
                stamps = [m[1]["timestamp"] for m in entry["status"]["messages"]]
                assert entry["status"]["messages"][0][0] == "execution_start"
                assert entry["prompt"][3]["create_time"] < stamps[0] < stamps[1] < stamps[2]
            everything = await get_json(session, big, "/history?max_items=10001&offset=0")
            kinds = {e["status"]["messages"][-1][0] for e in everything.values()}
            assert kinds == {"execution_success", "execution_error", "execution_interrupted"}
            # one more finished prompt: the oldest entry goes, 10,001 stay
            pid = await submit(session, big, None, steps=1)
            await wait_for(lambda: history_of(session, big, pid))
            state = await get_json(session, big, "/_sim/state?history=count")
            assert state["history_count"] == 10001
            assert await history_of(session, big, next(iter(oldest))) is None
            return list(await get_json(session, big, "/history?max_items=2"))
    try:
        last_two = run(body())
        assert os.path.getsize(big.state_file) < 200 * 1024  # old entries are rebuilt
        big.stop()
    finally:
        big.close()
    again = Sim(tmp_path, "--history-fill", "5", state_file=big.state_file)

    async def after_restart():
        async with aiohttp.ClientSession() as session:
            state = await get_json(session, again, "/_sim/state?history=count")
            assert state["history_count"] == 10001  # the state file wins over --history-fill
            assert list(await get_json(session, again, "/history?max_items=2")) == last_two
    try:
        run(after_restart())
        again.stop()
    finally:
        again.close()


# ---- prompts run on while no socket is connected ---------------------------------------------


def test_prompts_finish_and_are_recorded_without_a_socket(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, sim, "gone", flags=True)
            first = await submit(session, sim, "gone", steps=40)
            failing = await submit(session, sim, "gone", steps=4, outcome="error")
            stopped = await submit(session, sim, "gone", steps=400)
            await recv_until(ws, lambda f: f.type == "progress")
            await ws.close()
            closed_ms = time.time() * 1000

            async def running(pid):
                return (await get_json(session, sim, "/_sim/state"))["running"] == [pid]
            await wait_for(lambda: running(stopped))
            await post_json(session, sim, "/interrupt", {"prompt_id": stopped})
            await wait_for(lambda: history_of(session, sim, stopped))
            clients = await get_json(session, sim, "/_sim/clients")
            assert clients["sockets"] == [] and clients["registry"] == {}
            expected = {first: ("success", "execution_success"),
                        failing: ("error", "execution_error"),
                        stopped: ("error", "execution_interrupted")}
            history = await get_json(session, sim, "/history")
            assert list(history) == [first, failing, stopped]
            for pid, (status_str, terminal) in expected.items():
                messages = history[pid]["status"]["messages"]
                assert [m[0] for m in messages] == ["execution_start", "execution_cached",
                                                    terminal]
                stamps = [m[1]["timestamp"] for m in messages]
                assert stamps == sorted(stamps)
                assert history[pid]["prompt"][3]["create_time"] <= stamps[0]
                assert stamps[-1] >= closed_ms - 50
                assert history[pid]["status"]["status_str"] == status_str
            # a reconnect with the same id: the status frame and nothing to replay
            again = await connect(session, sim, "gone")
            before, = await marker(session, sim, again)
            assert before == []
            await again.close()
    run(body())


def test_preview_burst_and_step_marked_previews(sim):
    async def body():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, sim, "b", flags=True)
            pid = await submit(session, sim, "b", steps=6, previews=True, step_ms=150,
                               preview_burst=4)
            arrivals = []
            while True:
                frame = await recv(ws)
                if frame.binary:
                    arrivals.append((time.monotonic(), frame.raw))
                if is_end_of(pid)(frame):
                    break
            assert len(arrivals) == 6
            for step, (_, raw) in enumerate(arrivals, 1):
                size = struct.unpack("!I", raw[4:8])[0]
                image = raw[8 + size:]
                assert image[:2] == b"\xff\xd8" and b"step %d\xff" % step in image
            # steps 1 and 2 are paced, 3-6 come in one burst
            assert arrivals[1][0] - arrivals[0][0] > 0.1
            assert arrivals[-1][0] - arrivals[2][0] < 0.1
            await ws.close()
    run(body())


def test_0_3_64_validation_matches_the_recorded_samples(tmp_path):
    """The v0.3.64 samples were produced by ComfyUI 0.3.64's own validate_prompt."""
    old = Sim(tmp_path, "--server-version", "0.3.64")
    steps_min = json.loads(json.dumps(WORKFLOW))
    steps_min["3"]["inputs"]["steps"] = 0
    blur = {"1": {"class_type": "EmptyImage", "inputs": {
                "width": 64, "height": 64, "batch_size": 1, "color": 0}},
            "2": {"class_type": "ImageBlur", "inputs": {
                "image": ["1", 0], "blur_radius": 99, "sigma": 1.0}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    cases = {
        "steps_min": steps_min, "blur_max": blur,
        "no_class_type": dict(WORKFLOW, **{"15": {"inputs": {}}}),
        "unknown_class": dict(WORKFLOW, **{"15": {"class_type": "Image Comparer (rgthree)",
                                                  "inputs": {}}}),
        "no_outputs": {k: v for k, v in WORKFLOW.items() if k != "9"},
    }

    async def body():
        async with aiohttp.ClientSession() as session:
            for name, prompt in cases.items():
                status, reply = await post_json(session, old, "/prompt", {"prompt": prompt})
                sample = load_sample("prompt_post_error_400_v0.3.64_%s.json" % name)
                assert (status, reply) == (400, sample), name
    try:
        run(body())
    finally:
        old.stop()
        old.close()


def test_real_server_basic_workflow_runs(sim):
    """real-server/workflows/basic.json: image nodes, three kinds of output node."""
    basic = {
        "1": {"class_type": "EmptyImage", "inputs": {
            "width": 256, "height": 256, "batch_size": 1, "color": 16744448}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "ImageBlur", "inputs": {
            "image": ["2", 0], "blur_radius": 5, "sigma": 2.0}},
        "4": {"class_type": "ImageScale", "inputs": {
            "image": ["3", 0], "upscale_method": "bilinear", "width": 128, "height": 128,
            "crop": "disabled"}},
        "5": {"class_type": "GetImageSize", "inputs": {"image": ["4", 0]}},
        "6": {"class_type": "SaveImage", "inputs": {
            "images": ["4", 0], "filename_prefix": "bridge_basic"}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        "8": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
    }

    async def body():
        async with aiohttp.ClientSession() as session:
            pid = await submit(session, sim, None, prompt=basic)
            entry = await wait_for(lambda: history_of(session, sim, pid))
            assert sorted(entry["outputs"]) == ["6", "7", "8"]
            saved, = entry["outputs"]["6"]["images"]
            assert saved == {"filename": "bridge_basic_00001_.png", "subfolder": "",
                             "type": "output"}
            preview, = entry["outputs"]["7"]["images"]
            assert preview["type"] == "temp" and preview["subfolder"] == ""
            assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", preview["filename"])
            assert sorted(entry["prompt"][4]) == ["6", "7", "8"]
            basic["3"]["inputs"]["blur_radius"] = 32
            status, reply = await post_json(session, sim, "/prompt", {"prompt": basic})
            assert status == 400 and set(reply["node_errors"]) == {"3"}
            assert sorted(reply["node_errors"]["3"]["dependent_outputs"]) == ["6", "7", "8"]
    run(body())
