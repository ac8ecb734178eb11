"""pytest fixtures for the comfy2mqtt integration tests (see harness.py).

Fixtures are function-scoped: every test gets its own broker, simulator and
bridge on fresh ports, so tests can run in any order. When a test fails, the
logs of every process it started are printed in the teardown section.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    for when in ("setup", "call"):
        rep = getattr(request.node, "rep_" + when, None)
        if rep is not None and rep.failed:
            return True
    return False


class ProcessRegistry:
    """Remembers every process a test started, stops them at teardown and
    prints their logs when the test failed."""

    def __init__(self):
        self.procs = []

    def add(self, proc):
        self.procs.append(proc)
        return proc

    def dump(self):
        for p in self.procs:
            print("\n===== %s (%s starts) stderr tail =====" % (p.name, p.starts))
            print(p.stderr_tail(120))
            if p.name == "bridge":
                out = p.stdout_text()
                print("===== bridge stdout tail =====")
                print("\n".join(out.splitlines()[-40:]))

    def stop_all(self):
        for p in reversed(self.procs):
            try:
                if p.name == "bridge":
                    p.kill()
                else:
                    p.terminate()
            except Exception as e:  # teardown must reach every process
                print("cleanup of %s failed: %s" % (p.name, e))


@pytest.fixture
def procs(request):
    reg = ProcessRegistry()
    yield reg
    if _failed(request):
        reg.dump()
    reg.stop_all()


@pytest.fixture
def broker(tmp_path, procs):
    """A running private mosquitto."""
    return procs.add(harness.Broker(str(tmp_path / "broker"))).start()


@pytest.fixture
def make_broker(tmp_path, procs):
    """Factory: make_broker(start=True, port=None, persistence=False)."""
    count = [0]

    def make(start=True, port=None, persistence=False):
        count[0] += 1
        b = procs.add(harness.Broker(str(tmp_path / ("broker%d" % count[0])), port=port, persistence=persistence))
        return b.start() if start else b

    return make


@pytest.fixture
def sim(tmp_path, procs):
    """A running ComfyUI simulator (v0.21.0)."""
    return procs.add(harness.Sim(str(tmp_path / "sim"))).start()


@pytest.fixture
def make_sim(tmp_path, procs):
    """Factory: make_sim(start=True, port=0, server_version=None, ...)."""
    count = [0]

    def make(start=True, port=0, **kw):
        count[0] += 1
        s = procs.add(harness.Sim(str(tmp_path / ("sim%d" % count[0])), port=port, **kw))
        return s.start() if start else s

    return make


@pytest.fixture
def collectors():
    made = []
    yield made
    for c in made:
        try:
            c.stop()
        except Exception as e:
            print("collector stop failed: %s" % e)


@pytest.fixture
def collector(broker, collectors):
    """Records '#' on the broker fixture; subscribed before any bridge starts."""
    c = harness.Collector(broker.port).start()
    collectors.append(c)
    return c


@pytest.fixture
def make_collector(collectors):
    """Factory: make_collector(port, topic='#', client_id=None, persistent=False)."""

    def make(port, **kw):
        c = harness.Collector(port, **kw).start()
        collectors.append(c)
        return c

    return make


@pytest.fixture
def make_bridge(tmp_path, procs):
    """Factory: make_bridge(sim_url, broker_url, extra_args=(), env=None,
    client_id=None, start=True)."""
    count = [0]

    def make(comfyui_url, mqtt_url, extra_args=(), env=None, client_id=None, start=True, instance=harness.INSTANCE):
        count[0] += 1
        b = procs.add(harness.Bridge(str(tmp_path / ("bridge%d" % count[0])), comfyui_url, mqtt_url,
                                     instance=instance, client_id=client_id, extra_args=extra_args, env=env))
        return b.start() if start else b

    return make


@pytest.fixture
def bridge(broker, sim, collector, make_bridge):
    """A bridge connected to the broker and simulator fixtures."""
    b = make_bridge(sim.url, broker.url)
    b.wait_connected(collector, sim)
    return b
