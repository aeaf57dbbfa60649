"""
Forwarding rules of storage (SR, PBD, VDI): the operation is marked on
the SR and the VDI it works on with the wait policy (a conflicting
operation is waited out, as XAPI's storage calls retry) and runs on a
host where the SR is plugged; a PBD's plug on the PBD's host.  The local
steps are in txxapi/impl/sr.py, impl/vdi.py and the storage component.

``StorageCalls`` gives the VDI operations that VM operations and the HTTP
data paths make (a clone's disks, a suspend image, an import's new VDI)
the same checks and marks as the API's calls, as XAPI's internal calls go
through its message forwarding too.
"""

from txxapi.errors import XenAPIError
from txxapi.forwarding import hosts
from txxapi.forwarding.registry import Route, forwards
from txxapi.impl.vdi import assert_not_on_running_vm
from txxapi.values import NULL_REF


def _storage(ctx):
    return ctx.server.storage


def assert_plugged(ctx, sr):
    """SR_HAS_NO_PBDS unless the SR is plugged on a host that can run
    calls (the one the call is then sent to)."""
    if not hosts.plugged_on(ctx, sr):
        raise XenAPIError("SR_HAS_NO_PBDS", sr)


def _on_sr(ctx, sr, op, *more):
    return Route(hosts.with_sr_plugged(ctx, sr), [("SR", sr, op)] +
                 list(more), wait=True)


# --- SR and PBD ---------------------------------------------------------------

@forwards("SR.create")
def sr_create(ctx, host, device_config, physical_size, name_label,
              name_description, type, content_type, shared, sm_config):
    """A local SR is made on its host, a shared one by the master."""
    ctx.db.fields("host", host)
    _storage(ctx).driver_for_type(type)
    return Route(hosts.master(ctx) if shared else hosts.named(ctx, host))


@forwards("SR.forget", "SR.destroy")
def sr_forget_or_destroy(ctx, sr):
    ctx.db.fields("SR", sr)
    op = ctx.message.wire_name.split(".")[1]
    return Route(hosts.master(ctx), [("SR", sr, op)], wait=True)


@forwards("SR.scan")
def sr_scan(ctx, sr):
    ctx.db.fields("SR", sr)
    assert_plugged(ctx, sr)
    return _on_sr(ctx, sr, "scan")


@forwards("SR.update")
def sr_update(ctx, sr):
    """Where the SR is plugged; unmarked, as it was on one host."""
    ctx.db.fields("SR", sr)
    assert_plugged(ctx, sr)
    return Route(hosts.with_sr_plugged(ctx, sr))


@forwards("PBD.create")
def pbd_create(ctx, f):
    ctx.db.fields("host", f["host"])
    ctx.db.fields("SR", f["SR"])
    return Route(hosts.master(ctx), [("SR", f["SR"], "pbd_create")],
                 wait=True)


@forwards("PBD.destroy")
def pbd_destroy(ctx, pbd):
    f = ctx.db.fields("PBD", pbd)
    if f["currently_attached"]:
        raise XenAPIError("OPERATION_NOT_ALLOWED", "PBD is currently attached")
    return Route(hosts.master(ctx), [("SR", f["SR"], "pbd_destroy")],
                 wait=True)


@forwards("PBD.plug", step_after=True)
def pbd_plug(ctx, pbd):
    """The first plug of an SR on the master scans it, once the plug's
    mark is gone and before answering."""
    sr = ctx.db.fields("PBD", pbd)["SR"]
    return Route(hosts.of_pbd(ctx, pbd), [("SR", sr, "plug")], wait=True,
                 after=lambda result: _storage(ctx).scan(sr).addCallback(
                     lambda _: result))


@forwards("PBD.unplug")
def pbd_unplug(ctx, pbd):
    """An unplugged PBD answers at once; one whose SR has a VDI operation
    in progress is refused rather than waited for, and, as XAPI, one of
    the heartbeat SR (the HA statefile's) while HA is on."""
    db = ctx.db
    f = db.fields("PBD", pbd)
    host = f["host"]
    if not f["currently_attached"]:
        return Route(host)
    sr = f["SR"]
    pool = db.fields("pool", db.refs("pool")[0])
    if pool["ha_enabled"] and any(
            db.exists("VDI", v) and db.fields("VDI", v)["SR"] == sr
            for v in pool["ha_statefiles"]):
        raise XenAPIError("HA_IS_ENABLED")      # the heartbeat SR
    for vdi in db.where("VDI", SR=sr):
        for task, op in db.fields("VDI", vdi)["current_operations"].items():
            raise XenAPIError("OTHER_OPERATION_IN_PROGRESS", "VDI", vdi, op,
                              task)
    return Route(host, [("SR", sr, "unplug")], wait=True)


# --- VDI ----------------------------------------------------------------------

def create_route(ctx, sr, vdi_type):
    _storage(ctx).assert_can_create(
        sr, vdi_type, plugged=lambda sr: assert_plugged(ctx, sr))
    return _on_sr(ctx, sr, "vdi_create")


def vdi_route(ctx, vdi, op):
    """destroy, snapshot, clone, resize: marked on the SR and the VDI."""
    sr = _storage(ctx).assert_vdi_op(
        vdi, plugged=lambda sr: assert_plugged(ctx, sr))
    return _on_sr(ctx, sr, "vdi_" + op, ("VDI", vdi, op))


def clone_route(ctx, vdi):
    """A driver that cannot clone gets a full copy instead, as XAPI does,
    once the clone's marks are gone."""
    route = vdi_route(ctx, vdi, "clone")
    sr = ctx.db.fields("VDI", vdi)["SR"]

    def copy_instead(ref):
        if ref is not None:
            return ref
        return ctx.server.forwarder.storage.copy_vdi(ctx, vdi, sr)
    route.after = copy_instead
    return route


