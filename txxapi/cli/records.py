"""
The CLI's view of each datamodel class: its command prefix (``vm``,
``vdi``, ``host-cpu``), its fields under their CLI names with their
access markers, how each value prints and how a typed value parses.

Names follow XAPI's rule (the API name with ``_`` turned into ``-``),
with the exceptions XAPI's records make for references printed as uuids
(``vm-uuid``, ``sr-uuid``) and their ``-name-label`` companions.  A field
is RW when the class has a setter for it, MRW/SRW when it has the map's
or set's add and remove calls: all read off the datamodel.
"""

from txxapi.cli.order import RANK
from txxapi.datamodel import MODEL
from txxapi.datamodel.schema import REMOVED

NOT_IN_DATABASE = "<not in database>"
NULL = "OpaqueRef:NULL"

# Classes whose CLI prefix is not their name in lower case.
PREFIXES = {"pool_patch": "patch", "pool_update": "update",
            "VM_appliance": "appliance"}
# Names XAPI's records keep as the API spells them.
QOS = {name: name for name in ("qos_algorithm_type", "qos_algorithm_params",
                               "qos_supported_algorithms")}
# Per class: API field -> CLI name, where XAPI's records deviate from
# the rule.
RENAMES = {
    "VM": {"suspend_VDI": "suspend-VDI-uuid", "suspend_SR": "suspend-SR-uuid",
           "consoles": "console-uuids", "domid": "dom-id",
           "last_booted_record": "last-boot-record", "VTPMs": "vtpms"},
    "host": {"suspend_image_sr": "suspend-image-sr-uuid",
             "crash_dump_sr": "crash-dump-sr-uuid",
             "resident_VMs": "resident-vms",
             "control_domain": "control-domain-uuid",
             "cpu_info": "cpu_info",
             "guest_VCPUs_params": "guest_VCPUs_params",
             "iscsi_iqn": "iscsi_iqn"},
    "pool": {"cpu_info": "cpu_info"},
    "VBD": {"VM": "vm-uuid", "VDI": "vdi-uuid", **QOS},
    "VIF": {"VM": "vm-uuid", "network": "network-uuid", **QOS},
    "VDI": {"SR": "sr-uuid", "VBDs": "vbd-uuids",
            "crash_dumps": "crashdump-uuids"},
    "PBD": {"host": "host-uuid", "SR": "sr-uuid"},
    "PIF": {"network": "network-uuid", "host": "host-uuid",
            "ip_configuration_mode": "IP-configuration-mode",
            "ipv6_configuration_mode": "IPv6-configuration-mode",
            "ipv6_gateway": "IPv6-gateway",
            "VLAN_master_of": "vlan-master-of",
            "VLAN_slave_of": "vlan-slave-of"},
    "console": {"VM": "vm-uuid"},
    "task": {"subtask_of": "subtask_of", "error_info": "error_info",
             "allowed_operations": "allowed_operations",
             "current_operations": "current_operations"},
    "message": {"cls": "class"},
    "role": {"name_label": "name", "name_description": "description"},
}
# Classes whose CLI record shows only these API fields.
ONLY = {"role": ("uuid", "name_label", "name_description")}
# Sets of references shown (and matched) by the name-labels of their
# members.
LABELLED = {("subject", "roles")}
# References shown with the referenced object's name-label next to them.
COMPANIONS = {("VBD", "VM"): "vm-name-label", ("VBD", "VDI"): "vdi-name-label",
              ("VIF", "VM"): "vm-name-label",
              ("VIF", "network"): "network-name-label",
              ("VDI", "SR"): "sr-name-label", ("PBD", "host"): "host-name-label",
              ("PBD", "SR"): "sr-name-label",
              ("PIF", "network"): "network-name-label",
              ("PIF", "host"): "host-name-label",
              ("console", "VM"): "vm-name-label"}
FIRST = ("uuid", "name_label", "name_description")


class CliFailure(Exception):
    """A refusal the CLI words itself; printed as ``Error: <text>``."""


class Failure(Exception):
    """The ``failwith`` of XAPI's CLI commands, which that module defines
    as its own refusal: printed as ``Error: <text>`` too."""


class MissingParameter(Exception):
    """A field the record does not have (XAPI prints it as an error code
    of its own)."""


class View:
    """How references print: the uuid or name-label of the object named,
    read as XAPI's CLI reads its reference index."""

    def __init__(self, db):
        self.db = db

    def _lookup(self, ref, cls, field):
        if cls is None or not self.db.exists(cls, ref):
            return None
        return self.db.fields(cls, ref).get(field)

    def class_of(self, ref):
        if not isinstance(ref, str) or not ref.startswith("OpaqueRef:") \
                or ref == NULL:
            return None
        for name, c in MODEL.classes.items():
            if c.in_db and self.db.exists(name, ref):
                return name
        return None

    def uuid(self, ref, cls):
        value = self._lookup(ref, cls, "uuid")
        return NOT_IN_DATABASE if value is None else value

    def name_label(self, ref, cls):
        value = self._lookup(ref, cls, "name_label")
        return NOT_IN_DATABASE if value is None else value

    def describe(self, text):
        """An error parameter: a reference becomes 'uuid (name)'."""
        cls = self.class_of(text)
        uuid = self._lookup(text, cls, "uuid")
        if uuid is None:
            return text
        label = self._lookup(text, cls, "name_label")
        return uuid if label is None else "%s (%s)" % (uuid, label)


