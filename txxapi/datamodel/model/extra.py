"""
Facts the published interface description leaves out: parameter defaults
(trailing parameters a caller may omit), the hidden calls hosts make to
each other, and internal fields.  Hidden messages answer on the wire but
are not listed by system.listMethods; internal fields are stored but never
appear in records.
"""

from txxapi.datamodel.roles import NOBODY, POOL_ADMIN

# (class, message) -> {parameter name: default wire value}
PARAM_DEFAULTS = {
    ("session", "login_with_password"): {"version": "1.1", "originator": ""},
    ("VM", "snapshot"): {"ignore_vdis": []},
}

# class -> ((message, ((type, name), ...), result, roles, session), ...)
HIDDEN_MESSAGES = {
    "session": (
        ("slave_login", (("host ref", "host"), ("string", "psecret")),
         "session ref", NOBODY, False),
        ("slave_local_login", (("string", "psecret"),),
         "session ref", NOBODY, False),
    ),
    "pool": (
        ("hello", (("string", "host_uuid"), ("string", "host_address")),
         "string", POOL_ADMIN, True),
        ("is_slave", (("host ref", "host"),), "bool", POOL_ADMIN, True),
    ),
    # The two-phase commit of a new master (txxapi.pool.transition),
    # made with local sessions of the pool secret.
    "host": (
        ("propose_new_master", (("string", "address"), ("bool", "manual")),
         "void", POOL_ADMIN, True),
        ("commit_new_master", (("string", "address"),), "void",
         POOL_ADMIN, True),
        ("abort_new_master", (("string", "address"),), "void",
         POOL_ADMIN, True),
        ("is_in_emergency_mode", (), "bool", POOL_ADMIN, True),
        # pool.sync_database's call on each host (txxapi.impl.pool_sync).
        ("request_backup", (("host ref", "host"), ("int", "generation"),
                            ("bool", "force")), "void", POOL_ADMIN, True),
    ),
}

# class -> ((field, type), ...): internal fields, runtime-only.
INTERNAL_FIELDS = {
    "task": (("session", "session ref"), ("forwarded", "bool"),
             ("forwarded_to", "host ref")),
    "PCI": (("attached_VMs", "VM ref set"),),
    # The backend's port of a console, for the console handler (XAPI's
    # Console.port).
    "console": (("port", "int"),),
}
