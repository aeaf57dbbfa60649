"""
RRDs following their VMs across a pool of three real hosts, read with
real curl: a VM stopped on a slave has its RRD archived to the master,
which answers /vm_rrd for it while the slave holds none; started on the
slave again, the slave takes the history back; VM.pool_migrate carries
it to the destination; and a slave restarted without its RRD file takes
its host RRD back from the master's backup (made as it stopped;
host.backup_rrds makes one too).  PUT
/rrd refuses what XAPI's refuses, keeping nothing.  Last, the mastership
moved (pool.designate_new_master) and back: the new master has what the
old one kept for the pool.

The hosts sample every second, so the finest archive holds a row a
second and the history is counted in its known rows.
"""

import contextlib
import json
import os
import shutil
import subprocess
import time

import pytest

from tests.support.api import wait_until
from tests.support.etcd import needs_etcd
from tests.support.pool import PoolHosts, module_pool
from tests import test_pool_forwarding as forwarding
from tests.test_pool_forwarding import SERVER_ARGS
from tests.test_pool_handlers import url
from tests.test_pool_migrate import running_on
from tests.test_vm_lifecycle import new_vm
from txxapi.metrics import storage

pytestmark = [needs_etcd, pytest.mark.skipif(
    os.geteuid() != 0, reason="binds ports 80/443 on 127.0.x.y")]

x = forwarding.x
hosts = forwarding.hosts


@pytest.fixture(scope="module")
def client(pool, x):
    """A session on the master, of this module's own: the last test
    reconnects it once the pool has restarted."""
    session = pool[0].session()
    yield session
    session.xenapi.session.logout()


@pytest.fixture(scope="module")
def sid(client):
    """The session as a client passes it in a URL."""
    return client._session


pool = module_pool("poolrrd", 3, SERVER_ARGS)


def fetch(host, path, **query):
    """(HTTP status, redirects followed, the host that answered, the RRD
    as JSON or None) of curl -L on ``host``."""
    proc = subprocess.run(
        ["curl", "-sS", "-k", "-L", "-w", "\n%{http_code} %{num_redirects}"
         " %{url_effective}", url(host, path, **query)],
        capture_output=True, text=True, timeout=30)
    body, _, tail = proc.stdout.rpartition("\n")
    code, redirects, effective = tail.split()
    answered = effective.split("/")[2]
    return int(code), int(redirects), answered, \
        json.loads(body) if code == "200" else None


def history(rrd, source="memory"):
    """The known rows of ``source`` in the finest archive, and the newest
    one's time."""
    names = [ds["name"] for ds in rrd["ds"]]
    i = names.index(source)
    finest = min(rrd["rra"], key=lambda a: int(a["pdp_per_row"]))
    return sum(1 for row in finest["database"] if row[i] != "NaN")


def rrd_of(pool, sid, vm_uuid, host=0, redirects=0, at=None, least=1):
    """The VM's RRD asked of ``pool[host]``, once it has ``least`` known
    rows: answered after ``redirects`` 302s by the host at ``at``."""
    found = []

    def answered():
        code, hops, where, rrd = fetch(pool[host], "/vm_rrd",
                                       session_id=sid, uuid=vm_uuid)
        found[:] = [code, hops, where]
        return code == 200 and history(rrd) >= least and rrd
    rrd = wait_until(answered, what="the RRD of %s" % vm_uuid)
    assert found[1:] == [redirects, pool[host if at is None else at].address]
    return rrd


