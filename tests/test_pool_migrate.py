"""
VM.pool_migrate and host.evacuate across a pool of three real hosts
(tests/support/pool.py), through the XenAPI SDK on the master: a running
VM moves between slaves and to and from the master (its domain leaves
one simulator for the other's, its console follows it), an event.from
watcher on the master never sees it stop running or sit on no host,
XAPI's refusals (a paused or halted VM, a disk on the source's local SR,
too little memory, a bad host, an operation in progress) change
nothing, a destination whose hypervisor cannot take the domain fails
the move with the VM still running on its source, and a host with
several VMs is evacuated after its plan's objections are dealt with.
"""

import http.client
import json
import os
import ssl
import threading

import pytest

from tests.support.api import failure, wait_until
from tests.support.etcd import needs_etcd
from tests.support.pool import joined_pool, pool_session
from tests.test_events import event_from
from tests import test_pool_forwarding as forwarding
from tests.test_pool_forwarding import SERVER_ARGS, add_disk, live, \
    local_sr, memory_free
from tests.test_vm_lifecycle import MIB, new_vm, wait_task
from txxenops.backends.simledger import intervals, overlaps

pytestmark = [needs_etcd, pytest.mark.skipif(
    os.geteuid() != 0, reason="binds ports 80/443 on 127.0.x.y")]

NULL = "OpaqueRef:NULL"
GIB = 1024 * MIB


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    yield from joined_pool(str(tmp_path_factory.mktemp("poolmig")), 3,
                           SERVER_ARGS)


# The forwarding tests' session and host fixtures, on this module's pool.
x = forwarding.x
hosts = forwarding.hosts


def running_on(x, host, name, **kw):
    vm = new_vm(x, name, **kw)
    x.VM.start_on(vm, host, False, False)
    # The guest agent's report is what VM.pool_migrate's feature check
    # reads (an HVM guest without it lacks feature-suspend).
    wait_until(lambda: x.VM.get_guest_metrics(vm) != NULL,
               what="the guest agent of %s" % name)
    return vm


def management_network(x, host):
    pif, = [p for p in x.host.get_PIFs(host) if x.PIF.get_management(p)]
    return x.PIF.get_network(pif)


class Watcher:
    """An event.from loop on the master, in a thread of its own, keeping
    every (power_state, resident_on) it is told of for one VM."""

    def __init__(self, pool, vm):
        self.session = pool[0].session()
        self.vm = vm
        self.seen = []
        self.stopped = threading.Event()
        self.token = event_from(self.session, ["vm"], "", 0.0)["token"]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        token = self.token
        while not self.stopped.is_set():
            reply = event_from(self.session, ["vm"], token, 1.0)
            token = reply["token"]
            for e in reply["events"]:
                if e["ref"] == self.vm and "snapshot" in e:
                    s = e["snapshot"]
                    self.seen.append((s["power_state"], s["resident_on"]))

    def stop(self):
        self.stopped.set()
        self.thread.join(10)
        self.session.xenapi.session.logout()
        return self.seen


