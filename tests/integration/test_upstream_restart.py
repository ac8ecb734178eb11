"""ComfyUI restarts are routine (every custom-node install does one): once the
server answers again the bridge is back within 5 s, however long the outage and
however many restarts came before (the upstream backoff stops at 4 s plus
jitter), and upstream/state follows the link."""

import time

import harness
from harness import BASE

BACK_WITHIN_S = 5.0


def upstream(collector):
    m = collector.last(BASE + "/upstream/state")
    return m.payload if m else None


def restart_after(sim, bridge, collector, down_s):
    """Kills the simulator, keeps it down for down_s (the outage being
    simulated), starts it on the same port and returns how long the bridge
    took to be registered again."""
    sim.kill()
    gone = harness.wait_until(lambda: upstream(collector) == b"offline", 10)
    assert gone, "upstream/state did not go offline when ComfyUI died%s" % bridge.context()
    time.sleep(down_s)
    sim.start()
    t0 = time.monotonic()
    back = harness.wait_until(lambda: sim.has_client(bridge.client_id), 30)
    took = time.monotonic() - t0
    assert back, "the bridge never reconnected after a %ss outage%s" % (down_s, bridge.context())
    online = harness.wait_until(lambda: upstream(collector) == b"online", 5)
    assert online, "upstream/state did not come back online%s" % bridge.context()
    return took


def test_back_within_5s_after_long_outage_and_quick_second_restart(broker, make_sim, collector, make_bridge):
    sim = make_sim()
    bridge = make_bridge(sim.url, broker.url)
    bridge.wait_connected(collector, sim)
    # a 20 s outage: a backoff that kept doubling would wait 16 s or more
    first = restart_after(sim, bridge, collector, 20)
    # a second restart 3 s after the first
    time.sleep(3)
    second = restart_after(sim, bridge, collector, 3)
    assert first <= BACK_WITHIN_S and second <= BACK_WITHIN_S, (
        "bridge back %.1f s and %.1f s after ComfyUI answered again; at most %.0f s%s" % (
            first, second, BACK_WITHIN_S, bridge.context()))
