"""
An etcd member as a child process of the txxapi service tree.

EtcdMember (a twisted.application.service.Service) runs one ``etcd``
with its own name, data dir and peer/client URLs on the host's address,
restarts it with a growing delay if it dies (unless its ``may_restart``
says not to), stops it with SIGTERM (then
SIGKILL after stop_timeout), logs its output through twisted.logger and
tells when it serves (ready()).  add_member / remove_member change a
running cluster through the member API, as a pool join and eject will.
"""

import os
import shutil
from json import dumps

from twisted.application import service
from twisted.internet import defer, error as net_error, protocol, task, threads
from twisted.logger import Logger, LogLevel

from txxapi.pool.etcd import errors
from txxapi.pool.etcd.client import EtcdClient
from txxapi.pool.etcd.transport import loads

__all__ = ["EtcdMember", "add_member", "promote_member", "remove_member",
           "retry_unhealthy",
           "etcd_binary"]

log = Logger()

CLIENT_PORT, PEER_PORT = 2379, 2380
STABLE_RUN = 30.0   # up this long, a crash restarts it after the first delay
# An idle watch hears from its member this often (etcd's progress
# notifications), so a watcher can tell a member it cannot reach any
# more (cut off: its stream goes silent, nothing closes it) from a quiet
# key (see watch.Watcher's silence).
PROGRESS_NOTIFY_INTERVAL = 1.0
WATCH_SILENCE = 5 * PROGRESS_NOTIFY_INTERVAL

# etcd's own (zap) levels as ours: its routine chatter stays at debug.
_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.debug,
           "warn": LogLevel.info, "error": LogLevel.warn,
           "dpanic": LogLevel.error, "panic": LogLevel.error,
           "fatal": LogLevel.error}


# Fields of etcd's records that every line has, or that name this member.
_COMMON_FIELDS = ("level", "ts", "caller", "msg", "local-member-id")


def _described(record, line):
    """An etcd record's message with what tells its events apart (the
    remote peer, the stream, the error): etcd logs an event once per
    peer and stream, and the message alone reads as one line twice."""
    text = record.get("msg", line)
    fields = ["%s=%s" % (key, value if isinstance(value, str)
                         else dumps(value))
              for key, value in record.items() if key not in _COMMON_FIELDS]
    return "%s (%s)" % (text, ", ".join(fields)) if fields else text


def etcd_binary():
    """The etcd server program: $TXXAPI_ETCD, else etcd on PATH."""
    path = os.environ.get("TXXAPI_ETCD") or shutil.which("etcd") \
        or "/usr/bin/etcd"
    return path


def url(scheme, host, port):
    return "%s://%s:%d" % (scheme, host, port)


class _EtcdProcess(protocol.ProcessProtocol):
    def __init__(self, member):
        self.member = member
        self.ended = defer.Deferred()
        self._partial = b""

    def errReceived(self, data):
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > 65536:
            lines.append(self._partial)
            self._partial = b""
        for line in lines:
            if line.strip():
                self.member.log_line(line)

    outReceived = errReceived

    def processEnded(self, reason):
        self.ended.callback(reason.value)
        self.member.process_ended(self, reason)


