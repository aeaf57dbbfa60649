"""
From VM records to what the backend is asked for, and the memory sums the
toolstack does itself (XAPI's memory_check): a VM's overhead, what a start
needs, and how much a host has left for guests.  Pure functions of the
database; the bridge (txxapi.xenops) and the VM implementation modules
share them.
"""

from txxapi import disks
from txxapi.values import NULL_REF
from txxenops.memory import MIB, mib_of_bytes_used, overhead_mib
from txxenops.types import VBDSpec, VIFSpec, VMSpec

# What XAPI derives a missing domain type from: a boot policy means HVM.
LIVE_STATES = ("Running", "Paused")


def domain_type(vm):
    if vm["domain_type"] != "unspecified":
        return vm["domain_type"]
    return "hvm" if vm["HVM_boot_policy"] else "pv"


def shadow_multiplier(vm):
    # PV guests have no shadow page tables of their own to scale.
    return 1.0 if domain_type(vm) == "pv" else vm["HVM_shadow_multiplier"]


def vm_overhead(vm):
    """Bytes a domain of this VM costs beyond its guest memory
    (VM.memory_overhead, VM.compute_memory_overhead)."""
    return overhead_mib(domain_type(vm), vm["memory_static_max"],
                        vm["VCPUs_max"], shadow_multiplier(vm)) * MIB


def coerced_memory(vm):
    """(static_min, dynamic_min, dynamic_max, static_max) made valid the
    way XAPI coerces them at start (dynamic range clamped into the static
    one), or None when no clamping can make them valid."""
    smin, smax = vm["memory_static_min"], vm["memory_static_max"]
    dmin, dmax = vm["memory_dynamic_min"], vm["memory_dynamic_max"]
    if smax < smin or dmax < dmin:
        return None
    return (smin, min(max(dmin, smin), smax), min(max(dmax, smin), smax),
            smax)


def start_memory(vm):
    """Bytes a start needs on the host: the policy's guest memory (as the
    balloon may squeeze a guest down to dynamic_min; PV-in-PVH cannot be
    squeezed) rounded up to MiB, plus the overhead."""
    guest = vm["memory_static_max"] if domain_type(vm) == "pv_in_pvh" \
        else vm["memory_dynamic_min"]
    return mib_of_bytes_used(guest) * MIB + vm_overhead(vm)


def host_free_memory(db, host, ignore_scheduled=None):
    """What the host has left for guests by the toolstack's own count:
    host_metrics.memory_total - host.memory_overhead - the dynamic_min
    and overhead of every VM resident on the host or scheduled to be
    (except ``ignore_scheduled``'s reservation, counted by its caller)."""
    h = db.fields("host", host)
    total = 0
    if db.exists("host_metrics", h["metrics"]):
        total = db.fields("host_metrics", h["metrics"])["memory_total"]
    used = 0
    counted = set()
    for ref in db.where("VM", resident_on=host):
        counted.add(ref)
        used += _in_use(db.fields("VM", ref))
    for ref in db.where("VM", scheduled_to_be_resident_on=host):
        if ref not in counted and ref != ignore_scheduled:
            used += _in_use(db.fields("VM", ref))
    return max(0, total - h["memory_overhead"] - used)


def _in_use(vm):
    return vm["memory_dynamic_min"] + vm["memory_overhead"]


def vbd_spec(db, server, vbd_ref, vbd):
    """The backend's view of one VBD; a disk's path comes from the storage
    layer (disks.vdi_path)."""
    empty = vbd["empty"] or vbd["VDI"] == NULL_REF
    path = "" if empty else disks.vdi_path(server, vbd["VDI"])
    size = 0 if empty else db.fields("VDI", vbd["VDI"])["virtual_size"]
    return VBDSpec(device="", userdevice=vbd["userdevice"], mode=vbd["mode"],
                   type=vbd["type"], path=path, empty=empty,
                   bootable=vbd["bootable"], size=size)


def vif_spec(db, vif):
    bridge = ""
    if db.exists("network", vif["network"]):
        bridge = db.fields("network", vif["network"])["bridge"]
    return VIFSpec(device=vif["device"], mac=vif["MAC"], bridge=bridge,
                   mtu=vif["MTU"], other_config=dict(vif["other_config"]))


def vm_spec(db, server, ref, with_disks=True):
    """The VMSpec a start, resume or reboot builds the domain from;
    without its disks for a migration (they follow it, plugged once the
    source has let them go)."""
    vm = db.fields("VM", ref)
    boot = vm["HVM_boot_params"]
    _, dmin, dmax, smax = coerced_memory(vm) or (
        0, vm["memory_dynamic_min"], vm["memory_dynamic_max"],
        vm["memory_static_max"])
    vbds = [vbd_spec(db, server, r, db.fields("VBD", r))
            for r in sorted(db.where("VBD", VM=ref),
                            key=lambda r: _userdevice_order(db, r))
            ] if with_disks else []
    vifs = [vif_spec(db, db.fields("VIF", r))
            for r in sorted(db.where("VIF", VM=ref),
                            key=lambda r: _int(db.fields("VIF", r)["device"]))]
    return VMSpec(
        uuid=vm["uuid"], name=vm["name_label"], domain_type=domain_type(vm),
        memory_static_max=smax, memory_dynamic_min=dmin,
        memory_dynamic_max=dmax, memory_target=dmax,
        vcpus_max=vm["VCPUs_max"], vcpus_at_startup=vm["VCPUs_at_startup"],
        shadow_multiplier=shadow_multiplier(vm),
        vcpu_params=dict(vm["VCPUs_params"]), platform=dict(vm["platform"]),
        kernel=vm["PV_kernel"], ramdisk=vm["PV_ramdisk"],
        cmdline=vm["PV_args"], bootloader=vm["PV_bootloader"],
        firmware=boot.get("firmware", "bios"),
        boot_order=boot.get("order", "cd"),
        vbds=vbds, vifs=vifs, other_config=dict(vm["other_config"]),
        actions_after_shutdown=vm["actions_after_shutdown"],
        actions_after_reboot=vm["actions_after_reboot"],
        actions_after_crash=vm["actions_after_crash"])


def _int(text, default=1 << 30):
    try:
        return int(text)
    except (TypeError, ValueError):
        return default


def _userdevice_order(db, ref):
    return _int(db.fields("VBD", ref)["userdevice"])
