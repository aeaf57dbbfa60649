"""
NBD against a real server, read by real clients (libnbd's nbdinfo and
nbdcopy, qemu-img over nbd): networks' purposes and their exclusions,
VDI.get_nbd_info's records, plain service under insecure_nbd, TLS with
the host's certificate under nbd (and plain clients turned away), and
export names whose session or VDI is wrong refused.
"""

import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
from urllib.parse import quote

import pytest

from tests.support.api import failure, wait_until
from tests.support.servers import RunningServer, free_port
from tests.support.servers import recv_exactly as recv
from tests.test_vdi_transfer import (
    api, import_file, make_raw, new_vdi, same, task_of, x)

# The session fixtures of the transfer tests, on this module's server.
FIXTURES = (api, x)

MIB = 1 << 20
SIZE = 24 * MIB

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("nbdinfo", "nbdcopy", "qemu-img",
                                      "curl")),
    reason="needs libnbd-bin, qemu-img and curl")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("nbd"))
    s = RunningServer(os.path.join(base, "data"), nbd_port=free_port())
    s.base = base
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def network(api):
    x = api.xenapi
    net = x.network.get_all()[0]
    yield net
    for purpose in x.network.get_purpose(net):
        x.network.remove_purpose(net, purpose)


@pytest.fixture(scope="module")
def disk(api, server, tmp_path_factory):
    """A VDI with data, and the raw file it holds."""
    work = tmp_path_factory.mktemp("disk")
    vdi = new_vdi(api.xenapi, SIZE, "nbd")
    src = make_raw(work / "src.raw", SIZE, [(0, 4096), (3 * MIB, 2 * MIB),
                                            (SIZE - 512, 512)], seed=9)
    assert import_file(server, api._session, vdi, src)[0] == 200
    return vdi, src


def purpose(x, network, value):
    for p in x.network.get_purpose(network):
        x.network.remove_purpose(network, p)
    if value:
        x.network.add_purpose(network, value)


def uri(record, scheme="nbd", **query):
    out = "%s://%s:%d/%s" % (scheme, record["address"], int(record["port"]),
                             quote(record["exportname"], safe=""))
    if query:
        out += "?" + "&".join("%s=%s" % kv for kv in query.items())
    return out


EPERM, EINVAL = 1, 22


ERR_POLICY, ERR_TLS_REQD, ERR_UNKNOWN = (
    (1 << 31) + 2, (1 << 31) + 5, (1 << 31) + 6)


def nbd_go(sock, name):
    """NBD_OPT_GO for the export, by hand: (final reply type, its text)."""
    head = recv(sock, 18)
    assert head[:8] == b"NBDMAGIC"
    sock.sendall(struct.pack(">I", 3))
    name = name.encode()
    data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
    sock.sendall(struct.pack(">QII", 0x49484156454F5054, 7, len(data))
                 + data)
    while True:
        _, _, reply, n = struct.unpack(">QIII", recv(sock, 20))
        text = recv(sock, n)
        if reply != 3:
            return reply, text.decode()


@contextlib.contextmanager
def nbd_connect(record, name=None):
    """A socket through NBD_OPT_GO to the record's export."""
    sock = socket.create_connection((record["address"], int(record["port"])),
                                    timeout=30)
    with sock:
        assert nbd_go(sock, name or record["exportname"]) == (1, "")
        yield sock


def refusal(record, name):
    with socket.create_connection((record["address"],
                                   int(record["port"])), timeout=30) as s:
        return nbd_go(s, name)


def nbd_request(sock, cmd, offset, length, payload=b""):
    """(error, data) of one request."""
    sock.sendall(struct.pack(">IHHQQI", 0x25609513, 0, cmd, 7, offset,
                             length) + payload)
    magic, error, handle = struct.unpack(">IIQ", recv(sock, 16))
    assert magic == 0x67446698 and handle == 7
    return error, recv(sock, length) if cmd == 0 and not error else b""


def upload_error(server, api, vdi, path):
    """The error code of an upload into the VDI (None: it went in)."""
    code, headers, _ = import_file(server, api._session, vdi, path)
    assert code == 200
    error = task_of(api.xenapi, headers)[1]["error_info"]
    return error[0] if error else None


def run(*args, ok=True):
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if ok:
        assert out.returncode == 0, out.stderr
    return out


