"""session.*: login, logout and the questions a session can ask."""

import hmac

from txxapi.api.registry import implements
from txxapi.errors import XenAPIError


@implements("session.login_with_password")
def login_with_password(ctx, uname, pwd, version, originator):
    return ctx.server.sessions.login(uname, pwd, originator,
                                     origin_text(ctx.origin),
                                     trusted=_on_local_socket(ctx))


def _on_local_socket(ctx):
    """A caller on the local Unix socket is root here (txxapi.http.local):
    XAPI checks no password of it."""
    return bool(ctx.origin and ctx.origin.get("local"))


def origin_text(origin):
    """Where a call came from, in the words XAPI's login refusals use."""
    if not origin:
        return "Internal"
    return "HTTP request from Internet with User-Agent: %s" % (
        origin.get("user_agent") or "unknown")


@implements("session.slave_local_login_with_password")
def slave_local_login_with_password(ctx, uname, pwd):
    if not ctx.server.identity.is_master:
        return ctx.server.sessions.local_login(
            uname, pwd, trusted=_on_local_socket(ctx))
    return ctx.server.sessions.login(uname, pwd, "",
                                     trusted=_on_local_socket(ctx))


def _check_pool_secret(ctx, psecret, who):
    if not hmac.compare_digest(psecret.encode(),
                               ctx.server.pool_secret.encode()):
        raise XenAPIError("SESSION_AUTHENTICATION_FAILED", who,
                          "Pool credentials invalid")


@implements("session.slave_login")
def slave_login(ctx, host, psecret):
    """A host of the pool logs in with the pool secret: a pool session,
    superuser, that runs calls here rather than redirecting them."""
    _check_pool_secret(ctx, psecret, host)
    return ctx.server.sessions.create("", pool=True)


@implements("session.slave_local_login")
def slave_local_login(ctx, psecret):
    _check_pool_secret(ctx, psecret, "")
    return ctx.server.sessions.create("", pool=True)


@implements("session.logout")
def logout(ctx):
    ctx.server.sessions.logout(ctx.session)
    return ""


@implements("session.local_logout")
def local_logout(ctx):
    ctx.server.sessions.logout(ctx.session)
    return ""


@implements("session.get_this_host")
def get_this_host(ctx, self):
    return ctx.db.get("session", self, "this_host")


@implements("session.get_this_user")
def get_this_user(ctx, self):
    return ctx.db.get("session", self, "this_user")


@implements("session.get_all_subject_identifiers")
def get_all_subject_identifiers(ctx):
    sids = []
    for _, f in ctx.db.records("session"):
        if f["is_local_superuser"]:
            continue
        for sid in (f["auth_user_sid"], _subject_sid(ctx, f["subject"])):
            if sid and sid not in sids:
                sids.append(sid)
    return sids


@implements("session.logout_subject_identifier")
def logout_subject_identifier(ctx, subject_identifier):
    for ref, f in ctx.db.records("session"):
        if ref != ctx.session and not f["is_local_superuser"] and \
                subject_identifier in (f["auth_user_sid"],
                                       _subject_sid(ctx, f["subject"])):
            ctx.server.sessions.logout(ref)
    return ""


def _subject_sid(ctx, subject):
    if ctx.db.exists("subject", subject):
        return ctx.db.get("subject", subject, "subject_identifier")
    return ""


@implements("session.change_password")
def change_password(ctx, old_pwd, new_pwd):
    if not ctx.session_fields()["is_local_superuser"]:
        raise XenAPIError("USER_IS_NOT_LOCAL_SUPERUSER",
                          ctx.session_fields()["auth_user_name"])
    raise XenAPIError("NOT_IMPLEMENTED", "session.change_password")
