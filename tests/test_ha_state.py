"""The planner's view of a database: protection, liveness, agility and
pinning, and the static_max accounting of free and needed memory."""

from types import SimpleNamespace

import pytest

from txxapi.datamodel import MODEL
from txxapi.db.memory import Database
from txxapi.ha import state
from txxapi.values import NULL_REF
from txxapi.vmspec import vm_overhead

GIB = 1024 ** 3
MIB = 1024 ** 2


@pytest.fixture
def db():
    return Database(MODEL)


def host(db, uuid, total=16 * GIB, live=True, enabled=True):
    metrics = db.create("host_metrics", {"memory_total": total,
                                         "live": live})
    return db.create("host", {"uuid": uuid, "metrics": metrics,
                              "enabled": enabled,
                              "memory_overhead": 512 * MIB})


def vm(db, uuid, static_max=2 * GIB, on=NULL_REF, **extra):
    fields = {"uuid": uuid, "memory_static_max": static_max,
              "memory_dynamic_max": static_max,
              "memory_dynamic_min": static_max // 2,
              "memory_static_min": static_max // 2, "VCPUs_max": 1,
              "domain_type": "pv", "resident_on": on,
              "power_state": "Running" if on != NULL_REF else "Halted",
              "memory_overhead": 10 * MIB, "ha_always_run": True,
              "ha_restart_priority": "restart"}
    fields.update(extra)
    return db.create("VM", fields)


def test_protection_needs_always_run_and_restart(db):
    a = vm(db, "a")
    vm(db, "b", ha_restart_priority="best-effort")
    vm(db, "c", ha_always_run=False)
    assert state.protected_vms(db) == [a]


def test_memory_accounting_and_placement(db):
    h1, h2 = host(db, "2-second"), host(db, "1-first")
    host(db, "3-dead", live=False)
    dom0 = vm(db, "dom0", on=h1, is_control_domain=True,
              memory_dynamic_max=1 * GIB, static_max=4 * GIB,
              ha_restart_priority="")
    running = vm(db, "r", on=h1)
    halted = vm(db, "h", static_max=3 * GIB)
    scheduled = vm(db, "s", scheduled_to_be_resident_on=h2)
    s = state.pool_state(db)
    assert dom0 not in s.vms
    # Hosts in uuid order, the dead one left out but counted in the pool.
    assert [h for h, _ in s.hosts] == [h2, h1]
    assert s.total_hosts == 3
    free = dict(s.hosts)
    assert free[h1] == 16 * GIB - 512 * MIB - (1 * GIB + 10 * MIB) - \
        (2 * GIB + 10 * MIB)
    assert free[h2] == 16 * GIB - 512 * MIB - (2 * GIB + 10 * MIB)
    need = s.vms[running]
    assert need == 2 * GIB + vm_overhead(db.fields("VM", running))
    assert s.placement == [(running, h1), (scheduled, h2)]
    assert s.offline == [halted] and not s.non_agile


def test_non_agile_vms_are_pinned_and_flagged(db):
    h = host(db, "h")
    net = db.create("network", {"name_label": "internal"})
    pinned = vm(db, "p", static_max=4 * GIB)
    db.create("VIF", {"VM": pinned, "network": net, "device": "0"})
    with pytest.raises(Exception) as e:
        state.assert_agile(db, pinned)
    assert e.value.description == [
        "HA_CONSTRAINT_VIOLATION_NETWORK_NOT_SHARED", net]
    s = state.pool_state(db)
    assert s.non_agile and pinned not in s.vms
    # Offline and pinned to the host it can run on: its memory is taken.
    assert dict(s.hosts)[h] == 16 * GIB - 512 * MIB - \
        (4 * GIB + vm_overhead(db.fields("VM", pinned)))


def test_sr_sharing(db):
    h = host(db, "h")
    sr = db.create("SR", {"shared": False})
    vdi = db.create("VDI", {"SR": sr})
    v = vm(db, "v")
    db.create("VBD", {"VM": v, "VDI": vdi, "empty": False})
    assert not state.is_agile(db, v)
    db.update("SR", sr, {"shared": True})
    assert not state.is_agile(db, v)          # no plugged PBD on h
    db.create("PBD", {"SR": sr, "host": h, "currently_attached": True})
    assert state.is_agile(db, v)


def test_changes_the_plan_is_asked_about(db):
    """hosts_to_disable leaves a host out; arriving counts a VM on the
    host it is placed on and takes what it needs from that host (a VM
    on the move still counts where it runs)."""
    h1, h2 = host(db, "1"), host(db, "2")
    moving = vm(db, "m", on=h1)
    starting = vm(db, "s", ha_restart_priority="", ha_always_run=False)
    assert [h for h, _ in state.pool_state(db, hosts_to_disable=[h2]).hosts] \
        == [h1]
    before = dict(state.pool_state(db).hosts)
    s = state.pool_state(db, arriving=[(h2, moving), (h2, starting)])
    needs = [state.restart_need(db.fields("VM", v))
             for v in (moving, starting)]
    assert dict(s.hosts) == {h1: before[h1], h2: before[h2] - sum(needs)}
    assert s.placement == [(moving, h2)] and starting not in s.vms


def test_a_start_under_way_is_planned_for_as_protected(db, monkeypatch):
    """A "restart" VM held on a host by a start under way (not yet
    always-run) counts as protected in the plan check of a placement
    admitted after it: here its restart needs the room that the VM
    placed next takes, which ignoring it would miss."""
    from twisted.internet import defer
    from txxapi.errors import XenAPIError
    from txxapi.ha import status
    monkeypatch.setattr(status, "planned",
                        lambda fn, *args: defer.maybeDeferred(fn, *args))
    pool = db.create("pool", {"ha_enabled": True, "ha_plan_exists_for": 1})
    big, small = host(db, "1", total=10 * GIB), host(db, "2", total=8 * GIB)
    held = vm(db, "a", static_max=5 * GIB, ha_always_run=False,
              scheduled_to_be_resident_on=big)
    vm(db, "c", static_max=256 * MIB, ha_always_run=False,
       ha_restart_priority="best-effort", scheduled_to_be_resident_on=big)
    placed = vm(db, "b", static_max=3 * GIB, ha_always_run=False)
    assert status.starts_in_flight(db) == [held]
    ctx = SimpleNamespace(db=db, server=SimpleNamespace(pool_ref=pool))

    def outcome():
        result = []
        status.assert_placement_preserves_plan(ctx, placed, small) \
            .addCallbacks(result.append, lambda f: result.append(
                f.trap(XenAPIError) and f.value.code))
        return result
    assert outcome() == ["HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN"]
    monkeypatch.setattr(status, "starts_in_flight", lambda db: [])
    assert outcome() == [None]
