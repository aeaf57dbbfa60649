"""
What can go wrong talking to etcd, as exception classes a caller can act on.

The v3 JSON gateway reports a failure as ``{"error", "message", "code"}``
(code: the gRPC status code) with an HTTP status derived from it; the
etcd server's messages are stable strings ("etcdserver: no leader"...), so
the mapping below reads the code first and the message where one code
covers several causes.
"""

__all__ = [
    "EtcdError", "EtcdUnavailable", "EtcdTimeout", "EtcdNoQuorum",
    "EtcdCompacted", "EtcdLeaseNotFound", "EtcdMemberStopping",
    "EtcdRequestError", "from_gateway",
]

# gRPC status codes the gateway passes through.
_DEADLINE_EXCEEDED = 4
_UNAVAILABLE = 14


class EtcdError(Exception):
    """Any failure of an etcd request."""


class EtcdUnavailable(EtcdError):
    """No member could be reached (refused, unreachable, connection lost
    before an answer).  ``endpoints`` lists what was tried."""

    def __init__(self, message, endpoints=()):
        EtcdError.__init__(self, message)
        self.endpoints = tuple(endpoints)


class EtcdTimeout(EtcdError):
    """No answer in time, from the client's deadline or the server's own
    ("etcdserver: request timed out").  A write that timed out may or may
    not have been applied."""


class EtcdNoQuorum(EtcdError):
    """The member answered but the cluster cannot commit: it has no
    leader (fewer than a quorum of members are up)."""


class EtcdCompacted(EtcdError):
    """The revision asked for has been compacted away; ``revision`` is the
    compaction revision when the server said it (0 when not)."""

    def __init__(self, message, revision=0):
        EtcdError.__init__(self, message)
        self.revision = revision


class EtcdLeaseNotFound(EtcdError):
    """The lease does not exist (never granted, expired or revoked)."""


class EtcdMemberStopping(EtcdError):
    """The member asked is stopping: the gateway's own connection to it
    closed.  ``unsent``: it closed before the request went out (the
    client's connection closing), so nothing was proposed and another
    member may be asked at once; otherwise (the transport closing under
    the request) its outcome is unknown."""

    def __init__(self, message, unsent):
        EtcdError.__init__(self, message)
        self.unsent = unsent


class EtcdRequestError(EtcdError):
    """Any other refusal: ``code`` is the gRPC code (None when the gateway
    did not answer in JSON) and ``status`` the HTTP status."""

    def __init__(self, message, code=None, status=None):
        EtcdError.__init__(self, message)
        self.code = code
        self.status = status


def from_gateway(body, status=None):
    """The exception for a gateway error object ``body`` (already
    decoded: a dict with message/code)."""
    message = body.get("message") or body.get("error") or str(body)
    code = body.get("code")
    if "the client connection is closing" in message:
        return EtcdMemberStopping(message, unsent=True)
    if "transport is closing" in message:
        return EtcdMemberStopping(message, unsent=False)
    if "lease not found" in message:
        return EtcdLeaseNotFound(message)
    if "compacted" in message:
        return EtcdCompacted(message)
    if "no leader" in message:
        return EtcdNoQuorum(message)
    if code == _DEADLINE_EXCEEDED or "timed out" in message:
        return EtcdTimeout(message)
    if code == _UNAVAILABLE and "leader" in message:
        # "leader changed" and the like: up, but not able to commit now.
        return EtcdNoQuorum(message)
    return EtcdRequestError(message, code, status)
