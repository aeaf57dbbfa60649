"""
The simulator's ledger: which domain ran here, from when to when, on
disk in the simulator's state dir, so that a pool's ledgers together
show whether a VM ever ran on two hosts at once.

A simulated domain runs inside the process that simulates it: it stops
when that process stops, whatever its domain table says.  So each start
of the backend is a *boot*, and a boot keeps an ``alive`` stamp fresh
(every ALIVE_INTERVAL seconds); the next boot closes whatever the last
one left running at its last stamp (plus one interval: the process may
have lived that much longer).  Domains carried over into the new boot
run again from its start.

``ledger.jsonl``, one JSON object a line:
    {"ev": "boot", "boot": id, "t": ...}
    {"ev": "run", "boot": id, "vm": uuid, "t": ...}    started or carried over
    {"ev": "end", "boot": id, "vm": uuid, "t": ...}    destroyed
    {"ev": "migrated", "boot": id, "vm": uuid, "t": ...}
                            handed over to another host by a live migration
                            (whose ledger has it run from then on)
    {"ev": "down", "boot": id, "t": ...}               a boot's last moment
"""

import json
import os
import threading
import time
import uuid as uuidlib

LEDGER = "ledger.jsonl"
ALIVE = "alive"
ALIVE_INTERVAL = 0.5


class Ledger:
    def __init__(self, state_dir, clock=time.time):
        self.state_dir = state_dir
        self.clock = clock
        self.boot = uuidlib.uuid4().hex
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        previous = _read_alive(state_dir)
        self._file = open(os.path.join(state_dir, LEDGER), "a")
        if previous is not None:
            boot, last = previous
            self._write({"ev": "down", "boot": boot,
                         "t": last + ALIVE_INTERVAL})
        self._write({"ev": "boot", "boot": self.boot, "t": self.clock()})
        self._stamp()
        self._thread = threading.Thread(target=self._keep_alive,
                                        name="sim-ledger", daemon=True)
        self._thread.start()

    def ran(self, vm):
        self._write({"ev": "run", "boot": self.boot, "vm": vm,
                     "t": self.clock()})

    def ended(self, vm):
        self._write({"ev": "end", "boot": self.boot, "vm": vm,
                     "t": self.clock()})

    def migrated(self, vm):
        """A live migration's hand-over: the run here ends; the domain's
        teardown after it (its "end") changes nothing."""
        self._write({"ev": "migrated", "boot": self.boot, "vm": vm,
                     "t": self.clock()})

    def close(self):
        """A clean stop: this boot's domains end now (they stop with
        the process)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._write({"ev": "down", "boot": self.boot, "t": self.clock()})
        with self._lock:
            self._file.close()
        try:
            os.unlink(os.path.join(self.state_dir, ALIVE))
        except FileNotFoundError:
            pass

    def _write(self, event):
        with self._lock:
            if self._file.closed:
                return
            self._file.write(json.dumps(event, sort_keys=True) + "\n")
            # Flushed, not synced: what must survive is the process's
            # death, not the machine's.
            self._file.flush()

    def _stamp(self):
        path = os.path.join(self.state_dir, ALIVE)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"boot": self.boot, "t": self.clock()}, f)
        os.replace(tmp, path)

    def _keep_alive(self):
        while not self._stopped.wait(ALIVE_INTERVAL):
            try:
                self._stamp()
            except OSError:
                pass


def _read_alive(state_dir):
    try:
        with open(os.path.join(state_dir, ALIVE)) as f:
            data = json.load(f)
        return data["boot"], float(data["t"])
    except (OSError, ValueError, KeyError):
        return None


def intervals(state_dir, now=None):
    """[(vm uuid, start, end)] from a state dir's ledger; end is None for
    a domain still running (its boot's stamp is fresh), else when it was
    destroyed or its process was last known alive."""
    now = time.time() if now is None else now
    path = os.path.join(state_dir, LEDGER)
    if not os.path.exists(path):
        return []
    running = {}        # (boot, vm) -> start
    done = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            e = json.loads(line)
            boot = e["boot"]
            if e["ev"] == "run":
                running.setdefault((boot, e["vm"]), e["t"])
            elif e["ev"] in ("end", "migrated"):
                start = running.pop((boot, e["vm"]), None)
                if start is not None:
                    done.append((e["vm"], start, e["t"]))
            elif e["ev"] == "down":
                for key in [k for k in running if k[0] == boot]:
                    done.append((key[1], running.pop(key), e["t"]))
    alive = _read_alive(state_dir)
    for (boot, vm), start in running.items():
        end = None
        if alive is None or alive[0] != boot:
            end = start
        elif now - alive[1] > 4 * ALIVE_INTERVAL:
            end = alive[1] + ALIVE_INTERVAL     # the process died
        done.append((vm, start, end))
    return done


def overlaps(ledgers, now=None):
    """Every (vm, host a, host b) where one VM ran on two hosts at once;
    ``ledgers``: {host name: state dir}."""
    now = time.time() if now is None else now
    by_vm = {}
    for host, state_dir in ledgers.items():
        for vm, start, end in intervals(state_dir, now):
            by_vm.setdefault(vm, []).append(
                (start, now if end is None else end, host))
    found = []
    for vm, runs in by_vm.items():
        runs.sort()
        longest = None          # the run seen so far that ends last
        for start, end, host in runs:
            if longest is not None and start < longest[0] and \
                    host != longest[1]:
                found.append((vm, longest[1], host))
            if longest is None or end > longest[0]:
                longest = (end, host)
    return found
