"""
The pool commands of ``xe`` on one pool of three real hosts
(tests/support/pool.py: 127.0.N.2, .3, .4, ports 80/443), in the order
an operator's day runs: the joiners come back as slaves that refuse the
CLI over TCP with HOST_IS_SLAVE and have the master run what comes in
on their local socket; the mastership moves; the emergency commands run
on a slave itself, and one takes over once the master is dead; the
ejected host comes back as a master of its own.  Three hosts, so that
the pool's database keeps a quorum while one of them restarts or dies.
pool-sync-database waits for the slaves' replicas; host-reboot and
host-shutdown restart and stop a host's daemon after XAPI's checks.
The tests run in order on the module's pool.
"""

import os

import pytest

from tests.support.api import wait_until
from tests.support.pool import PoolHosts, pool_session
from tests.support.servers import PASSWORD, USER
from tests.support.xe import api_error, run_xe, xe_in_pty
from tests.test_pool_database import labels
from tests.test_pool_membership import voters
from tests.test_vm_lifecycle import new_vm

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="binds ports 80/443 on 127.0.x.y")

JOINING = ("Host agent will restart and attempt to join pool in 0.5 "
           "seconds...\n")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    hosts = PoolHosts(str(tmp_path_factory.mktemp("clipool")), 3).start()
    try:
        yield hosts
    finally:
        # Nothing is kept: every host and its etcd member die at once
        # (a graceful stop of a pool with a dead member waits out leases).
        for host in hosts:
            host.crash()


def uuids(host):
    rc, out, err = run_xe(host, "host-list", "--minimal")
    assert rc == 0, err
    return sorted(out.strip().split(","))


def own_uuid(host):
    """The host's uuid, asked through its local socket (a slave's
    master answers)."""
    rc, out, err = run_xe(host, "host-list", "--minimal",
                          "address=" + host.address, local=True, auth=False)
    assert rc == 0 and out.count("-") == 4, (rc, out, err)
    return out.strip()


def join(joiner, master):
    return run_xe(joiner, "pool-join", "master-address=" + master.address,
                  "master-username=" + USER, "master-password=" + PASSWORD)


def test_join_and_the_slaves_local_socket(pool, tmp_path):
    master, joiner, other = pool
    assert run_xe(master, "pool-emergency-transition-to-master") == (
        0, "Host agent is already master. Use '--force' to execute the "
           "operation anyway.\n", "")
    joiner_uuid = own_uuid(joiner)
    assert join(joiner, master) == (0, JOINING, "")
    assert join(other, master) == (0, JOINING, "")
    joiner.restart()
    other.restart()
    assert joiner_uuid in uuids(master) and len(uuids(master)) == 3
    wait_until(lambda: len(voters(master.address)) == 3, timeout=30,
               what="three etcd voters")
    # pool-sync-database answers once every slave's replica holds what
    # the master has written.
    assert run_xe(master, "network-create", "name-label=synced")[0] == 0
    assert run_xe(master, "pool-sync-database") == (0, "", "")
    for slave in (joiner, other):
        assert "synced" in labels(pool_session(slave).xenapi)
    assert joiner.role() == "slave:" + master.address
    assert run_xe(joiner, "host-list") == (
        1, "", api_error("HOST_IS_SLAVE", master.address))
    # On the slave's local socket the master runs the command.
    rc, out, err = run_xe(joiner, "host-list", "--minimal", local=True,
                          auth=False)
    assert (rc, err) == (0, "")
    assert sorted(out.strip().split(",")) == uuids(master)
    assert run_xe(joiner, "vm-param-get", "uuid=nope", "param-name=uuid",
                  local=True, auth=False) == (
        1, "", api_error("UUID_INVALID", "VM", "nope"))
    assert run_xe(joiner, "vm-nope", local=True, auth=False)[2] == \
        "Unknown command: vm-nope\nFor usage run: 'xe help'\n"
    # The master draws a long command's progress for a terminal there too.
    sr = run_xe(master, "sr-list", "name-label=Local storage",
                "--minimal")[1].split(",")[0].strip()
    rc, drawn = xe_in_pty(joiner, ["sr-scan", "uuid=" + sr], tmp_path,
                          local=True)
    assert rc == 0 and "] 100%  elapsed" in drawn, drawn
    # The emergency commands run on the slave itself over TCP too, with
    # a local login checked there.
    rc, out, err = run_xe(joiner, "pool-emergency-reset-master",
                          "master-address=no-such-host.invalid")
    assert (rc, out) == (1, "") and err.endswith(
        "\nreason: no-such-host.invalid\n")
    assert run_xe(joiner, "pool-emergency-transition-to-master", "-u", USER,
                  "-pw", "wrong", auth=False)[2] == \
        "Authentication failed\nFor usage run: 'xe help'\n"
    assert joiner.role() == "slave:" + master.address


