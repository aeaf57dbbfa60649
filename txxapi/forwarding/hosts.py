"""
Which host executes a call, as XAPI's message forwarding chooses it:

* a VM's operations run where it is resident (a start where it will run);
* storage operations run on a host where the SR's PBD is plugged;
* a host's operations run on that host (a PBD's on the PBD's host);
* everything else runs on the master.

Only this host runs calls until hosts can join a pool (``members``), so a
host recorded in the database but not a member (an imported pool's other
hosts) is never chosen: its calls go to the master, this host.
"""

from txxapi.values import NULL_REF


def this_host(ctx):
    return ctx.server.host_ref


def members(ctx):
    """The hosts that can run calls now."""
    return {this_host(ctx)}


def master(ctx):
    pool = ctx.db.fields("pool", ctx.server.pool_ref)
    return pool["master"] if pool["master"] in members(ctx) \
        else this_host(ctx)


def member_or_master(ctx, host):
    return host if host in members(ctx) else master(ctx)


def of_vm(ctx, vm):
    """The host a VM's operation runs on: where it is resident, else (a
    halted VM) the master.  HANDLE_INVALID for a bad VM."""
    resident = ctx.db.fields("VM", vm)["resident_on"]
    return member_or_master(ctx, resident) if resident != NULL_REF \
        else master(ctx)


def to_start(ctx, vm):
    """The host VM.start and VM.resume place the VM on: this host until
    placement across a pool (free memory, affinity) lands."""
    ctx.db.fields("VM", vm)
    return this_host(ctx)


def named(ctx, host):
    """An explicitly named host (VM.start_on, a host's own operations):
    that host, HANDLE_INVALID if there is none."""
    ctx.db.fields("host", host)
    return host


def of_pbd(ctx, pbd):
    return ctx.db.fields("PBD", pbd)["host"]


def with_sr_plugged(ctx, sr):
    """A host where the SR is plugged, this one first; the master when
    none is (the operation's own checks then say what is wrong)."""
    db, here = ctx.db, this_host(ctx)
    plugged = [db.fields("PBD", p)["host"] for p in db.where("PBD", SR=sr)
               if db.fields("PBD", p)["currently_attached"]]
    live = [h for h in plugged if h in members(ctx)]
    if here in live:
        return here
    return live[0] if live else master(ctx)
