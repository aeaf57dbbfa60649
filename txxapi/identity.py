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

# The calls a slave in emergency mode still serves (XAPI's datamodel
# list), those of them txxapi has among them.
EMERGENCY_CALLS = frozenset([
    "pool.emergency_reset_master", "pool.emergency_transition_to_master",
    "pool.is_slave", "session.slave_local_login",
    "session.slave_local_login_with_password", "session.local_logout",
    "host.propose_new_master", "host.commit_new_master",
    "host.abort_new_master", "host.local_assert_healthy",
    "host.signal_networking_change", "host.local_management_reconfigure",
    "host.ha_xapi_healthcheck", "host.emergency_ha_disable",
    "host.management_disable", "host.get_system_status_capabilities",
    "host.is_in_emergency_mode", "host.shutdown_agent",
    "host.emergency_reset_server_certificate",
    "host.emergency_disable_tls_verification",
    "host.emergency_reenable_tls_verification",
    "host.emergency_clear_mandatory_guidance",
    "host.update_firewalld_service_status",
])


@implementer(IHostIdentity)
class HostIdentity:
    def __init__(self, data_dir, bind=""):
        self.data_dir = data_dir
        self.bind = bind
        self.host_ref = None
        self.pool_ref = None
        self.pool_secret = None
        # Called when this host learns the pool has, or is about to have,
        # another master: what it took on the old master's word goes.
        self.master_listeners = []
        # Read from pool.conf once at start (txxapi.pool.role).
        self._role = Role(MASTER)
        # A slave that has not (yet) greeted its master is in emergency
        # mode: the error (code, params...) other calls get meanwhile.
        self.emergency_error = None

    @property
    def role(self):
        return self._role

    @role.setter
    def role(self, role):
        old, self._role = self._role, role
        if (old.kind, old.master_address) != (role.kind, role.master_address):
            self.new_master()

    def new_master(self):
        """The pool's master changes (an HA follower took the new one in
        place, or this host committed to one and is about to restart)."""
        for listener in list(self.master_listeners):
            listener()

    @property
    def in_emergency_mode(self):
        return self.emergency_error is not None

    def assert_not_emergency(self, wire_name):
        """In emergency mode only the emergency calls run; the others get
        the error that tells why (HOST_STILL_BOOTING while starting)."""
        if self.emergency_error is not None and \
                wire_name not in EMERGENCY_CALLS:
            raise XenAPIError(*self.emergency_error)

    @property
    def is_master(self):
        return self.role.is_master

    def assert_master(self):
        """Raise HOST_IS_SLAVE [master address] on a slave: clients
        reconnect there."""
        if not self.role.is_master:
            raise XenAPIError("HOST_IS_SLAVE", self.role.master_address or "")
