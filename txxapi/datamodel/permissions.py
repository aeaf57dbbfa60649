"""
The permissions that are not a message's own, as XAPI's datamodel
declares them: map keys that need another role than the setter they go
through, the HTTP handlers' actions, and the extra task permission.

Every permission name is lower case; a guarded key's is
``<message>/key:<key>`` (a trailing ``*`` matches any suffix), an HTTP
action's ``http/<action>`` and a sub-action's ``http/<action>/<sub>``.
"""

from txxapi.datamodel.roles import (
    NOBODY, POOL_ADMIN, POOL_OPERATOR, POOL_OPERATOR_CC, READ_ONLY,
    VM_ADMIN, VM_OPERATOR, VM_POWER_ADMIN, VM_POWER_ADMIN_CC)

_FOLDERS = (("folder", VM_OPERATOR), ("XenCenter.CustomFields.*", VM_OPERATOR))

# (class, map field) -> the guarded keys of its add_to_/remove_from_
# messages, in the order XAPI matches them.
MAP_KEY_ROLES = {
    ("task", "other_config"): (("applies_to", VM_OPERATOR),
                               ("XenCenterUUID", VM_OPERATOR),
                               ("XenCenterMeddlingActionTitle", VM_OPERATOR)),
    ("network", "other_config"): _FOLDERS + (
        ("XenCenterCreateInProgress", VM_OPERATOR),),
    ("SR", "other_config"): _FOLDERS,
    ("VDI", "other_config"): _FOLDERS,
    ("host", "other_config"): _FOLDERS,
    ("pool", "other_config"): _FOLDERS + (("EMPTY_FOLDERS", VM_OPERATOR),),
    ("VM", "other_config"): (("hvm_serial", POOL_ADMIN), ("pci", POOL_ADMIN))
    + _FOLDERS,
    ("VM", "platform"): (("hvm_serial", POOL_ADMIN),),
}

HTTP_PREFIX = "http/"

# XAPI's HTTP actions: name -> (roles, {sub-action: roles}).
HTTP_ACTIONS = {
    "get_services": (READ_ONLY, {}),
    "post_services": (POOL_ADMIN, {}),
    "put_services": (POOL_ADMIN, {}),
    "post_remote_db_access": (POOL_ADMIN, {}),
    "post_remote_db_access_v2": (POOL_ADMIN, {}),
    "get_services_xenops": (VM_POWER_ADMIN, {}),
    "post_services_xenops": (VM_POWER_ADMIN_CC, {}),
    "put_services_xenops": (VM_POWER_ADMIN_CC, {}),
    "get_services_sm": (VM_POWER_ADMIN, {}),
    "post_services_sm": (VM_POWER_ADMIN, {}),
    "put_services_sm": (VM_POWER_ADMIN, {}),
    "put_import": (VM_ADMIN, {}),
    "put_import_metadata": (VM_ADMIN, {}),
    "put_import_raw_vdi": (VM_ADMIN, {}),
    "get_export": (VM_ADMIN, {}),
    "get_export_metadata": (VM_ADMIN, {}),
    "get_export_raw_vdi": (VM_ADMIN, {}),
    "connect_console": (VM_OPERATOR, {"host_console": POOL_ADMIN}),
    "connect_console_ws": (VM_OPERATOR, {"host_console_ws": POOL_ADMIN}),
    "get_root": (READ_ONLY, {}),
    "post_cli": (READ_ONLY, {}),
    "get_host_backup": (POOL_ADMIN, {}),
    "put_host_restore": (POOL_ADMIN, {}),
    "get_host_logs_download": (POOL_OPERATOR, {}),
    "put_pool_patch_upload": (POOL_OPERATOR, {}),
    "get_vncsnapshot": (VM_OPERATOR, {"host_console": POOL_ADMIN}),
    "get_pool_xml_db_sync": (POOL_ADMIN, {}),
    "put_pool_xml_db_sync": (POOL_ADMIN, {}),
    "get_config_sync": (POOL_ADMIN, {}),
    "get_system_status": (POOL_OPERATOR, {}),
    "vm_rrd": (READ_ONLY, {}),
    "get_vm_rrds": (READ_ONLY, {}),
    "host_rrd": (READ_ONLY, {}),
    "get_host_rrds": (READ_ONLY, {}),
    "sr_rrd": (READ_ONLY, {}),
    "rrd_updates": (READ_ONLY, {}),
    "rrd": (POOL_ADMIN, {}),
    "get_blob": (READ_ONLY, {}),
    "put_blob": (VM_POWER_ADMIN, {}),
    "put_messages": (VM_POWER_ADMIN, {}),
    "connect_remotecmd": (POOL_ADMIN, {}),
    "get_wlb_report": (READ_ONLY, {}),
    "get_wlb_diagnostics": (READ_ONLY, {}),
    "get_audit_log": (READ_ONLY, {}),
    "post_root": (READ_ONLY, {}),
    "post_RPC2": (READ_ONLY, {}),
    "post_json": (READ_ONLY, {}),
    "post_root_options": (READ_ONLY, {}),
    "post_json_options": (READ_ONLY, {}),
    "post_jsonrpc": (READ_ONLY, {}),
    "post_jsonrpc_options": (READ_ONLY, {}),
    "get_pool_update_download": (READ_ONLY, {}),
    "get_repository": (NOBODY, {}),
    "get_enabled_repository": (POOL_OPERATOR_CC, {}),
    "get_host_updates": (POOL_OPERATOR_CC, {}),
    "get_updates": (POOL_OPERATOR_CC, {}),
    "put_bundle": (POOL_OPERATOR, {}),
}

TASK_DESTROY_ANY = "task.destroy/any"

# Permissions of no message, key or handler.
EXTRA = {TASK_DESTROY_ANY: POOL_OPERATOR}


def key_permission(wire_name, key):
    """A guarded key's permission name, as XAPI spells it before lower
    casing (its role's uuid is the hash of this spelling)."""
    return "%s/key:%s" % (wire_name, key)


def http_permissions():
    """(name, roles) of every HTTP action and sub-action."""
    for action, (roles, subs) in HTTP_ACTIONS.items():
        name = HTTP_PREFIX + action
        yield name, roles
        for sub, sub_roles in subs.items():
            yield "%s/%s" % (name, sub), sub_roles
