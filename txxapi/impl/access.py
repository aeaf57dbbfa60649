"""subject.*, role.*, auth.* and external authentication of hosts and the
pool: who may log in, with which roles, as XAPI's xapi_subject, xapi_role,
xapi_auth and xapi_host/xapi_pool answer."""

from twisted.internet import defer

from txxapi.api.registry import implements
from txxapi.errors import XenAPIError
from txxapi.extauth import pool as extauth_pool


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
# Each host's own call runs on that host (forwarding/host.py).

@implements("host.enable_external_auth")
def host_enable(ctx, host, config, service_name, auth_type):
    ctx.db.fields("host", host)
    d = ctx.server.extauth.enable(host, config, service_name, auth_type)
    return d.addCallback(lambda _: "")


@implements("host.disable_external_auth")
def host_disable(ctx, host, config):
    ctx.db.fields("host", host)
    d = ctx.server.extauth.disable(host, config)
    return d.addCallback(lambda _: "")


@implements("pool.enable_external_auth")
@defer.inlineCallbacks
def pool_enable(ctx, pool, config, service_name, auth_type):
    ctx.db.fields("pool", pool)
    yield extauth_pool.enable(ctx, config, service_name, auth_type)
    yield _drop_unresolvable_subjects(ctx)
    return ""


@defer.inlineCallbacks
def _drop_unresolvable_subjects(ctx):
    """Subjects the new directory does not know (another domain's) go,
    with their sessions, as XAPI's revalidation of subjects after an
    enable does."""
    for ref, fields in ctx.db.records("subject"):
        try:
            yield ctx.server.extauth.ask("subject_information",
                                         fields["subject_identifier"])
        except XenAPIError as e:
            if e.description[0] == "SUBJECT_CANNOT_BE_RESOLVED" and \
                    ctx.db.exists("subject", ref):
                subject_destroy(ctx, ref)


@implements("pool.detect_nonhomogeneous_external_auth")
def detect_nonhomogeneous(ctx, pool):
    ctx.db.fields("pool", pool)
    return extauth_pool.detect_nonhomogeneous(ctx).addCallback(lambda _: "")


@implements("pool.disable_external_auth")
def pool_disable(ctx, pool, config):
    ctx.db.fields("pool", pool)
    return extauth_pool.disable(ctx, config).addCallback(lambda _: "")