def format_value(t, value, view):
    kind = t.kind
    if kind == "bool":
        return "true" if value else "false"
    if kind == "float":
        return "%.3f" % value
    if kind == "int":
        return str(value)
    if kind == "ref":
        return view.uuid(value, t.cls)
    if kind == "enum":
        if t.name == "vm_power_state":
            return value[:1].lower() + value[1:]
        return value
    if kind == "set":
        return "; ".join(format_value(t.elem, v, view) for v in value)
    if kind == "map":
        return "; ".join("%s: %s" % (format_value(t.key, k, view),
                                    format_value(t.value, v, view))
                         for k, v in value.items())
    if kind == "option":
        return "" if value is None else format_value(t.inner, value, view)
    return "" if value is None else str(value)


class CliField:
    """One field of a CLI record.  ``field`` is the datamodel field it
    shows (None for a derived one, which ``compute`` prints)."""

    def __init__(self, name, field=None, compute=None, labelled=False):
        self.name = name
        self.field = field
        self.compute = compute
        self.labelled = labelled
        kind = field.type.kind if field is not None else "string"
        self.kind = kind if kind in ("map", "set") else "normal"
        self.setter = self.add = self.remove = None
        if field is not None:
            messages = field.cls.messages
            n = field.name

            def wire(prefix):
                m = messages.get(prefix + n)
                return m.wire_name if m is not None and \
                    m.state != REMOVED else None
            if self.kind == "map":
                self.add, self.remove = wire("add_to_"), wire("remove_from_")
            elif self.kind == "set":
                self.add, self.remove = wire("add_"), wire("remove_")
            else:
                self.setter = wire("set_")

    @property
    def marker(self):
        if self.kind == "set":
            return "SRW" if self.add else "SRO"
        if self.kind == "map":
            return "MRW" if self.add else "MRO"
        return " RW" if self.setter else " RO"

    def text(self, record, view):
        if self.field is None:
            return self.compute(record, view)
        if self.labelled:
            return "; ".join(self.member_text(v, view)
                             for v in record[self.field.name])
        return format_value(self.field.type, record[self.field.name], view)

    def member_text(self, value, view):
        """A member of a set field as it prints."""
        elem = self.field.type.elem
        if self.labelled:
            return view.name_label(value, elem.cls)
        return format_value(elem, value, view)

    def value(self, record):
        """The raw value of a map or set field."""
        return record[self.field.name]


def _cli_name(cls_name, field_name):
    renamed = RENAMES.get(cls_name, {}).get(field_name)
    return renamed or field_name.replace("_", "-")


def _companion(ref_field):
    def compute(record, view):
        return view.name_label(record[ref_field.name], ref_field.type.cls)
    return compute


def _sr_host(record, view):
    pbds = record["PBDs"]
    if len(pbds) > 1:
        return "<shared>"
    if not pbds or not view.db.exists("PBD", pbds[0]):
        return NOT_IN_DATABASE
    return view.name_label(view.db.fields("PBD", pbds[0])["host"], "host")


DERIVED = {"SR": [("host", "PBDs", _sr_host)]}


def _fields_of(c):
    shown = [f for f in c.record_fields if f.state != REMOVED and
             f.name in ONLY.get(c.name, (f.name,))]
    order = sorted(shown, key=lambda f: (
        FIRST.index(f.name) if f.name in FIRST else len(FIRST)))
    out = []
    for f in order:
        out.append(CliField(_cli_name(c.name, f.name), f,
                            labelled=(c.name, f.name) in LABELLED))
        companion = COMPANIONS.get((c.name, f.name))
        if companion:
            out.append(CliField(companion, compute=_companion(f)))
        for name, after, compute in DERIVED.get(c.name, ()):
            if after == f.name:
                out.append(CliField(name, compute=compute))
    rank = RANK.get(c.name)
    if rank is not None:
        out.sort(key=lambda f: rank.get(f.name, len(rank)))
    return out


