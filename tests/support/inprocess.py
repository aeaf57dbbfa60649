"""
An in-process Server driven by a twisted.internet.task.Clock: no sockets,
no threads, time advanced by hand.  For unit tests of dispatch, sessions,
tasks and events.
"""

import threading

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.task import Clock

from txxapi.auth.realm import make_portal
from txxapi.db.persist import NoPersistence
from txxapi.server import Server
from txxenops.backends.simulator import SimulatorBackend

USER, PASSWORD = "root", "secret"


class ClockReactor(Clock):
    """A Clock that also answers the few reactor calls the server makes.
    A call from another thread runs at once, but never while the test's
    thread is scheduling or advancing: one lock keeps the Clock's list of
    calls in one thread's hands at a time."""

    def __init__(self):
        Clock.__init__(self)
        self._lock = threading.RLock()

    def callFromThread(self, f, *args, **kw):
        with self._lock:
            f(*args, **kw)

    def callLater(self, delay, f, *args, **kw):
        with self._lock:
            return Clock.callLater(self, delay, f, *args, **kw)

    def advance(self, amount):
        with self._lock:
            Clock.advance(self, amount)

    def getThreadPool(self):
        raise RuntimeError("no threads in clock-driven tests")


def make_server(tmp_path, failure_delay=5.0):
    checker = InMemoryUsernamePasswordDatabaseDontUse(
        **{USER: PASSWORD.encode()})
    clock = ClockReactor()
    server = Server(str(tmp_path), make_portal([checker]), SimulatorBackend(),
                    NoPersistence(), bind="127.0.0.1",
                    login_failure_delay=failure_delay, reactor=clock)
    d = server.start()
    assert d.called, "start must not wait on a Clock"
    return server, clock


def call(server, method, *params):
    """Dispatch a call; return its result or raise its failure."""
    d = server.dispatcher.call(method, list(params))
    results = []
    d.addBoth(results.append)
    assert results, "%s did not finish synchronously" % method
    result = results[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def login(server):
    return call(server, "session.login_with_password", USER, PASSWORD,
                "1.0", "tests")
