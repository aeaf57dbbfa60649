"""
The external authentication of this host: enabling and disabling it,
the directory look-ups of the auth class, and the login of a user the
directory knows, as XAPI's xapi_host, xapi_auth and xapi_session do it.

Directory calls block, so they run on a thread pool of their own, never
on the reactor, and errors keep XAPI's codes: an unknown subject is
SUBJECT_CANNOT_BE_RESOLVED, a failing directory AUTH_SERVICE_ERROR.
"""

import importlib.util
import json
import os

from twisted.internet import defer
from twisted.logger import Logger

from txxapi.api.rbac import permissions_of
from txxapi.errors import XenAPIError
from txxapi.extauth.cache import DirectoryCache
from txxapi.extauth.pam import AuthFailure, NotResolved, PamDirectory
from txxapi.workers import Workers

log = Logger()

AD = "AD"
AD_UNAVAILABLE = "Active Directory is not available on this host"
AD_SECRET = "extauth-ad.secret"
MAX_THREADS = 4
# How long a subject's details and groups are kept (XAPI's revalidation
# interval: they are as fresh as the sessions' checks).
CACHE_TTL = 300.0
# The look-ups whose answers the cache keeps, and under which name.
CACHED = {"subject_information": "information", "group_membership": "groups"}

# The fields whose value "false", and only that, leaves an account usable.
SUSPENSION_FIELDS = ("subject-account-disabled", "subject-account-expired",
                     "subject-account-locked", "subject-password-expired")


class LoginRefused(Exception):
    """A login the directory or the subject list refused: the error to
    answer, after the failed-login delay."""

    def __init__(self, code, *params):
        Exception.__init__(self, code, *params)
        self.error = XenAPIError(code, *params)


