"""
The pool smoke (CI): eight real hosts (tests/support/pool.py, each its
own twistd on 127.0.N.2-9) join one master at once, a VM is started on
each of them, a client pointed at a slave follows HOST_IS_SLAVE to the
master and reads every VM there, and one host is ejected.  The pool runs
five etcd members, and still five once the seven left want them.  Eight
hosts are enough for what it proves (seven joins racing, a pool past
the five-member size on both sides of the eject); the scaling to 64
hosts is benchmarks/pool.py's.
"""

import pytest
import XenAPI

from tests.support.api import wait_until
from tests.support.pool import PoolHosts, needs_pool_hosts, voters
from tests.support.servers import PASSWORD, USER
from tests.test_vm_lifecycle import MIB, new_vm

pytestmark = needs_pool_hosts

HOSTS = 8


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    hosts = PoolHosts(str(tmp_path_factory.mktemp("smoke")), HOSTS)
    try:
        hosts.start()
        hosts.join_all(hosts.hosts[1:], hosts[0])
        yield hosts
    finally:
        hosts.stop()


def login_following_redirects(address):
    """What XO's connector and the SDK users do: a slave's HOST_IS_SLAVE
    names the master, which is logged in to instead."""
    s = XenAPI.Session("https://%s" % address, ignore_ssl=True)
    try:
        s.xenapi.login_with_password(USER, PASSWORD, "1.0", "smoke")
        return s
    except XenAPI.Failure as e:
        assert e.details[0] == "HOST_IS_SLAVE", e.details
        return login_following_redirects(e.details[1])


def test_eight_hosts_a_vm_on_each_and_an_eject(pool):
    x = pool[0].session().xenapi
    hosts = {h["address"]: ref for ref, h in x.host.get_all_records().items()}
    assert sorted(hosts) == sorted(h.address for h in pool)
    wait_until(lambda: all(x.host.get_enabled(r) for r in hosts.values()),
               timeout=60, what="every host enabled")
    wait_until(lambda: len(voters(pool[0].address)) == 5, timeout=60,
               what="five etcd members")
    # A VM on each host, started there (forwarded to it) all at once.
    vms = {address: new_vm(x, "smoke-%s" % address, memory=64 * MIB)
           for address in hosts}
    tasks = [x.Async.VM.start_on(vms[a], hosts[a], False, False)
             for a in hosts]
    wait_until(lambda: all(x.task.get_status(t) != "pending" for t in tasks),
               timeout=60, what="every start")
    for t in tasks:
        assert x.task.get_status(t) == "success", x.task.get_error_info(t)
    assert {a: x.VM.get_resident_on(vms[a]) for a in hosts} == hosts
    # A getter through a slave: redirected to the master, it sees all.
    s = login_following_redirects(pool[3].address)
    records = s.xenapi.VM.get_all_records()
    s.xenapi.session.logout()
    assert {r["name_label"] for r in records.values()
            if not r["is_control_domain"]} >= \
        {"smoke-%s" % a for a in hosts}
    # Eject one (its VM stopped first): seven hosts, still five members.
    leaving = pool[HOSTS - 1]
    x.VM.hard_shutdown(vms[leaving.address])
    x.VM.destroy(vms[leaving.address])
    x.pool.eject(hosts[leaving.address])
    leaving.restart(60)
    assert leaving.address not in {h["address"] for h in
                                   x.host.get_all_records().values()}
    wait_until(lambda: len(voters(pool[0].address)) == 5 and
               all(m for m in voters(pool[0].address)), timeout=60,
               what="five etcd members of seven hosts")
