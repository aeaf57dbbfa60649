"""
``xe vm-migrate`` with storage motion (remote-master=...) on two real
hosts that are each the master of a pool of their own
(tests/support/pool.py: 127.0.N.2 and .3 on ports 80/443, where the CLI
server reaches a remote master): to this same pool's master, which the
server's VM.migrate_send carries out, the disk moving to the SR the
vdi: map names; with the remote side's refusals as xe prints them; and
to the other pool, where xe prints whatever the server answers.
"""

import os

import pytest
import XenAPI

from tests.support.pool import PoolHosts
from tests.support.servers import PASSWORD, USER
from tests.support.xe import api_error, ok, run_xe
from tests.test_pool_forwarding import add_disk, local_sr
from tests.test_vm_lifecycle import new_vm

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="binds ports 80/443 on 127.0.x.y")

STORAGE_MOTION = ("Performing a storage live migration. Your VM's VDIs "
                  "will be migrated with the VM.\n")


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    hosts = PoolHosts(str(tmp_path_factory.mktemp("climigrate")), 2).start()
    try:
        yield hosts
    finally:
        hosts.stop()


def migrate(host, vm_uuid, remote, *more, password=PASSWORD):
    return run_xe(host, "vm-migrate", "uuid=" + vm_uuid,
                  "remote-master=" + remote.address,
                  "remote-username=" + USER, "remote-password=" + password,
                  *more)


def management_network(x, host):
    return x.PIF.get_network([p for p in x.host.get_PIFs(host)
                              if x.PIF.get_management(p)][0])


def mapping_head(x, host):
    network = management_network(x, host)
    return ("Will migrate to remote host: %s, using remote network: %s. "
            "Here is the VDI mapping:\n" % (x.host.get_name_label(host),
                                            x.network.get_name_label(network)))


def test_to_this_pools_master(pools, tmp_path):
    host = pools[0]
    x = host.session().xenapi
    [me] = x.host.get_all()
    vm = new_vm(x, "mover")
    uuid = x.VM.get_uuid(vm)
    vdi = add_disk(x, vm, local_sr(x, me))
    vdi_uuid = x.VDI.get_uuid(vdi)
    other = ok(host, "sr-create", "name-label=second", "type=file",
               "device-config:location=%s" % (tmp_path / "second")).strip()
    # The remote side's refusals: its login, its host and network.
    assert migrate(host, uuid, host, password="wrong") == (
        1, STORAGE_MOTION, "Authentication failed\nFor usage run: 'xe "
                           "help'\n")
    assert migrate(host, uuid, host, "host=nowhere") == (
        1, STORAGE_MOTION, "Error: Failed to find host: nowhere\n")
    assert migrate(host, uuid, host, "remote-network=nowhere") == (
        1, STORAGE_MOTION, "Error: Failed to find network: nowhere\n")
    assert migrate(host, uuid, host, "vdi:%s=%s" % (vdi_uuid, uuid)) == (
        1, STORAGE_MOTION, api_error("UUID_INVALID", "SR", uuid))
    assert x.VBD.get_VDI(x.VM.get_VBDs(vm)[0]) == vdi
    # The disk moves to the SR the map names; the VM stays (a halted VM
    # to the host it is on).
    rc, out, err = migrate(host, uuid, host,
                           "host=" + x.host.get_name_label(me),
                           "vdi:%s=%s" % (vdi_uuid, other))
    assert (rc, err) == (0, ""), err
    assert out == STORAGE_MOTION + mapping_head(x, me) + \
        "VDI %s -> SR %s\n" % (vdi_uuid, other)
    [vbd] = x.VM.get_VBDs(vm)
    moved = x.VBD.get_VDI(vbd)
    assert moved != vdi and x.SR.get_uuid(x.VDI.get_SR(moved)) == other
    assert vdi not in x.VDI.get_all()
    # No vdi: map: the disk goes to the destination's preferred SR, the
    # attached local one with the most free space.
    free = {sr: int(x.SR.get_physical_size(sr)) -
            int(x.SR.get_physical_utilisation(sr))
            for sr in (local_sr(x, me), x.SR.get_by_uuid(other))}
    preferred = max(free, key=free.get)
    moved_uuid = x.VDI.get_uuid(moved)
    rc, out, err = migrate(host, uuid, host)
    assert (rc, err) == (0, ""), err
    assert out == STORAGE_MOTION + mapping_head(x, me) + \
        "VDI %s -> SR %s\n" % (moved_uuid, x.SR.get_uuid(preferred))
    assert x.VDI.get_SR(x.VBD.get_VDI(vbd)) == preferred
    x.VM.destroy(vm)


def test_to_another_pool(pools):
    source, dest = pools
    x, y = source.session().xenapi, dest.session().xenapi
    [there] = y.host.get_all()
    vm, twin = new_vm(x, "leaver"), new_vm(x, "twin")
    # What the server answers to the call xe makes, asked of the twin.
    network = management_network(y, there)
    options = {"force": "false", "live": "false", "copy": "false"}
    token = y.host.migrate_receive(there, network, options)
    try:
        x.VM.migrate_send(twin, token, True, {}, {}, options, {})
        expected = None
    except XenAPI.Failure as e:
        expected = api_error(*e.details)
    uuid = x.VM.get_uuid(vm)
    rc, out, err = migrate(source, uuid, dest)
    assert out == STORAGE_MOTION + mapping_head(y, there)
    if expected is None:
        assert (rc, err) == (0, "")
        assert y.VM.get_by_uuid(uuid)
    else:
        assert (rc, err) == (1, expected)
        assert x.VM.get_power_state(vm) == "Halted"
