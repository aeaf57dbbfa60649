"""
API errors as ``xe`` prints them: a sentence saying what went wrong, then
one ``name: value`` line per parameter, the names the datamodel gives the
error's parameters (``<extra>`` for a value it does not name, ``<unknown>``
for a name without a value), as XAPI's CLI lays them out.  The sentences
are this package's own, for the errors a command line commonly meets; any
other code is sent as the protocol's Error command, which the client
prints in its generic form.
"""

from txxapi.datamodel import MODEL

DESCRIPTIONS = {
    # Objects and arguments.
    "UUID_INVALID": "No object of this class has the uuid given.",
    "HANDLE_INVALID": "The reference does not name an existing object; it "
                      "may just have been destroyed.",
    "INVALID_VALUE": "A value given is not one this field accepts.",
    "FIELD_TYPE_ERROR": "A field was given a value of the wrong type.",
    "MAP_DUPLICATE_KEY": "The map already has this key; remove it first to "
                         "give it another value.",
    "VALUE_NOT_SUPPORTED": "This value cannot be used here.",
    "INVALID_IP_ADDRESS_SPECIFIED": "A parameter that must be an IP address "
                                    "is not one.",
    "OBJECT_NOLONGER_EXISTS": "The object went away during the operation.",
    "DEVICE_ALREADY_EXISTS": "The VM already has a device at this position.",
    "INVALID_DEVICE": "This is not a device name the VM can use.",
    "VBD_CDS_MUST_BE_READONLY": "A CD drive must be read-only (mode=ro).",
    "DEVICE_ALREADY_ATTACHED": "The device is attached already.",
    "DEVICE_ALREADY_DETACHED": "The device is not attached.",
    # The API and its sessions.
    "MESSAGE_METHOD_UNKNOWN": "The server has no call of this name.",
    "MESSAGE_PARAMETER_COUNT_MISMATCH": "The call was given the wrong number "
                                        "of parameters.",
    "NOT_IMPLEMENTED": "The server does not do this yet.",
    "INTERNAL_ERROR": "The server failed in a way it did not expect.",
    "SESSION_INVALID": "The session is not (or is no longer) logged in.",
    "RBAC_PERMISSION_DENIED": "The session's roles do not allow this "
                              "operation.",
    "PERMISSION_DENIED": "The caller is not allowed to do this.",
    "HOST_IS_SLAVE": "This host is a pool member, not its master: send "
                     "commands to the master.",
    "HOST_STILL_BOOTING": "The host's agent has not finished starting.",
    "LICENCE_RESTRICTION": "The host's licence does not include this "
                           "feature.",
    "EVENTS_LOST": "Events were dropped before they could be read; read the "
                   "objects again.",
    # Tasks and operations.
    "TASK_CANCELLED": "The task was cancelled before it finished.",
    "CLIENT_ERROR": "The client failed while sending or receiving the data.",
    "OPERATION_NOT_ALLOWED": "The operation is not allowed in the object's "
                             "present state.",
    "OTHER_OPERATION_IN_PROGRESS": "Another operation on this object is "
                                   "still running.",
    "OPERATION_BLOCKED": "An operator has blocked this operation on the "
                         "object.",
    # VMs.
    "VM_BAD_POWER_STATE": "The VM is not in a power state this operation "
                          "can start from.",
    "VM_IS_TEMPLATE": "This operation cannot be done on a template.",
    "VM_IS_SNAPSHOT": "This operation cannot be done on a snapshot.",
    "VM_NOT_RESIDENT_HERE": "The VM is not running on this host.",
    "VM_REQUIRES_SR": "The VM needs an SR this host cannot reach.",
    "VM_REQUIRES_NETWORK": "The VM needs a network this host has no "
                           "interface on.",
    "VM_NO_EMPTY_CD_VBD": "The VM has no empty CD drive.",
    "VM_NO_SUSPEND_SR": "There is no SR to write the VM's suspend image "
                        "to.",
    "VM_MISSING_PV_DRIVERS": "The VM's guest has no PV drivers running, "
                             "which this operation needs.",
    "VM_HAS_VGPU": "The VM has a virtual GPU, which prevents this.",
    "VM_MIGRATE_FAILED": "The VM could not be migrated.",
    "VM_SHUTDOWN_TIMEOUT": "The VM did not shut down in the time allowed.",
    "HOST_NOT_ENOUGH_FREE_MEMORY": "The host does not have the free memory "
                                   "the VM needs.",
    "NO_HOSTS_AVAILABLE": "No host of the pool can run the VM.",
    "IMPORT_ERROR": "The import could not be completed.",
    "IMPORT_INCOMPATIBLE_VERSION": "The file was exported by a newer "
                                   "version than this server reads.",
    # Hosts and the pool.
    "HOST_OFFLINE": "The host is not responding.",
    "VMS_FAILED_TO_COOPERATE": "Some VMs did not shut down when asked.",
    "HOST_DISABLED": "The host is disabled: it starts no VMs.",
    "HOST_IN_USE": "The host still runs VMs or holds resources.",
    "HOST_NAME_INVALID": "The host name cannot be resolved.",
    "CANNOT_CONTACT_HOST": "The host could not be reached.",
    "CANNOT_EVACUATE_HOST": "Some VMs cannot be moved off the host.",
    "HA_IS_ENABLED": "High availability is on; turn it off first.",
    "HA_NOT_ENABLED": "High availability is not on.",
    "JOINING_HOST_CANNOT_HAVE_RUNNING_VMS": "The joining host still runs "
                                            "VMs.",
    "JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS": "The joining host has shared "
                                              "SRs.",
    "JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS": "The joining host is "
                                                    "the master of other "
                                                    "hosts.",
    "JOINING_HOST_CONNECTION_FAILED": "The joining host could not reach "
                                      "the master.",
    "POOL_JOINING_HOST_MUST_HAVE_SAME_PRODUCT_VERSION": "The joining host "
                                                        "runs another "
                                                        "product version.",
    "HOST_CANNOT_DESTROY_SELF": "A host cannot remove itself from the "
                                "pool.",
    # Storage.
    "SR_FULL": "The SR has no room for this.",
    "SR_HAS_PBD": "The SR is still attached to hosts; unplug its PBDs "
                  "first.",
    "SR_NOT_EMPTY": "The SR still has disks on it.",
    "SR_BACKEND_FAILURE": "The storage backend reported a failure.",
    "SR_UNKNOWN_DRIVER": "There is no storage driver of this type.",
    "SR_OPERATION_NOT_SUPPORTED": "The SR's driver cannot do this.",
    "VDI_IN_USE": "The disk is in use by a running VM or an operation.",
    "VDI_MISSING": "The disk's data is missing from its SR.",
    "VDI_READONLY": "The disk is read-only.",
    "VDI_IS_A_PHYSICAL_DEVICE": "The disk is a physical device, which this "
                                "operation cannot handle.",
    "PBD_EXISTS": "The host already has a PBD for this SR.",
    "DEFAULT_SR_NOT_FOUND": "The pool's default SR is not set or no longer "
                            "exists.",
    # Networks.
    "NETWORK_CONTAINS_PIF": "The network still has physical interfaces.",
    "NETWORK_CONTAINS_VIF": "The network still has VMs' interfaces.",
    "PIF_IS_PHYSICAL": "This cannot be done to a physical interface.",
    "PIF_IS_MANAGEMENT_INTERFACE": "The interface carries the host's "
                                   "management traffic.",
    "PIF_CONFIGURATION_ERROR": "The interface's configuration is not "
                               "usable.",
    "PIF_DOES_NOT_ALLOW_UNPLUG": "The interface may not be unplugged.",
    # Access.
    "SUBJECT_CANNOT_BE_RESOLVED": "The external directory does not know "
                                  "this name.",
    "SUBJECT_ALREADY_EXISTS": "This user or group already has access.",
    "ROLE_NOT_FOUND": "There is no such role.",
    "ROLE_ALREADY_EXISTS": "The subject already has this role.",
    "AUTH_IS_DISABLED": "External authentication is not enabled on this "
                        "host.",
    "MESSAGE_DEPRECATED": "This call is no longer supported.",
}


def _paired(names, values):
    lines = []
    for i in range(max(len(names), len(values))):
        name = names[i] if i < len(names) else "<extra>"
        value = values[i] if i < len(values) else "<unknown>"
        lines.append("%s: %s" % (name, value))
    return lines


def error_lines(code, params):
    """The lines xe prints for the error, or None when it is printed
    through the Error command."""
    text = DESCRIPTIONS.get(code)
    if text is None:
        return None
    # VMS_FAILED_TO_COOPERATE names each VM (XAPI's exception to the
    # table).
    names = ["VM"] * len(params) if code == "VMS_FAILED_TO_COOPERATE" \
        else list(MODEL.errors.get(code, ()))
    return [text] + _paired(names, params)
