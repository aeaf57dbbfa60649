"""
LeaseKeeper: keeps an etcd lease alive (a renewal every ttl/3) and tells
its owner at once when the lease is gone: the server says it no longer
exists, or no renewal succeeded before the time it would expire.

The expiry is counted from when each successful renewal was *sent*: the
server counts from when it received it, later, so the keeper declares the
lease lost no later than the server does and a holder that must stop
before anyone else could take its place (an HA host fencing itself) stops
in time.

A holder whose every act is fenced in etcd itself (the pool master: each
write compares the mastership key's lease) passes ``expiry_is_loss=False``:
the expiry only puts the lease in doubt and the renewals go on, and only
etcd's answer that the lease is gone loses it.  etcd does not expire a
lease while it has no quorum (only a leader revokes, and a new leader
extends every lease), so a master cut from the quorum for longer than its
TTL — a slave's member restarting while another is down — carries on when
the quorum is back instead of refusing writes for good.
"""

from twisted.internet import defer
from twisted.logger import Logger

from txxapi.pool.etcd import errors

__all__ = ["LeaseKeeper"]

log = Logger()


class LeaseKeeper:
    """Renew ``lease`` (a types.Lease) until stop(); on_lost(reason) is
    called once, and self.lost fires with the reason, if it is lost.
    ``in_doubt``: past its expiry without a renewal (expiry_is_loss
    false only)."""

    def __init__(self, client, lease, on_lost=None, interval=None,
                 retry_interval=None, expiry_is_loss=True):
        self.client = client
        self.lease = lease
        self.on_lost = on_lost
        self.expiry_is_loss = expiry_is_loss
        self.in_doubt = False
        self.interval = interval or max(lease.ttl / 3.0, 0.05)
        self.retry_interval = retry_interval or min(self.interval / 3.0, 0.5)
        self.lost = defer.Deferred()
        self.renewals = 0
        self.expires_at = None
        self._renew_call = self._expiry_call = self._in_flight = None
        self._running = False

    @property
    def reactor(self):
        return self.client.reactor

    def start(self, granted_at=None):
        """Start renewing; granted_at (reactor time) is when the grant was
        sent, now by default."""
        now = self.reactor.seconds()
        self._running = True
        self._set_expiry((granted_at or now) + self.lease.ttl)
        self._schedule(self.interval)
        return self

    def stop(self, revoke=False, timeout=None):
        """Stop renewing (and revoke the lease if asked, giving up after
        ``timeout`` seconds: the lease then simply expires)."""
        self._running = False
        self._cancel_timers()
        if revoke:
            return self.client.revoke(self.lease.id, timeout=timeout)
        return defer.succeed(None)

    def _cancel_timers(self):
        for call in (self._renew_call, self._expiry_call):
            if call is not None and call.active():
                call.cancel()
        self._renew_call = self._expiry_call = None
        if self._in_flight is not None:
            self._in_flight.cancel()

    def _schedule(self, delay):
        self._renew_call = self.reactor.callLater(delay, self._renew)

    def _set_expiry(self, at):
        self.expires_at = at
        if self._expiry_call is not None and self._expiry_call.active():
            self._expiry_call.reset(max(at - self.reactor.seconds(), 0))
        else:
            self._expiry_call = self.reactor.callLater(
                max(at - self.reactor.seconds(), 0), self._expired)

    def _renew(self):
        self._renew_call = None
        sent = self.reactor.seconds()
        # Before the expiry an answer is only worth its time left; in
        # doubt, etcd's answer is all that can settle it.
        timeout = self.client.timeout if self.in_doubt else \
            max(min(self.client.timeout, self.expires_at - sent), 0.05)
        d = self._in_flight = self.client.keepalive(self.lease.id,
                                                    timeout=timeout)
        d.addCallbacks(self._renewed, self._failed,
                       callbackArgs=(sent,))
        d.addErrback(lambda f: f.trap(defer.CancelledError))

    def _renewed(self, lease, sent):
        self._in_flight = None
        if not self._running:
            return
        self.renewals += 1
        if self.in_doubt:
            self.in_doubt = False
            log.info("etcd lease {id:x}: renewed again, etcd kept it",
                     id=self.lease.id)
        self._set_expiry(sent + lease.ttl)
        self._schedule(self.interval)

    def _failed(self, failure):
        self._in_flight = None
        if not self._running:
            return
        if failure.check(errors.EtcdLeaseNotFound):
            self._lose("lease %x no longer exists (expired or revoked)"
                       % self.lease.id)
            return
        failure.trap(errors.EtcdError)
        log.info("etcd lease {id:x}: renewal failed ({error}), retrying",
                 id=self.lease.id, error=failure.value)
        self._schedule(self.retry_interval)

    def _expired(self):
        self._expiry_call = None
        if self.expiry_is_loss:
            self._lose("lease %x not renewed before it expired"
                       % self.lease.id)
            return
        self.in_doubt = True
        log.warn("etcd lease {id:x}: not renewed before it would expire; "
                 "in doubt until etcd answers a renewal", id=self.lease.id)

    def _lose(self, reason):
        if not self._running:
            return
        self._running = False
        self._cancel_timers()
        log.warn("etcd lease lost: {reason}", reason=reason)
        if self.on_lost is not None:
            self.on_lost(reason)
        self.lost.callback(reason)