class CliClass:
    """A class as the CLI lists it: ``prefix`` (the command prefix),
    ``defaults`` (the fields a -list shows), ``filters`` (always
    applied)."""

    def __init__(self, cls, prefix=None, defaults=None, filters=()):
        self.cls = cls
        self.prefix = prefix or PREFIXES.get(
            cls.name, cls.name.lower().replace("_", "-"))
        self.fields = _fields_of(cls)
        self.by_name = {f.name: f for f in self.fields}
        self.defaults = defaults or [
            f.name for f in self.fields
            if f.name in ("uuid", "name-label", "name-description")]
        self.filters = list(filters)
        self.plural = "patches" if self.prefix == "patch" \
            else self.prefix + "s"

    def lookup(self, name):
        """(field, key) for a CLI field name or ``map:key``; Failure for
        an unknown one (XAPI's wording)."""
        if name in self.by_name:
            return self.by_name[name], None
        if ":" in name:
            head, key = name.split(":", 1)
            field = self.by_name.get(head)
            if field is None:
                raise Failure("Unknown field '%s'" % name)
            if field.kind == "normal":
                raise Failure("Field '%s' is not a set or map" % head)
            return field, key
        # XAPI's older spelling: map-name-key, the longest map name first.
        for field in sorted(self.fields, key=lambda f: -len(f.name)):
            if field.kind != "normal" and name.startswith(field.name + "-"):
                return field, name[len(field.name) + 1:]
        raise Failure("Unknown field '%s'" % name)


# XAPI's list defaults and filters for the classes operators use most.
_DEFAULTS = {
    "pool": ["uuid", "name-label", "name-description", "master",
             "default-SR"],
    "PIF": ["uuid", "device", "VLAN", "MAC", "network-uuid",
            "currently-attached", "host-uuid"],
    "Bond": ["uuid", "master", "slaves"],
    "VLAN": ["uuid", "tagged-PIF", "untagged-PIF", "tag"],
    "VIF": ["uuid", "device", "vm-uuid", "network-uuid"],
    "network": ["uuid", "name-label", "name-description", "bridge"],
    "console": ["uuid", "vm-uuid", "vm-name-label", "protocol", "location"],
    "VM": ["name-label", "uuid", "power-state"],
    "host": ["uuid", "name-label", "name-description"],
    "VDI": ["uuid", "name-label", "name-description", "virtual-size",
            "read-only", "sharable", "sr-uuid"],
    "VBD": ["uuid", "vm-uuid", "vm-name-label", "vdi-uuid", "device",
            "empty"],
    "SR": ["uuid", "name-label", "name-description", "host", "type",
           "content-type"],
    "PBD": ["uuid", "host-uuid", "sr-uuid", "device-config",
            "currently-attached"],
    "task": ["uuid", "name-label", "name-description", "status",
             "progress"],
    "subject": ["uuid", "subject-identifier", "other-config", "roles"],
    "role": ["uuid", "name", "description"],
    "message": ["uuid", "name", "priority", "class", "obj-uuid", "timestamp",
                "body"],
}


def _listable(c):
    # Messages live outside the database but list as a class does.
    return (c.in_db or c.name == "message") and \
        "get_all_records" in c.messages and \
        "get_by_uuid" in c.messages and "uuid" in c.fields


def _classes():
    out = []
    for c in MODEL.classes.values():
        if not _listable(c):
            continue
        if c.name == "VM":
            out.append(CliClass(c, defaults=_DEFAULTS["VM"],
                                filters=[("is-a-template", "false")]))
            out.append(CliClass(
                c, prefix="template",
                defaults=["name-label", "name-description", "uuid"],
                filters=[("is-a-template", "true"),
                         ("is-a-snapshot", "false")]))
            out.append(CliClass(
                c, prefix="snapshot",
                defaults=["name-label", "name-description", "uuid",
                          "snapshot-of", "snapshot-time", "is-vmss-snapshot"],
                filters=[("is-a-snapshot", "true")]))
            continue
        out.append(CliClass(c, defaults=_DEFAULTS.get(c.name)))
    return out


CLASSES = _classes()
BY_PREFIX = {c.prefix: c for c in CLASSES}


def parse_value(field_name, t, text):
    """A typed value from the command line; references stay uuids (the
    caller resolves them).  Failure with XAPI's wording otherwise."""
    kind = t.kind
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise Failure("Parameter %s must be an integer" % field_name)
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            raise Failure("Parameter %s must be a floating-point number"
                          % field_name)
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise Failure("Parameter %s must be a boolean (true or false)"
                          % field_name)
        return text.lower() == "true"
    if kind == "enum":
        return parse_enum(t.name, text)
    return text


def parse_enum(name, text):
    """A value of the API's enum ``name``, in any case."""
    for v in MODEL.enums[name]:
        if v.lower() == text.lower():
            return v
    raise CliFailure("Expected one of %s, got '%s'" % (
        ", ".join("'%s'" % v for v in MODEL.enums[name]), text))


_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


def parse_bool(param, text):
    """A boolean parameter as XAPI's CLI reads one."""
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise CliFailure("Failed to parse parameter '%s': Expected 'true','t',"
                     "'yes','y','1','false','f','no','n','0' got %s"
                     % (param, text))
