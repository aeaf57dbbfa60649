"""
/console against a real server on the simulator: CONNECT over HTTP and
HTTPS relays the VM's RFB console (vncdotool takes a screenshot through
it) and its vt100 text console, the websocket form carries RFB to a
real websockets client, and every refusal gets XAPI's answer.
"""

import base64
import os
import select
import socket
import ssl
import struct
import threading
import time

import pytest

from tests.support.api import wait_until
from tests.support.servers import (
    PASSWORD, USER, insecure_context, read_head, recv_exactly, serving)

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
def pv_running(x):
    vm = new_vm(x, "pv-vm", hvm=False)
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
        sock = insecure_context().wrap_socket(sock)
    return sock


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


def test_a_vm_ref_or_uuid_means_its_rfb_console_and_basic_auth_works(
        server, x, sid, running):
    vm_uuid = x.VM.get_uuid(running)
    basic = "Authorization: Basic " + base64.b64encode(
        ("%s:%s" % (USER, PASSWORD)).encode()).decode()
    for query, headers in [("uuid=%s&session_id=%s" % (vm_uuid, sid), ()),
                           ("ref=%s" % running,
                            ("Cookie: session_id=%s" % sid,)),
                           ("uuid=%s" % vm_uuid, (basic,))]:
        sock, head = connect(server, query, headers=headers)
        with sock:
            assert head == OK
            assert rfb_handshake(sock)[2] == "console-vm"


def test_console_records_follow_the_vm(server, x, running, halted):
    host = x.host.get_all()[0]
    address = x.host.get_address(host)
    for c in x.VM.get_consoles(running):
        assert x.console.get_location(c) == \
            "https://%s/console?uuid=%s" % (address, x.console.get_uuid(c))
    assert x.VM.get_consoles(halted) == []


UNAUTHORISED = (
    "HTTP/1.0 401 Unauthorised\r\ncontent-length: 96\r\n"
    "content-type: text/html\r\nconnection: close\r\n"
    "cache-control: no-cache, no-store\r\n"
    "WWW-Authenticate: Basic realm=\"%s\"\r\n\r\n"
    "<html><body><h1>HTTP 401 unauthorised</h1>Please check your "
    "credentials and retry.</body></html>")


def internal_error(extra):
    body = ("<html><body><h1>HTTP 500 internal server error</h1>An "
            "unexpected error occurred; please wait a while and try again. "
            "If the problem persists, please contact your support "
            "representative.<h1> Additional information </h1>%s"
            "</body></html>" % extra)
    return ("HTTP/1.0 500 Internal Error\r\ncontent-length: %d\r\n"
            "content-type: text/html\r\nconnection: close\r\n"
            "cache-control: no-cache, no-store\r\n\r\n%s"
            % (len(body), body)).encode()


def test_refusals_get_xapis_answers(server, x, sid, running, halted):
    uuid = x.console.get_uuid(console_of(x, running))
    unknown = "0b8a3a4e-0000-4000-8000-000000000000"
    assert refusal(server, "uuid=%s" % uuid) == \
        (UNAUTHORISED % "connect_console").encode()
    assert refusal(server, "uuid=%s&session_id=OpaqueRef:bogus" % uuid) == \
        (UNAUTHORISED % "connect_console").encode()
    assert refusal(server, "uuid=%s" % uuid, method="GET",
                   headers=("Upgrade: websocket",)) == \
        (UNAUTHORISED % "connect_console_ws").encode()
    failure = internal_error("Console.Failure")
    for query in ["uuid=%s" % x.VM.get_uuid(halted), "ref=%s" % halted,
                  "", "ref=OpaqueRef:nothing"]:
        assert refusal(server, query + "&session_id=" + sid) == failure
    assert refusal(server, "uuid=%s&session_id=%s" % (unknown, sid)) == \
        internal_error("Db_exn.Read_missing_uuid(&quot;console&quot;, "
                       "&quot;&quot;, &quot;%s&quot;)" % unknown)
    # GET without a websocket handshake: what XAPI's failed upgrade sends.
    assert refusal(server, "uuid=%s&session_id=%s" % (uuid, sid),
                   method="GET") == \
        b"HTTP/1.0 501 Method Not Implemented\r\nConnection: close\r\n" \
        b"Cache-Control: no-cache, no-store\r\n\r\n"


