"""
VM.import(url, sr, full_restore, force) against a real server: the
server fetches an XVA made by its own GET /export from an HTTP(S) server
on loopback and imports it (sync and Async, plain and gzip, through a
redirect, a body without a length); a URL it cannot use, a server that
is not there, a status other than 200, a redirect loop, a body cut
short and a corrupt chunk are refused with XAPI's errors and leave no
VM, no VDI and no pending task behind.
"""

import http.server
import io
import os
import ssl
import subprocess
import tarfile
import threading

import pytest
import XenAPI

from tests.support.api import failure, wait_until
from tests.support.servers import RunningServer, free_port
from tests.test_cli import run_xe
from tests import test_vdi_transfer as transfer
from tests.test_vm_lifecycle import new_vm
from tests.test_xva import (
    _sdk_export, assert_nothing_left, check_copy, counts,
    destroy_vm_and_disks, imported_vms, source)

pytestmark = transfer.pytestmark
server, api, x, sid = transfer.server, transfer.api, transfer.x, transfer.sid
FIXTURES = (source,)


def vm_import(x, url, sr, restore=False, force=False):
    return getattr(x.VM, "import")(url, sr, restore, force)


def corrupt_a_chunk(data):
    """The XVA with one byte of its first disk chunk changed."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as src, \
            tarfile.open(fileobj=out, mode="w",
                         format=tarfile.USTAR_FORMAT) as dst:
        done = False
        for m in src:
            body = src.extractfile(m).read() if m.isfile() else b""
            if not done and "/" in m.name and "." not in m.name:
                body = bytes([body[0] ^ 1]) + body[1:]
                done = True
            dst.addfile(m, io.BytesIO(body))
    return out.getvalue()


class Files(http.server.BaseHTTPRequestHandler):
    """Serves the XVAs of ``self.server.files`` and the awkward cases."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        files = self.server.files
        if path == "/moved":
            self._redirect("/vm.xva")
        elif path == "/loop":
            self._redirect("/loop")
        elif path == "/nowhere":
            self.send_response(302)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path in ("/cut.xva", "/stall.xva"):
            # Half the body, then the end (cut) or nothing until the test
            # ends (stall).
            data = files["/vm.xva"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            if path == "/stall.xva":
                self.server.stalled.wait(60)
            self.close_connection = True
        elif path == "/silent":
            self.server.stalled.wait(60)
            self.close_connection = True
        elif path == "/nolength.xva":
            # HTTP/1.0 style: the body ends with the connection.
            data = files["/vm.xva"]
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True
        elif path in files:
            data = files[path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self.send_error(404)

    def _redirect(self, where):
        self.send_response(302)
        self.send_header("Location", where)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def web_certificate(tmp_path_factory):
    """The TLS file server's key and certificate (made once: an RSA key
    takes a while)."""
    base = tmp_path_factory.mktemp("webtls")
    key, cert = base / "key.pem", base / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-subj", "/CN=127.0.0.1", "-days", "1"], check=True,
                   capture_output=True)
    return key, cert


@pytest.fixture
def web(web_certificate):
    """Plain and TLS file servers on loopback: (http base, https base,
    their files)."""
    files = {}
    servers = []
    stalled = threading.Event()
    key, cert = web_certificate
    for tls in (False, True):
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
        httpd.files = files
        httpd.stalled = stalled
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(cert), str(key))
            httpd.socket = context.wrap_socket(httpd.socket,
                                               server_side=True)
        # Its shutdown waits for the loop's next look (half a second by
        # default, per server and test).
        threading.Thread(target=httpd.serve_forever, args=(0.05,),
                         daemon=True).start()
        servers.append(httpd)
    bases = ["%s://127.0.0.1:%d" % (scheme, s.server_address[1])
             for scheme, s in zip(("http", "https"), servers)]
    yield bases[0], bases[1], files
    stalled.set()
    for s in servers:
        s.shutdown()
        s.server_close()


def test_import_from_a_url(x, server, sid, source, web, tmp_path):
    plain, secure, files = web
    sr = x.VDI.get_SR(source["vdis"][0])
    files["/vm.xva"] = _sdk_export(server, sid, source["vm"], None)
    files["/vm.xva.gz"] = _sdk_export(server, sid, source["vm"], "gzip")
    before = counts(x)
    cases = [plain + "/vm.xva", secure + "/vm.xva.gz", plain + "/moved",
             plain + "/nolength.xva"]
    for url in cases:
        [new] = vm_import(x, url, sr)
        assert counts(x) == (before[0] + 1, before[1] + 2), url
        check_copy(x, server, sid, tmp_path, new, source)
        destroy_vm_and_disks(x, new)
    # Async: the task's result is the set of VMs, as /import's.
    task = getattr(x.Async.VM, "import")(plain + "/vm.xva", sr, False,
                                         False)
    wait_until(lambda: x.task.get_status(task) != "pending",
               what="the import task")
    rec = x.task.get_record(task)
    assert rec["status"] == "success", rec["error_info"]
    [new] = imported_vms(rec)
    check_copy(x, server, sid, tmp_path, new, source)
    destroy_vm_and_disks(x, new)
    # xe vm-import url=: the host fetches it.
    rc, out, err = run_xe(server, "vm-import", "url=%s/vm.xva" % plain,
                          "sr-uuid=" + x.SR.get_uuid(sr))
    assert rc == 0, err
    new = x.VM.get_by_uuid(out.strip())
    check_copy(x, server, sid, tmp_path, new, source)
    destroy_vm_and_disks(x, new)
    rc, out, err = run_xe(server, "vm-import", "url=%s/vm.xva" % plain,
                          "filename=vm.xva")
    assert rc == 1 and "should not both be specified" in err
    assert counts(x) == before


