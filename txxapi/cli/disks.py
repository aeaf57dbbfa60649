"""
Commands on the devices of VMs and on disks: vbd-plug/-unplug and
vif-plug/-unplug (--force: at once; vbd-unplug timeout= waits for a guest
that refuses the detach at first), CDs in and out (vbd-insert/-eject,
vm-cd-insert/-eject), a VM's disks, CDs and VIFs listed, vdi-clone,
vdi-snapshot, vdi-copy and vdi-resize, each the API call XAPI's CLI
makes; new disks print their uuid.  Copies run as tasks, so a terminal
shows their progress.
"""

from twisted.internet import defer

from txxapi.cli.generic import (
    Command, map_params, on_uuid, print_uuid, printed, selected_fields)
from txxapi.cli.objects import bytes_of
from txxapi.cli.records import BY_PREFIX, NULL, Failure
from txxapi.cli.select import do_op
from txxapi.errors import XenAPIError

def _unplug(cls):
    @defer.inlineCallbacks
    def run(cli):
        ref = yield cli.call(cls + ".get_by_uuid", cli.params["uuid"])
        yield cli.call(cls + (".unplug_force" if cli.params.flag("force")
                              else ".unplug"), ref)
    return run


@defer.inlineCallbacks
def vbd_unplug(cli):
    p = cli.params
    vbd = yield cli.call("VBD.get_by_uuid", p["uuid"])
    try:
        timeout = float(p.get("timeout", "0"))
    except ValueError:
        raise Failure("Failed to parse parameter 'timeout': expecting a "
                      "float")
    start = cli.server.reactor.seconds()
    try:
        yield cli.call("VBD.unplug_force" if p.flag("force")
                       else "VBD.unplug", vbd)
    except XenAPIError as e:
        if e.code != "DEVICE_DETACH_REJECTED":
            raise
        # The guest said no for now: wait for it to let go, up to the
        # timeout.
        left = timeout - (cli.server.reactor.seconds() - start)
        if left > 0:
            detached = yield cli.watch(
                "VBD", vbd, lambda r: not r["currently_attached"], left)
            if detached is not None:
                return
        raise


@defer.inlineCallbacks
def vdi_clone(cli):
    p = cli.params
    vdi = yield cli.call("VDI.get_by_uuid", p["uuid"])
    new = yield cli.run_task("VDI.clone", vdi,
                             map_params(p, "driver-params"))
    if "new-name-label" in p:
        yield cli.call("VDI.set_name_label", new, p["new-name-label"])
    if "new-name-description" in p:
        yield cli.call("VDI.set_name_description", new,
                       p["new-name-description"])
    yield print_uuid(cli, "VDI", new)


@defer.inlineCallbacks
def vdi_snapshot(cli):
    vdi = yield cli.call("VDI.get_by_uuid", cli.params["uuid"])
    new = yield cli.run_task("VDI.snapshot", vdi,
                             map_params(cli.params, "driver-params"))
    yield print_uuid(cli, "VDI", new)


@defer.inlineCallbacks
def vdi_copy(cli):
    p = cli.params
    vdi = yield cli.call("VDI.get_by_uuid", p["uuid"])
    base = NULL
    if "base-vdi-uuid" in p:
        base = yield cli.call("VDI.get_by_uuid", p["base-vdi-uuid"])
    if ("sr-uuid" in p) == ("into-vdi-uuid" in p):
        raise Failure("Please specify one but not both of: a destination "
                      "sr-uuid (I will create a fresh VDI); or a destination "
                      "into-vdi-uuid (I will copy the blocks into this VDI)")
    sr = into = NULL
    if "sr-uuid" in p:
        sr = yield cli.call("SR.get_by_uuid", p["sr-uuid"])
    else:
        into = yield cli.call("VDI.get_by_uuid", p["into-vdi-uuid"])
    new = yield cli.run_task("VDI.copy", vdi, sr, base, into)
    yield print_uuid(cli, "VDI", new)


