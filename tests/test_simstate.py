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
