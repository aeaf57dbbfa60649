"""
pool.* membership: join (on the joiner), eject and host.destroy (on the
master), hello (slave -> master at start), is_slave; and the pool's
internal host-to-host calls, authenticated by a session the caller
proves (a password session for the pool secret, the pool secret's
session for the rest).  The steps live in txxapi.pool.join.
"""

import json

from twisted.internet import defer

from txxapi.api.registry import implements, internal
from txxapi.errors import XenAPIError
from txxapi.impl.host_power import guests_resident_on
from txxapi.pool import join as pool_join
from txxapi.pool import membership, slavedb
from txxapi.pool import role as pool_role
from txxapi.pool.client import PeerClient, PeerUnreachable, local_call
from txxapi.pool.liveness import HEARTBEAT_CALL


@implements("pool.join")
def join(ctx, master_address, master_username, master_password):
    return pool_join.join(ctx.server, master_address, master_username,
                          master_password, force=False)


@implements("pool.join_force")
def join_force(ctx, master_address, master_username, master_password):
    return pool_join.join(ctx.server, master_address, master_username,
                          master_password, force=True)


@implements("pool.eject")
@defer.inlineCallbacks
def eject(ctx, host):
    db, server = ctx.db, ctx.server
    fields = db.fields("host", host)
    if db.get("pool", server.pool_ref, "ha_enabled"):
        raise XenAPIError("HA_IS_ENABLED")
    if host == server.host_ref:
        raise XenAPIError("OPERATION_NOT_ALLOWED",
                          "Cannot eject the pool master")
    if guests_resident_on(db, host):
        raise XenAPIError("OPERATION_NOT_ALLOWED", "VM resident on host")
    client = PeerClient(server.reactor, fields["address"])
    try:
        session = yield client.call("session.slave_login", host,
                                    server.pool_secret)
        yield server.pool_database.remove_host(fields["uuid"])
        yield client.call("pool.eject_self", session)
    except PeerUnreachable:
        raise XenAPIError("CANNOT_CONTACT_HOST", host)
    pool_join.forget(db, host)
    server.pool_database.reconcile_members(server)


@implements("host.destroy")
def destroy_host(ctx, self):
    """xe host-forget: drop a dead host from the master's database."""
    db = ctx.db
    db.fields("host", self)
    if self == ctx.server.host_ref:
        raise XenAPIError("HOST_CANNOT_DESTROY_SELF", self)
    metrics = db.get("host", self, "metrics")
    if db.exists("host_metrics", metrics) and \
            db.get("host_metrics", metrics, "live"):
        raise XenAPIError("HOST_IS_LIVE", self)
    if guests_resident_on(db, self):
        raise XenAPIError("HOST_HAS_RESIDENT_VMS", self)
    pool_join.forget(db, self)


@implements("pool.hello")
@defer.inlineCallbacks
def hello(ctx, host_uuid, host_address):
    """A slave starting: once it answers a call back at the address it
    gives, it is live there."""
    db, server = ctx.db, ctx.server
    if host_uuid not in db.table("host").by_uuid:
        return "unknown_host"
    host = db.by_uuid("host", host_uuid)
    try:
        # Through a local login: the slave is in emergency mode until
        # this answer.
        is_slave = yield local_call(server.reactor, host_address,
                                    server.pool_secret, "pool.is_slave",
                                    host)
    except (PeerUnreachable, XenAPIError):
        return "cannot_talk_back"
    if not is_slave:
        return "cannot_talk_back"
    db.update("host", host, {"address": host_address, "enabled": True})
    server.liveness.heard(host)
    # A host more (or back) may be the one to run an etcd member.
    server.pool_database.reconcile_members(server)
    return "ok"


@internal(HEARTBEAT_CALL)
def tickle_heartbeat(ctx, session, host):
    """A slave's periodic heartbeat (txxapi.pool.liveness)."""
    _pool_session(ctx, session)
    ctx.server.identity.assert_master()
    ctx.db.fields("host", host)
    ctx.server.liveness.heard(host)
    return ""


@implements("pool.is_slave")
def is_slave(ctx, host):
    """A master that has committed to another (its pool.conf names that
    one; it is on its way to restart as its slave) says so already: a new
    master that starts before it has gone must not take it for the
    pool's master and turn itself into its slave."""
    identity = ctx.server.identity
    return not identity.is_master or \
        not pool_role.read(identity.data_dir).is_master


@implements("host.is_in_emergency_mode")
def is_in_emergency_mode(ctx):
    return ctx.server.identity.in_emergency_mode


def _pool_session(ctx, session):
    sessions = ctx.server.sessions
    sessions.check(session)
    if not ctx.db.get("session", session, "pool"):
        raise XenAPIError("PERMISSION_DENIED", "pool session required")


# For the other internal calls between hosts (txxapi.redirect.calls).
assert_pool_session = _pool_session


@internal("pool.initial_auth")
def initial_auth(ctx, session):
    """The pool secret, to a pool-admin's session on the master."""
    ctx.server.sessions.check(session)
    if not ctx.db.get("session", session, "is_local_superuser"):
        raise XenAPIError("RBAC_PERMISSION_DENIED", "pool.initial_auth",
                          "No permission in user session")
    return ctx.server.pool_secret


@internal("pool.introduce_host")
@defer.inlineCallbacks
def introduce_host(ctx, session, records):
    """The joiner's records, then its place in the pool's etcd: its
    etcd.json (JSON), which it keeps."""
    _pool_session(ctx, session)
    ctx.server.identity.assert_master()
    records = json.loads(records)
    pool_join.introduce(ctx.db, records)
    host = [(ref, f) for table, ref, f in records if table == "host"][0]
    try:
        config = yield ctx.server.pool_database.place_joiner(
            ctx.server, host[1]["uuid"], host[1]["address"])
    except Exception:
        pool_join.forget(ctx.db, host[0])
        raise
    return json.dumps(config)


@internal(membership.JOIN_CALL)
@defer.inlineCallbacks
def etcd_member_join(ctx, session, config):
    """From the master, which added this host as a learner: start it."""
    _pool_session(ctx, session)
    config = json.loads(config)
    yield ctx.server.pool_database.become_member(config["cluster"],
                                                 config["id"])
    return ""


@internal(membership.LEAVE_CALL)
@defer.inlineCallbacks
def etcd_member_leave(ctx, session):
    """From the master, which removed this host's member: stop it."""
    _pool_session(ctx, session)
    yield ctx.server.pool_database.leave_member()
    return ""


@internal(membership.CLIENTS_CALL)
def etcd_clients(ctx, session, urls):
    """From the master: the client URLs of the pool's etcd members."""
    _pool_session(ctx, session)
    ctx.server.pool_database.learn_clients(json.loads(urls))
    return ""


@internal(slavedb.WRITE_CALL)
def db_write(ctx, session, records):
    """A slave's own writes, applied here as ordinary ones (the answer
    waits until they are durable on the pool's log)."""
    _pool_session(ctx, session)
    ctx.server.identity.assert_master()
    slavedb.apply_shipped(ctx.db, records)
    return ""


@internal("pool.eject_self")
def eject_self(ctx, session):
    _pool_session(ctx, session)
    if ctx.server.identity.is_master:
        raise XenAPIError("OPERATION_NOT_ALLOWED", "Host is not a slave")
    pool_join.eject_here(ctx.server)
    return ""
