"""
External authentication of a whole pool, as XAPI's pool.enable_external_auth
and disable_external_auth do it on the master: host.enable_external_auth
on each host in turn, the master first, each run by its own host (the
forwarding rule sends it there), so that every host joins the domain
with a computer account of its own and can answer logins once it is
master.

Enabling is all or nothing: a host that fails is named in the POOL_
form of its error, and every host enabled before it, and the failed one,
are disabled again (best effort).  Disabling goes to every host whatever
fails, then reports the first failure; the sessions of external users
end.  One pool-wide change at a time.
"""

from twisted.internet import defer
from twisted.logger import Logger

from txxapi.errors import XenAPIError
from txxapi.forwarding.registry import rule_for

log = Logger()

ENABLE = "host.enable_external_auth"
DISABLE = "host.disable_external_auth"


def _master_first(ctx):
    master = ctx.db.fields("pool", ctx.server.pool_ref)["master"]
    return sorted(ctx.db.refs("host"), key=lambda h: h != master)


def _on_host(ctx, wire_name, local, *args):
    """``wire_name(*args)`` (its first argument a host) run by that host:
    ``local`` here, or the call forwarded to it (a Deferred)."""
    route = rule_for(wire_name)(ctx, *args)
    return defer.maybeDeferred(ctx.server.forwarder.run, ctx, route,
                               lambda: local(*args), (wire_name, list(args)))


def enable(ctx, config, service_name, auth_type):
    return ctx.server.extauth.pool_changes.run(
        _enable, ctx, config, service_name, auth_type)


def disable(ctx, config):
    return ctx.server.extauth.pool_changes.run(_disable, ctx, config)


@defer.inlineCallbacks
def _enable(ctx, config, service_name, auth_type):
    db = ctx.db
    hosts = _master_first(ctx)
    for host in hosts:
        if db.fields("host", host)["external_auth_type"]:
            raise XenAPIError("POOL_AUTH_ALREADY_ENABLED", host)
    # Hosts of one name would share one computer account.
    names = [db.fields("host", h)["hostname"] for h in hosts]
    if len(set(names)) != len(names):
        raise XenAPIError("POOL_AUTH_ENABLE_FAILED_DUPLICATE_HOSTNAME",
                          hosts[0], "At least two hosts in the pool have "
                          "the same hostname")
    tried = []
    for host in hosts:
        tried.append(host)
        try:
            yield _on_host(ctx, ENABLE, ctx.server.extauth.enable, host,
                           config, service_name, auth_type)
        except XenAPIError as e:
            yield _roll_back(ctx, tried, config)
            raise _pool_enable_error(host, e)


@defer.inlineCallbacks
def _roll_back(ctx, hosts, config):
    for host in hosts:
        try:
            yield _on_host(ctx, DISABLE, ctx.server.extauth.disable, host,
                           config)
        except XenAPIError as e:
            # Disabled all the same where it could be reached; its
            # computer account may stay in the domain.
            log.warn("rolling back external authentication of {host}: "
                     "{error}", host=host, error=e)


def _pool_enable_error(host, e):
    code, params = e.description[0], e.description[1:]
    if code == "AUTH_UNKNOWN_TYPE":
        return e
    if code.startswith("AUTH_ENABLE_FAILED"):
        return XenAPIError("POOL_" + code, host, *params)
    return XenAPIError("POOL_AUTH_ENABLE_FAILED", host,
                       "%s: [ %s ]" % (code, "; ".join(params)))


@defer.inlineCallbacks
def _disable(ctx, config):
    failures = []
    for host in _master_first(ctx):
        try:
            yield _on_host(ctx, DISABLE, ctx.server.extauth.disable, host,
                           config)
        except XenAPIError as e:
            failures.append((host, e))
    if failures:
        host, e = failures[0]
        code, params = e.description[0], e.description[1:]
        name = ctx.db.fields("host", host)["name_label"]
        if code.startswith("AUTH_DISABLE_FAILED"):
            raise XenAPIError("POOL_" + code, host,
                              "%s: %s" % (name, "; ".join(params)))
        raise XenAPIError("POOL_AUTH_DISABLE_FAILED", host, "%s: %s: [ %s ]"
                          % (name, code, "; ".join(params)))
    # External sessions end now, not at the next revalidation pass.
    yield ctx.server.revalidator.run()


# XAPI's alert for a slave whose external authentication is not the
# master's.
NON_HOMOGENEOUS = ("EXTAUTH_IN_POOL_IS_NON_HOMOGENEOUS", 2)


@defer.inlineCallbacks
def detect_nonhomogeneous(ctx):
    """pool.detect_nonhomogeneous_external_auth: an alert on each slave
    whose type or service name differs from the master's (one a host
    that could not be reached keeps after a pool-wide change)."""
    db = ctx.db
    master = db.fields("pool", ctx.server.pool_ref)["master"]
    m = db.fields("host", master)
    for host in db.refs("host"):
        h = db.fields("host", host)
        keys = ("external_auth_type", "external_auth_service_name")
        if host == master or all(h[k] == m[k] for k in keys):
            continue
        body = ", ".join("%s_%s=%s" % (who, k, f[k])
                         for who, f in (("host", h), ("master", m))
                         for k in keys)
        yield ctx.server.messages.create(NON_HOMOGENEOUS[0],
                                         NON_HOMOGENEOUS[1], "Host",
                                         h["uuid"], body)