class _WebSocketStream:
    """recv/sendall over a websockets connection, for rfb_handshake."""

    def __init__(self, ws):
        self.ws = ws
        self.buffer = b""

    def sendall(self, data):
        # Fragmented, so the server has to put messages back together.
        self.ws.send([data[:1], data[1:]] if len(data) > 1 else data)

    def recv(self, n):
        if not self.buffer:
            message = self.ws.recv(timeout=10)
            self.buffer = message if isinstance(message, bytes) else \
                base64.b64decode(message)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


@pytest.mark.parametrize("subprotocol", ["binary", "base64"])
def test_websocket_carries_rfb(server, x, sid, running, subprotocol):
    from websockets.sync.client import connect as ws_connect
    uuid = x.console.get_uuid(console_of(x, running))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with ws_connect("wss://127.0.0.1:%d/console?uuid=%s"
                    % (server.https_port, uuid), ssl=ctx,
                    subprotocols=[subprotocol],
                    additional_headers={"Cookie": "session_id=" + sid},
                    max_size=None) as ws:
        assert ws.subprotocol == subprotocol
        ws.ping().wait(10)
        stream = _WebSocketStream(ws)
        width, height, name = rfb_handshake(stream)
        assert name == "console-vm"
        assert len(framebuffer(stream, width, height)) == width * height * 4
        ws.ping(b"still there?").wait(10)


def test_websocket_ends_with_the_console_and_refuses_bad_frames(
        server, x, sid):
    from websockets.exceptions import ConnectionClosedOK
    from websockets.sync.client import connect as ws_connect
    vm = new_vm(x, "ws-vm")
    x.VM.start(vm, False, False)
    try:
        uuid = x.console.get_uuid(console_of(x, vm))
        url = "ws://127.0.0.1:%d/console?uuid=%s&session_id=%s" % (
            server.http_port, uuid, sid)
        with ws_connect(url) as ws:
            # No subprotocol offered: none named (a browser would drop
            # the connection otherwise); binary frames all the same.
            assert ws.subprotocol is None
            assert ws.recv(timeout=10) == b"RFB 003.008\n"
            x.VM.hard_shutdown(vm)
            with pytest.raises(ConnectionClosedOK):
                ws.recv(timeout=10)
            assert ws.close_code == 1000
    finally:
        if x.VM.get_power_state(vm) != "Halted":
            x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)
    # A client frame without a mask is a protocol error (RFC 6455 5.1).
    uuid = x.console.get_uuid(console_of(x, x.host.get_control_domain(
        x.host.get_all()[0])))
    key = base64.b64encode(os.urandom(16)).decode()
    sock, head = connect(server, "uuid=%s&session_id=%s" % (uuid, sid),
                         method="GET", headers=(
                             "Upgrade: websocket", "Connection: Upgrade",
                             "Sec-WebSocket-Key: " + key,
                             "Sec-WebSocket-Version: 13"), tls=False)
    with sock:
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        sock.sendall(b"\x82\x03abc")
        sock.settimeout(10)
        rest = read_all(sock)
        assert rest.endswith(b"\x88\x02\x03\xea")   # close, 1002


