"""
Events: event.from, and the legacy event.register/next queue.

event.from is state based, as in XAPI: a reply is computed from the row
generations of the database (created/modified) and its tombstones, so a
client with an old token gets the net changes, one event per object with
its latest snapshot.  The hub only remembers who is waiting:

* a blocked call sits in an index keyed by what it watches ("*", a
  lower-case class, or a class and ref); a change wakes only the calls of
  the matching keys, and it wakes each key's whole set at once (the set
  is handed to the pending list and the key emptied), so a burst of writes
  costs one wake per call, not one per write and call;
* woken calls are collected together after one batching delay (one timer
  for all of them), and a call computes its batch only then; the calls of
  one collection that share a token position and a subscription share one
  reply, which the RPC endpoints encode once for all of them
  (txxapi.wire.shared);
* a call whose token is already current is watched at once, without a
  first collection; the timeouts of blocked calls share one timer per
  DEADLINE_SLOT (a call may answer up to that much after its timeout);
* a blocked call holds its caller's reply (txxapi.replies), answered
  straight from the flush: no Deferred per watcher; a caller whose
  client goes away cancels it, which frees the watcher;
* every wait is on reactor timers: no threads.

event.next keeps, per registered session, a bounded queue of change
events taken when the change happened; overflowing it loses events and
the next call says EVENTS_LOST.

Metrics objects (host_metrics, VM_metrics, PIF_metrics...) are ordinary
event classes, as upstream.  Upstream keeps them from flooding watchers
at the writers, not in the event code: a database write of an unchanged
value is a no-op (no generation, no event), and the monitoring loop
writes a metrics field only when its value differs from the last one it
wrote.  ``update_changed`` below is that writer-side rule for our
updaters; event.from's per-object coalescing and batching delay bound
what remains.
"""

import hashlib
import json
import math
from collections import deque

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txxapi.errors import XenAPIError
from txxapi.interfaces import IEvents
from txxapi.replies import ANSWERED, DeferredReply
from txxapi.values import Int32
from txxapi.wire import shared

FROM_DELAY = 0.05          # s before the first collection, and between
FROM_TASK_DELAY = 0.0      # before the first one when only tasks are watched
NEXT_DELAY = 0.2           # event.next: before the first collection
NEXT_BETWEEN = 0.05
DEFAULT_TIMEOUT = 86400.0  # when the timeout is not a usable number
NEXT_QUEUE_BYTES = 10000000  # per registered session, serialized size
INT64_MAX = (1 << 63) - 1
WATCHED_CACHE = 1024       # distinct class lists remembered
DEADLINE_SLOT = 0.01       # s: timeouts due within one share a timer

MESSAGE = "message"

log = Logger()


def format_token(generation, message_generation=0):
    return "%020d,%020d" % (generation, message_generation)


_last_token = ["", (0, 0)]   # watchers woken together re-enter with one


def parse_token(token):
    """(db generation, message generation) of an event.from token."""
    if token == _last_token[0]:
        return _last_token[1]
    parsed = _parse_token(token)
    _last_token[:] = [token, parsed]
    return parsed


def _parse_token(token):
    if token == "":
        return 0, 0
    parts = token.split(",")
    if len(parts) != 2:
        raise XenAPIError("EVENT_FROM_TOKEN_PARSE_FAILURE", token)
    values = []
    for part in parts:
        digits = part[1:] if part[:1] == "-" else part
        if not digits.isdigit() or not digits.isascii():
            raise XenAPIError("EVENT_FROM_TOKEN_PARSE_FAILURE", token)
        value = int(part)
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise XenAPIError("EVENT_FROM_TOKEN_PARSE_FAILURE", token)
        values.append(max(value, 0))
    return values[0], values[1]


def parse_subscription(item):
    """("*",), ("class", lower) or ("object", lower, ref)."""
    if item == "*":
        return ("*",)
    cls, sep, ref = item.partition("/")
    # XAPI accepts any text here; items that can never match anything
    # are refused so that client bugs show.
    if not cls or (sep and not ref):
        raise XenAPIError("EVENT_SUBSCRIPTION_PARSE_FAILURE", item)
    if sep:
        return ("object", cls.lower(), ref)
    return ("class", cls.lower())


