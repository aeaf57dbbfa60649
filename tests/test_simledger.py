"""
The simulator's ledger (txxenops/backends/simledger.py): a domain's run
from its start to its destruction, or to the last moment its process was
known alive when the process died; domains carried over run again from
the next boot; the overlap check finds a VM that ran on two hosts at
once and passes one that moved.  A real SimulatorBackend writes it.
"""

import json
import os
import socket
import threading

from txxenops.backends import simledger
from txxenops.backends.simledger import Ledger, intervals, overlaps
from txxenops.backends.simulator import SimulatorBackend
from txxenops.types import VMSpec


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_a_run_ends_when_destroyed_or_when_its_process_died(tmp_path):
    clock = Clock()
    ledger = Ledger(str(tmp_path), clock)
    ledger.ran("a")
    clock.t = 1005.0
    ledger.ended("a")
    ledger.ran("b")
    ledger._stopped.set()       # killed: no down event, no more stamps
    ledger._thread.join()
    ledger._stamp()             # its last stamp, at 1005
    assert sorted(intervals(str(tmp_path), now=1006.0)) == [
        ("a", 1000.0, 1005.0), ("b", 1005.0, None)]   # still fresh
    [(_, _, end)] = [r for r in intervals(str(tmp_path), now=1100.0)
                     if r[0] == "b"]
    assert end == 1005.0 + simledger.ALIVE_INTERVAL
    # The next boot closes it at that moment and runs what it carries.
    clock.t = 1200.0
    again = Ledger(str(tmp_path), clock)
    again.ran("b")
    again.close()
    assert sorted(intervals(str(tmp_path))) == [
        ("a", 1000.0, 1005.0), ("b", 1005.0, 1005.5), ("b", 1200.0, 1200.0)]


def _ledger(path, runs):
    os.makedirs(path)
    with open(os.path.join(path, simledger.LEDGER), "w") as f:
        for vm, start, end in runs:
            f.write(json.dumps({"ev": "run", "boot": "x", "vm": vm,
                                "t": start}) + "\n")
            f.write(json.dumps({"ev": "end", "boot": "x", "vm": vm,
                                "t": end}) + "\n")
    return path


def test_overlaps(tmp_path):
    a = _ledger(str(tmp_path / "a"), [("vm", 0, 10), ("other", 0, 100)])
    b = _ledger(str(tmp_path / "b"), [("vm", 12, 20), ("other", 30, 40)])
    c = _ledger(str(tmp_path / "c"), [("vm", 25, 30)])
    assert overlaps({"a": a, "b": b}) == [("other", "a", "b")]
    assert overlaps({"a": a, "c": c}) == []
    assert overlaps({"b": b, "c": c}) == []


def test_the_simulator_keeps_it(tmp_path):
    state = str(tmp_path / "xenops")
    backend = SimulatorBackend(memory=1 << 30, state_dir=state, op_time=0,
                               agent_delay=0, check_paths=False)
    spec = VMSpec(uuid="11111111-2222-3333-4444-555555555555", name="x",
                  memory_static_max=64 << 20)
    backend.start(spec)
    backend.destroy(spec.uuid)
    backend.start(spec)
    backend.close()
    # Carried over unless the host was declared dead while down.
    again = SimulatorBackend(memory=1 << 30, state_dir=state, op_time=0,
                             agent_delay=0, check_paths=False,
                             discard_domains=True)
    assert again.list_domains() == []
    again.close()
    runs = [r for r in intervals(state) if r[0] == spec.uuid]
    assert len(runs) == 2 and all(end is not None for _, _, end in runs)


def test_a_live_migration_hands_the_run_over(tmp_path):
    """The destination's domain exists (paused) while the memory streams
    and the source's is torn down only after the hand-over: the ledgers
    have the source's run end and the destination's begin at it, so a
    VM that moved is no overlap."""
    dirs = {h: str(tmp_path / h) for h in ("source", "dest")}
    source, dest = [SimulatorBackend(memory=1 << 30, state_dir=dirs[h],
                                     op_time=0.05, agent_delay=0,
                                     check_paths=False)
                    for h in ("source", "dest")]
    spec = VMSpec(uuid="11111111-2222-3333-4444-555555555555", name="x",
                  memory_static_max=64 << 20)
    source.start(spec)
    a, b = socket.socketpair()
    received = threading.Thread(target=dest.migrate_receive, args=(spec, b))
    received.start()
    source.migrate_send(spec.uuid, a)
    received.join(10)
    a.close()
    b.close()
    assert dest.domain_info(spec.uuid).state == "running"
    [(_, _, handed_over)] = intervals(dirs["source"])
    [(_, arrived, end)] = intervals(dirs["dest"])
    assert end is None and handed_over <= arrived
    assert overlaps(dirs) == []
    source.close()
    dest.close()