def copy_route(ctx, vdi, sr, into_vdi):
    _storage(ctx).assert_can_copy(vdi, sr, into_vdi)
    src_sr = ctx.db.fields("VDI", vdi)["SR"]
    return Route(hosts.with_sr_plugged(ctx, src_sr), [("VDI", vdi, "copy")],
                 wait=True)


forwards("VDI.create")(
    lambda ctx, f: create_route(ctx, f["SR"], f["type"]))
forwards("VDI.destroy")(lambda ctx, vdi: vdi_route(ctx, vdi, "destroy"))
forwards("VDI.snapshot")(
    lambda ctx, vdi, params: vdi_route(ctx, vdi, "snapshot"))
forwards("VDI.clone", step_after=True)(
    lambda ctx, vdi, params: clone_route(ctx, vdi))
forwards("VDI.resize")(lambda ctx, vdi, size: vdi_route(ctx, vdi, "resize"))
forwards("VDI.copy")(lambda ctx, vdi, sr, base_vdi, into_vdi: copy_route(
    ctx, vdi, sr, into_vdi))
for _op in ("enable_cbt", "disable_cbt", "data_destroy"):
    forwards("VDI." + _op)(
        lambda ctx, vdi, _op=_op: vdi_route(ctx, vdi, _op))


@forwards("VDI.list_changed_blocks")
def list_changed_blocks_route(ctx, vdi_from, vdi_to):
    ctx.db.fields("VDI", vdi_from)
    return vdi_route(ctx, vdi_to, "list_changed_blocks")


@forwards("VDI.update")
def vdi_update(ctx, vdi):
    sr = ctx.db.fields("VDI", vdi)["SR"]
    assert_plugged(ctx, sr)
    return Route(hosts.with_sr_plugged(ctx, sr), [("VDI", vdi, "update")],
                 wait=True)


@forwards("VDI.forget")
def vdi_forget(ctx, vdi):
    ctx.db.fields("VDI", vdi)
    return Route(hosts.master(ctx), [("VDI", vdi, "forget")], wait=True)


@forwards("VDI.introduce")
def vdi_introduce(ctx, uuid, name_label, name_description, SR, type,
                  sharable, read_only, other_config, location, *rest):
    """Refused before the mark: an SR not plugged here, a location another
    VDI has."""
    db = ctx.db
    db.fields("SR", SR)
    assert_plugged(ctx, SR)
    for other in db.where("VDI", SR=SR):
        f = db.fields("VDI", other)
        if f["location"] == location and f["uuid"] != uuid:
            raise XenAPIError("LOCATION_NOT_UNIQUE", SR, location)
    return _on_sr(ctx, SR, "vdi_introduce")


@forwards("VDI.set_on_boot")
def vdi_set_on_boot(ctx, vdi, value):
    sr = ctx.db.fields("VDI", vdi)["SR"]
    assert_not_on_running_vm(ctx.db, vdi)
    return _on_sr(ctx, sr, "vdi_set_on_boot", ("VDI", vdi, "set_on_boot"))


class StorageCalls:
    """The VDI operations the toolstack makes itself, checked, marked and
    routed as the API's are, then run by the storage component."""

    def __init__(self, forwarder, storage):
        self.forwarder = forwarder
        self.storage = storage

    def create_vdi(self, ctx, sr, virtual_size, name_label="",
                   name_description="", vdi_type="user", sharable=False,
                   read_only=False, other_config=None, xenstore_data=None,
                   sm_config=None, tags=None):
        record = {"SR": sr, "virtual_size": virtual_size,
                  "name_label": name_label,
                  "name_description": name_description, "type": vdi_type,
                  "sharable": sharable, "read_only": read_only,
                  "other_config": other_config or {},
                  "xenstore_data": xenstore_data or {},
                  "sm_config": sm_config or {}, "tags": tags or []}
        return self.forwarder.run(
            ctx, create_route(ctx, sr, vdi_type),
            lambda: self.storage.create_vdi(
                ctx, sr, virtual_size, name_label, name_description,
                vdi_type, sharable, read_only, other_config, xenstore_data,
                sm_config, tags),
            ("VDI.create", [record]))

    def destroy_vdi(self, ctx, vdi):
        return self.forwarder.run(ctx, vdi_route(ctx, vdi, "destroy"),
                                  lambda: self.storage.destroy_vdi(ctx, vdi),
                                  ("VDI.destroy", [vdi]))

    def snapshot_vdi(self, ctx, vdi, driver_params=None):
        return self.forwarder.run(
            ctx, vdi_route(ctx, vdi, "snapshot"),
            lambda: self.storage.snapshot_vdi(ctx, vdi, driver_params),
            ("VDI.snapshot", [vdi, driver_params or {}]))

    def clone_vdi(self, ctx, vdi, driver_params=None):
        return self.forwarder.run(
            ctx, clone_route(ctx, vdi),
            lambda: self.storage.clone_vdi(ctx, vdi, driver_params),
            ("VDI.clone", [vdi, driver_params or {}]))

    def copy_vdi(self, ctx, vdi, sr, base_vdi=None, into_vdi=None):
        base_vdi, into_vdi = base_vdi or NULL_REF, into_vdi or NULL_REF
        return self.forwarder.run(
            ctx, copy_route(ctx, vdi, sr, into_vdi),
            lambda: self.storage.copy_vdi(ctx, vdi, sr, base_vdi, into_vdi,
                                          self),
            ("VDI.copy", [vdi, sr, base_vdi, into_vdi]))
