"""
Real txxapi servers for tests: ``twistd xapi`` in a subprocess on free
loopback ports, with a passwd file of one superuser, a data dir of its own,
and helpers to log in with the XenAPI SDK or talk raw HTTP.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import ssl

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
USER = "root"
PASSWORD = "xenroot-test"
# What a refused login waits before it is answered, on test servers.
LOGIN_FAILURE_DELAY = 0.2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha512_crypt(password):
    out = subprocess.run(["openssl", "passwd", "-6", password],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def recv_exactly(sock, n):
    """Exactly ``n`` bytes from the socket; EOFError if it closes first."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


def read_head(sock):
    """The bytes of one HTTP response head, up to its blank line (read a
    byte at a time, so nothing after it is consumed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def insecure_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class RunningServer:
    def __init__(self, data_dir, passwd_file=None, extra_args=(),
                 http_port=None, https_port=None, bind="127.0.0.1",
                 nbd_port=0):
        self.data_dir = data_dir
        self.bind = bind
        os.makedirs(data_dir, exist_ok=True)
        if passwd_file is None:
            passwd_file = os.path.join(data_dir, "..", "passwd")
            passwd_file = os.path.abspath(passwd_file)
            if not os.path.exists(passwd_file):
                with open(passwd_file, "w") as f:
                    f.write("%s:%s\n" % (USER, sha512_crypt(PASSWORD)))
        self.passwd_file = passwd_file
        self.extra_args = list(extra_args)
        self.http_port = http_port or free_port()
        self.https_port = https_port or free_port()
        # NBD only where a test asks for it (the standard port is shared).
        self.nbd_port = nbd_port
        self.proc = None
        # What the command starts with (``ip netns exec NS``: a host in a
        # namespace of its own, tests/support/netns.py).
        self.command_prefix = []
        self.log_path = os.path.join(data_dir, "..", "twistd-%s-%d.log"
                                     % (bind, self.http_port))

    @property
    def http_url(self):
        return "http://%s:%d" % (self.bind, self.http_port)

    @property
    def https_url(self):
        return "https://%s:%d" % (self.bind, self.https_port)

    def start(self, timeout=30):
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self):
        """The process started, not waited for (hosts of a pool that
        restart together need each other to come up)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        cmd = self.command_prefix + [
            sys.executable, "-m", "twisted", "--log-format", "text",
            "xapi", "--data-dir", self.data_dir, "--bind", self.bind,
            "--http-port", str(self.http_port),
            "--https-port", str(self.https_port),
            "--nbd-port", str(self.nbd_port),
            "--auth", "passwd:" + self.passwd_file,
            "--backend", "simulator",
            "--login-failure-delay", str(LOGIN_FAILURE_DELAY)] + self.extra_args
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: %s" % self.read_log())
            try:
                urllib.request.urlopen(self.http_url + "/", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start: %s" % self.read_log())

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-5000:]

    def wait_exit(self, timeout=30):
        """Wait for the process to end by itself (a host restarting into
        a new role exits; its supervisor starts it again).  Returns its
        exit status."""
        status = self.proc.wait(timeout)
        self.proc = None
        self.log.close()
        return status

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()

    def kill(self):
        self.stop(signal.SIGKILL)

    def session(self, https=True):
        import XenAPI
        url = self.https_url if https else self.http_url
        s = XenAPI.Session(url, ignore_ssl=True)
        s.xenapi.login_with_password(USER, PASSWORD, "1.0", "txxapi-tests")
        return s


class LoadServer(RunningServer):
    """A server for load generators: they open every connection from one
    address, so the per-client connection cap is lifted."""

    def __init__(self, data_dir, extra_args=(), **kw):
        RunningServer.__init__(
            self, data_dir,
            extra_args=["--max-connections-per-client", "0"] + list(extra_args),
            **kw)


def logged_in(server):
    """A fixture's body: an SDK session on ``server`` (plain HTTP), logged
    out afterwards."""
    session = server.session(https=False)
    yield session
    session.xenapi.session.logout()


def serving(tmp_path_factory, name, extra_args=()):
    """A module fixture's body: a server in a fresh directory named after
    ``name``, started, yielded, stopped.  ``server.base`` is that directory,
    room for the module's own files."""
    base = str(tmp_path_factory.mktemp(name))
    server = RunningServer(os.path.join(base, "data"), extra_args=extra_args)
    server.base = base
    server.start()
    yield server
    server.stop()
