"""
One ``xe`` command on a connection taken over from the web server, run as
XAPI's CLI handler runs it: banner both ways, the command looked up and
its required parameters checked, a session logged in (or the
``session_id=`` first line's used), the command run through ordinary API
calls as that session, its output printed, ``Exit``.  On a slave the
master runs it, if it came in on the local socket (txxapi.cli.forward),
except the emergency commands, which run where they were sent as a local
session of that host.
Every failure is turned into the text XAPI's CLI prints, then ``Exit 1``.
"""

from twisted.internet import defer, protocol
from twisted.logger import Logger

from txxapi.cli import protocol as P
from txxapi.cli.errors import error_lines
from txxapi.cli.forward import forward
from txxapi.cli.progress import TaskBar
from txxapi.cli.records import (
    CliFailure, Failure, MissingParameter, View, parse_bool)
from txxapi.errors import XenAPIError
from txxapi.wire.xmlrpc import decode_value

log = Logger()

API_VERSION = "1.0"
POST_CLI = "http/post_cli"
# Parameters every command accepts; never filters.
STANDARD = ("server", "password", "port", "username", "minimal", "force",
            "multiple", "all", "message-priority", "trace")
# Longest a wait for a task's change lasts before it is asked again.
TASK_WAIT = 30.0
# Largest file a command reads off the client (device-config:k-filename=).
MAX_CLIENT_FILE = 1 << 20


class ParseError(Exception):
    """The command line does not parse."""


class UnknownCommand(Exception):
    """No command has this name."""


class ParamNotFound(Exception):
    """A required parameter is missing."""


class ExitWithError(Exception):
    """End with this exit code (``args[0]``), the reason printed already."""

    @property
    def code(self):
        return self.args[0]


class MultipleFailure(Exception):
    """Failures of a --multiple operation: ``args[0]``, (uuid, text)
    each."""


class Gone(Exception):
    """The client went away."""


def parse_body(body):
    """(session or None, argument lines) of a request body: one argument
    a line, a trailing CR dropped."""
    lines = [line[:-1] if line.endswith("\r") else line
             for line in body.split("\n")]
    if lines and lines[0].startswith("session_id="):
        return lines[0][len("session_id="):], lines[1:]
    return None, lines


_SWITCHES = {"--force": "force", "--live": "live", "--internal": "internal",
             "-u": "username", "-pw": "password", "-s": "server",
             "-h": "server", "-p": "port", "--debug": "debug",
             "--minimal": "minimal", "--all": "all"}


def parse_command_line(args):
    """(command name, [(key, value)]) as XAPI parses them."""
    if not args or "=" in args[0]:
        raise ParseError("")
    name, rest, params = args[0], list(args[1:]), []
    while rest:
        p = rest.pop(0)
        if p.startswith("--"):
            params.append((p[2:], "true"))
        elif p.startswith("-"):
            if not rest or p not in _SWITCHES:
                raise ParseError("")
            params.append((_SWITCHES[p], rest.pop(0)))
        else:
            key, _, value = p.partition("=")
            params.append((key, value))
    return name, params


class Params:
    """A command's parameters: looked up by key (the first wins, as
    List.assoc does), and in order for filters."""

    def __init__(self, items):
        self.items = items
        self.first = {}
        for k, v in items:
            self.first.setdefault(k, v)

    def __contains__(self, key):
        return key in self.first

    def get(self, key, default=None):
        return self.first.get(key, default)

    def __getitem__(self, key):
        try:
            return self.first[key]
        except KeyError:
            raise ParamNotFound(key)

    def flag(self, key, default=False):
        """A boolean parameter, as XAPI's CLI reads one (``default`` when
        it is not given)."""
        if key not in self.first:
            return default
        return parse_bool(key, self.first[key])


