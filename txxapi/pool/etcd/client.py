"""
EtcdClient: etcd's v3 API as Deferred-returning methods, over the JSON
gateway (see transport.py).  Every method takes ``timeout`` (seconds; the
client's default otherwise) and fails with an errors.EtcdError subclass.
"""

from twisted.internet import defer

from txxapi.pool.etcd import errors
from txxapi.pool.etcd.transport import Transport, DEFAULT_TIMEOUT
from txxapi.pool.etcd.types import (
    Compare, Delete, DeleteResult, Header, Lease, Member, Put, PutResult,
    Range, RangeResult, Status, Txn, TxnResult)

__all__ = ["EtcdClient"]


class EtcdClient:
    """A client of one etcd cluster, given its members' client URLs
    (``["http://127.0.0.2:2379", ...]`` or one comma-separated string).
    ``watch_silence``: for members that send progress notifications, how
    long a watch stream may stay silent before its watcher takes it for
    lost (None: a stream is trusted until it ends)."""

    def __init__(self, endpoints, reactor=None, timeout=DEFAULT_TIMEOUT,
                 max_connections=128, watch_silence=None):
        self.transport = Transport(endpoints, reactor, timeout,
                                   max_connections=max_connections)
        self.reactor = self.transport.reactor
        self.timeout = timeout
        self.watch_silence = watch_silence

    @property
    def endpoints(self):
        return [e.url for e in self.transport.endpoints]

    def add_endpoints(self, urls):
        """Client URLs of members added since (failed over to as well)."""
        self.transport.add_endpoints(urls)

    def _call(self, path, body, parse, timeout=None, idempotent=False):
        d = self.transport.call(path, body, timeout, idempotent)
        d.addCallback(parse)
        return d

    # -- keys -----------------------------------------------------------------

    def range(self, key, prefix=False, timeout=None, **options):
        """RangeResult of key (or of every key under it with prefix=True);
        options: limit, revision, keys_only, count_only, serializable."""
        request = Range(key, prefix, **options)
        return self._call("/kv/range", request.body(), RangeResult.parse,
                          timeout, idempotent=True)

    @defer.inlineCallbacks
    def get(self, key, timeout=None, **options):
        """The KeyValue of key, or None."""
        result = yield self.range(key, timeout=timeout, **options)
        return result.kvs[0] if result.kvs else None

    def put(self, key, value, lease=0, prev_kv=False, timeout=None):
        return self._call("/kv/put", Put(key, value, lease, prev_kv).body(),
                          PutResult.parse, timeout)

    def delete(self, key, prefix=False, prev_kv=False, timeout=None):
        return self._call("/kv/deleterange",
                          Delete(key, prefix, prev_kv).body(),
                          DeleteResult.parse, timeout)

    def txn(self, txn, timeout=None):
        """Run a Txn; a TxnResult (succeeded, responses)."""
        return self._call("/kv/txn", txn.body(), TxnResult.parse, timeout)

    def compact(self, revision, physical=False, timeout=None):
        body = {"revision": str(revision)}
        if physical:
            body["physical"] = True
        return self._call("/kv/compaction", body,
                          lambda obj: Header.parse(obj.get("header")), timeout)

    # -- leases ---------------------------------------------------------------

    def grant(self, ttl, lease_id=0, timeout=None):
        """A new Lease of ttl seconds (the server may raise it to its
        minimum, about 1.5 election timeouts)."""
        body = {"TTL": str(int(ttl))}
        if lease_id:
            body["ID"] = str(lease_id)
        return self._call("/lease/grant", body, _parse_grant, timeout)

    def keepalive(self, lease_id, timeout=None):
        """Renew the lease once; its Lease (with the TTL it now has), or
        EtcdLeaseNotFound when it has expired or was revoked."""
        # A stream in gRPC; through the gateway one request gets one answer.
        return self._call("/lease/keepalive", {"ID": str(lease_id)},
                          _parse_keepalive, timeout, idempotent=True)

    def revoke(self, lease_id, timeout=None):
        """Revoke the lease (its keys are deleted)."""
        return self._call("/lease/revoke", {"ID": str(lease_id)},
                          lambda obj: Header.parse(obj.get("header")), timeout)

    def time_to_live(self, lease_id, timeout=None):
        """The lease's remaining TTL in seconds (-1: it does not exist)."""
        return self._call("/lease/timetolive", {"ID": str(lease_id)},
                          lambda obj: int(obj.get("TTL") or 0), timeout,
                          idempotent=True)

    # -- cluster --------------------------------------------------------------

    def members(self, timeout=None):
        return self._call("/cluster/member/list", {}, _parse_members,
                          timeout, idempotent=True)

    def member_add(self, peer_urls, learner=False, timeout=None):
        """Add a member; (the new Member, every Member now)."""
        body = {"peerURLs": list(peer_urls)}
        if learner:
            body["isLearner"] = True
        return self._call("/cluster/member/add", body, _parse_member_add,
                          timeout)

    def member_remove(self, member_id, timeout=None):
        return self._call("/cluster/member/remove", {"ID": str(member_id)},
                          _parse_members, timeout)

    def member_promote(self, member_id, timeout=None):
        """Make a learner a voting member (etcd 3.4 and later); refused
        until the learner has caught up with the leader."""
        return self._call("/cluster/member/promote", {"ID": str(member_id)},
                          _parse_members, timeout)

    def status(self, endpoint=None, timeout=None):
        """Status of the member answering (of ``endpoint`` if given: a
        client just for it, so no failover hides that it is down)."""
        if endpoint is not None:
            single = EtcdClient([endpoint], self.reactor,
                                self.timeout if timeout is None else timeout)
            d = single.status(timeout=timeout)
            d.addBoth(lambda r: single.close().addCallback(lambda _: r))
            return d
        return self._call("/maintenance/status", {}, Status.parse, timeout,
                          idempotent=True)

    def watch_stream(self, body, on_message, timeout=None):
        """Open the raw watch stream (see watch.Watcher)."""
        return self.transport.stream("/watch", {"create_request": body},
                                     on_message, timeout)

    # -- election -------------------------------------------------------------

    def campaign(self, key, value, lease_id, timeout=None):
        """One attempt at holding key: create it with value under the lease
        if nobody holds it.  (won, the KeyValue of whoever holds it)."""
        txn = Txn().when(Compare.create_revision(key) == 0) \
                   .then(Put(key, value, lease=lease_id), Range(key)) \
                   .otherwise(Range(key))
        d = self.txn(txn, timeout)

        def holder(result):
            kvs = result.responses[-1].kvs
            return result.succeeded, (kvs[0] if kvs else None)
        return d.addCallback(holder)

    def resign(self, key, lease_id, timeout=None):
        """Give key up if this lease holds it; True if it did."""
        txn = Txn().when(Compare.lease(key) == lease_id).then(Delete(key))
        return self.txn(txn, timeout).addCallback(lambda r: r.succeeded)

    def close(self):
        return self.transport.close()


def _parse_grant(obj):
    if obj.get("error"):
        raise errors.EtcdRequestError(obj["error"])
    return Lease(int(obj["ID"]), int(obj.get("TTL") or 0),
                 Header.parse(obj.get("header")))


def _parse_keepalive(obj):
    result = obj.get("result", obj)
    ttl = int(result.get("TTL") or 0)
    if ttl <= 0:
        raise errors.EtcdLeaseNotFound(
            "etcd: lease %s not found (expired or revoked)"
            % result.get("ID"))
    return Lease(int(result["ID"]), ttl, Header.parse(result.get("header")))


def _parse_members(obj):
    return tuple(Member.parse(m) for m in obj.get("members") or ())


def _parse_member_add(obj):
    return Member.parse(obj["member"]), _parse_members(obj)
