"""
The HTTP data handlers on a pool of three real hosts: asked on a host that
does not own the data, they answer 302 to the one that does, and the
client follows.  Real curl (-L) moves a VDI of a slave's local SR in and
out through the master, under a task made on the master, which the slave
completes (and a cancel of it on the master stops the slave's upload); an
import into a slave's SR by sr_id; a request sent to the wrong slave
(with the master's session, or basic credentials checked there); the XVA
export of a VM whose disk is on a slave and its import into another
slave's SR; the console of a VM running on a slave; a VM's RRD; and Xen
Orchestra's connector following the 302 of its VDI import and export.  A
request that was redirected once is never sent on.
"""

import hashlib
import json
import os
import socket
import subprocess
import tarfile
from urllib.parse import urlencode

import pytest

from tests.support.api import wait_until
from tests.support.etcd import needs_etcd
from tests.support.pool import joined_pool
from tests.support.servers import PASSWORD, USER, insecure_context, \
    read_head
from tests.test_console import rfb_handshake
from tests import test_pool_forwarding, test_xo_connector
from tests.test_pool_forwarding import SERVER_ARGS, add_disk, local_sr
from tests.test_vm_lifecycle import MIB, new_vm, task_result
from tests.test_xo_connector import XO_DIR

pytestmark = [needs_etcd, pytest.mark.skipif(
    os.geteuid() != 0, reason="binds ports 80/443 on 127.0.x.y")]

SIZE = 4 * MIB
# Fixtures of those modules, on this module's pool.
x = test_pool_forwarding.x
hosts = test_pool_forwarding.hosts
xo_connector = test_xo_connector.xo_connector


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    yield from joined_pool(str(tmp_path_factory.mktemp("poolhttp")), 3,
                           SERVER_ARGS)


@pytest.fixture(scope="module")
def sid(pool, x):
    """A session on the master, as a client passes it in a URL."""
    session = pool[0].session()
    yield session._session
    session.xenapi.session.logout()


def new_vdi(x, sr, size=SIZE, name="pool-http"):
    return x.VDI.create({
        "SR": sr, "virtual_size": str(size), "name_label": name,
        "name_description": "", "type": "user", "sharable": False,
        "read_only": False, "other_config": {}, "xenstore_data": {},
        "sm_config": {}, "tags": []})


def content(size=SIZE):
    """Data at the start and the end, a hole between."""
    data = bytearray(size)
    data[:65536] = os.urandom(65536)
    data[-65536:] = os.urandom(65536)
    return bytes(data)


