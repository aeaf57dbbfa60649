"""
A host that starts as master while another host holds the mastership (it
was killed, and the pool moved on with emergency_transition_to_master)
would wait for the mastership key forever.  As XAPI's start-up check that
no other known host is a master, it asks the key's holder, every
INTERVAL seconds while it waits, whether it is a slave; a holder that
says it is the master makes this host its slave: pool.conf becomes
``slave:<holder>`` and the process restarts, to come up as a working
slave of the new master.  A holder that cannot be asked changes nothing
(its lease expires if it is gone, and this host takes over then).
"""

import os

from twisted.internet import defer, task
from twisted.logger import Logger

from txxapi.errors import XenAPIError
from txxapi.pool import role as pool_role
from txxapi.pool.client import PeerUnreachable, local_call
from txxapi.pool.etcd import EtcdError
from txxapi.values import NULL_REF

log = Logger()

INTERVAL = 2.0


class OtherMasterCheck:
    def __init__(self, client, key, lease_id, address, data_dir, reactor):
        self.client, self.key, self.lease_id = client, key, lease_id
        self.address, self.data_dir = address, data_dir
        self.reactor = reactor
        self._loop = None

    def start(self):
        self._loop = task.LoopingCall(self._check)
        self._loop.clock = self.reactor
        self._loop.start(INTERVAL, now=True).addErrback(
            lambda f: log.failure("pool: the other-master check", f))
        return self

    def stop(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    @defer.inlineCallbacks
    def _check(self):
        try:
            kv = yield self.client.get(self.key)
            if kv is None or kv.lease == self.lease_id:
                return
            holder = kv.value.decode("utf-8", "replace")
            if not holder or holder == self.address:
                return      # this host's own lease from before it stopped
            with open(os.path.join(self.data_dir, "ptoken")) as f:
                secret = f.read().strip()
            is_slave = yield local_call(self.reactor, holder, secret,
                                        "pool.is_slave", NULL_REF)
        except (EtcdError, PeerUnreachable, XenAPIError, OSError) as e:
            log.debug("pool: the mastership's holder not asked ({e})", e=e)
            return
        if is_slave or not self._loop.running:
            return
        self.stop()
        log.error("pool: {holder} is the pool's master now; this host "
                  "restarts as its slave", holder=holder)
        from txxapi.pool.join import restart
        pool_role.write(self.data_dir,
                        pool_role.Role(pool_role.SLAVE, holder))
        restart(self.reactor)
