"""
VM.migrate_send, VM.assert_can_migrate and host.migrate_receive within
this pool (XAPI's storage motion, xapi_vm_migrate):

- host.migrate_receive: the destination's half of the handshake, the
  map a migrate_send takes as ``dest`` (host, session_id, and XAPI's
  SM, xenops and master URLs);
- assert_can_migrate: ``dest`` must name a host of this pool (another
  pool's is not built: NOT_IMPLEMENTED); every disk of the VM goes to
  the SR vdi_map gives it or stays on its own, which the destination
  must then see (VDI_NOT_IN_MAP); each mapped SR and network must exist;
  a running VM must pass pool_migrate's checks;
- migrate_send: a halted VM's disks are copied to their new SRs, its
  VBDs pointed at the copies and the old disks destroyed; its VIFs move
  to the networks of vif_map; a running VM then moves to the host, as
  pool_migrate moves it.  Moving a running or suspended VM's disks needs
  their live mirror, which is not built (NOT_IMPLEMENTED).
"""

from twisted.internet import defer

from txxapi.api.registry import implements
from txxapi.errors import XenAPIError
from txxapi.forwarding import hosts
from txxapi.migration import checks, evacuation

RUNNING = ("Running",)


@implements("host.migrate_receive")
def migrate_receive(ctx, host, network, options):
    db = ctx.db
    address = db.fields("host", host)["address"]
    if db.exists("network", network):
        address = checks.address_on_network(ctx, network, host)
    else:
        db.fields("network", network)       # HANDLE_INVALID
    master = db.fields("host", hosts.master(ctx))["address"]
    session = ctx.session
    return {"host": host, "session_id": session,
            "SM": "http://%s/services/SM?session_id=%s" % (address, session),
            "xenops": "http://%s/services/xenops?session_id=%s" % (
                address, session),
            "master": "http://%s/" % master}


def _plan(ctx, vm, dest, vdi_map, vif_map):
    """(destination host, [(VBD, VDI, new SR)] of the disks that move)."""
    db = ctx.db
    fields = db.fields("VM", vm)
    host = dest.get("host", "")
    if not db.exists("host", host):
        raise XenAPIError("NOT_IMPLEMENTED",
                          "VM.migrate_send to another pool")
    for vdi, sr in vdi_map.items():
        db.fields("VDI", vdi)
        db.fields("SR", sr)
    for vif, network in vif_map.items():
        db.fields("VIF", vif)
        db.fields("network", network)
    seen = {db.fields("PBD", p)["SR"] for p in db.where("PBD", host=host)
            if db.fields("PBD", p)["currently_attached"]}
    moves = []
    for vbd in sorted(db.where("VBD", VM=vm)):
        vdi = db.fields("VBD", vbd)["VDI"]
        if not db.exists("VDI", vdi):
            continue        # an empty CD drive
        current = db.fields("VDI", vdi)["SR"]
        target = vdi_map.get(vdi, current)
        if target not in seen:
            raise XenAPIError("VDI_NOT_IN_MAP", vdi) if target == current \
                else XenAPIError("VM_REQUIRES_SR", vm, target)
        if target != current:
            moves.append((vbd, vdi, target))
    if moves and fields["power_state"] != "Halted":
        raise XenAPIError("NOT_IMPLEMENTED",
                          "VM.migrate_send of a %s VM's disks"
                          % fields["power_state"].lower())
    if fields["power_state"] in RUNNING:
        checks.assert_can_migrate(ctx, vm, host, {})
    return host, moves


@implements("VM.assert_can_migrate")
def assert_can_migrate(ctx, vm, dest, live, vdi_map, vif_map, options,
                       vgpu_map):
    _plan(ctx, vm, dest, vdi_map, vif_map)
    return ""


@implements("VM.migrate_send")
@defer.inlineCallbacks
def migrate_send(ctx, vm, dest, live, vdi_map, vif_map, options, vgpu_map):
    host, moves = _plan(ctx, vm, dest, vdi_map, vif_map)
    db, calls = ctx.db, ctx.server.forwarder.storage
    for vbd, vdi, sr in moves:
        copy = yield calls.copy_vdi(ctx, vdi, sr)
        db.update("VBD", vbd, {"VDI": copy})
        yield calls.destroy_vdi(ctx, vdi)
    for vif, network in sorted(vif_map.items()):
        db.update("VIF", vif, {"network": network})
    fields = db.fields("VM", vm)
    if fields["power_state"] in RUNNING and fields["resident_on"] != host:
        yield evacuation.migrate_one(ctx, vm, host, {"live": "true"})
    return vm
