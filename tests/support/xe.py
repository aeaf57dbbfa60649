"""
Running ``xe`` in tests: the client as a subprocess (``python -m
txxapi.cli``, the code of the ``xe`` console script), and a minimal
protocol client written from the protocol's description (so a
misunderstanding shared by both sides of the package shows).
"""

import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from tests.support.servers import PASSWORD, REPO, USER, logged_in, serving
from txxapi.cli.errors import DESCRIPTIONS
from txxapi.datamodel import MODEL

BANNER = b"XenSource thin CLI protocol" + struct.pack("<ii", 0, 2)


def module_fixtures(name):
    """A test module's ``server`` (started in a directory named after
    ``name``), ``api`` (an SDK session on it) and ``x`` (its xenapi)."""
    @pytest.fixture(scope="module")
    def server(tmp_path_factory):
        yield from serving(tmp_path_factory, name)

    @pytest.fixture(scope="module")
    def api(server):
        yield from logged_in(server)

    @pytest.fixture
    def x(api):
        return api.xenapi
    return server, api, x


def local_socket(server):
    return os.path.join(server.data_dir, "xapi")


def run_xe(server, *args, home=None, env=None, auth=True, input=None,
           cwd=None, tls=False, local=False, socket_path=""):
    """xe run against ``server``: over TCP (with ``socket_path`` as the
    local socket, none by default), TLS if asked, or with no -s/-p at all
    through the server's local socket."""
    environ = dict(os.environ, PYTHONPATH=REPO, HOME=str(home or cwd or "/"))
    environ.pop("XE_EXTRA_ARGS", None)
    environ.update(env or {})
    if local:
        conn = ["socket=" + local_socket(server)]
    elif tls:
        conn = ["-s", "localhost", "-p", str(server.https_port)]
    else:
        conn = ["-s", server.bind, "-p", str(server.http_port), "--nossl",
                "socket=" + socket_path]
    cred = ["-u", USER, "-pw", PASSWORD] if auth else []
    p = subprocess.run([sys.executable, "-m", "txxapi.cli"] + list(args)
                       + conn + cred, capture_output=True, text=True,
                       env=environ, input=input, cwd=cwd, timeout=120)
    return p.returncode, p.stdout, p.stderr


def api_error(code, *params):
    """What xe prints for an API error: the sentence of the CLI's table
    and a line per parameter named as the datamodel names it; the
    client's generic form for a code without a sentence."""
    if code not in DESCRIPTIONS:
        return "Error code: %s\nError parameters: %s\n" % (
            code, ", ".join(params))
    names = MODEL.errors[code]
    return DESCRIPTIONS[code] + "\n" + "".join(
        "%s: %s\n" % pair for pair in zip(names, params))


def xe_in_pty(server, args, cwd, interrupt_on=None, local=False):
    """Run xe with its stdout and stderr on a pseudo-terminal (through
    the server's local socket if ``local``): its exit status and
    everything it drew.  Ctrl-C (SIGINT) once it has drawn
    ``interrupt_on``, if given."""
    if local:
        conn = ["socket=" + local_socket(server)]
    else:
        conn = ["-s", server.bind, "-p", str(server.http_port), "--nossl",
                "socket="]
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(str(cwd))
        os.environ["PYTHONPATH"] = REPO
        os.environ["HOME"] = str(cwd)
        os.execv(sys.executable, [sys.executable, "-m", "txxapi.cli"] + args
                 + conn + ["-u", USER, "-pw", PASSWORD])
    data = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
            if interrupt_on is not None and interrupt_on.encode() in data:
                os.kill(pid, signal.SIGINT)
                interrupt_on = None
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), data.decode("utf-8", "replace")


def ok(server, *args, **kw):
    """xe's output for a command that must succeed, saying nothing on
    stderr."""
    rc, out, err = run_xe(server, *args, **kw)
    assert (rc, err) == (0, ""), (out, err)
    return out


def as_the_api_answers(call, *args):
    """What xe prints for a command that is this one API call (whose
    errors name no objects): nothing if the call succeeds, else its
    error."""
    import XenAPI
    try:
        call(*args)
    except XenAPI.Failure as e:
        return (1, "", api_error(*e.details))
    return (0, "", "")


# --- a protocol client of its own --------------------------------------------

def _recv(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(data)
        data += chunk
    return data


def raw_cli(server, lines, answer_banner=True, local=False):
    """Run one command with a client written from the description:
    (banner bytes, [messages]) where a message is (subtag, args...)."""
    body = "\n".join(lines).encode()
    if local:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(local_socket(server))
    else:
        sock = socket.create_connection(("127.0.0.1", server.http_port))
    with sock:
        sock.sendall(b"POST /cli HTTP/1.0\r\ncontent-length: %d\r\n\r\n"
                     % len(body) + body)
        banner = _recv(sock, len(BANNER))
        if not answer_banner:
            return banner, []
        sock.sendall(BANNER)
        out = []
        while True:
            (length,) = struct.unpack("<i", _recv(sock, 4))
            payload = _recv(sock, length)
            tag, sub = struct.unpack_from("<ii", payload)
            assert tag == 9, payload
            rest = payload[8:]
            if sub == 4:
                out.append((4, struct.unpack("<i", rest)[0]))
                return banner, out
            if sub in (0, 16):
                (n,) = struct.unpack_from("<i", rest)
                out.append((sub, rest[4:4 + n].decode()))
            elif sub == 14:
                (n,) = struct.unpack_from("<i", rest)
                code, pos, params = rest[4:4 + n].decode(), 4 + n, []
                (count,) = struct.unpack_from("<i", rest, pos)
                pos += 4
                for _ in range(count):
                    (m,) = struct.unpack_from("<i", rest, pos)
                    params.append(rest[pos + 4:pos + 4 + m].decode())
                    pos += 4 + m
                out.append((14, code, params))
            else:
                out.append((sub,))


def block(*fields):
    """A record as XAPI prints it: keys right-aligned to the longest plus
    four, the first left-aligned; a blank line after (and the client's
    newline)."""
    width = 4 + max(len(k) for k, _ in fields)
    lines = [(k.ljust(width) if i == 0 else k.rjust(width)) + ": " + v
             for i, (k, v) in enumerate(fields)]
    return "\n".join(lines) + "\n\n\n"


def unescape_minimal(text):
    items, cur, i = [], "", 0
    while i < len(text):
        if text[i] == "\\":
            cur += text[i + 1]
            i += 2
            continue
        if text[i] == ",":
            items.append(cur)
            cur = ""
        else:
            cur += text[i]
        i += 1
    return items + [cur]
