"""
Messages (alerts): stored beside the database, as XAPI keeps them, with a
generation counter of their own that event.from's token carries in its
second half.

The store is a file of JSON lines, one per creation or deletion, appended
and fsync'd off the reactor before the call that made the change answers;
it is compacted when mostly deletions.  At most ``limit`` messages are
kept: the oldest go first.
"""

import json
import os

from twisted.internet import threads
from twisted.logger import Logger
from zope.interface import implementer

from txxapi.datamodel import MODEL
from txxapi.errors import XenAPIError
from txxapi.files import atomic_file
from txxapi.interfaces import IMessages
from txxapi.values import DateTime, new_ref, new_uuid

log = Logger()

LIMIT = 10000
DELETIONS_KEPT = 10000
# The table each message class's obj_uuid is looked up in.
CLASS_TABLES = {"VM": "VM", "Host": "host", "SR": "SR", "Pool": "pool",
                "VMPP": "VMPP", "VMSS": "VMSS", "PVS_proxy": "PVS_proxy",
                "VDI": "VDI", "Certificate": "Certificate"}


@implementer(IMessages)
class MessageStore:
    def __init__(self, db, events, clock, path, limit=LIMIT):
        self.db = db
        self.events = events
        self.clock = clock
        self.path = path
        self.limit = limit
        self.generation = 0
        self.messages = {}    # ref -> (generation, record), oldest first
        self.by_uuid = {}
        self.deleted = []     # (generation, ref)
        self._lines = 0

    # -- lifetime -------------------------------------------------------------

    def start(self):
        self.events.message_source = self.changes_since
        self.events.message_generation = self.current_generation
        if os.path.exists(self.path):
            self._load()
            return self._compact()
        return None

    def stop(self):
        if self.events.message_source == self.changes_since:
            self.events.message_source = None
            self.events.message_generation = None

    def _load(self):
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    break  # a torn last line from a crash
                self._lines += 1
                self.generation = max(self.generation, entry["gen"])
                if entry["op"] == "add":
                    record = entry["record"]
                    record["timestamp"] = DateTime(record["timestamp"])
                    self.messages[entry["ref"]] = (entry["gen"], record)
                    self.by_uuid[record["uuid"]] = entry["ref"]
                else:
                    gone = self.messages.pop(entry["ref"], None)
                    if gone is not None:
                        self.by_uuid.pop(gone[1]["uuid"], None)

    def _compact(self):
        """Rewrite the file with the live messages only (at start, and when
        deletions dominate it)."""
        lines = [json.dumps({"op": "add", "gen": gen, "ref": ref,
                             "record": record}) + "\n"
                 for ref, (gen, record) in self.messages.items()]
        self._lines = len(lines)
        return threads.deferToThreadPool(
            self.clock, self.clock.getThreadPool(),
            _rewrite, self.path, lines)

    def _append(self, entries):
        lines = [json.dumps(e) + "\n" for e in entries]
        self._lines += len(lines)
        d = threads.deferToThreadPool(
            self.clock, self.clock.getThreadPool(),
            _append, self.path, lines)
        if self._lines > 2 * max(len(self.messages), 1000):
            d.addCallback(lambda _: self._compact())
        return d

    # -- changes ----------------------------------------------------------------

    def create(self, name, priority, cls, obj_uuid, body):
        table = CLASS_TABLES.get(cls)
        if table is None or obj_uuid not in self.db.table(table).by_uuid:
            raise XenAPIError("UUID_INVALID", cls, obj_uuid)
        ref = new_ref()
        self.generation += 1
        record = {"uuid": new_uuid(), "name": name, "priority": priority,
                  "cls": cls, "obj_uuid": obj_uuid,
                  "timestamp": DateTime.now(), "body": body}
        self.messages[ref] = (self.generation, record)
        self.by_uuid[record["uuid"]] = ref
        entries = [{"op": "add", "gen": self.generation, "ref": ref,
                    "record": record}]
        self.events.message_changed("add", ref, record)
        while len(self.messages) > self.limit:
            oldest = next(iter(self.messages))
            entries.append(self._forget(oldest))
        return self._append(entries).addCallback(lambda _: ref)

    def destroy(self, refs):
        entries = [self._forget(ref) for ref in refs]
        return self._append(entries)

    def _forget(self, ref):
        _, record = self.messages.pop(ref)
        self.by_uuid.pop(record["uuid"], None)
        self.generation += 1
        self.deleted.append((self.generation, ref))
        del self.deleted[:-DELETIONS_KEPT]
        self.events.message_changed("del", ref)
        return {"op": "del", "gen": self.generation, "ref": ref}

    def current_generation(self):
        return self.generation

    def changes_since(self, since):
        """(generation, [(op, ref, record)]) after ``since``, for
        event.from: additions with their records, deletions without."""
        if since >= self.generation:
            return self.generation, []
        changes = [("add", ref, record)
                   for ref, (gen, record) in self.messages.items()
                   if gen > since]
        changes += [("del", ref, None) for gen, ref in self.deleted
                    if gen > since]
        return self.generation, changes

    # -- reads --------------------------------------------------------------------

    def record(self, ref):
        try:
            return self.messages[ref][1]
        except KeyError:
            raise XenAPIError("HANDLE_INVALID", "message", ref)

    def records(self, predicate=None):
        return {ref: record for ref, (_, record) in self.messages.items()
                if predicate is None or predicate(record)}


def _append(path, lines):
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())


def _rewrite(path, lines):
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.writelines(lines)


MESSAGE_FIELDS = {f.name: f for f in MODEL.cls("message").fields.values()}
