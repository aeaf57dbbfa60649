"""
RRDs following their VMs across a pool of three real hosts, read with
real curl: a VM stopped on a slave has its RRD archived to the master,
which answers /vm_rrd for it while the slave holds none; started on the
slave again, the slave takes the history back; VM.pool_migrate carries
it to the destination; and a slave restarted without its RRD file takes
its host RRD back from the master's backup (made as it stopped;
host.backup_rrds makes one too).  PUT
/rrd refuses what XAPI's refuses, keeping nothing.  Then the mastership
moved (pool.designate_new_master): the new master has what the old one
kept for the pool.  Last, that master gone: a slave takes its place
(pool.emergency_transition_to_master), the other follows it
(pool.emergency_reset_master), and every host keeps its own RRDs.

The hosts sample every second, so the finest archive holds a row a
second and the history is counted in its known rows.
"""

import contextlib
import json
import os
import shutil
import subprocess
import time
from urllib.parse import urlencode

import pytest

from tests.support.api import wait_until
from tests.support.etcd import needs_etcd
from tests.support.pool import SHORT_LEASE, PoolHosts, module_pool
from tests import test_pool_forwarding as forwarding
from tests.test_pool_forwarding import SERVER_ARGS
from tests.test_pool_handlers import url
from tests.test_pool_migrate import running_on
from tests.test_pool_transition import local_session
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


# (A short mastership lease: the last test's new master takes over once
# the gone one's has expired.)
pool = module_pool("poolrrd", 3, SERVER_ARGS + SHORT_LEASE)


def fetch(server, path, **query):
    """(HTTP status, redirects followed, the host that answered, the RRD
    as JSON or None) of curl -L on ``server``."""
    proc = subprocess.run(
        ["curl", "-sS", "-k", "-L", "-w", "\n%{http_code} %{num_redirects}"
         " %{url_effective}",
         "https://%s%s?%s" % (server.address, path, urlencode(query))],
        capture_output=True, text=True, timeout=30)
    body, _, tail = proc.stdout.rpartition("\n")
    code, redirects, effective = tail.split()
    answered = effective.split("/")[2]
    return int(code), int(redirects), answered, \
        json.loads(body) if code == "200" else None


def history(rrd, source="memory"):
    """The known rows of ``source`` in the finest archive."""
    return len(known_times(rrd, source))


