"""
The HA planning calls on a real one-host server through the XenAPI SDK:
how many failures the pool tolerates with and without protected VMs
(a single host tolerates none once a VM is protected), hypothetical
priorities, where failed VMs would go and why not, the failures-to-
tolerate target with the pool's plan fields and alerts, restart
priorities and agility with XAPI's errors.
"""

import pytest

from tests.support.servers import serving
from tests.test_vm_lifecycle import GIB, MIB, failure, new_vm

SERVER_ARGS = ["--simulator-op-time", "0.01", "--shutdown-timeout", "3",
               "--simulator-memory", str(8 * GIB)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serving(tmp_path_factory, "ha", SERVER_ARGS)


@pytest.fixture
def vms(x):
    made = []
    yield made
    for vm in made:
        if x.VM.get_power_state(vm) != "Halted":
            x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)
    pool = x.pool.get_all()[0]
    x.pool.set_ha_host_failures_to_tolerate(pool, "0")


def make(x, vms, name, memory=256 * MIB, **extra):
    vm = new_vm(x, name, memory=memory, **extra)
    vms.append(vm)
    return vm


def internal_network(x):
    return x.network.create({"name_label": "ha-internal",
                             "name_description": "", "MTU": "1500",
                             "other_config": {}, "tags": []})


def attach(x, vm, network):
    return x.VIF.create({
        "device": "0", "network": network, "VM": vm, "MAC": "",
        "MTU": "1500", "other_config": {}, "qos_algorithm_type": "",
        "qos_algorithm_params": {}})


def max_failures(x):
    return int(x.pool.ha_compute_max_host_failures_to_tolerate())


def test_no_protected_vms_tolerate_every_host(x, vms):
    assert max_failures(x) == 1
    assert x.pool.ha_failover_plan_exists("0") is True
    assert x.pool.ha_failover_plan_exists("1") is True
    assert x.pool.ha_failover_plan_exists("2") is False
    assert x.pool.ha_failover_plan_exists("-1") is False


def test_a_protected_running_vm_leaves_nothing_to_fail(x, vms):
    vm = make(x, vms, "protected")
    x.VM.set_ha_restart_priority(vm, "restart")
    # Halted and never started: not yet kept running.
    assert x.VM.get_ha_always_run(vm) is False
    assert max_failures(x) == 1
    x.VM.start(vm, False, False)
    assert x.VM.get_ha_always_run(vm) is True
    assert max_failures(x) == 0
    assert x.pool.ha_failover_plan_exists("0") is True
    assert x.pool.ha_failover_plan_exists("1") is False
    # Stopped by its user, it is no longer kept running.
    x.VM.hard_shutdown(vm)
    assert x.VM.get_ha_always_run(vm) is False
    assert max_failures(x) == 1
    x.VM.start(vm, False, False)
    assert max_failures(x) == 0
    # best-effort VMs are not planned for; a running VM drops protection
    # at once.
    x.VM.set_ha_restart_priority(vm, "best-effort")
    assert x.VM.get_ha_always_run(vm) is False
    assert max_failures(x) == 1


def test_restart_priority_values(x, vms):
    vm = make(x, vms, "prio")
    assert failure(x.VM.set_ha_restart_priority, vm, "1") == [
        "INVALID_VALUE", "ha_restart_priority", "1"]
    assert x.VM.get_ha_restart_priority(vm) == ""
    for value in ("restart", "best-effort", ""):
        x.VM.set_ha_restart_priority(vm, value)
        assert x.VM.get_ha_restart_priority(vm) == value
    assert failure(x.VM.set_ha_restart_priority, "OpaqueRef:nope",
                   "restart")[0] == "HANDLE_INVALID"


def test_hypothetical_configurations(x, vms):
    small = make(x, vms, "small")
    huge = make(x, vms, "huge", memory=64 * GIB)
    h = x.pool.ha_compute_hypothetical_max_host_failures_to_tolerate
    assert h({}) == "1"
    assert h({small: "best-effort", huge: ""}) == "1"
    assert h({small: "restart"}) == "0"
    assert h({huge: "restart"}) == "0"
    assert failure(h, {small: "always"}) == [
        "INVALID_VALUE", "ha_restart_priority", "always"]
    assert failure(h, {"OpaqueRef:nope": "restart"})[0] == "HANDLE_INVALID"
    # Nothing was changed by asking.
    assert x.VM.get_ha_restart_priority(small) == ""