class Subscription:
    """A parsed set of subscription items, matched by lower-case class."""

    __slots__ = ("items", "all", "classes", "objects", "task_only", "key")

    def __init__(self, items):
        self.items = list(items)
        self.key = frozenset(self.items)
        self.all = False
        self.classes = set()
        self.objects = {}  # lower class -> set of refs
        for item in self.items:
            if item[0] == "*":
                self.all = True
            elif item[0] == "class":
                self.classes.add(item[1])
            else:
                self.objects.setdefault(item[1], set()).add(item[2])
        self.task_only = all(i[0] != "*" and i[1] == "task"
                             for i in self.items)

    @classmethod
    def parse(cls, items):
        return cls([parse_subscription(i) for i in items])

    def table_matches(self, lower):
        return self.all or lower in self.classes or lower in self.objects

    def object_matches(self, lower, ref):
        if self.all or lower in self.classes:
            return True
        refs = self.objects.get(lower)
        return refs is not None and ref in refs

    def keys(self):
        """The wake-up index keys: None for "*", a class, (class, ref)."""
        if self.all:
            return [None]
        keys = list(self.classes)
        for lower, refs in self.objects.items():
            if lower not in self.classes:
                keys.extend((lower, r) for r in refs)
        return keys


def update_changed(db, table, ref, changes):
    """Write only the fields whose value differs; nothing at all (no
    generation, no event) if none does.  For periodic updaters of
    metrics objects.  Returns the fields written."""
    current = db.fields(table, ref)
    changed = {k: v for k, v in changes.items() if current.get(k) != v}
    if changed:
        db.update(table, ref, changed)
    return changed


def trackid(session):
    return "trackid=" + hashlib.md5(session.encode("utf-8")).hexdigest()


def _fail_later(d, error):
    if not d.called:
        d.errback(Failure(error))


class _Deadlines:
    """The timeouts of blocked calls, one reactor timer per slot of
    DEADLINE_SLOT: watchers that re-enter together with one timeout cost
    one timer, and a call answered early leaves its slot at once (a
    cancelled timer of its own would stay in the reactor's queue)."""

    def __init__(self, clock):
        self.clock = clock
        self.slots = {}   # slot number -> (timer, set of calls)

    def add(self, call, timeout):
        now = self.clock.seconds()
        slot = math.ceil((now + timeout) / DEADLINE_SLOT)
        entry = self.slots.get(slot)
        if entry is None:
            timer = self.clock.callLater(
                max(0.0, slot * DEADLINE_SLOT - now), self._fire, slot)
            entry = self.slots[slot] = (timer, set())
        entry[1].add(call)
        return slot

    def remove(self, call, slot):
        entry = self.slots.get(slot)
        if entry is None:
            return
        calls = entry[1]
        calls.discard(call)
        if not calls:
            del self.slots[slot]
            if entry[0].active():
                entry[0].cancel()

    def _fire(self, slot):
        _timer, calls = self.slots.pop(slot, (None, ()))
        for call in list(calls):
            call.deadline = None
            if not call.done:
                call.expire()

    def clear(self):
        for timer, _calls in self.slots.values():
            if timer.active():
                timer.cancel()
        self.slots = {}


def _finite_timeout(timeout):
    try:
        timeout = float(timeout)
    except (TypeError, ValueError):
        return DEFAULT_TIMEOUT
    if math.isnan(timeout) or math.isinf(timeout) or timeout < 0:
        return DEFAULT_TIMEOUT
    return timeout


