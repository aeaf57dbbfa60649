"""
ova.xml, the first member of an XVA: an XML-RPC <value> holding
``version`` (who exported it) and ``objects``, one {class, id, snapshot}
per object of the export, where ``snapshot`` is the object's API record
with every reference rewritten to the ``Ref:N`` id of an exported object,
or NULL.

Which objects (as XAPI's export walks them from each VM): its VIFs and
their networks, its VBDs' VDIs and their SRs (and, when asked, the VHD
parents of those), VGPUs with their types and groups, VTPMs, the suspend
image of a Suspended VM whose power state is kept, its metrics, and the
hosts it runs on or prefers; with snapshot metadata, its snapshots and
its parent too.
"""

from txxapi.errors import XenAPIError
from txxapi.values import EPOCH, NULL_REF, Int32
from txxapi.wire.errors import MalformedRequest
from txxapi.wire.xmlrpc import decode_value, encode_value

FILENAME = "ova.xml"
EXPORT_VSN = 2
# The order the objects are listed in (XAPI's export).
_CLASS_ORDER = ("host", "VM", "VM_metrics", "VM_guest_metrics", "VBD",
                "VIF", "network", "VDI", "SR", "VGPU_type", "VGPU",
                "GPU_group", "VTPM")
# Host fields an export leaves out (they belong to the exporting pool).
_HOST_EMPTIED = {
    "license_params": {}, "blobs": {}, "external_auth_type": "",
    "external_auth_service_name": "", "external_auth_configuration": {},
    "patches": [], "crashdumps": [], "logging": {},
    "supported_bootloaders": [], "cpu_configuration": {},
    "other_config": {}, "capabilities": [], "software_version": {},
    "sched_policy": "", "ha_statefiles": [], "ha_network_peers": [],
    "tags": []}


class Walk:
    """The export's table: internal ref -> (class, "Ref:N"), in the order
    the objects were reached."""

    def __init__(self, db):
        self.db = db
        self.ids = {}

    def add(self, cls, ref):
        if ref in self.ids or not self.db.exists(cls, ref):
            return False
        self.ids[ref] = (cls, "Ref:%d" % len(self.ids))
        return True

    def lookup(self, ref):
        entry = self.ids.get(ref)
        return entry[1] if entry else NULL_REF

    def vdi(self, vdi, vhd_parents):
        if not self.add("VDI", vdi):
            return
        f = self.db.fields("VDI", vdi)
        self.add("SR", f["SR"])
        parent = f["sm_config"].get("vhd-parent")
        if vhd_parents and parent:
            try:
                self.vdi(self.db.by_uuid("VDI", parent), vhd_parents)
            except XenAPIError:
                pass

    def vm(self, vm, snapshots=False, preserve_power_state=False,
           vhd_parents=False, excluded=()):
        db = self.db
        if not self.add("VM", vm):
            return
        f = db.fields("VM", vm)
        if "vif" not in excluded:
            for vif in db.where("VIF", VM=vm):
                self.add("VIF", vif)
                self.add("network", db.fields("VIF", vif)["network"])
        if "vbd" not in excluded:
            for vbd in db.where("VBD", VM=vm):
                self.add("VBD", vbd)
                if not db.fields("VBD", vbd)["empty"]:
                    self.vdi(db.fields("VBD", vbd)["VDI"], vhd_parents)
        if "vgpu" not in excluded:
            for vgpu in db.where("VGPU", VM=vm):
                self.add("VGPU", vgpu)
                self.add("VGPU_type", db.fields("VGPU", vgpu)["type"])
                self.add("GPU_group", db.fields("VGPU", vgpu)["GPU_group"])
        if "vtpm" not in excluded:
            for vtpm in db.where("VTPM", VM=vm):
                self.add("VTPM", vtpm)
        if snapshots:
            for snap in db.where("VM", snapshot_of=vm):
                self.vm(snap, False, preserve_power_state, vhd_parents,
                        excluded)
        if preserve_power_state and f["power_state"] == "Suspended":
            self.vdi(f["suspend_VDI"], vhd_parents)
        self.add("VM_metrics", f["metrics"])
        self.add("VM_guest_metrics", f["guest_metrics"])
        self.add("host", f["resident_on"])
        self.add("host", f["affinity"])
        if snapshots:
            self.vm(f["parent"], False, preserve_power_state, vhd_parents,
                    excluded)


