#!/usr/bin/python3
"""A small aiohttp peer for tests/io: a ComfyUI-like /ws endpoint plus a few
HTTP routes, driven by line commands on stdin, reporting events on stdout.

Run with Debian's /usr/bin/python3. Prints `LISTENING <port>` once bound.
`--port N` picks the port, `--tls CERT KEY` serves https/wss.

stdout events (one per line):
  CONNECT id=<clientId> origin=<Origin|-> xtest=<X-Test|-> host=<Host>
  REQUEST <header names in order, comma-separated>
  RECV <len> <text>          a text frame from the client
  PING <len> / PONG <payload> a ping / pong from the client
  DISCONNECT code=<close code|None>  a WebSocket ended
  SENT <what> [<len>]       a command was carried out
stdin commands:
  big <n> <frag>   text message of n pattern bytes, as raw frames of frag
  fragping <n> <frag>  the same with a ping ("p<i>") between the frames
  bin <n>          binary message of n pattern bytes, one frame
  seq <first> <n>  n text messages "seq:<i>", i from first, one frame each,
                   written at once (the socket buffers what the client
                   does not read yet)
  raw <hex>        these bytes as they are, to every WebSocket
  ping <text>      a ping with this payload
  mode drop|normal|refuse|badaccept|nopong  drop: accept the upgrade, then
                   close at once; refuse: answer 403 Forbidden; badaccept:
                   101 with a wrong Sec-WebSocket-Accept; nopong: pings from
                   the client go unanswered
  close            close every WebSocket
Pings are answered by hand (autoping off) so that they can be reported.
HTTP routes (also under /api): /big?n=N (pattern bytes), /status/<code>,
/slow (answers after 60 s), /headers (the request headers, one per line).

The pattern byte i is 'a' + (i * 7 + i / 13) % 26, so a test can rebuild it.
"""
import argparse
import asyncio
import logging
import ssl
import struct
import sys
import threading

from aiohttp import web, WSMsgType

_patterns = {}


def pattern(n):
    if n not in _patterns:
        _patterns[n] = bytes(97 + (i * 7 + i // 13) % 26 for i in range(n))
    return _patterns[n]


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def raw_frame(opcode, payload, fin):
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 126, n)
    else:
        head = struct.pack("!BBQ", first, 127, n)
    return head + payload


class Peer:
    def __init__(self):
        self.sockets = set()
        self.mode = "normal"

    async def ws(self, request):
        say("REQUEST " + ",".join(request.headers.keys()))
        if self.mode == "refuse":
            return web.Response(status=403, text="no\n")
        if self.mode == "badaccept":
            request.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\n"
                b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n")
            while not request.transport.is_closing():
                await asyncio.sleep(0.05)
            say("DISCONNECT code=None")
            return web.Response()
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        h = request.headers
        say("CONNECT id=%s origin=%s xtest=%s host=%s" % (
            request.query.get("clientId", "-"), h.get("Origin", "-"),
            h.get("X-Test", "-"), h.get("Host", "-")))
        if self.mode == "drop":
            await ws.close()
            say("DISCONNECT")
            return ws
        self.sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    say("RECV %d %s" % (len(msg.data), msg.data[:200]))
                elif msg.type == WSMsgType.PING:
                    say("PING %d" % len(msg.data))
                    if self.mode != "nopong":
                        await ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    say("PONG %s" % msg.data.decode("latin-1"))
        finally:
            self.sockets.discard(ws)
            say("DISCONNECT code=%s" % ws.close_code)
        return ws

    def command(self, line):
        parts = line.split()
        if not parts:
            return
        if parts[0] in ("big", "fragping"):
            n, frag = int(parts[1]), int(parts[2])
            data = pattern(n)
            for ws in list(self.sockets):
                out = bytearray()
                for off in range(0, n, frag):
                    if off > 0 and parts[0] == "fragping":
                        out += raw_frame(0x9, b"p%d" % off, True)
                    chunk = data[off:off + frag]
                    out += raw_frame(0x1 if off == 0 else 0x0, chunk,
                                     off + frag >= n)
                ws._writer.transport.write(bytes(out))
            say("SENT %s %d" % (parts[0], n))
        elif parts[0] == "seq":
            first, n = int(parts[1]), int(parts[2])
            out = b"".join(raw_frame(0x1, b"seq:%d" % i, True)
                           for i in range(first, first + n))
            for ws in list(self.sockets):
                ws._writer.transport.write(out)
            say("SENT seq %d" % n)
        elif parts[0] == "raw":
            for ws in list(self.sockets):
                ws._writer.transport.write(bytes.fromhex(parts[1]))
            say("SENT raw")
        elif parts[0] == "ping":
            for ws in list(self.sockets):
                asyncio.ensure_future(ws.ping(parts[1].encode()))
            say("SENT ping")
        elif parts[0] == "bin":
            n = int(parts[1])
            data = pattern(n)
            for ws in list(self.sockets):
                asyncio.ensure_future(ws.send_bytes(data))
            say("SENT bin %d" % n)
        elif parts[0] == "mode":
            self.mode = parts[1]
            say("SENT mode")
        elif parts[0] == "close":
            for ws in list(self.sockets):
                asyncio.ensure_future(ws.close())
            say("SENT close")

    async def big(self, request):
        n = int(request.query.get("n", "0"))
        return web.Response(body=pattern(n),
                            content_type="application/octet-stream")

    async def status(self, request):
        code = int(request.match_info["code"])
        return web.Response(status=code, text="status %d\n" % code)

    async def slow(self, request):
        await asyncio.sleep(60)
        return web.Response(text="late\n")

    async def headers(self, request):
        lines = ["%s: %s" % (k.lower(), v) for k, v in request.headers.items()]
        return web.Response(text="\n".join(lines) + "\n")


def stdin_reader(loop, peer):
    for line in sys.stdin:
        loop.call_soon_threadsafe(peer.command, line)
    loop.call_soon_threadsafe(loop.stop)


async def start(port, peer, tls):
    app = web.Application()
    for prefix in ("", "/api"):
        app.router.add_get(prefix + "/ws", peer.ws)
        app.router.add_get(prefix + "/big", peer.big)
        app.router.add_get(prefix + "/status/{code}", peer.status)
        app.router.add_get(prefix + "/slow", peer.slow)
        app.router.add_get(prefix + "/headers", peer.headers)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = None
    if tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tls[0], tls[1])
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True,
                       ssl_context=ctx)
    await site.start()
    return site._server.sockets[0].getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = ap.parse_args()
    # a stopped-then-resumed peer meets sockets the client already gave up
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)
    peer = Peer()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    port = loop.run_until_complete(start(args.port, peer, args.tls))
    say("LISTENING %d" % port)
    threading.Thread(target=stdin_reader, args=(loop, peer),
                     daemon=True).start()
    loop.run_forever()


if __name__ == "__main__":
    main()
