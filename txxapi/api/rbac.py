"""
Role-based access control: the permission a call needs and whether the
calling session holds it.  Permission names are lower-cased wire names,
as in XAPI; the roles that grant each come from the datamodel (messages,
guarded map keys, HTTP actions, extras).

A session's permissions are fixed at login, so each is turned into a set
once and kept until the session ends.
"""

from txxapi.datamodel import MODEL
from txxapi.datamodel import permissions as P
from txxapi.datamodel.roles import ALL_ROLES
from txxapi.errors import XenAPIError


def _tables():
    roles_of = {}
    spelling = {}
    guards = {}

    def add(name, roles):
        roles_of[name.lower()] = roles
        spelling[name.lower()] = name

    for m in MODEL.messages.values():
        add(m.wire_name, m.roles)
        keys = P.MAP_KEY_ROLES.get((m.cls.name, m.field.name)) \
            if m.kind in ("add_to", "remove_from") else None
        if keys:
            guards[m.wire_name] = [
                (k, P.key_permission(m.wire_name, k).lower())
                for k, _ in keys]
            for k, roles in keys:
                add(P.key_permission(m.wire_name, k), roles)
    for name, roles in P.http_permissions():
        add(name, roles)
    for name, roles in P.EXTRA.items():
        add(name, roles)
    return roles_of, spelling, guards


# permission -> roles holding it; permission -> its name as XAPI spells
# it before lower casing; wire name -> [(guarded key, permission)]
ROLES_OF, SPELLING, KEY_GUARDS = _tables()


def permissions_of(role):
    """Every permission a role grants (the subroles XAPI lists for it)."""
    return sorted(p for p, roles in ROLES_OF.items() if role in roles)


def holders(permission):
    """The roles granting a permission, in XAPI's order, as its refusal
    names them."""
    roles = ROLES_OF.get(permission, ())
    return ", ".join(r for r in ALL_ROLES if r in roles)


def permission_of(message, args):
    """The permission a call needs: its message's, or a guarded key's
    when its ``key`` argument is one (a trailing * matches a prefix)."""
    guards = KEY_GUARDS.get(message.wire_name)
    if guards:
        key = args[1]
        for declared, permission in guards:
            if declared.endswith("*"):
                if key.startswith(declared[:-1]):
                    return permission
            elif key == declared:
                return permission
    return message.permission


def denied(permission):
    return XenAPIError(
        "RBAC_PERMISSION_DENIED", permission,
        "No permission in user session. (Roles with this permission: %s)"
        % holders(permission))


class Permissions:
    """Sessions' permission sets, built once per session."""

    def __init__(self, db):
        self.db = db
        self._sets = {}

    def allows(self, session, permission):
        fields = self.db.fields("session", session)
        if fields["is_local_superuser"]:
            return True
        held = self._sets.get(session)
        if held is None:
            held = self._sets[session] = frozenset(fields["rbac_permissions"])
        return permission in held

    def check(self, session, permission):
        """RBAC_PERMISSION_DENIED unless the session holds it."""
        if not self.allows(session, permission):
            raise denied(permission)

    def forget(self, session):
        self._sets.pop(session, None)
