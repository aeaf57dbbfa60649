"""
The resource pool: many hosts managed as one, through one master.

This package holds what a pool is built on.  Its first part, ``etcd``, is
the engine: a non-blocking etcd v3 client and the supervision of etcd
member processes, on which the pool keeps its membership, the master's
lease and the database log (so every acknowledged write is held by a
quorum of hosts).  A one-host installation runs no etcd and uses nothing
from here.
"""
