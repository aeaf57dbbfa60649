"""
Hosts of a test pool in network namespaces of their own, each with one
veth on a bridge in the root namespace (where the tests run), so that a
host can be cut off the network (its veth down) and healed, as a real
host's cable.  Host i is 10.77.N.(2 + i) (N: TXXAPI_TEST_NET), the
bridge 10.77.N.1.  Needs root.
"""

import subprocess

from tests.support.pool import TEST_NET


def _ip(*args, check=True):
    return subprocess.run(["ip"] + list(args), check=check,
                          capture_output=True, text=True)


def available():
    name = "txx%dprobe" % TEST_NET
    try:
        ok = _ip("netns", "add", name, check=False).returncode == 0
    except OSError:
        return False
    if ok:
        _ip("netns", "del", name, check=False)
    return ok


class Namespaces:
    def __init__(self, count):
        self.count = count
        self.bridge = "txb%d" % TEST_NET

    def netns(self, index):
        return "txx%dh%d" % (TEST_NET, index)

    def veth(self, index):
        return "txv%dh%d" % (TEST_NET, index)

    def address(self, index):
        return "10.77.%d.%d" % (TEST_NET, 2 + index)

    def prefix(self, index):
        """What a command run on host ``index`` starts with."""
        return ["ip", "netns", "exec", self.netns(index)]

    def create(self):
        self.destroy()
        gateway = "10.77.%d.1" % TEST_NET
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", gateway + "/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(self.count):
            ns = self.netns(i)
            _ip("netns", "add", ns)
            _ip("link", "add", self.veth(i), "type", "veth", "peer", "name",
                "eth0", "netns", ns)
            _ip("link", "set", self.veth(i), "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", self.address(i) + "/24", "dev",
                "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "route", "add", "default", "via", gateway)
        return self

    def cut(self, index):
        _ip("link", "set", self.veth(index), "down")

    def heal(self, index):
        _ip("link", "set", self.veth(index), "up")

    def destroy(self):
        for i in range(self.count):
            _ip("link", "del", self.veth(i), check=False)
            _ip("netns", "del", self.netns(i), check=False)
        _ip("link", "del", self.bridge, check=False)
