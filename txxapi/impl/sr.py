"""
SR.* and PBD.*: storage repositories and their connections to hosts.  The
driver work goes through the storage component (txxapi.storage); this
module holds XAPI's rules for when an SR operation is allowed and the
order of the steps.
"""

from twisted.internet import defer
from twisted.logger import Logger

from txstorage.types import probe_xml
from txxapi import operations
from txxapi.api.registry import implements
from txxapi.datamodel import MODEL
from txxapi.errors import XenAPIError
from txxapi.storage import register_rules, sm_features, translate
from txxapi.values import new_uuid

log = Logger()

SR_OPERATIONS = MODEL.enums["storage_operations"]
# SR operations a driver must advertise a capability for.
_CAPABILITY = {
    "vdi_create": "VDI_CREATE", "vdi_destroy": "VDI_DELETE",
    "vdi_resize": "VDI_RESIZE", "vdi_introduce": "VDI_INTRODUCE",
    "vdi_mirror": "VDI_MIRROR", "vdi_enable_cbt": "VDI_CONFIG_CBT",
    "vdi_disable_cbt": "VDI_CONFIG_CBT", "vdi_data_destroy": "VDI_CONFIG_CBT",
    "vdi_list_changed_blocks": "VDI_CONFIG_CBT",
    "vdi_set_on_boot": "VDI_RESET_ON_BOOT", "update": "SR_UPDATE",
    "vdi_snapshot": "VDI_SNAPSHOT"}


def sr_error(db, ref, op):
    """The XenAPIError ``op`` would meet on the SR now, or None (XAPI's
    checks, in XAPI's order)."""
    sr = db.fields("SR", ref)
    cap = _CAPABILITY.get(op)
    if cap is not None and cap not in sm_features(db, sr["type"]):
        return XenAPIError("SR_OPERATION_NOT_SUPPORTED", ref)
    pbds = db.where("PBD", SR=ref)
    if op in ("destroy", "forget") and any(
            db.fields("PBD", p)["currently_attached"] for p in pbds):
        return XenAPIError("SR_HAS_PBD", ref)
    if op == "destroy" and not pbds:
        return XenAPIError("SR_HAS_NO_PBDS", ref)
    if op == "destroy":
        for vdi in db.where("VDI", SR=ref):
            f = db.fields("VDI", vdi)
            if f["managed"] and f["type"] != "rrd":
                return XenAPIError("SR_NOT_EMPTY")
    current = sorted(sr["current_operations"].items(), key=lambda kv: kv[1])
    if current:
        # Only plugs may run beside each other.
        blocking = [(t, o) for t, o in current if o != "plug"]
        if op != "plug":
            task, running = current[0]
            return XenAPIError("OTHER_OPERATION_IN_PROGRESS", "SR", ref,
                               running, task)
        if blocking:
            task, running = blocking[0]
            return XenAPIError("OTHER_OPERATION_IN_PROGRESS", "SR", ref,
                               running, task)
    return None


register_rules("SR", sr_error, SR_OPERATIONS)


def _storage(ctx):
    return ctx.server.storage


def _void(_):
    return ""


def _internal_only(ctx, sr):
    """Calls XAPI keeps for the SM backends' own sessions."""
    raise XenAPIError("PERMISSION_DENIED", "")


# --- SR ---------------------------------------------------------------------

@implements("SR.create")
def create(ctx, host, device_config, physical_size, name_label,
           name_description, type, content_type, shared, sm_config):
    db, st = ctx.db, _storage(ctx)
    driver = st.driver_for_type(type)
    sr_uuid = new_uuid()
    # The record exists before the SR does, as in XAPI, so that a failed
    # create has a record to clean up and nothing else.
    sr = st.introduce_sr(sr_uuid, name_label, name_description, type,
                         content_type, shared, sm_config)
    master = ctx.server.host_ref
    hosts = [master] + [h for h in db.refs("host") if h != master] \
        if shared else [host]
    try:
        pbds = [st.create_pbd(h, sr, device_config) for h in hosts]
    except XenAPIError:
        _forget_records(db, sr)
        raise

    def failed(failure):
        _forget_records(db, sr)
        return translate(failure, sr)

    @defer.inlineCallbacks
    def plug(_):
        for pbd in pbds:
            if db.fields("PBD", pbd)["host"] != ctx.server.host_ref:
                continue
            try:
                yield st.attach_sr(pbd)
                yield st.scan(sr)
            except Exception as e:
                # As XAPI: the SR exists; its PBD stays unplugged.
                log.warn("SR.create: plugging {pbd}: {error}", pbd=pbd,
                         error=e)
        return sr

    d = st.run(driver.sr_create, sr_uuid, dict(device_config),
               physical_size)
    d.addErrback(failed)
    return d.addCallback(plug)


def _forget_records(db, sr):
    for pbd in db.where("PBD", SR=sr):
        db.delete("PBD", pbd)
    for vdi in db.where("VDI", SR=sr):
        db.delete("VDI", vdi)
    if db.exists("SR", sr):
        db.delete("SR", sr)


@implements("SR.make")
def make(ctx, *args):
    raise XenAPIError("MESSAGE_DEPRECATED")


@implements("SR.introduce")
def introduce(ctx, uuid, name_label, name_description, type, content_type,
              shared, sm_config):
    return _storage(ctx).introduce_sr(uuid, name_label, name_description,
                                      type, content_type, shared, sm_config)


