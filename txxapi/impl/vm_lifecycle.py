"""
Which VM operations are valid when: power states, concurrency, templates,
snapshots, the control domain and guest features.  Pure functions of a VM's
record (and its metrics), so that the check before an operation and the
advisory allowed_operations list agree by construction.
"""

from txxapi.errors import XenAPIError

HALTED, PAUSED, RUNNING, SUSPENDED = "Halted", "Paused", "Running", "Suspended"
ALL_STATES = (HALTED, PAUSED, SUSPENDED, RUNNING)

_STATES = {}
for _ops, _states in (
        (("start", "start_on", "provision", "make_into_template",
          "changing_shadow_memory", "changing_NVRAM", "create_vtpm"),
         (HALTED,)),
        (("unpause",), (PAUSED,)),
        (("resume", "resume_on", "csvm"), (SUSPENDED,)),
        (("clean_shutdown", "clean_reboot", "pause", "suspend",
          "pool_migrate", "send_sysrq", "send_trigger", "call_plugin",
          "changing_VCPUs_live", "changing_memory_live",
          "changing_shadow_memory_live", "awaiting_memory_live",
          "data_source_op", "snapshot_with_quiesce", "sysprep"), (RUNNING,)),
        (("changing_dynamic_range",), (HALTED, RUNNING)),
        (("destroy", "export", "create_template"), (HALTED, SUSPENDED)),
        (("hard_reboot",), (PAUSED, RUNNING)),
        (("hard_shutdown", "shutdown", "checkpoint", "get_boot_record"),
         (PAUSED, SUSPENDED, RUNNING)),
        (("migrate_send",), (HALTED, SUSPENDED, RUNNING)),
        (("snapshot", "revert", "reverting", "metadata_export",
          "power_state_reset", "assert_operation_valid",
          "update_allowed_operations", "query_services"), ALL_STATES),
        (("import",), ())):
    for _op in _ops:
        _STATES[_op] = _states

# Operations that may run beside each other: within one of these groups.
_TOGETHER = (frozenset(["clone", "copy", "export"]),
             frozenset(["snapshot", "checkpoint"]),
             frozenset(["get_boot_record"]))
# (operation in progress, operation that may start beside it)
_BESIDE = frozenset([("snapshot_with_quiesce", "snapshot"),
                     ("migrate_send", "metadata_export"),
                     ("migrate_send", "clean_shutdown"),
                     ("migrate_send", "clean_reboot")])
_TEMPLATE_OPS = frozenset([
    "changing_dynamic_range", "changing_static_range",
    "changing_memory_limits", "changing_shadow_memory", "changing_VCPUs",
    "changing_NVRAM", "clone", "copy", "export", "metadata_export",
    "provision"])
_SNAPSHOT_OPS = frozenset(["revert", "clone", "copy", "export", "destroy",
                           "hard_shutdown", "metadata_export"])
_CONTROL_DOMAIN_OPS = frozenset([
    "data_source_op", "changing_memory_live", "awaiting_memory_live",
    "metadata_export", "changing_dynamic_range", "changing_memory_limits",
    "changing_static_range", "start", "start_on", "changing_VCPUs",
    "destroy"])
# Not listed in allowed_operations (XAPI leaves these out).
_NOT_ADVERTISED = frozenset([
    "create_template", "power_state_reset", "csvm", "get_boot_record",
    "send_sysrq", "send_trigger", "query_services", "shutdown",
    "call_plugin", "changing_memory_live", "awaiting_memory_live",
    "changing_memory_limits", "changing_shadow_memory_live",
    "changing_VCPUs", "assert_operation_valid", "data_source_op",
    "update_allowed_operations", "import", "reverting"])


def allowed_states(vm, op):
    if op in ("changing_VCPUs", "changing_static_range",
              "changing_memory_limits"):
        return (HALTED, RUNNING) if vm["is_control_domain"] else (HALTED,)
    if op in ("clone", "copy"):
        return (HALTED, SUSPENDED) if vm["is_a_snapshot"] else (HALTED,)
    return _STATES[op]


def allowed_concurrently(op, current):
    ops = set(current.values())
    if any(op in g and ops <= g for g in _TOGETHER):
        return True
    if op == "hard_shutdown":
        return "hard_shutdown" not in ops
    if op == "hard_reboot":
        return not ops & {"hard_shutdown", "hard_reboot"}
    return len(ops) == 1 and (next(iter(ops)), op) in _BESIDE


