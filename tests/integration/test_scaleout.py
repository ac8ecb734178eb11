"""Scale-out on MQTT engines people already run, with nothing of our own
(README "Deployment"): an edge mosquitto next to the bridge, bridged to a
central one with mosquitto's own `connection` config, carries every
completion to the center, also across a 10 s cut of the edge-central link
while the edge queues; and three consumers in one MQTT 5 shared-subscription
group together get each completion exactly once."""

import socket
import threading
import time

import harness
from harness import BASE


class CuttableLink:
    """A TCP forwarder 127.0.0.1:port -> 127.0.0.1:target that can be cut:
    cut() closes every connection and refuses new ones until restore()."""

    def __init__(self, target):
        self.target = target
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.up = True
        self.conns = []
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            if not self.up:
                c.close()
                continue
            try:
                s = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, s]
            threading.Thread(target=self._pump, args=(c, s), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        self.up = False
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def restore(self):
        self.up = True

    def close(self):
        self.stopping = True
        self.cut()
        self.lsock.close()


def completions(col, since=0):
    out = []
    for m, o in col.json_messages(BASE + "/completion", since):
        out.append(o.get("prompt_id"))
    return out


def test_edge_to_central_bridge_carries_every_completion_across_a_cut(tmp_path, procs, make_sim, make_collector,
                                                                       make_bridge):
    central = procs.add(harness.Broker(str(tmp_path / "central"))).start()
    link = CuttableLink(central.port)
    try:
        edge = procs.add(harness.Broker(str(tmp_path / "edge"), extra_conf=[
            "connection central",
            "address 127.0.0.1:%d" % link.port,
            "topic %s/# out 1" % harness.PREFIX,
            "cleansession false",
            "bridge_protocol_version mqttv50",
            "restart_timeout 1",
            "keepalive_interval 5",
        ])).start()
        consumer = make_collector(central.port, topic=BASE + "/completion")
        sim = make_sim()
        edge_col = make_collector(edge.port)
        bridge = make_bridge(sim.url, edge.url)
        bridge.wait_connected(edge_col, sim)

        before = [sim.submit(client_id=bridge.client_id, steps=3, step_ms=10)["prompt_id"] for _ in range(3)]
        got = consumer.wait_for(lambda _m: set(before) <= set(completions(consumer)), timeout=20)
        assert got, "central consumer got %s of %s before the cut%s" % (completions(consumer), before,
                                                                         bridge.context())
        link.cut()
        t0 = time.monotonic()
        during = [sim.submit(client_id=bridge.client_id, steps=3, step_ms=10)["prompt_id"] for _ in range(3)]
        done_at_edge = edge_col.wait_for(lambda _m: set(during) <= set(completions(edge_col)), timeout=20)
        assert done_at_edge, "the edge broker never saw the completions made during the cut%s" % bridge.context()
        early = set(during) & set(completions(consumer))
        assert not early, "completions %s crossed a cut link" % early
        remaining = 10 - (time.monotonic() - t0)
        if remaining > 0:
            time.sleep(remaining)  # the cut lasts 10 s, as the scenario says
        link.restore()
        all_ids = set(before) | set(during)
        got = consumer.wait_for(lambda _m: all_ids <= set(completions(consumer)), timeout=30)
        missing = all_ids - set(completions(consumer))
        assert got and not missing, "central consumer is missing completions %s after the link came back%s" % (
            sorted(missing), bridge.context())
    finally:
        link.close()


def test_shared_subscription_group_gets_each_completion_once(broker, sim, collector, make_collector, make_bridge):
    group = [make_collector(broker.port, topic="$share/g/%s/+/completion" % harness.PREFIX) for _ in range(3)]
    bridge = make_bridge(sim.url, broker.url)
    bridge.wait_connected(collector, sim)
    ids = [sim.submit(client_id=bridge.client_id, steps=2, step_ms=5)["prompt_id"] for _ in range(24)]
    everything = collector.wait_for(lambda _m: set(ids) <= set(completions(collector)), timeout=60)
    assert everything, "the bridge did not publish all 24 completions%s" % bridge.context()

    def together():
        return [pid for c in group for pid in completions(c)]

    harness.wait_until(lambda: len(together()) >= len(ids), 10)
    got = together()
    dupes = sorted({p for p in got if got.count(p) > 1})
    assert sorted(got) == sorted(ids) and not dupes, (
        "the group got %d completions for %d prompts (duplicates %s, missing %s)" % (
            len(got), len(ids), dupes, sorted(set(ids) - set(got))))
    shares = [len(completions(c)) for c in group]
    assert all(n > 0 for n in shares), "one member of the group got nothing: %s" % shares