def test_designate_new_master(pool):
    master, joiner, other = pool
    joiner_uuid = own_uuid(joiner)
    assert run_xe(master, "pool-designate-new-master",
                  "host-uuid=" + joiner_uuid) == (0, "", "")
    PoolHosts.restart_together(pool)
    assert run_xe(master, "host-list") == (
        1, "", api_error("HOST_IS_SLAVE", joiner.address))
    assert other.role() == "slave:" + joiner.address
    assert joiner_uuid in uuids(joiner) and len(uuids(joiner)) == 3


def test_eject_and_join_again(pool):
    master, ejected = pool[1], pool[2]
    ejected_uuid = own_uuid(ejected)
    assert run_xe(master, "pool-eject", "host-uuid=" + ejected_uuid,
                  "--force") == (
        0, "Specified host will attempt to restart as a master of a new "
           "pool in 0.5 seconds...\n", "")
    ejected.restart()
    assert ejected_uuid not in uuids(master)
    assert uuids(ejected) == [ejected_uuid]
    assert join(ejected, master) == (0, JOINING, "")
    ejected.restart()
    assert ejected.role() == "slave:" + master.address
    wait_until(lambda: len(voters(master.address)) == 3, timeout=30,
               what="three etcd voters")


def test_emergency_transition_and_recover_slaves(pool):
    # The master (pool[1] since the designation) is gone: root on a
    # slave's local socket needs no password, and that slave is master
    # once restarted.
    old, dead, slave = pool
    slave_uuid, old_uuid = own_uuid(slave), own_uuid(old)
    dead.crash()
    assert run_xe(slave, "pool-emergency-transition-to-master", local=True,
                  auth=False) == (
        0, "Host agent will restart and transition to master in 0.5 "
           "seconds...\n", "")
    slave.restart(timeout=60)
    assert slave.role() == "master"
    assert slave_uuid in uuids(slave)
    # The new master points the other live slave at itself.
    assert run_xe(slave, "pool-recover-slaves") == (0, old_uuid + "\n", "")
    old.restart(timeout=60)
    assert old.role() == "slave:" + slave.address


def test_reboot_and_shutdown_a_host(pool):
    master, host = pool[2], pool[0]
    x = master.session().xenapi
    ref = x.host.get_by_uuid(own_uuid(host))
    uuid = "uuid=" + x.host.get_uuid(ref)
    vm = new_vm(x, "guest")
    x.VM.start_on(vm, ref, False, False)
    assert run_xe(master, "host-reboot", uuid) == (
        1, "", api_error("HOST_NOT_DISABLED"))
    assert run_xe(master, "host-disable", uuid) == (0, "", "")
    # Refs are printed as uuid (name-label).
    assert run_xe(master, "host-reboot", uuid) == (1, "", api_error(
        "HOST_IN_USE", "%s (%s)" % (uuid[5:], x.host.get_name_label(ref)),
        "vm", "%s (guest)" % x.VM.get_uuid(vm)))
    x.VM.hard_shutdown(vm)
    # A reboot restarts the host's daemon; it greets its master, which
    # enables it as a host that boots.
    assert run_xe(master, "host-reboot", uuid) == (0, "", "")
    host.restart()
    assert x.host.get_enabled(ref) is True
    assert host.role() == "slave:" + master.address
    # A shutdown stops it for good, and it is not live from then on.
    assert run_xe(master, "host-disable", uuid) == (0, "", "")
    assert x.host.get_enabled(ref) is False
    assert run_xe(master, "host-shutdown", uuid) == (0, "", "")
    assert host.wait_exit() == 0
    assert x.host_metrics.get_live(x.host.get_metrics(ref)) is False
