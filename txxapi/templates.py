"""
The default templates a fresh host offers: the common Linux distributions,
Windows versions and "Other install media".  Each is a VM record with
is_a_template set, install hints in other_config, and a ``disks``
provision spec that VM.provision turns into disks.

Templates are created at first start and refreshed (by name) at every
start, so a newer txxapi brings newer templates without touching
user-made ones.
"""

from txxapi.values import NULL_REF

GIB = 1024 ** 3
MIB = 1024 ** 2

# name, install-distro, family, min memory MiB, default memory MiB,
# vCPUs, disk GiB, UEFI
_LINUX = (
    ("AlmaLinux 8", "rhlike", 1024, 2048, 1, 10, False),
    ("AlmaLinux 9", "rhlike", 1536, 2048, 1, 10, False),
    ("CentOS Stream 9", "rhlike", 1536, 2048, 1, 10, False),
    ("Debian Bookworm 12", "debianlike", 512, 1024, 1, 10, False),
    ("Debian Bullseye 11", "debianlike", 512, 1024, 1, 10, False),
    ("Debian Trixie 13", "debianlike", 512, 1024, 1, 10, False),
    ("Oracle Linux 8", "rhlike", 1024, 2048, 1, 10, False),
    ("Oracle Linux 9", "rhlike", 1536, 2048, 1, 10, False),
    ("Red Hat Enterprise Linux 8", "rhlike", 1024, 2048, 1, 10, False),
    ("Red Hat Enterprise Linux 9", "rhlike", 1536, 2048, 1, 10, False),
    ("Rocky Linux 8", "rhlike", 1024, 2048, 1, 10, False),
    ("Rocky Linux 9", "rhlike", 1536, 2048, 1, 10, False),
    ("SUSE Linux Enterprise Server 15 (64-bit)", "sleslike", 1024, 2048, 1,
     16, False),
    ("Ubuntu Focal Fossa 20.04", "debianlike", 512, 2048, 1, 10, False),
    ("Ubuntu Jammy Jellyfish 22.04", "debianlike", 1024, 2048, 1, 10,
     False),
    ("Ubuntu Noble Numbat 24.04", "debianlike", 1024, 2048, 1, 10, False),
    ("Generic Linux BIOS", "", 512, 1024, 1, 10, False),
    ("Generic Linux UEFI", "", 512, 1024, 1, 10, True),
)
_WINDOWS = (
    ("Windows 10 (64-bit)", 2048, 4096, 2, 32, False),
    ("Windows 11", 4096, 4096, 2, 64, True),
    ("Windows Server 2016 (64-bit)", 1024, 2048, 2, 32, False),
    ("Windows Server 2019 (64-bit)", 1024, 2048, 2, 32, False),
    ("Windows Server 2022 (64-bit)", 2048, 4096, 2, 32, True),
    ("Windows Server 2025 (64-bit)", 2048, 4096, 2, 64, True),
)


def _disks(size_gib):
    return ('<provision><disk device="0" size="%d" sr="" bootable="true" '
            'type="system"/></provision>' % (size_gib * GIB))


def _template(name, description, min_mib, mem_mib, vcpus, disk_gib, uefi,
              other, platform):
    memory = mem_mib * MIB
    other_config = {"default_template": "true", "disks": _disks(disk_gib),
                    "install-methods": "cdrom"}
    other_config.update(other)
    boot_params = {"order": "cdn"}
    if uefi:
        boot_params["firmware"] = "uefi"
    return {
        "name_label": name,
        "name_description": description,
        "is_a_template": True,
        "is_default_template": True,
        "user_version": 1,
        "memory_static_max": memory,
        "memory_dynamic_max": memory,
        "memory_dynamic_min": memory,
        "memory_static_min": min_mib * MIB,
        "VCPUs_max": vcpus,
        "VCPUs_at_startup": vcpus,
        "VCPUs_params": {},
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart",
        "actions_after_crash": "restart",
        "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": boot_params,
        "HVM_shadow_multiplier": 1.0,
        "platform": platform,
        "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "",
        "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "",
        "PCI_bus": "",
        "other_config": other_config,
        "recommendations": (
            '<restrictions><restriction field="memory-static-max" '
            'max="1649267441664"/><restriction field="vcpus-max" max="32"/>'
            '</restrictions>'),
        "domain_type": "hvm",
        "affinity": NULL_REF,
        "power_state": "Halted",
        "ha_restart_priority": "",
        "tags": [],
        "blocked_operations": {},
        "has_vendor_device": False,
    }


def default_templates():
    """Records of every default template, by name."""
    out = []
    for name, distro, min_mib, mem, vcpus, disk, uefi in _LINUX:
        other = {"linux_template": "true",
                 "install-methods": "cdrom,nfs,http,ftp"}
        if distro:
            other["install-distro"] = distro
            other["install-arch"] = "amd64" if distro == "debianlike" \
                else "x86_64"
        out.append(_template(
            name, "Template for installing %s" % name, min_mib, mem, vcpus,
            disk, uefi, other,
            {"acpi": "1", "apic": "true", "pae": "true", "nx": "true",
             "viridian": "false", "device-model": "qemu-upstream-compat",
             "secureboot": "false"}))
    for name, min_mib, mem, vcpus, disk, uefi in _WINDOWS:
        out.append(_template(
            name, "Template for installing %s" % name, min_mib, mem, vcpus,
            disk, uefi, {},
            {"acpi": "1", "apic": "true", "pae": "true", "nx": "true",
             "viridian": "true", "device_id": "0002",
             "device-model": "qemu-upstream-uefi" if uefi
             else "qemu-upstream-compat",
             "secureboot": "true" if uefi else "false"}))
    out.append(_template(
        "Other install media", "Template for any other operating system",
        128, 1024, 1, 10, False, {},
        {"acpi": "1", "apic": "true", "pae": "true", "nx": "true",
         "viridian": "false", "device-model": "qemu-upstream-compat"}))
    return out


def ensure_default_templates(db):
    """Create missing default templates; leave existing ones alone."""
    existing = {row.fields["name_label"]
                for row in db.table("VM").rows.values()
                if row.fields["is_default_template"]}
    created = []
    for record in default_templates():
        if record["name_label"] not in existing:
            created.append(db.create("VM", record))
    return created