def test_refused_urls_leave_nothing_behind(x, server, sid, source, web):
    plain, secure, files = web
    sr = x.VDI.get_SR(source["vdis"][0])
    data = _sdk_export(server, sid, source["vm"], None)
    files["/vm.xva"] = data
    files["/corrupt.xva"] = corrupt_a_chunk(data)
    files["/junk.xva"] = os.urandom(4096)
    before = counts(x)
    nobody = "http://127.0.0.1:%d/vm.xva" % free_port()
    refusals = [
        ("ftp://127.0.0.1/vm.xva", "Unsupported URI scheme: ftp"),
        ("not a url", "Failed to parse URI: not a url"),
        ("http:///vm.xva", "Failed to parse host and port"),
        (nobody, "Cannot fetch"),
        (plain + "/missing.xva", "404 Not Found"),
        (plain + "/loop", "Maximum redirect limit reached"),
        (plain + "/nowhere", "Redirect with no new location"),
    ]
    for url, reason in refusals:
        error = failure(vm_import, x, url, sr)
        assert error[0] == "IMPORT_ERROR" and reason in error[1], (url, error)
        assert_nothing_left(x, before)
    assert failure(vm_import, x, plain + "/cut.xva", sr) == [
        "IMPORT_ERROR_PREMATURE_EOF"]
    assert_nothing_left(x, before)
    error = failure(vm_import, x, plain + "/corrupt.xva", sr)
    assert error[0] == "IMPORT_ERROR" and "checksum" in error[1], error
    assert_nothing_left(x, before)
    error = failure(vm_import, x, secure + "/junk.xva", sr)
    assert error[0] == "IMPORT_ERROR", error
    assert_nothing_left(x, before)
    # The SR is checked before anything is fetched.
    assert failure(vm_import, x, plain + "/vm.xva", "OpaqueRef:nope")[0] == \
        "HANDLE_INVALID"
    # Async: the task fails with the same error, nothing left.
    task = getattr(x.Async.VM, "import")(plain + "/cut.xva", sr, False,
                                         False)
    wait_until(lambda: x.task.get_status(task) != "pending",
               what="the import task")
    assert x.task.get_error_info(task) == ["IMPORT_ERROR_PREMATURE_EOF"]
    assert_nothing_left(x, before, task)


def test_a_stalled_fetch_can_be_cancelled(x, server, sid, source, web):
    plain, _, files = web
    sr = x.VDI.get_SR(source["vdis"][0])
    files["/vm.xva"] = _sdk_export(server, sid, source["vm"], None)
    before = counts(x)
    for path in ("/stall.xva", "/silent"):
        task = getattr(x.Async.VM, "import")(plain + path, sr, False, False)
        wait_until(lambda: "cancel" in x.task.get_allowed_operations(task),
                   what="the import to be cancellable")
        if path == "/stall.xva":
            wait_until(lambda: x.task.get_other_config(task).get(
                "object_creation") == "complete", what="the objects made")
        x.task.cancel(task)
        wait_until(lambda: x.task.get_status(task) not in (
            "pending", "cancelling"), what="the import to end")
        assert x.task.get_status(task) == "cancelled", (
            path, x.task.get_error_info(task))
        assert x.task.get_error_info(task) == ["TASK_CANCELLED", task]
        assert_nothing_left(x, before)


def test_a_stalled_synchronous_import_can_be_cancelled(x, server, sid,
                                                       source, web):
    """A synchronous call runs under a task of its own: task.cancel ends
    it, the call answers TASK_CANCELLED and nothing it made remains."""
    plain, _, files = web
    sr = x.VDI.get_SR(source["vdis"][0])
    files["/vm.xva"] = _sdk_export(server, sid, source["vm"], None)
    before = counts(x)
    outcome = []

    def call():
        session = server.session(https=False)
        try:
            vm_import(session.xenapi, plain + "/stall.xva", sr)
            outcome.append("imported")
        except XenAPI.Failure as e:
            outcome.append(e.details)
        finally:
            session.xenapi.session.logout()
    caller = threading.Thread(target=call)
    caller.start()
    try:
        task = wait_until(lambda: next((
            ref for ref, r in x.task.get_all_records().items()
            if r["name_label"] == "VM.import" and r["status"] == "pending"
            and r["other_config"].get("object_creation") == "complete"
            and "cancel" in r["allowed_operations"]), None),
            what="the import's task, its objects made")
        x.task.cancel(task)
    finally:
        caller.join(30)
    assert outcome == [["TASK_CANCELLED", task]]
    assert_nothing_left(x, before)
    assert task not in x.task.get_all()


def test_a_silent_server_is_given_up(tmp_path, web):
    """--import-read-timeout: a server silent before its headers or in
    the middle of its body ends the import with IMPORT_ERROR."""
    plain, _, files = web
    host = RunningServer(str(tmp_path / "data"),
                         extra_args=["--import-read-timeout", "0.5"])
    host.start()
    try:
        session = host.session(https=False)
        y = session.xenapi
        sr = y.pool.get_default_SR(y.pool.get_all()[0])
        vm = new_vm(y, "silent source")
        files["/vm.xva"] = _sdk_export(host, session._session, vm, None)
        before = counts(y)
        for path in ("/silent", "/stall.xva"):
            assert failure(vm_import, y, plain + path, sr) == [
                "IMPORT_ERROR", "The server sent nothing for 0.5 s"], path
            assert_nothing_left(y, before)
        session.xenapi.session.logout()
    finally:
        host.stop()