def known_times(rrd, source="memory"):
    """The times of the known rows of ``source`` in the finest archive
    (the newest row ends at the last update's step)."""
    i = [ds["name"] for ds in rrd["ds"]].index(source)
    finest = min(rrd["rra"], key=lambda a: int(a["pdp_per_row"]))
    step = int(rrd["step"]) * int(finest["pdp_per_row"])
    rows = finest["database"]
    newest = step * (int(float(rrd["lastupdate"])) // step)
    return [newest - (len(rows) - 1 - k) * step
            for k, row in enumerate(rows) if row[i] != "NaN"]


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
    kept = wait_until(lambda: master_copy(pool[0], secret_cookie(pool), uuid),
                      what="the master's copy")
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


def test_a_new_master_takes_the_pools_archives(pool, x, sid, hosts):
    """The RRDs the master kept for the pool (a VM stopped there, another
    host's backup) are the new master's once pool.designate_new_master
    has moved the mastership (to host 1, for the last test); its copy of
    a running VM's RRD (a backup) does not replace the running host's."""
    master, one, two = hosts
    vm = running_on(x, master, "kept")
    uuid = x.VM.get_uuid(vm)
    # (Both sampled meanwhile.)
    running = x.VM.get_uuid(running_on(x, two, "running"))
    ran = history(rrd_of(pool, sid, uuid, least=3))
    x.VM.hard_shutdown(vm)
    rrd_of(pool, sid, running, redirects=1, at=2, least=3)
    x.host.backup_rrds(two, 0.0)
    secret = secret_cookie(pool)
    copy = wait_until(lambda: master_copy(pool[0], secret, running,
                                          "/vm_rrd"),
                      what="the master's copy of the running VM's RRD")
    slave_uuid = x.host.get_uuid(two)
    assert dbsync(pool[0], secret, slave_uuid) == 200

    # Rows the copy has not.
    def newer_rows():
        rrd = rrd_of(pool, sid, running, host=2)
        return [t for t in known_times(rrd) if t > copy.last_updated]
    lived = wait_until(newer_rows, what="rows the copy has not")
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
    # The running VM's history on its host goes on from where it was (the
    # rows its copy had not are there); the old master's copy of it went
    # to the new master's archive.
    wait_until(lambda: dbsync(pool[1], secret, running, "/vm_rrd") == 200,
               what="the old master's copy on the new master")
    rrd = rrd_of(pool, new_sid, running, host=2, least=1)
    assert set(lived) <= set(known_times(rrd))
    y = session.xenapi
    y.VM.destroy(y.VM.get_by_uuid(uuid))
    y.VM.hard_shutdown(y.VM.get_by_uuid(running))
    y.VM.destroy(y.VM.get_by_uuid(running))
    session.xenapi.session.logout()


def test_an_emergency_change_of_master_keeps_every_hosts_rrds(pool, x,
                                                              client):
    """Last: the master of the test above (host 1) gone, host 0 takes its
    place (pool.emergency_transition_to_master) and host 2 is told to
    follow it (pool.emergency_reset_master; in emergency mode until the
    new master answers).  Each keeps its own RRDs with the rows from
    before, as xcp-rrdd keeps them through xapi's restart: the new
    master answers /host_rrd, /sr_rrd, /vm_rrd and /rrd_updates with
    them, host 2 goes on with its own, and sends to the new master what
    a slave sends to its master (a stopped VM's RRD, its backups)."""
    session = pool[1].session()
    y, sid1 = session.xenapi, session._session
    refs = {f["address"]: ref for ref, f in y.host.get_all_records().items()}
    new_master, follower = refs[pool[0].address], refs[pool[2].address]
    on_master = y.VM.get_uuid(running_on(y, new_master, "on-the-new-one"))
    on_follower = y.VM.get_uuid(running_on(y, follower, "on-a-follower"))
    rrd_of(pool, sid1, on_master, host=0, least=2)
    rrd_of(pool, sid1, on_follower, host=2, least=2)
    sr = y.SR.get_uuid(forwarding.local_sr(y, new_master))
    master_uuid, follower_uuid = (y.host.get_uuid(h)
                                  for h in (new_master, follower))
    gone = time.time()
    pool[1].crash()
    local_session(pool[2]).xenapi.pool.emergency_reset_master(
        pool[0].address)
    local_session(pool[0]).xenapi.pool.emergency_transition_to_master()
    PoolHosts.restart_together([pool[0], pool[2]])
    restarted = time.time()
    # Neither stop tried the gone master (one not answering at all would
    # have held it for a timeout).
    for host in (pool[0], pool[2]):
        with open(host.log_path, encoding="utf-8", errors="replace") as f:
            tried = "to the master: PUT /rrd on %s:" % pool[1].address \
                in f.read()
        assert not tried, "%s backed up to the gone master" % host.address
    z_session = pool[0].session()
    z, sid = z_session.xenapi, z_session._session

    def kept(host, path, source="memory", **query):
        """The RRD ``host`` answers, once it has rows from before the
        master went and from after the restarts (it goes on)."""
        def both():
            code, _, _, rrd = fetch(pool[host], path, session_id=sid,
                                    **query)
            times = known_times(rrd, source) if code == 200 else []
            return times and times[0] < gone and times[-1] > restarted \
                and rrd
        return wait_until(both, what="%s%s on %s" % (path, query, host))
    kept(0, "/host_rrd", "memory_total_kib")
    kept(0, "/sr_rrd", "size", uuid=sr)
    kept(0, "/vm_rrd", uuid=on_master)
    kept(2, "/host_rrd", "memory_total_kib")
    kept(2, "/vm_rrd", uuid=on_follower)
    code, _, _, updates = fetch(pool[0], "/rrd_updates", session_id=sid,
                                start=int(gone) - 30, host="true",
                                json="true")
    legend = updates["meta"]["legend"]
    columns = [legend.index("AVERAGE:host:%s:memory_total_kib"
                            % master_uuid),
               legend.index("AVERAGE:vm:%s:memory" % on_master)]
    assert any(row["t"] < gone and all(row["values"][c] != "NaN"
                                       for c in columns)
               for row in updates["data"])
    # Stopped on host 2: archived on the new master, history and all.
    z.VM.hard_shutdown(z.VM.get_by_uuid(on_follower))

    def archived():
        code, hops, where, rrd = fetch(pool[0], "/vm_rrd", session_id=sid,
                                       uuid=on_follower)
        times = known_times(rrd) if code == 200 else []
        return where == pool[0].address and times and times[0] < gone
    wait_until(archived, what="host 2's VM archived on the new master")
    z.host.backup_rrds(follower, 0.0)

    def backed_up():
        copy = master_copy(pool[0], secret_cookie(pool), follower_uuid)
        return copy is not None and copy.last_updated > restarted and copy
    backup = wait_until(backed_up, what="host 2's backup on the new master")
    assert "memory_total_kib" in backup.names()
    for uuid in (on_master, on_follower):
        ref = z.VM.get_by_uuid(uuid)
        if z.VM.get_power_state(ref) != "Halted":
            z.VM.hard_shutdown(ref)
        z.VM.destroy(ref)
    z_session.xenapi.session.logout()
    # The fixtures' sessions: their connections were to the servers
    # before the restarts.
    for proxy in (x, client.xenapi):
        with contextlib.suppress(OSError):
            proxy.pool.get_all()


def master_copy(host, cookie, uuid, path="/host_rrd"):
    """The copy ``host`` keeps of an RRD, asked for as a host asks (an
    RRD of txxapi.metrics.storage), None without one."""
    proc = subprocess.run(
        ["curl", "-sS", "-k", "--cookie", cookie,
         url(host, path, uuid=uuid, dbsync="true")],
        capture_output=True, timeout=30)
    try:
        return storage.from_xml(proc.stdout)
    except ValueError:
        return None


def dbsync(host, cookie, uuid, path="/host_rrd"):
    """The HTTP status of a master's copy asked for as a host asks."""
    proc = subprocess.run(
        ["curl", "-sS", "-k", "-o", os.devnull, "-w", "%{http_code}",
         "--cookie", cookie,
         url(host, path, uuid=uuid, dbsync="true")],
        capture_output=True, text=True, timeout=30)
    return int(proc.stdout)
