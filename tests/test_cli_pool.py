"""
pool-join and pool-eject through ``xe`` on real hosts
(tests/support/pool.py: 127.0.N.2, .3, ..., ports 80/443): the joiner
comes back as a slave that refuses the CLI over TCP with HOST_IS_SLAVE
and has the master run what comes in on its local socket, and the ejected
host as a master of its own; the emergency commands run on a slave
itself, and one takes over once the master is dead.
"""

import os

import pytest

from tests.support.pool import PoolHosts, started_pool
from tests.support.servers import PASSWORD, USER
from tests.support.xe import api_error, run_xe, xe_in_pty
from tests.test_pool_join import role_of

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="binds ports 80/443 on 127.0.0.x")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    yield from started_pool(str(tmp_path_factory.mktemp("clipool")), 3)


def uuids(host):
    rc, out, err = run_xe(host, "host-list", "--minimal")
    assert rc == 0, err
    return sorted(out.strip().split(","))


def test_join_then_eject(pool, tmp_path):
    master, joiner = pool[0], pool[1]
    [joiner_uuid] = uuids(joiner)
    assert run_xe(joiner, "pool-join", "master-address=" + master.address,
                  "master-username=" + USER,
                  "master-password=" + PASSWORD) == (
        0, "Host agent will restart and attempt to join pool in 0.5 "
           "seconds...\n", "")
    joiner.restart()
    assert joiner_uuid in uuids(master) and len(uuids(master)) == 2
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
    # The mastership moves to the joiner and back.
    [master_uuid] = [u for u in uuids(master) if u != joiner_uuid]
    for new, old, new_uuid in ((joiner, master, joiner_uuid),
                               (master, joiner, master_uuid)):
        assert run_xe(old, "pool-designate-new-master",
                      "host-uuid=" + new_uuid) == (0, "", "")
        PoolHosts.restart_together([old, new])
        assert run_xe(old, "host-list") == (
            1, "", api_error("HOST_IS_SLAVE", new.address))
        assert uuids(new) == sorted([master_uuid, joiner_uuid])
    assert run_xe(master, "pool-eject", "host-uuid=" + joiner_uuid,
                  "--force") == (
        0, "Specified host will attempt to restart as a master of a new "
           "pool in 0.5 seconds...\n", "")
    joiner.restart()
    assert joiner_uuid not in uuids(master)
    assert uuids(joiner) == [joiner_uuid]


def test_emergency_commands_run_on_the_slave_itself(pool):
    # Three hosts: the pool's database keeps a quorum without its master.
    master, slave, other = pool[0], pool[1], pool[2]
    [slave_uuid], [other_uuid] = uuids(slave), uuids(other)
    assert run_xe(master, "pool-emergency-transition-to-master") == (
        0, "Host agent is already master. Use '--force' to execute the "
           "operation anyway.\n", "")
    for joiner in (slave, other):
        assert run_xe(joiner, "pool-join", "master-address=" + master.address,
                      "master-username=" + USER,
                      "master-password=" + PASSWORD)[0] == 0
        joiner.restart()
    assert role_of(slave) == "slave:" + master.address
    # Over TCP too, with a local login checked on the slave itself.
    rc, out, err = run_xe(slave, "pool-emergency-reset-master",
                          "master-address=no-such-host.invalid")
    assert (rc, out) == (1, "") and err.endswith(
        "\nreason: no-such-host.invalid\n")
    assert run_xe(slave, "pool-emergency-transition-to-master", "-u", USER,
                  "-pw", "wrong", auth=False)[2] == \
        "Authentication failed\nFor usage run: 'xe help'\n"
    assert role_of(slave) == "slave:" + master.address
    # The master is gone: root on the slave's local socket needs no
    # password, and the slave is master once restarted.
    master.kill()
    assert run_xe(slave, "pool-emergency-transition-to-master", local=True,
                  auth=False) == (
        0, "Host agent will restart and transition to master in 0.5 "
           "seconds...\n", "")
    slave.restart(timeout=60)
    assert role_of(slave) == "master"
    assert slave_uuid in uuids(slave)
    # The new master points the other slave at itself.
    assert run_xe(slave, "pool-recover-slaves") == (0, other_uuid + "\n", "")
    other.restart(timeout=60)
    assert role_of(other) == "slave:" + slave.address
