"""
High availability on a pool of three real hosts (tests/support/pool.py),
each in a network namespace of its own (tests/support/netns.py), with a
shared SR as the heartbeat SR and T = 10 s: pool.enable_ha and
disable_ha over the SDK with XAPI's errors; then one failure after the
other on the same pool, each starting from every host up and in the
liveset (the ``ha`` fixture, so that each also runs alone):

- with two failures to tolerate, a host.disable or a VM.start_on that
  would leave no plan is refused (HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN)
  unless overcommit is allowed;
- a slave cut off fences itself (its domains stopped before any runs
  elsewhere); the master declares it dead (not live, HA_HOST_FAILED, the
  plan recomputed) and restarts its protected VMs by order and
  start_delay, then the best-effort one, within T + 30 s; healed, it
  comes back as a slave without its domains;
- the heartbeat SR's storage gone: every host loses the statefile, the
  master alerts HA_STATEFILE_LOST, the pool goes on;
- a slave killed with -9: its protected VM runs again on a survivor and
  what the slave acknowledged is kept; started again it rejoins as a
  slave without the domain;
- the master killed with -9: a survivor takes the mastership by itself
  and answers within T + 15 s with every write acknowledged before, the
  master's protected VM runs again; started again, the old master finds
  the mastership taken and comes back as the new master's slave,
  without the domains it left running;
- the master cut off while it runs fences itself too, a survivor takes
  over, and healed, it comes back as a slave.

Each time the simulators' ledgers show no VM ever ran on two hosts at
once.
"""

import json
import os
import threading
import time
import urllib.request
import xmlrpc.client

import pytest
import XenAPI

from tests.support.api import failure, wait_until
from tests.support import netns
from tests.support.etcd import needs_etcd
from tests.support.pool import PoolHosts, Supervisor, network, pool_session
from tests.support.servers import PASSWORD, USER
from tests.test_pool_database import labels
from tests.test_pool_join import by_address, role_of
from tests.test_vm_lifecycle import MIB, new_vm
from txxenops.backends.simledger import intervals, overlaps

pytestmark = [needs_etcd, pytest.mark.skipif(
    os.geteuid() != 0, reason="binds ports 80/443 on 127.0.x.y")]