class _FromCall:
    """One event.from call: from its start to its answer."""

    __slots__ = ("hub", "session", "subs", "tables", "keys", "since",
                 "msg_since", "reply", "timer", "deadline", "expired",
                 "watching", "done")

    def __init__(self, hub, session, watched, since, msg_since, reply):
        self.hub = hub
        self.session = session
        self.subs, self.tables, self.keys = watched
        self.since = since
        self.msg_since = msg_since
        self.reply = reply
        reply.cancel = self.cancel   # the caller's client went away
        self.timer = None      # the pending collection, if any
        self.deadline = None   # the timeout's slot (EventHub._deadlines)
        self.expired = False
        self.watching = False
        self.done = False

    def collect(self):
        self.timer = None
        if self.done:
            return
        hub = self.hub
        try:
            result, gen, msg_gen = hub.collect(self)
        except Exception:
            # This call's answer only; the others woken with it go on.
            self.fail(Failure())
            return
        if result["events"] or self.expired:
            self.finish(result)
            return
        # Nothing to report up to ``gen``: wait for what comes after.  A
        # wake empties only the keys that fired, so re-enter all of them.
        self.since = gen
        self.msg_since = msg_gen
        hub.watch(self)

    def expire(self):
        self.expired = True
        if self.timer is None:
            self.collect()

    def finish(self, result):
        self.close()
        try:
            self.reply.ok(result)
        except Exception:
            # One caller's trouble writing its answer: the others woken
            # with it are still answered.
            log.failure("answering event.from")

    def fail(self, failure):
        self.close()
        self.reply.fail(failure)

    def close(self):
        self.done = True
        self.reply.cancel = None   # nothing left to free; and no cycle
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if self.deadline is not None:
            self.hub._deadlines.remove(self, self.deadline)
            self.deadline = None
        self.hub.forget(self)

    def cancel(self):
        if not self.done:
            self.close()


class _Registration:
    """event.register's state for one session."""

    __slots__ = ("session", "items", "subs", "queue", "size", "lost",
                 "calls")

    def __init__(self, session):
        self.session = session
        self.items = []
        self.subs = Subscription([])
        self.queue = deque()   # (size, event)
        self.size = 0
        self.lost = False
        self.calls = []        # blocked event.next calls


class _NextCall:
    __slots__ = ("reg", "d", "timer", "waiting", "done")

    def __init__(self, reg):
        self.reg = reg
        self.d = None
        self.timer = None
        self.waiting = False
        self.done = False


