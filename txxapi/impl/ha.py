"""
The HA calls, with XAPI's checks: planning (how many host failures the
pool tolerates, now or with hypothetical priorities; where failed VMs
would go; whether a plan exists; the failures-to-tolerate target and a
VM's restart priority) and enabling and disabling HA (the statefile and
metadata VDIs on the heartbeat SR, ha_enabled and the wait for every
host to join the liveset, which txxapi.ha.monitor keeps), pausing
restarts.
"""

from twisted.internet import defer, task

from txxapi.api.registry import implements
from txxapi.errors import XenAPIError, handle_invalid, invalid_value
from txxapi.ha import local, state
from txxapi.storage import sm_features
from txxapi.ha.status import (
    DROP_PRIORITY, alert, max_failures, plan_exists, pool_of,
    assert_change_preserves_plan, update_pool_status)


@implements("pool.ha_compute_max_host_failures_to_tolerate")
@defer.inlineCallbacks
def compute_max_host_failures_to_tolerate(ctx):
    db = ctx.db
    n = yield max_failures(db)
    pool = pool_of(ctx)
    p = db.fields("pool", pool)
    if p["ha_enabled"]:
        target = p["ha_host_failures_to_tolerate"]
        if p["ha_overcommitted"] != (target > n):
            db.update("pool", pool, {"ha_overcommitted": target > n})
        if p["ha_plan_exists_for"] != n:
            db.update("pool", pool, {"ha_plan_exists_for": min(target, n)})
            if n < p["ha_plan_exists_for"]:
                alert(ctx, "HA_POOL_DROP_IN_PLAN_EXISTS_FOR", DROP_PRIORITY,
                       str(n))
    return n


@implements("pool.ha_compute_hypothetical_max_host_failures_to_tolerate")
def compute_hypothetical_max_host_failures_to_tolerate(ctx, configuration):
    for vm, priority in configuration.items():
        if priority not in state.VALID_PRIORITIES:
            raise invalid_value("ha_restart_priority", priority)
    for vm in configuration:
        if not ctx.db.exists("VM", vm):
            raise handle_invalid("VM", vm)
    protected = [vm for vm, priority in configuration.items()
                 if priority == state.RESTART]
    return max_failures(ctx.db, protected)


@implements("pool.ha_compute_vm_failover_plan")
def compute_vm_failover_plan(ctx, failed_hosts, failed_vms):
    """VM -> {"host": where it would restart} or, for a VM that fits
    nowhere, {"error_code": why}: its agility error, else
    HOST_NOT_ENOUGH_FREE_MEMORY."""
    db = ctx.db
    for vm in failed_vms:
        if not db.exists("VM", vm):
            raise handle_invalid("VM", vm)
    plan = state.evacuation_plan(db, failed_hosts, failed_vms)
    result = {}
    for vm in failed_vms:
        if vm in plan:
            result[vm] = {"host": plan[vm]}
            continue
        try:
            state.assert_agile(db, vm)
            code = "HOST_NOT_ENOUGH_FREE_MEMORY"
        except XenAPIError as e:
            code = e.code
        result[vm] = {"error_code": code}
    return result


@implements("pool.ha_failover_plan_exists")
def failover_plan_exists(ctx, n):
    return plan_exists(ctx.db, n)


@implements("pool.set_ha_host_failures_to_tolerate")
@defer.inlineCallbacks
def set_ha_host_failures_to_tolerate(ctx, self, value):
    db = ctx.db
    db.fields("pool", self)
    if value < 0:
        raise invalid_value("ha_host_failures_to_tolerate", value)
    # No plan at all blocks nothing.
    if db.fields("pool", pool_of(ctx))["ha_plan_exists_for"] > 0:
        yield assert_change_preserves_plan(ctx, value)
    db.update("pool", self, {"ha_host_failures_to_tolerate": value})
    yield update_pool_status(ctx)


@implements("VM.set_ha_restart_priority")
@defer.inlineCallbacks
def set_ha_restart_priority(ctx, self, value):
    db = ctx.db
    vm = db.fields("VM", self)
    if value not in state.VALID_PRIORITIES:
        raise invalid_value("ha_restart_priority", value)
    current = vm["ha_restart_priority"]
    if current != state.RESTART and value == state.RESTART:
        if vm["power_state"] != "Halted":
            yield assert_change_preserves_plan(ctx, extra=[self])
        if db.fields("pool", pool_of(ctx))["ha_enabled"]:
            yield update_pool_status(ctx)
    vm = db.fields("VM", self)
    if current != value:
        changes = {"ha_restart_priority": value}
        # A running VM is protected (or not) at once.
        if vm["power_state"] == "Running":
            changes["ha_always_run"] = value == state.RESTART
        db.update("VM", self, changes)


@implements("VM.assert_agile")
def assert_agile(ctx, self):
    ctx.db.fields("VM", self)
    state.assert_agile(ctx.db, self)


# --- enabling and disabling ---------------------------------------------------

