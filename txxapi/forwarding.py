"""
Forwarding: which host executes a call.

Side-effecting calls are run where the resource lives: on the master for
pool-wide work, on the host a VM is resident on for operations on a
running VM, on the host of a plugged PBD for storage.  This host is the
only one until the pool work lands, so every call runs here; the seam is
kept so that the per-class rules (and the HOST_IS_SLAVE redirections of a
slave) slot in without touching dispatch or the implementations.
"""


class LocalForwarder:
    def __init__(self, server):
        self.server = server

    def execute(self, ctx, implementation, args):
        return implementation(ctx, *args)
