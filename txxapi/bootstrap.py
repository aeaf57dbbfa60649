"""
What a host's database holds before anyone calls: on a first start, the
pool with this host as master and everything XAPI shows on a fresh host
(host, CPUs, metrics, the management network and PIF, the control domain
with its metrics and console); at every start, the static RBAC roles.

This host is identified across restarts by the inventory file in the data
directory (XAPI keeps the same facts in /etc/xensource-inventory).
"""

import hashlib
import os
import socket
import uuid as uuid_

from txxapi import __version__
from txxapi.api.rbac import SPELLING, permissions_of
from txxapi.datamodel import MODEL
from txxapi.datamodel.roles import ALL_ROLES
from txxapi.files import write_atomically
from txxapi.network import pif
from txxapi.network.devices import Device, mac_for
from txxapi.values import NULL_REF, REF_PREFIX, DateTime, new_uuid

API_VERSION_MAJOR = 2
API_VERSION_MINOR = 21
PRODUCT_VERSION = "8.3.0"
POOL_ADMIN_ROLE_UUID = "0165f154-ba3e-034e-6b27-5d271af109ba"
ROLE_DESCRIPTIONS = {
    "pool-admin": "Everything, including users, roles and external auth",
    "pool-operator": "Pool-wide resources: hosts, storage, networks, HA",
    "vm-power-admin": "VM placement, migration, memory and snapshots",
    "vm-admin": "Creating, changing and destroying VMs and templates",
    "vm-operator": "Using VMs: power operations and consoles",
    "client-cert": "Internal role of client-certificate logins",
    "read-only": "Logging in and reading everything that is not secret",
}


def role_uuid(name):
    """XAPI's static role uuids: the MD5 of the name, as a UUID."""
    if name == "pool-admin":
        return POOL_ADMIN_ROLE_UUID
    return str(uuid_.UUID(bytes=hashlib.md5(name.encode()).digest()))


def read_inventory(data_dir, defaults=None):
    """This host's identity; missing facts come from ``defaults`` or are
    made up, and are written back."""
    path = os.path.join(data_dir, "inventory")
    facts = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.strip().split("=", 1)
                    facts[k] = v.strip("'")
    changed = False
    for key in ("INSTALLATION_UUID", "CONTROL_DOMAIN_UUID"):
        if key not in facts:
            facts[key] = (defaults or {}).get(key) or new_uuid()
            changed = True
    if changed:
        write_atomically(path, "".join("%s='%s'\n" % (k, v)
                                       for k, v in sorted(facts.items())),
                         perms=0o644)
    return facts


def read_pool_secret(data_dir):
    """The secret hosts of a pool prove themselves with (XAPI's ptoken),
    made on first start."""
    path = os.path.join(data_dir, "ptoken")
    if not os.path.exists(path):
        write_atomically(path, new_uuid() + "/" + new_uuid() + "\n")
    with open(path) as f:
        return f.read().strip()


def management_address(bind):
    if bind and bind not in ("0.0.0.0", "::", ""):
        return bind
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # No packet is sent: connect() on UDP only picks a route.
            s.connect(("192.0.2.1", 9))
            return s.getsockname()[0]
        finally:
            s.close()
    except OSError:
        return "127.0.0.1"


def load_roles(db):
    """(Re)create the static role objects from the datamodel: one per
    permission a pool-admin holds (messages, guarded keys, HTTP actions),
    and the roles, whose subroles are their permissions."""
    for ref in db.refs("role"):
        db.delete("role", ref)
    hidden = {m.permission for m in MODEL.messages.values() if m.hidden}
    permission_refs = {}
    for permission in permissions_of("pool-admin"):
        if permission in hidden:
            continue
        uuid = role_uuid(SPELLING[permission])
        ref = REF_PREFIX + uuid
        permission_refs[permission] = ref
        db.create("role", {"uuid": uuid,
                           "name_label": permission,
                           "name_description": "A basic permission",
                           "subroles": [], "is_internal": True}, ref=ref)
    for role in ALL_ROLES:
        db.create("role", {
            "uuid": role_uuid(role), "name_label": role,
            "name_description": ROLE_DESCRIPTIONS[role],
            "subroles": [permission_refs[p] for p in permissions_of(role)
                         if p in permission_refs],
            "is_internal": role == "client-cert",
        }, ref=REF_PREFIX + role_uuid(role))