# XAPI's sizes: a statefile has a 4 KiB global section and one of 4 KiB
# for each of up to 64 hosts; the metadata VDI holds a redo log of about
# 4 GB (less the statefile's 4 MiB and an empty SR's).
STATEFILE_SIZE = 4096 + 64 * 4096
MIB4 = 4 << 20
METADATA_SIZE = (4000000000 // MIB4 - 2) * MIB4
CLUSTER_STACK = "xhad"


def _ha_vdi(db, sr, vdi_type, size):
    return next((v for v in db.where("VDI", SR=sr)
                 if db.fields("VDI", v)["type"] == vdi_type
                 and db.fields("VDI", v)["virtual_size"] >= size), None)


def assert_sr_can_host_statefile(db, sr):
    """Every host has a plugged PBD to it (SR_NO_PBDS as XAPI); room for
    both VDIs unless they exist."""
    plugged = {}
    for pbd in db.where("PBD", SR=sr):
        p = db.fields("PBD", pbd)
        plugged[p["host"]] = plugged.get(p["host"], False) or \
            p["currently_attached"]
    if not all(plugged.get(h) for h in db.refs("host")):
        raise XenAPIError("SR_NO_PBDS", sr)
    s = db.fields("SR", sr)
    # XAPI asks for a VDI its cluster stack can attach without the SR
    # master; here one the SR can make.
    if "VDI_CREATE" not in sm_features(db, s["type"]):
        raise XenAPIError("SR_OPERATION_NOT_SUPPORTED", sr)
    needed = sum(-(-size // MIB4) * MIB4
                 for vdi_type, size in (("ha_statefile", STATEFILE_SIZE),
                                        ("redo_log", METADATA_SIZE))
                 if _ha_vdi(db, sr, vdi_type, size) is None)
    if needed and 0 < s["physical_size"] and \
            s["physical_size"] - s["physical_utilisation"] < needed:
        raise XenAPIError("SR_SOURCE_SPACE_INSUFFICIENT", sr)


@implements("SR.assert_can_host_ha_statefile")
def assert_can_host_ha_statefile(ctx, sr):
    ctx.db.fields("SR", sr)
    assert_sr_can_host_statefile(ctx.db, sr)
    return ""


@defer.inlineCallbacks
def _find_or_create(ctx, sr, vdi_type, size, name, description):
    found = _ha_vdi(ctx.db, sr, vdi_type, size)
    if found is not None:
        return found
    ref = yield ctx.server.storage.create_vdi(
        ctx, sr, size, name, description, vdi_type, sharable=True,
        sm_config={"type": "raw"})
    return ref


def _candidate_srs(db):
    candidates = []
    for sr in sorted(db.refs("SR"), key=lambda s: db.fields("SR", s)["uuid"]):
        try:
            assert_sr_can_host_statefile(db, sr)
        except XenAPIError:
            continue
        candidates.append(sr)
    return candidates


@implements("pool.enable_ha")
@defer.inlineCallbacks
def enable_ha(ctx, heartbeat_srs, configuration):
    """XAPI's checks and VDIs, then ha_enabled: every host joins the
    liveset (its lease on etcd) when it sees it, and the call returns
    once all have, or undoes it (HA_FAILED_TO_FORM_LIVESET)."""
    db, server = ctx.db, ctx.server
    pool = pool_of(ctx)
    if db.fields("pool", pool)["ha_enabled"]:
        raise XenAPIError("HA_IS_ENABLED")
    for sr in heartbeat_srs:
        if not db.exists("SR", sr):
            raise handle_invalid("SR", sr)
    t = local.timeout_of(configuration)
    client = server.ha.client
    if client is None:
        # Quorum comes from the pool's etcd, which a pool of one lacks.
        raise XenAPIError("HA_TOO_FEW_HOSTS")
    for host in db.refs("host"):
        if not state.is_host_live(db, host):
            raise XenAPIError("HOST_OFFLINE", host)
    srs = list(heartbeat_srs) or _candidate_srs(db)
    if not srs:
        raise XenAPIError("CANNOT_CREATE_STATE_FILE")
    sr = srs[0]
    assert_sr_can_host_statefile(db, sr)
    statefile = yield _find_or_create(ctx, sr, "ha_statefile",
                                      STATEFILE_SIZE, "Statefile for HA",
                                      "Used for storage heartbeating")
    yield _find_or_create(ctx, sr, "redo_log", METADATA_SIZE,
                          "Metadata for HA", "Used for master failover")
    db.update("pool", pool, {"ha_statefiles": [statefile],
                             "ha_configuration": dict(configuration),
                             "ha_cluster_stack": CLUSTER_STACK,
                             "ha_plan_exists_for": 0})
    yield update_pool_status(ctx)
    db.update("pool", pool, {"ha_enabled": True})
    uuids = {db.fields("host", h)["uuid"] for h in db.refs("host")}
    deadline = server.reactor.seconds() + t + 60
    while True:
        joined = yield local.uuids_under(client, local.MEMBER_PREFIX)
        if uuids <= joined:
            break
        if server.reactor.seconds() > deadline:
            yield _disable(ctx)
            raise XenAPIError("HA_FAILED_TO_FORM_LIVESET")
        yield task.deferLater(server.reactor, 0.2, lambda: None)


@defer.inlineCallbacks
def _disable(ctx):
    db = ctx.db
    # Leavers are not failures: the liveset is forgotten first.
    yield ctx.server.ha.client.delete(local.MEMBER_PREFIX, prefix=True)
    db.update("pool", pool_of(ctx), {"ha_enabled": False,
                                    "ha_statefiles": [],
                                    "ha_cluster_stack": ""})
    for host in db.refs("host"):
        db.update("host", host, {"ha_statefiles": [],
                                 "ha_network_peers": []})


@implements("pool.disable_ha")
def disable_ha(ctx):
    if not ctx.db.fields("pool", pool_of(ctx))["ha_enabled"]:
        raise XenAPIError("HA_NOT_ENABLED")
    return _disable(ctx).addCallback(lambda _: "")


@implements("pool.ha_prevent_restarts_for")
def ha_prevent_restarts_for(ctx, seconds):
    # As XAPI, also without HA on: it may be about to be enabled.
    ctx.server.ha.failover.prevent_restarts_for(seconds)
    return ""


@implements("host.emergency_ha_disable")
def emergency_ha_disable(ctx, soft):
    """This host alone out of HA (txxapi.ha.monitor); the call works in
    emergency mode, on the host it is sent to."""
    return ctx.server.ha.emergency_disable(soft).addCallback(lambda _: "")
