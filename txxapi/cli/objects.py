"""
Commands that make and change the objects around VMs: disks (vdi-create,
vbd-create), networks (network-create, vif-create), tasks (task-cancel),
hosts (host-enable/-disable), and event-wait.  Creation commands print
the new object's uuid.
"""

import random
import re

from twisted.internet import defer

from txxapi.cli.connection import STANDARD
from txxapi.cli.generic import (
    Command, all_records, map_params, on_uuid, print_uuid)
from txxapi.cli.records import BY_PREFIX, NULL, CliFailure, Failure
from txxapi.cli.select import do_op

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40,
          "tib": 1 << 40, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3,
          "tb": 1000 ** 4}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def bytes_of(field, text):
    """A size with an optional unit (KiB, MiB, GiB, TiB; KB... in powers
    of ten)."""
    m = _SIZE.match(text)
    if m is None or m.group(2).lower() not in _UNITS:
        raise CliFailure("Failed to parse field '%s': expecting an integer "
                         "(possibly with suffix)" % field)
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


@defer.inlineCallbacks
def vdi_create(cli):
    p = cli.params
    sr = yield cli.call("SR.get_by_uuid", p["sr-uuid"])
    size = bytes_of("virtual-size", p["virtual-size"])
    ref = yield cli.call("VDI.create", {
        "name_label": p["name-label"], "name_description": "", "SR": sr,
        "virtual_size": size, "type": p.get("type", "user").lower(),
        "sharable": p.flag("sharable"), "read_only": False,
        "other_config": {}, "xenstore_data": {},
        "sm_config": map_params(p, "sm-config"),
        "tags": list(map_params(p, "tags"))})
    yield print_uuid(cli, "VDI", ref)


_VBD_MODES = {"ro": "RO", "rw": "RW"}
_VBD_TYPES = {"cd": "CD", "disk": "Disk", "floppy": "Floppy"}


@defer.inlineCallbacks
def vbd_create(cli):
    p = cli.params
    vm = yield cli.call("VM.get_by_uuid", p["vm-uuid"])
    empty = "vdi-uuid" not in p
    vdi = NULL
    if not empty:
        vdi = yield cli.call("VDI.get_by_uuid", p["vdi-uuid"])
    mode = p.get("mode", "rw").lower()
    if mode not in _VBD_MODES:
        raise Failure('Unknown mode: %s (should be "ro" or "rw"' % mode)
    kind = p.get("type", "disk").lower()
    if kind not in _VBD_TYPES:
        raise Failure('"Unknown type: %s (should be "cd", "disk" or '
                      '"floppy"' % kind)
    if kind == "disk" and empty:
        raise Failure("Empty VBDs can only be made for type=CD")
    ref = yield cli.call("VBD.create", {
        "VM": vm, "VDI": vdi, "userdevice": p["device"], "device": "",
        "bootable": p.flag("bootable"), "mode": _VBD_MODES[mode],
        "type": _VBD_TYPES[kind],
        "unpluggable": p.flag("unpluggable", default=True),
        "empty": empty, "qos_algorithm_type": "",
        "qos_algorithm_params": {}, "other_config": {},
        "currently_attached": False})
    yield print_uuid(cli, "VBD", ref)


def random_mac():
    """A locally administered unicast MAC."""
    octets = [random.randint(0, 255) for _ in range(6)]
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join("%02x" % o for o in octets)


@defer.inlineCallbacks
def vif_create(cli):
    p = cli.params
    vm = yield cli.call("VM.get_by_uuid", p["vm-uuid"])
    network = yield cli.call("network.get_by_uuid", p["network-uuid"])
    mtu = yield cli.call("network.get_MTU", network)
    mac = p.get("mac", "")
    ref = yield cli.call("VIF.create", {
        "device": p["device"], "network": network, "VM": vm,
        "MAC": random_mac() if mac == "random" else mac, "MTU": mtu,
        "other_config": {}, "currently_attached": False,
        "qos_algorithm_type": "", "qos_algorithm_params": {},
        "locking_mode": "network_default", "ipv4_allowed": [],
        "ipv6_allowed": []})
    yield print_uuid(cli, "VIF", ref)


