"""
PUT /import_raw_vdi and GET /export_raw_vdi against a real server, with
real curl and qemu-img: raw and VHD images in and out over HTTP and
HTTPS, the session in the query, a cookie or basic auth, plain and
chunked bodies, differential VHD exports that apply onto their base, and
refusals (truncated uploads, corrupt VHDs, bad sessions, VDIs in use)
that leave the VDI as it was, with XAPI's status codes and task errors.
"""

import os
import random
import shutil
import socket
import struct
import subprocess

import pytest

from tests.support.api import failure, wait_until
from tests.support.servers import PASSWORD, USER, read_head, serving
from txstorage import vhd

MIB = 1 << 20
SIZE = 32 * MIB
NULL = "OpaqueRef:NULL"

pytestmark = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("qemu-img")),
    reason="needs curl and qemu-img")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serving(tmp_path_factory, "transfer")


@pytest.fixture(scope="module")
def api(server):
    session = server.session(https=False)
    yield session
    session.xenapi.session.logout()


@pytest.fixture
def x(api):
    return api.xenapi


@pytest.fixture
def sid(api):
    return api._session


@pytest.fixture
def work(tmp_path):
    return tmp_path


def qemu_img(*args):
    return subprocess.run(("qemu-img",) + args, check=True,
                          capture_output=True, text=True).stdout


def curl(*args):
    """(status, headers text, body bytes) of one curl call; the body is
    returned unless the call writes it to a file (-o)."""
    out = ["-o", "/dev/stderr"] if "-o" not in args else []
    run = subprocess.run(
        ["curl", "-sS", "-k", "-D", "-", "-w", "\n%{http_code}"] + out +
        list(args), capture_output=True, timeout=60)
    text = run.stdout.decode("latin-1")
    headers, _, code = text.rpartition("\n")
    return int(code or 0), headers, run.stderr


def make_raw(path, size, writes, seed=1):
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for off, length in writes:
            f.seek(off)
            f.write(rnd.randbytes(length))
    return str(path)


def to_vhd(src, dst):
    qemu_img("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic",
             src, dst)
    return str(dst)


def new_vdi(x, size=SIZE, name="transfer"):
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    return x.VDI.create({
        "name_label": name, "name_description": "", "SR": sr,
        "virtual_size": str(size), "type": "user", "sharable": False,
        "read_only": False, "other_config": {}, "xenstore_data": {},
        "sm_config": {}, "tags": []})


def url(server, path, https=False, **query):
    base = server.https_url if https else server.http_url
    return base + path + "?" + "&".join("%s=%s" % kv for kv in query.items())


def import_file(server, sid, vdi, path, fmt="raw", https=False, *extra):
    return curl("-T", path, *extra, url(server, "/import_raw_vdi", https,
                                        session_id=sid, vdi=vdi, format=fmt))


def export(server, sid, vdi, dst, fmt="raw", https=False, **query):
    query.update(session_id=sid, vdi=vdi, format=fmt)
    code, headers, _ = curl("-o", str(dst),
                            url(server, "/export_raw_vdi", https, **query))
    assert code == 200, headers
    return str(dst), headers


def task_of(x, headers):
    line = [h for h in headers.splitlines() if h.lower().startswith(
        "task-id:")][-1]
    task = line.split(":", 1)[1].strip()
    rec = x.task.get_record(task)
    return task, rec


def same(a, b):
    return open(a, "rb").read() == open(b, "rb").read()


def vhd_writes_applied(base, diff, out):
    """Apply a VHD onto a copy of base with the project's own reader (it
    validates the VHD's structure as it goes)."""
    shutil.copyfile(base, out)
    with open(diff, "rb") as f, open(out, "r+b") as o:
        for off, data in vhd.iter_vhd(f):
            o.seek(off)
            o.write(data)
    return str(out)


def test_raw_in_over_http_out_over_https(x, server, sid, work):
    vdi = new_vdi(x)
    src = make_raw(work / "a.raw", SIZE, [(MIB, 3 * MIB), (20 * MIB, 4096),
                                          (SIZE - 4096, 4096)])
    before = int(x.VDI.get_physical_utilisation(vdi))
    code, headers, body = import_file(server, sid, vdi, src)
    assert code == 200 and body == b""
    assert "Connection: close" in headers
    task, rec = task_of(x, headers)
    assert rec["status"] == "success", rec["error_info"]
    assert rec["result"] == "<value>%s</value>" % vdi
    assert rec["name_label"] == "Importing raw VDI"
    assert int(x.VDI.get_physical_utilisation(vdi)) > before + 3 * MIB
    out, headers = export(server, sid, vdi, work / "out.raw", https=True)
    assert same(src, out)
    assert "content-type:application/octet-stream" in headers
    assert 'filename="%s.raw"' % x.VDI.get_uuid(vdi) in headers
    assert task_of(x, headers)[1]["status"] == "success"
    qemu_img("compare", "-f", "raw", "-F", "raw", src, out)