class ExternalAuth:
    def __init__(self, db, identity, reactor, checkers, data_dir,
                 ad_settings=None, workers=None, cache_ttl=CACHE_TTL):
        """``workers``: where directory look-ups run (by default a pool of
        MAX_THREADS threads, inline under a test Clock).  ``cache_ttl``:
        seconds the directory's answers of a subject are kept (0: none)."""
        self.db = db
        self.identity = identity
        self.reactor = reactor
        self.secret_path = os.path.join(data_dir, AD_SECRET)
        self.directories = {"PAM": PamDirectory(checkers)}
        ad = _active_directory(ad_settings)
        if ad is not None:
            self.directories[AD] = ad
        self.workers = workers or Workers(reactor, "extauth", MAX_THREADS)
        self.cache = DirectoryCache(reactor, cache_ttl)
        # Pool-wide enables and disables, one at a time (extauth/pool.py).
        self.pool_changes = defer.DeferredLock()
        db.listeners.append(self._changed)

    def _changed(self, record, _cls):
        # A "touch" is a session made through the subject, no change.
        if record[2] == "subject" and record[1] != "touch":
            self.cache.clear()

    def start(self):
        self.workers.start()

    def restore(self):
        """After a restart: the directory this host had joined."""
        if self.auth_type() != AD or AD not in self.directories:
            return
        fields = self.db.fields("host", self.identity.host_ref)
        try:
            with open(self.secret_path) as f:
                password = json.load(f)["machine"]
        except (OSError, ValueError, KeyError) as e:
            log.warn("Active Directory account lost: {error}", error=e)
            password = ""
        self.directories[AD].restore(fields["external_auth_configuration"],
                                     password)

    def stop(self):
        self.workers.stop()

    def _blocking(self, fn, *args):
        self.start()
        return self.workers.run(fn, *args)

    # -- which directory --------------------------------------------------------

    def auth_type(self, host=None):
        return self.db.get("host", host or self.identity.host_ref,
                           "external_auth_type")

    def directory(self):
        auth_type = self.auth_type()
        if auth_type == "":
            raise XenAPIError("AUTH_IS_DISABLED")
        if auth_type not in self.directories:
            raise XenAPIError("AUTH_UNKNOWN_TYPE", auth_type)
        return self.directories[auth_type]

    def ask(self, method, *args):
        """A directory look-up (a Deferred), with XAPI's errors."""
        directory = self.directory()
        generation = self.cache.generation
        d = self._blocking(getattr(directory, method), *args)
        if method in CACHED:
            # A fresh answer replaces what the cache had.
            d.addCallback(self._keep, CACHED[method], args[0], generation)

        def failed(f):
            if f.check(XenAPIError):
                return f
            if f.check(NotResolved, KeyError, ValueError):
                raise XenAPIError("SUBJECT_CANNOT_BE_RESOLVED")
            raise XenAPIError("AUTH_SERVICE_ERROR", str(f.value))
        return d.addErrback(failed)

    def _keep(self, value, kind, sid, generation):
        self.cache.put(kind, sid, value, generation)
        return value

    # -- enabling ---------------------------------------------------------------

    @defer.inlineCallbacks
    def enable(self, host, config, service_name, auth_type):
        """host.enable_external_auth: on this host (a Deferred)."""
        fields = self.db.fields("host", host)
        current = fields["external_auth_type"]
        if current != "":
            raise XenAPIError("AUTH_ALREADY_ENABLED", current,
                              fields["external_auth_service_name"])
        if auth_type == AD and AD not in self.directories:
            raise XenAPIError("AUTH_ENABLE_FAILED_UNAVAILABLE",
                              AD_UNAVAILABLE)
        if auth_type not in self.directories:
            raise XenAPIError("AUTH_UNKNOWN_TYPE", auth_type)
        # The PAM directory keeps no configuration (XAPI's stores none).
        configuration = {}
        if auth_type == AD:
            configuration = yield self._join(host, config, service_name)
        if self.db.fields("host", host)["external_auth_type"] != "":
            raise XenAPIError("AUTH_ALREADY_ENABLED", current,
                              fields["external_auth_service_name"])
        self.cache.clear()
        self.db.update("host", host, {
            "external_auth_type": auth_type,
            "external_auth_service_name": service_name,
            "external_auth_configuration": configuration})

    @defer.inlineCallbacks
    def _join(self, host, config, domain):
        """Join the domain with the account given (never kept) and keep
        the computer account's password in a file only this user reads,
        never in the database."""
        from txxapi.extauth.ad import ADError, machine_name
        for key in ("user", "pass"):
            if key not in config:
                raise XenAPIError("AUTH_ENABLE_FAILED",
                                  "enable requires " + key)
        name = config.get("netbios_name") or machine_name(
            self.db.fields("host", host)["hostname"])
        try:
            configuration, machine_password = yield self._blocking(
                self.directories[AD].join, domain, config["user"],
                config["pass"], name, config.get("ou", ""))
        except ADError as e:
            raise XenAPIError(_code("AUTH_ENABLE_FAILED", e.tag), str(e))
        fd = os.open(self.secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"machine": machine_password}, f)
        return configuration

    @defer.inlineCallbacks
    def disable(self, host, config):
        """host.disable_external_auth (a Deferred): disabling a disabled
        one is no error, as in XAPI.  With an account in ``config``, the
        host's computer account is deleted from the domain too; if that
        fails the host is still disabled and the error says why."""
        from txxapi.extauth.ad import ADError
        failed = None
        if self.auth_type(host) == AD and AD in self.directories:
            ad = self.directories[AD]
            try:
                yield self._blocking(ad.leave, config.get("user"),
                                     config.get("pass", ""))
            except ADError as e:
                failed = e
                ad.leave()
            if os.path.exists(self.secret_path):
                os.unlink(self.secret_path)
        self.cache.clear()
        self.db.update("host", host, {"external_auth_type": "",
                                      "external_auth_service_name": "",
                                      "external_auth_configuration": {}})
        if failed is not None:
            tag = failed.tag if failed.tag in (
                "WRONG_CREDENTIALS", "PERMISSION_DENIED") else ""
            raise XenAPIError(_code("AUTH_DISABLE_FAILED", tag), str(failed))

    def forget(self):
        """A host leaving its pool forgets the domain; its computer
        account stays in the directory, as XAPI's eject leaves it (no
        account to delete it with is given)."""
        if AD in self.directories:
            self.directories[AD].leave()
        if os.path.exists(self.secret_path):
            os.unlink(self.secret_path)
        self.cache.clear()

    # -- login ------------------------------------------------------------------

    def login(self, user, password, origin):
        """(subject ref, subject identifier, subject name, permissions) of
        a user the directory authenticates and a subject lets in; else
        LoginRefused with XAPI's error (a failing directory refuses the
        login as XAPI does, naming the failure)."""
        def failed(f):
            if f.check(LoginRefused):
                return f
            raise LoginRefused("SESSION_AUTHORIZATION_FAILED", user,
                               str(f.value))
        return self._login(user, password, origin).addErrback(failed)

    @defer.inlineCallbacks
    def _login(self, user, password, origin):
        try:
            directory = self.directory()
        except XenAPIError as e:
            raise LoginRefused("SESSION_AUTHORIZATION_FAILED", user,
                               e.description[0])
        generation = self.cache.generation
        try:
            sid = yield self._blocking(directory.authenticate, user, password)
        except AuthFailure as e:
            raise LoginRefused("SESSION_AUTHENTICATION_FAILED", user, str(e))
        # The details the subject record or the cache has; the
        # directory's own if they say the account is suspended (they may
        # be older than a change that let it in again).
        info = self._subject_details(sid)
        if info is None:
            info = self.cache.get("information", sid)
        if info is None or suspended(info):
            try:
                info = yield self._blocking(directory.subject_information,
                                            sid)
            except (NotResolved, KeyError):
                info = {}
        if suspended(info):
            raise LoginRefused(
                "SESSION_AUTHORIZATION_FAILED", user,
                "User %s (subject_id %s, from %s) suspended in external "
                "directory" % (user, sid, origin))
        # Groups from the cache may let the user in; a refusal is the
        # directory's own (a group given since must count).
        groups = self.cache.get("groups", sid)
        subjects = [] if groups is None else self.subjects_of(sid, groups)
        try:
            if not subjects:
                groups = yield self._blocking(directory.group_membership,
                                              sid)
                subjects = self.subjects_of(sid, groups)
        except (NotResolved, KeyError):
            # XAPI's message names the origin and the identifier in this
            # order.
            raise LoginRefused(
                "SESSION_AUTHORIZATION_FAILED", user,
                "Failed to obtain the group membership closure for user %s "
                "(subject_id %s, from %s): user not found in external "
                "directory" % (user, origin, sid))
        if not subjects:
            raise LoginRefused(
                "SESSION_AUTHORIZATION_FAILED", user,
                "Subject %s (identifier %s, from %s) has no access rights in "
                "this pool" % (user, sid, origin))
        permissions = self.permissions_of_subjects(subjects)
        if not permissions:
            raise LoginRefused(
                "RBAC_PERMISSION_DENIED", "session.login_with_password",
                "Subject %s (identifier %s) has no roles in this pool"
                % (user, sid))
        self.cache.put("information", sid, info, generation)
        self.cache.put("groups", sid, groups, generation)
        return (subjects[0], sid, info.get("subject-name", user),
                permissions)

    def subjects_of(self, sid, groups):
        """The subjects that let in ``sid``, a member of ``groups``."""
        closure = set([sid] + list(groups))
        return [ref for ref, f in self.db.records("subject")
                if f["subject_identifier"] in closure]

    def _subject_details(self, sid):
        """What the subject record of ``sid`` keeps of its details."""
        for _, f in self.db.records("subject"):
            if f["subject_identifier"] == sid:
                return f["other_config"]
        return None

    def permissions_of_subjects(self, subjects):
        held = set()
        for subject in subjects:
            for role in self.db.get("subject", subject, "roles"):
                held.update(self.permissions_of_role(role))
        return sorted(held)

    def permissions_of_role(self, role):
        """A role's permissions: a top role's grants, or a permission
        role's own name."""
        if not self.db.exists("role", role):
            return []
        fields = self.db.fields("role", role)
        if fields["subroles"]:
            return permissions_of(fields["name_label"])
        return [fields["name_label"]]


def _code(prefix, tag):
    """XAPI's error for a directory's failure: the prefix with the
    directory's reason (WRONG_CREDENTIALS...), or bare."""
    return prefix + "_" + tag if tag else prefix


def suspended(info):
    """Whether directory details say the account may not log in."""
    return any(info.get(k, "true").lower() != "false"
               for k in SUSPENSION_FIELDS)


def _active_directory(settings):
    """The AD directory, if python-ldap and dnspython are here: made at
    its first use, which imports them."""
    missing = [m for m in ("ldap", "dns") if importlib.util.find_spec(m)
               is None]
    if missing:
        log.info("Active Directory unavailable: no {modules}",
                 modules=", ".join(missing))
        return None
    return _DirectoryOnFirstUse(settings)


class _DirectoryOnFirstUse:
    """Stands for txxapi.extauth.ad.ADDirectory until something of it is
    asked for."""

    auth_type = AD

    def __init__(self, settings):
        self._settings = settings
        self._directory = None

    def __getattr__(self, name):
        if self._directory is None:
            from txxapi.extauth import ad
            self._directory = ad.ADDirectory(self._settings or ad.Settings())
        return getattr(self._directory, name)