def curl(*args, timeout=60):
    """Real curl; (exit status, what -w wrote: redirects and the URL the
    transfer ended on)."""
    proc = subprocess.run(
        ["curl", "-sS", "-k", "-o", os.devnull, "-w",
         "%{num_redirects} %{url_effective} %{http_code}"] + list(args),
        capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout.split(), proc.stderr


def url(host, path, scheme="https", **query):
    return "%s://%s%s?%s" % (scheme, host.address, path, "&".join(
        "%s=%s" % kv for kv in query.items()))


def finished(x, task):
    wait_until(lambda: x.task.get_status(task) not in ("pending",
                                                        "cancelling"),
               what="task %s" % task)
    record = x.task.get_record(task)
    x.task.destroy(task)
    return record


def raw_head(host, request, tls=True):
    """The response head of one request written as it is."""
    sock = socket.create_connection((host.address, 443 if tls else 80),
                                    timeout=10)
    if tls:
        sock = insecure_context().wrap_socket(sock)
    with sock:
        sock.sendall(request.encode())
        return read_head(sock).decode()


def location_of(head):
    assert head.startswith("HTTP/1.1 302 Found\r\n"), head
    for line in head.split("\r\n"):
        if line.lower().startswith("location: "):
            return line[len("location: "):]
    raise AssertionError(head)


def test_a_slaves_vdi_goes_in_and_out_through_the_master_with_curl(
        pool, x, sid, hosts, tmp_path):
    sr = local_sr(x, hosts[1])
    vdi = new_vdi(x, sr)
    data = content()
    source = tmp_path / "in.raw"
    source.write_bytes(data)
    task = x.task.create("upload", "")
    query = dict(session_id=sid, vdi=vdi, format="raw", task_id=task)
    status, (redirects, effective, code), err = curl(
        "-L", "-T", str(source), url(pool[0], "/import_raw_vdi", **query))
    assert status == 0, err
    assert (redirects, code) == ("1", "200")
    assert effective.startswith("https://%s/import_raw_vdi?" %
                                pool[1].address), effective
    # The master's task, the client's, is the slave's to complete.
    record = finished(x, task)
    assert task_result(record) == vdi
    assert record["resident_on"] == hosts[0]

    task = x.task.create("download", "")
    target = tmp_path / "out.raw"
    proc = subprocess.run(
        ["curl", "-sS", "-k", "-L", "-o", str(target), url(
            pool[0], "/export_raw_vdi", session_id=sid, vdi=vdi,
            format="raw", task_id=task)], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert hashlib.sha256(target.read_bytes()).digest() == \
        hashlib.sha256(data).digest()
    assert finished(x, task)["status"] == "success"
    x.VDI.destroy(vdi)


def test_a_transfer_without_a_task_runs_under_one_the_master_makes(
        pool, x, sid, hosts):
    vdi = new_vdi(x, local_sr(x, hosts[1]))
    proc = subprocess.run(
        ["curl", "-sS", "-k", "-L", "-D", "-", "-o", os.devnull,
         url(pool[0], "/export_raw_vdi", session_id=sid, vdi=vdi)],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # (Read as text: CRLF is LF.)
    heads = proc.stdout.split("\n\n")
    assert heads[0].startswith("HTTP/1.1 302"), proc.stdout
    task = [line.split(":", 1)[1].strip() for line in heads[1].split("\n")
            if line.lower().startswith("task-id:")][0]
    # The task the client got is the master's.
    record = finished(x, task)
    assert record["status"] == "success"
    assert record["name_label"] == "Exporting raw VDI"
    # A request refused before it takes its task leaves none behind.
    before = set(x.task.get_all())
    status, (redirects, effective, code), err = curl(url(
        pool[1], "/export_raw_vdi", session_id=sid, vdi="OpaqueRef:none"))
    assert code == "500"
    assert wait_until(lambda: set(x.task.get_all()) == before,
                      what="no task left")
    x.VDI.destroy(vdi)


def test_the_302_keeps_path_query_and_scheme_and_leaves_the_task(
        pool, x, sid, hosts):
    vdi = new_vdi(x, local_sr(x, hosts[1]))
    task = x.task.create("export", "")
    pairs = [("vdi", vdi), ("session_id", sid), ("format", "raw"),
             ("task_id", task)]
    query = urlencode(pairs)
    for tls, scheme in ((True, "https"), (False, "http")):
        head = raw_head(pool[0], "GET /export_raw_vdi/?%s HTTP/1.1\r\n"
                        "Host: %s\r\n\r\n" % (query, pool[0].address), tls)
        assert "Connection: close\r\n" in head
        assert location_of(head) == "%s://%s/export_raw_vdi/?%s" % (
            scheme, pool[1].address, urlencode(pairs + [("redirected",
                                                          "1")]))
    # Not followed: the task is as it was.
    assert x.task.get_status(task) == "pending"
    assert x.task.get_progress(task) == 0.0
    # A request that was sent once is served where it lands: the master
    # has no PBD of the slave's SR, and says so.
    head = raw_head(pool[0], "GET /export_raw_vdi?%s&redirected=1 HTTP/1.1"
                    "\r\nHost: x\r\n\r\n" % query)
    assert head.startswith("HTTP/1.1 500"), head
    x.task.destroy(task)
    # Unauthenticated: refused where asked, not sent on.
    head = raw_head(pool[0], "GET /export_raw_vdi?vdi=%s HTTP/1.1\r\n"
                    "Host: x\r\n\r\n" % vdi)
    assert head.startswith("HTTP/1.1 401"), head
    x.VDI.destroy(vdi)


def test_an_import_into_a_slaves_sr_and_a_request_to_the_wrong_slave(
        pool, x, sid, hosts, tmp_path):
    sr = local_sr(x, hosts[2])
    source = tmp_path / "in.raw"
    source.write_bytes(content(2 * MIB))
    task = x.task.create("new disk", "")
    status, (redirects, effective, code), err = curl(
        "-L", "-T", str(source), url(pool[0], "/import_raw_vdi", "http",
                                     session_id=sid, sr_id=sr,
                                     task_id=task))
    assert status == 0, err
    assert (redirects, code) == ("1", "200")
    assert effective.startswith("http://%s/" % pool[2].address)
    vdi = task_result(finished(x, task))
    assert x.VDI.get_SR(vdi) == sr
    assert x.VDI.get_virtual_size(vdi) == str(2 * MIB)
    # Slave 1 was asked for slave 2's VDI: it sends the client there,
    # which checks the master's session with the master.
    task = x.task.create("from the wrong slave", "")
    status, (redirects, effective, code), err = curl(
        "-L", url(pool[1], "/export_raw_vdi", session_id=sid, vdi=vdi,
                  task_id=task))
    assert (status, redirects, code) == (0, "1", "200"), err
    assert effective.startswith("https://%s/" % pool[2].address)
    assert finished(x, task)["status"] == "success"
    # Basic credentials a slave is given log in on the master: curl
    # sends them on to the slave when told to trust the Location.
    status, (redirects, effective, code), err = curl(
        "-L", "--location-trusted", "-u", "%s:%s" % (USER, PASSWORD),
        url(pool[0], "/export_raw_vdi", vdi=vdi))
    assert (status, redirects, code) == (0, "1", "200"), err
    assert effective.startswith("https://%s/" % pool[2].address)
    status, (redirects, effective, code), err = curl(
        "-u", "%s:wrong" % USER, url(pool[2], "/export_raw_vdi", vdi=vdi))
    assert code == "401"
    # A session the master does not know is unauthorised on a slave.
    status, (redirects, effective, code), err = curl(
        url(pool[2], "/export_raw_vdi", session_id="OpaqueRef:nobody",
            vdi=vdi))
    assert code == "401"
    x.VDI.destroy(vdi)


def test_a_cancel_on_the_master_stops_the_slaves_upload(
        pool, x, sid, hosts, tmp_path):
    vdi = new_vdi(x, local_sr(x, hosts[1]), 64 * MIB)
    source = tmp_path / "big.raw"
    source.write_bytes(b"\1" * (64 * MIB))
    task = x.task.create("slow upload", "")
    proc = subprocess.Popen(
        ["curl", "-sS", "-k", "-L", "--limit-rate", "2M", "-T",
         str(source), "-o", os.devnull,
         url(pool[0], "/import_raw_vdi", session_id=sid, vdi=vdi,
             task_id=task)], stderr=subprocess.PIPE)
    try:
        # Cancellable once the slave has taken the task.
        wait_until(lambda: "cancel" in x.task.get_allowed_operations(task),
                   what="the upload running on the slave")
        x.task.cancel(task)
        record = finished(x, task)
        assert record["status"] == "cancelled", record
        assert record["error_info"] == ["TASK_CANCELLED", task]
    finally:
        proc.wait(timeout=60)
    wait_until(lambda: x.VDI.get_current_operations(vdi) == {} and
               not x.VDI.get_VBDs(vdi), what="the VDI let go")
    x.VDI.destroy(vdi)


def test_the_xva_export_of_a_vm_whose_disk_is_on_a_slave(
        pool, x, sid, hosts, tmp_path):
    vm = new_vm(x, "xva-on-slave")
    vdi = add_disk(x, vm, local_sr(x, hosts[1]))
    task = x.task.create("export", "")
    target = tmp_path / "vm.xva"
    proc = subprocess.run(
        ["curl", "-sS", "-k", "-L", "-o", str(target), "-w",
         "%{num_redirects} %{url_effective}", url(
             pool[0], "/export", session_id=sid, uuid=x.VM.get_uuid(vm),
             task_id=task)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    redirects, effective = proc.stdout.split()
    assert redirects == "1"
    assert effective.startswith("https://%s/export?" % pool[1].address)
    assert finished(x, task)["status"] == "success"
    with tarfile.open(str(target)) as xva:
        names = xva.getnames()
        ova = xva.extractfile("ova.xml").read().decode()
    assert names[0] == "ova.xml"
    assert x.VDI.get_uuid(vdi) in ova
    assert any(n.startswith("Ref:") and n.endswith("/00000000")
               for n in names), names
    assert x.VM.get_current_operations(vm) == {}
    # And back, into slave 2's SR.
    sr = local_sr(x, hosts[2])
    task = x.task.create("import", "")
    status, (redirects, effective, code), err = curl(
        "-L", "-T", str(target), url(pool[0], "/import", session_id=sid,
                                     sr_id=sr, task_id=task))
    assert (status, redirects, code) == (0, "1", "200"), err
    assert effective.startswith("https://%s/import?" % pool[2].address)
    record = finished(x, task)
    assert record["status"] == "success", record["error_info"]
    (imported,) = [
        r for r in x.VM.get_all() if x.VM.get_name_label(r) ==
        "xva-on-slave" and r != vm]
    assert imported in record["result"]
    disks = [x.VBD.get_VDI(v) for v in x.VM.get_VBDs(imported)]
    assert [x.VDI.get_SR(d) for d in disks] == [sr]
    for ref in disks + [vdi]:
        x.VDI.destroy(ref)
    for ref in (imported, vm):
        x.VM.destroy(ref)


@pytest.fixture(scope="module")
def on_slave(x, hosts):
    """A VM running on slave 2."""
    vm = new_vm(x, "runs-on-slave", affinity=hosts[2])
    x.VM.start(vm, False, False)
    assert x.VM.get_resident_on(vm) == hosts[2]
    yield vm
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_the_console_of_a_vm_on_a_slave(pool, x, sid, hosts, on_slave):
    console = [c for c in x.VM.get_consoles(on_slave)
               if x.console.get_protocol(c) == "rfb"][0]
    uuid = x.console.get_uuid(console)
    assert x.console.get_location(console) == \
        "https://%s/console?uuid=%s" % (pool[2].address, uuid)
    task = x.task.create("console", "")
    head = raw_head(pool[0], "CONNECT /console?uuid=%s&session_id=%s"
                    "&task_id=%s HTTP/1.0\r\n\r\n" % (uuid, sid, task))
    where = location_of(head)
    assert where.startswith("https://%s/console?uuid=%s" %
                            (pool[2].address, uuid))
    sock = insecure_context().wrap_socket(socket.create_connection(
        (pool[2].address, 443), timeout=10))
    with sock:
        sock.sendall(("CONNECT %s HTTP/1.0\r\n\r\n" % where[len(
            "https://" + pool[2].address):]).encode())
        assert read_head(sock).startswith(b"HTTP/1.1 200 OK\r\n")
        assert rfb_handshake(sock)[2] == "runs-on-slave"
    # The connection ran under the master's task, done once it closed.
    assert finished(x, task)["status"] == "success"
    # The websocket form is sent there too.
    head = raw_head(pool[0], "GET /console?uuid=%s&session_id=%s HTTP/1.1\r\n"
                    "Host: %s\r\nUpgrade: websocket\r\nConnection: Upgrade"
                    "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                    % (uuid, sid, pool[0].address))
    assert location_of(head).startswith("https://%s/console?uuid=%s" %
                                        (pool[2].address, uuid))


def test_the_rrd_of_a_vm_on_a_slave(pool, x, sid, hosts, on_slave):
    uuid = x.VM.get_uuid(on_slave)
    query = dict(session_id=sid, uuid=uuid)

    def fetched():
        proc = subprocess.run(
            ["curl", "-sS", "-k", "-L", "-w", "\n%{num_redirects} "
             "%{url_effective} %{http_code}",
             url(pool[0], "/vm_rrd", **query)],
            capture_output=True, text=True, timeout=30)
        body, _, tail = proc.stdout.rpartition("\n")
        redirects, effective, code = tail.split()
        return code == "200" and (body, redirects, effective)
    body, redirects, effective = wait_until(
        fetched, what="the slave's RRD of the VM")
    assert redirects == "1"
    assert effective.startswith("https://%s/vm_rrd?" % pool[2].address)
    # (curl accepts */*: JSON, as xcp-rrdd ranks it.)
    assert "cpu0" in [ds["name"] for ds in json.loads(body)["ds"]]
    # Asked of slave 1, which does not run it either: sent to slave 2.
    status, (redirects, effective, code), err = curl(
        "-L", url(pool[1], "/vm_rrd", **query))
    assert (redirects, code) == ("1", "200"), err
    assert effective.startswith("https://%s/" % pool[2].address)
    # A halted VM's: a slave sends it to the master, which keeps those.
    halted = new_vm(x, "never-ran")
    status, (redirects, effective, code), err = curl(
        "-L", url(pool[1], "/vm_rrd", session_id=sid,
                  uuid=x.VM.get_uuid(halted)))
    assert (redirects, code) == ("1", "404")
    assert effective.startswith("https://%s/vm_rrd?" % pool[0].address)
    assert "rrd_unarchive=" in effective
    x.VM.destroy(halted)


def test_a_session_logged_out_stops_working_on_the_slave_at_once(
        pool, x, on_slave):
    """The slave keeps the master's word on a session for a while (an RRD
    poller asks every few seconds); a logout on the master ends the
    session there at once, not when that while is over."""
    session = pool[0].session()
    direct = url(pool[2], "/vm_rrd", session_id=session._session,
                 uuid=x.VM.get_uuid(on_slave), redirected="1")
    wait_until(lambda: curl(direct)[1][2] == "200",
               what="the RRD on the slave")
    assert curl(direct)[1][2] == "200"
    session.xenapi.session.logout()
    wait_until(lambda: curl(direct)[1][2] == "401", timeout=5,
               what="the session gone on the slave")


def test_xo_connector_follows_the_302_of_an_import_and_an_export(
        pool, x, hosts, xo_connector):
    sr = local_sr(x, hosts[1])
    proc = subprocess.run(
        [xo_connector, "pool_content.mjs", "https://" + pool[0].address,
         USER, PASSWORD, sr], cwd=XO_DIR, capture_output=True, text=True,
        timeout=240)
    lines = proc.stdout.strip().splitlines()
    assert lines, "no output; stderr: %s" % proc.stderr[-3000:]
    out = json.loads(lines[-1])
    assert out["ok"], "%s\nstderr: %s" % (out.get("error"),
                                          proc.stderr[-3000:])
    assert out["exported_size"] == out["size"]
    assert out["same"]
    assert out["import_task"] == out["export_task"] == "success"
    assert x.VDI.get_SR(out["vdi"]) == sr
    x.VDI.destroy(out["vdi"])
