"""
The VM commands: power operations on selected VMs (long ones through
Async calls and their tasks), install from a template, clone, copy,
snapshot, migrate (within the pool, or to another one:
txxapi.cli.cross_pool), revert to a snapshot, uninstall (asking first,
unless --force), destroy.
"""

import re

from twisted.internet import defer

from txxapi.cli import cross_pool
from txxapi.cli.generic import Command, all_records
from txxapi.cli.records import BY_PREFIX, NULL, Failure
from txxapi.cli.select import by_uuid_or_name, do_op

VM_SELECTED = "vm"
POWER = ["progress"]


def _power(name, async_call, args_of=lambda cli, ref: (), ignore=(),
           include_control=False, help=""):
    @defer.inlineCallbacks
    def run(cli):
        @defer.inlineCallbacks
        def op(ref, record):
            extra = yield defer.maybeDeferred(args_of, cli, ref)
            call = async_call(cli) if callable(async_call) else async_call
            if call.startswith("Async."):
                yield cli.run_task(call[len("Async."):], ref, *extra)
            else:
                yield cli.call(call, ref, *extra)
        yield do_op(cli, "vm", op, POWER + list(ignore),
                    include_control=include_control)
    return Command(name, run, optn=list(ignore) + ["progress"], help=help,
                   standard=True, selectors=VM_SELECTED)


@defer.inlineCallbacks
def _host_of(cli):
    host = yield by_uuid_or_name(cli, "host", cli.params["on"], "host")
    return host


def _start_call(cli):
    return "Async.VM.start_on" if "on" in cli.params else "Async.VM.start"


@defer.inlineCallbacks
def _start_args(cli, ref):
    flags = (cli.params.flag("paused"), cli.params.flag("force"))
    if "on" in cli.params:
        host = yield _host_of(cli)
        return (host,) + flags
    return flags


def _resume_call(cli):
    return "Async.VM.resume_on" if "on" in cli.params else "Async.VM.resume"


@defer.inlineCallbacks
def _resume_args(cli, ref):
    flags = (False, cli.params.flag("force"))
    if "on" in cli.params:
        host = yield _host_of(cli)
        return (host,) + flags
    return flags


def _forced(hard, clean):
    return lambda cli: hard if cli.params.flag("force") else clean


# -- install, clone, copy, snapshot ---------------------------------------------

@defer.inlineCallbacks
def _template(cli):
    params = cli.params
    pairs = yield all_records(cli, BY_PREFIX["template"])

    def by_name(name):
        found = [ref for ref, r in pairs if r["is_a_template"] and
                 not r["is_control_domain"] and r["name_label"] == name]
        if not found:
            raise Failure("No templates matched")
        if len(found) > 1:
            raise Failure("More than one matching template found")
        return found[0]
    if "template-uuid" in params:
        found = [ref for ref, r in pairs
                 if r["uuid"] == params["template-uuid"]]
        if not found:
            raise Failure("Cannot find template")
        template = found[0]
    elif "template-name-label" in params or "template-name" in params:
        template = by_name(params.get("template-name-label",
                                      params.get("template-name")))
    elif "template" in params:
        found = [ref for ref, r in pairs if r["uuid"] == params["template"]]
        template = found[0] if found else by_name(params["template"])
    else:
        raise Failure("Template must be specified by parameter "
                      "'template-uuid', 'template-name', "
                      "'template-name-label' or 'template'")
    if not dict(pairs)[template]["is_a_template"]:
        raise Failure("Can only install from templates")
    return template, dict(pairs)[template]


