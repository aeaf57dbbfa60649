"""
Calls forwarded across a pool of three real hosts (tests/support/pool.py):
VM.start placed by affinity on a slave runs in that slave's simulator,
the VM's later operations from the master's client run there too,
VM.start_on a named slave (also from a slave's own pool session, which
goes through the master), a slave's errors come back unchanged, a cancel
of the client's task reaches the slave, the
placement checks (get_possible_hosts, assert_can_boot_here, a disk on
the master's local SR), and a slave killed with -9: not live once the
heartbeat timeout has passed, its calls then HOST_OFFLINE.
"""

import os

import pytest

from tests.support.api import failure, wait_until
from tests.support.etcd import needs_etcd
from tests.support.pool import joined_pool, pool_session
from tests.test_vm_lifecycle import MIB, new_vm, wait_task
from txxapi.pool import slavedb

pytestmark = [needs_etcd, pytest.mark.skipif(
    os.geteuid() != 0, reason="binds ports 80/443 on 127.0.x.y")]

NULL = "OpaqueRef:NULL"
DEAD_AFTER = 3
SERVER_ARGS = ["--pool-heartbeat-interval", "0.5",
               "--host-assumed-dead-interval", str(DEAD_AFTER),
               "--simulator-op-time", "0.01", "--shutdown-timeout", "3",
               "--metrics-interval", "1"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    yield from joined_pool(str(tmp_path_factory.mktemp("poolfwd")), 3,
                           SERVER_ARGS)


@pytest.fixture(scope="module")
def x(pool):
    session = pool[0].session()
    x = session.xenapi
    for ref in x.host.get_all():
        wait_until(lambda: x.host.get_enabled(ref) and live(x, ref),
                   what="host %s up" % ref)
    yield x
    session.xenapi.session.logout()


@pytest.fixture(scope="module")
def hosts(pool, x):
    """The host refs, in the fixture's order: master, slave 1, slave 2."""
    by_address = {r["address"]: ref
                  for ref, r in x.host.get_all_records().items()}
    return [by_address[h.address] for h in pool]


def live(x, host):
    return x.host_metrics.get_live(x.host.get_metrics(host))


def memory_free(x, host):
    """What the host's own backend reports free (its simulator's count)."""
    metrics = x.host_metrics.get_record(x.host.get_metrics(host))
    return int(metrics["memory_free"])


def test_start_by_affinity_runs_on_the_slave_and_so_does_its_shutdown(
        pool, x, hosts):
    master, slave = hosts[0], hosts[1]
    master_free, slave_free = memory_free(x, master), memory_free(x, slave)
    vm = new_vm(x, "pinned", memory=512 * MIB, affinity=slave)
    x.VM.start(vm, False, False)
    assert x.VM.get_resident_on(vm) == slave
    assert x.VM.get_power_state(vm) == "Running"
    # The domain is the slave simulator's: its free memory went down, the
    # master's did not.
    wait_until(lambda: memory_free(x, slave) <= slave_free - 512 * MIB,
               what="the slave's domain")
    assert memory_free(x, master) == master_free
    assert x.VM.get_current_operations(vm) == {}
    # The slave's replica says the same.
    y = pool_session(pool[1]).xenapi
    wait_until(lambda: y.VM.get_power_state(vm) == "Running",
               what="the slave's replica")
    x.VM.clean_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"
    assert x.VM.get_resident_on(vm) == NULL
    wait_until(lambda: memory_free(x, slave) == slave_free,
               what="the slave's domain gone")
    x.VM.destroy(vm)


def test_start_on_a_named_slave_under_the_masters_task(pool, x, hosts):
    slave = hosts[2]
    vm = new_vm(x, "placed")
    task = x.Async.VM.start_on(vm, slave, False, False)
    record = wait_task(x, task)
    assert record["status"] == "success", record["error_info"]
    assert record["resident_on"] == hosts[0]
    assert x.VM.get_resident_on(vm) == slave
    # A slave's own pool session: the call goes through the master, which
    # marks it and sends it to the VM's host.
    y = pool_session(pool[1]).xenapi
    y.VM.hard_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"
    y.VM.start_on(vm, slave, False, False)
    assert x.VM.get_resident_on(vm) == slave
    x.VM.hard_shutdown(vm)
    # An error raised on the slave comes back as it is, and leaves
    # nothing marked.
    huge = new_vm(x, "huge", memory=128 * 1024 * MIB)
    error = failure(x.VM.start_on, huge, slave, False, False)
    assert error[0] == "HOST_NOT_ENOUGH_FREE_MEMORY", error
    assert x.VM.get_power_state(huge) == "Halted"
    assert x.VM.get_current_operations(huge) == {}
    # No host of the pool has the memory for it.
    assert failure(x.VM.start, huge, False, False) == ["NO_HOSTS_AVAILABLE"]
    for ref in (vm, huge):
        x.VM.destroy(ref)


def test_a_vm_suspended_on_a_slave_resumes_where_its_image_is(x, hosts):
    """Its suspend image is on the slave's local SR: only that slave can
    resume it, and the placement finds it."""
    slave = hosts[1]
    vm = new_vm(x, "suspended", affinity=slave)
    x.VM.start(vm, False, False)
    x.VM.suspend(vm)
    image = x.VM.get_suspend_VDI(vm)
    assert x.VM.get_power_state(vm) == "Suspended"
    assert x.VDI.get_SR(image) == local_sr(x, slave)
    x.VM.set_affinity(vm, NULL)
    assert x.VM.get_possible_hosts(vm) == [slave]
    assert failure(x.VM.resume_on, vm, hosts[2], False, False) == [
        "VM_REQUIRES_SR", vm, local_sr(x, slave)]
    x.VM.resume(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VM.get_resident_on(vm) == slave
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_a_slaves_master_only_calls_go_to_the_master(pool, x, hosts):
    """Messages (alerts) are the master's: created from a slave's pool
    session, they are there; the slave's session lists the master's."""
    y = pool_session(pool[2]).xenapi
    uuid = x.pool.get_uuid(x.pool.get_all()[0])
    ref = y.message.create("POOL_TEST", "1", "Pool", uuid, "from a slave")
    assert x.message.get_record(ref)["body"] == "from a slave"
    assert ref in y.message.get_all()
    y.message.destroy(ref)
    assert ref not in x.message.get_all()


def test_a_cancel_of_the_clients_task_reaches_the_slave(pool, x, hosts):
    """The call runs on the slave under the master's task ref; a cancel of
    that task on the master is sent there."""
    slave = hosts[1]
    vm = new_vm(x, "hung", affinity=slave, other={"simulator-hung": "true"})
    x.VM.start(vm, False, False)
    assert x.VM.get_resident_on(vm) == slave
    task = x.Async.VM.clean_shutdown(vm)
    y = pool_session(pool[1]).xenapi
    wait_until(lambda: task in y.task.get_all() and
               "cancel" in y.task.get_allowed_operations(task),
               what="the task cancellable on the slave")
    x.task.cancel(task)
    record = wait_task(x, task)
    assert record["status"] == "cancelled", record
    assert record["error_info"] == ["TASK_CANCELLED", task]
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VM.get_current_operations(vm) == {}
    # Gone from the slave once over.
    wait_until(lambda: task not in y.task.get_all(), what="the slave's task")
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_a_forwarded_calls_progress_shows_on_the_masters_task(x, hosts):
    """The slave's progress of the call (a start reports some before its
    start_delay) is mirrored onto the client's task on the master while
    the call still runs there."""
    vm = new_vm(x, "slow-start")
    x.VM.set_start_delay(vm, 4)
    task = x.Async.VM.start_on(vm, hosts[1], False, False)
    progress = wait_until(
        lambda: x.task.get_status(task) == "pending" and
        x.task.get_progress(task) > 0 and x.task.get_progress(task),
        what="progress on the master's task")
    assert 0 < progress < 1
    record = wait_task(x, task)
    assert (record["status"], record["progress"]) == ("success", 1.0)
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def local_sr(x, host):
    return [x.PBD.get_SR(p) for p in x.host.get_PBDs(host)
            if x.SR.get_type(x.PBD.get_SR(p)) != "iso" and
            not x.SR.get_shared(x.PBD.get_SR(p))][0]


def add_disk(x, vm, sr):
    vdi = x.VDI.create({
        "SR": sr, "virtual_size": str(4 * MIB), "name_label": "d",
        "name_description": "", "type": "user", "sharable": False,
        "read_only": False, "other_config": {}, "xenstore_data": {},
        "sm_config": {}, "tags": []})
    x.VBD.create({
        "VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True,
        "mode": "RW", "type": "Disk", "unpluggable": False, "empty": False,
        "other_config": {}, "qos_algorithm_type": "",
        "qos_algorithm_params": {}})
    return vdi


def volumes_of(host, sr_uuid):
    """The VDI locations with a file in the host's copy of the SR."""
    path = os.path.join(host.data_dir, "sr", sr_uuid)
    names = os.listdir(path) if os.path.isdir(path) else []
    return {n.split(".")[0] for n in names if not n.startswith(".")}


def test_possible_hosts_follow_the_vms_disks(pool, x, hosts):
    master, slave = hosts[0], hosts[1]
    vm = new_vm(x, "disk-on-master", affinity=slave)
    assert sorted(x.VM.get_possible_hosts(vm)) == sorted(hosts)
    local = local_sr(x, master)
    add_disk(x, vm, local)
    assert x.VM.get_possible_hosts(vm) == [master]
    assert failure(x.VM.assert_can_boot_here, vm, slave) == [
        "VM_REQUIRES_SR", vm, local]
    x.VM.assert_can_boot_here(vm, master)
    # Its affinity host cannot run it: placed where its disk is.
    x.VM.start(vm, False, False)
    assert x.VM.get_resident_on(vm) == master
    x.VM.hard_shutdown(vm)
    assert failure(x.VM.start_on, vm, slave, False, False)[0] == \
        "VM_REQUIRES_SR"


def test_storage_on_a_slaves_local_sr_runs_on_that_slave(pool, x, hosts):
    """A VDI made on a slave's local SR from the master's client is made
    by that slave (its file is in the slave's SR); so is the clone of a
    halted VM's disk there (the toolstack's own VDI call, forwarded)."""
    slave = hosts[1]
    sr = local_sr(x, slave)
    sr_uuid = x.SR.get_uuid(sr)
    before = volumes_of(pool[1], sr_uuid)
    vm = new_vm(x, "disk-on-slave")
    vdi = add_disk(x, vm, sr)
    assert x.VDI.get_SR(vdi) == sr
    assert volumes_of(pool[1], sr_uuid) - before == {x.VDI.get_location(vdi)}
    assert x.VM.get_possible_hosts(vm) == [slave]
    x.VM.start(vm, False, False)
    assert x.VM.get_resident_on(vm) == slave
    x.VM.hard_shutdown(vm)
    clone = x.VM.clone(vm, "disk-on-slave-clone")
    disks = [x.VBD.get_VDI(v) for v in x.VM.get_VBDs(clone)]
    assert [x.VDI.get_SR(d) for d in disks] == [sr]
    # (With the clone's shared base beside them.)
    leaves = {x.VDI.get_location(d) for d in disks + [vdi]}
    assert leaves <= volumes_of(pool[1], sr_uuid) - before
    for ref in (clone, vm):
        for vbd in x.VM.get_VBDs(ref):
            x.VDI.destroy(x.VBD.get_VDI(vbd))
        x.VM.destroy(ref)
    wait_until(lambda: not leaves & volumes_of(pool[1], sr_uuid),
               what="the slave's volumes destroyed")


def test_a_slaves_marks_merge_into_the_masters(pool, x, hosts):
    """A slave ships what its marks added and removed rather than its
    whole view of them: the master merges that into its own marks (and
    recomputes allowed_operations), so a mark it made meanwhile stays."""
    sr = local_sr(x, hosts[1])
    vm = new_vm(x, "marked")
    vdi = add_disk(x, vm, sr)
    allowed = sorted(x.VDI.get_allowed_operations(vdi))
    # The slave marks the disk while it clones the VM there: nothing of
    # it is left on the master afterwards.
    clone = x.VM.clone(vm, "marked-clone")
    assert x.VDI.get_current_operations(vdi) == {}
    assert sorted(x.VDI.get_allowed_operations(vdi)) == allowed
    # What a slave ships, as the master's pool.db_write takes it.
    y = pool_session(pool[0]).xenapi

    def ship(added, removed):
        y.pool.db_write(slavedb.encode_records([(
            1, "mod", "VDI", vdi, {slavedb.MARKS_FIELD: {
                "added": added, "removed": removed}})]))
    ship({"OpaqueRef:on-the-master": "clone"}, [])
    ship({"OpaqueRef:on-a-slave": "clone"}, [])
    assert x.VDI.get_current_operations(vdi) == {
        "OpaqueRef:on-the-master": "clone", "OpaqueRef:on-a-slave": "clone"}
    assert "destroy" not in x.VDI.get_allowed_operations(vdi)
    ship({}, ["OpaqueRef:on-a-slave", "OpaqueRef:never-there"])
    assert x.VDI.get_current_operations(vdi) == {
        "OpaqueRef:on-the-master": "clone"}
    ship({}, ["OpaqueRef:on-the-master"])
    assert x.VDI.get_current_operations(vdi) == {}
    assert sorted(x.VDI.get_allowed_operations(vdi)) == allowed
    for ref in (clone, vm):
        for vbd in x.VM.get_VBDs(ref):
            x.VDI.destroy(x.VBD.get_VDI(vbd))
        x.VM.destroy(ref)


def test_a_killed_slave_goes_offline_and_its_calls_say_so(pool, x, hosts):
    slave = hosts[2]
    vm = new_vm(x, "stranded")
    x.VM.start_on(vm, slave, False, False)
    other = new_vm(x, "other")
    pool[2].kill()
    wait_until(lambda: not live(x, slave), timeout=DEAD_AFTER + 15,
               what="the killed slave not live")
    assert failure(x.VM.clean_shutdown, vm) == ["HOST_OFFLINE", slave]
    assert failure(x.VM.start_on, other, slave, False, False) == [
        "HOST_OFFLINE", slave]
    assert x.VM.get_current_operations(vm) == {}
    assert slave not in x.VM.get_possible_hosts(other)
    # Placement leaves it out; the way out for its VM is on the master.
    x.VM.start(other, False, False)
    assert x.VM.get_resident_on(other) in hosts[:2]
    x.VM.power_state_reset(vm)
    assert x.VM.get_power_state(vm) == "Halted"
    x.VM.hard_shutdown(other)
    # Back up: live again from its greeting.  Its domain outlived the
    # toolstack (as on a real host), so the VM is running there again,
    # and its shutdown runs there (under a new pool session: the
    # master's old one died with the process).
    pool[2].start()
    wait_until(lambda: live(x, slave), timeout=DEAD_AFTER + 15,
               what="the slave live again")
    wait_until(lambda: x.VM.get_power_state(vm) == "Running" and
               x.VM.get_resident_on(vm) == slave, what="the VM found again")
    x.VM.clean_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"


def test_a_hosts_data_sources_are_its_own(x, hosts):
    """host.get_data_sources runs on the host named, whose RRDs they
    are (the master has none of a slave's)."""
    for host in hosts:
        names = wait_until(lambda: {d["name_label"] for d in
                                    x.host.get_data_sources(host)},
                           what="data sources of %s" % host)
        assert "memory_free_kib" in names
