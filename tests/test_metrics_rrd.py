"""
The round-robin archives against values worked out by hand, step by step
as xcp-rrdd computes them: averages over several PDPs, a DERIVE reading
spread over the steps it straddles, MIN/MAX, the xff, bounds, heartbeat,
and the /rrd_updates and dump documents of small RRDs.
"""

import json
import math
import xml.etree.ElementTree as ET

import pytest

from txxapi.metrics import formats
from txxapi.metrics.rrd import (
    ABSOLUTE, AVERAGE, DERIVE, GAUGE, MAX, MIN, RRD, DataSource, NoArchive,
    UnknownSource, archive_specs)


def newest(rrd, archive, n, source=0):
    """The ``n`` newest rows of an archive, newest first."""
    return [rrd.archives[archive].peek(source, age) for age in range(n)]


def nan(x):
    return x != x


def test_archive_layout_as_xcp_rrdd_creates_it():
    plain = archive_specs(False)
    assert plain == [(AVERAGE, 120, 1, 0.5), (AVERAGE, 120, 12, 0.5),
                     (AVERAGE, 168, 720, 0.5), (AVERAGE, 366, 17280, 0.5)]
    both = archive_specs(True)
    # The 5 s archive stays AVERAGE only; the others get MIN and MAX,
    # with an xff of 1.
    assert both[0] == (AVERAGE, 120, 1, 0.5)
    assert [(cf, rows, pdp) for cf, rows, pdp, _ in both[1:4]] == [
        (AVERAGE, 120, 12), (MIN, 120, 12), (MAX, 120, 12)]
    assert {xff for _, _, _, xff in both[1:]} == {1.0}
    assert len(both) == 10


def test_gauge_average_over_three_steps():
    rrd = RRD(5, [DataSource("g", GAUGE)],
              [(AVERAGE, 10, 1, 0.5), (AVERAGE, 10, 3, 0.5)], timestamp=1000)
    for t, v in ((1005, 10), (1010, 20), (1015, 30), (1020, 40)):
        rrd.update(t, {"g": v})
    assert newest(rrd, 0, 4) == [40, 30, 20, 10]
    # 15 s rows: [1005, 1020) = 20, 30, 40 -> 30; the row before it had
    # two of its three PDPs before the RRD existed: unknown.
    row = newest(rrd, 1, 2)
    assert row[0] == 30
    assert nan(row[1])


def test_derive_spreads_a_reading_over_the_steps_it_straddles():
    rrd = RRD(5, [DataSource("c", DERIVE, min=0)], [(AVERAGE, 10, 1, 0.5)],
              timestamp=1002.5)
    for t, v in ((1007.5, 100), (1012.5, 200), (1017.5, 350)):
        rrd.update(t, {"c": v})
    # [1005, 1010): half of it at 100/5 s -> 20; [1010, 1015): half at
    # 20/s, half at 150/5 s = 30/s -> 25.  The first step had no rate yet
    # and no known seconds: xcp-rrdd records 0 for it.
    assert newest(rrd, 0, 3) == [25, 20, 0.0]


def test_derive_divides_by_the_steps_seconds_not_the_readings_spacing():
    """A counter going up 100 a second is 100/s in every row however its
    readings fall: one just after a step's end, one late (rrd.ml divides
    what a PDP gathered by its steps' known seconds)."""
    for times in ((1000, 1005, 1009.9, 1010.1, 1015),
                  (1000, 1004, 1011, 1015)):
        rrd = RRD(5, [DataSource("c", DERIVE, min=0)],
                  [(AVERAGE, 10, 1, 0.5)], timestamp=1000)
        for t in times:
            rrd.update(t, {"c": 100 * (t - 1000)})
        assert newest(rrd, 0, 3) == [pytest.approx(100)] * 3, times


def test_min_and_max_carry_the_last_pdp_into_the_next_row():
    rrd = RRD(5, [DataSource("g", GAUGE)],
              [(AVERAGE, 10, 2, 0.5), (MIN, 10, 2, 1.0), (MAX, 10, 2, 1.0)],
              timestamp=1000)
    for t, v in ((1005, 10), (1010, 4), (1015, 7), (1020, 9)):
        rrd.update(t, {"g": v})
    assert newest(rrd, 0, 2) == [8, 7]
    # rrd.ml folds the PDP that closed a row into the next one's MIN/MAX
    # (with an offset of 0), so the second row's MIN is 4, not 7.
    assert newest(rrd, 1, 2) == [4, 4]
    assert newest(rrd, 2, 2) == [9, 10]


