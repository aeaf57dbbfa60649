"""
The simulator's domain table on disk (txxenops/backends/simstate.py): a
table and a journal of changed domains, folded into a new table once the
journal outgrows it; a line cut short and a journal older than the table
are not read; and the real simulator starting many guests, whose agents
all report, writes the whole table only a few times, yet a new process
finds every domain as it was.
"""

import json
import os
import time

from tests.support.api import wait_until
from txxenops import VMSpec
from txxenops.backends import simstate
from txxenops.backends.simulator import STATE_FILE, SimulatorBackend


def domain(uuid, state="running"):
    return {"spec": {"uuid": uuid}, "state": state}


def test_changes_are_appended_then_folded_into_a_table(tmp_path):
    path = str(tmp_path / "domains.json")
    table = simstate.DomainTable(path)
    table.append(4, [("a", domain("a")), ("b", domain("b"))])
    table.append(5, [("a", domain("a", "paused")), ("b", None)])
    assert not os.path.exists(path)
    assert table.read() == (5, {"a": domain("a", "paused")})
    again = simstate.DomainTable(path)
    assert again.read() == (5, {"a": domain("a", "paused")})
    assert not again.due(1)
    for i in range(simstate.MIN_JOURNAL):
        again.append(6, [("c", domain("c"))])
    assert again.due(1) and not again.due(10 * simstate.MIN_JOURNAL)
    again.write_all(6, [domain("a"), domain("c")])
    assert not os.path.exists(path + ".journal")
    with open(path) as f:
        assert json.load(f)["epoch"] == 1
    assert simstate.DomainTable(path).read() == (
        6, {"a": domain("a"), "c": domain("c")})


def test_a_line_cut_short_ends_the_journal_and_the_next_write_folds(
        tmp_path):
    path = str(tmp_path / "domains.json")
    table = simstate.DomainTable(path)
    table.append(2, [("a", domain("a"))])
    with open(path + ".journal", "a") as f:
        f.write('{"next_domid": 3, "uuid": "b", "dom')
    reread = simstate.DomainTable(path)
    assert reread.read() == (2, {"a": domain("a")})
    assert reread.due(1)


def test_a_journal_older_than_the_table_is_not_read(tmp_path):
    path = str(tmp_path / "domains.json")
    table = simstate.DomainTable(path)
    table.append(2, [("a", domain("a", "paused"))])
    with open(path + ".journal") as f:
        stale = f.read()
    table.write_all(3, [domain("a")])
    # As if killed between the table's rename and the journal's removal.
    with open(path + ".journal", "w") as f:
        f.write(stale)
    assert simstate.DomainTable(path).read() == (3, {"a": domain("a")})


def test_many_guests_reporting_rewrite_the_table_only_now_and_then(
        tmp_path):
    state = str(tmp_path / "state")
    backend = SimulatorBackend(memory=512 << 30, state_dir=state, op_time=0,
                               agent_delay=0)
    count = 200
    for i in range(count):
        backend.start(VMSpec(uuid="vm-%d" % i, memory_static_max=64 << 20))
    wait_until(lambda: all(d.guest_metrics for d in backend.list_domains()),
               what="every agent's report")
    # Give the last reports' writes a moment.
    time.sleep(0.2)
    # Each start and each report changed one domain: some 600 writes,
    # a few of them whole tables.
    path = os.path.join(state, STATE_FILE)
    epoch = 0
    if os.path.exists(path):
        with open(path) as f:
            epoch = json.load(f)["epoch"]
    assert 1 <= epoch <= 6, epoch
    reopened = SimulatorBackend(memory=512 << 30, state_dir=state,
                                op_time=0)
    try:
        found = {d.uuid: d for d in reopened.list_domains()}
        assert sorted(found) == sorted("vm-%d" % i for i in range(count))
        assert all(d.guest_metrics and d.state == "running"
                   for d in found.values())
    finally:
        reopened.close()
        backend.close()


def test_guest_writes_are_handed_out_until_marked_also_after_a_kill(
        tmp_path):
    """What a guest wrote is kept with the domain table until a taker
    has marked it: a taker that fails, or a process killed before it
    marked, hands the blocks out again; once marked, a new process hands
    out only what the guest wrote since."""
    from txxenops import VBDSpec
    from txxenops.backends.simwrites import WRITE_BLOCK, working_set
    state, disk, size = str(tmp_path / "state"), str(tmp_path / "d"), 16 << 20

    def backend():
        # Agents that never report: nothing else writes the table.
        return SimulatorBackend(state_dir=state, op_time=0, agent_delay=1e6,
                                check_paths=False)

    def blocks(extents):
        return [offset // WRITE_BLOCK for offset, _ in extents]
    first = backend()
    spec = VMSpec(uuid="writer", memory_static_max=64 << 20,
                  other_config={"simulator-cpu-load": "1.0"},
                  vbds=[VBDSpec(device="xvda", userdevice="0", path=disk,
                                size=size)])
    first.start(spec)
    ring = working_set("writer", "xvda", size)
    time.sleep(0.3)
    refused = []

    def refuse(extents):
        refused.append(blocks(extents))
        raise OSError("the log is not writable")
    try:
        first.disk_writes(disk, refuse)
    except OSError:
        pass
    assert refused and refused[0] == sorted(ring[:len(refused[0])])
    # The first process is killed (never closed); the next one starts
    # from what it wrote down.
    second, marked = backend(), []
    assert second.disk_writes(disk, marked.append) == marked[0]
    got = blocks(marked[0])
    assert set(refused[0]) <= set(got) and set(got) == set(ring[:len(got)])
    time.sleep(0.3)
    third = backend()
    later = set(blocks(third.disk_writes(disk)))
    start = len(got) - 1 if ring[len(got) - 1] in later else len(got)
    assert later and later == set(ring[start:start + len(later)])
    for b in (third, second, first):
        b.close()
