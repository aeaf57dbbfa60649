"""
Role-based access control: the permission a call needs and whether the
calling session holds it.  Permission names are lower-cased wire names,
as in XAPI; the roles that grant each come from the datamodel.
"""

from txxapi.datamodel import MODEL
from txxapi.datamodel.roles import ALL_ROLES
from txxapi.errors import XenAPIError


def permissions_of(role):
    """Every permission a role grants (the subroles XAPI lists for it)."""
    return sorted(m.permission for m in MODEL.messages.values()
                  if role in m.roles)


def check(db, session, message, args):
    fields = db.fields("session", session)
    if fields["is_local_superuser"]:
        return
    permission = message.permission
    if permission in fields["rbac_permissions"]:
        return
    holders = ", ".join(r for r in ALL_ROLES if r in message.roles
                        and r != "client-cert")
    raise XenAPIError(
        "RBAC_PERMISSION_DENIED", permission,
        "No permission in user session. (Roles with this permission: %s)"
        % holders)
