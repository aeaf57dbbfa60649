"""
The metrics store fed by backend samples (the sources' rates against the
counters given), its RRDs written and read back, and perfmon's alarms
counting down, firing and keeping quiet; the server's listeners held
until the first sample is in (for so long at most).
"""

import gzip
import json
import math
import os
import re
import struct
import time
import xml.etree.ElementTree as ET
import zlib

import pytest
from twisted.internet import defer

from tests.support.inprocess import make_server
from txxapi.metrics import legacy, perfmon, sources, storage
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
    a new RRD at once), so the first /rrd_updates finds them printed; the
    texts are those a request would print itself."""
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


def _upstream_order(root):
    """The elements of an RRD document in the order xcp-rrdd's reader
    takes them, each present (it reads them one after the other)."""
    assert [e.tag for e in root][:3] == ["version", "step", "lastupdate"]
    for ds in root.findall("ds"):
        assert [e.tag for e in ds] == [
            "name", "type", "minimal_heartbeat", "min", "max", "last_ds",
            "value", "unknown_sec", "last_updated"]
    for rra in root.findall("rra"):
        assert [e.tag for e in rra] == ["cf", "pdp_per_row", "params",
                                        "cdp_prep", "database"]
        rows = rra.findall("database/row")
        assert rows and all(len(r) == len(root.findall("ds"))
                            for r in rows)
    return len(root.findall("ds"))


def _without_last_readings(text):
    # Not read back, as xcp-rrdd reads them.
    return re.sub(r"<last_ds>[^<]*</last_ds>", "", text)


def test_rrds_are_archived_as_xcp_rrdd_archives_them(tmp_path):
    store = MetricsStore(5)
    run(store, 1000000, 30, 0.3, 0.6, 1000.0)
    files = storage.Archives(str(tmp_path))
    files.save(store.uuids(), lambda uuid, written: store.copy_if_behind(
        uuid, written, files.state))
    directory = tmp_path / "blobs" / "rrds"
    assert sorted(os.listdir(directory)) == sorted(
        [HOST_UUID + ".gz", VM_UUID + ".gz"])
    # Gzip-compressed RRD XML, in xcp-rrdd's internal form.
    root = ET.fromstring(gzip.decompress(
        (directory / (VM_UUID + ".gz")).read_bytes()))
    assert _upstream_order(root) == len(store.vms[VM_UUID].rrd.sources)
    again = MetricsStore(5)
    kinds = {HOST_UUID: HOST, VM_UUID: VM}
    again.restore(storage.Archives(str(tmp_path)).load(kinds.get))
    # A VM's RRD waits set aside until its domain is sampled again.
    assert VM_UUID in again.set_aside and not again.vms
    # Its 5 s rows come back printed, as the file prints them.
    fine = [a for a in again.set_aside[VM_UUID].rrd.archives
            if a.pdp_per_row == 1]
    before = [a for a in store.vms[VM_UUID].rrd.archives
              if a.pdp_per_row == 1][0]
    assert None not in fine[0].memo and \
        [fine[0].memo[fine[0].slot(age)] for age in range(120)] == \
        [before.memo[before.slot(age)] for age in range(120)]
    # The coarser archives' rows are printed when asked, not kept.
    coarse = [a for a in again.host.rrd.archives if a.pdp_per_row > 1]
    assert all(set(a.memo) == {None} for a in coarse)
    assert again.dump(VM, VM_UUID, False) != store.dump(VM, VM_UUID, False)
    assert _without_last_readings(again.dump(VM, VM_UUID, False)) == \
        _without_last_readings(store.dump(VM, VM_UUID, False))
    # (The host's loadavg has no lower bound, read back as zero: what was
    # below it is unknown now, as in xcp-rrdd.)
    assert again.host.rrd.names() == store.host.rrd.names()
    # The VM's domain sampled again: its RRD carries on, the first rate of
    # a counter unknown (its last reading was not kept: xcp-rrdd reads
    # last_ds as unknown).  The minute's average leaves that PDP out; the
    # 5 s row holds what rrd.ml holds for an unknown PDP, 0.
    feed(again, [sample(1000150, 0.3 * 150, 0.6 * 150, 150000.0)])
    rrd = again.vms[VM_UUID].rrd
    fine = [a for a in rrd.archives if a.pdp_per_row == 1][0]
    assert fine.peek(rrd.index("memory"), 1) == 512 << 20
    cpu0 = rrd.index("cpu0")
    assert fine.peek(cpu0, 0) == 0.0 and \
        fine.peek(cpu0, 1) == pytest.approx(0.3)
    minute = [a for a in rrd.archives if a.pdp_per_row == 12][0]
    assert minute.cdp_unknown[cpu0] == 1 and \
        minute.cdp_unknown[rrd.index("memory")] == 0
    # Only what changed is written again; what is no longer kept (an RRD
    # handed over) goes.
    written = dict(files.written)
    assert store.release(VM, VM_UUID, live=True).uuid == VM_UUID
    files.save(store.uuids(), lambda uuid, written: store.copy_if_behind(
        uuid, written, files.state))
    assert os.listdir(directory) == [HOST_UUID + ".gz"] and \
        files.written == {HOST_UUID: written[HOST_UUID]}
    # An unreadable file is put aside, and nothing is lost silently.
    (directory / (HOST_UUID + ".gz")).write_bytes(b"garbage!")
    assert storage.Archives(str(tmp_path)).load(kinds.get) == []
    assert (directory / (HOST_UUID + ".gz.unreadable")).exists()


def test_an_rrd_that_could_not_be_sent_is_kept_as_it_was():
    """A hand-over that fails puts back the RRD released for it (the
    same object, not decoded again from the body), to be sent again;
    unless a newer one of the VM came meanwhile."""
    store = MetricsStore(5)
    run(store, 1000000, 30, 0.3, 0.6, 1000.0)
    owner = store.release(VM, VM_UUID, live=True)
    assert owner is not None and not store.vms and not store.set_aside
    assert store.put_back(owner) and store.set_aside[VM_UUID] is owner
    # Released again and its domain back meanwhile: the live one stays.
    owner = store.release(VM, VM_UUID)
    store.handed_over.clear()
    run(store, 1000150, 2, 0.3, 0.6, 1000.0)
    assert VM_UUID in store.vms and not store.put_back(owner)
    assert store.vms[VM_UUID] is not owner and not store.set_aside


# Written by hand as xcp-rrdd's writer lays it out, indented: two
# sources, a 5 s archive of three rows and a minute one of two.
UPSTREAM = b"""<?xml version="1.0" encoding="UTF-8"?>
<rrd>
  <version>0003</version><step>5</step><lastupdate>1000010</lastupdate>
  <ds><name>cpu0</name><type>DERIVE</type>
    <minimal_heartbeat>300.0000</minimal_heartbeat><min>0.0</min>
    <max>1.0000</max><last_ds>12</last_ds><value>0.25</value>
    <unknown_sec>0</unknown_sec><last_updated>1000012.5</last_updated></ds>
  <ds><name>memory</name><type>GAUGE</type>
    <minimal_heartbeat>300.0000</minimal_heartbeat><min>-Infinity</min>
    <max>Infinity</max><last_ds>0.0</last_ds><value>1024</value>
    <unknown_sec>0</unknown_sec></ds>
  <rra><cf>AVERAGE</cf><pdp_per_row>1</pdp_per_row>
    <params><xff>0.5000</xff></params>
    <cdp_prep><ds><primary_value>0.0</primary_value>
      <secondary_value>0.0</secondary_value><value>0.0</value>
      <unknown_datapoints>0</unknown_datapoints></ds>
      <ds><primary_value>0.0</primary_value>
      <secondary_value>0.0</secondary_value><value>0.0</value>
      <unknown_datapoints>0</unknown_datapoints></ds></cdp_prep>
    <database>
      <row><v>NaN</v><v>-1</v></row>
      <row><v>0.5</v><v>1024</v></row>
      <row><v>0.25</v><v>2048</v></row>
    </database></rra>
  <rra><cf>AVERAGE</cf><pdp_per_row>12</pdp_per_row>
    <params><xff>0.5000</xff></params>
    <cdp_prep><ds><primary_value>0.0</primary_value>
      <secondary_value>0.0</secondary_value><value>0.125</value>
      <unknown_datapoints>1</unknown_datapoints></ds>
      <ds><primary_value>0.0</primary_value>
      <secondary_value>0.0</secondary_value><value>512</value>
      <unknown_datapoints>0</unknown_datapoints></ds></cdp_prep>
    <database><row><v>NaN</v><v>NaN</v></row>
      <row><v>0.375</v><v>1536</v></row></database></rra>
