"""
The metrics store fed by backend samples (the sources' rates against the
counters given), its RRDs written and read back, and perfmon's alarms
counting down, firing and keeping quiet; the server's listeners held
until the first sample is in (for so long at most).
"""

import math
import os
import time

import pytest
from twisted.internet import defer

from tests.support.inprocess import make_server
from txxapi.metrics import perfmon, sources, storage
from txxapi.metrics.rrd import UnknownSource
from txxapi.metrics.store import HOST, VM, MetricsStore
from txxapi.metrics.collector import Metrics
from txxenops.backends.simulator import SimulatorBackend
from txxenops.types import DomainStats, HostStats

VM_UUID = "6f1c0d0e-0000-4000-8000-000000000001"
HOST_UUID = "7a2c0d0e-0000-4000-8000-000000000002"


def sample(t, busy, idle, rx):
    dom = DomainStats(VM_UUID, 3, vcpu_times=[busy, busy / 2],
                      memory_actual=512 << 20, memory_target=512 << 20,
                      vbds={"xvda": (int(rx * 2), int(rx))},
                      vifs={"0": (int(rx), int(rx / 4), 0, 0)})
    return HostStats(time=t, memory_total=8 << 30, memory_free=6 << 30,
                     loadavg=0.5, cpu_avg_idle=idle, cpu_idle=[idle, idle],
                     pifs={"eth0": (int(rx), 0, 0, 0)}, domains=[dom])


def feed(store, samples):
    for stats in samples:
        host = (HOST_UUID,) + sources.readings_host(stats, {})
        vms = [(d.uuid, d.domid) + sources.readings_vm(d)
               for d in stats.domains]
        store.update(stats.time, host, vms, [], False)


def run(store, t0, n, busy_rate, idle_rate, rx_rate):
    feed(store, [sample(t0 + 5 * i, busy_rate * 5 * i, idle_rate * 5 * i,
                        rx_rate * 5 * i) for i in range(n)])


def test_rates_of_counters_and_levels():
    store = MetricsStore(5)
    run(store, 1000000, 4, 0.3, 0.6, 20000.0)
    assert math.isclose(store.query(VM, VM_UUID, "cpu0", ), 0.3, rel_tol=1e-5)
    assert math.isclose(store.query(VM, VM_UUID, "cpu1"), 0.15, rel_tol=1e-5)
    assert math.isclose(store.query(VM, VM_UUID, "vif_0_rx"), 20000.0,
                        rel_tol=1e-5)
    assert store.query(VM, VM_UUID, "memory") == 512 << 20
    # Host CPUs are idle time inverted: busy 0.4.
    assert math.isclose(store.query(HOST, None, "cpu_avg"), 0.4,
                        rel_tol=1e-5)
    assert store.query(HOST, None, "memory_free_kib") == 6 << 20
    names = {r["name_label"]: r for r in store.data_sources(VM, VM_UUID)}
    assert names["cpu0"]["enabled"] and not names["vif_0_rx_errors"]["enabled"]
    try:
        store.query(VM, VM_UUID, "vif_0_rx_errors")
        raise AssertionError("a source not recorded answered")
    except UnknownSource:
        pass
    store.record(VM, VM_UUID, "vif_0_rx_errors")
    assert "vif_0_rx_errors" in store.vms[VM_UUID].rrd
    store.forget(VM, VM_UUID, "vif_0_rx_errors")
    assert "vif_0_rx_errors" not in store.vms[VM_UUID].rrd


def test_rows_are_printed_as_they_are_made_and_as_a_request_prints_them():
    """The finest archive's rows are printed when made (the blank ones of
    a new RRD at once, restored ones by print_rows), so the first
    /rrd_updates finds them printed; the texts are those a request would
    print itself."""
    store = MetricsStore(5)
    run(store, 1000000, 6, 0.3, 0.6, 20000.0)
    fine = [a for a in store.vms[VM_UUID].rrd.archives
            if a.pdp_per_row == 1]
    assert fine
    printed = [list(a.memo) for a in fine]
    assert all(text is not None for texts in printed for text in texts)
    first = store.updates(-595, 5, None, True, None, None, True)
    for a in fine:
        a.memo = [None] * a.rows
    again = store.updates(-595, 5, None, True, None, None, True)
    assert first == again
    assert [list(a.memo) for a in fine] == printed
    # RRDs restored at a start are printed by the metrics thread.
    for a in fine:
        a.memo = [None] * a.rows
    store.print_rows()
    assert [list(a.memo) for a in fine] == printed