class _Forwarder:
    """A loopback TCP port whose each connection is a CONNECT tunnel to
    the server's plain HTTP port: what vncdotool can connect to.  (Plain:
    the two pipe threads read and write the tunnel at once, which an
    ssl socket does not allow; the TLS tunnel is tested above.)"""

    def __init__(self, server, query):
        self.server, self.query = server, query
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                local, _ = self.listener.accept()
            except OSError:
                return
            remote, head = connect(self.server, self.query, tls=False)
            assert head == OK
            for a, b in ((local, remote), (remote, local)):
                threading.Thread(target=self._pipe, args=(a, b),
                                 daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.listener.close()


def test_vncdotool_screenshot_through_connect(server, x, sid, running,
                                              tmp_path):
    from PIL import Image
    from vncdotool import api as vnc
    uuid = x.console.get_uuid(console_of(x, running))
    forwarder = _Forwarder(server, "uuid=%s&session_id=%s" % (uuid, sid))
    try:
        client = vnc.connect("127.0.0.1::%d" % forwarder.port, timeout=20)
        try:
            path = str(tmp_path / "screen.png")
            client.captureScreen(path)
        finally:
            client.disconnect()
    finally:
        forwarder.close()
    image = Image.open(path).convert("RGB")
    assert image.size == (320, 240)
    colours = image.getcolors(maxcolors=320 * 240)
    assert len(colours) > 1      # a picture, not one flat colour


def read_until(sock, marker, limit=65536):
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError(data)
        data += chunk
        assert len(data) < limit
    return data


def test_vt100_console_of_a_pv_vm_echoes_at_its_login_prompt(
        server, x, sid, running, pv_running):
    # As XAPI gives them: an HVM guest has qemu's VNC only, a PV guest a
    # text console too.
    assert [x.console.get_protocol(c)
            for c in x.VM.get_consoles(running)] == ["rfb"]
    uuid = x.console.get_uuid(console_of(x, pv_running, "vt100"))
    sock, head = connect(server, "uuid=%s&session_id=%s" % (uuid, sid))
    with sock:
        assert head == OK
        read_until(sock, b"pv-vm login: ")
        sock.sendall(b"root\r")
        assert b"root" in read_until(sock, b"pv-vm login: ")


def band(pixels, width, line):
    """The pixels of one text line of the simulator's panel (name, state,
    uptime, typed keys) in a 32 bpp picture."""
    top = (180 + 12 * line) * width * 4
    return pixels[top:top + 12 * width * 4]


def wait_for_band_change(sock, width, height, pixels, line):
    """Incremental updates until text line ``line`` changes."""
    for _ in range(20):
        new = framebuffer(sock, width, height, incremental=1)
        if band(new, width, line) != band(pixels, width, line):
            return new
    raise AssertionError("line %d never changed" % line)


def test_the_picture_follows_keys_and_the_guest_state(server, x, sid):
    vm = new_vm(x, "screen-vm")
    x.VM.start(vm, False, False)
    try:
        uuid = x.console.get_uuid(console_of(x, vm))
        sock, head = connect(server, "uuid=%s&session_id=%s" % (uuid, sid))
        with sock:
            width, height, _ = rfb_handshake(sock)
            before = framebuffer(sock, width, height)
            # Typed keys appear: an incremental request gets the new picture.
            for key in (ord("Z"), ord("9")):
                sock.sendall(struct.pack(">BBxxI", 4, 1, key))
                sock.sendall(struct.pack(">BBxxI", 4, 0, key))
            sock.sendall(struct.pack(">BBHH", 5, 0, 10, 10))   # pointer
            typed = framebuffer(sock, width, height, incremental=1)
            assert len(typed) == len(before)
            assert band(typed, width, 3) != band(before, width, 3)
            x.VM.pause(vm)
            paused = wait_for_band_change(sock, width, height, typed, 1)
            assert band(paused, width, 3) == band(typed, width, 3)
            x.VM.unpause(vm)
            framebuffer(sock, width, height, incremental=1)
            x.VM.hard_shutdown(vm)
            # The console server going away closes the client's side too.
            sock.settimeout(10)
            assert read_all(sock) == b""
        assert x.VM.get_consoles(vm) == []
    finally:
        if x.VM.get_power_state(vm) != "Halted":
            x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)