class Cli:
    """What a command implementation sees: its parameters, the API as
    its session, the printer and the client's side of the protocol."""

    def __init__(self, conn, params, session):
        self.conn = conn
        self.server = conn.server
        self.params = params
        self.session = session
        self.minimal = params.flag("minimal")
        self.view = View(conn.server.db)
        self._minimal = []

    def call(self, name, *args):
        return self.server.dispatcher.call(
            name, [self.session] + list(args), self.conn.origin)

    # -- printing -----------------------------------------------------------

    def message(self, text):
        self.conn.send(P.print_(text))

    def stderr(self, text):
        self.conn.send(P.print_stderr(text + "\n"))

    def table(self, records):
        """Records, each a list of (key, value): blocks, or under
        --minimal the first value of each."""
        if self.minimal:
            if records and records[0]:
                self._minimal.insert(0, ",".join(
                    escape_commas(r[0][1]) for r in records))
            return
        for r in records:
            self.conn.send(P.print_(record_block(r) + "\n"))

    def lines(self, values):
        if self.minimal:
            self._minimal.insert(0, ",".join(escape_commas(v)
                                             for v in values))
            return
        for v in values:
            self.conn.send(P.print_(v))

    def flush(self):
        if self.minimal:
            self.conn.send(P.print_(",".join(self._minimal)))

    # -- the client ---------------------------------------------------------

    @defer.inlineCallbacks
    def response(self):
        """The client's answer to a command, its heartbeats skipped."""
        while True:
            msg = yield self.conn.read_message()
            if msg[0] == P.RESPONSE and msg[1] == P.WAIT:
                continue
            if msg[0] != P.RESPONSE:
                raise P.ProtocolError("expected a response")
            return msg[1]

    @defer.inlineCallbacks
    def _blob(self):
        """The chunks the client sends, up to the end of the blob."""
        data = b""
        while True:
            msg = yield self.conn.read_message()
            if msg[:2] == (P.BLOB, P.END):
                return data
            if msg[:2] != (P.BLOB, P.CHUNK):
                raise P.ProtocolError("expected a blob")
            if len(data) + msg[2] > MAX_CLIENT_FILE:
                raise Failure("File too large")
            data += yield self.conn.read(msg[2])

    @defer.inlineCallbacks
    def prompt(self):
        self.conn.send(P.prompt())
        text = yield self._blob()
        return text.decode("utf-8", "replace")

    @defer.inlineCallbacks
    def says_yes(self):
        """Ask for 'yes', as XAPI's CLI asks before destroying things."""
        self.message("Type 'yes' to continue")
        answer = yield self.prompt()
        if answer.strip().lower() == "yes":
            return True
        self.message("Aborted (you typed: '%s')" % answer)
        return False

    @defer.inlineCallbacks
    def load(self, filename):
        """A file of the client's (Load), or None if it cannot read it."""
        self.conn.send(P.load(filename))
        answer = yield self.response()
        if answer != P.OK:
            return None
        data = yield self._blob()
        return data.decode("utf-8", "replace")

    # -- tasks --------------------------------------------------------------

    @defer.inlineCallbacks
    def watch(self, cls, ref, until, timeout=None):
        """The record of ``ref`` (of class ``cls``) once ``until(record)``
        holds, followed through event.from on that object alone, whose
        first answer is its present record; None once ``timeout`` seconds
        (if given) have passed.  A client that goes away meanwhile: Gone;
        the object destroyed: HANDLE_INVALID."""
        clock = self.server.reactor.seconds
        deadline = None if timeout is None else clock() + timeout
        token = ""
        while True:
            wait = TASK_WAIT
            if deadline is not None:
                wait = min(wait, deadline - clock())
                if wait <= 0 and token:
                    return None
            watched = self.call("event.from", [cls.lower() + "/" + ref],
                                token, max(wait, 0.0))
            lost = self.conn.when_lost()
            # Whichever comes first (first_of, not defer.race, which on an
            # error of event.from would wait for the client to leave).
            first, value = yield first_of(watched, lost)
            if first is lost:
                raise Gone()
            self.conn.forget_lost(lost)
            token = value["token"]
            for event in value["events"]:
                if event["ref"] != ref:
                    continue
                if event["operation"] == "del":
                    raise XenAPIError("HANDLE_INVALID", cls, ref)
                if until(event["snapshot"]):
                    return event["snapshot"]

    @defer.inlineCallbacks
    def wait_task(self, task, bar=None):
        """The record of ``task`` once it has finished; ``bar`` (a
        TaskBar), if given, is drawn as it moves.  A client that goes
        away meanwhile (Ctrl-C) has the task cancelled."""
        def finished(record):
            done = record["status"] not in ("pending", "cancelling")
            if bar is not None:
                text = bar.text(record["progress"])
                if done:
                    text = bar.last()
                if text is not None:
                    self.conn.send(P.print_stderr(text))
            return done
        try:
            record = yield self.watch("task", task, finished)
        except Gone:
            yield self.call("task.cancel", task).addErrback(lambda f: None)
            raise
        return record

    @defer.inlineCallbacks
    def run_task(self, name, *args):
        """An Async call waited for: its result, or its error raised.  The
        task is destroyed, as XAPI's CLI waiter does."""
        task = yield self.call("Async." + name, *args)
        bar = None
        if "progress" in self.params or self.conn.terminal:
            bar = TaskBar(self.server.reactor.seconds)
        try:
            record = yield self.wait_task(task, bar)
        finally:
            yield self.call("task.destroy", task).addErrback(lambda f: None)
        if record["status"] == "success":
            return result_of(record["result"])
        if record["status"] == "cancelled":
            raise XenAPIError("TASK_CANCELLED", task)
        info = record["error_info"] or ["INTERNAL_ERROR", "unknown error"]
        raise XenAPIError(*info)