T = 10
SERVER_ARGS = ["--simulator-op-time", "0.01", "--shutdown-timeout", "3",
               "--metrics-interval", "1"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Each host in a network namespace of its own where they can be
    made (so that one can be cut off), else on the loopback."""
    base = str(tmp_path_factory.mktemp("ha"))
    network = netns.Namespaces(3).create() if netns.available() else None
    hosts = PoolHosts(base, 3, SERVER_ARGS, network)
    try:
        hosts.start()
        # One after the other: the etcd members are added one at a time.
        for joiner in hosts.hosts[1:]:
            hosts.join(joiner, hosts[0])
        hosts.network = network
        hosts.shared = os.path.join(base, "shared")
        os.makedirs(hosts.shared)
        supervisor = Supervisor(hosts)
        try:
            yield hosts
        finally:
            supervisor.stop()
    finally:
        # Nothing of theirs is kept: no graceful stop to wait for.
        for host in hosts:
            host.crash()
        if network is not None:
            network.destroy()


def ledgers(pool):
    return {h.address: os.path.join(h.data_dir, "xenops") for h in pool}


def no_overlap(pool):
    assert overlaps(ledgers(pool)) == []


def master_of(pool, cut=None):
    """The SDK on whichever host answers as the master now (a host cut
    off is not asked: its connections would hang)."""
    for host in pool:
        if host.proc is None or host is cut:
            continue
        try:
            s = XenAPI.Session(host.https_url, ignore_ssl=True)
            s.xenapi.login_with_password(USER, PASSWORD, "1.0", "test")
            return s.xenapi
        except Exception:
            continue
    return None


def member_status(host):
    """(leader, raft index) of a host's etcd member, None if it does not
    answer or is not healthy."""
    try:
        with urllib.request.urlopen("http://%s:2379/health" % host.address,
                                    timeout=1) as r:
            if json.load(r).get("health") != "true":
                return None
        request = urllib.request.Request(
            "http://%s:2379/v3/maintenance/status" % host.address, b"{}")
        with urllib.request.urlopen(request, timeout=1) as r:
            status = json.load(r)
        return status.get("leader"), int(status.get("raftIndex") or 0)
    except (OSError, ValueError):
        return None


def healthy(pool):
    """Every host's etcd member healthy, under one leader and caught up
    with it: a host just back may still be catching up, and losing
    another then would leave no quorum (every host would fence itself,
    as it must)."""
    def caught_up():
        statuses = [member_status(h) for h in pool]
        if None in statuses or len({leader for leader, _ in statuses}) > 1:
            return False
        indexes = [index for _, index in statuses]
        return max(indexes) - min(indexes) <= 10
    wait_until(caught_up, timeout=60, interval=0.2,
               what="every etcd member healthy and caught up")


def heartbeat_sr(x, pool):
    srs = [r for r in x.SR.get_all() if x.SR.get_name_label(r) == "hb"]
    if srs:
        return srs[0]
    master = x.pool.get_master(x.pool.get_all()[0])
    return x.SR.create(master, {"location": pool.shared}, "0", "hb", "",
                       "sharedfile", "user", True, {})


def plug_everywhere(x, sr):
    for pbd in x.SR.get_PBDs(sr):
        if not x.PBD.get_currently_attached(pbd):
            x.PBD.plug(pbd)


def live_in_the_liveset(x):
    hosts = x.host.get_all()
    uuids = sorted(x.host.get_uuid(h) for h in hosts)
    return all(x.host_metrics.get_live(x.host.get_metrics(h)) and
               sorted(x.host.get_ha_network_peers(h)) == uuids
               for h in hosts)


@pytest.fixture
def ha(pool):
    """What each failure starts from, whatever ran before: every host
    up, HA on, every host live and in the liveset, every etcd member
    caught up.  The master's SDK."""
    for host in pool:
        if host.proc is None:
            host.start(timeout=60)
    x = wait_until(lambda: master_of(pool), timeout=60, what="a master")
    the_pool = x.pool.get_all()[0]
    if not x.pool.get_ha_enabled(the_pool):
        sr = heartbeat_sr(x, pool)
        plug_everywhere(x, sr)
        x.pool.enable_ha([sr], {"timeout": str(T)})
    wait_until(lambda: live_in_the_liveset(x), timeout=60,
               what="every host live and in the liveset")
    healthy(pool)
    return x


def roles(pool, x):
    """The index in pool of the master, and of its slaves."""
    master = x.host.get_address(x.pool.get_master(x.pool.get_all()[0]))
    indexes = [i for i, h in enumerate(pool) if h.address == master]
    return indexes[0], [i for i, h in enumerate(pool)
                        if h.address != master]


def ha_vm(x, name, host, priority="restart", order=0):
    vm = new_vm(x, name, memory=64 * MIB, affinity=host)
    x.VM.set_ha_restart_priority(vm, priority)
    x.VM.set_order(vm, str(order))
    x.VM.start(vm, False, False)
    assert x.VM.get_resident_on(vm) == host
    return vm


def running_elsewhere(x, vm, dead):
    return x.VM.get_power_state(vm) == "Running" and \
        x.VM.get_resident_on(vm) not in (dead, "OpaqueRef:NULL")


def test_enable_and_disable_ha(pool):
    x = wait_until(lambda: master_of(pool), timeout=60, what="a master")
    the_pool = x.pool.get_all()[0]
    if x.pool.get_ha_enabled(the_pool):
        x.pool.disable_ha()        # left on by a test that ran before
    assert failure(x.pool.disable_ha) == ["HA_NOT_ENABLED"]
    sr = heartbeat_sr(x, pool)
    master = x.pool.get_master(the_pool)
    for pbd in x.SR.get_PBDs(sr):
        if x.PBD.get_host(pbd) != master and \
                x.PBD.get_currently_attached(pbd):
            x.PBD.unplug(pbd)
    # Only the master's PBD is plugged.
    assert failure(x.pool.enable_ha, [sr], {}) == ["SR_NO_PBDS", sr]
    local = [x.PBD.get_SR(p) for p in x.PBD.get_all()
             if not x.SR.get_shared(x.PBD.get_SR(p))
             and x.SR.get_type(x.PBD.get_SR(p)) == "file"][0]
    assert failure(x.pool.enable_ha, [local], {}) == ["SR_NO_PBDS", local]
    assert failure(x.pool.enable_ha, ["OpaqueRef:nope"], {}) == [
        "HANDLE_INVALID", "SR", "OpaqueRef:nope"]
    plug_everywhere(x, sr)
    assert failure(x.pool.enable_ha, [sr], {"timeout": "5"}) == [
        "INVALID_VALUE", "timeout", "5"]
    assert x.pool.get_ha_enabled(the_pool) is False
    assert x.pool.get_ha_statefiles(the_pool) == []

    x.pool.enable_ha([sr], {"timeout": str(T)})
    assert x.pool.get_ha_enabled(the_pool) is True
    assert x.pool.get_ha_configuration(the_pool) == {"timeout": str(T)}
    statefiles = x.pool.get_ha_statefiles(the_pool)
    assert len(statefiles) == 1
    vdis = {x.VDI.get_type(v): v for v in x.SR.get_VDIs(sr)}
    assert vdis["ha_statefile"] == statefiles[0]
    assert x.VDI.get_name_label(vdis["redo_log"]) == "Metadata for HA"
    hosts = x.host.get_all()
    uuids = sorted(x.host.get_uuid(h) for h in hosts)
    for h in hosts:
        wait_until(lambda: x.host.get_ha_statefiles(h) == statefiles and
                   sorted(x.host.get_ha_network_peers(h)) == uuids,
                   what="host HA fields")
    assert failure(x.pool.enable_ha, [sr], {}) == ["HA_IS_ENABLED"]
    assert failure(x.pool.emergency_transition_to_master) == [
        "HA_IS_ENABLED"]
    assert failure(x.pool.eject, hosts[2]) == ["HA_IS_ENABLED"]

    x.pool.disable_ha()
    assert x.pool.get_ha_enabled(the_pool) is False
    assert x.pool.get_ha_statefiles(the_pool) == []
    # Enabled again: the same statefile is reused.
    x.pool.enable_ha([], {"timeout": str(T)})
    assert x.pool.get_ha_statefiles(the_pool) == statefiles

    # One slave alone out of HA (an emergency call, on that host): it
    # leaves the liveset as a leaver, not as a failure.
    wait_until(lambda: live_in_the_liveset(x), what="the liveset")
    slave = pool[roles(pool, x)[1][0]]
    ref, record = by_address(x)[slave.address]
    emergency = local_call(slave)
    before = set(x.message.get_all())
    assert emergency("host.emergency_ha_disable", False) == ""
    assert failure_of(emergency, "host.emergency_ha_disable", False) == [
        "HA_NOT_ENABLED"]
    assert emergency("host.emergency_ha_disable", True) == ""
    marker = os.path.join(slave.data_dir, "ha-disabled")
    assert os.path.exists(marker)
    assert not os.path.exists(os.path.join(slave.data_dir, "ha.json"))
    wait_until(lambda: record["uuid"] not in x.host.get_ha_network_peers(
        x.pool.get_master(the_pool)), what="the slave out of the liveset")
    assert x.host.get_ha_network_peers(ref) == []
    time.sleep(T / 10.0 + 2)      # the master's fencing margin, and more
    assert x.host_metrics.get_live(record["metrics"]) is True
    assert not [m for r, m in x.message.get_all_records().items()
                if m["name"] == "HA_HOST_FAILED" and r not in before]
    # The pool's HA off ends it: enabled again, the slave joins.
    x.pool.disable_ha()
    wait_until(lambda: not os.path.exists(marker), what="the marker gone")
    x.pool.enable_ha([], {"timeout": str(T)})
    wait_until(lambda: live_in_the_liveset(x), what="the liveset again")


def test_changes_that_would_break_the_plan_are_refused(pool, ha):
    """Two failures tolerated on three hosts with a protected VM on A:
    disabling a host, or filling B with a VM started there, would leave
    no plan (A, then C failing, needs room on B) and is refused with
    HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN, changing nothing; a VM that
    leaves that room is not; with overcommit allowed nothing is."""
    x = ha
    the_pool = x.pool.get_all()[0]
    master_index, slaves = roles(pool, x)
    a, _ = by_address(x)[pool[master_index].address]
    b, _ = by_address(x)[pool[slaves[0]].address]
    made = [ha_vm(x, "plan-protected", a)]
    x.pool.set_ha_host_failures_to_tolerate(the_pool, "2")
    try:
        assert x.pool.get_ha_plan_exists_for(the_pool) == "2"
        assert failure(x.host.disable, b) == [
            "HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN"]
        assert x.host.get_enabled(b) is True
        room = int(x.host.compute_free_memory(b))
        big = sized_vm(x, "plan-big", room - 16 * MIB)
        small = sized_vm(x, "plan-small", room - 1024 * MIB)
        made += [big, small]
        assert failure(x.VM.start_on, big, b, False, False) == [
            "HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN"]
        assert x.VM.get_power_state(big) == "Halted"
        assert x.VM.get_current_operations(big) == {}
        assert x.VM.get_scheduled_to_be_resident_on(big) == \
            "OpaqueRef:NULL"
        x.VM.start_on(small, b, False, False)
        x.VM.hard_shutdown(small)
        x.pool.set_ha_allow_overcommit(the_pool, True)
        x.VM.start_on(big, b, False, False)
        x.host.disable(b)
        x.host.enable(b)
    finally:
        x.pool.set_ha_allow_overcommit(the_pool, False)
        for vm in made:
            if x.VM.get_power_state(vm) != "Halted":
                x.VM.hard_shutdown(vm)
            x.VM.destroy(vm)
        x.pool.set_ha_host_failures_to_tolerate(the_pool, "0")


def test_concurrent_starts_are_admitted_one_at_a_time(pool, ha):
    """Two failures tolerated on three hosts: either of two protected
    VMs alone keeps a plan (the host left has room for it), both do not.
    Started at once by two clients, one is refused with
    HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN, changing nothing: the master
    checks each placement with the other's reservation counted, as
    XAPI's checks and reservations under its global lock do."""
    x = ha
    the_pool = x.pool.get_all()[0]
    free = [int(x.host.compute_free_memory(h)) for h in x.host.get_all()]
    need = max(free) * 3 // 5
    assert need < min(free)
    vms = [sized_vm(x, "concurrent-%d" % i, need) for i in range(2)]
    hypothetical = \
        x.pool.ha_compute_hypothetical_max_host_failures_to_tolerate
    try:
        assert int(hypothetical({vms[0]: "restart"})) >= 2
        assert int(hypothetical({vm: "restart" for vm in vms})) < 2
        for vm in vms:
            x.VM.set_ha_restart_priority(vm, "restart")
        x.pool.set_ha_host_failures_to_tolerate(the_pool, "2")
        clients = [master_of(pool) for _ in vms]
        together = threading.Barrier(len(vms))
        outcomes = {}

        def start(client, vm):
            together.wait()
            try:
                client.VM.start(vm, False, False)
                outcomes[vm] = "started"
            except XenAPI.Failure as e:
                outcomes[vm] = e.details
        threads = [threading.Thread(target=start, args=pair)
                   for pair in zip(clients, vms)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(map(str, outcomes.values())) == [
            "['HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN']", "started"]
        refused = [vm for vm in vms if outcomes[vm] != "started"][0]
        assert x.VM.get_power_state(refused) == "Halted"
        assert x.VM.get_current_operations(refused) == {}
        assert x.VM.get_scheduled_to_be_resident_on(refused) == \
            "OpaqueRef:NULL"
        assert x.VM.get_ha_always_run(refused) is False
        assert x.pool.get_ha_plan_exists_for(the_pool) == "2"
    finally:
        for vm in vms:
            if x.VM.get_power_state(vm) != "Halted":
                x.VM.hard_shutdown(vm)
            x.VM.destroy(vm)
        x.pool.set_ha_host_failures_to_tolerate(the_pool, "0")


def sized_vm(x, name, need):
    """A VM whose start needs ``need`` bytes, its overhead included."""
    vm = new_vm(x, name, memory=need)
    memory = str(need - int(x.VM.compute_memory_overhead(vm)))
    x.VM.set_memory_limits(vm, memory, memory, memory, memory)
    return vm


def test_the_statefile_lost_everywhere_is_alerted(pool, ha):
    """The heartbeat SR's PBD is not unplugged while HA is on; the SR's
    storage gone, every host says it lost the statefile (its
    ha_statefiles emptied) and the master alerts HA_STATEFILE_LOST once;
    the pool goes on (nobody fences); back, every host has it again."""
    x = ha
    the_pool = x.pool.get_all()[0]
    statefiles = x.pool.get_ha_statefiles(the_pool)
    sr = x.VDI.get_SR(statefiles[0])
    master = x.pool.get_master(the_pool)
    pbd = [p for p in x.SR.get_PBDs(sr) if x.PBD.get_host(p) == master][0]
    assert failure(x.PBD.unplug, pbd) == ["HA_IS_ENABLED"]
    assert x.PBD.get_currently_attached(pbd) is True
    hosts = x.host.get_all()
    before = set(x.message.get_all())
    where = os.path.join(pool.shared, x.SR.get_uuid(sr))
    os.rename(where, where + ".gone")
    try:
        wait_until(lambda: all(x.host.get_ha_statefiles(h) == []
                               for h in hosts), timeout=T,
                   what="every host without the statefile")
        lost = wait_until(lambda: [
            m for r, m in x.message.get_all_records().items()
            if m["name"] == "HA_STATEFILE_LOST" and r not in before],
            what="the alert")
        time.sleep(3)
    finally:
        os.rename(where + ".gone", where)
    assert [(m["obj_uuid"], m["priority"], m["body"]) for m in lost] == [
        (x.host.get_uuid(master), "2",
         "All live servers have lost access to the HA statefile")]
    assert len([m for r, m in x.message.get_all_records().items()
                if m["name"] == "HA_STATEFILE_LOST" and
                r not in before]) == 1
    assert all(x.host_metrics.get_live(x.host.get_metrics(h))
               for h in hosts)
    wait_until(lambda: all(x.host.get_ha_statefiles(h) == statefiles
                           for h in hosts), timeout=T,
               what="every host with the statefile again")


def local_call(host):
    """A call on ``host`` itself through a local login with the pool
    secret (what a host serves even in emergency mode): its value."""
    with open(os.path.join(host.data_dir, "ptoken")) as f:
        secret = f.read().strip()
    proxy = xmlrpc.client.ServerProxy("http://%s/" % host.address)
    session = proxy.session.slave_local_login(secret)["Value"]

    def call(method, *args):
        reply = getattr(proxy, method)(session, *args)
        if reply["Status"] != "Success":
            raise XenAPI.Failure(reply["ErrorDescription"])
        return reply["Value"]
    return call


def failure_of(call, *args):
    try:
        call(*args)
    except XenAPI.Failure as e:
        return e.details
    raise AssertionError("no failure")


def test_a_slave_cut_off_fences_itself_and_its_vms_run_again(pool, ha):
    """The slave's failure: it fences itself, the master declares it
    dead and restarts its protected VMs by order, then the best-effort
    one; healed, it rejoins without its stale domains."""
    if pool.network is None:
        pytest.skip("needs network namespaces")
    x = ha
    master_index, slaves = roles(pool, x)
    index = slaves[0]
    victim = pool[index]
    dead, dead_host = by_address(x)[victim.address]
    protected = [ha_vm(x, "protected-%d" % i, dead, order=i)
                 for i in range(2)]
    best_effort = ha_vm(x, "best-effort", dead, "best-effort")
    unprotected = ha_vm(x, "unprotected", dead, "")
    x.VM.set_start_delay(protected[0], "1")
    # Their affinity now on the survivor with less room: VM.start would
    # place both there, the failover plan spreads them by free memory.
    survivors = [h for h in x.host.get_all() if h != dead]
    crowded = min(survivors, key=lambda h: int(x.host.compute_free_memory(h)))
    for vm in protected:
        x.VM.set_affinity(vm, crowded)
    planned = {vm: p["host"] for vm, p in
               x.pool.ha_compute_vm_failover_plan([dead], protected).items()}
    assert set(planned.values()) - {crowded}
    # Two failures tolerated on three hosts: a plan exists until one dies.
    the_pool = x.pool.get_all()[0]
    x.pool.set_ha_host_failures_to_tolerate(the_pool, "2")
    assert x.pool.get_ha_overcommitted(the_pool) is False
    assert x.pool.get_ha_plan_exists_for(the_pool) == "2"
    before = set(x.message.get_all())
    cut_at = time.time()
    pool.network.cut(index)
    for vm in protected + [best_effort]:
        wait_until(lambda: running_elsewhere(x, vm, dead), timeout=T + 30,
                   what="%s restarted" % x.VM.get_name_label(vm))
    restarted = time.time() - cut_at
    assert restarted < T + 30
    # Never before the lease was gone and the margin passed.
    assert restarted >= T
    assert x.VM.get_power_state(unprotected) == "Halted"
    assert x.host_metrics.get_live(dead_host["metrics"]) is False
    failed = [m for ref, m in x.message.get_all_records().items()
              if m["name"] == "HA_HOST_FAILED" and ref not in before]
    assert [m["obj_uuid"] for m in failed] == [dead_host["uuid"]]
    assert failed[0]["body"] == "Server '%s' has failed" % \
        dead_host["name_label"]
    # It stopped every domain itself, before any ran anywhere else.
    uuids = {x.VM.get_uuid(vm)
             for vm in protected + [best_effort, unprotected]}
    ends = [end for vm, _, end in intervals(ledgers(pool)[victim.address])
            if vm in uuids]
    assert len(ends) == 4 and None not in ends
    no_overlap(pool)
    # The plan was recomputed on the host's failure.
    wait_until(lambda: x.pool.get_ha_overcommitted(the_pool),
               what="the pool overcommitted")
    assert int(x.pool.get_ha_plan_exists_for(the_pool)) < 2
    assert any(m["name"] == "HA_POOL_OVERCOMMITTED" and ref not in before
               for ref, m in x.message.get_all_records().items())
    # Restarted where the plan placed them, in order: the second group
    # after the first's start_delay.
    assert {vm: x.VM.get_resident_on(vm) for vm in protected} == planned
    first = max(t for _, t, _ in _runs(pool, x, protected[0]))
    second = max(t for _, t, _ in _runs(pool, x, protected[1]))
    assert second >= first + 1

    # Healed, it comes back as a slave into the liveset, without them.
    pool.network.heal(index)
    wait_until(lambda: x.host_metrics.get_live(dead_host["metrics"]),
               timeout=60, what="the healed host live again")
    assert role_of(victim) == "slave:" + pool[master_index].address
    for vm in protected + [best_effort]:
        assert running_elsewhere(x, vm, dead)
    boots = intervals(ledgers(pool)[victim.address])
    assert all(end is not None for _, _, end in boots)
    no_overlap(pool)
    wait_until(lambda: not x.pool.get_ha_overcommitted(the_pool),
               what="a plan again with the host back")
    x.pool.set_ha_host_failures_to_tolerate(the_pool, "0")


def _runs(pool, x, vm):
    uuid = x.VM.get_uuid(vm)
    return [r for h in pool for r in intervals(ledgers(pool)[h.address])
            if r[0] == uuid]


def test_a_killed_slave_s_vms_run_again_and_it_rejoins_without_them(
        pool, ha):
    """kill -9 of a slave (its etcd member too): its lease expires, the
    master restarts its protected VM on a survivor; what the slave had
    acknowledged is the pool's; started again it finds its lease gone
    and comes back as a slave without the domain."""
    x = ha
    master_index, slaves = roles(pool, x)
    victim = pool[slaves[0]]
    dead, dead_host = by_address(x)[victim.address]
    vm = ha_vm(x, "on-the-killed-slave", dead)
    network(pool_session(victim).xenapi, "before-the-slave-kill")
    killed = time.monotonic()
    victim.crash()
    wait_until(lambda: running_elsewhere(x, vm, dead), timeout=T + 30,
               what="the killed slave's VM restarted")
    assert time.monotonic() - killed < T + 30
    assert x.host_metrics.get_live(dead_host["metrics"]) is False
    assert "before-the-slave-kill" in labels(x)
    no_overlap(pool)

    victim.start(timeout=60)
    assert role_of(victim) == "slave:" + pool[master_index].address
    boots = intervals(ledgers(pool)[victim.address])
    assert x.VM.get_uuid(vm) in {v for v, _, _ in boots}
    assert all(end is not None for _, _, end in boots)
    wait_until(lambda: x.host_metrics.get_live(dead_host["metrics"]),
               timeout=30, what="the killed slave live again")
    assert running_elsewhere(x, vm, dead)
    no_overlap(pool)


def test_a_killed_master_is_replaced_and_its_vms_run_again(pool, ha):
    x = ha
    old = pool[roles(pool, x)[0]]
    master, _ = by_address(x)[old.address]
    protected = ha_vm(x, "on-the-master", master)
    network(x, "before-the-kill")
    killed = time.monotonic()
    old.crash()
    y = wait_until(lambda: master_of(pool), timeout=T + 15, interval=0.2,
                   what="a new master")
    assert time.monotonic() - killed < T + 15
    assert "before-the-kill" in labels(y)
    wait_until(lambda: running_elsewhere(y, protected, master),
               timeout=T + 30, what="the master's VM restarted")
    no_overlap(pool)

    # Back up, the old master finds the mastership taken: it starts as
    # the new master's slave, without its stale domains.
    new_master = y.host.get_address(y.pool.get_master(y.pool.get_all()[0]))
    old.start(timeout=60)
    assert role_of(old) == "slave:" + new_master
    boots = intervals(ledgers(pool)[old.address])
    assert y.VM.get_uuid(protected) in {vm for vm, _, _ in boots}
    assert all(end is not None for _, _, end in boots)
    wait_until(lambda: y.host_metrics.get_live(
        y.host.get_metrics(master)), timeout=30, what="the old master live")
    assert running_elsewhere(y, protected, master)
    no_overlap(pool)
    network(y, "after-the-return")
    z = pool_session(old).xenapi
    wait_until(lambda: "after-the-return" in labels(z), what="replica")


def test_the_master_cut_off_is_replaced_and_comes_back_a_slave(pool, ha):
    if pool.network is None:
        pytest.skip("needs network namespaces")
    y = ha
    master = y.pool.get_master(y.pool.get_all()[0])
    index = roles(pool, y)[0]
    vm = ha_vm(y, "on-the-cut-master", master)
    network(y, "before-the-cut")
    cut_at = time.monotonic()
    pool.network.cut(index)
    z = wait_until(lambda: master_of(pool, cut=pool[index]),
                   timeout=T + 15, interval=0.2, what="a new master")
    assert time.monotonic() - cut_at < T + 15
    assert "before-the-cut" in labels(z)
    wait_until(lambda: running_elsewhere(z, vm, master), timeout=T + 30,
               what="the cut master's VM restarted")
    no_overlap(pool)

    pool.network.heal(index)
    if pool[index].proc is not None and pool[index].proc.poll() is not None:
        pool[index].wait_exit()     # it gave up waiting for etcd
    if pool[index].proc is None:
        pool[index].start(timeout=60)
    wait_until(lambda: z.host_metrics.get_live(z.host.get_metrics(master)),
               timeout=90, what="the old master live again")
    new_master = z.host.get_address(z.pool.get_master(z.pool.get_all()[0]))
    assert role_of(pool[index]) == "slave:" + new_master
    assert running_elsewhere(z, vm, master)
    no_overlap(pool)