def _is_default_template(vm):
    flag = vm["other_config"].get("default_template", "")
    return vm["is_default_template"] or flag.lower() in ("true", "1")


def _feature(guest_metrics, name):
    return bool(guest_metrics) and guest_metrics["other"].get(name) == "1"


def operation_error(ref, vm, op, metrics=None, guest_metrics=None,
                    strict=True):
    """The XenAPIError ``op`` would meet on this VM now, or None."""
    if op in vm["blocked_operations"]:
        return XenAPIError("OPERATION_BLOCKED", ref,
                           vm["blocked_operations"][op])
    states = allowed_states(vm, op)
    if vm["power_state"] not in states:
        return XenAPIError("VM_BAD_POWER_STATE", ref,
                           ", ".join(s.lower() for s in states),
                           vm["power_state"].lower())
    current = vm["current_operations"]
    if current and not allowed_concurrently(op, current):
        if len(current) == 1:
            (task, running), = current.items()
        else:
            task = "{%s}" % ",".join(current)
            running = "{%s}" % ",".join(current.values())
        return XenAPIError("OTHER_OPERATION_IN_PROGRESS", "VM", ref, running,
                           task)
    if vm["is_a_template"] and not vm["is_a_snapshot"]:
        if op not in _TEMPLATE_OPS and not (
                op in ("destroy", "migrate_send")
                and not _is_default_template(vm)):
            return XenAPIError("VM_IS_TEMPLATE", ref, op)
    if vm["is_a_snapshot"] and op not in _SNAPSHOT_OPS:
        return XenAPIError("VM_IS_SNAPSHOT", ref, op)
    if op == "provision" and not vm["is_a_template"]:
        return XenAPIError("ONLY_PROVISION_TEMPLATE")
    if op == "revert" and not vm["is_a_snapshot"]:
        return XenAPIError("ONLY_REVERT_SNAPSHOT")
    if vm["is_control_domain"]:
        if op in ("changing_VCPUs", "destroy") and vm["domid"] == 0:
            return XenAPIError("OPERATION_NOT_ALLOWED",
                               "This operation is not allowed on dom0")
        if op not in _CONTROL_DOMAIN_OPS:
            return XenAPIError(
                "OPERATION_NOT_ALLOWED",
                "This operation is not allowed on a control domain")
    live = vm["power_state"] in (RUNNING, PAUSED)
    pv = bool(metrics) and metrics["current_domain_type"] in (
        "pv", "pvh", "pv_in_pvh")
    implicit = not live or pv or bool(
        guest_metrics and guest_metrics["PV_drivers_detected"])
    if op in ("suspend", "checkpoint", "pool_migrate", "migrate_send") \
            and live:
        reason = (guest_metrics or {}).get("other", {}).get(
            "data-cant-suspend-reason")
        if reason:
            return XenAPIError("VM_NON_SUSPENDABLE", ref, reason)
        if strict and not implicit and not _feature(guest_metrics,
                                                    "feature-suspend"):
            return XenAPIError("VM_LACKS_FEATURE", ref)
    elif not implicit and strict and (
            (op == "clean_shutdown"
             and not _feature(guest_metrics, "feature-shutdown")
             and not _feature(guest_metrics, "feature-poweroff"))
            or (op == "clean_reboot"
                and not _feature(guest_metrics, "feature-shutdown")
                and not _feature(guest_metrics, "feature-reboot"))):
        return XenAPIError("VM_LACKS_FEATURE", ref)
    if op in ("suspend", "checkpoint", "pool_migrate", "migrate_send") \
            and vm.get("attached_PCIs"):
        return XenAPIError("VM_HAS_PCI_ATTACHED", ref)
    if op == "snapshot_with_quiesce":
        return XenAPIError("VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED", ref)
    if op == "query_services" and \
            vm["other_config"].get("is_system_domain") not in ("true", "1"):
        return XenAPIError("NOT_SYSTEM_DOMAIN", ref)
    if op == "create_vtpm" and vm["VTPMs"]:
        return XenAPIError("VTPM_MAX_AMOUNT_REACHED", str(len(vm["VTPMs"])))
    return None


def allowed_operations(ref, vm, operations, metrics=None,
                       guest_metrics=None):
    """The advisory allowed_operations list: every operation that would
    pass its check now."""
    return [op for op in operations if op not in _NOT_ADVERTISED
            and operation_error(ref, vm, op, metrics, guest_metrics) is None]