@defer.inlineCallbacks
def _install_sr(cli, template_record):
    """The SR named by sr-uuid/sr-name-label, or None (then the new VM is
    a clone and its disks go to the pool's default SR)."""
    params = cli.params
    if template_record["is_a_snapshot"]:
        if "sr-uuid" in params or "sr-name-label" in params:
            raise Failure("Do not use the sr-name-label or sr-uuid argument "
                          "when installing from a snapshot. By default, it "
                          "will install each new disk on the same SR as the "
                          "corresponding snapshot disks.")
        return None
    sr = None
    if "sr-uuid" in params:
        sr = yield cli.call("SR.get_by_uuid", params["sr-uuid"])
    if "sr-name-label" in params:
        named = yield cli.call("SR.get_by_name_label",
                               params["sr-name-label"])
        if not named:
            raise Failure("No SR with that name-label found")
        if sr is not None and sr not in named:
            raise Failure("SR specified via sr-uuid doesn't have the name "
                          "specified via sr-name-label")
        if sr is None and len(named) > 1:
            raise Failure("Multiple SRs with that name-label found")
        sr = sr or named[0]
    return sr


@defer.inlineCallbacks
def _default_sr_uuid(cli):
    pools = yield cli.call("pool.get_all")
    if not pools:
        return None
    sr = yield cli.call("pool.get_default_SR", pools[0])
    if sr == NULL or not cli.server.db.exists("SR", sr):
        return None
    uuid = yield cli.call("SR.get_uuid", sr)
    return uuid


_EMPTY_SR = re.compile(r'(<disk\b[^>]*?\bsr=")(")')


@defer.inlineCallbacks
def vm_install(cli):
    template, record = yield _template(cli)
    name = cli.params["new-name-label"]
    sr = yield _install_sr(cli, record)
    if sr is not None:
        sr_uuid = yield cli.call("SR.get_uuid", sr)
    else:
        sr_uuid = yield _default_sr_uuid(cli)
        if sr_uuid is None and "disks" in record["other_config"]:
            raise Failure("Failed to find a valid default SR for the Pool. "
                          "Please provide an sr-name-label or sr-uuid "
                          "parameter.")
    if sr is not None:
        vm = yield cli.run_task("VM.copy", template, name, sr)
    else:
        vm = yield cli.run_task("VM.clone", template, name)
    try:
        yield cli.call("VM.set_name_description", vm, "Installed via xe CLI")
        disks = record["other_config"].get("disks")
        if disks is not None and sr_uuid:
            rewritten = _EMPTY_SR.sub(r"\g<1>%s\g<2>" % sr_uuid, disks)
            yield cli.call("VM.remove_from_other_config", vm, "disks")
            yield cli.call("VM.add_to_other_config", vm, "disks", rewritten)
        yield cli.run_task("VM.provision", vm)
        uuid = yield cli.call("VM.get_uuid", vm)
    except Exception:
        yield cli.call("VM.destroy", vm).addErrback(lambda f: None)
        raise
    cli.lines([uuid])


def _clone_like(call, include_templates, multiple, extra_args=None,
                ignore=()):
    @defer.inlineCallbacks
    def run(cli):
        name = cli.params["new-name-label"]

        @defer.inlineCallbacks
        def op(ref, record):
            extra = ()
            if extra_args is not None:
                extra = yield extra_args(cli)
            new = yield cli.run_task(call, ref, name, *extra)
            return new
        new_vms = yield do_op(
            cli, "vm", op, ["new-name-label", "new-name-description"]
            + list(ignore), multiple=multiple,
            include_templates=include_templates)
        if "new-name-description" in cli.params:
            yield cli.call("VM.set_name_description", new_vms[0],
                           cli.params["new-name-description"])
        uuids = []
        for vm in new_vms:
            uuid = yield cli.call("VM.get_uuid", vm)
            uuids.append(uuid)
        cli.lines(uuids)
    return run


@defer.inlineCallbacks
def _copy_sr(cli):
    if "sr-uuid" not in cli.params:
        return (NULL,)
    sr = yield cli.call("SR.get_by_uuid", cli.params["sr-uuid"])
    return (sr,)


# -- migrate, revert, reset ------------------------------------------------------