@implements("SR.forget")
def forget(ctx, sr):
    _forget_records(ctx.db, sr)
    return ""


@implements("SR.destroy")
def destroy(ctx, sr):
    db, st = ctx.db, _storage(ctx)
    driver, sr_uuid = st.driver_of(sr)
    pbd = st.local_pbd(sr) or db.where("PBD", SR=sr)[0]
    config = dict(db.fields("PBD", pbd)["device_config"])
    d = st.run(driver.sr_delete, sr_uuid, config)
    d.addErrback(translate, sr)
    return d.addCallback(lambda _: _forget_records(db, sr)) \
        .addCallback(_void)


@implements("SR.scan")
def scan(ctx, sr):
    st = _storage(ctx)
    d = st.scan(sr)
    # XAPI kicks the garbage collector after a scan.
    d.addCallback(lambda _: st.kick_gc(sr))
    return d.addCallback(_void)


@implements("SR.update")
def update(ctx, sr):
    st = _storage(ctx)
    ctx.db.fields("SR", sr)
    st.assert_plugged(sr)
    return st.update_sr(sr).addCallback(_void)


def _probe(ctx, host, device_config, type, sm_config):
    st = _storage(ctx)
    ctx.db.fields("host", host)
    driver = st.driver_for_type(type)
    d = st.run(driver.sr_probe, dict(device_config), dict(sm_config))
    return d.addErrback(translate)


@implements("SR.probe")
def probe(ctx, host, device_config, type, sm_config):
    return _probe(ctx, host, device_config, type, sm_config) \
        .addCallback(probe_xml)


@implements("SR.probe_ext")
def probe_ext(ctx, host, device_config, type, sm_config):
    def results(infos):
        return [{"configuration": dict(device_config), "complete": True,
                 "sr": {"uuid": i.uuid, "name_label": i.name_label,
                        "name_description": i.name_description,
                        "total_space": i.physical_size,
                        "free_space": i.free_space, "clustered": False,
                        "health": "healthy"},
                 "extra_info": {"location": i.location}} for i in infos]
    return _probe(ctx, host, device_config, type, sm_config) \
        .addCallback(results)


@implements("SR.get_supported_types")
def get_supported_types(ctx):
    return sorted(_storage(ctx).drivers)


@implements("SR.set_shared")
def set_shared(ctx, sr, value):
    db = ctx.db
    db.fields("SR", sr)
    pbds = db.where("PBD", SR=sr)
    if not value and len(pbds) > 1:
        raise XenAPIError("SR_HAS_MULTIPLE_PBDS", *pbds)
    db.update("SR", sr, {"shared": value})
    return ""


def field_setter(cls_name, field):
    """A setter XAPI makes explicit (its SMAPI would be told); our drivers
    keep no names, so only the record changes."""
    def set_field(ctx, self, value):
        ctx.db.fields(cls_name, self)
        ctx.db.update(cls_name, self, {field: value})
        return ""
    return set_field


implements("SR.set_name_label")(field_setter("SR", "name_label"))
implements("SR.set_name_description")(field_setter("SR",
                                                   "name_description"))


@implements("SR.set_physical_size")
def set_physical_size(ctx, sr, value):
    ctx.db.fields("SR", sr)
    _internal_only(ctx, sr)


# --- PBD --------------------------------------------------------------------

@implements("PBD.create")
def pbd_create(ctx, f):
    return _storage(ctx).create_pbd(f["host"], f["SR"], f["device_config"],
                                    f.get("other_config"))


@implements("PBD.destroy")
def pbd_destroy(ctx, self):
    db = ctx.db
    sr = db.fields("PBD", self)["SR"]
    db.delete("PBD", self)
    operations.refresh(db, "SR", sr)
    return ""


@implements("PBD.plug")
def plug(ctx, self):
    """The scan that follows is the forwarding rule's (after the mark)."""
    db, st = ctx.db, _storage(ctx)
    sr = db.fields("PBD", self)["SR"]
    if db.fields("PBD", self)["currently_attached"]:
        return ""
    if not db.fields("SR", sr)["shared"]:
        for other in db.where("PBD", SR=sr):
            g = db.fields("PBD", other)
            if other != self and g["currently_attached"]:
                raise XenAPIError("SR_NOT_SHARABLE", sr, g["host"])
    return st.attach_sr(self).addCallback(_void)


@implements("PBD.unplug")
def unplug(ctx, self):
    db, st = ctx.db, _storage(ctx)
    f = db.fields("PBD", self)
    sr = f["SR"]
    if not f["currently_attached"]:
        return ""
    active = []
    for vdi in db.where("VDI", SR=sr):
        for vbd in db.where("VBD", VDI=vdi):
            g = db.fields("VBD", vbd)
            if g["currently_attached"] and not g["empty"] and \
                    db.exists("VM", g["VM"]) and \
                    db.fields("VM", g["VM"])["resident_on"] == f["host"]:
                active.append(vdi)
                break
    if active:
        raise XenAPIError("VDI_IN_USE", *active)
    # Devices that just went away may still be letting go.
    d = st.settled()
    return d.addCallback(lambda _: st.detach_sr(self)).addCallback(_void)


@implements("PBD.set_device_config")
def pbd_set_device_config(ctx, self, value):
    _internal_only(ctx, ctx.db.fields("PBD", self)["SR"])