def test_vhd_in_with_a_cookie_out_with_basic_auth(x, server, sid, work):
    vdi = new_vdi(x)
    src = make_raw(work / "b.raw", SIZE, [(2 * MIB + 512, MIB),
                                          (17 * MIB, 5 * MIB)], seed=2)
    img = to_vhd(src, work / "b.vhd")
    code, headers, _ = curl(
        "-T", img, "-b", "session_id=" + sid,
        url(server, "/import_raw_vdi", https=True, vdi=x.VDI.get_uuid(vdi),
            format="vhd"))
    assert code == 200
    assert task_of(x, headers)[1]["status"] == "success"
    out = str(work / "out.vhd")
    code, headers, _ = curl(
        "-u", "%s:%s" % (USER, PASSWORD), "-o", out,
        url(server, "/export_raw_vdi", https=True, vdi=vdi, format="VHD"))
    assert code == 200 and "content-type:application/vhd" in headers
    info = qemu_img("info", "--output=json", out)
    assert '"format": "vpc"' in info and '"virtual-size": %d' % SIZE in info
    qemu_img("compare", "-f", "raw", "-F", "vpc", src, out)
    back = str(work / "back.raw")
    qemu_img("convert", "-f", "vpc", "-O", "raw", out, back)
    assert same(src, back)
    # Our own reader walks every structure of it too.
    zero = make_raw(work / "z.raw", SIZE, [])
    assert same(vhd_writes_applied(zero, out, work / "applied.raw"), src)
    # Zero blocks are not sent: far smaller than the disk.
    assert os.path.getsize(out) < 9 * MIB


def test_chunked_bodies(x, server, sid, work):
    vdi = new_vdi(x)
    src = make_raw(work / "c.raw", SIZE, [(5 * MIB, 2 * MIB)], seed=3)
    # HTTP chunked transfer encoding: curl reading stdin.
    with open(src, "rb") as f:
        out = subprocess.run(
            ["curl", "-sS", "-D", "-", "-o", "/dev/null", "-T", "-",
             url(server, "/import_raw_vdi", session_id=sid, vdi=vdi)],
            stdin=f, capture_output=True, text=True, timeout=60)
    assert "200 OK" in out.stdout
    assert task_of(x, out.stdout)[1]["status"] == "success"
    assert same(export(server, sid, vdi, work / "c.out")[0], src)
    # vhd-tool's chunked body: (offset, length, data) records, 0 ends.
    body = work / "records"
    with open(body, "wb") as f:
        for off, data in ((MIB, b"A" * 4096), (9 * MIB, b"B" * 100)):
            f.write(struct.pack("<QI", off, len(data)) + data)
        f.write(struct.pack("<QI", 0, 0))
    code, headers, _ = curl("-T", str(body), url(
        server, "/import_raw_vdi", session_id=sid, vdi=vdi, chunked="true"))
    assert code == 200 and task_of(x, headers)[1]["status"] == "success"
    expected = bytearray(open(src, "rb").read())
    expected[MIB:MIB + 4096] = b"A" * 4096
    expected[9 * MIB:9 * MIB + 100] = b"B" * 100
    assert open(export(server, sid, vdi, work / "c2.out")[0], "rb").read() \
        == bytes(expected)


def test_differential_export_applies_onto_the_base(x, server, sid, work):
    vdi = new_vdi(x)
    base = make_raw(work / "base.raw", SIZE, [(0, 8 * MIB)], seed=4)
    assert import_file(server, sid, vdi, base)[0] == 200
    snap = x.VDI.snapshot(vdi, {})
    # Change two blocks through a VHD holding only them.
    changed = bytearray(open(base, "rb").read())
    changed[3 * MIB:3 * MIB + 1000] = os.urandom(1000)
    changed[26 * MIB:26 * MIB + 4096] = b"\x07" * 4096
    new = work / "new.raw"
    new.write_bytes(bytes(changed))
    delta = make_raw(work / "delta.raw", SIZE, [])
    with open(delta, "r+b") as f:
        for lo in (2 * MIB, 26 * MIB):
            f.seek(lo)
            f.write(changed[lo:lo + 2 * MIB])
    assert import_file(server, sid, vdi, to_vhd(delta, work / "delta.vhd"),
                       "vhd")[0] == 200
    diff, _ = export(server, sid, vdi, work / "diff.vhd", "vhd",
                     base=x.VDI.get_uuid(snap))
    blocks = vhd.VHDStreamReader()
    data = open(diff, "rb").read()
    blocks.feed(data)
    assert sorted(i for _, i in blocks._blocks) == [1, 13]
    qemu_img("info", diff)
    base_out, _ = export(server, sid, snap, work / "snap.raw")
    assert same(base_out, base)
    assert same(vhd_writes_applied(base_out, diff, work / "rebuilt.raw"),
                str(new))


