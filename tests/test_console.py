"""
/console against a real server on the simulator: CONNECT over HTTP and
HTTPS relays the VM's RFB console (vncdotool takes a screenshot through
it) and its vt100 text console, the websocket form carries RFB to a
real websockets client, and every refusal gets XAPI's answer.
"""

import base64
import os
import socket
import ssl
import struct
import threading
import time

import pytest

from tests.support.servers import PASSWORD, USER, serving

MIB = 1024 ** 2
NULL = "OpaqueRef:NULL"
SERVER_ARGS = ["--simulator-op-time", "0.01"]
OK = (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n"
      b"Cache-Control: no-cache, no-store\r\n\r\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serving(tmp_path_factory, "console", SERVER_ARGS)


@pytest.fixture(scope="module")
def api(server):
    session = server.session()
    yield session
    session.xenapi.session.logout()


@pytest.fixture(scope="module")
def x(api):
    return api.xenapi


@pytest.fixture(scope="module")
def sid(api):
    return api._session


def new_vm(x, name, hvm=True):
    record = {
        "name_label": name, "name_description": "", "user_version": "1",
        "is_a_template": False, "affinity": NULL,
        "memory_static_max": str(256 * MIB),
        "memory_dynamic_max": str(256 * MIB),
        "memory_dynamic_min": str(256 * MIB),
        "memory_static_min": str(256 * MIB),
        "VCPUs_params": {}, "VCPUs_max": "1", "VCPUs_at_startup": "1",
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart", "actions_after_crash": "restart",
        "PV_bootloader": "" if hvm else "pygrub", "PV_kernel": "",
        "PV_ramdisk": "", "PV_args": "", "PV_bootloader_args": "",
        "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order" if hvm else "",
        "HVM_boot_params": {"order": "cd"} if hvm else {}, "platform": {},
        "PCI_bus": "", "other_config": {}, "recommendations": ""}
    return x.VM.create(record)


@pytest.fixture(scope="module")
def running(x):
    vm = new_vm(x, "console-vm")
    x.VM.start(vm, False, False)
    yield vm
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


@pytest.fixture(scope="module")
def halted(x):
    vm = new_vm(x, "halted-vm")
    yield vm
    x.VM.destroy(vm)


def console_of(x, vm, protocol="rfb"):
    for c in x.VM.get_consoles(vm):
        if x.console.get_protocol(c) == protocol:
            return c
    raise AssertionError("no %s console" % protocol)


def open_socket(server, tls):
    sock = socket.create_connection(
        ("127.0.0.1", server.https_port if tls else server.http_port),
        timeout=10)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(sock)
    return sock


def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def read_all(sock):
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
    return data


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


def connect(server, query, tls=True, method="CONNECT", headers=()):
    """The socket and the response head of a /console request."""
    sock = open_socket(server, tls)
    lines = ["%s /console?%s HTTP/1.0" % (method, query)] + list(headers)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock, read_head(sock)


def refusal(server, query, **kw):
    """The whole answer of a refused request (the server closes)."""
    sock, head = connect(server, query, **kw)
    with sock:
        return head + read_all(sock)


def rfb_handshake(sock):
    """RFB 3.8 with security None; (width, height, name)."""
    assert recv_exactly(sock, 12) == b"RFB 003.008\n"
    sock.sendall(b"RFB 003.008\n")
    count = recv_exactly(sock, 1)[0]
    assert 1 in recv_exactly(sock, count)
    sock.sendall(b"\x01")
    assert recv_exactly(sock, 4) == b"\x00\x00\x00\x00"
    sock.sendall(b"\x01")
    width, height = struct.unpack(">HH", recv_exactly(sock, 4))
    recv_exactly(sock, 16)
    (n,) = struct.unpack(">I", recv_exactly(sock, 4))
    return width, height, recv_exactly(sock, n).decode()


def framebuffer(sock, width, height, incremental=0):
    sock.sendall(struct.pack(">BBHHHH", 3, incremental, 0, 0, width,
                             height))
    head = recv_exactly(sock, 4)
    kind, count = head[0], struct.unpack(">H", head[2:4])[0]
    assert kind == 0
    pixels = b""
    for _ in range(count):
        x0, y0, w, h, enc = struct.unpack(">HHHHi", recv_exactly(sock, 12))
        assert enc == 0
        pixels += recv_exactly(sock, w * h * 4)
    return pixels


@pytest.mark.parametrize("tls", [True, False])
def test_connect_relays_the_rfb_console(server, x, sid, running, tls):
    console = console_of(x, running)
    uuid = x.console.get_uuid(console)
    sock, head = connect(server, "uuid=%s&session_id=%s" % (uuid, sid),
                         tls=tls)
    with sock:
        assert head == OK
        width, height, name = rfb_handshake(sock)
        assert name == "console-vm"
        pixels = framebuffer(sock, width, height)
        assert len(pixels) == width * height * 4
        assert pixels.count(0) < len(pixels)
