"""
The planner's view of the database, as XAPI builds it: which VMs are
protected and agile, which hosts are live, how much each host has free
and each VM needs (the conservative static_max accounting XAPI plans
with), and where the protected VMs run now.
"""

from txxapi.errors import XenAPIError
from txxapi.ha import planner
from txxapi.values import NULL_REF
from txxapi.vmspec import host_free_memory, start_memory, vm_overhead

RESTART = "restart"
BEST_EFFORT = "best-effort"
VALID_PRIORITIES = (RESTART, BEST_EFFORT, "")
KIB = 1024


def is_protected(vm):
    """XAPI keeps running, at all costs, a VM marked always-run with the
    "restart" priority (best-effort ones get no plan)."""
    return vm["ha_always_run"] and vm["ha_restart_priority"] == RESTART


def protected_vms(db):
    return [ref for ref in db.refs("VM")
            if is_protected(db.fields("VM", ref))]


def _hosts_by_uuid(db):
    return sorted(db.refs("host"), key=lambda h: db.fields("host", h)["uuid"])


def is_host_live(db, host):
    metrics = db.fields("host", host)["metrics"]
    return db.exists("host_metrics", metrics) and \
        db.fields("host_metrics", metrics)["live"]


def live_set(db):
    """Hosts the planner may restart VMs on: enabled and live."""
    return {h for h in db.refs("host")
            if db.fields("host", h)["enabled"] and is_host_live(db, h)}


# --- agility -----------------------------------------------------------------

def _enabled_hosts(db):
    return {h for h in db.refs("host") if db.fields("host", h)["enabled"]}


def sr_properly_shared(db, sr):
    """Shared, and plugged on every enabled host."""
    if not db.fields("SR", sr)["shared"]:
        return False
    plugged = {db.fields("PBD", p)["host"] for p in db.where("PBD", SR=sr)
               if db.fields("PBD", p)["currently_attached"]}
    return _enabled_hosts(db) <= plugged


def network_properly_shared(db, network):
    """Every enabled host has a PIF on it that is no bond's slave."""
    with_pif = {db.fields("PIF", p)["host"]
                for p in db.where("PIF", network=network)
                if not db.exists("Bond", db.fields("PIF", p)["bond_slave_of"])}
    return _enabled_hosts(db) <= with_pif


def assert_agile(db, ref, shared=None):
    """Raise what XAPI's agility check raises for a VM that could not run
    on every enabled host.  ``shared`` caches the SRs and networks found
    properly shared, across the VMs of one planning pass."""
    shared = set() if shared is None else shared
    if db.where("VGPU", VM=ref):
        raise XenAPIError("VM_HAS_VGPU", ref)
    if db.where("VUSB", VM=ref):
        raise XenAPIError("VM_HAS_VUSBS", ref)
    for vbd in db.where("VBD", VM=ref):
        vbd = db.fields("VBD", vbd)
        if vbd["empty"] or not db.exists("VDI", vbd["VDI"]):
            continue
        sr = db.fields("VDI", vbd["VDI"])["SR"]
        if sr not in shared:
            if not sr_properly_shared(db, sr):
                raise XenAPIError("HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED", sr)
            shared.add(sr)
    for vif in db.where("VIF", VM=ref):
        network = db.fields("VIF", vif)["network"]
        if network not in shared:
            if not network_properly_shared(db, network):
                raise XenAPIError(
                    "HA_CONSTRAINT_VIOLATION_NETWORK_NOT_SHARED", network)
            shared.add(network)


def is_agile(db, ref, shared=None):
    try:
        assert_agile(db, ref, shared)
    except XenAPIError:
        return False
    return True


def _can_run_on(db, ref, host):
    """The device part of XAPI's can-boot-here check, used to pin a
    non-agile VM: its disks' SRs plugged there, its networks present
    there (a network without PIFs is internal and everywhere)."""
    for vbd in db.where("VBD", VM=ref):
        vbd = db.fields("VBD", vbd)
        if vbd["empty"] or not db.exists("VDI", vbd["VDI"]):
            continue
        sr = db.fields("VDI", vbd["VDI"])["SR"]
        if not any(db.fields("PBD", p)["currently_attached"]
                   for p in db.where("PBD", SR=sr, host=host)):
            return False
    for vif in db.where("VIF", VM=ref):
        network = db.fields("VIF", vif)["network"]
        pifs = db.where("PIF", network=network)
        if pifs and not any(db.fields("PIF", p)["host"] == host for p in pifs):
            return False
    return True