def test_refused_uploads_leave_the_vdi_as_it_was(x, server, sid, work):
    vdi = new_vdi(x)
    src = make_raw(work / "d.raw", SIZE, [(4 * MIB, 4 * MIB)], seed=5)
    assert import_file(server, sid, vdi, src)[0] == 200
    other = make_raw(work / "e.raw", SIZE, [(0, SIZE)], seed=6)

    def unchanged():
        out, _ = export(server, sid, vdi, work / "check.raw")
        return same(out, src)

    # A bad session: 401 before anything is read; the task it names is
    # left alone (XAPI would fail it).
    task = x.task.create("client task", "")
    code, headers, body = curl("-T", other, url(
        server, "/import_raw_vdi", session_id="OpaqueRef:bogus", vdi=vdi,
        task_id=task))
    assert code == 401 and b"HTTP 401 unauthorised" in body
    assert 'WWW-Authenticate: Basic realm="VDI.import"' in headers
    assert x.task.get_status(task) == "pending"
    code, headers, _ = curl("-T", other, "-u", "root:wrong",
                            url(server, "/import_raw_vdi", vdi=vdi))
    assert code == 401
    assert unchanged()

    # A truncated raw upload: the connection ends before Content-Length.
    host, port = "127.0.0.1", server.http_port
    with socket.create_connection((host, port)) as s:
        s.sendall(("PUT /import_raw_vdi?session_id=%s&vdi=%s HTTP/1.1\r\n"
                   "Host: x\r\nContent-Length: %d\r\n\r\n"
                   % (sid, vdi, SIZE)).encode())
        with open(other, "rb") as f:
            s.sendall(f.read(SIZE // 2))
        head = s.recv(4096).decode()
    assert head.startswith("HTTP/1.1 200 OK")
    task = head.split("task-id:")[1].split("\r\n")[0]
    wait_until(lambda: x.task.get_status(task) != "pending",
               what="the truncated upload's task")
    assert x.task.get_error_info(task)[0] == "VDI_IO_ERROR"
    assert unchanged()

    # A corrupt VHD footer, and a VHD cut short.
    img = to_vhd(other, work / "e.vhd")
    data = bytearray(open(img, "rb").read())
    data[64] ^= 0xFF                       # inside the footer copy
    bad = work / "bad.vhd"
    bad.write_bytes(bytes(data))
    code, headers, body = import_file(server, sid, vdi, str(bad), "vhd")
    assert code == 200 and b"HTTP/1.1 500 Internal Error" in body
    rec = task_of(x, headers)[1]
    assert rec["status"] == "failure"
    assert rec["error_info"][0] == "VDI_IO_ERROR"
    assert "checksum" in " ".join(rec["error_info"])
    cut = work / "cut.vhd"
    cut.write_bytes(open(img, "rb").read()[:len(data) // 2])
    code, headers, _ = import_file(server, sid, vdi, str(cut), "vhd")
    rec = task_of(x, headers)[1]
    assert rec["error_info"][0] == "VDI_IO_ERROR"
    assert "truncated" in rec["error_info"][-1]
    assert unchanged()


def test_a_vdi_in_use_is_refused(x, server, sid, work):
    vdi = new_vdi(x)
    # Hold an upload open half way.
    s = socket.create_connection(("127.0.0.1", server.http_port))
    try:
        s.sendall(("PUT /import_raw_vdi?session_id=%s&vdi=%s HTTP/1.1\r\n"
                   "Host: x\r\nContent-Length: %d\r\n\r\n"
                   % (sid, vdi, SIZE)).encode() + b"\1" * MIB)
        assert s.recv(4096).startswith(b"HTTP/1.1 200 OK")
        src = make_raw(work / "f.raw", SIZE, [(0, MIB)])
        code, headers, body = import_file(server, sid, vdi, src)
        assert code == 200 and b"500 Internal Error" in body
        assert task_of(x, headers)[1]["error_info"] == ["VDI_IN_USE", vdi]
        code, headers, _ = curl("-o", "/dev/null", url(
            server, "/export_raw_vdi", session_id=sid, vdi=vdi))
        assert task_of(x, headers)[1]["error_info"] == ["VDI_IN_USE", vdi]
        assert "destroy" not in x.VDI.get_allowed_operations(vdi)
        assert "snapshot" in x.VDI.get_allowed_operations(vdi)
        assert failure(x.VDI.destroy, vdi) == ["VDI_IN_USE", vdi, "destroy"]
    finally:
        s.close()
    wait_until(lambda: "destroy" in x.VDI.get_allowed_operations(vdi),
               what="the VDI to be let go")
    x.VDI.destroy(vdi)


def test_status_codes(x, server, sid, work):
    vdi = new_vdi(x, 4 * MIB)
    small = make_raw(work / "s.raw", MIB, [(0, 512)])
    task = x.task.create("named", "")
    code, headers, _ = curl("-T", small, url(
        server, "/import_raw_vdi", session_id=sid, vdi=vdi, format="qcow3",
        task_id=task))
    assert code == 404 and headers.startswith("HTTP/1.0 404 Not Found")
    assert x.task.get_error_info(task) == ["INTERNAL_ERROR",
                                           "Unknown format qcow3"]
    code, _, _ = curl("-T", small, url(
        server, "/import_raw_vdi", session_id=sid, vdi=vdi, format="vhd",
        chunked="true"))
    assert code == 404
    task = x.task.create("named", "")
    code, _, _ = curl("-T", small, url(server, "/import_raw_vdi",
                                       session_id=sid, task_id=task))
    assert code == 400
    assert x.task.get_error_info(task) == ["VDI_MISSING"]
    code, _, body = curl("-T", small, url(server, "/import_raw_vdi",
                                          session_id=sid, vdi="nope"))
    assert code == 500 and b"UUID_INVALID" in body
    code, headers, _ = curl("-I", url(server, "/export_raw_vdi",
                                      session_id=sid, vdi=vdi))
    assert code == 501
    code, _, _ = curl(url(server, "/import_raw_vdi", session_id=sid,
                          vdi=vdi))
    assert code == 404
    code, _, body = curl(url(server, "/export_raw_vdi", session_id=sid))
    assert code == 500 and b"Missing vdi" in body
    code, _, _ = curl(url(server, "/export_raw_vdi", session_id=sid,
                          vdi=vdi, format="tar"))
    assert code == 404
    # Without a VDI but with an SR: a new VDI the size of the body.
    sr = x.VDI.get_SR(vdi)
    code, headers, _ = curl("-T", small, url(server, "/import_raw_vdi",
                                             session_id=sid, sr_id=sr))
    assert code == 200
    made = task_of(x, headers)[1]["result"][7:-8]
    assert x.VDI.get_name_label(made) == "Imported VDI"
    assert int(x.VDI.get_virtual_size(made)) >= MIB
    out, _ = export(server, sid, made, work / "made.raw")
    assert open(out, "rb").read()[:MIB] == open(small, "rb").read()


def _read_head(s):
    """One response head (up to its blank line), as text."""
    return read_head(s).decode("latin-1")


def test_expect_100_continue_is_answered_once_the_upload_is_accepted(
        x, server, sid, work):
    # curl asks for a 100 before sending a large body and holds it back
    # for a second or two without one: the 100 comes before XAPI's 200.
    vdi = new_vdi(x, MIB)
    body = random.Random(3).randbytes(MIB)
    with socket.create_connection(("127.0.0.1", server.http_port)) as s:
        s.sendall(("PUT /import_raw_vdi?session_id=%s&vdi=%s HTTP/1.1\r\n"
                   "Host: x\r\nContent-Length: %d\r\n"
                   "Expect: 100-continue\r\n\r\n"
                   % (sid, vdi, MIB)).encode())
        assert _read_head(s).startswith("HTTP/1.1 100 Continue")
        head = _read_head(s)
        assert head.startswith("HTTP/1.1 200 OK")
        s.sendall(body)
        task = head.split("task-id:")[1].split("\r\n")[0].strip()
        wait_until(lambda: x.task.get_status(task) != "pending",
                   what="the upload's task")
    assert x.task.get_status(task) == "success"
    out, _ = export(server, sid, vdi, work / "expect.raw")
    got = open(out, "rb").read()
    # (the VDI may be larger than asked: the rest reads as zeros)
    assert got[:MIB] == body and got[MIB:].count(0) == len(got) - MIB

    # Refused before any 100: the client never sends the body.
    with socket.create_connection(("127.0.0.1", server.http_port)) as s:
        s.sendall(("PUT /import_raw_vdi?session_id=OpaqueRef:bogus&vdi=%s "
                   "HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                   "Expect: 100-continue\r\n\r\n" % (vdi, MIB)).encode())
        assert _read_head(s).startswith("HTTP/1.1 401")

    # Without Expect, no 100 (XAPI's exchange, unchanged).
    with socket.create_connection(("127.0.0.1", server.http_port)) as s:
        s.sendall(("PUT /import_raw_vdi?session_id=%s&vdi=%s HTTP/1.1\r\n"
                   "Host: x\r\nContent-Length: %d\r\n\r\n"
                   % (sid, vdi, MIB)).encode())
        assert _read_head(s).startswith("HTTP/1.1 200 OK")
        s.sendall(body)
        assert s.recv(1) == b""   # the server closes once the data is in
