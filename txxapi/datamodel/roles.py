"""
The user-visible RBAC roles and the role lists messages carry.

Roles nest: each grants everything the ones after it in ALL_ROLES grant,
except ``client-cert``, the internal role of client-certificate logins,
which only appears where a message names it.
"""

ALL_ROLES = ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin",
             "vm-operator", "client-cert", "read-only")

NOBODY = ()
POOL_ADMIN = ALL_ROLES[:1]
POOL_OPERATOR = ALL_ROLES[:2]
POOL_OPERATOR_CC = POOL_OPERATOR + ("client-cert",)
VM_POWER_ADMIN = ALL_ROLES[:3]
VM_POWER_ADMIN_CC = VM_POWER_ADMIN + ("client-cert",)
VM_ADMIN = ALL_ROLES[:4]
VM_OPERATOR = ALL_ROLES[:5]
VM_OPERATOR_CC = ALL_ROLES[:6]
READ_ONLY = ALL_ROLES
