"""
Real etcd clusters for the tests, and a Twisted reactor to drive the
client against them.

EtcdCluster starts 1 or 3 (or more) ``etcd`` processes, each on its own
loopback address (127.0.0.2, .3, .4...: Linux routes all of 127/8 to lo,
so they bind without an alias) with free ports and a data dir under the
test's tmp dir; members can be killed (-9), stopped and restarted.

ReactorThread runs the global reactor in a daemon thread (once per test
process) so a test can call Deferred-returning code and wait for it:
``rt.call(client.put, b"k", b"v")``.
"""

import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

ETCD = os.environ.get("TXXAPI_ETCD") or shutil.which("etcd") or \
    "/usr/bin/etcd"
# Quicker than etcd's defaults (100 ms / 1 s) so failovers in the tests
# take well under a second, loose enough for a loaded 2-core machine.
TIMING = ["--heartbeat-interval", "50", "--election-timeout", "750",
          # As the pool's members (txxapi.pool.etcd.member) send them.
          "--experimental-watch-progress-notify-interval", "1s"]


def have_etcd():
    return os.access(ETCD, os.X_OK)


needs_etcd = pytest.mark.skipif(
    not have_etcd(), reason="etcd is not installed (scripts/setup does)")


def free_ports(host, count=2):
    """count distinct free ports on host (held open together, so the
    kernel cannot hand the same one out twice)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def loopback(i):
    """The i-th test host address: 127.0.0.2, 127.0.0.3... (see
    tests.support.pool.host_address)."""
    from tests.support.pool import host_address
    return host_address(i)


class Member:
    def __init__(self, name, host, data_dir):
        self.name, self.host, self.data_dir = name, host, data_dir
        self.client_port, self.peer_port = free_ports(host)
        self.client_url = "http://%s:%d" % (host, self.client_port)
        self.peer_url = "http://%s:%d" % (host, self.peer_port)
        self.proc = None
        self.log_path = data_dir + ".log"

    def args(self, cluster, state, token):
        return [ETCD, "--name", self.name, "--data-dir", self.data_dir,
                "--listen-client-urls", self.client_url,
                "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", cluster,
                "--initial-cluster-state", state,
                "--initial-cluster-token", token,
                "--logger", "zap", "--log-outputs", "stderr",
                "--log-level", "warn"] + TIMING

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    def __init__(self, base, size=3, token="tests"):
        self.base = str(base)
        os.makedirs(self.base, exist_ok=True)
        self.token = token
        self.members = [Member("m%d" % i, loopback(i),
                               os.path.join(self.base, "m%d" % i))
                        for i in range(size)]
        self.initial = ",".join("%s=%s" % (m.name, m.peer_url)
                                for m in self.members)

    @property
    def endpoints(self):
        return [m.client_url for m in self.members]

    def start(self, timeout=30):
        for m in self.members:
            self.start_member(m)
        for m in self.members:
            self.wait_healthy(m, timeout)
        return self

    def start_member(self, m):
        log = open(m.log_path, "ab")
        m.proc = subprocess.Popen(m.args(self.initial, "new", self.token),
                                  stdout=log, stderr=log,
                                  stdin=subprocess.DEVNULL)
        log.close()

    def wait_healthy(self, m, timeout=30):
        """Until m answers /health true (it serves, a leader exists)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not m.alive:
                raise RuntimeError("etcd %s exited: %s"
                                   % (m.name, self.tail(m)))
            try:
                with urllib.request.urlopen(m.client_url + "/health",
                                            timeout=1) as r:
                    if b'"true"' in r.read():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("etcd %s not healthy in %d s: %s"
                           % (m.name, timeout, self.tail(m)))

    def tail(self, m, size=2000):
        try:
            with open(m.log_path, "rb") as f:
                return f.read()[-size:].decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self, m):
        """kill -9: no goodbye to its peers or clients."""
        if m.alive:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait()

    def restart(self, m):
        self.kill(m)
        self.start_member(m)

    def stop(self):
        for m in self.members:
            if m.alive:
                m.proc.terminate()
        for m in self.members:
            if m.proc is not None:
                try:
                    m.proc.wait(10)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait()


class ReactorThread:
    """The global reactor, run in a daemon thread for the whole process."""

    _instance = None

    @classmethod
    def get(cls):
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def __init__(self):
        from twisted.internet import reactor
        self.reactor = reactor
        self.thread = threading.Thread(
            target=reactor.run, kwargs={"installSignalHandlers": False},
            name="reactor", daemon=True)
        self.thread.start()
        started = queue.Queue()
        reactor.callFromThread(self._reap_children)
        reactor.callFromThread(started.put, True)
        started.get(timeout=10)

    def _reap_children(self):
        # Without its signal handlers (main thread only) the reactor gets
        # no SIGCHLD: a child that exits just after closing its pipes would
        # never be reaped and its processEnded never called.  Poll instead.
        from twisted.internet import process, task
        self._reaper = task.LoopingCall(process.reapAllProcesses)
        self._reaper.start(0.1)

    def call(self, fn, *args, within=30, **kw):
        """Run fn(*args, **kw) in the reactor thread; its (Deferred's)
        result, or raise its failure; cancels it and fails after within
        seconds."""
        from twisted.internet import defer
        out = queue.Queue()
        holder = []

        def run():
            d = defer.maybeDeferred(fn, *args, **kw)
            holder.append(d)
            d.addBoth(out.put)
        self.reactor.callFromThread(run)
        try:
            result = out.get(timeout=within)
        except queue.Empty:
            self.reactor.callFromThread(lambda: holder and holder[0].cancel())
            raise AssertionError("%s did not finish in %s s" % (fn, within))
        if hasattr(result, "raiseException"):
            result.raiseException()
        return result

    def sleep(self, seconds):
        """Wait in the test thread while the reactor runs."""
        time.sleep(seconds)