def test_saved_rrds_read_back_whole(tmp_path):
    store = MetricsStore(5)
    run(store, 1000000, 30, 0.3, 0.6, 1000.0)
    path = storage.path_in(str(tmp_path))
    storage.save(path, store.snapshot(storage.encode))
    again = MetricsStore(5)
    again.restore(storage.load(path))
    # A VM's RRD waits set aside until its domain is sampled again.
    assert VM_UUID in again.set_aside and not again.vms
    # Its 5 s rows come back printed, as the collector printed them.
    fine = [a for a in again.set_aside[VM_UUID].rrd.archives
            if a.pdp_per_row == 1]
    assert fine and all(None not in a.memo for a in fine)
    assert fine[0].memo == [a for a in store.vms[VM_UUID].rrd.archives
                            if a.pdp_per_row == 1][0].memo
    assert again.dump(VM, VM_UUID, False) == store.dump(VM, VM_UUID, False)
    # The coarser archives' rows are printed when asked, not saved.
    coarse = [a for a in again.host.rrd.archives if a.pdp_per_row > 1]
    assert all(set(a.memo) == {None} for a in coarse)
    assert again.dump(HOST, None, True) == store.dump(HOST, None, True)
    # An unreadable file is put aside, and nothing is lost silently.
    with open(path, "r+b") as f:
        f.seek(20)
        f.write(b"garbage!")
    assert storage.load(path) == []
    assert (tmp_path / "metrics" / "rrds.unreadable").exists()


CONFIG = ('<config><variable><name value="cpu_usage"/>'
          '<alarm_trigger_level value="0.5"/>'
          '<alarm_trigger_period value="10"/>'
          '<alarm_auto_inhibit_period value="60"/></variable></config>')


def test_perfmon_counts_down_fires_then_inhibits():
    mon = perfmon.Perfmon(5)
    mon.configure({(VM, VM_UUID): CONFIG}, 0)
    high = [(VM, VM_UUID, [("cpu0", 0.9), ("cpu1", 0.7), ("memory", 1e9)])]
    low = [(VM, VM_UUID, [("cpu0", 0.1), ("cpu1", 0.2)])]
    assert mon.evaluate(high, 100) == []            # 10 s to go, then 5
    alarms = mon.evaluate(high, 105)
    assert len(alarms) == 1
    priority, cls, uuid, body = alarms[0]
    assert (priority, cls, uuid) == (3, "VM", VM_UUID)
    assert body.startswith("value: 0.800000\nconfig:\n")
    assert '<name value="cpu_usage"/>' in body
    assert mon.evaluate(high, 110) == [] and mon.evaluate(high, 115) == []
    assert mon.evaluate(low, 120) == []
    # Past the inhibit period it fires again once the period has run.
    mon.evaluate(high, 170)
    assert len(mon.evaluate(high, 175)) == 1
    # A configuration that does not parse is ignored.
    mon.configure({(VM, VM_UUID): "<config><variable>"}, 200)
    assert mon.evaluate(high, 205) == [] and mon.evaluate(high, 210) == []


class HeldBridge:
    """A xenops bridge whose samples arrive when the test says."""

    def __init__(self):
        self.pending = []

    def call(self, method, *args):
        assert method == "sample_metrics"
        d = defer.Deferred()
        self.pending.append(d)
        return d


@pytest.fixture
def held(tmp_path):
    """Starts Metrics of an in-process server on HeldBridges, all in one
    data dir: ``start(step)`` gives (metrics, bridge); the clock."""
    server, clock = make_server(tmp_path / "server")
    made = []

    def start(step=5):
        bridge = HeldBridge()
        metrics = Metrics(server.db, server.identity, clock, bridge,
                          server.messages, str(tmp_path / "metrics"),
                          step=step)
        metrics.start()
        made.append(metrics)
        return metrics, bridge
    yield start, clock
    for metrics in made:
        for loop in metrics._loops:
            loop.stop()
        metrics.workers.stop()


def test_the_listeners_wait_for_the_first_sample(held):
    metrics, bridge = held[0]()
    waiting = metrics.first_sample()
    assert len(bridge.pending) == 1 and not waiting.called
    bridge.pending[0].callback(SimulatorBackend().sample_metrics(["eth0"]))
    deadline = time.monotonic() + 10
    while not waiting.called and time.monotonic() < deadline:
        time.sleep(0.01)
    assert waiting.called
    assert metrics.store.host is not None
    # Once sampled, asking again does not wait.
    assert metrics.first_sample().called


def test_a_backend_that_never_samples_delays_the_listeners_only_so_long(
        held):
    start, clock = held
    metrics, _ = start()
    waiting = metrics.first_sample(timeout=7)
    clock.advance(6)
    assert not waiting.called
    clock.advance(1)
    assert waiting.called and waiting.result is None


def test_rrds_saved_at_another_step_start_afresh(held, tmp_path):
    store = MetricsStore(5)
    run(store, 1000000, 30, 0.3, 0.6, 1000.0)
    storage.save(storage.path_in(str(tmp_path / "metrics")),
                 store.snapshot(storage.encode))
    start, _ = held
    same, _ = start(5)
    # (Saved under another host's uuid than the server's: kept as that
    # host's backup.)
    assert HOST_UUID in same.store.archived_hosts and \
        VM_UUID in same.store.set_aside
    other, _ = start(1)
    assert not other.store.archived_hosts and not other.store.set_aside


def test_the_periodic_save_runs_beside_its_loop(held, tmp_path):
    # The loop is rescheduled at once, on the clock's thread, not when the
    # save's thread is done (from that thread, racing the clock).
    start, clock = held
    metrics, _ = start()
    saves = metrics._loops[1]
    clock.advance(metrics.save_interval)
    assert saves.call is not None
    path = storage.path_in(str(tmp_path / "metrics"))
    deadline = time.monotonic() + 10
    while metrics._saving is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert metrics._saving is None and os.path.exists(path)