@defer.inlineCallbacks
def vdi_resize(cli):
    p = cli.params
    vdi = yield cli.call("VDI.get_by_uuid", p["uuid"])
    size = bytes_of("disk-size", p["disk-size"])
    online = p.flag("online")
    yield cli.call("VDI.resize_online" if online else "VDI.resize", vdi,
                   size)


# -- a VM's CDs, disks and VIFs -------------------------------------------

@defer.inlineCallbacks
def _vbds_of(cli, record, kind, empty_only=False):
    out = []
    for vbd in record["VBDs"]:
        r = yield cli.call("VBD.get_record", vbd)
        if r["type"] == kind and (r["empty"] or not empty_only):
            out.append((vbd, r))
    return out


@defer.inlineCallbacks
def vm_cd_insert(cli):
    name = cli.params["cd-name"]
    found = yield cli.call("VDI.get_by_name_label", name)
    isos = []
    for vdi in found:
        sr = yield cli.call("VDI.get_SR", vdi)
        content = yield cli.call("SR.get_content_type", sr)
        if content == "iso":
            isos.append(vdi)
    if not isos:
        raise Failure("CD %s not found" % name)
    if len(isos) > 1:
        raise Failure("Multiple CDs named %s found. Please use vbd-insert "
                      "and specify uuids" % name)

    @defer.inlineCallbacks
    def op(vm, record):
        drives = yield _vbds_of(cli, record, "CD", empty_only=True)
        if not drives:
            raise XenAPIError("VM_NO_EMPTY_CD_VBD", vm)
        if len(drives) > 1:
            raise Failure("Two or more empty CD devices found. Please use "
                          "vbd-insert")
        yield cli.call("VBD.insert", drives[0][0], isos[0])
    yield do_op(cli, "vm", op, ["cd-name"])


@defer.inlineCallbacks
def vm_cd_eject(cli):
    @defer.inlineCallbacks
    def op(vm, record):
        drives = yield _vbds_of(cli, record, "CD")
        if not drives:
            raise Failure("No CDs found")
        if len(drives) > 1:
            raise Failure("Two or more CDs found. Please use vbd-eject")
        yield cli.call("VBD.eject", drives[0][0])
    yield do_op(cli, "vm", op)


@defer.inlineCallbacks
def vbd_insert(cli):
    vbd = yield cli.call("VBD.get_by_uuid", cli.params["uuid"])
    vdi = yield cli.call("VDI.get_by_uuid", cli.params["vdi-uuid"])
    yield cli.call("VBD.insert", vbd, vdi)


def _fields(cc, params, key, defaults):
    chosen = params.get(key)
    if chosen == "all":
        return cc.fields
    names = chosen.split(",") if chosen is not None else defaults
    return [f for f in cc.fields if f.name in names]


def _disk_list(kind):
    label = "CD" if kind == "CD" else "Disk"
    vbd_defaults = ["uuid", "vm-name-label", "userdevice"] + (
        ["empty"] if kind == "CD" else [])

    @defer.inlineCallbacks
    def run(cli):
        vbd_cc, vdi_cc = BY_PREFIX["vbd"], BY_PREFIX["vdi"]
        vbd_fields = _fields(vbd_cc, cli.params, "vbd-params", vbd_defaults)
        vdi_fields = _fields(vdi_cc, cli.params, "vdi-params", [
            "uuid", "name-label", "virtual-size", "sr-name-label"])

        @defer.inlineCallbacks
        def op(vm, record):
            drives = yield _vbds_of(cli, record, kind)
            for n, (_, r) in enumerate(drives):
                cli.message("%s %d VBD:" % (label, n))
                cli.table([printed(vbd_fields, r, cli.view)])
                if not r["empty"]:
                    vdi = yield cli.call("VDI.get_record", r["VDI"])
                    cli.message("%s %d VDI:" % (label, n))
                    cli.table([printed(vdi_fields, vdi, cli.view)])
        yield do_op(cli, "vm", op, ["vbd-params", "vdi-params"])
    return run


