"""
The connection a migration runs on, and the toolstack's messages on it.

The source opens it: HTTPS to port 443 of the destination's address,
``PUT /services/xenops/memory/<vm uuid>?<parameters>`` with the pool
secret as a cookie (as XAPI's hosts send their RRDs), or to another
pool's host with the session_id its host.migrate_receive gave, and no
body.  The
destination answers ``200 OK`` once it is ready to receive, and from then
on the connection is a plain stream between the two hosts:

1. the backends' own exchange (IXenopsBackend.migrate_send on the
   source, migrate_receive on the destination): the domain's state, the
   destination's readiness, the source's go;
2. the source, its domain and its disks let go: ``RELEASED``;
3. the destination, the guest running there and the VM's new home
   written: ``DONE``, or ``ERROR <reason>``.

These blocking helpers run on the bridge's threads, never the reactor.
The peer's certificate is not verified, as in the pool's other calls
(txxapi.pool.client).
"""

import socket
import ssl
from urllib.parse import quote, urlencode

from txxapi.pool.client import PEER_HTTPS_PORT
from txxenops.errors import MigrationError

MEMORY_PATH = "/services/xenops/memory/"
RELEASED = b"RELEASED"
DONE = b"DONE"
ERROR = b"ERROR"
CONNECT_TIMEOUT = 30.0
MAX_LINE = 4096
MAX_HEAD = 16384


def _tls_context():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def connect(address, uuid, params, secret, timeout=CONNECT_TIMEOUT):
    """A TLS socket to the destination's memory receiver for VM ``uuid``,
    past its 200.  MigrationError when it cannot be reached or refuses."""
    try:
        raw = socket.create_connection((address, PEER_HTTPS_PORT),
                                       timeout=timeout)
    except OSError as e:
        raise MigrationError(uuid, "cannot connect to %s: %s" % (address, e))
    sock = None
    try:
        sock = _tls_context().wrap_socket(raw)
        host = "[%s]" % address if ":" in address else address
        # Another pool's host takes its session_id (in params) instead.
        cookie = "Cookie: pool_secret=%s\r\n" % secret if secret else ""
        sock.sendall((
            "PUT %s%s?%s HTTP/1.1\r\nHost: %s\r\n%s"
            "Content-Length: 0\r\nUser-Agent: txxapi\r\n\r\n" % (
                MEMORY_PATH, quote(uuid), urlencode(sorted(params.items())),
                host, cookie)).encode())
        status, headers = _read_head(sock)
        if status.split(b" ")[1:2] != [b"200"]:
            raise MigrationError(uuid, "%s answered %s%s" % (
                address, status.decode("latin-1"), _body_of(sock, headers)))
    except BaseException as e:
        (sock or raw).close()
        if isinstance(e, (OSError, ValueError)):
            raise MigrationError(uuid, "%s: %s" % (address, e))
        raise
    return sock


def _read_head(sock):
    """The status line and headers (lower-case names) of a response,
    read without going past its blank line."""
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        if len(head) > MAX_HEAD:
            raise ValueError("response head too long")
        c = sock.recv(1)
        if not c:
            raise ValueError("connection closed before a response")
        head += c
    lines = bytes(head).split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _body_of(sock, headers):
    """A refusal's body (its error), if short."""
    try:
        length = int(headers.get(b"content-length", b"0"))
    except ValueError:
        return ""
    if not 0 < length <= MAX_LINE:
        return ""
    body = bytearray()
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            break
        body += chunk
    return ": " + bytes(body).decode("utf-8", "replace").strip()


def read_line(sock):
    """One line of the peer's, without its newline (read unbuffered:
    nothing after it is taken from the socket)."""
    with sock.makefile("rb", buffering=0) as raw:
        line = raw.readline(MAX_LINE + 1)
    if not line.endswith(b"\n"):
        raise ValueError("line too long" if len(line) > MAX_LINE
                         else "the peer closed the connection")
    return line[:-1]


def send_line(sock, line):
    sock.sendall(line + b"\n")


def error_line(reason):
    return ERROR + b" " + str(reason).replace("\n", " ").encode(
        "utf-8", "replace")


def expect(sock, uuid, wanted):
    """Read the peer's next line; MigrationError unless it is ``wanted``."""
    try:
        line = read_line(sock)
    except (OSError, ValueError) as e:
        raise MigrationError(uuid, "waiting for %s: %s" % (
            wanted.decode(), e))
    if line != wanted:
        raise MigrationError(uuid, "peer: %s" % line.decode(
            "utf-8", "replace"))


def close(sock):
    try:
        sock.close()
    except OSError:
        pass
