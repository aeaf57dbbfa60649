"""
A pool of real hosts for tests: N ``twistd xapi`` processes, each with
its own data dir, simulator and local SR, bound to its own loopback
address (127.0.0.2, .3, ...; Linux routes all of 127/8 to lo) on ports
80 and 443, so hosts reach each other as real hosts do and
``pool.join("127.0.0.2", ...)`` means what it means on a real pool.
Each host's management address (host.address, the PIF's IP) is its bind
address.  Binding ports below 1024 needs root, as the tests run.
"""

import json
import os
import signal
import threading
import time
import urllib.request
import xmlrpc.client

import pytest
import XenAPI

from tests.support.etcd import needs_etcd
from tests.support.servers import PASSWORD, USER, RunningServer
from txxapi.pool.join import RESTART_STATUS
from txxapi.pool.membership import wanted


# Pool tests need root (ports 80/443 on 127.0.N.x) and etcd.
needs_pool_hosts = [needs_etcd, pytest.mark.skipif(
    os.geteuid() != 0, reason="binds ports 80/443 on 127.0.x.y")]

# Runs that share a machine take distinct loopback nets (127.0.N.x):
# TXXAPI_TEST_NET=N.  Default 0: 127.0.0.2, .3, ...
TEST_NET = int(os.environ.get("TXXAPI_TEST_NET", "0"))


# Server options of pool tests that kill a master: its mastership is
# taken over once its etcd lease has expired.
SHORT_LEASE = ["--pool-lease-ttl", "4"]


def host_address(index):
    return "127.0.%d.%d" % (TEST_NET, 2 + index)


class PoolHost(RunningServer):
    """``network``: a tests.support.netns.Namespaces the host runs in
    (its own address there), else the loopback."""

    def __init__(self, base, index, extra_args=(), network=None):
        address = network.address(index) if network else host_address(index)
        RunningServer.__init__(
            self, os.path.join(base, "host%d" % index, "data"),
            passwd_file=os.path.join(base, "passwd"),
            extra_args=extra_args, http_port=80, https_port=443,
            bind=address)
        self.address = address
        if network is not None:
            self.command_prefix = network.prefix(index)

    def wait_ready(self, timeout=30, greeted=True):
        """Serving; a slave also out of emergency mode (its master
        answered its pool.hello) unless ``greeted`` is false."""
        RunningServer.wait_ready(self, timeout)
        if greeted and self.role().startswith("slave:"):
            deadline = time.monotonic() + timeout
            while self.in_emergency_mode():
                if time.monotonic() > deadline:
                    raise RuntimeError("%s still in emergency mode: %s"
                                       % (self.address, self.read_log()))
                time.sleep(0.1)
        return self

    def role(self):
        path = os.path.join(self.data_dir, "pool.conf")
        if not os.path.exists(path):
            return "master"
        with open(path) as f:
            return f.read().strip()

    def in_emergency_mode(self):
        """host.is_in_emergency_mode through a local login with the pool
        secret (what a host in emergency mode serves)."""
        with open(os.path.join(self.data_dir, "ptoken")) as f:
            secret = f.read().strip()
        proxy = xmlrpc.client.ServerProxy("http://%s/" % self.address)
        login = proxy.session.slave_local_login(secret)
        assert login["Status"] == "Success", login
        try:
            reply = proxy.host.is_in_emergency_mode(login["Value"])
            assert reply["Status"] == "Success", reply
            return reply["Value"]
        finally:
            proxy.session.local_logout(login["Value"])

    def restart(self, timeout=30):
        """Start again after the process exited by itself (a join or an
        eject restarts the host into its new role), with the status that
        asks its supervisor for a restart."""
        self.respawn()
        return self.wait_ready(timeout)

    def crash(self):
        """The host dies at once: its process and every process it
        started (its etcd member) killed with -9."""
        if self.proc is not None:
            children = _descendants(self.proc.pid)
            self.kill()
            for pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def respawn(self):
        status = self.wait_exit()
        assert status == RESTART_STATUS, (status, self.read_log())
        self.spawn()


def _descendants(pid):
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            with open("/proc/%d/task/%d/children" % (parent, parent)) as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        found += children
        todo += children
    return found


