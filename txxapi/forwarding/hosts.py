"""
Which host executes a call, as XAPI's message forwarding chooses it:

* a running or paused VM's operations run where it is resident, a
  halted or suspended VM's on the master, and a start where the
  placement puts it (forwarding/placement.py);
* storage operations run on a host where the SR's PBD is plugged;
* a host's operations run on that host (a PBD's on the PBD's host);
* everything else runs on the master.

The hosts that can run calls (``members``) are this one and those whose
host_metrics say live (txxapi.pool.liveness keeps that on the master); a
route to any other host is answered HOST_OFFLINE by the forwarder.
"""

from txxapi.forwarding import placement
from txxapi.pool.liveness import is_live
from txxapi.values import NULL_REF

RESIDENT_STATES = ("Running", "Paused")


def this_host(ctx):
    return ctx.server.host_ref


def is_member(ctx, host):
    """Can ``host`` run calls now?"""
    return host == this_host(ctx) or (
        ctx.db.exists("host", host) and is_live(ctx.db, host))


def members(ctx):
    """The hosts that can run calls now."""
    return {h for h in ctx.db.refs("host") if is_member(ctx, h)} | \
        {this_host(ctx)}


def master(ctx):
    pool = ctx.db.fields("pool", ctx.server.pool_ref)
    return pool["master"] if is_member(ctx, pool["master"]) \
        else this_host(ctx)


def of_vm(ctx, vm):
    """The host a VM's operation runs on: where it is resident while it
    runs (or is paused), else the master.  HANDLE_INVALID for a bad
    VM."""
    f = ctx.db.fields("VM", vm)
    if f["power_state"] in RESIDENT_STATES and f["resident_on"] != NULL_REF:
        return f["resident_on"]
    return master(ctx)


def to_start(ctx, vm):
    """The host VM.start and VM.resume place the VM on."""
    ctx.db.fields("VM", vm)
    return placement.choose_host(ctx, vm, members(ctx))


def named(ctx, host):
    """An explicitly named host (VM.start_on, a host's own operations):
    that host, HANDLE_INVALID if there is none."""
    ctx.db.fields("host", host)
    return host


def of_pbd(ctx, pbd):
    return ctx.db.fields("PBD", pbd)["host"]


def plugged_on(ctx, sr):
    """The hosts that can run calls and have the SR plugged."""
    db = ctx.db
    plugged = [db.fields("PBD", p)["host"] for p in db.where("PBD", SR=sr)
               if db.fields("PBD", p)["currently_attached"]]
    return [h for h in plugged if is_member(ctx, h)]


def with_sr_plugged(ctx, sr):
    """A host where the SR is plugged, this one first; the master when
    none is (the operation's own checks then say what is wrong)."""
    live = plugged_on(ctx, sr)
    if this_host(ctx) in live:
        return this_host(ctx)
    return live[0] if live else master(ctx)
