"""
etcd for the pool: a non-blocking etcd v3 client for Twisted, over the
v3 JSON gateway every etcd member serves on its client URL (so no gRPC
stack and no threads), with the helpers the pool builds on:

- client.EtcdClient: keys, ranges, transactions, leases, members, status,
  failing over between members, every call under a deadline;
- types: the result objects and the Txn / Compare builders;
- lease.LeaseKeeper: renews a lease, reports its loss at once;
- watch.Watcher: a watch that resumes after a dropped stream;
- election: mastership as a key under a lease;
- member: an etcd member process as a Twisted service, and adding or
  removing members of a running cluster.
"""

from txxapi.pool.etcd.client import EtcdClient
from txxapi.pool.etcd.election import Election, elect
from txxapi.pool.etcd.errors import (
    EtcdCompacted, EtcdError, EtcdLeaseNotFound, EtcdMemberStopping,
    EtcdNoQuorum, EtcdRequestError, EtcdTimeout, EtcdUnavailable)
from txxapi.pool.etcd.lease import LeaseKeeper
from txxapi.pool.etcd.types import (
    Compare, Delete, KeyValue, Lease, Member, Put, Range, Txn, WatchEvent)
from txxapi.pool.etcd.watch import Watcher

__all__ = [
    "EtcdClient", "Election", "elect", "LeaseKeeper", "Watcher",
    "EtcdError", "EtcdUnavailable", "EtcdTimeout", "EtcdNoQuorum",
    "EtcdCompacted", "EtcdLeaseNotFound", "EtcdMemberStopping",
    "EtcdRequestError", "Compare", "Txn", "Put", "Range", "Delete", "KeyValue", "Lease",
    "Member", "WatchEvent",
]