def test_a_vms_rrd_is_archived_on_the_master_and_follows_it(pool, x, sid,
                                                            hosts):
    master, one, _ = hosts
    vm = running_on(x, one, "graphed")
    uuid = x.VM.get_uuid(vm)
    ran = history(rrd_of(pool, sid, uuid, redirects=1, at=1, least=3))

    # Stopped on the slave: the master answers it from its archive, and
    # the slave, holding none now, sends the client there.
    x.VM.hard_shutdown(vm)
    archived = history(rrd_of(pool, sid, uuid, least=ran))
    code, hops, where, _ = fetch(pool[1], "/vm_rrd", session_id=sid,
                                 uuid=uuid)
    assert (code, hops, where) == (200, 1, pool[0].address)

    # Started there again: the slave takes the history back.
    x.VM.start_on(vm, one, False, False)
    wait_until(lambda: x.VM.get_guest_metrics(vm) != "OpaqueRef:NULL",
               what="the guest agent")
    moved_at = history(rrd_of(pool, sid, uuid, host=1, least=archived + 1))

    # Moved to the master and back to the slave: each destination has it
    # all as the move returns.
    x.VM.pool_migrate(vm, master, {"live": "true"})
    code, hops, where, rrd = fetch(pool[0], "/vm_rrd", session_id=sid,
                                   uuid=uuid)
    assert (code, hops) == (200, 0) and history(rrd) >= moved_at
    x.VM.pool_migrate(vm, one, {"live": "true"})
    code, hops, where, rrd = fetch(pool[1], "/vm_rrd", session_id=sid,
                                   uuid=uuid)
    assert (code, hops, where) == (200, 0, pool[1].address)
    assert history(rrd) >= moved_at
    # Asked of the master, sent to the slave, which has it.
    rrd_of(pool, sid, uuid, redirects=1, at=1, least=moved_at)
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def secret_cookie(pool):
    with open(os.path.join(pool[0].data_dir, "ptoken")) as f:
        return "pool_secret=" + f.read().strip()


def test_a_slave_without_its_rrds_takes_them_back_from_the_master(
        pool, x, sid, hosts):
    slave = pool[2]
    # host.backup_rrds: the slave's RRDs on the master, as it keeps them
    # (its host's, its SRs').
    x.host.backup_rrds(hosts[2], 0.0)
    uuid = x.host.get_uuid(hosts[2])

    def backed_up():
        proc = subprocess.run(
            ["curl", "-sS", "-k", "--cookie", secret_cookie(pool),
             url(pool[0], "/host_rrd", uuid=uuid, dbsync="true")],
            capture_output=True, timeout=30)
        try:
            return storage.from_xml(proc.stdout)
        except ValueError:
            return None
    kept = wait_until(backed_up, what="the master's copy")
    assert "memory_total_kib" in kept.names()

    # An SR plugged there only (a local one) is in it too.
    sr = min(pbd["SR"] for pbd in x.PBD.get_all_records_where(
        'field "host" = "%s"' % hosts[2]).values()
        if pbd["currently_attached"] and len(x.SR.get_PBDs(pbd["SR"])) == 1)
    sr_uuid = x.SR.get_uuid(sr)

    def host_history(path="/host_rrd", source="memory_total_kib", **query):
        code, _, _, rrd = fetch(slave, path, session_id=sid, **query)
        return history(rrd, source) if code == 200 else 0

    def sr_history():
        return host_history("/sr_rrd", "size", uuid=sr_uuid)
    wait_until(lambda: host_history() >= 20 and sr_history() >= 20,
               what="the slave's host RRD")
    x.host.backup_rrds(hosts[2], 0.0)
    wait_until(lambda: dbsync(pool[0], secret_cookie(pool), sr_uuid,
                              "/sr_rrd") == 200, what="the SR's backup")
    stopped = time.monotonic()
    slave.stop()
    shutil.rmtree(storage.directory_in(slave.data_dir))
    slave.start()
    # The rows from before the stop are back: more known rows than a
    # fresh RRD could have.
    assert host_history() > time.monotonic() - stopped + 2
    # Its SRs are plugged after it serves: the SR's RRD is there once
    # the SR is, with the rows from before the stop.
    rows = wait_until(sr_history, what="the SR's RRD after the restart")
    assert rows > time.monotonic() - stopped + 2


def put_rrd(host, body, cookie=None, **query):
    """(HTTP status, Location) of curl's PUT /rrd to ``host``."""
    proc = subprocess.run(
        ["curl", "-sS", "-k", "-o", os.devnull, "-X", "PUT",
         "--data-binary", body, "-w", "%{http_code} %{redirect_url}",
         url(host, "/rrd", **query)] +
        (["--cookie", cookie] if cookie else []),
        capture_output=True, text=True, timeout=30)
    code, _, location = proc.stdout.partition(" ")
    return int(code), location


