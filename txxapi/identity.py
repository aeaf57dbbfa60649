"""
This host's identity in its pool: the few facts parts need about the
local host (its ref, its pool, where its state lives), given to them
instead of the whole Server.  The refs are known once the database is
open; the server core fills them in at start.
"""

from zope.interface import implementer

from txxapi.interfaces import IHostIdentity


@implementer(IHostIdentity)
class HostIdentity:
    def __init__(self, data_dir, bind=""):
        self.data_dir = data_dir
        self.bind = bind
        self.host_ref = None
        self.pool_ref = None
        self.pool_secret = None

    def assert_master(self):
        """Raise HOST_IS_SLAVE on a slave; this host is always the master
        until pool membership lands."""
