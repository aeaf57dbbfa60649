"""
Host operations, for operation marking: XAPI's rule that an operation
bringing VMs to a host (provision, vm_resume, vm_migrate) and one taking
them away (evacuate, reboot, shutdown) exclude each other, and that a
reboot, shutdown or update excludes the other two (OTHER_OPERATION_IN_
PROGRESS ["host", host, op, task]).  Everything else may run together.
The advisory allowed_operations is left as it is.
"""

from txxapi import operations
from txxapi.errors import XenAPIError

CREATING = frozenset(["provision", "vm_resume", "vm_migrate"])
REMOVING = frozenset(["evacuate", "reboot", "shutdown"])
# operation in progress -> the operations it excludes
EXCLUDES = {"reboot": ("shutdown", "apply_updates"),
            "shutdown": ("reboot", "apply_updates"),
            "apply_updates": ("reboot", "shutdown", "enable"),
            "provision": ("provision",)}


def host_error(db, ref, op):
    current = sorted(db.fields("host", ref)["current_operations"].items())

    def busy(task, running):
        return XenAPIError("OTHER_OPERATION_IN_PROGRESS", "host", ref,
                           running, task)
    if op in CREATING or op in REMOVING:
        other = REMOVING if op in CREATING else CREATING
        for task, running in current:
            if running in other:
                return busy(task, running)
    for task, running in current:
        if op in EXCLUDES.get(running, ()):
            return busy(task, running)
    return None


def assert_not_evacuating(ctx, host):
    """VM.start_on refuses a host being evacuated, as XAPI's does."""
    if "evacuate" in ctx.db.fields("host", host)["current_operations"] \
            .values():
        raise XenAPIError("HOST_EVACUATE_IN_PROGRESS", host)


def _unchanged(db, ref):
    return db.fields("host", ref)["allowed_operations"]


operations.rules("host", host_error, _unchanged)