def test_failover_plan_places_what_fits(x, vms):
    host = x.host.get_all()[0]
    small = make(x, vms, "small")
    huge = make(x, vms, "huge", memory=64 * GIB)
    stuck = make(x, vms, "stuck", memory=64 * GIB)
    attach(x, stuck, internal_network(x))
    plan = x.pool.ha_compute_vm_failover_plan([], [small, huge, stuck])
    assert plan == {
        small: {"host": host},
        huge: {"error_code": "HOST_NOT_ENOUGH_FREE_MEMORY"},
        stuck: {"error_code": "HA_CONSTRAINT_VIOLATION_NETWORK_NOT_SHARED"}}
    # With the only host failed nothing can go anywhere.
    plan = x.pool.ha_compute_vm_failover_plan([host], [small])
    assert plan == {small: {"error_code": "HOST_NOT_ENOUGH_FREE_MEMORY"}}


def test_agility(x, vms):
    net = internal_network(x)
    vm = make(x, vms, "agile")
    x.VM.assert_agile(vm)
    attach(x, vm, net)
    assert failure(x.VM.assert_agile, vm) == [
        "HA_CONSTRAINT_VIOLATION_NETWORK_NOT_SHARED", net]
    # A protected non-agile VM means no plan covers every VM.
    assert x.pool.ha_compute_hypothetical_max_host_failures_to_tolerate(
        {vm: "restart"}) == "0"


def test_failures_to_tolerate_target(x, vms):
    pool = x.pool.get_all()[0]
    assert failure(x.pool.set_ha_host_failures_to_tolerate, pool, "-1") == [
        "INVALID_VALUE", "ha_host_failures_to_tolerate", "-1"]
    assert x.pool.get_ha_host_failures_to_tolerate(pool) == "0"
    x.pool.set_ha_host_failures_to_tolerate(pool, "1")
    assert x.pool.get_ha_plan_exists_for(pool) == "1"
    assert x.pool.get_ha_overcommitted(pool) is False
    vm = make(x, vms, "guarded")
    x.VM.set_ha_restart_priority(vm, "restart")
    x.VM.start(vm, False, False)
    before = {m["name"] for m in x.message.get_all_records().values()}
    # With HA off nothing is refused; the pool is marked overcommitted.
    x.pool.set_ha_host_failures_to_tolerate(pool, "1")
    assert x.pool.get_ha_host_failures_to_tolerate(pool) == "1"
    assert x.pool.get_ha_plan_exists_for(pool) == "0"
    assert x.pool.get_ha_overcommitted(pool) is True
    names = [m["name"] for m in x.message.get_all_records().values()]
    assert "HA_POOL_OVERCOMMITTED" in names
    # The plan was for 1 failure before the VM was protected.
    assert "HA_POOL_DROP_IN_PLAN_EXISTS_FOR" in names
    assert "HA_POOL_OVERCOMMITTED" not in before
    x.pool.set_ha_host_failures_to_tolerate(pool, "0")
    assert x.pool.get_ha_overcommitted(pool) is False
    assert x.pool.get_ha_plan_exists_for(pool) == "0"


def test_ha_on_a_host_alone(x):
    """Quorum comes from the pool's etcd, which a pool of one has not;
    enabling and disabling HA on a pool of three is tests/test_ha_failover."""
    assert failure(x.pool.enable_ha, [], {}) == ["HA_TOO_FEW_HOSTS"]
    assert failure(x.pool.enable_ha, [], {"timeout": "9"}) == [
        "INVALID_VALUE", "timeout", "9"]
    assert failure(x.pool.disable_ha) == ["HA_NOT_ENABLED"]
    # Not armed here: only the soft form (idempotent) succeeds.
    assert failure(x.host.emergency_ha_disable, False) == ["HA_NOT_ENABLED"]
    assert x.host.emergency_ha_disable(True) == ""
    assert x.pool.ha_prevent_restarts_for("10") == ""
    assert x.pool.get_ha_enabled(x.pool.get_all()[0]) is False