def test_purposes_exclude_each_other(x, network):
    purpose(x, network, None)
    assert x.network.get_purpose(network) == []
    x.network.add_purpose(network, "nbd")
    x.network.add_purpose(network, "nbd")
    assert x.network.get_purpose(network) == ["nbd"]
    assert failure(x.network.add_purpose, network, "insecure_nbd") == [
        "NETWORK_INCOMPATIBLE_PURPOSES", "insecure_nbd", "nbd"]
    assert x.network.get_purpose(network) == ["nbd"]
    # Across networks too.
    other = x.network.create({"name_label": "backup", "name_description": "",
                              "MTU": "1500", "other_config": {},
                              "tags": []})
    try:
        assert failure(x.network.add_purpose, other, "insecure_nbd") == [
            "NETWORK_INCOMPATIBLE_PURPOSES", "insecure_nbd", "nbd"]
        assert failure(x.network.add_purpose, other, "nbd-ish")[0] == \
            "INVALID_VALUE"
        assert x.network.get_purpose(other) == []
    finally:
        x.network.destroy(other)
    x.network.remove_purpose(network, "nbd")
    x.network.remove_purpose(network, "nbd")
    assert x.network.get_purpose(network) == []


def test_nbd_info_records(x, api, network, disk):
    vdi, _ = disk
    purpose(x, network, None)
    assert x.VDI.get_nbd_info(vdi) == []
    purpose(x, network, "insecure_nbd")
    [record] = x.VDI.get_nbd_info(vdi)
    assert record["exportname"] == "/%s?session_id=%s" % (
        x.VDI.get_uuid(vdi), api._session)
    host = x.host.get_all()[0]
    pif = x.network.get_PIFs(network)[0]
    assert record["address"] == x.PIF.get_IP(pif)
    assert int(record["port"]) > 0
    assert record["cert"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" not in record["cert"]
    assert record["subject"] == x.host.get_hostname(host)
    # A network with no NBD purpose gives no address.
    assert failure(x.VDI.get_nbd_info, "OpaqueRef:nope")[0] == \
        "HANDLE_INVALID"


def test_plain_nbd_reads_with_nbdinfo_nbdcopy_and_qemu(
        x, api, server, network, disk, tmp_path):
    vdi, src = disk
    purpose(x, network, "insecure_nbd")
    [record] = x.VDI.get_nbd_info(vdi)
    info = json.loads(run("nbdinfo", "--json", uri(record)).stdout)
    export = info["exports"][0]
    assert info["protocol"] == "newstyle-fixed" and not info["TLS"]
    assert export["export-size"] == SIZE and export["is_read_only"]
    assert export["export-name"] == record["exportname"]
    out = str(tmp_path / "copy.raw")
    run("nbdcopy", "--connections=4", uri(record), out)
    assert same(out, src)
    spec = {"driver": "raw", "file": {
        "driver": "nbd", "export": record["exportname"],
        "server": {"type": "inet", "host": record["address"],
                   "port": str(record["port"])}}}
    out2 = str(tmp_path / "qemu.qcow2")
    run("qemu-img", "convert", "-O", "qcow2", "json:" + json.dumps(spec),
        out2)
    run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", src, out2)
    # An open export holds the VDI: a writer is turned away meanwhile.
    with nbd_connect(record) as sock:
        assert nbd_request(sock, 0, 512, 512) == (0, open(src, "rb").read(
            1024)[512:])
        assert upload_error(server, api, vdi, src) == "VDI_IN_USE"
        # Writes are refused (the payload skipped), reads go on; a read
        # past the end is an error of its own.
        assert nbd_request(sock, 1, 0, 4096, b"w" * 4096)[0] == EPERM
        assert nbd_request(sock, 0, SIZE - 512, 1024)[0] == EINVAL
        assert nbd_request(sock, 0, 3 * MIB, 8)[1] == open(
            src, "rb").read()[3 * MIB:3 * MIB + 8]
    wait_until(lambda: upload_error(server, api, vdi, src) is None,
               what="the VDI free again")


def test_pipelined_requests_on_one_connection(x, network, disk):
    """Many requests sent before any reply is read, as nbdcopy sends
    them: each handle answered once, with its own data (replies may come
    in any order), then NBD_CMD_DISC closes the connection after the
    reads under way are answered."""
    vdi, src = disk
    data = open(src, "rb").read()
    purpose(x, network, "insecure_nbd")
    [record] = x.VDI.get_nbd_info(vdi)
    wanted = {}                 # handle -> (error, data)
    requests = []
    for i in range(200):
        handle = 1000 + i
        if i % 50 == 7:
            cmd, offset, length, payload = 1, 0, 512, b"w" * 512
            wanted[handle] = (EPERM, b"")
        elif i % 50 == 9:
            cmd, offset, length, payload = 0, SIZE - 512, 4096, b""
            wanted[handle] = (EINVAL, b"")
        elif i % 50 == 11:
            cmd, offset, length, payload = 3, 0, 0, b""    # flush
            wanted[handle] = (0, b"")
        else:
            length = (64 << 10) if i % 3 else (1 * MIB + 512)
            offset = (i * 997 * 4096) % (SIZE - length)
            cmd, payload = 0, b""
            wanted[handle] = (0, data[offset:offset + length])
        requests.append(struct.pack(">IHHQQI", 0x25609513, 0, cmd, handle,
                                    offset, length) + payload)
    disc = struct.pack(">IHHQQI", 0x25609513, 0, 2, 1, 0, 0)
    with nbd_connect(record) as sock:
        sock.sendall(b"".join(requests) + disc)
        got = {}
        while len(got) < len(wanted):
            magic, error, handle = struct.unpack(">IIQ", recv(sock, 16))
            assert magic == 0x67446698
            assert handle in wanted and handle not in got
            body = wanted[handle][1]
            got[handle] = (error, recv(sock, len(body)) if body else b"")
        assert got == wanted
        # After NBD_CMD_DISC: nothing more, the server closes.
        assert sock.recv(16) == b""


def test_tls_under_the_nbd_purpose(x, network, disk, tmp_path):
    vdi, src = disk
    purpose(x, network, "nbd")
    [record] = x.VDI.get_nbd_info(vdi)
    # A client without TLS is told TLS is required.
    assert run("nbdinfo", uri(record), ok=False).returncode != 0
    assert refusal(record, record["exportname"])[0] == ERR_TLS_REQD
    certs = tmp_path / "pki"
    certs.mkdir()
    (certs / "ca-cert.pem").write_text(record["cert"])
    secure = uri(record, "nbds", **{"tls-certificates": str(certs)})
    info = json.loads(run("nbdinfo", "--json", secure).stdout)
    assert info["TLS"] and info["exports"][0]["export-size"] == SIZE
    out = str(tmp_path / "tls.raw")
    run("nbdcopy", secure, out)
    assert same(out, src)
    spec = {"driver": "raw", "file": {
        "driver": "nbd", "export": record["exportname"],
        "tls-creds": "tls0", "server": {
            "type": "inet", "host": record["address"],
            "port": str(record["port"])}}}
    out2 = str(tmp_path / "tls-qemu.raw")
    # qemu takes no leaf certificate as a CA, and a self-signed host
    # certificate is one: qemu encrypts unverified (its directory must
    # still hold some CA).
    unused = tmp_path / "unused"
    unused.mkdir()
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
        "-keyout", str(unused / "key.pem"), "-out",
        str(unused / "ca-cert.pem"), "-subj", "/CN=unused", "-days", "1",
        "-addext", "basicConstraints=critical,CA:TRUE")
    run("qemu-img", "convert", "--object",
        "tls-creds-x509,id=tls0,endpoint=client,verify-peer=off,dir=%s"
        % unused,
        "-O", "raw", "json:" + json.dumps(spec), out2)
    assert same(out2, src)


