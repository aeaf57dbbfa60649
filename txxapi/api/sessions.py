"""
Sessions: login through the cred portal, the per-call validity check, and
the periodic expiry XAPI applies (idle timeout, per-originator limits).

Session rows live in the database's non-persistent ``session`` table, so
session.get_record and friends come from the implicit API; they vanish
with a restart, as XAPI's do.
"""

import time

from twisted.cred import credentials, error as cred_error
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from txxapi.auth.realm import IXapiUser
from txxapi.api.rbac import Permissions
from txxapi.api.expiry import Expiring
from txxapi.extauth.service import LoginRefused
from txxapi.errors import XenAPIError
from txxapi.interfaces import ISessions
from txxapi.values import NULL_REF, DateTime

log = Logger()

LAST_ACTIVE_REFRESH = 600      # s: refresh last_active at most this often
INACTIVE_TIMEOUT = 86400       # s: idle sessions older than this expire
MAX_SESSIONS_POOL = 400
MAX_SESSIONS_ANONYMOUS = 400
MAX_SESSIONS_PER_GROUP = 500
GC_INTERVAL = 300
LOCAL_SUPERUSER = "root"


@implementer(ISessions)
class SessionManager(Expiring):
    interval = GC_INTERVAL

    def __init__(self, db, identity, tasks, portal, failure_delay=5.0,
                 clock=None):
        self.db = db
        self.identity = identity
        self.tasks = tasks
        self.portal = portal
        self.failure_delay = failure_delay
        self.clock = clock
        self.permissions = Permissions(db)
        self.extauth = None     # the ExternalAuth, once the server has one
        # ref -> monotonic time of the last last_active write
        self._touched = {}


    # -- login / logout -----------------------------------------------------

    def login(self, user, password, originator="", origin="Internal",
              trusted=False):
        """A session for a user (a Deferred): a local superuser (any local
        account, or only root once external authentication is on), else
        a subject of the external directory.  ``origin`` says where the
        call came from, as XAPI's refusals tell it.  A ``trusted`` caller
        (the local socket's) is a local superuser with no password
        checked."""
        self.identity.assert_master()
        if trusted:
            return defer.succeed(self.create(user, originator))
        auth_type = self.db.get("host", self.identity.host_ref,
                                "external_auth_type")
        if auth_type and user != LOCAL_SUPERUSER:
            d = defer.fail(cred_error.UnauthorizedLogin(
                "Local superuser must be " + LOCAL_SUPERUSER))
        else:
            creds = credentials.UsernamePassword(
                user.encode("utf-8"), password.encode("utf-8"))
            d = self.portal.login(creds, None, IXapiUser)

        def local(result):
            _iface, avatar, _logout = result
            return self.create(avatar.name, originator,
                               is_local_superuser=avatar.is_local_superuser)

        def not_local(f):
            f.trap(cred_error.UnauthorizedLogin, cred_error.UnhandledCredentials)
            if not auth_type:
                reason = f.getErrorMessage() or "Authentication failure"
                raise LoginRefused("SESSION_AUTHENTICATION_FAILED", user,
                                   reason)
            return self.extauth.login(user, password, origin).addCallback(
                external)

        def external(found):
            subject, sid, name, permissions = found
            return self.create(name, originator, is_local_superuser=False,
                               subject=subject, sid=sid,
                               permissions=permissions)

        def refused(f):
            f.trap(LoginRefused)
            # XAPI makes every failed login wait before answering.
            return self._delay().addCallback(
                lambda _: defer.fail(f.value.error))

        return d.addCallbacks(local, not_local).addErrback(refused)

    def local_login(self, user, password, trusted=False):
        """A slave's local session for root (XAPI's
        slave_local_login_with_password), checked against this host's own
        accounts (not for a ``trusted`` caller, root on the local socket):
        what an operator has when the master is gone.  Like the pool
        secret's local session it runs calls here, never forwarded."""
        if trusted:
            refusal = defer.succeed(None)   # root: nothing to check
        elif user != LOCAL_SUPERUSER:
            refusal = defer.fail(cred_error.UnauthorizedLogin(
                "Local superuser must be " + LOCAL_SUPERUSER))
        else:
            refusal = self.portal.login(credentials.UsernamePassword(
                user.encode("utf-8"), password.encode("utf-8")), None,
                IXapiUser)

        def refused(f):
            f.trap(cred_error.UnauthorizedLogin,
                   cred_error.UnhandledCredentials)
            reason = f.getErrorMessage() or "Authentication failure"
            return self._delay().addCallback(lambda _: defer.fail(
                XenAPIError("SESSION_AUTHENTICATION_FAILED", user, reason)))

        return refusal.addCallbacks(
            lambda _: self.create(user, pool=True), refused)

    def _delay(self):
        from twisted.internet import reactor
        return task.deferLater(self.clock or reactor, self.failure_delay,
                                 lambda: None)

    def create(self, user_name, originator="", is_local_superuser=True,
               pool=False, subject=NULL_REF, sid="", permissions=(),
               parent=NULL_REF):
        now = DateTime.now()
        ref = self.db.create("session", {
            "this_host": self.identity.host_ref,
            "this_user": NULL_REF,
            "last_active": now,
            "pool": pool,
            "is_local_superuser": is_local_superuser,
            "subject": subject,
            "validation_time": now,
            "auth_user_sid": sid,
            "auth_user_name": user_name,
            "rbac_permissions": list(permissions),
            "parent": parent,
            "originator": originator,
        })
        self._touched[ref] = time.monotonic()
        return ref

    def logout(self, ref):
        if self.db.exists("session", ref):
            for owned in self.db.where("task", session=ref):
                self.tasks.destroy(owned)
            self.db.delete("session", ref)
        self._touched.pop(ref, None)
        self.permissions.forget(ref)

    # -- checks ---------------------------------------------------------------

    def check(self, ref):
        """SESSION_INVALID unless ``ref`` is a live session."""
        if not isinstance(ref, str) or not self.db.exists("session", ref):
            raise XenAPIError("SESSION_INVALID", str(ref))
        fields = self.db.fields("session", ref)
        if not fields["pool"]:
            self.identity.assert_master()
        now = time.monotonic()
        if now - self._touched.get(ref, 0) > LAST_ACTIVE_REFRESH:
            self._touched[ref] = now
            self.db.update("session", ref, {"last_active": DateTime.now()})

    # -- expiry ---------------------------------------------------------------

    def expire(self, now=None):
        """Destroy idle sessions, then the least recently active of any
        group over its limit.  Sessions with unfinished tasks stay."""
        now = time.time() if now is None else now
        busy = {f["session"] for _, f in self._task_fields()
                if f["status"] in ("pending", "cancelling")}
        groups = {}
        for ref, row in list(self.db.table("session").rows.items()):
            if ref in busy:
                continue
            f = row.fields
            last = f["last_active"].timestamp()
            if now - last > INACTIVE_TIMEOUT:
                self.logout(ref)
                continue
            groups.setdefault(self._group(f), []).append((last, ref))
        for key, members in groups.items():
            limit = self._limit(key)
            if len(members) > limit:
                members.sort()
                for _, ref in members[:len(members) - limit]:
                    self.logout(ref)

    def _task_fields(self):
        return [(r, row.fields)
                for r, row in self.db.table("task").rows.items()]

    @staticmethod
    def _group(f):
        if f["pool"]:
            return ("pool",)
        user = f["auth_user_name"]
        if user in ("", "root"):
            if f["originator"]:
                return ("originator", f["originator"])
            return ("anonymous",)
        return ("user", user)

    @staticmethod
    def _limit(key):
        if key[0] == "pool":
            return MAX_SESSIONS_POOL
        if key[0] == "anonymous":
            return MAX_SESSIONS_ANONYMOUS
        return MAX_SESSIONS_PER_GROUP
