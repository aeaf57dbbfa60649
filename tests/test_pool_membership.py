"""
Which hosts run the pool's etcd members, on five real hosts
(tests/support/pool.py): every host up to three, three of four, all five
of five (the fourth, a client until then, gets one); an eject back to
four stops two of them; a member's host killed is replaced by the host
without one, and comes back as a client; so does one cut off the network
while it runs (each host is in a network namespace of its own where they
can be made).  Read from etcd's own member list and from the etcd.json
each host keeps.
"""

import json
import os
import socket

import pytest

from tests.support import netns
from tests.support.api import wait_until
from tests.support.pool import (
    PoolHosts, etcd_members, needs_pool_hosts, voters)
from tests.test_pool_forwarding import SERVER_ARGS

pytestmark = needs_pool_hosts


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    network = netns.Namespaces(5).create() if netns.available() else None
    hosts = PoolHosts(str(tmp_path_factory.mktemp("members")), 5,
                      SERVER_ARGS, network)
    hosts.network = network
    try:
        hosts.start()
        yield hosts
    finally:
        try:
            hosts.stop()
        finally:
            if network is not None:
                network.destroy()


def host_uuids(pool):
    """address -> host uuid, as the master lists them."""
    x = pool[0].session().xenapi
    try:
        return {h["address"]: h["uuid"]
                for h in x.host.get_all_records().values()}
    finally:
        x.session.logout()


def config(host):
    with open(os.path.join(host.data_dir, "etcd.json")) as f:
        return json.load(f)


def serves_etcd(host):
    try:
        socket.create_connection((host.address, 2379), timeout=2).close()
        return True
    except OSError:
        return False


def settled(pool, hosts, count):
    """etcd's voters are ``count`` of ``hosts``, and exactly those hosts
    say (etcd.json) and show (a listening member) that they run one."""
    by_address = host_uuids(pool)
    uuids = {by_address[h.address]: h for h in hosts}
    try:
        names = voters(pool[0].address)
    except OSError:
        return False
    if len(names) != count or not set(names) <= set(uuids) or \
            len(etcd_members(pool[0].address)) != count:
        return False
    return all(config(h)["member"] == (u in names) == serves_etcd(h)
               for u, h in uuids.items())


def test_members_follow_the_pool_size(pool):
    for n in range(1, 5):
        pool.join(pool[n], pool[0])
        wanted = 5 if n + 1 >= 5 else min(n + 1, 3)
        wait_until(lambda: settled(pool, pool.hosts[:n + 1], wanted),
                   timeout=90, what="%d etcd members of %d hosts"
                   % (wanted, n + 1))
    # Every host's client knows all five members for its next start.
    wait_until(lambda: all(len(config(h)["clients"]) == 5 for h in pool),
               what="every host knowing the five members")


def test_eject_shrinks_back_to_three(pool):
    x = pool[0].session().xenapi
    ref = [r for r, h in x.host.get_all_records().items()
           if h["address"] == pool[4].address][0]
    x.pool.eject(ref)
    pool[4].restart()
    wait_until(lambda: settled(pool, pool.hosts[:4], 3), timeout=90,
               what="3 etcd members of 4 hosts")
    # The pool still writes through its three members.
    x.network.create({"name_label": "after-shrink", "name_description": "",
                      "MTU": "1500", "other_config": {}})
    assert x.network.get_by_name_label("after-shrink")
    x.session.logout()


def test_a_dead_hosts_member_moves_to_a_live_host(pool):
    """Last: a slave with a member is killed; once it is not live (the
    pool's host-assumed-dead-interval) its member is removed and the host
    without one gets one, one change at a time, the pool writing all
    along.  Back, the killed host finds its member gone: a client."""
    x = pool[0].session().xenapi
    dead = [h for h in pool.hosts[1:4] if config(h)["member"]][0]
    spare = [h for h in pool.hosts[1:4] if not config(h)["member"]][0]
    dead.crash()
    wait_until(lambda: settled(pool, [h for h in pool.hosts[:4]
                                      if h is not dead], 3), timeout=90,
               what="the dead host's member on %s" % spare.address)
    assert config(spare)["member"]
    x.network.create({"name_label": "after-replace", "name_description": "",
                      "MTU": "1500", "other_config": {}})
    dead.start(60)
    wait_until(lambda: not config(dead)["member"], timeout=30,
               what="the returning host a client")
    assert settled(pool, pool.hosts[:4], 3)
    x.session.logout()


def test_a_member_cut_off_while_it_runs_comes_back_a_client(pool):
    """After the one killed: a slave with a member is cut off the network
    (alive, its etcd running), found dead and replaced by the host without
    one; healed, its etcd learns it was removed and stops, and the host
    stays a client rather than start it again."""
    if pool.network is None:
        pytest.skip("no network namespaces here")
    x = pool[0].session().xenapi
    cut = [h for h in pool.hosts[1:4] if config(h)["member"]][0]
    spare = [h for h in pool.hosts[1:4] if not config(h)["member"]][0]
    pool.network.cut(pool.hosts.index(cut))
    try:
        wait_until(lambda: settled(pool, [h for h in pool.hosts[:4]
                                          if h is not cut], 3), timeout=120,
                   what="the cut-off host's member on %s" % spare.address)
    finally:
        pool.network.heal(pool.hosts.index(cut))
    wait_until(lambda: not config(cut)["member"], timeout=60,
               what="the healed host a client")
    wait_until(lambda: settled(pool, pool.hosts[:4], 3), timeout=30,
               what="3 etcd members of 4 hosts, the healed one a client")
    x.network.create({"name_label": "after-heal", "name_description": "",
                      "MTU": "1500", "other_config": {}})
    x.session.logout()
