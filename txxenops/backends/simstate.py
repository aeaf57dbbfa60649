"""
The simulator's domain table on disk, kept at a cost that grows with the
changes rather than with the table: a table file (written whole, tmp +
rename, so a killed process leaves the old one or the new one) and a
journal of the domains changed since, one line each, appended.  Once the
journal holds more lines than the table has domains it is folded into a
new table, so each change costs about one domain's record however many
domains run (a guest agent's report at 1,000 VMs no longer rewrites the
other 999).

The table carries an epoch and the journal names the epoch it follows:
a journal left from before the newest table (a process killed between
writing the table and removing the journal) is ignored.  A line cut short
by a kill is the journal's end.

Beside the domains the table keeps the blocks guests wrote that nobody
has taken yet, per disk path (``writes``, simwrites): they outlive the
domain that wrote them.  The paths changed go in the journal before the
domains changed with them: a journal cut short between the two leaves a
domain's older write position, whose writes fold again into blocks at
worst reported twice, never lost.
"""

import json
import os

TABLE_VERSION = 1
# Lines a journal may reach before it is folded in, whatever the table.
MIN_JOURNAL = 64


class DomainTable:
    def __init__(self, path):
        self.path = path
        self.journal_path = path + ".journal"
        self.epoch = 0
        self.lines = 0          # in the journal
        self.cut = False        # its last line was cut short
        self.writes = {}        # path -> [block], as last read

    def read(self):
        """(next domid or None, {uuid: domain dict}) as last written.
        OSError or ValueError for a table that cannot be read."""
        next_domid, domains = None, {}
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            data = {}
        self.epoch = int(data.get("epoch", 0))
        if "next_domid" in data:
            next_domid = int(data["next_domid"])
        for d in data.get("domains", []):
            domains[d["spec"]["uuid"]] = d
        self.writes = dict(data.get("writes", {}))
        for line in self._journal():
            next_domid = line["next_domid"]
            if "writes" in line:
                for path, blocks in line["writes"].items():
                    if blocks:
                        self.writes[path] = blocks
                    else:
                        self.writes.pop(path, None)
            elif line["domain"] is None:
                domains.pop(line["uuid"], None)
            else:
                domains[line["uuid"]] = line["domain"]
            self.lines += 1
        return next_domid, domains

    def _journal(self):
        try:
            with open(self.journal_path) as f:
                text = f.read()
        except FileNotFoundError:
            return []
        lines = text.split("\n")
        try:
            head = json.loads(lines[0])
        except ValueError:
            return []
        if head.get("epoch") != self.epoch:
            return []       # older than the table
        out = []
        for line in lines[1:]:
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                # Cut short by a kill: the end, and the next write folds
                # the journal in rather than append after it.
                self.cut = True
                break
        return out

    def due(self, domains):
        """Whether the next write should be a whole table."""
        return self.cut or self.lines >= max(MIN_JOURNAL, domains)

    def write_all(self, next_domid, domains, writes=None):
        """A whole table (``domains``: their dicts; ``writes``: path ->
        [block]); the journal goes."""
        epoch = self.epoch + 1
        data = {"version": TABLE_VERSION, "epoch": epoch,
                "next_domid": next_domid, "domains": domains,
                "writes": writes or {}}
        tmp = "%s.%d.%x.tmp" % (self.path, os.getpid(), id(self))
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.path)
        self.epoch, self.lines, self.cut = epoch, 0, False
        try:
            os.unlink(self.journal_path)
        except FileNotFoundError:
            pass

    def append(self, next_domid, changes, writes=None):
        """The domains changed since the last write: (uuid, dict, or None
        for a domain gone) each; ``writes``: the paths whose blocks
        changed (path -> [block], empty when none are left)."""
        parts = []
        if self.lines == 0:
            # A fresh journal: name the table it follows.
            parts.append(json.dumps({"epoch": self.epoch}) + "\n")
        if writes:
            parts.append(json.dumps({"next_domid": next_domid,
                                     "writes": writes}) + "\n")
        for uuid, domain in changes:
            parts.append(json.dumps({"next_domid": next_domid, "uuid": uuid,
                                     "domain": domain}) + "\n")
        mode = "w" if self.lines == 0 else "a"
        with open(self.journal_path, mode) as f:
            f.write("".join(parts))
        self.lines += len(changes) + bool(writes)