</rrd>
"""


def test_an_archive_xcp_rrdd_wrote_is_read(tmp_path):
    directory = tmp_path / "blobs" / "rrds"
    directory.mkdir(parents=True)
    (directory / (VM_UUID + ".gz")).write_bytes(gzip.compress(UPSTREAM))
    (kind, uuid, domid, rrd), = storage.Archives(str(tmp_path)).load(
        {VM_UUID: VM}.get)
    assert (kind, uuid, domid) == (VM, VM_UUID, None)
    assert rrd.names() == ["cpu0", "memory"] and rrd.step == 5
    # The sources' own update time, else the document's.
    assert rrd.last_updated == 1000012.5
    fine, minute = rrd.archives
    assert (fine.rows, minute.rows, minute.pdp_per_row) == (3, 2, 12)
    m = rrd.index("memory")
    # Newest last; below the (zero) lower bound, unknown.
    assert [fine.peek(m, age) for age in range(2)] == [2048, 1024]
    assert math.isnan(fine.peek(m, 2))
    assert minute.peek(rrd.index("cpu0"), 0) == 0.375
    assert minute.cdp_value == [0.125, 512] and minute.cdp_unknown == [1, 0]
    # What ours writes of it reads back the same.
    again = storage.from_xml(storage.to_xml(rrd))
    assert storage.to_xml(again) == storage.to_xml(rrd)
    _upstream_order(ET.fromstring(storage.to_xml(rrd)))
    for bad in (b"<rrd>", b"not xml", UPSTREAM.replace(b"<v>2048</v>", b""),
                UPSTREAM.replace(b"<cf>AVERAGE</cf>", b"<cf>SUM</cf>")):
        with pytest.raises(ValueError):
            storage.from_xml(bad)


def legacy_file(owners):
    """The file of before, of ``owners``, as it was written."""
    parts = [legacy.MAGIC]
    for owner in owners:
        rrd = owner.rrd
        head = json.dumps({
            "kind": owner.kind, "uuid": owner.uuid, "domid": owner.domid,
            "step": rrd.step, "last_updated": rrd.last_updated,
            "sources": [[ds.name, ds.type, ds.min, ds.max, ds.heartbeat,
                         ds.inverse, ds.last, ds.value, ds.unknown_sec]
                        for ds in rrd.sources],
            "archives": [[a.cf, a.rows, a.pdp_per_row, a.xff, a.current,
                          a.cdp_value, a.cdp_unknown]
                         for a in rrd.archives]}).encode()
        rings = b"".join(r.tobytes() for a in rrd.archives for r in a.rings)
        record = zlib.compress(struct.pack(">I", len(head)) + head + rings)
        parts += [struct.pack(">I", len(record)), record]
    return b"".join(parts)


def test_the_former_rrd_file_is_converted(tmp_path):
    """RRDs kept in the file of before are read, archived as xcp-rrdd
    archives them, and the file removed: an upgrade loses nothing."""
    store = MetricsStore(5)
    run(store, 1000000, 30, 0.3, 0.6, 1000.0)
    path = legacy.path_in(str(tmp_path))
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(legacy_file([store.host, store.vms[VM_UUID]]))
    files = storage.Archives(str(tmp_path))
    owners = files.load({HOST_UUID: HOST, VM_UUID: VM}.get)
    assert not os.path.exists(path)
    assert sorted(os.listdir(tmp_path / "blobs" / "rrds")) == sorted(
        [HOST_UUID + ".gz", VM_UUID + ".gz"])
    again = MetricsStore(5)
    again.restore(owners)
    assert again.dump(VM, VM_UUID, True) == store.dump(VM, VM_UUID, True)
    # And what was converted reads back from its archive.
    owners = storage.Archives(str(tmp_path)).load(
        {HOST_UUID: HOST, VM_UUID: VM}.get)
    assert {o[1] for o in owners} == {HOST_UUID, VM_UUID}


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


def server_host_uuid(metrics):
    return metrics.db.fields("host", metrics.identity.host_ref)["uuid"]


def wait_for(what, timeout=10):
    deadline = time.monotonic() + timeout
    while not what() and time.monotonic() < deadline:
        time.sleep(0.01)
    return what()


def test_rrds_saved_at_another_step_start_afresh(held, tmp_path):
    start, _ = held
    metrics, bridge = start(5)
    bridge.pending[0].callback(SimulatorBackend().sample_metrics(["eth0"]))
    assert wait_for(lambda: metrics._sampling is None)
    # Archived at the stop, read back at the next start at that step.
    stopped = metrics.stop()
    assert wait_for(lambda: stopped.called)
    same, _ = start(5)
    assert wait_for(lambda: same.store.host is not None)
    # (Printed to 15 digits, as xcp-rrdd prints it.)
    assert math.isclose(same.store.host.rrd.last_updated,
                        metrics.store.host.rrd.last_updated, abs_tol=1e-4)
    other, _ = start(1)
    assert other.store.host is None


def test_the_periodic_save_runs_beside_its_loop(held, tmp_path):
    # The loop is rescheduled at once, on the clock's thread, not when the
    # save's thread is done (from that thread, racing the clock).
    start, clock = held
    metrics, bridge = start()
    bridge.pending[0].callback(SimulatorBackend().sample_metrics(["eth0"]))
    assert wait_for(lambda: metrics._sampling is None)
    saves = metrics._loops[1]
    clock.advance(metrics.save_interval)
    assert saves.call is not None
    path = tmp_path / "metrics" / "blobs" / "rrds" / (
        server_host_uuid(metrics) + ".gz")
    assert wait_for(lambda: metrics._saving is None)
    assert os.path.exists(path)