def test_wrong_sessions_and_names_are_refused(x, server, network, disk):
    vdi, _ = disk
    purpose(x, network, "insecure_nbd")
    [record] = x.VDI.get_nbd_info(vdi)
    uuid = x.VDI.get_uuid(vdi)
    assert refusal(record, "/%s?session_id=OpaqueRef:bogus" % uuid) == (
        ERR_POLICY, "SESSION_INVALID")
    reply, text = refusal(record, record["exportname"].replace(
        uuid, "00000000-0000-0000-0000-000000000000"))
    assert reply == ERR_UNKNOWN and "no VDI" in text
    assert refusal(record, "/" + uuid)[0] == ERR_POLICY
    out = run("nbdinfo", uri(dict(record, exportname="/" + uuid)), ok=False)
    assert out.returncode != 0
    # A session that logged out no longer reads.
    other = server.session(https=False)
    [theirs] = other.xenapi.VDI.get_nbd_info(vdi)
    run("nbdinfo", uri(theirs))
    other.xenapi.session.logout()
    assert run("nbdinfo", uri(theirs), ok=False).returncode != 0
    # With no NBD purpose left, nothing is served.
    purpose(x, network, None)
    assert run("nbdinfo", uri(record), ok=False).returncode != 0


def test_requests_in_flight_option():
    from twisted.python import usage
    from txxapi.tap import Options
    for bad in ("0", "x", "-1"):
        with pytest.raises(usage.UsageError):
            Options().parseOptions(["--nbd-requests-in-flight", bad])
    options = Options()
    options.parseOptions(["--nbd-requests-in-flight", "8"])
    assert options.settings["nbd-requests-in-flight"] == "8"
    options = Options()
    options.parseOptions([])
    assert options.settings["nbd-requests-in-flight"] == "16"
