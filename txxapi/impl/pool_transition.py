"""
Moving the pool's mastership: pool.designate_new_master (asked of the
master, run by the new master), the emergency calls an operator makes
when the master is gone (emergency_transition_to_master,
emergency_reset_master, recover_slaves) and the hidden host calls of the
two-phase commit.  The steps live in txxapi.pool.transition.
"""

import ipaddress
import socket

from twisted.internet import defer, threads

from txxapi.api.registry import implements
from txxapi.errors import XenAPIError
from txxapi.pool import transition
from txxapi.pool.client import PeerUnreachable


def _refuse_if_ha(ctx):
    if ctx.db.get("pool", ctx.server.pool_ref, "ha_enabled"):
        raise XenAPIError("HA_IS_ENABLED")


@implements("pool.designate_new_master")
def designate_new_master(ctx, host):
    """Run on the host named (its forwarding rule sends it there)."""
    ctx.db.fields("host", host)
    _refuse_if_ha(ctx)
    if ctx.server.identity.is_master:
        return ""       # the master named itself
    return transition.designate(ctx.server, ctx.server.proposals).addCallback(
        lambda _: "")


@implements("pool.emergency_transition_to_master")
def emergency_transition_to_master(ctx):
    _refuse_if_ha(ctx)
    transition.become_master(ctx.server)
    return ""


def _resolve(address):
    try:
        ipaddress.ip_address(address)
        return defer.succeed(address)
    except ValueError:
        pass

    def lookup():
        try:
            return socket.getaddrinfo(address, None)[0][4][0]
        except (socket.gaierror, UnicodeError):
            raise XenAPIError("HOST_NAME_INVALID", address)
    return threads.deferToThread(lookup)


@implements("pool.emergency_reset_master")
@defer.inlineCallbacks
def emergency_reset_master(ctx, master_address):
    _refuse_if_ha(ctx)
    address = yield _resolve(master_address)
    transition.become_slave_of(ctx.server, address)
    return ""


@implements("pool.recover_slaves")
@defer.inlineCallbacks
def recover_slaves(ctx):
    """On a new master: every other host it can reach is told to follow
    it; the refs of those that answered."""
    db, server = ctx.db, ctx.server
    server.identity.assert_master()
    me = transition.my_address(server)
    recovered = []
    for ref, fields in db.records("host"):
        if ref == server.host_ref:
            continue
        try:
            yield transition.emergency_call(
                server, fields["address"], "pool.emergency_reset_master", me)
        except (PeerUnreachable, XenAPIError):
            continue
        recovered.append(ref)
    return recovered


@implements("host.propose_new_master")
def propose_new_master(ctx, address, manual):
    ctx.server.proposals.propose(address)
    return ""


@implements("host.commit_new_master")
def commit_new_master(ctx, address):
    server = ctx.server
    server.proposals.check_commit(address)
    if address == transition.my_address(server):
        transition.become_master(server)
    else:
        transition.become_slave_of(server, address,
                                   transition.AFTER_OLD_MASTER_DELAY)
    return ""


@implements("host.abort_new_master")
def abort_new_master(ctx, address):
    ctx.server.proposals.abort()
    return ""