def first_of(*ds):
    """(the Deferred that fired first, its result); the others' results
    are dropped, an error of the first raised (defer.race differs there:
    it raises only once all have failed)."""
    out = defer.Deferred()

    def fired(value, d):
        if not out.called:
            out.callback((d, value))

    def failed(f, d):
        if not out.called:
            out.errback(f)
    for d in ds:
        d.addCallbacks(fired, failed, callbackArgs=(d,), errbackArgs=(d,))
    return out


def result_of(text):
    """A task's result: XAPI stores it as an XML-RPC value."""
    if not text:
        return text
    try:
        return decode_value(text)
    except Exception:
        return text


def escape_commas(text):
    return text.replace("\\", "\\\\").replace(",", "\\,")


def record_block(record):
    """XAPI's block: keys right-aligned to the longest plus four, but the
    first, which is padded on its right."""
    width = 4 + max([len(k) for k, _ in record] or [0])
    lines = []
    for i, (k, v) in enumerate(record):
        key = k.ljust(width) if i == 0 else k.rjust(width)
        lines.append("%s: %s" % (key, v))
    return "\n".join(lines) + "\n"


class CliConnection(protocol.Protocol):
    """The thin CLI protocol's server side on a taken-over connection."""

    release = None
    relay = None    # the master's connection, while it runs the command

    def __init__(self, server, body, origin, table, terminal=False):
        self.server = server
        self.body = body
        self.origin = origin
        self.table = table
        # The client draws on a terminal (txxapi.cli.resource): long
        # commands draw their task's progress.
        self.terminal = terminal
        self._buffer = bytearray()
        self._want = None   # (length, Deferred)
        self._gone = False
        self._lost = []

    # -- bytes --------------------------------------------------------------

    def connectionMade(self):
        self.send(P.BANNER)
        d = self._run()
        d.addErrback(self._crashed)

    def dataReceived(self, data):
        if self.relay is not None:
            self.relay.transport.write(data)
            return
        self._buffer += data
        self._satisfy()

    def connectionLost(self, reason=None):
        self._gone = True
        lost, self._lost = self._lost, []
        for d in lost:
            d.callback(None)
        if self.relay is not None:
            self.relay.transport.loseConnection()
        if self._want is not None:
            _, d = self._want
            self._want = None
            d.errback(Gone())
        if self.release is not None:
            release, self.release = self.release, None
            release()

    def when_lost(self):
        """A Deferred that fires once the client has gone."""
        d = defer.Deferred()
        if self._gone:
            d.callback(None)
        else:
            self._lost.append(d)
        return d

    def forget_lost(self, d):
        if d in self._lost:
            self._lost.remove(d)

    def send(self, data):
        if not self._gone:
            self.transport.write(data)

    def relay_to(self, master, early):
        """From now on the client speaks with ``master`` (txxapi.cli.forward);
        ``early`` is what the master sent after its banner."""
        self.relay, master.client = master, self
        if early:
            self.send(early)
        if self._buffer:
            master.transport.write(bytes(self._buffer))
            del self._buffer[:]

    def master_closed(self):
        self._close()

    def read(self, n):
        d = defer.Deferred()
        if self._gone:
            d.errback(Gone())
            return d
        self._want = (n, d)
        self._satisfy()
        return d

    def _satisfy(self):
        if self._want is None or len(self._buffer) < self._want[0]:
            return
        n, d = self._want
        self._want = None
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        d.callback(data)

    @defer.inlineCallbacks
    def read_message(self):
        head = yield self.read(4)
        length = int.from_bytes(head, "little", signed=True)
        if not 0 < length <= 1 << 16:
            raise P.ProtocolError("bad frame length")
        payload = yield self.read(length)
        return P.decode(payload)

    def _close(self):
        if not self._gone:
            self.transport.loseConnection()

    def _crashed(self, failure):
        if not failure.check(Gone):
            log.failure("CLI connection failed", failure)
        self._close()

    # -- the command --------------------------------------------------------

    @defer.inlineCallbacks
    def _run(self):
        banner = yield self.read(len(P.BANNER))
        try:
            major, _ = P.parse_banner(banner)
        except P.ProtocolError:
            major = None
        if major != P.MAJOR:
            self._close()
            return
        session, args = parse_body(self.body)
        params = None
        try:
            name, items = parse_command_line(args)
            params = Params(items)
            forwarded = yield self._execute(name, params, session, args)
            if forwarded:
                return      # the master has said everything, Exit too
            self.send(P.exit_(0))
        except Gone:
            return
        except ExitWithError as e:
            self.send(P.exit_(e.code))
        except Exception as e:
            self._report(e)
            self.send(P.exit_(1))
        self._close()

    @defer.inlineCallbacks
    def _execute(self, name, params, session, args):
        """Run the command; whether the master ran it instead."""
        command = self.table.get(name)
        if name == "help":
            cli = Cli(self, params, None)
            self.table.help(cli)
            cli.flush()
            return False
        if command is None:
            raise UnknownCommand(name)
        for key in command.reqd:
            params[key]
        if not self.server.identity.is_master and not command.local:
            if not (self.origin and self.origin.get("local")):
                self.server.identity.assert_master()
            yield forward(self, args)
            return True
        own = session is None
        if own:
            session = yield self._login(command, params)
        try:
            if not self.server.sessions.permissions.allows(session,
                                                           POST_CLI):
                raise XenAPIError("RBAC_PERMISSION_DENIED", POST_CLI,
                                  "No permission in user session")
            cli = Cli(self, params, session)
            yield command.run(cli)
            cli.flush()
        finally:
            if own:
                logout = "session.local_logout" if command.local \
                    else "session.logout"
                yield self.server.dispatcher.call(
                    logout, [session], self.origin).addErrback(
                        lambda f: None)
        return False

    def _login(self, command, params):
        user, password = params.get("username", ""), params.get("password",
                                                                 "")
        if command.local:
            return self.server.dispatcher.call(
                "session.slave_local_login_with_password", [user, password],
                self.origin)
        return self.server.dispatcher.call(
            "session.login_with_password", [user, password, API_VERSION,
                                            "cli"], self.origin)

    # -- failures as XAPI's CLI prints them ------------------------------------

    def _usage_error(self, head, text):
        self.send(P.print_stderr((head + ": " + text if head else text)
                                 + "\n"))
        self.send(P.print_stderr("For usage run: 'xe help'\n"))

    def _report(self, e):
        if isinstance(e, UnknownCommand):
            self._usage_error("Unknown command", str(e.args[0]))
        elif isinstance(e, ParseError):
            self._usage_error("Syntax error", "")
        elif isinstance(e, ParamNotFound):
            self._usage_error("Required parameter not found", e.args[0])
        elif isinstance(e, MultipleFailure):
            for uuid, text in e.args[0]:
                self.send(P.print_("operation failed on %s: %s"
                                   % (uuid, text)))
        elif isinstance(e, (CliFailure, Failure)):
            self.send(P.print_stderr("Error: %s\n" % e.args[0]))
        elif isinstance(e, XenAPIError):
            code, params = e.description[0], e.description[1:]
            if code == "SESSION_AUTHENTICATION_FAILED":
                if not params or params[0] == "":
                    self._usage_error("", "Username/password must be "
                                      "specified")
                else:
                    self._usage_error("", "Authentication failed")
                return
            self.server_error(code, params)
        elif isinstance(e, MissingParameter):
            self.server_error("Missing parameter", [e.args[0]])
        else:
            log.failure("CLI command failed")
            self.server_error("INTERNAL_ERROR", [str(e)])

    def server_error(self, code, params):
        view = View(self.server.db)
        params = [view.describe(str(p)) for p in params]
        lines = error_lines(code, params)
        if lines is None:
            self.send(P.error(code, params))
            return
        for line in lines:
            self.send(P.print_stderr(line + "\n"))