def test_xff_renormalises_then_gives_up():
    rrd = RRD(5, [DataSource("g", GAUGE)], [(AVERAGE, 10, 4, 0.5)],
              timestamp=1000)
    # Row [1000, 1020): two unknown PDPs of four (limit int(0.5 * 4)).
    for t, v in ((1005, None), (1010, 6), (1015, None), (1020, 10)):
        rrd.update(t, {"g": v})
    # A gauge that reads unknown still hands over its last value as the
    # PDP of that step, then 0 (rrd.ml keeps ds_value for gauges): the
    # PDPs are 0, 6, 6, 10.
    assert newest(rrd, 0, 1) == [5.5]
    # Renormalisation: the unknown PDPs of a missing heartbeat.
    rrd2 = RRD(5, [DataSource("c", DERIVE)], [(AVERAGE, 10, 4, 0.5)],
               timestamp=1000)
    rrd2.update(1005, {"c": 0})      # no rate yet: NaN
    rrd2.update(1010, {"c": 50})     # 10/s
    rrd2.update(1015, {"c": 100})    # 10/s
    rrd2.update(1020, {"c": None})   # NaN
    # Two unknown PDPs of four are allowed.  Each unknown one scales what
    # was accumulated so far by old/new divisor: 0 * 4/3, then + 10/4
    # + 10/4, then 5 * 3/2.
    assert newest(rrd2, 0, 1) == [7.5]
    for t in (1025, 1030, 1035, 1040):
        rrd2.update(t, {"c": None})
    assert nan(newest(rrd2, 0, 1)[0])


def test_bounds_heartbeat_absolute_and_inverse():
    rrd = RRD(5, [DataSource("pct", GAUGE, min=0, max=1),
                  DataSource("rate", DERIVE, min=0, max=1),
                  DataSource("abs", ABSOLUTE, min=0),
                  DataSource("busy", DERIVE, min=0, max=1, inverse=True)],
              [(AVERAGE, 10, 1, 0.5)], timestamp=1000)
    rrd.update(1005, {"pct": 0.5, "rate": 0, "abs": 50, "busy": 0})
    rrd.update(1010, {"pct": 1.5, "rate": 5.2, "abs": 100, "busy": 1})
    row = [rrd.archives[0].peek(i, 0) for i in range(4)]
    # Above max, the PDP is unknown; a 1-PDP archive cannot renormalise
    # and xcp-rrdd stores the CDP's starting value, 0, for it.
    assert row[0] == 0.0
    assert row[1] == 1.0             # 1.04/s: within 5 % of max, capped
    assert row[2] == 20              # 100 per 5 s
    assert row[3] == pytest.approx(0.8)   # 1 s idle in 5: 80 % busy
    rrd.update(1015, {"pct": 0.25, "rate": 10.2, "abs": 0, "busy": 2})
    assert rrd.archives[0].peek(1, 0) == 1.0
    # A reading more than the heartbeat (300 s) after the last is unknown.
    rrd.update(1400, {"pct": 0.25, "rate": 11, "abs": 0, "busy": 3})
    assert all(nan(rrd.archives[0].peek(i, 0)) for i in range(4))


def test_rows_are_single_precision():
    rrd = RRD(5, [DataSource("g")], [(AVERAGE, 4, 1, 0.5)], timestamp=1000)
    rrd.update(1005, {"g": 0.1})
    value = rrd.archives[0].peek(0, 0)
    assert value != 0.1 and value == pytest.approx(0.1)
    assert formats.f_to_s(value) == "0.100000001490116"


def test_a_row_is_printed_as_each_value_alone():
    specials = [0.1, 0.0, -0.0, math.nan, math.inf, -math.inf, 1e-30,
                -2.5e38, 123456.789, 7.0, -1.0]
    rrd = RRD(5, [DataSource("s%d" % i) for i in range(len(specials))],
              [(AVERAGE, 4, 1, 0.5)], timestamp=1000)
    archive = rrd.archives[0]
    archive.push(specials, rrd.sources)
    stored = [archive.peek(i, 0) for i in range(len(specials))]
    row = formats.row_text(archive, 0)
    assert row.split("\n") == [formats.f_to_s(v) for v in stored]
    assert row.split("\n")[:6] == ["0.100000001490116", "0.0", "0.0",
                                   "NaN", "Infinity", "-Infinity"]
    # Remembered until the slot is written again.
    assert formats.row_text(archive, 0) is row
    archive.push(specials, rrd.sources)
    assert formats.row_text(archive, 0) is not row