# --- memory ------------------------------------------------------------------

def _kib_rounded(n):
    return -(-n // KIB) * KIB


def restart_need(vm):
    """What a restart is planned to need: static_max and the overhead."""
    return _kib_rounded(vm["memory_static_max"]) + vm_overhead(vm)


def _planned_use(vm):
    # Guests at static_max; the control domain at its dynamic_max.
    guest = vm["memory_dynamic_max"] if vm["is_control_domain"] \
        else vm["memory_static_max"]
    return guest + vm["memory_overhead"]


def planning_free_memory(db, hosts):
    """{host: host_metrics.memory_total - host.memory_overhead - what
    every VM resident on or scheduled to it would use at its largest},
    in one pass over the VMs."""
    used = {h: 0 for h in hosts}
    for ref in db.refs("VM"):
        vm = db.fields("VM", ref)
        targets = {vm["resident_on"], vm["scheduled_to_be_resident_on"]}
        for h in targets & used.keys():
            used[h] += _planned_use(vm)
    free = {}
    for host in hosts:
        h = db.fields("host", host)
        total = 0
        if db.exists("host_metrics", h["metrics"]):
            total = db.fields("host_metrics", h["metrics"])["memory_total"]
        free[host] = total - h["memory_overhead"] - used[host]
    return free


# --- the planning state ------------------------------------------------------

def pool_state(db, protected=None, live=None, extra=(), hosts_to_disable=(),
               arriving=()):
    """planner.PoolState for the protected VMs (default: those the
    database protects, plus ``extra``) on the live hosts, less
    ``hosts_to_disable``.  ``arriving``: [(host, VM)] placements about to
    be made (a start, a move): each VM counted on its host, the memory
    it would use taken from that host's (where it runs now it is still
    counted: a VM on the move is on both until it has moved)."""
    live = live_set(db) if live is None else set(live)
    live -= set(hosts_to_disable)
    vms = list(protected_vms(db) if protected is None else protected)
    vms += [v for v in extra if v not in vms]
    vms.sort(key=lambda v: db.fields("VM", v)["uuid"])
    all_hosts = _hosts_by_uuid(db)
    live_hosts = [h for h in all_hosts if h in live]
    free = planning_free_memory(db, live_hosts)
    arriving_on = {}
    for host, ref in arriving:
        arriving_on[ref] = host
        if host in free:
            free[host] -= restart_need(db.fields("VM", ref))

    def accounted(ref):
        vm = db.fields("VM", ref)
        if ref in arriving_on:
            return arriving_on[ref] if arriving_on[ref] in live else None
        for host in (vm["resident_on"], vm["scheduled_to_be_resident_on"]):
            if host != NULL_REF and host in live:
                return host
        return None

    need, placement, offline, non_agile = {}, [], [], False
    shared = set()
    for ref in vms:
        vm = db.fields("VM", ref)
        if not is_agile(db, ref, shared):
            non_agile = True
            if accounted(ref) is None:
                pinned = next((h for h in all_hosts
                               if _can_run_on(db, ref, h)), None)
                if pinned in free:
                    free[pinned] -= restart_need(vm)
            continue
        need[ref] = restart_need(vm)
        host = accounted(ref)
        if host is None:
            offline.append(ref)
        else:
            placement.append((ref, host))
    return planner.PoolState(
        hosts=[(h, free[h]) for h in live_hosts], total_hosts=len(all_hosts),
        vms=need, placement=placement, offline=offline, non_agile=non_agile)


def evacuation_plan(db, failed_hosts, failed_vms):
    """XAPI's answer to "where would these VMs go if those hosts failed":
    packed biggest-first by what a start needs (dynamic_min), onto the
    live hosts that are not failed, by their free memory."""
    failed_hosts = set(failed_hosts)
    hosts = [(h, host_free_memory(db, h)) for h in _hosts_by_uuid(db)
             if is_host_live(db, h) and h not in failed_hosts]
    things = [(v, start_memory(db.fields("VM", v))) for v in failed_vms]
    return planner.biggest_fit_decreasing(things, hosts)[0]

