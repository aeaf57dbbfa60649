"""
host.disable / enable and the host's own reboot and shutdown, with
XAPI's checks: a host is rebooted or shut down only once disabled
(HOST_NOT_DISABLED) and with no guest running on it (HOST_IN_USE).

What they do to a txxapi host: the machine under the daemon is not
ours to power off, so a reboot restarts the daemon (the exit status
that asks its supervisor for a restart; the host greets its master
again, which marks it live and enabled, as a host that boots), and a
shutdown stops it for good (status 0), the host marked not live at once
rather than once its heartbeats are missed.  Either happens once the
answer has left.
"""

from txxapi.api.registry import implements
from txxapi.errors import XenAPIError
from txxapi.ha.status import assert_change_preserves_plan
from txxapi.pool import join as pool_join
from txxapi.pool.liveness import set_live

RUNNING = ("Running", "Paused", "Suspended")


@implements("host.disable")
def disable(ctx, host):
    """Refused, as XAPI's, where HA's failover plan needs the host."""
    def done(_):
        if ctx.db.fields("host", host)["enabled"]:
            ctx.db.update("host", host, {"enabled": False})
        return ""
    return assert_change_preserves_plan(
        ctx, hosts_to_disable=[host]).addCallback(done)


@implements("host.enable")
def enable(ctx, host):
    if not ctx.db.fields("host", host)["enabled"]:
        ctx.db.update("host", host, {"enabled": True})
    return ""


def guests_resident_on(db, host):
    """The VMs resident on ``host`` but its control domain."""
    return [vm for vm in db.where("VM", resident_on=host)
            if not db.get("VM", vm, "is_control_domain")]


def _assert_can_power_off(db, host):
    if db.fields("host", host)["enabled"]:
        raise XenAPIError("HOST_NOT_DISABLED")
    for vm in sorted(guests_resident_on(db, host)):
        if db.get("VM", vm, "power_state") in RUNNING:
            raise XenAPIError("HOST_IN_USE", host, "vm", vm)


@implements("host.reboot")
def reboot(ctx, host):
    _assert_can_power_off(ctx.db, host)
    pool_join.restart(ctx.server.reactor)
    return ""


@implements("host.shutdown")
def shutdown(ctx, host):
    _assert_can_power_off(ctx.db, host)
    set_live(ctx.db, host, False)
    reactor = ctx.server.reactor
    reactor.callLater(pool_join.RESTART_DELAY, reactor.stop)
    return ""
