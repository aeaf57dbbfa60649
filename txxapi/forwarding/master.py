"""
Calls that only the master can run, whoever receives them: the pool's
membership (pool.eject, host.destroy), its pool-wide settings (external
authentication, HA's failures to tolerate), subjects, and messages
(XAPI's alerts live with the master).  On the master they run at once;
on a slave, under a pool session of its own, they are sent to the
master.  Nothing is marked.
"""

from txxapi.forwarding import hosts
from txxapi.forwarding.registry import Route, forwards

MESSAGE_CALLS = ("create", "destroy", "destroy_many", "get", "get_all",
                 "get_all_records", "get_all_records_where", "get_by_uuid",
                 "get_record", "get_since")


@forwards("pool.eject", "host.destroy", "pool.enable_external_auth",
          "pool.disable_external_auth", "pool.set_ha_host_failures_to_tolerate",
          "subject.create", "subject.destroy", "subject.add_to_roles",
          "subject.remove_from_roles",
          *["message." + name for name in MESSAGE_CALLS])
def on_master(ctx, *args):
    return Route(hosts.master(ctx))