def test_the_control_domains_consoles(server, x, sid):
    host = x.host.get_all()[0]
    dom0 = x.host.get_control_domain(host)
    hostname = x.host.get_hostname(host)
    assert sorted(x.console.get_protocol(c)
                  for c in x.VM.get_consoles(dom0)) == ["rfb", "vt100"]
    uuid = x.console.get_uuid(console_of(x, dom0, "vt100"))
    sock, head = connect(server, "uuid=%s&session_id=%s" % (uuid, sid))
    with sock:
        assert head == OK
        prompt = ("%s login: " % hostname).encode()
        read_until(sock, prompt)
        sock.sendall(b"admin\n")
        assert b"admin" in read_until(sock, prompt)
    sock, head = connect(server, "ref=%s&session_id=%s" % (dom0, sid))
    with sock:
        assert head == OK
        assert rfb_handshake(sock)[2] == hostname


def test_rbac_permissions_of_the_console_handlers(tmp_path):
    """A session without http/connect_console gets 403; one without
    http/connect_console/host_console gets XAPI's 500 for the control
    domain's console (its check runs in a context without the session)."""
    from tests.support import inprocess
    from tests.test_http_hardening import _Request
    from txxapi.console.resource import check_console, console_of as find
    from txxapi.http import auth
    server, _ = inprocess.make_server(tmp_path)
    db = server.db
    dom0 = db.fields("host", server.host_ref)["control_domain"]
    console = find(server, {"ref": dom0}, "1.1")
    reader = server.sessions.create("reader", is_local_superuser=False,
                                    permissions=("vm.get_record",))
    request = _Request(
        ("/console?ref=%s&session_id=%s" % (dom0, reader)).encode())
    results = []
    auth.authenticate(server, request, auth.Params(request),
                      "connect_console", "connect_console").addBoth(
                          results.append)
    assert b"403 Forbidden" in results[0].value.response
    operator = server.sessions.create(
        "operator", is_local_superuser=False,
        permissions=("http/connect_console",))
    with pytest.raises(auth.Refused) as refused:
        check_console(server, operator, console, "1.1")
    assert refused.value.response.endswith(
        b"<h1> Additional information </h1>RBAC_PERMISSION_DENIED: [ "
        b"http/connect_console/host_console; no session in context ]"
        b"</body></html>")
    admin = server.sessions.create(
        "admin", is_local_superuser=False,
        permissions=("http/connect_console",
                     "http/connect_console/host_console"))
    assert check_console(server, admin, console, "1.1") > 0
    # No console server to connect to: XAPI's bare 404.
    db.update("console", console, {"port": -1})
    with pytest.raises(auth.Refused) as refused:
        check_console(server, admin, console, "1.1")
    assert refused.value.response == (
        b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n"
        b"Cache-Control: no-cache, no-store\r\n\r\n")
    # A VM not resident on this host (its console is another host's).
    db.update("VM", dom0, {"resident_on": "OpaqueRef:another-host"})
    with pytest.raises(auth.Refused) as refused:
        check_console(server, admin, console, "1.1")
    assert refused.value.response.endswith(
        b"<h1> Additional information </h1>Console.Failure</body></html>")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_the_relay_is_flow_controlled(server, x, sid, pv_running):
    """A client that sends to the echoing text console and never reads:
    the relay stops reading from it once the way back is full, so the
    client soon cannot send more and the server does not grow."""
    uuid = x.console.get_uuid(console_of(x, pv_running, "vt100"))
    sock, head = connect(server, "uuid=%s&session_id=%s" % (uuid, sid),
                         tls=False)
    with sock:
        assert head == OK
        before = rss_kib(server.proc.pid)
        sock.setblocking(False)
        chunk = b"a" * 65536
        accepted = 0
        deadline = time.monotonic() + 30
        while accepted < 256 * MIB and time.monotonic() < deadline:
            # Stalled: the socket not writable for two seconds.
            if not select.select([], [sock], [], 2)[1]:
                break
            try:
                accepted += sock.send(chunk)
            except BlockingIOError:
                pass
        grown = rss_kib(server.proc.pid) - before
    # Socket buffers and the bounded console buffer only.
    print("accepted %d bytes, server grew %d KiB" % (accepted, grown))
    assert accepted < 64 * MIB, accepted
    assert grown < 32 * 1024, grown