def test_what_put_rrd_refuses(pool, x, sid, hosts):
    secret = secret_cookie(pool)
    nobody = "0b5e7e1e-0000-4000-8000-00000000dead"
    vm = x.VM.get_uuid(new_vm(x, "unsent"))
    host = x.host.get_uuid(hosts[1])
    assert put_rrd(pool[0], "x", uuid=vm)[0] == 401
    assert put_rrd(pool[0], "x", secret)[0] == 400
    assert put_rrd(pool[0], "x", secret, uuid=nobody)[0] == 404
    assert put_rrd(pool[0], "x", secret, uuid=host)[0] == 400
    # An SR's too: only a backup to keep.
    sr = x.SR.get_uuid(x.SR.get_all()[0])
    assert put_rrd(pool[0], "x", secret, uuid=sr)[0] == 400
    # Not an RRD document: refused, nothing kept.
    assert put_rrd(pool[0], "not an rrd", secret, uuid=vm,
                   archive="true")[0] == 400
    assert fetch(pool[0], "/vm_rrd", session_id=sid, uuid=vm)[0] == 404
    # An archive is the master's to keep: a slave sends it there.
    code, location = put_rrd(pool[1], "x", secret, uuid=vm,
                             archive="true")
    assert code == 302 and location.startswith(
        "https://%s/rrd?uuid=%s&archive=true" % (pool[0].address, vm))
    x.VM.destroy(x.VM.get_by_uuid(vm))


def test_a_new_master_takes_the_pools_archives(pool, x, sid, hosts,
                                               client):
    """Last (it moves the mastership): the RRDs the master kept for the
    pool (a VM stopped there, another host's backup) are the new
    master's once pool.designate_new_master has moved it; its copy of a
    running VM's RRD (a backup) does not replace the running host's."""
    master, one, two = hosts
    vm = running_on(x, master, "kept")
    uuid = x.VM.get_uuid(vm)
    ran = history(rrd_of(pool, sid, uuid, least=3))
    x.VM.hard_shutdown(vm)
    running = x.VM.get_uuid(running_on(x, two, "running"))
    rrd_of(pool, sid, running, redirects=1, at=2, least=3)
    x.host.backup_rrds(two, 0.0)
    secret = secret_cookie(pool)
    wait_until(lambda: dbsync(pool[0], secret, running, "/vm_rrd") == 200,
               what="the master's copy of the running VM's RRD")
    slave_uuid = x.host.get_uuid(two)
    assert dbsync(pool[0], secret, slave_uuid) == 200
    # Rows the copy has not.
    time.sleep(3)
    lived = history(rrd_of(pool, sid, running, host=2, least=3))
    assert x.pool.designate_new_master(one) == ""
    PoolHosts.restart_together(pool)
    session = pool[1].session()
    new_sid = session._session
    # The old master, a slave now, sent the new one what it kept.
    rrd = rrd_of(pool, new_sid, uuid, host=1, least=ran)
    code, hops, where, _ = fetch(pool[0], "/vm_rrd", session_id=new_sid,
                                 uuid=uuid)
    assert (code, hops, where) == (200, 1, pool[1].address)
    wait_until(lambda: dbsync(pool[1], secret, slave_uuid) == 200,
               what="slave 2's backup on the new master")
    assert history(rrd) >= ran
    # The running VM's history on its host goes on from where it was; the
    # old master's copy of it went to the new master's archive.
    wait_until(lambda: dbsync(pool[1], secret, running, "/vm_rrd") == 200,
               what="the old master's copy on the new master")
    assert history(rrd_of(pool, new_sid, running, host=2, least=1)) > lived
    y = session.xenapi
    y.VM.destroy(y.VM.get_by_uuid(uuid))
    y.VM.hard_shutdown(y.VM.get_by_uuid(running))
    y.VM.destroy(y.VM.get_by_uuid(running))
    # Moved back, for the fixtures' sessions: their connections were to
    # the servers before the restarts.
    assert y.pool.designate_new_master(master) == ""
    PoolHosts.restart_together(pool)
    for proxy in (x, client.xenapi):
        with contextlib.suppress(OSError):
            proxy.pool.get_all()


def dbsync(host, cookie, uuid, path="/host_rrd"):
    """The HTTP status of a master's copy asked for as a host asks."""
    proc = subprocess.run(
        ["curl", "-sS", "-k", "-o", os.devnull, "-w", "%{http_code}",
         "--cookie", cookie,
         url(host, path, uuid=uuid, dbsync="true")],
        capture_output=True, text=True, timeout=30)
    return int(proc.stdout)
