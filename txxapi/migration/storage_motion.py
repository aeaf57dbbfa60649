"""
VM.migrate_send, VM.assert_can_migrate and host.migrate_receive (XAPI's
storage motion, xapi_vm_migrate):

- host.migrate_receive: the destination's half of the handshake, the
  map a migrate_send takes as ``dest`` (host, session_id, and XAPI's
  SM, xenops and master URLs);
- to another pool's host: cross_pool.py;
- within this pool, assert_can_migrate: every disk of the VM goes to
  the SR vdi_map gives it or stays on its own, which the destination
  must then see (VDI_NOT_IN_MAP); each mapped SR and network must exist;
  a running VM must pass pool_migrate's checks;
- within this pool, migrate_send (marked ``migrate_send`` by its
  forwarding rule, txxapi.forwarding.migration): a halted VM's disks
  are copied to their new SRs, its VBDs pointed at the copies and the
  old disks destroyed; a running VM's are copied from snapshots while it
  runs, then the blocks it wrote meanwhile with the guest paused
  (live_copy.py: a pre-copy, not XAPI's synchronous mirror), on the host
  it runs on, which must see their new SRs; its VIFs move to the networks of vif_map; a running
  VM then moves to the host, as pool_migrate moves it.  Moving a
  suspended VM's disks is not built (NOT_IMPLEMENTED).
"""

from twisted.internet import defer

from txxapi.api.registry import implements
from txxapi.errors import XenAPIError
from txxapi.forwarding import hosts
from txxapi.migration import checks, cross_pool, live_copy, sender

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


def plan(ctx, vm, dest, vdi_map, vif_map, marked=False):
    """(destination host, [(VBD, VDI, new SR)] of the disks that move),
    within this pool.  ``marked``: the VM's migrate_send is marked (its
    operation is not checked again)."""
    db = ctx.db
    fields = db.fields("VM", vm)
    host = dest["host"]
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
    if moves and fields["power_state"] == "Suspended":
        raise XenAPIError("NOT_IMPLEMENTED",
                          "VM.migrate_send of a suspended VM's disks")
    if fields["power_state"] in RUNNING:
        checks.assert_can_migrate(ctx, vm, host, {},
                                  op=None if marked else "migrate_send",
                                  sr_check=False)
        live_copy.assert_can_copy_here(ctx, vm, moves)
    return host, moves


@implements("VM.assert_can_migrate")
def assert_can_migrate(ctx, vm, dest, live, vdi_map, vif_map, options,
                       vgpu_map):
    if cross_pool.is_cross_pool(ctx, dest):
        d = cross_pool.assert_can_migrate(ctx, vm, dest, vdi_map, vif_map,
                                          options)
        return d.addCallback(lambda _: "")
    plan(ctx, vm, dest, vdi_map, vif_map)
    return ""


@implements("VM.migrate_send")
def migrate_send(ctx, vm, dest, live, vdi_map, vif_map, options, vgpu_map):
    if cross_pool.is_cross_pool(ctx, dest):
        return cross_pool.migrate_send(ctx, vm, dest, vdi_map, vif_map,
                                       options)
    return _within(ctx, vm, dest, vdi_map, vif_map)


@defer.inlineCallbacks
def _within(ctx, vm, dest, vdi_map, vif_map):
    host, moves = plan(ctx, vm, dest, vdi_map, vif_map, marked=True)
    db, calls = ctx.db, ctx.server.forwarder.storage
    if moves and db.fields("VM", vm)["power_state"] in RUNNING:
        yield live_copy.move_disks(ctx, vm, moves)
        moves = []
    for vbd, vdi, sr in moves:
        copy = yield calls.copy_vdi(ctx, vdi, sr)
        db.update("VBD", vbd, {"VDI": copy})
        yield calls.destroy_vdi(ctx, vdi)
    for vif, network in sorted(vif_map.items()):
        db.update("VIF", vif, {"network": network})
    fields = db.fields("VM", vm)
    if fields["power_state"] in RUNNING and fields["resident_on"] != host:
        # The rule holds pool_migrate's marks and reservation for it.
        yield sender.pool_migrate(ctx, vm, host, {"live": "true"})
    return vm