def test_a_running_vm_moves_between_hosts_and_keeps_running(pool, x, hosts):
    master, one, two = hosts
    vm = running_on(x, one, "mover", memory=512 * MIB)
    vif = x.VIF.create({
        "device": "0", "network": x.network.get_all()[0], "VM": vm,
        "MAC": "", "MTU": "1500", "other_config": {},
        "qos_algorithm_type": "", "qos_algorithm_params": {}})
    x.VIF.plug(vif)
    before_two = memory_free(x, two)
    started = x.VM_metrics.get_start_time(x.VM.get_metrics(vm))
    uuid = x.VM.get_uuid(vm)
    watcher = Watcher(pool, vm)
    path = [one]
    for target in (two, master, one):
        before = memory_free(x, target)
        x.VM.pool_migrate(vm, target, {"live": "true"})
        assert x.VM.get_resident_on(vm) == target
        assert x.VM.get_power_state(vm) == "Running"
        assert x.VM.get_current_operations(vm) == {}
        assert x.VM.get_scheduled_to_be_resident_on(vm) == NULL
        assert x.host.get_current_operations(target) == {}
        assert x.VIF.get_currently_attached(vif)
        # Its domain is in the destination's simulator now.
        wait_until(lambda: memory_free(x, target) <= before - 512 * MIB,
                   what="the domain on %s" % target)
        metrics = x.VM_metrics.get_record(x.VM.get_metrics(vm))
        assert metrics["memory_actual"] == str(512 * MIB)
        # The guest goes on: it booted when it booted.
        assert metrics["start_time"] == started
        address = x.host.get_address(target)
        for console in x.VM.get_consoles(vm):
            assert x.console.get_location(console).startswith(
                "https://%s/" % address)
        path.append(target)
    wait_until(lambda: memory_free(x, two) >= before_two,
               what="the domain gone from %s" % two)
    # One VM_MIGRATED per move, on the master, naming both hosts.
    uuid = x.VM.get_uuid(vm)
    bodies = [m["body"] for m in x.message.get_all_records().values()
              if m["name"] == "VM_MIGRATED" and m["obj_uuid"] == uuid]

    def named(h):
        return "host '%s' (uuid: %s)" % (x.host.get_name_label(h),
                                        x.host.get_uuid(h))
    assert sorted(bodies) == sorted(
        "VM 'mover' (uuid: %s) migrated from %s to %s" % (
            uuid, named(source), named(target))
        for source, target in zip(path, path[1:])), bodies
    seen = watcher.stop()
    x.VM.clean_shutdown(vm)
    x.VM.destroy(vm)
    assert seen, "the watcher saw nothing"
    assert {state for state, _ in seen} == {"Running"}, seen
    # On one host at a time, in the order of the moves.
    residences = [h for i, (_, h) in enumerate(seen)
                  if i == 0 or seen[i - 1][1] != h]
    assert any(path[i:i + len(residences)] == residences
               for i in range(len(path))), (residences, path)
    # The simulators' ledgers have it hand over at each move: never on
    # two hosts at once.
    uuid_runs = [h for h in pool
                 if any(r[0] == uuid for r in intervals(_ledger(h)))]
    assert len(uuid_runs) == 3
    assert overlaps({h.address: _ledger(h) for h in pool}) == []


def _ledger(host):
    return os.path.join(host.data_dir, "xenops")


def test_refusals_change_nothing(x, hosts):
    master, one, two = hosts
    vm = running_on(x, one, "refused")
    assert failure(x.VM.pool_migrate, vm, "OpaqueRef:nonsense", {}) == [
        "HANDLE_INVALID", "host", "OpaqueRef:nonsense"]
    # XAPI migrates running VMs only.
    x.VM.pause(vm)
    assert failure(x.VM.pool_migrate, vm, two, {}) == [
        "VM_BAD_POWER_STATE", vm, "running", "paused"]
    x.VM.unpause(vm)
    # A disk on the source's local SR cannot follow the VM.
    sr = local_sr(x, one)
    vdi = add_disk(x, vm, sr)
    assert failure(x.VM.pool_migrate, vm, two, {}) == [
        "VM_REQUIRES_SR", vm, sr]
    x.VBD.destroy(x.VDI.get_VBDs(vdi)[0])
    x.VDI.destroy(vdi)
    # Another operation in progress on the VM.
    hung = running_on(x, one, "hung", other={"simulator-hung": "true"})
    task = x.Async.VM.clean_shutdown(hung)
    wait_until(lambda: x.VM.get_current_operations(hung), what="the mark")
    error = failure(x.VM.pool_migrate, hung, two, {})
    assert error[:4] == ["OTHER_OPERATION_IN_PROGRESS", "VM", hung,
                         "clean_shutdown"], error
    x.task.cancel(task)
    wait_task(x, task)
    assert x.VM.get_resident_on(vm) == one
    assert x.VM.get_resident_on(hung) == one
    x.VM.hard_shutdown(hung)
    x.VM.destroy(hung)
    # Not enough memory on the destination by the toolstack's count.
    big = new_vm(x, "big", memory=8 * GIB)
    free = int(x.host.compute_free_memory(two))
    filler = new_vm(x, "filler", memory=free - 4 * GIB)
    x.VM.start_on(filler, two, False, False)
    x.VM.start_on(big, one, False, False)
    error = failure(x.VM.pool_migrate, big, two, {})
    assert error[0] == "HOST_NOT_ENOUGH_FREE_MEMORY", error
    assert x.VM.get_resident_on(big) == one
    assert x.VM.get_scheduled_to_be_resident_on(big) == NULL
    for ref in (big, filler, vm):
        x.VM.hard_shutdown(ref)
        x.VM.destroy(ref)
    # Over a network the destination has no interface on.
    lonely = x.network.create({"name_label": "lonely", "name_description": "",
                               "MTU": "1500", "other_config": {},
                               "tags": []})
    moving = running_on(x, one, "moving")
    assert failure(x.VM.pool_migrate, moving, two, {"network": lonely}) == [
        "PIF_NOT_PRESENT", two, lonely]
    # Over its management network: its address there.
    x.VM.pool_migrate(moving, two, {"network": management_network(x, two)})
    assert x.VM.get_resident_on(moving) == two
    x.VM.hard_shutdown(moving)
    x.VM.destroy(moving)
    x.network.destroy(lonely)
    halted = new_vm(x, "halted")
    assert failure(x.VM.pool_migrate, halted, two, {}) == [
        "VM_BAD_POWER_STATE", halted, "running", "halted"]
    # force leaves that one too.
    assert failure(x.VM.pool_migrate, halted, two, {"force": "true"}) == [
        "VM_BAD_POWER_STATE", halted, "running", "halted"]
    x.VM.destroy(halted)