class EtcdMember(service.Service):
    """One etcd member.  initial_cluster maps member names to peer URLs
    (this member included); cluster_state is "new" to form a cluster,
    "existing" to join one (after add_member's member add)."""

    def __init__(self, name, data_dir, host, client_port=CLIENT_PORT,
                 peer_port=PEER_PORT, initial_cluster=None,
                 cluster_state="new", cluster_token="txxapi-pool",
                 scheme="http", binary=None, extra_args=(), reactor=None,
                 restart_delay=0.5, max_restart_delay=30.0, stop_timeout=10.0):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.setName(name)
        self.data_dir = data_dir
        self.host = host
        self.scheme = scheme
        self.client_url = url(scheme, host, client_port)
        self.peer_url = url(scheme, host, peer_port)
        self.initial_cluster = dict(initial_cluster or {name: self.peer_url})
        self.cluster_state = cluster_state
        self.cluster_token = cluster_token
        self.binary = binary or etcd_binary()
        self.extra_args = list(extra_args)
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.stop_timeout = stop_timeout
        self.starts = 0
        self._delay = restart_delay
        self._process = None
        self._restart_call = None
        self._started_at = None
        # Asked (a Deferred of a bool) before a restart after an exit:
        # etcd stops by itself once it learns it was removed from the
        # cluster, and would stop again at each restart.
        self.may_restart = None

    def args(self):
        cluster = ",".join("%s=%s" % (n, u)
                           for n, u in sorted(self.initial_cluster.items()))
        return [self.binary,
                "--name", self.name,
                "--data-dir", self.data_dir,
                "--listen-client-urls", self.client_url,
                "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", cluster,
                "--initial-cluster-state", self.cluster_state,
                "--initial-cluster-token", self.cluster_token,
                "--logger", "zap", "--log-outputs", "stderr",
                "--experimental-watch-progress-notify-interval",
                "%gs" % PROGRESS_NOTIFY_INTERVAL,
                ] + self.extra_args

    @property
    def pid(self):
        return self._process.transport.pid if self._process else None

    def startService(self):
        service.Service.startService(self)
        self._spawn()

    def _spawn(self):
        self._restart_call = None
        os.makedirs(os.path.dirname(self.data_dir) or ".", exist_ok=True)
        self._process = _EtcdProcess(self)
        self.starts += 1
        self._started_at = self.reactor.seconds()
        args = self.args()
        log.info("etcd member {name}: starting ({client}, peers {peer})",
                 name=self.name, client=self.client_url, peer=self.peer_url)
        self.reactor.spawnProcess(self._process, args[0], args,
                                  env=dict(os.environ),
                                  childFDs={0: "w", 1: "r", 2: "r"})

    def log_line(self, line):
        level, text = LogLevel.debug, line.decode("utf-8", "replace")
        if line.startswith(b"{"):
            try:
                record = loads(line)
                level = _LEVELS.get(record.get("level"), LogLevel.debug)
                text = _described(record, text)
            except ValueError:
                pass
        log.emit(level, "etcd {name}: {text}", name=self.name, text=text)

    def process_ended(self, process, reason):
        if process is not self._process:
            return
        self._process = None
        if not self.running:
            return
        if self.reactor.seconds() - self._started_at > STABLE_RUN:
            self._delay = self.restart_delay   # it had been running well
        if self.may_restart is None:
            self._restart_later(reason)
            return
        d = defer.maybeDeferred(self.may_restart)
        d.addErrback(lambda f: log.failure(
            "etcd member {name}: the restart check", f, name=self.name)
            or True)
        d.addCallback(lambda again: again and self.running and
                      self._process is None and self._restart_call is None
                      and self._restart_later(reason))

    def _restart_later(self, reason):
        log.warn("etcd member {name} exited ({why}); restarting in "
                 "{delay:.1f} s", name=self.name, why=reason.value,
                 delay=self._delay)
        self._restart_call = self.reactor.callLater(self._delay, self._spawn)
        self._delay = min(self._delay * 2, self.max_restart_delay)

    def stopService(self):
        service.Service.stopService(self)
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        self._restart_call = None
        process = self._process
        if process is None:
            return defer.succeed(None)
        self._signal(process, "TERM")
        kill = self.reactor.callLater(self.stop_timeout, self._signal,
                                      process, "KILL")

        def ended(_):
            if kill.active():
                kill.cancel()
        return process.ended.addCallback(ended)

    def _signal(self, process, name):
        try:
            process.transport.signalProcess(name)
        except net_error.ProcessExitedAlready:
            pass

    def kill(self):
        """SIGKILL the process now (tests: a crash); it is restarted."""
        if self._process is not None:
            self._signal(self._process, "KILL")

    @defer.inlineCallbacks
    def ready(self, timeout=30.0, interval=0.1):
        """Fires with this member's Status once it serves with a leader
        known; EtcdTimeout after timeout seconds."""
        client = EtcdClient([self.client_url], self.reactor,
                            timeout=max(min(timeout, 2.0), 0.1))
        deadline = self.reactor.seconds() + timeout
        try:
            while True:
                try:
                    status = yield client.status()
                    if status.leader:
                        return status
                except errors.EtcdError as e:
                    log.debug("etcd member {name}: not ready ({error})",
                              name=self.name, error=e)
                if self.reactor.seconds() >= deadline:
                    raise errors.EtcdTimeout(
                        "etcd member %s not ready in %.0f s"
                        % (self.name, timeout))
                yield task.deferLater(self.reactor, interval, lambda: None)
        finally:
            yield client.close()


