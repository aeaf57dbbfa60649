"""
The physical network devices of this host, as XAPI learns them from its
network daemon: name, MAC, MTU, carrier and speed.

A simulated host has SIMULATED_CARDS cards, eth0 (its management
interface from the first start, with the MAC the first start gave its
PIF) to eth3; a Xen host has the kernel's devices backed by hardware
(/sys/class/net/<name>/device).
"""

import hashlib
import os
from dataclasses import dataclass

SIMULATED_CARDS = 4
SYS_NET = "/sys/class/net"


@dataclass(frozen=True)
class Device:
    name: str
    MAC: str
    MTU: int = 1500
    carrier: bool = True
    speed: int = 1000       # Mbit/s


def mac_for(seed):
    """A stable, locally administered unicast MAC for ``seed``."""
    digest = hashlib.sha1(seed.encode()).digest()
    octets = [(digest[0] & 0xFC) | 0x02] + list(digest[1:6])
    return ":".join("%02x" % o for o in octets)


def simulated(host_uuid):
    return [Device("eth%d" % i,
                   mac_for(host_uuid if i == 0 else
                           "%s/eth%d" % (host_uuid, i)))
            for i in range(SIMULATED_CARDS)]


def _read(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def kernel(root=SYS_NET):
    found = []
    for name in sorted(os.listdir(root)):
        base = os.path.join(root, name)
        if not os.path.exists(os.path.join(base, "device")):
            continue        # virtual: bridges, vifs, loopback
        speed = _read(os.path.join(base, "speed"), "0")
        found.append(Device(
            name, _read(os.path.join(base, "address")),
            int(_read(os.path.join(base, "mtu"), "1500") or 1500),
            _read(os.path.join(base, "carrier"), "0") == "1",
            max(int(speed) if speed.lstrip("-").isdigit() else 0, 0)))
    return found


def of_host(backend_name, host_uuid):
    """This host's devices: the simulator's cards, else the kernel's."""
    if backend_name == "simulator":
        return simulated(host_uuid)
    return kernel()