@defer.inlineCallbacks
def vm_vif_list(cli):
    cc = BY_PREFIX["vif"]
    fields = selected_fields(cc, cli.params) if "params" in cli.params \
        else [cc.by_name[n] for n in ("uuid", "device", "MAC",
                                      "network-uuid", "network-name-label",
                                      "vm-name-label")]

    @defer.inlineCallbacks
    def op(vm, record):
        rows = []
        for vif in record["VIFs"]:
            r = yield cli.call("VIF.get_record", vif)
            rows.append(printed(fields, r, cli.view))
        cli.table(rows)
    # Every VM selected, as XAPI's: --multiple is implied.
    yield do_op(cli, "vm", op, ["params"], every=True)


def commands():
    return [
        Command("vbd-plug", on_uuid("VBD.plug"), reqd=["uuid"],
                help="Attaches the VBD to its running VM."),
        Command("vbd-unplug", vbd_unplug, reqd=["uuid"],
                optn=["timeout", "force"],
                help="Detaches the VBD from its running VM (--force: "
                     "without the guest's consent; timeout= seconds to "
                     "wait for a guest that refuses at first)."),
        Command("vif-plug", on_uuid("VIF.plug"), reqd=["uuid"],
                help="Attaches the VIF to its running VM."),
        Command("vif-unplug", _unplug("VIF"), reqd=["uuid"], optn=["force"],
                help="Detaches the VIF from its running VM."),
        Command("vbd-insert", vbd_insert, reqd=["uuid", "vdi-uuid"],
                help="Puts the disk (an ISO) in the empty CD drive."),
        Command("vbd-eject", on_uuid("VBD.eject"), reqd=["uuid"],
                help="Empties the CD drive."),
        Command("vm-cd-insert", vm_cd_insert, reqd=["cd-name"],
                standard=True, selectors="vm",
                help="Puts the ISO of that name in the selected VM's one "
                     "empty CD drive."),
        Command("vm-cd-eject", vm_cd_eject, standard=True, selectors="vm",
                help="Empties the selected VM's one CD drive."),
        Command("vm-disk-list", _disk_list("Disk"),
                optn=["vbd-params", "vdi-params"], standard=True,
                selectors="vm",
                help="Lists the disks of the selected VMs (vbd-params= and "
                     "vdi-params= choose the fields)."),
        Command("vm-cd-list", _disk_list("CD"),
                optn=["vbd-params", "vdi-params"], standard=True,
                selectors="vm",
                help="Lists the CD drives of the selected VMs and what is "
                     "in them."),
        Command("vm-vif-list", vm_vif_list, standard=True, selectors="vm",
                help="Lists the network interfaces of the selected VMs."),
        Command("vdi-clone", vdi_clone, reqd=["uuid"],
                optn=["driver-params:", "new-name-label",
                      "new-name-description"],
                help="Clones the disk; prints the new disk's uuid."),
        Command("vdi-snapshot", vdi_snapshot, reqd=["uuid"],
                optn=["driver-params:"],
                help="Snapshots the disk; prints the snapshot's uuid."),
        Command("vdi-copy", vdi_copy, reqd=["uuid"],
                optn=["sr-uuid", "base-vdi-uuid", "into-vdi-uuid"],
                help="Copies the disk to a new disk on sr-uuid=, or its "
                     "blocks into the disk into-vdi-uuid= (base-vdi-uuid=: "
                     "only what differs from that disk); prints the uuid."),
        Command("vdi-resize", vdi_resize, reqd=["uuid", "disk-size"],
                optn=["online"],
                help="Grows the disk to disk-size= (a size with an optional "
                     "unit, e.g. 10GiB)."),
    ]