@defer.inlineCallbacks
def add_member(client, name, data_dir, host, client_port=CLIENT_PORT,
               peer_port=PEER_PORT, parent=None, learner=True, timeout=60.0,
               **options):
    """Add a member to the running cluster that client reaches and start
    it: member add (as a learner unless learner=False), an EtcdMember with
    initial-cluster-state existing, wait until it serves, then promote it
    to a voter once it has caught up.  Returns the started EtcdMember
    (attached to the ``parent`` MultiService when given)."""
    scheme = options.pop("scheme", "http")
    peer = url(scheme, host, peer_port)
    new, members = yield retry_unhealthy(
        client, timeout, lambda: client.member_add([peer], learner=learner))
    cluster = {m.name: m.peer_urls[0] for m in members
               if m.id != new.id and m.name and m.peer_urls}
    cluster[name] = peer
    member = EtcdMember(name, data_dir, host, client_port, peer_port,
                        initial_cluster=cluster, cluster_state="existing",
                        scheme=scheme, reactor=client.reactor, **options)
    if parent is not None:
        member.setServiceParent(parent)
    else:
        member.startService()
    member.member_id = new.id
    yield member.ready(timeout)
    if learner:
        yield promote_member(client, new.id, timeout)
    return member


def promote_member(client, member_id, timeout):
    # Refused ("...learner member which is in sync with leader") until the
    # learner has caught up.
    return retry_unhealthy(client, timeout,
                            lambda: client.member_promote(member_id),
                            ("in sync",))


# etcd refuses a reconfiguration while any voting member has not been
# connected for its last 5 s ("unhealthy cluster"), as after a restart.
NOT_YET = ("unhealthy cluster", "not enough started members")


@defer.inlineCallbacks
def retry_unhealthy(client, timeout, request, not_yet=NOT_YET):
    deadline = client.reactor.seconds() + timeout
    while True:
        try:
            return (yield request())
        except errors.EtcdRequestError as e:
            if not any(m in str(e) for m in not_yet) or \
                    client.reactor.seconds() >= deadline:
                raise
            log.debug("etcd: {error}; trying again", error=e)
        yield task.deferLater(client.reactor, 0.25, lambda: None)


@defer.inlineCallbacks
def remove_member(client, member):
    """Remove a member (an EtcdMember, or a member id) from the cluster,
    then stop its service; its data dir is useless afterwards (a removed
    member cannot come back with it) and is deleted."""
    if isinstance(member, EtcdMember):
        member_id = getattr(member, "member_id", None)
        if member_id is None:
            member_id = (yield client.status(member.client_url)).member_id
        yield retry_unhealthy(client, 60.0,
                              lambda: client.member_remove(member_id))
        if member.parent is not None:
            yield member.disownServiceParent()
        elif member.running:
            yield member.stopService()
        yield threads.deferToThread(shutil.rmtree, member.data_dir,
                                    ignore_errors=True)
    else:
        yield retry_unhealthy(client, 60.0,
                              lambda: client.member_remove(member))
