"""
What VBDs and VIFs share: their VM and unplugging them from its domain,
device numbers and names, MAC addresses, and XAPI's rules for which
device operations are valid when (attach, plug, unplug, insert, eject,
...), for the check before an operation and the advisory
allowed_operations list alike.
"""

import hashlib
import re

from twisted.internet import defer

from txxapi.datamodel import MODEL
from txxapi.errors import XenAPIError

VBD_OPERATIONS = MODEL.enums["vbd_operations"]
VIF_OPERATIONS = MODEL.enums["vif_operations"]
MAX_VIF_DEVICE = 15
_NAME = re.compile(r"^(xvd|hd|sd|vd)([a-z]+)(\d*)$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
# VM operations during which no device may be plugged or unplugged.
_VM_BUSY = ("clean_shutdown", "hard_shutdown", "suspend", "pause")


# --- the device's VM ---------------------------------------------------------

def vm_of(db, cls, ref):
    """(ref, record) of the VM that VBD or VIF ``ref`` belongs to."""
    vm_ref = db.fields(cls, ref)["VM"]
    return vm_ref, db.fields("VM", vm_ref)


def unplug(ctx, cls, ref, *args, errors=None):
    """A Deferred of "": the backend's unplug_vbd or unplug_vif of the
    device from its VM's domain (``args`` follow the device's name)."""
    def body():
        vm_ref, vm = vm_of(ctx.db, cls, ref)
        device = ctx.db.fields(cls, ref)["device"]
        d = ctx.server.xenops.vm_op(vm_ref, "unplug_" + cls.lower(),
                                    vm["uuid"], device, *args,
                                    task=ctx.task, errors=errors)
        return d.addCallback(lambda _: "")
    return defer.maybeDeferred(body)


# --- device numbers ----------------------------------------------------------

def disk_number(device):
    """The disk a VBD device or userdevice names ("2", "xvdc", "hdc"), or
    None for something else."""
    device = device.strip()
    if device.isdigit():
        return int(device)
    m = _NAME.match(device)
    if not m:
        return None
    n = 0
    for ch in m.group(2):
        n = n * 26 + (ord(ch) - ord("a") + 1)
    n -= 1
    if m.group(1) == "hd" and n > 3:
        return None
    return n


def valid_userdevice(device, vbd_type):
    if device == "autodetect" or disk_number(device) is not None:
        return True
    return False


def used_disk_numbers(db, vm):
    used = set()
    for vbd in db.where("VBD", VM=vm):
        f = db.fields("VBD", vbd)
        for name in (f["device"], f["userdevice"]):
            n = disk_number(name) if name else None
            if n is not None:
                used.add(n)
    return used


def allowed_vif_devices(db, vm):
    db.fields("VM", vm)
    used = {db.fields("VIF", v)["device"] for v in db.where("VIF", VM=vm)}
    return [str(n) for n in range(MAX_VIF_DEVICE + 1) if str(n) not in used]


def valid_mac(mac):
    return bool(_MAC.match(mac))


def generated_mac(seed, device):
    """The MAC of VIF ``device`` of a VM with this mac_seed: stable for
    the seed, locally administered and unicast."""
    digest = hashlib.sha256(("%s/%s" % (seed, device)).encode()).digest()
    octets = [(digest[0] | 0x02) & ~0x01] + list(digest[1:6])
    return ":".join("%02x" % o for o in octets)


# --- which device operations are valid ---------------------------------------

def _table(ops):
    """op -> error table, and the setter that keeps the first error set
    for each operation (XAPI's order of checks)."""
    errors = dict.fromkeys(ops)

    def set_error(names, code, *params):
        for op in names:
            if op in errors and errors[op] is None:
                errors[op] = XenAPIError(code, *params)
    return errors, set_error


def _device_context(db, cls, ref):
    """A VBD's or VIF's record, its VM's ref and record, and the VM's
    guest metrics (None without)."""
    rec = db.fields(cls, ref)
    vm_ref = rec["VM"]
    vm = db.fields("VM", vm_ref)
    gm = db.fields("VM_guest_metrics", vm["guest_metrics"]) \
        if db.exists("VM_guest_metrics", vm["guest_metrics"]) else None
    return rec, vm_ref, vm, gm


def _plug_rules(set_error, ref, rec, vm_ref, vm, gm, unplug_ops,
                hotplug_field, cls):
    power = vm["power_state"]
    plug_ops = ["plug"] + unplug_ops
    if power == "Running":
        if rec["currently_attached"]:
            set_error(["plug"], "DEVICE_ALREADY_ATTACHED", ref)
        else:
            set_error(unplug_ops, "DEVICE_ALREADY_DETACHED", ref)
    else:
        set_error(plug_ops, "VM_BAD_POWER_STATE", vm_ref, "running",
                  power.lower())
    for op in vm["current_operations"].values():
        if op in _VM_BUSY:
            set_error(["plug", "unplug"], "OPERATION_NOT_ALLOWED",
                      "Current operation on VM:%s is %s" % (vm_ref, op))
    if power == "Running" and vm["domain_type"] == "hvm":
        claim = gm[hotplug_field] if gm else "unspecified"
        if claim == "no":
            set_error(plug_ops, "OPERATION_NOT_ALLOWED",
                      "VM states it does not support %s hotplug." % cls)
        elif claim == "unspecified" and not (gm and gm["PV_drivers_detected"]):
            set_error(plug_ops, "VM_MISSING_PV_DRIVERS", vm_ref)


def vbd_errors(db, ref):
    """op -> the XenAPIError it would meet now, or None."""
    errors, set_error = _table(VBD_OPERATIONS)
    rec, vm_ref, vm, gm = _device_context(db, "VBD", ref)
    current = rec["current_operations"]
    if current:
        task, op = sorted(current.items(), key=lambda kv: kv[1])[0]
        set_error([o for o in VBD_OPERATIONS
                   if o not in ("pause", "unpause")],
                  "OTHER_OPERATION_IN_PROGRESS", "VBD", ref, op, task)
    if not rec["unpluggable"]:
        set_error(["unplug", "unplug_force"], "VBD_NOT_UNPLUGGABLE", ref)
    if rec["type"] != "CD":
        set_error(["insert", "eject"], "VBD_NOT_REMOVABLE_MEDIA", ref)
    if rec["empty"]:
        set_error(["eject"], "VBD_IS_EMPTY", ref)
    else:
        set_error(["insert"], "VBD_NOT_EMPTY", ref)
    if vm["power_state"] != "Running" and vm["power_state"] != "Paused":
        set_error(["pause", "unpause"], "VM_BAD_POWER_STATE", vm_ref,
                  "running", vm["power_state"].lower())
    _plug_rules(set_error, ref, rec, vm_ref, vm, gm,
                ["unplug", "unplug_force"], "can_use_hotplug_vbd", "VBD")
    if vm["power_state"] == "Running" and vm["domain_type"] == "hvm" and \
            rec["type"] == "CD":
        set_error(["plug", "unplug", "unplug_force"], "OPERATION_NOT_ALLOWED",
                  "HVM CDROMs cannot be hotplugged/unplugged, only inserted "
                  "or ejected")
    if rec["type"] == "CD" and vm["power_state"] == "Suspended":
        set_error(["insert", "eject"], "VM_BAD_POWER_STATE", vm_ref,
                  "halted, running", "suspended")
    # Storage-side checks (VDI in use, read-only, being operated on) come
    # with the storage layer.
    return errors


def vif_errors(db, ref):
    errors, set_error = _table(VIF_OPERATIONS)
    rec, vm_ref, vm, gm = _device_context(db, "VIF", ref)
    current = rec["current_operations"]
    if current:
        set_error(VIF_OPERATIONS, "OTHER_OPERATION_IN_PROGRESS", "VIF", ref,
                  "{%s}" % "; ".join(current.values()),
                  "{%s}" % "; ".join(current))
    if vm["is_control_domain"] and vm["domid"] == 0:
        set_error(["plug"], "OPERATION_NOT_ALLOWED",
                  "Control domain does not support hotplug")
    _plug_rules(set_error, ref, rec, vm_ref, vm, gm, ["unplug"],
                "can_use_hotplug_vif", "VIF")
    return errors


def checker(table):
    def check(db, ref, op):
        return table(db, ref)[op]
    return check


def advertiser(table):
    def advertise(db, ref):
        return [op for op, error in table(db, ref).items() if error is None]
    return advertise
