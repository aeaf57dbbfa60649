"""
pool-join and pool-eject through ``xe`` on two real hosts
(tests/support/pool.py: 127.0.N.2 and .3, ports 80/443): the joiner
comes back as a slave that refuses the CLI over TCP with HOST_IS_SLAVE
and has the master run what comes in on its local socket, and the ejected
host as a master of its own.
"""

import os

import pytest

from tests.support.pool import PoolHosts, started_pool
from tests.support.servers import PASSWORD, USER
from tests.support.xe import run_xe

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="binds ports 80/443 on 127.0.0.x")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    yield from started_pool(str(tmp_path_factory.mktemp("clipool")), 2)


def uuids(host):
    rc, out, err = run_xe(host, "host-list", "--minimal")
    assert rc == 0, err
    return sorted(out.strip().split(","))


def test_join_then_eject(pool):
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
        1, "", "Error code: HOST_IS_SLAVE\nError parameters: %s\n"
        % master.address)
    # On the slave's local socket the master runs the command.
    rc, out, err = run_xe(joiner, "host-list", "--minimal", local=True,
                          auth=False)
    assert (rc, err) == (0, "")
    assert sorted(out.strip().split(",")) == uuids(master)
    assert run_xe(joiner, "vm-param-get", "uuid=nope", "param-name=uuid",
                  local=True, auth=False) == (
        1, "", "Error code: UUID_INVALID\nError parameters: VM, nope\n")
    assert run_xe(joiner, "vm-nope", local=True, auth=False)[2] == \
        "Unknown command: vm-nope\nFor usage run: 'xe help'\n"
    # The mastership moves to the joiner and back.
    [master_uuid] = [u for u in uuids(master) if u != joiner_uuid]
    for new, old, new_uuid in ((joiner, master, joiner_uuid),
                               (master, joiner, master_uuid)):
        assert run_xe(old, "pool-designate-new-master",
                      "host-uuid=" + new_uuid) == (0, "", "")
        PoolHosts.restart_together([old, new])
        assert run_xe(old, "host-list") == (
            1, "", "Error code: HOST_IS_SLAVE\nError parameters: %s\n"
            % new.address)
        assert uuids(new) == sorted([master_uuid, joiner_uuid])
    assert run_xe(master, "pool-eject", "host-uuid=" + joiner_uuid,
                  "--force") == (
        0, "Specified host will attempt to restart as a master of a new "
           "pool in 0.5 seconds...\n", "")
    joiner.restart()
    assert joiner_uuid not in uuids(master)
    assert uuids(joiner) == [joiner_uuid]