@defer.inlineCallbacks
def network_create(cli):
    p = cli.params
    mtu = p.get("MTU", "1500")
    try:
        mtu = int(mtu)
    except ValueError:
        raise Failure("int_of_string")
    ref = yield cli.call("network.create", {
        "name_label": p["name-label"],
        "name_description": p.get("name-description", ""), "MTU": mtu,
        "other_config": {}, "bridge": p.get("bridge", ""),
        "managed": p.flag("managed", default=True), "tags": []})
    yield print_uuid(cli, "network", ref)


def _host_op(call):
    @defer.inlineCallbacks
    def run(cli):
        yield do_op(cli, "host", lambda ref, r: cli.call(call, ref))
    return run


# -- event-wait ------------------------------------------------------------------

EVENT_TIMEOUT = 30.0


def _conditions(params):
    out = []
    for key, value in params.items:
        if key == "class" or key in STANDARD:
            continue
        if value.startswith("/="):
            out.append((False, key, value[2:]))
        else:
            out.append((True, key, value))
    return out


def _satisfied(cc, record, conditions, view):
    for equal, key, value in conditions:
        field = cc.by_name.get(key)
        if field is None:
            raise Failure("key missing: %s" % key)
        if (field.text(record, view) == value) != equal:
            return False
    return True


@defer.inlineCallbacks
def event_wait(cli):
    cc = BY_PREFIX.get(cli.params["class"])
    if cc is None:
        raise Failure("class not found: %s" % cli.params["class"])
    conditions = _conditions(cli.params)
    token = ""
    while True:
        batch = yield cli.call("event.from", [cc.cls.name.lower()], token,
                               EVENT_TIMEOUT)
        token = batch["token"]
        pairs = yield all_records(cli, cc)
        if any(_satisfied(cc, r, conditions, cli.view) for _, r in pairs):
            return


def commands():
    return [
        Command("vdi-create", vdi_create,
                reqd=["sr-uuid", "name-label", "virtual-size"],
                optn=["type", "sharable", "sm-config:", "tags:"],
                help="Makes a disk on the SR; prints its uuid."),
        Command("vbd-create", vbd_create, reqd=["vm-uuid", "device"],
                optn=["vdi-uuid", "bootable", "type", "mode", "unpluggable"],
                help="Attaches a disk (or an empty CD drive) to a VM; prints "
                     "the VBD's uuid."),
        Command("vif-create", vif_create,
                reqd=["device", "network-uuid", "vm-uuid"], optn=["mac"],
                help="Gives a VM a network interface; prints its uuid."),
        Command("network-create", network_create, reqd=["name-label"],
                optn=["name-description", "MTU", "bridge", "managed"],
                standard=True, help="Makes a network; prints its uuid."),
        Command("vdi-destroy", on_uuid("VDI.destroy"), reqd=["uuid"],
                help="Destroys a disk."),
        Command("vbd-destroy", on_uuid("VBD.destroy"), reqd=["uuid"],
                help="Destroys a VBD."),
        Command("vif-destroy", on_uuid("VIF.destroy"), reqd=["uuid"],
                help="Destroys a VIF."),
        Command("network-destroy", on_uuid("network.destroy"), reqd=["uuid"],
                help="Destroys a network."),
        Command("task-cancel", on_uuid("task.cancel"), reqd=["uuid"],
                help="Asks a task to stop."),
        Command("host-enable", _host_op("host.enable"), selectors="host",
                help="Lets the selected hosts start VMs again."),
        Command("host-disable", _host_op("host.disable"), selectors="host",
                help="Stops the selected hosts from starting VMs."),
        Command("host-reboot", _host_op("host.reboot"), selectors="host",
                help="Reboots the selected hosts (disable them first)."),
        Command("host-shutdown", _host_op("host.shutdown"),
                selectors="host",
                help="Shuts the selected hosts down (disable them first)."),
        Command("event-wait", event_wait, reqd=["class"],
                help="Waits until an object of the class has the given "
                     "field values (field=/=value: differs)."),
    ]