_MIGRATE_OWN = ["host", "host-uuid", "host-name", "live", "compress",
                "force", "copy"]


def _migrate_options(params):
    options = {}
    if "compress" in params:
        options["compress"] = params["compress"]
    for key in ("force", "live", "copy"):
        options[key] = "true" if params.flag(key) else "false"
    return options


@defer.inlineCallbacks
def vm_migrate(cli):
    p = cli.params
    named = p.get("host", p.get("host-uuid", p.get("host-name")))
    options = _migrate_options(p)
    if cross_pool.wants_storage_motion(p):
        yield cross_pool.migrate_to_pool(cli, named, options, _MIGRATE_OWN)
        return
    if named is None:
        raise Failure("No destination host specified")
    host = yield by_uuid_or_name(cli, "host", named, "host")
    yield do_op(cli, "vm", lambda ref, r: cli.run_task(
        "VM.pool_migrate", ref, host, options), _MIGRATE_OWN,
        include_control=True)


@defer.inlineCallbacks
def snapshot_revert(cli):
    p = cli.params
    uuid = p.get("snapshot-uuid", p.get("uuid"))
    if uuid is None:
        raise Failure("Required parameter not found: snapshot-uuid or uuid.")
    snapshot = yield cli.call("VM.get_by_uuid", uuid)
    is_snapshot = yield cli.call("VM.get_is_a_snapshot", snapshot)
    if not is_snapshot:
        raise Failure("This operation can only be performed on a VM "
                      "snapshot. %s is not a VM snapshot." % uuid)
    yield cli.run_task("VM.revert", snapshot)


NO_FORCE = ("This operation is dangerous and may cause data loss. This "
            "operation must be forced (use --force).")


@defer.inlineCallbacks
def vm_reset_powerstate(cli):
    if not cli.params.flag("force"):
        raise Failure(NO_FORCE)
    yield do_op(cli, "vm", lambda ref, r: cli.call("VM.power_state_reset",
                                                  ref))


# -- uninstall, destroy ---------------------------------------------------------

@defer.inlineCallbacks
def _owned_disks(cli, vm, record):
    """The VDIs an uninstall destroys: those whose VBD is marked as the
    owner (other_config:owner), and the suspend image."""
    db = cli.server.db
    vdis = []
    for vbd in record["VBDs"]:
        if not db.exists("VBD", vbd):
            continue
        vbd_record = yield cli.call("VBD.get_record", vbd)
        vdi = vbd_record["VDI"]
        if "owner" in vbd_record["other_config"] and db.exists("VDI", vdi):
            vdis.append(vdi)
    if record["suspend_VDI"] != NULL and \
            db.exists("VDI", record["suspend_VDI"]):
        vdis.append(record["suspend_VDI"])
    return vdis


@defer.inlineCallbacks
def vm_uninstall(cli):
    vms = yield do_op(cli, "vm", lambda ref, r: defer.succeed((ref, r)))
    for _, record in list(vms):
        for snap in record["snapshots"]:
            snap_record = yield cli.call("VM.get_record", snap)
            vms.append((snap, snap_record))
    plan, lines = [], []
    for vm, record in vms:
        vdis = yield _owned_disks(cli, vm, record)
        lines.append("VM : %s (%s)" % (record["uuid"], record["name_label"]))
        for vdi in vdis:
            r = yield cli.call("VDI.get_record", vdi)
            shared = " ** WARNING: disk is shared by other VMs" \
                if len(r["VBDs"]) > 1 else ""
            lines.append("VDI: %s (%s) %s" % (r["uuid"], r["name_label"],
                                              shared))
        plan.append((vm, vdis))
    cli.message("The following items are about to be destroyed")
    for line in lines:
        cli.message(line)
    if not cli.params.flag("force"):
        agreed = yield cli.says_yes()
        if not agreed:
            return
    for vm, vdis in plan:
        state = yield cli.call("VM.get_power_state", vm)
        if state != "Halted":
            yield cli.call("VM.hard_shutdown", vm)
        yield cli.call("VM.destroy", vm)
        for vdi in vdis:
            yield cli.call("VDI.destroy", vdi).addErrback(lambda f: None)
    cli.message("All objects destroyed")


