"""
Keeping external logins honest after the fact, as XAPI's periodic jobs
do: every interval (XAPI's session_revalidation_interval, 300 s) the
subjects' directory details are refreshed into their other_config, and
each session of an externally authenticated user is checked again: a
user the directory now calls disabled, locked or expired, who is gone
from it, or who is no longer let in by any subject, loses the session.
So is every external session once external authentication is disabled.

A directory that cannot be reached leaves sessions alone (a flapping
link must not log everybody out); the next pass tries again.
"""

from twisted.internet import defer, task
from twisted.logger import Logger

from txxapi.errors import XenAPIError
from txxapi.events import update_changed
from txxapi.extauth.service import suspended

log = Logger()

INTERVAL = 300.0


class Revalidator:
    def __init__(self, db, extauth, sessions, reactor, interval=INTERVAL):
        self.db = db
        self.extauth = extauth
        self.sessions = sessions
        self.interval = interval
        self._loop = task.LoopingCall(self._pass)
        self._loop.clock = reactor

    def start(self):
        if self.interval > 0:
            self._loop.start(self.interval, now=False)

    def stop(self):
        if self._loop.running:
            self._loop.stop()

    def _pass(self):
        # A pass that fails is logged; the loop goes on.
        return self.run().addErrback(
            lambda f: log.failure("session revalidation failed", f))

    def _external_sessions(self):
        return [(ref, f) for ref, f in self.db.records("session")
                if f["auth_user_sid"] and not f["pool"]
                and not f["is_local_superuser"]]

    @defer.inlineCallbacks
    def run(self):
        """One pass (a Deferred): the master's (subjects are the pool's,
        and slaves keep no sessions of users)."""
        if not self.extauth.identity.is_master:
            return
        external = self._external_sessions()
        if self.extauth.auth_type() == "":
            for ref, _ in external:
                self.sessions.logout(ref)
            return
        yield self._refresh_subjects()
        verdicts = {}
        for ref, fields in external:
            sid = fields["auth_user_sid"]
            if sid not in verdicts:
                verdicts[sid] = yield self._still_allowed(sid)
            if verdicts[sid] is False and self.db.exists("session", ref):
                log.info("session of {user} revalidated out",
                         user=fields["auth_user_name"])
                self.sessions.logout(ref)

    @defer.inlineCallbacks
    def _refresh_subjects(self):
        for ref, fields in self.db.records("subject"):
            sid = fields["subject_identifier"]
            try:
                info = yield self.extauth.ask("subject_information", sid)
            except XenAPIError:
                continue    # unknown now, or unreachable: keep what we had
            if self.db.exists("subject", ref):
                merged = dict(self.db.get("subject", ref, "other_config"))
                merged.update(info)
                # Unchanged details write nothing (no event every pass).
                update_changed(self.db, "subject", ref,
                               {"other_config": merged})

    @defer.inlineCallbacks
    def _still_allowed(self, sid):
        """True, False, or None when the directory could not say."""
        try:
            info = yield self.extauth.ask("subject_information", sid)
            groups = yield self.extauth.ask("group_membership", sid)
        except XenAPIError as e:
            return False if e.description[0] == \
                "SUBJECT_CANNOT_BE_RESOLVED" else None
        if suspended(info):
            return False
        return bool(self.extauth.subjects_of(sid, groups))
