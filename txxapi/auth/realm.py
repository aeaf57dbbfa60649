"""The realm: an authenticated avatar id becomes who the session is for."""

from twisted.cred.portal import IRealm, Portal
from zope.interface import Interface, implementer


class IXapiUser(Interface):
    """Marker for the avatar a login yields."""


class XapiUser:
    def __init__(self, name, is_local_superuser=True, subject_sid=""):
        self.name = name
        self.is_local_superuser = is_local_superuser
        self.subject_sid = subject_sid


@implementer(IRealm)
class XapiRealm:
    def requestAvatar(self, avatarId, mind, *interfaces):
        name = avatarId.decode() if isinstance(avatarId, bytes) else avatarId
        return IXapiUser, XapiUser(name), lambda: None


def make_portal(checkers):
    return Portal(XapiRealm(), checkers)