def test_force_moves_a_guest_that_lacks_the_feature(x, hosts):
    """An HVM guest without its agent lacks feature-suspend: refused, as
    XAPI's strict check does, unless ``force`` is "true" (XAPI's boolean;
    any other value is false), which moves it; no VM_MIGRATED for the
    refusals."""
    master, one, two = hosts
    vm = new_vm(x, "agentless", other={"simulator-no-agent": "true"},
                 HVM_boot_policy="BIOS order")
    x.VM.start_on(vm, one, False, False)
    for options in ({}, {"force": "false"}, {"force": "yes"}):
        assert failure(x.VM.pool_migrate, vm, two, options) == [
            "VM_LACKS_FEATURE", vm], options
    assert x.VM.get_resident_on(vm) == one
    assert x.VM.get_current_operations(vm) == {}
    x.VM.pool_migrate(vm, two, {"force": "true"})
    assert x.VM.get_resident_on(vm) == two
    assert x.VM.get_power_state(vm) == "Running"
    uuid = x.VM.get_uuid(vm)
    assert len([m for m in x.message.get_all_records().values()
                if m["name"] == "VM_MIGRATED" and m["obj_uuid"] == uuid]) == 1
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_a_failed_move_leaves_the_vm_running_on_its_source(pool, x, hosts):
    """The destination's simulator has less room than the toolstack's
    count says (the VM got more than its dynamic_min at its start, and a
    saved guest needs all it had): it refuses the domain, the move fails
    with VM_MIGRATE_FAILED, and the VM runs on where it was."""
    master, one, two = hosts
    free = int(x.host.compute_free_memory(two))
    filler = new_vm(x, "filler", memory=free - 2 * GIB)
    x.VM.start_on(filler, two, False, False)
    vm = new_vm(x, "balloon", memory=8 * GIB)
    x.VM.set_memory_limits(vm, str(256 * MIB), str(8 * GIB),
                           str(256 * MIB), str(8 * GIB))
    x.VM.start_on(vm, one, False, False)
    wait_until(lambda: x.VM.get_guest_metrics(vm) != NULL, what="agent")
    domid = x.VM.get_domid(vm)
    two_free = memory_free(x, two)
    error = failure(x.VM.pool_migrate, vm, two, {})
    assert error[:4] == ["VM_MIGRATE_FAILED", vm, one, two], error
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VM.get_resident_on(vm) == one
    assert x.VM.get_domid(vm) == domid
    assert x.VM.get_current_operations(vm) == {}
    assert x.VM.get_scheduled_to_be_resident_on(vm) == NULL
    assert x.host.get_current_operations(two) == {}
    # Nothing left on the destination.
    assert memory_free(x, two) == two_free
    for ref in (vm, filler):
        x.VM.hard_shutdown(ref)
        x.VM.destroy(ref)


