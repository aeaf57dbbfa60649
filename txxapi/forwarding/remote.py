"""
A call run on another host of the pool, as XAPI's message forwarding
re-issues it: the same message and arguments, over HTTPS to the host's
address, under this host's pool session with it (txxapi.pool.peers).

From the master, the call carries two headers: its own database
generation (the executing host's replica catches up to it first, so the
call there reads what the master saw, the marks included) and the
client's task, if any.  The executing host runs the implementation
straight away (the master has made the checks and holds the marks) and
answers once its own writes are on the master; the master's task, which
the client watches, records the outcome, and its progress follows the
executing host's (mirror_progress).  From a slave (a call of its
own that needs the master's locks and choice of host), the call goes to
the master as an ordinary pool-session call, and the master routes it.

A XenAPI error of the executing host comes back unchanged; a host that
cannot be reached is CANNOT_CONTACT_HOST [host], and one that is not live
HOST_OFFLINE [host], before anything is marked.

A forwarded call may rightly last long (a migration, an import), so its
answer has no deadline; instead, while it runs, the host is pinged every
answer_timeout seconds (txxapi.pool.peers), and one ping it leaves
unanswered as long ends the call with CANNOT_CONTACT_HOST [host] and
drops its connection: a host that stopped answering costs its callers
at most twice the bound.
"""

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from txxapi.errors import XenAPIError
from txxapi.pool.client import PeerUnreachable

log = Logger()

TASK_HEADER = b"task-id"
GENERATION_HEADER = b"pool-generation"
PROGRESS_INTERVAL = 0.5


def assert_live(ctx, host, is_member):
    if not is_member(ctx, host):
        raise XenAPIError("HOST_OFFLINE", host)


def call_on(ctx, host, wire_name, args, with_task=True):
    """A Deferred of ``wire_name(*args)``'s result on ``host``."""
    server = ctx.server
    address = ctx.db.fields("host", host)["address"]
    headers = {}
    if server.identity.is_master:
        headers[GENERATION_HEADER] = str(ctx.db.persistent_generation) \
            .encode()
        if ctx.task is not None and with_task:
            headers[TASK_HEADER] = ctx.task.encode()
    d = watched(server.reactor, server.peers, address, defer.maybeDeferred(
        server.peers.call, address, wire_name, *args, headers=headers,
        timeout=None))

    def unreachable(f):
        f.trap(PeerUnreachable)
        raise XenAPIError("CANNOT_CONTACT_HOST", host)
    return d.addErrback(unreachable)


def watched(reactor, peers, address, call):
    """``call`` (a Deferred of an unbounded call to ``address``), failed
    with PeerUnreachable and cancelled once a ping of ``address`` sent
    while it runs goes unanswered."""
    pinging, lost = [], []

    def ping():
        if pinging:
            return
        d = peers.ping(address)
        pinging.append(d)

        def unanswered(f):
            f.trap(PeerUnreachable)
            if not call.called:
                lost.append(f)
                call.cancel()
        # A ping answered, even with an error, says the host is there.
        d.addErrback(unanswered).addBoth(lambda _: pinging.clear())

    loop = LoopingCall(ping)
    loop.clock = reactor
    loop.start(peers.answer_timeout, now=False)

    def over(result):
        loop.stop()
        return lost[0] if lost else result
    return call.addBoth(over)


def cancel_there(ctx, host):
    """While the call runs on ``host``, a cancel of the client's task is
    sent there; answers the step that stops that once the call is over."""
    task, tasks = ctx.task, ctx.server.tasks
    if task is None:
        return _unchanged

    def cancel():
        d = call_on(ctx, host, "task.cancel", [task], with_task=False)
        d.addErrback(lambda f: log.info(
            "cancel of {task} on {host}: {e}", task=task, host=host,
            e=f.getErrorMessage()))
    tasks.set_canceller(task, cancel)

    def over(result):
        tasks.clear_canceller(task)
        return result
    return over


def under_task(ctx, forwarded, run):
    """On the executing host: ``run()`` under a task of its own with the
    master's task ref, for as long as it runs, so that the operation can
    be cancelled here (the master sends the cancel) as the client's own
    task would be."""
    task = forwarded["task"]
    if task is None or ctx.db.exists("task", task):
        return defer.maybeDeferred(run)

    def mirrored():
        # The answer leaves after the last progress sent: a progress
        # landing after the outcome would undo its 1.0.
        mirror = ProgressMirror(ctx, task)
        return defer.maybeDeferred(run).addBoth(
            lambda result: mirror.stop().addBoth(lambda _: result))
    return ctx.server.tasks.under_own_task(ctx, ctx.message.wire_name,
                                           mirrored, ref=task)


class ProgressMirror:
    """On the executing host: the local task's progress, every
    PROGRESS_INTERVAL seconds that it has changed, set on the master's
    task of the same ref (task.set_progress), one call at a time."""

    def __init__(self, ctx, task):
        self.ctx, self.task = ctx, task
        self.sent = 0.0
        self._call = None
        self._loop = LoopingCall(self._step)
        self._loop.clock = ctx.server.reactor
        self._loop.start(PROGRESS_INTERVAL, now=False)

    def _step(self):
        db, server = self.ctx.db, self.ctx.server
        if self._call is not None or not db.exists("task", self.task):
            return
        progress = db.get("task", self.task, "progress")
        if progress == self.sent or progress >= 1.0:
            return
        self.sent = progress
        d = server.peers.call(server.identity.role.master_address,
                              "task.set_progress", self.task, progress)
        d.addErrback(lambda f: log.info(
            "progress of {task} not sent: {e}", task=self.task,
            e=f.getErrorMessage()))

        def done(_):
            self._call = None
        self._call = d
        d.addBoth(done)

    def stop(self):
        if self._loop.running:
            self._loop.stop()
        call = self._call
        return defer.succeed(None) if call is None else \
            call.addBoth(lambda _: None)


def _unchanged(result):
    return result


def forwarded_here(ctx):
    """The master's account of this call if it forwarded it here (a pool
    session on a slave), else None."""
    if ctx.origin is None or ctx.session is None or \
            ctx.server.identity.is_master:
        return None
    forwarded = ctx.origin.get("forwarded")
    if forwarded is None or not ctx.session_fields()["pool"]:
        return None
    return forwarded


def caught_up(ctx, forwarded):
    """Fires once this host's replica holds what the master had written
    when it forwarded the call."""
    wait = getattr(ctx.server.persistence, "caught_up", None)
    if wait is None:
        return defer.succeed(None)
    return wait(forwarded["generation"])
