"""subject.*, role.*, auth.* and external authentication of hosts and the
pool: who may log in, with which roles, as XAPI's xapi_subject, xapi_role,
xapi_auth and xapi_host/xapi_pool answer."""

from twisted.internet import defer

from txxapi.api.registry import implements
from txxapi.errors import XenAPIError


# -- subjects ----------------------------------------------------------------

@implements("subject.create")
@defer.inlineCallbacks
def subject_create(ctx, record):
    sid = record["subject_identifier"]
    if ctx.db.where("subject", subject_identifier=sid):
        raise XenAPIError("SUBJECT_ALREADY_EXISTS")
    # The directory's record of the subject replaces what the client sent.
    info = yield ctx.server.extauth.ask("subject_information", sid)
    if ctx.db.where("subject", subject_identifier=sid):
        raise XenAPIError("SUBJECT_ALREADY_EXISTS")
    return ctx.db.create("subject", {"subject_identifier": sid,
                                     "other_config": info, "roles": []})


@implements("subject.destroy")
def subject_destroy(ctx, self):
    ctx.db.fields("subject", self)
    ctx.db.delete("subject", self)
    # Those who came in through it lose their sessions.
    for ref in ctx.db.where("session", subject=self):
        if ref != ctx.session:
            ctx.server.sessions.logout(ref)
    return ""


def _static_role(ctx, role):
    if not ctx.db.exists("role", role):
        raise XenAPIError("ROLE_NOT_FOUND")


@implements("subject.add_to_roles")
def add_to_roles(ctx, self, role):
    roles = ctx.db.fields("subject", self)["roles"]
    _static_role(ctx, role)
    if role in roles:
        raise XenAPIError("ROLE_ALREADY_EXISTS")
    ctx.db.update("subject", self, {"roles": list(roles) + [role]})
    return ""


@implements("subject.remove_from_roles")
def remove_from_roles(ctx, self, role):
    roles = ctx.db.fields("subject", self)["roles"]
    if role not in roles:
        raise XenAPIError("ROLE_NOT_FOUND")
    ctx.db.update("subject", self,
                  {"roles": [r for r in roles if r != role]})
    return ""


@implements("subject.get_permissions_name_label")
def subject_permissions(ctx, self):
    ctx.db.fields("subject", self)
    return ctx.server.extauth.permissions_of_subjects([self])


# -- roles -------------------------------------------------------------------

def _role_fields(ctx, role):
    if not ctx.db.exists("role", role):
        raise XenAPIError("HANDLE_INVALID", "role", role)
    return ctx.db.fields("role", role)


@implements("role.get_permissions_name_label")
def role_permissions_name_label(ctx, self):
    _role_fields(ctx, self)
    return ctx.server.extauth.permissions_of_role(self)


@implements("role.get_permissions")
def role_permissions(ctx, self):
    by_label = _labels(ctx)
    return [by_label[p] for p in role_permissions_name_label(ctx, self)
            if p in by_label]


def _labels(ctx):
    return {f["name_label"]: ref for ref, f in ctx.db.records("role")}


@implements("role.get_by_permission_name_label")
def by_permission_name_label(ctx, label):
    """The roles granting a permission (not the permission itself)."""
    return [ref for ref, f in ctx.db.records("role")
            if f["subroles"] and label in
            ctx.server.extauth.permissions_of_role(ref)]


@implements("role.get_by_permission")
def by_permission(ctx, permission):
    return by_permission_name_label(
        ctx, _role_fields(ctx, permission)["name_label"])


# -- the directory -------------------------------------------------------------

@implements("auth.get_subject_identifier")
def get_subject_identifier(ctx, subject_name):
    return ctx.server.extauth.ask("subject_identifier", subject_name)


@implements("auth.get_subject_information_from_identifier")
def get_subject_information(ctx, subject_identifier):
    return ctx.server.extauth.ask("subject_information", subject_identifier)


@implements("auth.get_group_membership")
def get_group_membership(ctx, subject_identifier):
    return ctx.server.extauth.ask("group_membership", subject_identifier)


# -- enabling ------------------------------------------------------------------

def _this_host_only(ctx, host):
    ctx.db.fields("host", host)
    if host != ctx.server.host_ref:
        raise XenAPIError("NOT_IMPLEMENTED",
                          "external authentication of another host")


@implements("host.enable_external_auth")
def host_enable(ctx, host, config, service_name, auth_type):
    _this_host_only(ctx, host)
    d = ctx.server.extauth.enable(host, config, service_name, auth_type)
    return d.addCallback(lambda _: "")


@implements("host.disable_external_auth")
def host_disable(ctx, host, config):
    _this_host_only(ctx, host)
    d = ctx.server.extauth.disable(host, config)
    return d.addCallback(lambda _: "")


@implements("pool.enable_external_auth")
@defer.inlineCallbacks
def pool_enable(ctx, pool, config, service_name, auth_type):
    """Every host of the pool, or none: a host that fails is named in the
    POOL_ variant of its error, those enabled before it are rolled back."""
    ctx.db.fields("pool", pool)
    hosts = ctx.db.refs("host")
    for host in hosts:
        current = ctx.db.fields("host", host)["external_auth_type"]
        if current:
            raise XenAPIError("POOL_AUTH_ALREADY_ENABLED", host)
    done = []
    for host in hosts:
        try:
            _this_host_only(ctx, host)
            yield ctx.server.extauth.enable(host, config, service_name,
                                            auth_type)
        except XenAPIError as e:
            for enabled in done:
                try:
                    yield ctx.server.extauth.disable(enabled, config)
                except XenAPIError:
                    pass    # disabled; its computer account may remain
            code, params = e.description[0], e.description[1:]
            if code == "AUTH_UNKNOWN_TYPE":
                raise
            if code.startswith("AUTH_ENABLE_FAILED"):
                raise XenAPIError("POOL_" + code, host, *params)
            raise XenAPIError("POOL_AUTH_ENABLE_FAILED", host,
                              "%s: [ %s ]" % (code, "; ".join(params)))
        done.append(host)
    return ""


@implements("pool.disable_external_auth")
@defer.inlineCallbacks
def pool_disable(ctx, pool, config):
    ctx.db.fields("pool", pool)
    for host in ctx.db.refs("host"):
        if host == ctx.server.host_ref:
            try:
                yield ctx.server.extauth.disable(host, config)
            except XenAPIError as e:
                code, params = e.description[0], e.description[1:]
                raise XenAPIError("POOL_" + code, host, *params)
        elif ctx.db.fields("host", host)["external_auth_type"]:
            raise XenAPIError("POOL_AUTH_DISABLE_FAILED", host,
                              "external authentication of another host")
    return ""