def test_evacuate_a_host_with_several_vms(x, hosts):
    master, one, two = hosts
    vms = [running_on(x, one, "evacuee-%d" % i) for i in range(4)]
    paused = vms[-1]
    x.VM.pause(paused)
    assert x.host.get_vms_which_prevent_evacuation(one) == {
        paused: ["VM_BAD_POWER_STATE", paused, "running", "paused"]}
    assert failure(x.host.assert_can_evacuate, one) == [
        "CANNOT_EVACUATE_HOST",
        "VM_BAD_POWER_STATE,%s,running,paused" % paused]
    assert failure(x.host.evacuate, one, NULL, 0) == [
        "VM_BAD_POWER_STATE", paused, "running", "paused"]
    assert all(x.VM.get_resident_on(vm) == one for vm in vms)
    x.VM.unpause(paused)
    assert x.host.get_vms_which_prevent_evacuation(one) == {}
    x.host.assert_can_evacuate(one)
    task = x.Async.host.evacuate(one, management_network(x, one), 2)
    record = wait_task(x, task, timeout=60)
    assert record["status"] == "success", record["error_info"]
    for vm in vms:
        assert x.VM.get_power_state(vm) == "Running"
        assert x.VM.get_resident_on(vm) in (master, two)
    assert x.host.get_resident_VMs(one) == [x.host.get_control_domain(one)]
    assert x.host.get_current_operations(one) == {}
    # Nothing left to move: evacuating again does nothing.
    x.host.evacuate(one, NULL, 0)
    for vm in vms:
        x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)


def test_a_disk_on_a_shared_sr_follows_its_vm(x, hosts, tmp_path):
    """The source lets its disk go before the destination takes it: the
    shared SR's record of who has the VDI active moves with the VM."""
    master, one, two = hosts
    sr = x.SR.create(master, {"location": str(tmp_path)}, "0", "shared",
                     "", "sharedfile", "user", True, {})
    for pbd in x.SR.get_PBDs(sr):
        if not x.PBD.get_currently_attached(pbd):
            x.PBD.plug(pbd)
    vm = new_vm(x, "with-disk")
    vdi = add_disk(x, vm, sr)
    x.VM.start_on(vm, one, False, False)
    wait_until(lambda: x.VM.get_guest_metrics(vm) != NULL, what="agent")
    vbd, = x.VM.get_VBDs(vm)
    active = tmp_path / x.SR.get_uuid(sr) / (x.VDI.get_location(vdi) +
                                             ".active")

    def holders():
        return sorted(json.loads(active.read_text()).values())
    assert holders() == ["RW"]
    before = active.read_text()
    for target in (two, master):
        x.VM.pool_migrate(vm, target, {})
        assert x.VM.get_resident_on(vm) == target
        assert x.VM.get_power_state(vm) == "Running"
        assert x.VBD.get_currently_attached(vbd)
        # Active on one host, the destination, and no longer the source.
        assert holders() == ["RW"]
        assert active.read_text() != before
        before = active.read_text()
    x.VM.clean_shutdown(vm)
    wait_until(lambda: not active.exists(), what="the VDI deactivated")
    x.VBD.destroy(vbd)
    x.VDI.destroy(vdi)
    x.VM.destroy(vm)


def test_a_move_can_be_cancelled_and_an_evacuation_holds_its_host(
        pool, x, hosts):
    """A VM whose move takes a while (simulator-migrate-delay): a cancel
    of the client's task reaches its host and the VM stays there; while
    its host is evacuated, nothing may start on or move to that host."""
    master, one, two = hosts
    slow = running_on(x, one, "slow",
                      other={"simulator-migrate-delay": "3"})
    two_free = memory_free(x, two)
    task = x.Async.VM.pool_migrate(slow, two, {})
    y = pool_session(pool[1]).xenapi
    wait_until(lambda: task in y.task.get_all() and
               "cancel" in y.task.get_allowed_operations(task),
               what="the move cancellable on its host")
    assert list(x.host.get_current_operations(two).values()) == [
        "vm_migrate"]
    assert x.VM.get_scheduled_to_be_resident_on(slow) == two
    x.task.cancel(task)
    record = wait_task(x, task)
    assert record["status"] == "cancelled", record
    assert x.VM.get_resident_on(slow) == one
    assert x.VM.get_power_state(slow) == "Running"
    assert x.VM.get_current_operations(slow) == {}
    assert x.VM.get_scheduled_to_be_resident_on(slow) == NULL
    assert x.host.get_current_operations(two) == {}
    assert memory_free(x, two) == two_free
    # Now an evacuation of its host, which takes as long.
    task = x.Async.host.evacuate(one, NULL, 0)
    wait_until(lambda: "evacuate" in x.host.get_current_operations(
        one).values(), what="the evacuation under way")
    newcomer = new_vm(x, "newcomer")
    assert failure(x.VM.start_on, newcomer, one, False, False) == [
        "HOST_EVACUATE_IN_PROGRESS", one]
    other = running_on(x, two, "other")
    error = failure(x.VM.pool_migrate, other, one, {})
    assert error[:4] == ["OTHER_OPERATION_IN_PROGRESS", "host", one,
                         "evacuate"], error
    record = wait_task(x, task)
    assert record["status"] == "success", record["error_info"]
    assert x.VM.get_resident_on(slow) in (master, two)
    assert x.host.get_current_operations(one) == {}
    for vm in (slow, other):
        x.VM.hard_shutdown(vm)
    for vm in (slow, other, newcomer):
        x.VM.destroy(vm)