def _rewrite(model, cls, record, lookup):
    """The record with its references turned into export ids (or NULL,
    or left out of sets); maps keyed or valued by refs are emptied."""
    out = {}
    for f in model.classes[cls].record_fields:
        if f.name not in record:
            continue
        value, kind = record[f.name], f.type.kind
        if kind == "ref":
            value = lookup(value)
        elif kind == "set" and f.type.elem.kind == "ref":
            value = [x for x in map(lookup, value) if x != NULL_REF]
        elif kind == "map" and "ref" in (f.type.key.kind, f.type.value.kind):
            value = {}
        out[f.name] = value
    for name in ("current_operations", "allowed_operations"):
        if name in out:
            out[name] = {} if name == "current_operations" else []
    return out


def _adjust(cls, rec, snapshot_metadata, preserve_power_state):
    """XAPI's per-class changes to an exported record."""
    if cls == "VM":
        if not preserve_power_state:
            rec.update(power_state="Halted", suspend_VDI=NULL_REF)
        if not snapshot_metadata:
            rec.update(is_a_snapshot=False, snapshot_of=NULL_REF,
                       snapshots=[], snapshot_time=EPOCH,
                       transportable_snapshot_id="", parent=NULL_REF)
        rec.update(consoles=[], crash_dumps=[], blobs={},
                   protection_policy=NULL_REF)
    elif cls in ("VBD", "VIF", "VGPU") and not preserve_power_state:
        rec["currently_attached"] = False
    elif cls == "host":
        rec.update(_HOST_EMPTIED)
    elif cls == "VTPM":
        # The secret is not ours to hand out.
        rec.pop("contents", None)
    return rec


def objects(db, walk, snapshot_metadata=False, preserve_power_state=False):
    """The export's objects, class by class in XAPI's order."""
    by_class = {}
    for ref, (cls, xid) in walk.ids.items():
        by_class.setdefault(cls, []).append((ref, xid))
    out = []
    for cls in _CLASS_ORDER:
        for ref, xid in by_class.get(cls, ()):
            rec = _rewrite(db.model, cls, db.record(cls, ref), walk.lookup)
            out.append({"class": cls, "id": xid, "snapshot": _adjust(
                cls, rec, snapshot_metadata, preserve_power_state)})
    return out


def this_version(db, host):
    """(major, minor) of this toolstack, from its host record."""
    text = db.fields("host", host)["software_version"].get("xapi", "0.0")
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return 0, 0


def document(db, host, objs, date):
    """ova.xml's bytes."""
    sv = db.fields("host", host)["software_version"]
    major, minor = this_version(db, host)
    version = {
        "hostname": sv.get("hostname", db.fields("host", host)["hostname"]),
        "date": sv.get("date", date), "product_version":
        sv.get("product_version", ""), "product_brand":
        sv.get("product_brand", ""), "build_number": sv.get(
            "build_number", ""), "xapi_major": Int32(major),
        "xapi_minor": Int32(minor), "export_vsn": Int32(EXPORT_VSN)}
    return encode_value({"version": version, "objects": objs}).encode(
        "utf-8")


def _int(value, default=None):
    try:
        return int(value)
    except (TypeError, ValueError):
        if default is not None:
            return default
        raise XenAPIError("IMPORT_ERROR",
                          "ova.xml: bad version number %r" % (value,))


class Header:
    """A parsed ova.xml: the exporter's version and the objects."""

    def __init__(self, major, minor, export_vsn, objs):
        self.major = major
        self.minor = minor
        self.export_vsn = export_vsn
        self.objects = objs

    def of_class(self, cls):
        return [o for o in self.objects if o["class"] == cls]

    def find(self, xid):
        for o in self.objects:
            if o["id"] == xid:
                return o
        return None


def parse(data):
    """The Header of an ova.xml, or IMPORT_ERROR."""
    try:
        doc = decode_value(data)
    except MalformedRequest as e:
        raise XenAPIError("IMPORT_ERROR", "ova.xml: %s" % e)
    if not isinstance(doc, dict) or not isinstance(doc.get("version"), dict) \
            or not isinstance(doc.get("objects"), list):
        raise XenAPIError("IMPORT_ERROR",
                          "ova.xml: not an XVA header (version, objects)")
    v = doc["version"]
    objs = []
    for o in doc["objects"]:
        if not isinstance(o, dict) or not isinstance(o.get("class"), str) \
                or not isinstance(o.get("id"), str) \
                or not isinstance(o.get("snapshot"), dict):
            raise XenAPIError("IMPORT_ERROR",
                              "ova.xml: malformed object %r" % (o,))
        objs.append(o)
    return Header(_int(v.get("xapi_major")), _int(v.get("xapi_minor")),
                  _int(v.get("export_vsn"), 0), objs)


def assert_compatible(db, host, header):
    """IMPORT_INCOMPATIBLE_VERSION for an export of a newer toolstack."""
    if (header.major, header.minor) > this_version(db, host):
        raise XenAPIError("IMPORT_INCOMPATIBLE_VERSION")