class PoolHosts:
    """``hosts[i]`` is a PoolHost; start(), stop() and kill() per host.
    ``extra_args``: server options every host gets."""

    def __init__(self, base, count, extra_args=(), network=None):
        self.base = base
        os.makedirs(base, exist_ok=True)
        passwd = os.path.join(base, "passwd")
        if not os.path.exists(passwd):
            from tests.support.servers import sha512_crypt
            with open(passwd, "w") as f:
                f.write("%s:%s\n" % (USER, sha512_crypt(PASSWORD)))
        self.hosts = [PoolHost(base, i, extra_args, network)
                      for i in range(count)]

    def __getitem__(self, index):
        return self.hosts[index]

    def __iter__(self):
        return iter(self.hosts)

    def start(self, timeout=60):
        """Every host started at once, then each waited for."""
        for host in self.hosts:
            host.spawn()
        for host in self.hosts:
            host.wait_ready(timeout)
        return self

    def stop(self):
        """The masters stopped first, then the hosts without an etcd
        member all at once, then those with one, one at a time: each
        while its etcd peers still make a quorum (a master's last writes
        wait for one, and a stopping etcd leader hands its leadership
        over, for seconds if its peers are stopping too: four members
        stopped at once took 7.5 s, one at a time 0.5 s each)."""
        running = [h for h in self.hosts if h.proc is not None]
        masters = [h for h in running if h.role() == "master"]
        for host in masters:
            host.stop()
        slaves = [h for h in running if h not in masters]
        clients = [h for h in slaves if not _runs_etcd_member(h)]
        threads = [threading.Thread(target=h.stop) for h in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for host in slaves:
            if host not in clients:
                host.stop()

    @staticmethod
    def restart_together(hosts, timeout=60):
        """Hosts that restart at once (a change of master), as their
        supervisors start them: a host cannot come up before a quorum of
        the pool's etcd members is back.  Each is started again as soon
        as it exits, as its own supervisor would."""
        waiting = list(hosts)
        deadline = time.monotonic() + timeout
        while waiting:
            for host in [h for h in waiting if h.proc.poll() is not None]:
                host.respawn()
                waiting.remove(host)
            if time.monotonic() > deadline:
                raise RuntimeError("%s did not exit" % [
                    h.address for h in waiting])
            time.sleep(0.05)
        for host in hosts:
            host.wait_ready(timeout)

    def join(self, joiner, master, timeout=30):
        """``joiner`` joins ``master``'s pool (the SDK call an operator
        makes) and comes back up as a slave."""
        session = joiner.session()
        try:
            session.xenapi.pool.join(master.address, USER, PASSWORD)
        finally:
            _logout(session)
        joiner.restart(timeout)

    def join_all(self, joiners, master, timeout=120):
        """Every joiner joins at once (an operator's script over a rack)."""
        failures = []

        def join(joiner):
            try:
                self.join(joiner, master, timeout)
            except Exception as e:
                failures.append((joiner.address, e))
        threads = [threading.Thread(target=join, args=(j,)) for j in joiners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise RuntimeError("joins failed: %r" % failures)


class Supervisor:
    """What a host's init does: a host whose process exits asking for a
    restart (it changed role by itself, as an HA take-over does, or
    fenced itself) is started again.  A thread, until stop()."""

    def __init__(self, hosts, interval=0.1):
        self.hosts = list(hosts)
        self.interval = interval
        self.restarts = []          # (host address, time.time())
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stopped.wait(self.interval):
            for host in self.hosts:
                proc = host.proc
                if proc is not None and proc.poll() == RESTART_STATUS:
                    host.wait_exit()
                    host.spawn()
                    self.restarts.append((host.address, time.time()))

    def stop(self):
        self._stopped.set()
        self._thread.join()


def started_pool(base, count, extra_args=()):
    """A generator for a module fixture: ``count`` hosts, each the master
    of its own pool; all stopped afterwards."""
    hosts = PoolHosts(base, count, extra_args).start()
    try:
        yield hosts
    finally:
        hosts.stop()


def joined_pool(base, count, extra_args=(), network=None):
    """A generator for a module fixture: ``count`` hosts, the first the
    master and every other joined to it (all at once); all stopped
    afterwards."""
    hosts = PoolHosts(base, count, extra_args, network).start()
    try:
        hosts.join_all(hosts.hosts[1:], hosts[0])
        wait_members(hosts)
        yield hosts
    finally:
        hosts.stop()


def module_pool(name, count, extra_args=()):
    """A module-scoped ``pool`` fixture of joined_pool's hosts."""
    @pytest.fixture(scope="module")
    def pool(tmp_path_factory):
        yield from joined_pool(str(tmp_path_factory.mktemp(name)), count,
                               extra_args)
    return pool


def etcd_members(address):
    """etcd's member list, asked of the member at ``address``."""
    request = urllib.request.Request(
        "http://%s:2379/v3/cluster/member/list" % address, data=b"{}",
        headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as reply:
        return json.load(reply).get("members", [])


def voters(address):
    return sorted(m.get("name", "") for m in etcd_members(address)
                  if not m.get("isLearner") and m.get("name"))


def wait_members(hosts, timeout=60):
    """The pool formed: as many etcd voters as it wants, and every host's
    client knows each of them (its etcd.json)."""
    deadline = time.monotonic() + timeout
    want = wanted(len(hosts.hosts))
    while True:
        members = etcd_members(hosts[0].address)
        urls = {u for m in members if not m.get("isLearner")
                for u in m.get("clientURLs", [])}
        known = [set(_etcd_config(h)["clients"]) for h in hosts]
        if len(urls) == want and all(urls <= k for k in known):
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the pool's etcd did not form: %r, %r"
                               % (urls, known))
        time.sleep(0.2)


def _runs_etcd_member(host):
    """What the host's etcd.json says; unreadable, it is taken to run
    one (stopped alone, the safe way)."""
    try:
        return _etcd_config(host)["member"]
    except (OSError, ValueError, KeyError):
        return True


def _etcd_config(host):
    with open(os.path.join(host.data_dir, "etcd.json")) as f:
        return json.load(f)


def network(x, label):
    """A network named label: a small write whose survival tests check."""
    x.network.create({"name_label": label, "name_description": "",
                      "MTU": "1500", "other_config": {}})


def pool_session(host):
    """A pool session on a host (the pool secret), as hosts use."""
    with open(os.path.join(host.data_dir, "ptoken")) as f:
        secret = f.read().strip()
    url = "http://%s/" % host.address
    reply = xmlrpc.client.ServerProxy(url).session.slave_login(
        "OpaqueRef:NULL", secret)
    assert reply["Status"] == "Success", reply
    s = XenAPI.Session(url)
    s._session = reply["Value"]
    return s


def _logout(session):
    try:
        session.xenapi.session.logout()
    except Exception:
        pass
