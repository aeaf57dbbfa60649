"""
The master's side of HA: from the liveset on etcd (the hosts whose
lease lives), which hosts have failed, and what then happens, as in
XAPI's restart_auto_run_vms:

- A member of the liveset whose key is gone has lost its lease: etcd
  expired it, so the host has given up (it fences itself when it cannot
  renew, counting from before etcd does).  Once the fencing margin has
  passed since the master saw it gone, the host is declared dead: its
  host_metrics.live false, HA_HOST_FAILED, and every VM that ran there
  reset to Halted.
- Protected VMs (restart priority "restart", started since) found Halted
  are started again (level-triggered, so a restart that failed is tried
  again on a later pass), in ``order`` groups, each group at once,
  waiting the group's ``start_delay`` before the next; best-effort VMs
  of a failed host are tried a few times where there is room.  The
  protected VMs of a pass are placed together by the failover plan
  (state.evacuation_plan, as pool.ha_compute_vm_failover_plan answers:
  biggest first onto the live hosts' free memory), each started there
  with VM.start_on; a VM the plan does not place, or whose start on its
  planned host fails, is started with VM.start, placed as any (XAPI's
  fallback).  Best-effort VMs take VM.start's placement.
- The plan's figures (ha_plan_exists_for, ha_overcommitted) are
  recomputed when what they depend on changes.
"""

import time

from twisted.internet import defer, task
from twisted.logger import Logger

from txxapi.errors import XenAPIError
from txxapi.ha import local, state, statefile, status
from txxapi.pool import liveness
from txxapi.values import NULL_REF

log = Logger()

HOST_FAILED = ("HA_HOST_FAILED", 3)
RESTART_FAILED = ("HA_PROTECTED_VM_RESTART_FAILED", 2)
BEST_EFFORT_MAX_TRIES = 2       # XAPI's ha_best_effort_max_retries


