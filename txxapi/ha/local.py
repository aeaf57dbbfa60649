"""
What a host keeps of HA between its starts, and the timings HA derives
from the pool's timeout T.

``ha.json`` in the data dir (XAPI's local.db ``ha.armed``) holds the
etcd lease the host is in the liveset under.  At start a host with one
asks etcd whether that lease still lives: if it does, nobody may have
restarted this host's VMs (the master restarts them only after the lease
is gone) and its domains are still its own; if it does not, the host
was declared dead while it was down, and it comes up without them.
"""

import json
import os

from twisted.internet import defer, task

from txxapi.errors import invalid_value
from txxapi.files import write_atomically
from txxapi.pool.database import MASTER_KEY
from txxapi.pool.etcd import EtcdLeaseNotFound, Lease

FILE = "ha.json"
# Left by host.emergency_ha_disable (not soft): this host stays out of HA
# across restarts, until the pool's HA is turned off.
DISABLED_FILE = "ha-disabled"
DEFAULT_TIMEOUT = 60
MIN_TIMEOUT = 10
TIMEOUT_KEY = "timeout"

LIVE_PREFIX = b"txxapi/ha/live/"        # one key a host, under its lease
MEMBER_PREFIX = b"txxapi/ha/member/"    # hosts that joined the liveset
# Hosts that reach the statefile (one key a host, under its lease).
STATEFILE_PREFIX = b"txxapi/ha/statefile/"


def live_key(uuid):
    return LIVE_PREFIX + uuid.encode()


def member_key(uuid):
    return MEMBER_PREFIX + uuid.encode()


def statefile_key(uuid):
    return STATEFILE_PREFIX + uuid.encode()


@defer.inlineCallbacks
def uuids_under(client, prefix):
    """The host uuids keyed under prefix (LIVE_PREFIX, MEMBER_PREFIX,
    STATEFILE_PREFIX): one range read."""
    result = yield client.range(prefix, prefix=True)
    return {kv.key[len(prefix):].decode() for kv in result.kvs}


def timeout_of(configuration):
    """T, from a pool's ha_configuration (XAPI's default 60 s, at least
    10 as xhad requires)."""
    value = configuration.get(TIMEOUT_KEY)
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        t = int(value)
    except (TypeError, ValueError):
        raise invalid_value(TIMEOUT_KEY, value)
    if t < MIN_TIMEOUT:
        raise invalid_value(TIMEOUT_KEY, value)
    return t


class Timeouts:
    """From T: the lease's TTL (T: a host that cannot renew for T is out
    of the liveset), its renewal interval (XAPI's heartbeat interval,
    (T + 10) / 10, at most 3 s) and the fencing margin the master waits
    after a lease expired before it restarts that host's VMs (the host
    gave up at the latest when etcd expired the lease, and has this
    long to stop its domains)."""

    def __init__(self, t):
        self.t = t
        self.ttl = t
        self.renew = min((t + 10) / 10.0, 3.0)
        self.margin = max(2.0, t / 10.0)


def read(data_dir):
    try:
        with open(os.path.join(data_dir, FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write(data_dir, lease):
    write_atomically(os.path.join(data_dir, FILE),
                     json.dumps({"lease": lease.id, "ttl": lease.ttl}) + "\n")


def clear(data_dir):
    try:
        os.unlink(os.path.join(data_dir, FILE))
    except FileNotFoundError:
        pass


def armed(data_dir):
    return read(data_dir) is not None


def disabled_here(data_dir):
    return os.path.exists(os.path.join(data_dir, DISABLED_FILE))


def set_disabled_here(data_dir, disabled):
    path = os.path.join(data_dir, DISABLED_FILE)
    if disabled:
        write_atomically(path, "1\n")
    elif os.path.exists(path):
        os.unlink(path)


@defer.inlineCallbacks
def live_lease(client, data_dir):
    """The lease ha.json names, renewed once, if it still lives; None
    otherwise (the file is then removed)."""
    saved = read(data_dir)
    if saved is None:
        return None
    try:
        lease = yield client.keepalive(int(saved["lease"]))
    except EtcdLeaseNotFound:
        clear(data_dir)
        return None
    return Lease(lease.id, int(saved.get("ttl") or lease.ttl))


@defer.inlineCallbacks
def master_elsewhere(client, my_uuid, my_lease, clock, interval=0.5):
    """For a host that starts as master with HA armed: the address of
    another host that took the mastership while this one was down (it
    must then start as that host's slave), or None once the mastership
    is free for it or held under ``my_lease`` (its HA lease, which won
    it).  While an earlier lease of its own still holds the key, it waits
    for that to expire."""
    while True:
        holder = yield client.get(MASTER_KEY)
        if holder is None or (my_lease is not None and
                              holder.lease == my_lease.id):
            return None
        uuid = holder.value.decode()
        if uuid != my_uuid:
            live = yield client.get(live_key(uuid))
            if live is not None:
                return live.value.decode()
        yield task.deferLater(clock, interval, lambda: None)