def masked(opcode, payload, fin=True):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


def test_websocket_frames_unit():
    """Large frames split anywhere, fragments with a ping between them,
    base64 text frames, and the close handshake."""
    from twisted.internet.testing import StringTransport
    from txxapi.console.websocket import WebSocketSide

    class Sink:
        def __init__(self):
            self.data = b""

        def send(self, data):
            self.data += data

        def close(self):
            pass

    side = WebSocketSide("binary")
    side.makeConnection(StringTransport())
    side.peer = sink = Sink()
    big = os.urandom(70000)
    wire = masked(2, big[:10], fin=False) + masked(9, b"hi") + \
        masked(0, big[10:], fin=True) + masked(2, b"end")
    for i in range(0, len(wire), 997):
        side.dataReceived(wire[i:i + 997])
    assert sink.data == big + b"end"
    assert side.transport.value() == b"\x8a\x02hi"        # the pong
    side.dataReceived(masked(8, struct.pack(">H", 1001)))
    assert side.transport.value().endswith(b"\x88\x02\x03\xe9")
    assert side.transport.disconnecting

    text = WebSocketSide("base64")
    text.makeConnection(StringTransport())
    text.peer = sink = Sink()
    encoded = base64.b64encode(b"RFB 003.008\n")
    text.dataReceived(masked(1, encoded[:5], fin=False))
    text.dataReceived(masked(0, encoded[5:]))
    assert sink.data == b"RFB 003.008\n"
    text.send(b"\x00\x01")
    assert text.transport.value() == b"\x81\x04" + base64.b64encode(
        b"\x00\x01")


def test_relayed_connections_leave_the_per_client_cap(tmp_path_factory):
    """A relayed connection counts against the per-client cap until it
    closes, then no longer."""
    for s in serving(tmp_path_factory, "console-cap", SERVER_ARGS + [
            "--max-connections-per-client", "3"]):
        api = s.session(https=False)
        x, sid = api.xenapi, api._session
        dom0 = x.host.get_control_domain(x.host.get_all()[0])
        for _ in range(6):
            sock, head = connect(s, "ref=%s&session_id=%s" % (dom0, sid),
                                 tls=False)
            with sock:
                assert head == OK
                assert rfb_handshake(sock)[2]
            time.sleep(0.05)
        api.xenapi.session.logout()


def test_a_connection_runs_as_a_task(server, x, sid, running):
    uuid = x.console.get_uuid(console_of(x, running))

    def console_tasks():
        return [t for t, r in x.task.get_all_records().items()
                if r["name_label"] == "Connection to VM console"]
    assert console_tasks() == []
    sock, head = connect(server, "uuid=%s&session_id=%s" % (uuid, sid))
    with sock:
        assert head == OK
        rfb_handshake(sock)
        (task,) = console_tasks()
        assert x.task.get_status(task) == "pending"
    wait_until(lambda: console_tasks() == [], what="the task gone")
    named = x.task.create("my console", "")
    sock, head = connect(server, "uuid=%s&session_id=%s&task_id=%s"
                         % (uuid, sid, named))
    with sock:
        rfb_handshake(sock)
        assert x.task.get_status(named) == "pending"
    wait_until(lambda: x.task.get_status(named) == "success",
               what="the named task done")
    x.task.destroy(named)


def test_what_relaying_costs(server, x, sid, running):
    """CPU seconds of the server (relay, TLS and the simulated console
    drawing) for 100 full framebuffers, about 30 MB, through CONNECT."""
    from tests.support.cost import cpu_of
    uuid = x.console.get_uuid(console_of(x, running))
    sock, head = connect(server, "uuid=%s&session_id=%s" % (uuid, sid))
    with sock:
        width, height, _ = rfb_handshake(sock)
        with cpu_of(server) as cost:
            total = sum(len(framebuffer(sock, width, height))
                        for _ in range(100))
    print("relayed %d bytes for %.2f CPU s" % (total, cost.seconds))
    assert total == 100 * width * height * 4
    assert cost.seconds < 10