def test_sources_added_and_removed():
    rrd = RRD(5, [DataSource("a")], [(AVERAGE, 4, 1, 0.5)], timestamp=1000)
    rrd.update(1005, {"a": 1})
    rrd.add_source(DataSource("b"), 1005)
    rrd.update(1010, {"a": 2, "b": 3})
    assert rrd.names() == ["a", "b"]
    assert rrd.query("b", 1010) == 3
    assert nan(rrd.archives[0].peek(1, 1))   # b did not exist then
    rrd.remove_source("a")
    rrd.remove_source("a")
    assert rrd.names() == ["b"]
    with pytest.raises(UnknownSource):
        rrd.query("a", 1010)


def _two_rrds():
    host = RRD(5, [DataSource("cpu0"), DataSource("memory_free_kib")],
               [(AVERAGE, 12, 1, 0.5), (AVERAGE, 12, 3, 0.5)], timestamp=1000)
    vm = RRD(5, [DataSource("cpu0")],
             [(AVERAGE, 12, 1, 0.5), (AVERAGE, 12, 3, 0.5)], timestamp=1000)
    for i, t in enumerate(range(1005, 1065, 5)):
        host.update(t, {"cpu0": 0.5, "memory_free_kib": 1000 + i})
        vm.update(t, {"cpu0": 0.25})
    return [("host:H:", host), ("vm:V:", vm)]


def test_rrd_updates_document_xml_and_json():
    x = formats.export(_two_rrds(), 1045, 0, AVERAGE)
    assert x.legend == ["AVERAGE:host:H:cpu0", "AVERAGE:host:H:memory_free_kib",
                        "AVERAGE:vm:V:cpu0"]
    assert (x.start, x.step, x.end) == (1050, 5, 1060)
    assert x.times == [1060, 1055, 1050, 1045]
    xml = formats.xport_xml(x)
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<xport>'
                          "<meta><start>1050</start><step>5</step><end>1060"
                          "</end><rows>4</rows><columns>3</columns><legend>"
                          "<entry>AVERAGE:host:H:cpu0</entry>")
    assert "<row><t>1060</t><v>0.5</v><v>1011</v><v>0.25</v></row>" in xml
    ET.fromstring(xml.split("\n", 1)[1])
    doc = json.loads(formats.xport_json(x))
    assert doc["meta"] == {"start": 1050, "step": 5, "end": 1060,
                           "rows": 4, "columns": 3, "legend": x.legend}
    assert doc["data"][0] == {"t": 1060, "values": ["0.5", "1011", "0.25"]}
    # Negative start: before the last update; an interval picks the 15 s
    # archive.
    x = formats.export(_two_rrds(), -30, 15, None)
    assert x.step == 15 and x.times == [1050, 1035]
    with pytest.raises(NoArchive):
        formats.export([], 0, 0, None)


def test_whole_rrd_dump():
    _, host = _two_rrds()[0]
    xml = formats.rrd_xml(host)
    root = ET.fromstring(xml.split("\n", 1)[1])
    assert root.findtext("step") == "5"
    assert root.findtext("lastupdate") == "1060"
    assert [d.findtext("name") for d in root.findall("ds")] == \
        ["cpu0", "memory_free_kib"]
    ds = root.find("ds")
    assert (ds.findtext("type"), ds.findtext("minimal_heartbeat"),
            ds.findtext("min"), ds.findtext("max")) == \
        ("GAUGE", "300", "-Infinity", "Infinity")
    rra = root.find("rra")
    assert rra.findtext("cf") == "AVERAGE"
    assert rra.find("params").findtext("xff") == "0.5"
    rows = rra.find("database").findall("row")
    assert len(rows) == 12
    assert [v.text for v in rows[-1]] == ["0.5", "1011"]   # oldest first
    doc = json.loads(formats.rrd_json(host))
    assert doc["step"] == "5" and doc["rra"][0]["database"][-1] == \
        ["0.5", "1011"]
    assert doc["ds"][1]["last_ds"] == "1011"
    assert math.isnan(float(doc["rra"][1]["database"][0][0]))
