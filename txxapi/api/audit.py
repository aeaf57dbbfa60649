"""
The RBAC audit log: one line per call of a session that is not a local
superuser, allowed or denied, in XAPI's format (rbac_audit.ml):

    [<time>|audit|<host>|<n> <origin>|<task>|audit] ('trackid=<md5 of the
    session>' '<sid>' '<user>' 'ALLOWED'|'DENIED' 'OK'|'ERROR:<error>'|''
    'API'|'HTTP' '<action>' ((<arg> <name> <uuid> <ref>) ...))

Getters are not logged (nor event.from and the other noisy calls XAPI
leaves out).  Arguments are logged as XAPI picks them: descriptive names
with their values, references with the name and uuid of their object;
nothing else, so no password reaches the log.
"""

import hashlib
import itertools
import time

from twisted.logger import Logger

from txxapi.datamodel import MODEL
from txxapi.values import NULL_REF

log = Logger()

_NOT_AUDITED = frozenset((
    "session.local_logout", "session.logout", "event.next", "event.from",
    "http/get_rrd_updates", "http/rrd_updates", "http/post_remote_db_access",
    "host.tickle_heartbeat"))

_DESCRIPTIVE = frozenset(("name", "label", "description", "name_label",
                          "name_description", "new_name"))

# XAPI's action-specific arguments worth logging.
_CHOSEN = {
    "VM.start": ("start_paused", "force"),
    "VM.start_on": ("start_paused", "force"),
    "VM.migrate": ("dest", "live"),
    "host.set_address": ("value",),
    "pool.create_VLAN": ("device", "vLAN"),
    "pool.join": ("master_address",),
    "pool.join_force": ("master_address",),
    "pool.enable_external_auth": ("service_name", "auth_type"),
    "host.enable_external_auth": ("service_name", "auth_type"),
    "subject.create": ("subject_identifier", "other_config"),
    "message.create": ("name", "body"),
}


def sexpr(value):
    """XAPI's S-expression text: strings quoted with ' (\\ and ' escaped),
    lists in parentheses."""
    if isinstance(value, (list, tuple)):
        return "(" + " ".join(sexpr(v) for v in value) + ")"
    text = str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def trackid(session):
    return "trackid=" + hashlib.md5(session.encode()).hexdigest()


def audited(action):
    return ".get" not in action and action not in _NOT_AUDITED


def _text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class AuditLog:
    def __init__(self, db, path, hostname):
        self.db = db
        self.path = path
        self.hostname = hostname
        self._count = itertools.count(1)
        self._file = None

    def arguments(self, message, args):
        """The logged arguments of a call, as XAPI chooses them."""
        out = []
        chosen = _CHOSEN.get(message.wire_name, ())
        for param, value in zip(message.params, args):
            name = param.name
            if name in _DESCRIPTIVE or name in chosen:
                if isinstance(value, dict):
                    out.append([name, [[k, _text(v), "", ""]
                                       for k, v in value.items()], "", ""])
                else:
                    out.append([name, _text(value), "", ""])
            elif param.type.kind == "ref" and isinstance(value, str):
                out.append(self._reference(name, param.type, value))
        return [a for a in out if a is not None]

    def _reference(self, name, ref_type, ref):
        cls_name = ref_type.cls
        if ref == NULL_REF or not MODEL.classes[cls_name].in_db or \
                not self.db.exists(cls_name, ref):
            return None
        fields = self.db.fields(cls_name, ref)
        return [name, fields.get("name_label", ""), fields.get("uuid", ""),
                ref]

    def write(self, session, action, allowed, outcome="", args=(),
              origin=""):
        """One line, for a session that is not a local superuser."""
        if not audited(action):
            return
        if not self.db.exists("session", session):
            return
        fields = self.db.fields("session", session)
        if fields["is_local_superuser"] or fields["pool"]:
            return
        record = [trackid(session), fields["auth_user_sid"],
                  fields["auth_user_name"],
                  "ALLOWED" if allowed else "DENIED", outcome,
                  "HTTP" if action.startswith("http/") else "API", action,
                  list(args)]
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H:%M:%S", time.gmtime(now)) + \
            ".%03dZ" % (int(now * 1000) % 1000)
        line = "[%s|audit|%s|%d %s|%s|audit] %s\n" % (
            stamp, self.hostname, next(self._count), origin, action,
            sexpr(record))
        line = line[:-1].replace("\r", " ").replace("\n", " ") + "\n"
        try:
            # A line appended to a local file, kept open: the page cache
            # takes it at once, as the rest of the server's logging.
            if self._file is None:
                self._file = open(self.path, "a", buffering=1)
            self._file.write(line)
        except OSError as e:
            self.close()
            log.warn("audit log {path}: {error}", path=self.path, error=e)

    def close(self):
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
