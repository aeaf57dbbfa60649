"""
The metrics of a real server on the simulator, sampled every second:
/rrd_updates (XML and JSON, as XO's stats view asks for it), the whole
RRD downloads and their refusals (rrdd's 500 when no RRD answers, never
at a new host's start), and the values checked against the
simulator's load model (txxenops.backends.simload) over the rows' times.
"""

import json
import math
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid as uuid_module
import xml.etree.ElementTree as ET

import pytest
import XenAPI

from tests.support.api import wait_until
from tests.support.pool import host_address
from tests.support.servers import PASSWORD, USER, RunningServer
from tests.test_console import new_vm
from txxenops.backends import simload

STEP = 1
ADDRESS = 40    # a loopback address no pool test takes
LOAD = 0.5
SCRAPE_TOKEN = "scrape-%s" % uuid_module.uuid4()
SERVER_ARGS = ["--simulator-op-time", "0.01", "--metrics-interval",
               str(STEP)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server sampling every STEP seconds, on its own loopback address
    at ports 80 and 443 as a real host is, since XO reaches a host by its
    address."""
    base = str(tmp_path_factory.mktemp("metrics"))
    token_file = os.path.join(base, "scrape-token")
    with open(token_file, "w") as f:
        f.write(SCRAPE_TOKEN + "\n")
    running = RunningServer(os.path.join(base, "data"),
                            extra_args=SERVER_ARGS + [
                                "--metrics-token-file", token_file],
                            http_port=80,
                            https_port=443, bind=host_address(ADDRESS))
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    """The API and the session id, logged in for the module."""
    session = server.session()
    yield session.xenapi, session._session
    session.xenapi.session.logout()


@pytest.fixture(scope="module")
def x(client):
    return client[0]


@pytest.fixture(scope="module")
def sid(client):
    return client[1]


@pytest.fixture(scope="module")
def vm(x):
    vm = new_vm(x, "metrics-vm")
    x.VM.set_VCPUs_max(vm, "2")
    x.VM.set_VCPUs_at_startup(vm, "2")
    x.VM.add_to_other_config(vm, "simulator-cpu-load", str(LOAD))
    x.VM.start(vm, False, False)
    yield vm
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def get(server, path, query, headers=()):
    url = "%s%s?%s" % (server.http_url, path, urllib.parse.urlencode(query))
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def updates(server, sid, must=True, **query):
    query = dict({"session_id": sid, "start": "-30", "host": "true",
                  "cf": "AVERAGE", "interval": str(STEP), "json": "true"},
                 **query)
    status, headers, body = get(server, "/rrd_updates", query)
    if not must and status != 200:
        return None
    assert status == 200, body
    return json.loads(body)


def rows_of(server, sid, suffix):
    """The known rows of a column, or [] while there is no document."""
    doc = updates(server, sid, must=False)
    if doc is None or not any(n.endswith(suffix)
                              for n in doc["meta"]["legend"]):
        return []
    return known(column(doc, suffix))


def column(doc, suffix):
    legend = doc["meta"]["legend"]
    i = next(i for i, name in enumerate(legend) if name.endswith(suffix))
    return [(row["t"], float(row["values"][i])) for row in doc["data"]]


def known(rows):
    return [(t, v) for t, v in rows if not math.isnan(v)]


def test_vm_cpu_follows_the_simulated_load(server, x, sid, vm):
    uuid = x.VM.get_uuid(vm)
    wait_until(lambda: len(rows_of(server, sid, "vm:%s:cpu1" % uuid)) >= 4,
               what="four rows of the VM's cpu1")
    doc = updates(server, sid)
    assert doc["meta"]["step"] == STEP
    assert all(name.startswith("AVERAGE:") for name in doc["meta"]["legend"])
    for channel in (0, 1):
        rows = known(column(doc, "vm:%s:cpu%d" % (uuid, channel)))
        assert len(rows) >= 3
        for t, v in rows[1:]:
            # A row is the busy fraction over its step; samples land
            # anywhere within a step, so allow one step either side.
            model = [simload.load(LOAD, uuid, channel, t + dt / 10.0)
                     for dt in range(-20, 11)]
            assert min(model) - 0.02 <= v <= max(model) + 0.02, (t, v)
    usage = known(column(doc, "vm:%s:cpu_usage" % uuid))
    cpu0 = dict(known(column(doc, "vm:%s:cpu0" % uuid)))
    cpu1 = dict(known(column(doc, "vm:%s:cpu1" % uuid)))
    for t, v in usage:
        if t in cpu0 and t in cpu1:
            assert abs(v - (cpu0[t] + cpu1[t]) / 2) < 1e-3
    memory = known(column(doc, "vm:%s:memory" % uuid))
    assert memory[-1][1] == float(x.VM.get_memory_dynamic_max(vm))
    host = x.host.get_all()[0]
    total = known(column(doc, "host:%s:memory_total_kib"
                         % x.host.get_uuid(host)))
    metrics = x.host.get_metrics(host)
    assert total[-1][1] == float(x.host_metrics.get_memory_total(metrics)) \
        // 1024
    # The host's CPUs carry the guests' vCPUs: busy above nothing.
    avg = known(column(doc, "host:%s:cpu_avg" % x.host.get_uuid(host)))
    assert all(0 < v <= 1 for _, v in avg)


def test_xml_form_and_vm_selection(server, x, sid, vm):
    uuid = x.VM.get_uuid(vm)
    wait_until(lambda: rows_of(server, sid, "vm:%s:cpu0" % uuid),
               what="rows")
    status, headers, body = get(server, "/rrd_updates", {
        "session_id": sid, "start": "-10", "vm_uuid": uuid})
    assert status == 200
    assert headers["Content-Type"] == "text/xml"
    assert headers["Access-Control-Allow-Origin"] == "*"
    doc = ET.fromstring(body)
    legend = [e.text for e in doc.find("meta/legend")]
    assert legend and all(":vm:%s:" % uuid in name for name in legend)
    rows = doc.findall("data/row")
    assert len(rows) == int(doc.find("meta/rows").text)
    assert all(len(r.findall("v")) == len(legend) for r in rows)
    times = [int(r.find("t").text) for r in rows]
    assert times == sorted(times, reverse=True)
    # The Accept header chooses, as xcp-rrdd's (so */* is JSON); without
    # one, the json key.
    for accept, kind in (("*/*", "application/json"),
                         ("text/xml, application/json;q=0.5", "text/xml")):
        query = {"session_id": sid, "start": "-10", "vm_uuid": uuid,
                 "json": "true"}
        status, headers, body = get(server, "/rrd_updates", query,
                                    [("Accept", accept)])
        assert (status, headers["Content-Type"]) == (200, kind)


def test_refusals(server, sid, vm):
    status, _, _ = get(server, "/rrd_updates", {"start": "-10"})
    assert status == 401
    status, _, _ = get(server, "/rrd_updates", {"session_id": "OpaqueRef:x",
                                                "start": "-10"})
    assert status == 401
    status, _, _ = get(server, "/rrd_updates", {"session_id": sid})
    assert status == 400
    status, _, _ = get(server, "/vm_rrd", {"session_id": sid})
    assert status == 400
    status, _, _ = get(server, "/vm_rrd", {"session_id": sid,
                                           "uuid": "nope"})
    assert status == 404


def test_no_rrd_to_answer_is_xcp_rrdds_500(server, sid, vm):
    # Neither the host's RRD nor any VM's: rrdd's No_RRA_Available, which
    # its HTTP server answers as any failure of a handler.
    status, headers, body = get(server, "/rrd_updates", {
        "session_id": sid, "start": "-10",
        "vm_uuid": "00000000-0000-0000-0000-000000000000"})
    assert status == 500
    assert headers["content-type"] == "text/html"
    assert body.decode().endswith(
        "<h1> Additional information </h1>Rrd.No_RRA_Available"
        "</body></html>")


def test_rrd_updates_answer_from_the_first_moment(tmp_path):
    """A new host's first /rrd_updates finds its RRDs: the server listens
    only once it has taken its first sample, as XAPI serves only once
    xcp-rrdd runs.  Asked as a pool member asks (the pool secret, checked
    without a login's wait) from the moment the port opens, with a long
    step so that no second sample hides a miss."""
    data = tmp_path / "data"
    data.mkdir()
    secret = "%s/%s" % (uuid_module.uuid4(), uuid_module.uuid4())
    (data / "ptoken").write_text(secret + "\n")
    fresh = RunningServer(str(data), extra_args=[
        "--metrics-interval", "60", "--https-port", "0"])
    starting = threading.Thread(target=fresh.start)
    starting.start()
    url = "%s/rrd_updates?start=-600&host=true&json=true" % fresh.http_url
    try:
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, fresh.read_log()
            request = urllib.request.Request(url, headers={
                "Cookie": "pool_secret=" + secret})
            try:
                with urllib.request.urlopen(request, timeout=10) as r:
                    status, body = r.status, r.read()
                break
            except urllib.error.HTTPError as e:
                status, body = e.code, e.read()
                break
            except OSError:
                time.sleep(0.002)
        assert status == 200, body
        doc = json.loads(body)
        assert any(":host:" in e and e.endswith(":memory_total_kib")
                   for e in doc["meta"]["legend"])
        assert doc["meta"]["rows"] >= 1
    finally:
        starting.join()
        fresh.stop()


def test_whole_rrds(server, x, sid, vm):
    uuid = x.VM.get_uuid(vm)
    wait_until(lambda: get(server, "/vm_rrd", {"session_id": sid,
                                               "uuid": uuid})[0] == 200,
               what="the VM's RRD")
    status, headers, body = get(server, "/vm_rrd", {"session_id": sid,
                                                    "uuid": uuid})
    assert headers["Content-Type"] == "text/xml"
    doc = ET.fromstring(body)
    assert int(doc.find("step").text) == STEP
    names = {ds.find("name").text for ds in doc.findall("ds")}
    assert {"cpu0", "cpu1", "cpu_usage", "memory",
            "memory_target"} <= names
    assert len(doc.findall("rra")) == 4
    status, headers, body = get(server, "/host_rrd", {"session_id": sid},
                                [("Accept", "*/*")])
    assert status == 200 and headers["Content-Type"] == "application/json"
    host = json.loads(body)
    assert "memory_free_kib" in {ds["name"] for ds in host["ds"]}


def test_data_source_api(server, x, sid, vm):
    uuid = x.VM.get_uuid(vm)
    wait_until(lambda: rows_of(server, sid, "vm:%s:cpu0" % uuid), what="rows")
    records = {r["name_label"]: r for r in x.VM.get_data_sources(vm)}
    assert records["cpu0"]["enabled"] and records["cpu0"]["standard"]
    assert records["cpu0"]["units"] == "(fraction)"
    value = x.VM.query_data_source(vm, "memory")
    assert value == float(x.VM.get_memory_dynamic_max(vm))
    cpu = x.VM.query_data_source(vm, "cpu0")
    model = [simload.load(LOAD, uuid, 0, t) for t in
             range(int(time.time()) - 5, int(time.time()) + 2)]
    assert min(model) - 0.05 <= cpu <= max(model) + 0.05
    host = x.host.get_all()[0]
    host_names = {r["name_label"] for r in x.host.get_data_sources(host)}
    assert {"cpu0", "cpu_avg", "memory_free_kib", "loadavg",
            "memory_total_kib"} <= host_names
    assert x.host.query_data_source(host, "memory_total_kib") == float(
        x.host_metrics.get_memory_total(x.host.get_metrics(host))) // 1024
    # A source off by default (a NIC's errors), recorded, then forgotten.
    def enabled(name):
        return {r["name_label"]: r["enabled"]
                for r in x.host.get_data_sources(host)}[name]
    off = next(r["name_label"] for r in x.host.get_data_sources(host)
               if r["name_label"].endswith("_rx_errors"))
    assert not enabled(off)
    with pytest.raises(XenAPI.Failure) as e:
        x.host.query_data_source(host, off)
    assert e.value.details[0] == "INTERNAL_ERROR"
    x.host.record_data_source(host, off)
    assert enabled(off)
    wait_until(lambda: x.host.query_data_source(host, off) == 0.0,
               what="the recorded source's first value")
    x.host.forget_data_source_archives(host, off)
    assert not enabled(off)
    with pytest.raises(XenAPI.Failure) as e:
        x.VM.query_data_source(vm, "no_such_source")
    assert e.value.details[0] == "INTERNAL_ERROR"


def test_data_source_values_are_the_newest_averages(server, x, sid, vm):
    uuid = x.VM.get_uuid(vm)
    wait_until(lambda: len(rows_of(server, sid, "vm:%s:cpu1" % uuid)) >= 2,
               what="rows")
    before = time.time()
    records = {r["name_label"]: r for r in x.VM.get_data_sources(vm)}
    after = time.time()
    assert records["memory"]["value"] == float(
        x.VM.get_memory_dynamic_max(vm))
    for channel in (0, 1):
        # The newest row averages the step before the newest sample.
        model = [simload.load(LOAD, uuid, channel, t / 10.0) for t in
                 range(int((before - 3 * STEP) * 10), int(after * 10) + 1)]
        value = records["cpu%d" % channel]["value"]
        assert min(model) - 0.02 <= value <= max(model) + 0.02, value
        assert value > 0
    host = x.host.get_all()[0]
    host_records = {r["name_label"]: r for r in x.host.get_data_sources(host)}
    assert host_records["memory_total_kib"]["value"] == float(
        x.host_metrics.get_memory_total(x.host.get_metrics(host))) // 1024
    assert 0 < host_records["cpu_avg"]["value"] <= 1
    # A source not recorded has no value yet.
    off = [r for r in host_records.values() if not r["enabled"]]
    assert off and all(r["value"] == 0.0 for r in off)
    srs = [sr for sr in x.SR.get_all() if x.SR.get_data_sources(sr)]
    assert srs
    sr_records = {r["name_label"]: r for r in x.SR.get_data_sources(srs[0])}
    # Rows are single-precision, as xcp-rrdd's.
    assert sr_records["size"]["value"] == pytest.approx(
        float(x.SR.get_physical_size(srs[0])), rel=1e-6)


def test_a_halted_vm_has_no_data_source_operations(x):
    halted = new_vm(x, "metrics-halted")
    try:
        assert x.VM.get_data_sources(halted) == []
        with pytest.raises(XenAPI.Failure) as e:
            x.VM.query_data_source(halted, "cpu0")
        assert e.value.details[0] == "VM_BAD_POWER_STATE"
    finally:
        x.VM.destroy(halted)


def test_perfmon_raises_an_alarm(x, vm):
    uuid = x.VM.get_uuid(vm)
    # The simulated load swings around LOAD, never below half of it.
    level = LOAD / 4
    config = ('<config><variable><name value="cpu_usage"/>'
              '<alarm_trigger_level value="%s"/>'
              '<alarm_trigger_period value="%d"/></variable></config>'
              % (level, 2 * STEP))
    x.VM.add_to_other_config(vm, "perfmon", config)
    try:
        def alarms():
            return [m for m in x.message.get_all_records().values()
                    if m["name"] == "ALARM" and m["obj_uuid"] == uuid]
        found = wait_until(alarms, what="an ALARM message")
        message = found[0]
        assert message["cls"] == "VM" and message["priority"] == "3"
        head, _, body = message["body"].partition("\nconfig:\n")
        assert head.startswith("value: ")
        assert float(head[len("value: "):]) > level
        assert '<name value="cpu_usage"/>' in body
        # Inhibited for an hour: no second alarm.
        time.sleep(4 * STEP)
        assert len(alarms()) == 1
    finally:
        x.VM.remove_from_other_config(vm, "perfmon")


def test_openmetrics_exposition_is_clean_for_promtool(server, x, sid, vm):
    uuid = x.VM.get_uuid(vm)
    wait_until(lambda: rows_of(server, sid, "vm:%s:cpu1" % uuid),
               what="rows")
    status, headers, body = get(server, "/metrics", {"session_id": sid})
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    host = x.host.get_uuid(x.host.get_all()[0])
    memory = 'xapi_vm_memory{host="%s",vm="%s"} ' % (host, uuid)
    line = next(l for l in text.splitlines() if l.startswith(memory))
    assert float(line[len(memory):]) == float(
        x.VM.get_memory_dynamic_max(vm))
    for channel in (0, 1):
        prefix = 'xapi_vm_cpu{host="%s",vm="%s",device="%d"} ' % (
            host, uuid, channel)
        assert any(l.startswith(prefix) for l in text.splitlines())
    assert get(server, "/metrics", {})[0] == 401
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian's prometheus) is not installed")
    out = subprocess.run([promtool, "check", "metrics"], input=body,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not out.stdout.strip() and not out.stderr.strip(), out


def test_metrics_take_the_scrape_token_instead_of_a_session(server, sid, vm):
    def scrape(token, path="/metrics", query=()):
        return get(server, path, dict(query),
                   [("Authorization", "Bearer " + token)])
    status, headers, body = scrape(SCRAPE_TOKEN)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.decode().endswith("# EOF\n")
    assert "xapi_host_memory_total_kib{" in body.decode()
    status, headers, _ = scrape(SCRAPE_TOKEN + "x")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="rrd_updates"'
    assert scrape("")[0] == 401
    # The token is for /metrics alone: XAPI's handlers know no bearer.
    assert scrape(SCRAPE_TOKEN, "/rrd_updates", {"start": "-10"})[0] == 500
    # A session still does.
    assert get(server, "/metrics", {"session_id": sid})[0] == 200


def test_a_rotated_scrape_token_is_taken_without_a_restart(server):
    path = os.path.join(server.data_dir, "..", "scrape-token")

    def rotate(text):
        with open(path + ".new", "w") as f:
            f.write(text)
        os.replace(path + ".new", path)

    def scrape(token):
        return get(server, "/metrics", {},
                   [("Authorization", "Bearer " + token)])[0]
    try:
        rotate("rotated-token\n")
        assert scrape("rotated-token") == 200
        assert scrape(SCRAPE_TOKEN) == 401
        # A file holding no token admits no scraper until it does again.
        rotate("two tokens\n")
        assert scrape("rotated-token") == 401
    finally:
        rotate(SCRAPE_TOKEN + "\n")
    assert scrape(SCRAPE_TOKEN) == 200


def test_xo_stats_view_fetches_rrd_updates(server, x, sid, vm):
    node = shutil.which("node")
    xo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xo")
    if node is None or not os.path.isdir(os.path.join(xo, "node_modules",
                                                      "xen-api")):
        pytest.skip("Xen Orchestra's connector is not installed (tests/xo)")
    uuid = x.VM.get_uuid(vm)
    wait_until(lambda: rows_of(server, sid, "vm:%s:cpu0" % uuid),
               what="rows")
    proc = subprocess.run(
        [node, "stats.mjs", server.https_url, USER, PASSWORD], cwd=xo,
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, XO_STATS_STEP=str(STEP)))
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    out = json.loads(lines[-1])
    assert out["ok"], out.get("error")
    assert out["task"] == "success"
    meta = out["meta"]
    assert meta["step"] == STEP and out["rows"] == meta["rows"] > 0
    legend = meta["legend"]
    assert "AVERAGE:vm:%s:cpu0" % uuid in legend
    assert any(e.startswith("AVERAGE:host:") for e in legend)
    assert len(out["first"]["values"]) == meta["columns"] == len(legend)