@defer.inlineCallbacks
def vm_destroy(cli):
    vm = yield cli.call("VM.get_by_uuid", cli.params["uuid"])
    yield cli.call("VM.destroy", vm)


def commands():
    return [
        _power("vm-start", _start_call, _start_args, ["on", "paused"],
               include_control=True,
               help="Starts the selected VMs (on= a host, paused=true)."),
        _power("vm-shutdown",
               _forced("Async.VM.hard_shutdown", "Async.VM.clean_shutdown"),
               help="Shuts the selected VMs down (--force: at once)."),
        _power("vm-reboot", _forced("VM.hard_reboot", "VM.clean_reboot"),
               help="Reboots the selected VMs (--force: at once)."),
        _power("vm-suspend", "Async.VM.suspend",
               help="Suspends the selected VMs."),
        _power("vm-resume", _resume_call, _resume_args, ["on"],
               help="Resumes the selected VMs (on= a host)."),
        _power("vm-pause", "VM.pause", help="Pauses the selected VMs."),
        _power("vm-unpause", "VM.unpause",
               help="Lets the selected paused VMs run again."),
        Command("vm-migrate", vm_migrate,
                optn=_MIGRATE_OWN + list(cross_pool.OPTIONS),
                standard=True, selectors=VM_SELECTED,
                help="Moves the selected VMs to the host named by host= (a "
                     "uuid or name-label) of the pool (live=true while they "
                     "run), or with remote-master=, remote-username= and "
                     "remote-password= to a host of another pool, their "
                     "disks to the SRs vdi:<vdi-uuid>=<sr-uuid> names and "
                     "their interfaces to the networks "
                     "vif:<vif-uuid>=<network-uuid> names."),
        Command("snapshot-revert", snapshot_revert,
                optn=["uuid", "snapshot-uuid"], standard=True,
                help="Brings the snapshot's VM back to the snapshot's "
                     "state."),
        Command("vm-reset-powerstate", vm_reset_powerstate, optn=["force"],
                standard=True, selectors=VM_SELECTED,
                help="Records the selected VMs as halted, whatever runs; "
                     "needs --force."),
        Command("vm-install", vm_install, reqd=["new-name-label"],
                optn=["template", "template-uuid", "template-name-label",
                      "sr-uuid", "sr-name-label"], standard=True,
                help="Installs a new VM from a template; prints its uuid."),
        Command("vm-clone", _clone_like("VM.clone", True, True),
                reqd=["new-name-label"], optn=["new-name-description"],
                standard=True, selectors=VM_SELECTED,
                help="Clones the selected VM; prints the new uuid."),
        Command("vm-copy", _clone_like("VM.copy", True, False, _copy_sr,
                                       ["sr-uuid"]),
                reqd=["new-name-label"],
                optn=["new-name-description", "sr-uuid"], standard=True,
                selectors=VM_SELECTED,
                help="Copies the selected VM (to sr-uuid=); prints the new "
                     "uuid."),
        Command("vm-snapshot", _clone_like("VM.snapshot", False, True),
                reqd=["new-name-label"], optn=["new-name-description"],
                standard=True, selectors=VM_SELECTED,
                help="Snapshots the selected VM; prints the snapshot's "
                     "uuid."),
        Command("vm-uninstall", vm_uninstall, optn=["force"], standard=True,
                selectors=VM_SELECTED,
                help="Destroys the selected VMs, their snapshots and the "
                     "disks they own (asks first unless --force)."),
        Command("vm-destroy", vm_destroy, reqd=["uuid"],
                help="Destroys the VM record, leaving its disks."),
    ]