def first_start(db, inventory, host_info, address, backend_name):
    """Create the pool and this host, as a freshly installed host has."""
    now = DateTime.now()
    host_uuid = inventory["INSTALLATION_UUID"]
    host_ref = REF_PREFIX + new_uuid()
    metrics = db.create("host_metrics", {
        "memory_total": host_info.memory_total,
        "memory_free": host_info.memory_free,
        "live": True, "last_updated": now})
    cpus = host_info.cpus
    first = cpus[0]
    cpu_info = {
        "cpu_count": str(len(cpus)), "socket_count": str(host_info.sockets),
        "vendor": first.vendor, "speed": "%.3f" % first.speed_mhz,
        "modelname": first.model_name, "family": first.family,
        "model": first.model, "stepping": first.stepping,
        "flags": first.flags, "features": host_info.cpu_features,
        "features_pv": host_info.cpu_features,
        "features_hvm": host_info.cpu_features,
    }
    software_version = {
        "product_version": PRODUCT_VERSION, "product_brand": "XCP-ng",
        "platform_name": "XCP", "platform_version": "3.4.0",
        "product_version_text": "8.3", "product_version_text_short": "8.3",
        "xapi": "25.0", "xapi_build": __version__,
        "xen": host_info.hypervisor_version, "hostname": host_info.hostname,
        "date": now[:4] + "-" + now[4:6] + "-" + now[6:8],
        "build_number": "txxapi", "backend": backend_name,
    }
    db.create("host", {
        "uuid": host_uuid,
        "name_label": host_info.hostname,
        "name_description": "Default install",
        "hostname": host_info.hostname,
        "address": address,
        "API_version_major": API_VERSION_MAJOR,
        "API_version_minor": API_VERSION_MINOR,
        "API_version_vendor": "XenSource",
        "API_version_vendor_implementation": {},
        "enabled": True,
        "software_version": software_version,
        "cpu_info": cpu_info,
        "capabilities": ["xen-3.0-x86_64", "hvm-3.0-x86_32",
                         "hvm-3.0-x86_32p", "hvm-3.0-x86_64"],
        "other_config": {"agent_start_time": "%d." % now.timestamp(),
                         "boot_time": "%d." % now.timestamp()},
        "sched_policy": "credit",
        "metrics": metrics,
        "edition": "xcp-ng",
        "license_params": {"sku_type": "free"},
        "virtual_hardware_platform_versions": [0, 1, 2],
        "chipset_info": {"iommu": "false"},
        "external_auth_type": "",
        "tls_verification_enabled": False,
    }, ref=host_ref)
    for cpu in cpus:
        db.create("host_cpu", {
            "host": host_ref, "number": cpu.number, "vendor": cpu.vendor,
            "speed": int(cpu.speed_mhz), "modelname": cpu.model_name,
            "family": int(cpu.family or 0), "model": int(cpu.model or 0),
            "stepping": cpu.stepping, "flags": cpu.flags,
            "features": host_info.cpu_features, "utilisation": 0.0})
    pif.create_physical(
        db, host_ref, Device("eth0", mac_for(host_uuid)), now=now,
        currently_attached=True, ip_configuration_mode="Static",
        IP=address, netmask="255.255.255.0", management=True)
    dom0_metrics = db.create("VM_metrics", {
        "memory_actual": host_info.dom0_memory,
        "VCPUs_number": host_info.dom0_vcpus,
        "state": [], "start_time": now, "install_time": now,
        "last_updated": now, "current_domain_type": "pv"})
    dom0 = db.create("VM", {
        "uuid": inventory["CONTROL_DOMAIN_UUID"],
        "name_label": "Control domain on host: %s" % host_info.hostname,
        "name_description": "The domain which manages physical devices "
                            "and manages other domains",
        "power_state": "Running", "is_a_template": False,
        "is_control_domain": True, "resident_on": host_ref,
        "domid": 0, "user_version": 1,
        "memory_static_max": host_info.dom0_memory,
        "memory_dynamic_max": host_info.dom0_memory,
        "memory_dynamic_min": host_info.dom0_memory,
        "memory_static_min": host_info.dom0_memory,
        "memory_target": host_info.dom0_memory,
        "VCPUs_max": host_info.dom0_vcpus,
        "VCPUs_at_startup": host_info.dom0_vcpus,
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "destroy",
        "actions_after_crash": "destroy",
        "metrics": dom0_metrics, "domain_type": "pv",
        "allowed_operations": [],
    })
    console_uuid = new_uuid()
    db.create("console", {
        "uuid": console_uuid, "protocol": "rfb", "VM": dom0,
        "location": "https://%s/console?uuid=%s" % (address, console_uuid)})
    db.update("host", host_ref, {"control_domain": dom0})
    db.create("pool", {
        "name_label": "", "master": host_ref, "default_SR": NULL_REF,
        "suspend_image_SR": NULL_REF, "crash_dump_SR": NULL_REF,
        "tls_verification_enabled": False, "cpu_info": cpu_info,
        "restrictions": {}, "other_config": {}})
    return host_ref

