"""
This host's identity in its pool: the few facts parts need about the
local host (its ref, its pool, where its state lives), given to them
instead of the whole Server.  The refs are known once the database is
open; the server core fills them in at start.
"""

from zope.interface import implementer

from txxapi.errors import XenAPIError
from txxapi.interfaces import IHostIdentity
from txxapi.pool.role import Role, MASTER


@implementer(IHostIdentity)
class HostIdentity:
    def __init__(self, data_dir, bind=""):
        self.data_dir = data_dir
        self.bind = bind
        self.host_ref = None
        self.pool_ref = None
        self.pool_secret = None
        # Read from pool.conf once at start (txxapi.pool.role).
        self.role = Role(MASTER)

    @property
    def is_master(self):
        return self.role.is_master

    def assert_master(self):
        """Raise HOST_IS_SLAVE [master address] on a slave: clients
        reconnect there."""
        if not self.role.is_master:
            raise XenAPIError("HOST_IS_SLAVE", self.role.master_address or "")