class Failover:
    def __init__(self, server, clock=time.monotonic):
        self.server = server
        self.clock = clock
        self.missing = {}           # host uuid -> when first seen gone
        self.declared = set()       # host uuids declared dead
        self.best_effort = {}       # VM ref -> tries left
        self.alerted = set()        # protected VMs whose restart failed
        self.failed_at = {}         # VM ref -> when its restart failed
        self.retry_after = 120.0    # XAPI's; T once HA runs
        self.prevent_until = 0.0
        self.restarting = None      # the restart pass under way
        self._signature = None
        self.statefile_alert = statefile.AllLostAlert(server)
        # Observed times, for whoever measures (benchmarks, logs).
        self.timeline = {}

    @property
    def db(self):
        return self.server.db

    # -- one pass -----------------------------------------------------------

    @defer.inlineCallbacks
    def check(self, client, timeouts):
        self.retry_after = timeouts.t
        live = yield local.uuids_under(client, local.LIVE_PREFIX)
        members = yield local.uuids_under(client, local.MEMBER_PREFIX)
        reaching = yield local.uuids_under(client, local.STATEFILE_PREFIX)
        db, me = self.db, self.server.host_ref
        now = self.clock()
        for host in db.refs("host"):
            uuid = db.fields("host", host)["uuid"]
            if host == me or uuid in live or uuid not in members:
                self.missing.pop(uuid, None)
                if uuid in live and uuid in self.declared:
                    self.declared.discard(uuid)
                if uuid in live and not liveness.is_live(db, host):
                    liveness.set_live(db, host, True)
                continue
            first = self.missing.setdefault(uuid, now)
            if uuid not in self.declared and now - first >= timeouts.margin:
                self.declared.add(uuid)
                self.declare_dead(host, now - first)
        self._peers(live, reaching)
        self.statefile_alert.update(live, reaching)
        yield self._plan_status()
        if self.restarting is None and now >= self.prevent_until:
            self.restarting = self.restart_pass()
            self.restarting.addErrback(
                lambda f: log.failure("HA restart pass", f))
            self.restarting.addBoth(self._restarted)

    def _restarted(self, _):
        self.restarting = None

    def prevent_restarts_for(self, seconds):
        self.prevent_until = self.clock() + max(0, seconds)

    # -- a failed host --------------------------------------------------------

    def declare_dead(self, host, gone_for):
        db, server = self.db, self.server
        fields = db.fields("host", host)
        log.warn("HA: host {name} lost its lease ({s:.1f} s ago): "
                 "declared dead", name=fields["name_label"], s=gone_for)
        self.timeline[fields["uuid"]] = {"declared": time.time()}
        if liveness.is_live(db, host):
            name, priority = HOST_FAILED
            server.messages.create(name, priority, "Host", fields["uuid"],
                                   "Server '%s' has failed"
                                   % fields["name_label"])
            liveness.set_live(db, host, False)
        # Its etcd member may go to a live host (txxapi.pool.membership).
        if server.liveness.on_dead is not None:
            server.liveness.on_dead(host)
        for vm in db.refs("VM"):
            v = db.fields("VM", vm)
            if v["is_control_domain"]:
                continue
            if host not in (v["resident_on"],
                            v["scheduled_to_be_resident_on"]):
                continue
            if v["power_state"] in ("Running", "Paused") or \
                    v["scheduled_to_be_resident_on"] == host:
                server.xenops.mark_halted(vm, "Halted")
                db.update("VM", vm, {"current_operations": {}})
                if v["ha_restart_priority"] == state.BEST_EFFORT:
                    self.best_effort[vm] = BEST_EFFORT_MAX_TRIES

    def _peers(self, live, reaching):
        """host.ha_network_peers from the liveset, ha_statefiles from
        the live hosts that reach the statefiles."""
        db = self.db
        statefiles = db.fields("pool", self.server.pool_ref)["ha_statefiles"]
        peers = sorted(live)
        for host in db.refs("host"):
            h = db.fields("host", host)
            inside = h["uuid"] in live
            changes = {"ha_network_peers": peers if inside else [],
                       "ha_statefiles": list(statefiles)
                       if inside and h["uuid"] in reaching else []}
            if any(h[k] != v for k, v in changes.items()):
                db.update("host", host, changes)

    # -- restarts -------------------------------------------------------------

    def _restartable(self, vm):
        v = self.db.fields("VM", vm)
        return v["power_state"] == "Halted" and not v["current_operations"] \
            and v["scheduled_to_be_resident_on"] == NULL_REF \
            and not v["is_a_template"]

    @defer.inlineCallbacks
    def restart_pass(self):
        db = self.db
        now = self.clock()
        # A restart that failed is tried again only after a while (XAPI
        # waits 2 minutes): the pass runs every second.
        protected = [vm for vm in state.protected_vms(db)
                     if self._restartable(vm) and
                     now - self.failed_at.get(vm, -self.retry_after) >=
                     self.retry_after]
        best_effort = [vm for vm in list(self.best_effort)
                       if db.exists("VM", vm) and self._restartable(vm)]
        for vm in list(self.best_effort):
            if vm not in best_effort:
                del self.best_effort[vm]
        if not protected and not best_effort:
            return
        plan = state.evacuation_plan(db, (), protected)
        session = self.server.sessions.create("", pool=True)
        try:
            for group in _order_groups(db, protected):
                results = yield defer.DeferredList(
                    [self._start(session, vm, plan.get(vm))
                     for vm in group],
                    consumeErrors=True)
                for vm, (ok, error) in zip(group, results):
                    if ok:
                        self.alerted.discard(vm)
                        self.failed_at.pop(vm, None)
                        continue
                    self.failed_at[vm] = self.clock()
                    if vm not in self.alerted:
                        self.alerted.add(vm)
                        self._restart_failed(vm, error)
                delay = max(db.fields("VM", vm)["start_delay"]
                            for vm in group)
                if delay > 0:
                    yield task.deferLater(self.server.reactor, delay,
                                          lambda: None)
            for vm in best_effort:
                try:
                    yield self._start(session, vm)
                    self.best_effort.pop(vm, None)
                except Exception as e:
                    left = self.best_effort.get(vm, 1) - 1
                    log.info("HA: best-effort restart of {vm} failed "
                             "({e}); {n} tries left", vm=vm, e=e, n=left)
                    if left <= 0:
                        self.best_effort.pop(vm, None)
                    else:
                        self.best_effort[vm] = left
        finally:
            self.server.sessions.logout(session)

    @defer.inlineCallbacks
    def _start(self, session, vm, host=None):
        call = self.server.dispatcher.call
        if host is not None:
            log.info("HA: restarting VM {vm} on {host}, as planned", vm=vm,
                     host=host)
            try:
                yield call("VM.start_on", [session, vm, host, False, True])
                return
            except Exception as e:
                log.info("HA: VM {vm} did not start on its planned host "
                         "({e}); placed as any start", vm=vm, e=e)
        else:
            log.info("HA: restarting VM {vm}", vm=vm)
        yield call("VM.start", [session, vm, False, True])

    def _restart_failed(self, vm, failure):
        error = failure.value
        log.warn("HA: restart of protected VM {vm} failed: {e}", vm=vm,
                 e=error)
        if isinstance(error, XenAPIError) and \
                error.code == "HANDLE_INVALID":
            return
        name, priority = RESTART_FAILED
        self.server.messages.create(name, priority, "VM",
                                    self.db.fields("VM", vm)["uuid"], "")

    # -- the plan's figures ------------------------------------------------------

    @defer.inlineCallbacks
    def _plan_status(self):
        signature = _plan_signature(self.db, self.server.pool_ref)
        if signature == self._signature:
            return
        self._signature = signature
        yield status.update_pool_status(self.server.context())


def _order_groups(db, vms):
    """Lists of VMs of equal ``order``, lowest first."""
    groups = {}
    for vm in vms:
        groups.setdefault(db.fields("VM", vm)["order"], []).append(vm)
    return [sorted(groups[k], key=lambda v: db.fields("VM", v)["uuid"])
            for k in sorted(groups)]


def _plan_signature(db, pool):
    """What the plan depends on: the protected VMs' placement and memory,
    the live hosts and their memory, the failures to tolerate."""
    vms = tuple(sorted(
        (vm, v["power_state"], v["resident_on"],
         v["scheduled_to_be_resident_on"], v["memory_static_max"],
         v["ha_restart_priority"], v["ha_always_run"])
        for vm in db.refs("VM") for v in [db.fields("VM", vm)]
        if v["ha_restart_priority"]))
    hosts = tuple(sorted((h, db.fields("host", h)["enabled"],
                          state.is_host_live(db, h))
                         for h in db.refs("host")))
    pool = db.fields("pool", pool)
    return vms, hosts, pool["ha_host_failures_to_tolerate"]
