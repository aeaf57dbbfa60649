"""
The PAM directory, as XAPI's PAM/NSS plugin (authx.ml) answers: the
password through the host's own checker (PAM, or the passwd file the
server was started with), identities through NSS.  A user is ``u<uid>``,
a group ``g<gid>``; a user's groups are those ``id -G`` lists.

Every method blocks (PAM, NSS) and runs on the directory's thread pool.
"""

import grp
import os
import pwd

from twisted.cred import credentials, error as cred_error


class AuthFailure(Exception):
    """The directory refused the credentials (its message)."""


class NotResolved(Exception):
    """No such subject in the directory."""


class PamDirectory:
    auth_type = "PAM"

    def __init__(self, checkers):
        self.checkers = checkers

    # -- identities -----------------------------------------------------------

    def subject_identifier(self, name):
        try:
            return "u%d" % pwd.getpwnam(name).pw_uid
        except KeyError:
            pass
        try:
            return "g%d" % grp.getgrnam(name).gr_gid
        except KeyError:
            raise NotResolved(name)

    @staticmethod
    def _number(sid, kind):
        if len(sid) < 2 or sid[0] != kind or not sid[1:].isdigit():
            raise NotResolved(sid)
        return int(sid[1:])

    def subject_information(self, sid):
        if sid[:1] == "u":
            try:
                p = pwd.getpwuid(self._number(sid, "u"))
            except KeyError:
                raise NotResolved(sid)
            disabled = p.pw_passwd[:1] in ("", "*", "!")
            return {
                "subject-name": p.pw_name,
                "subject-uid": "u%d" % p.pw_uid,
                "subject-gid": "g%d" % p.pw_gid,
                "subject-gecos": p.pw_gecos,
                "subject-displayname": p.pw_gecos or p.pw_name,
                "subject-is-group": "false",
                "subject-account-disabled": str(disabled).lower(),
                "subject-account-expired": "false",
                "subject-account-locked": "false",
                "subject-password-expired": "false",
            }
        try:
            g = grp.getgrgid(self._number(sid, "g"))
        except KeyError:
            raise NotResolved(sid)
        return {"subject-name": g.gr_name, "subject-uid": "g%d" % g.gr_gid,
                "subject-gid": "g%d" % g.gr_gid, "subject-is-group": "true"}

    def group_membership(self, sid):
        if sid[:1] == "g":
            try:
                return ["g%d" % grp.getgrgid(self._number(sid, "g")).gr_gid]
            except KeyError:
                raise NotResolved(sid)
        try:
            p = pwd.getpwuid(self._number(sid, "u"))
        except KeyError:
            raise NotResolved(sid)
        return ["g%d" % gid for gid in os.getgrouplist(p.pw_name, p.pw_gid)]

    # -- authentication -------------------------------------------------------

    def authenticate(self, user, password):
        """The subject identifier of a user whose password is right."""
        creds = credentials.UsernamePassword(user.encode(), password.encode())
        reason = "Authentication failure"
        for checker in self.checkers:
            try:
                checker.check_blocking(creds)
                break
            except cred_error.UnauthorizedLogin as e:
                reason = str(e) or reason
        else:
            raise AuthFailure(reason)
        try:
            return self.subject_identifier(user)
        except NotResolved:
            raise AuthFailure("Could not find either the user id or the "
                              "group id for '%s'" % user)
