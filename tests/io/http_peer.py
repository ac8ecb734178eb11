#!/usr/bin/python3
"""A raw-asyncio HTTP/1.1 peer for tests/io/test_http_client.c: it counts
connections itself (aiohttp would hide them), holds responses until told,
and answers redirects towards a second listener that must never be reached.

Run with Debian's /usr/bin/python3. Prints `STEAL <host> <port>` (the second
listener, on 127.0.0.2 when it can bind there) and then `LISTENING <port>`.

stdout events (one per line):
  ACCEPT active=<n>     a connection; n = connections not yet answered
  REQ <name>            /hold/<name> arrived (in arrival order)
  ANSWER <name>         /hold/<name> released and answered
  GONE <name>           /hold/<name>'s client left before the answer
  STEAL_ACCEPT          someone connected to the second listener
  STEAL_HDR <line>      a request line or header it received
  BODY <method> <path> <n>  a request with a Content-Length body of n bytes
  STALL <path>          /post/stall arrived: its body is never read
stdin commands:
  release <name>        answer /hold/<name>: 200, body "held <name>\\n"
  release-all           answer every held request
HTTP routes (also under /api): /hold/<name>; /redirect/<code> (that status,
Location http://STEAL/steal?token=s3cr3t#frag) and /redirect/<code>u (the
same with user:hunter2@ before the host); /post/echo (200, the request
body verbatim); /post/headers (200, "method M", "len N", then each request
header as "name: value", name lowercased); /post/status/<code> (that status
with a ComfyUI-shaped JSON error body); /post/stall (never reads the body
nor answers); others 404. A request body (by its Content-Length) is read
before any other route answers.
"""
import argparse
import asyncio
import os
import sys


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Peer:
    def __init__(self):
        self.active = 0
        self.held = {}  # name -> asyncio.Event
        self.steal = None  # (host, port)

    def release(self, name):
        ev = self.held.setdefault(name, asyncio.Event())
        ev.set()

    def command(self, line):
        parts = line.split()
        if not parts:
            return
        if parts[0] == "release" and len(parts) == 2:
            self.release(parts[1])
        elif parts[0] == "release-all":
            for ev in self.held.values():
                ev.set()

    async def respond(self, writer, status, reason, body, extra=""):
        # counted as answered before the bytes leave, so the client can
        # never start its next request before the count drops
        self.active -= 1
        head = ("HTTP/1.1 %d %s\r\nContent-Length: %d\r\n"
                "Connection: close\r\n%s\r\n" % (status, reason, len(body),
                                                  extra))
        try:
            writer.write(head.encode() + body)
            await writer.drain()
        except (ConnectionError, OSError):
            pass

    async def hold(self, name, reader, writer):
        say("REQ %s" % name)
        ev = self.held.setdefault(name, asyncio.Event())
        released = asyncio.ensure_future(ev.wait())
        eof = asyncio.ensure_future(reader.read(1))
        done, _ = await asyncio.wait({released, eof},
                                     return_when=asyncio.FIRST_COMPLETED)
        if released in done:
            eof.cancel()
            await self.respond(writer, 200, "OK",
                               ("held %s\n" % name).encode())
            say("ANSWER %s" % name)
        else:
            released.cancel()
            self.active -= 1
            say("GONE %s" % name)

    async def serve(self, reader, writer):
        self.active += 1
        say("ACCEPT active=%d" % self.active)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            self.active -= 1
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target = lines[0].split(" ")[:2]
        headers = [l.split(":", 1) for l in lines[1:] if ":" in l]
        path = target.split("?", 1)[0]
        if path.startswith("/api/"):
            path = path[4:]
        length = [v.strip() for k, v in headers
                  if k.strip().lower() == "content-length"]
        body = b""
        if path == "/post/stall":
            say("STALL %s" % path)
            await asyncio.sleep(3600)
            return
        if length:
            try:
                body = await reader.readexactly(int(length[0]))
            except (asyncio.IncompleteReadError, ConnectionError):
                self.active -= 1
                writer.close()
                return
            say("BODY %s %s %d" % (method, path, len(body)))
        if path.startswith("/hold/"):
            await self.hold(path[6:], reader, writer)
        elif path.startswith("/redirect/"):
            # lws 4.1.6 cannot parse a Location with userinfo, so only one
            # without it shows whether a redirect would be followed
            code = int(path[10:].rstrip("u"))
            userinfo = "user:hunter2@" if path.endswith("u") else ""
            loc = "http://%s%s:%d/steal?token=s3cr3t#frag" % (
                userinfo, self.steal[0], self.steal[1])
            await self.respond(writer, code, "Redirect", b"moved\n",
                               "Location: %s\r\n" % loc)
        elif path == "/post/echo":
            await self.respond(writer, 200, "OK", body)
        elif path == "/post/headers":
            text = "method %s\nlen %d\n" % (method, len(body))
            text += "".join("%s: %s\n" % (k.strip().lower(), v.strip())
                            for k, v in headers)
            await self.respond(writer, 200, "OK", text.encode("latin-1"))
        elif path.startswith("/post/status/"):
            code = int(path[13:])
            err = ('{"error": {"type": "invalid_prompt", "message": '
                   '"Cannot execute because a node is missing the '
                   'class_type property.", "details": "Node ID \'#1\'", '
                   '"extra_info": {}}, "node_errors": {}}')
            await self.respond(writer, code, "Status", err.encode())
        else:
            await self.respond(writer, 404, "Not Found", b"no route\n")
        writer.close()

    async def stolen(self, reader, writer):
        say("STEAL_ACCEPT")
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            writer.close()
            return
        for line in head.decode("latin-1").split("\r\n"):
            if line:
                say("STEAL_HDR %s" % line)
        body = b"stolen\n"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()


async def main(port):
    peer = Peer()
    loop = asyncio.get_running_loop()
    steal = None
    for host in ("127.0.0.2", "127.0.0.1"):
        try:
            steal = await asyncio.start_server(peer.stolen, host, 0)
            break
        except OSError:
            continue
    peer.steal = steal.sockets[0].getsockname()[:2]
    server = await asyncio.start_server(peer.serve, "127.0.0.1", port)
    say("STEAL %s %d" % peer.steal)
    say("LISTENING %d" % server.sockets[0].getsockname()[1])
    stopped = loop.create_future()
    pending = bytearray()

    def read_stdin():
        # os.read, not sys.stdin: a buffered readline could keep a second
        # command in Python's buffer while the fd looks idle
        chunk = os.read(0, 4096)
        if not chunk:
            loop.remove_reader(0)
            stopped.set_result(None)
            return
        pending.extend(chunk)
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            peer.command(line.decode("latin-1"))

    loop.add_reader(0, read_stdin)
    await stopped


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    asyncio.run(main(args.port))