def put_memory(address, uuid, cookie=None):
    """A PUT to a host's memory receiver: (status, body)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(address, 443, context=context,
                                       timeout=10)
    headers = {"Cookie": cookie} if cookie else {}
    conn.request("PUT", "/services/xenops/memory/" + uuid, headers=headers)
    response = conn.getresponse()
    try:
        return response.status, response.read()
    finally:
        conn.close()


def test_the_memory_receiver_takes_pool_sessions_only(pool, x, hosts):
    vm = running_on(x, hosts[1], "received")
    uuid = x.VM.get_uuid(vm)
    address = pool[2].address
    assert put_memory(address, uuid)[0] == 401
    assert put_memory(address, uuid, "pool_secret=wrong")[0] == 401
    # A pool-admin's session (on the master, where it is valid) is no
    # host's.
    user = pool[0].session()
    try:
        status, _ = put_memory(pool[0].address, uuid,
                               "session_id=" + user._session)
    finally:
        user.xenapi.session.logout()
    assert status == 403
    with open(os.path.join(pool[2].data_dir, "ptoken")) as f:
        secret = f.read().strip()
    status, body = put_memory(address, "no-such-vm", "pool_secret=" + secret)
    assert status == 404, body
    # Not running elsewhere: already on the receiving host, or halted.
    x.VM.pool_migrate(vm, hosts[2], {})
    assert put_memory(address, uuid, "pool_secret=" + secret)[0] == 409
    assert x.VM.get_power_state(vm) == "Running"
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_a_dead_host_neither_sends_nor_receives(pool, x, hosts):
    """Last: a slave is killed.  A move to it is HOST_NOT_LIVE (the
    destination check), one of its VMs HOST_OFFLINE (its host runs the
    move); evacuating the other slave plans around it."""
    master, one, two = hosts
    stranded = running_on(x, two, "stranded")
    vm = running_on(x, one, "alive")
    pool[2].kill()
    wait_until(lambda: not live(x, two), timeout=20,
               what="the killed slave not live")
    assert failure(x.VM.pool_migrate, vm, two, {}) == ["HOST_NOT_LIVE"]
    assert failure(x.VM.pool_migrate, stranded, one, {}) == [
        "HOST_OFFLINE", two]
    assert x.VM.get_current_operations(vm) == {}
    assert x.host.get_current_operations(two) == {}
    assert x.host.get_vms_which_prevent_evacuation(one) == {
        vm: ["HOST_NOT_LIVE"]}
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_a_host_alone_has_nowhere_to_evacuate_to(xapi):
    """A pool of one (conftest's server): its running VM can go nowhere."""
    lone = xapi.xenapi
    host, = lone.host.get_all()
    vm = new_vm(lone, "alone")
    lone.VM.start(vm, False, False)
    assert lone.host.get_vms_which_prevent_evacuation(host) == {
        vm: ["NO_HOSTS_AVAILABLE", vm]}
    assert failure(lone.host.assert_can_evacuate, host) == [
        "CANNOT_EVACUATE_HOST", "NO_HOSTS_AVAILABLE," + vm]
    assert failure(lone.host.evacuate, host, NULL, 0) == [
        "NO_HOSTS_AVAILABLE", vm]
    assert lone.host.get_current_operations(host) == {}
    # Its own host is where XAPI's localhost migration takes it.
    lone.VM.pool_migrate(vm, host, {})
    assert lone.VM.get_power_state(vm) == "Running"
    lone.VM.hard_shutdown(vm)
    lone.VM.destroy(vm)