@implementer(IEvents)
class EventHub:
    def __init__(self, db, clock):
        self.reactor = clock
        self.db = db
        model = self.db.model
        # lower-case class -> table, for the tables that generate events
        self.event_tables = {name.lower(): name
                             for name, t in self.db.tables.items()
                             if t.cls.events}
        self.lower = {name: name.lower() for name in self.db.tables}
        self._model = model
        # Blocked event.from calls, by what wakes them.
        self._watch_all = set()
        self._watch = {}       # lower class or (lower class, ref) -> set
        self._by_session = {}  # session -> its event.from calls
        self._pending = []     # sets of woken calls, collected together
        self._flush_timer = None
        self._replies = None   # while flushing: window -> reply
        self._deadlines = _Deadlines(clock)
        # Class lists -> (Subscription, tables, wake-up keys): watchers
        # re-enter with the same list, over and over.
        self._watched = {}
        self._log_floor = 0
        # Per-generation caches shared by the calls woken together.
        self._cache_gen = -1
        self._snapshots = {}
        self._counts = None
        # event.next
        self._registrations = {}
        self._next_id = 0
        # Messages live outside the database; their store plugs in here:
        # message_source(since) -> (generation, [(op, ref, record)]), and
        # message_generation() -> its generation, without the changes.
        self.message_source = None
        self.message_generation = None

    # -- lifetime -------------------------------------------------------------

    def start(self):
        # The database's change log starts empty at every start: tokens
        # from before must be answered by a scan, not from the log.
        self._log_floor = self.db.generation
        if self._changed not in self.db.listeners:
            self.db.listeners.append(self._changed)

    def stop(self):
        if self._changed in self.db.listeners:
            self.db.listeners.remove(self._changed)
        if self._flush_timer is not None and self._flush_timer.active():
            self._flush_timer.cancel()
        self._flush_timer = None
        self._deadlines.clear()
        calls = set(self._watch_all)
        for s in self._watch.values():
            calls.update(s)
        for s in self._by_session.values():
            calls.update(s)
        for call in calls:
            if not call.done:
                call.close()
        for reg in self._registrations.values():
            for call in list(reg.calls):
                self._next_close(call)
        self._pending = []

    # -- the change feed ------------------------------------------------------

    def _changed(self, record, cls):
        _gen, op, table, ref, _fields = record
        if table == "session" and op == "del":
            self._session_gone(ref)
        if not cls.events:
            return
        lower = self.lower[table]
        self._wake(lower, ref)
        if self._registrations:
            self._queue_next(lower, ref, "mod" if op == "touch" else op)

    def message_changed(self, op, ref, record=None):
        """Called by the message store after it adds or removes one."""
        self._wake(MESSAGE, ref)
        if self._registrations:
            self._queue_next(MESSAGE, ref, op, record)

    def _wake(self, lower, ref):
        woken = False
        if self._watch_all:
            self._pending.append(self._watch_all)
            self._watch_all = set()
            woken = True
        watch = self._watch
        if watch:
            for key in (lower, (lower, ref)):
                s = watch.pop(key, None)
                if s:
                    self._pending.append(s)
                    woken = True
        if woken and self._flush_timer is None:
            self._flush_timer = self.reactor.callLater(FROM_DELAY,
                                                       self._flush)

    def _flush(self):
        self._flush_timer = None
        pending, self._pending = self._pending, []
        seen = set()
        # Calls woken together at one token position with one
        # subscription get one reply, encoded once for all of them.
        self._replies = {}
        try:
            with shared.sharing():
                for calls in pending:
                    for call in calls:
                        if call.done or call in seen:
                            continue
                        seen.add(call)
                        call.collect()
        finally:
            self._replies = None

    def _session_gone(self, session):
        calls = self._by_session.pop(session, ())
        reg = self._registrations.pop(session, None)
        if reg is not None:
            calls = set(calls)
            calls.update(reg.calls)
        if not calls:
            return
        error = XenAPIError("SESSION_INVALID", session)
        for call in list(calls):
            if call.done:
                continue
            # Not from inside the database write that announced it.
            if isinstance(call, _FromCall):
                call.close()
                self.reactor.callLater(0, call.reply.fail, Failure(error))
            else:
                self._next_close(call)
                self.reactor.callLater(0, _fail_later, call.d, error)

    # -- event.from -----------------------------------------------------------

    def tables_for(self, subs):
        return [(lower, table) for lower, table in self.event_tables.items()
                if subs.table_matches(lower)]

    def watched(self, classes):
        """(Subscription, tables, wake-up keys) of a list of classes."""
        key = tuple(classes)
        found = self._watched.get(key)
        if found is None:
            subs = Subscription.parse(classes)
            found = (subs, self.tables_for(subs), subs.keys())
            if len(self._watched) >= WATCHED_CACHE:
                self._watched.clear()
            self._watched[key] = found
        return found

    def event_from(self, session, classes, token, timeout, reply=None):
        """A Deferred of the call's reply; given a ``reply``, that is
        answered instead, and ANSWERED returned."""
        if reply is None:
            reply = DeferredReply()
            self._event_from(session, classes, token, timeout, reply)
            return reply.d
        self._event_from(session, classes, token, timeout, reply)
        return ANSWERED

    def _event_from(self, session, classes, token, timeout, reply):
        watched = self.watched(classes)
        subs = watched[0]
        since, msg_since = parse_token(token)
        call = _FromCall(self, session, watched, since, msg_since, reply)
        self._by_session.setdefault(session, set()).add(call)
        delay = FROM_TASK_DELAY if subs.task_only else FROM_DELAY
        timeout = _finite_timeout(timeout)
        if timeout >= delay and self._current(call):
            # Nothing can be news yet: a change wakes it (and the batching
            # delay runs from there), as after an empty first collection.
            self.watch(call)
        else:
            call.timer = self.reactor.callLater(delay, call.collect)
        call.deadline = self._deadlines.add(call, timeout)

    def _current(self, call):
        """Whether a call's token is at the present generation(s)."""
        if call.since != self.db.generation:
            return False
        if not call.subs.table_matches(MESSAGE) or \
                self.message_source is None:
            return True
        try:
            if self.message_generation is not None:
                return call.msg_since == self.message_generation()
            return call.msg_since == self.message_source(call.msg_since)[0]
        except Exception:
            return False   # the collection answers the failure

    def watch(self, call):
        call.watching = True
        for key in call.keys:
            if key is None:
                self._watch_all.add(call)
            else:
                self._watch.setdefault(key, set()).add(call)

    def forget(self, call):
        if call.watching:
            call.watching = False
            self._watch_all.discard(call)
            for key in call.keys:
                s = self._watch.get(key)
                if s is not None:
                    s.discard(call)
                    if not s:
                        del self._watch[key]
        calls = self._by_session.get(call.session)
        if calls is not None:
            calls.discard(call)
            if not calls:
                del self._by_session[call.session]

    def collect(self, call):
        """(reply, db generation, message generation) for a call's window."""
        replies = self._replies
        if replies is None:
            return self._collect(call)
        key = (call.since, call.msg_since, call.subs.key)
        found = replies.get(key)
        if found is None:
            found = replies[key] = self._collect(call)
            shared.share(found[0])
        return found

    def _collect(self, call):
        db = self.db
        gen = db.generation
        if gen != self._cache_gen:
            self._cache_gen = gen
            self._snapshots = {}
            self._counts = None
        since, subs = call.since, call.subs
        found = self._changed_objects(call, since, gen)
        events = []
        snapshots = self._snapshots
        for (table, ref), (op, ident) in found.items():
            event = {"id": str(ident), "timestamp": "0.0",
                     "class": self.lower[table], "operation": op,
                     "ref": ref}
            if op != "del":
                snap = snapshots.get((table, ref))
                if snap is None:
                    if ref not in db.tables[table].rows:
                        continue
                    snap = snapshots[(table, ref)] = db.record(table, ref)
                event["snapshot"] = snap
            events.append((ident, event))
        events.sort(key=lambda e: e[0])
        events = [e for _, e in events]
        msg_gen = 0
        if subs.table_matches(MESSAGE) and self.message_source is not None:
            msg_gen, messages = self.message_source(call.msg_since)
            for op, ref, record in messages:
                event = {"id": "0", "timestamp": "0.0", "class": MESSAGE,
                         "operation": op, "ref": ref}
                if op != "del":
                    event["snapshot"] = record
                events.append(event)
        if self._counts is None:
            self._counts = {self.lower[name]: Int32(len(t.rows))
                            for name, t in db.tables.items()}
        reply = {"events": events, "valid_ref_counts": self._counts,
                 "token": format_token(gen, msg_gen)}
        return reply, gen, msg_gen

    def _changed_objects(self, call, since, gen):
        """{(table, ref): (op, generation)} of the call's objects changed
        after ``since``."""
        found = {}
        if since >= gen:
            return found
        db = self.db
        subs = call.subs
        wanted = {table: lower for lower, table in call.tables}
        whole = [t for t, lower in wanted.items()
                 if subs.all or lower in subs.classes]
        changes = None
        if since >= self._log_floor and since > 0:
            # Read the log only when it is shorter than a scan would be.
            cost = sum(len(db.tables[t].rows) for t in whole)
            cost += sum(len(r) for r in subs.objects.values())
            if whole:
                cost += len(db.tombstones)
            if gen - since <= cost + 64:
                changes = db.changes_since(since)
        if changes is None:
            changes = self._scan(call, since, wanted, whole)
        tables = db.tables
        tombstones = db.tombstones
        for table, ref in changes:
            lower = wanted.get(table)
            if lower is None or not subs.object_matches(lower, ref):
                continue
            row = tables[table].rows.get(ref)
            if row is not None:
                if row.ctime > since:
                    found[(table, ref)] = ("add", row.ctime)
                elif row.mtime > since:
                    found[(table, ref)] = ("mod", row.mtime)
            else:
                tomb = tombstones.get((table, ref))
                # Objects born and gone within the window are not news.
                if tomb is not None and tomb[0] > since >= tomb[1]:
                    found[(table, ref)] = ("del", tomb[0])
        return found

    def _scan(self, call, since, wanted, whole):
        """(table, ref) candidates from row generations and tombstones,
        when the change log cannot answer."""
        db = self.db
        out = []
        for table in whole:
            rows = db.tables[table].rows
            out.extend((table, ref) for ref, row in rows.items()
                       if row.mtime > since)
        if whole and since > 0:
            whole_set = set(whole)
            out.extend(key for key, (deleted, _c) in db.tombstones.items()
                       if deleted > since and key[0] in whole_set)
        for table, lower in wanted.items():
            if table not in whole:
                for ref in call.subs.objects.get(lower, ()):
                    out.append((table, ref))
        return out

    # -- event.inject / get_current_id ----------------------------------------

    def inject(self, cls, ref):
        c = self._model.class_by_lower(cls)
        if c is None or not c.in_db or not self.db.exists(c.name, ref):
            raise XenAPIError("HANDLE_INVALID", cls, ref)
        gen = self.db.touch(c.name, ref)
        # One below the touch: a later event.from token compares greater.
        return format_token(gen - 1, 0)

    def get_current_id(self):
        return self._next_id

    # -- legacy event.register / event.next -----------------------------------

    def register(self, session, classes):
        items = [parse_subscription(c) for c in classes]
        reg = self._registration(session)
        reg.items = items + reg.items
        reg.subs = Subscription(reg.items)

    def unregister(self, session, classes):
        items = [parse_subscription(c) for c in classes]
        reg = self._registration(session)
        reg.items = [i for i in reg.items if i not in items]
        reg.subs = Subscription(reg.items)

    def _registration(self, session):
        reg = self._registrations.get(session)
        if reg is None:
            reg = self._registrations[session] = _Registration(session)
        return reg

    def next(self, session):
        reg = self._registrations.get(session)
        if reg is None:
            raise XenAPIError("SESSION_NOT_REGISTERED", trackid(session))
        call = _NextCall(reg)
        call.d = defer.Deferred(lambda _d: self._next_close(call))
        reg.calls.append(call)
        call.timer = self.reactor.callLater(NEXT_DELAY, self._next_collect,
                                            call)
        return call.d

    def _next_collect(self, call):
        call.timer = None
        if call.done:
            return
        reg = call.reg
        if reg.lost:
            reg.lost = False
            reg.queue.clear()
            reg.size = 0
            self._next_close(call)
            call.d.errback(Failure(XenAPIError("EVENTS_LOST")))
            return
        if reg.queue:
            subs = reg.subs
            events = [ev for _size, ev in reg.queue
                      if subs.object_matches(ev["class"], ev["ref"])]
            reg.queue.clear()
            reg.size = 0
            if events:
                self._next_close(call)
                call.d.callback(events)
                return
        call.waiting = True

    def _next_close(self, call):
        call.done = True
        call.waiting = False
        if call.timer is not None and call.timer.active():
            call.timer.cancel()
        call.timer = None
        if call in call.reg.calls:
            call.reg.calls.remove(call)

    def _queue_next(self, lower, ref, op, snapshot=None):
        regs = [r for r in self._registrations.values()
                if r.subs.object_matches(lower, ref)]
        if not regs:
            return
        event = {"id": str(self._next_id),
                 "timestamp": "%d." % int(self.reactor.seconds()),
                 "class": lower, "operation": op, "ref": ref}
        self._next_id += 1
        if op != "del":
            if snapshot is None and lower != MESSAGE:
                table = self.event_tables[lower]
                snapshot = self.db.record(table, ref)
            event["snapshot"] = snapshot
        size = len(json.dumps(event, default=str, separators=(",", ":")))
        for reg in regs:
            reg.queue.append((size, event))
            reg.size += size
            while reg.size > NEXT_QUEUE_BYTES and reg.queue:
                dropped, _ev = reg.queue.popleft()
                reg.size -= dropped
                reg.lost = True
            for call in reg.calls:
                if call.waiting:
                    call.waiting = False
                    call.timer = self.reactor.callLater(
                        NEXT_BETWEEN, self._next_collect, call)
