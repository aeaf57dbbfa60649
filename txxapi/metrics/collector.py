"""
The metrics component: every step (5 s, ``--metrics-interval``) it asks
the backend for a sample (through the xenops bridge, on its threads),
turns it into the data sources of the host, the VMs with a domain here
and the SRs plugged here, archives them, evaluates perfmon's alarms and
raises the ALARM messages due.  The RRDs are saved every few minutes and
at stop, off the reactor, and read back as the server starts; on a pool
they move between the hosts with their VMs (handover).

The reactor only gathers what the database says (devices, SRs, perfmon
configurations); sampling, archiving and saving run on the component's
own thread pool, and so do the readers (HTTP, API) through ``run``.
"""

from twisted.internet import defer, task
from twisted.logger import Logger

from txxapi.workers import Workers
from txxapi.metrics import perfmon, sources, storage
from txxapi.metrics.handover import BACKUP_INTERVAL, STOP_TIMEOUT, \
    Handover
from txxapi.metrics.store import HOST, SR, VM, MetricsStore
from txxapi.metrics.token import TokenFile
from txxapi.values import NULL_REF

log = Logger()

MIB = 1024 * 1024
MAX_THREADS = 4
SAVE_INTERVAL = 300.0
# The longest the server's listeners wait for the first sample.
FIRST_SAMPLE_WAIT = 10.0
MIN_MAX_KEY = "create_min_max_in_new_VM_RRDs"


class Facts:
    """What the database says, gathered on the reactor for one sample."""

    __slots__ = ("host", "control_domain", "pifs", "srs", "vbd_srs",
                 "min_max", "perfmon")


class SrTraffic:
    """Cumulative bytes read and written on each SR by the VBDs of the
    domains here, from the domains' own counters (sample to sample, so
    a domain that goes takes nothing back)."""

    def __init__(self):
        self.last = {}          # (vm uuid, domid, device) -> (read, written)
        self.totals = {}        # SR uuid -> [read, written]

    def advance(self, domains, vbd_srs):
        """SR uuid -> (bytes read, bytes written, MiB moved since the last
        sample)."""
        seen, moved = {}, {}
        for d in domains:
            for dev, counters in d.vbds.items():
                sr = vbd_srs.get((d.uuid, dev))
                if sr is None:
                    continue
                key = (d.uuid, d.domid, dev)
                seen[key] = counters
                before = self.last.get(key, counters)
                read = max(0, counters[0] - before[0])
                written = max(0, counters[1] - before[1])
                total = self.totals.setdefault(sr, [0, 0])
                total[0] += read
                total[1] += written
                moved[sr] = moved.get(sr, 0) + read + written
        self.last = seen
        return {sr: (t[0], t[1], moved.get(sr, 0) / MIB)
                for sr, t in self.totals.items()}


class Metrics:
    def __init__(self, db, identity, clock, xenops, messages, data_dir,
                 step=5, save_interval=SAVE_INTERVAL, scrape_token=None,
                 workers=None, backup_interval=BACKUP_INTERVAL):
        """``workers``: where sampling, archiving and reading run (by
        default a pool of MAX_THREADS threads, inline under a test
        Clock)."""
        self.db = db
        self.identity = identity
        self.clock = clock
        self.xenops = xenops
        self.messages = messages
        self.archives = storage.Archives(data_dir)
        self.step = int(step)
        self.save_interval = save_interval
        self.backup_interval = backup_interval
        # What a scraper may send to /metrics instead of a session: a
        # token, or a TokenFile holding it.
        self._scrape_token = scrape_token
        self.store = MetricsStore(self.step)
        self.perfmon = perfmon.Perfmon(self.step)
        self.traffic = SrTraffic()
        self.unavailable = {}
        self.workers = workers or Workers(clock, "metrics", MAX_THREADS)
        self.handover = Handover(self)
        self._sampling = None
        self._saving = None
        self._restoring = None
        self._sampled = False
        self._waiting = []
        self._loops = []
        self._stopped = False

    @property
    def scrape_token(self):
        token = self._scrape_token
        return token.current() if isinstance(token, TokenFile) else token

    # --- lifetime --------------------------------------------------------------

    def start(self):
        self.workers.start()
        db = self.db
        kinds = {row.fields["uuid"]: kind for kind, table in
                 ((HOST, "host"), (VM, "VM"), (SR, "SR"))
                 for row in db.table(table).rows.values()}
        host_uuid = db.fields("host", self.identity.host_ref)["uuid"]
        # Read off the reactor before the first sample (the listeners
        # wait for it).
        d = self._restoring = self.run(self._restore, kinds.get, host_uuid)
        # A slave that lost its own takes the master's copies first.
        d.addCallback(lambda _: self.handover.restore_host(
            self.facts().srs))
        d.addCallback(lambda _: self._start_loops())
        d.addErrback(lambda f: log.failure("metrics: starting", f))

    def _restore(self, kind_of, host_uuid):
        saved = self.archives.load(kind_of)
        kept = [o for o in saved if o[3].step == self.step]
        if len(kept) < len(saved):
            # Rows of another step cannot join this one's, and /rrd_updates
            # would leave out every RRD whose step is not the host's.
            log.warn("metrics: {n} saved RRDs have another step than "
                     "{step} s: starting them afresh",
                     n=len(saved) - len(kept), step=self.step)
        self.store.restore(kept, host_uuid)

    def _start_loops(self):
        if self._stopped:
            return      # stopped while the master's copy was awaited
        for interval, fn, now in ((self.step, self.sample, True),
                                  (self.save_interval, self._save_now,
                                   False),
                                  (self.backup_interval, self._backup_now,
                                   False)):
            loop = task.LoopingCall(fn)
            loop.clock = self.clock
            loop.start(interval, now=now).addErrback(
                lambda f: log.failure("metrics loop", f))
            self._loops.append(loop)

    @defer.inlineCallbacks
    def stop(self):
        self._stopped = True
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        if self._sampling is not None:
            yield self._sampling
        if self._saving is not None:
            yield self._saving
        if self._restoring is not None:
            # (Saving before all is read back would remove the rest.)
            yield self._restoring
        try:
            yield self.save()
            yield self.handover.backup(STOP_TIMEOUT, host_only=True)
        finally:
            self.workers.stop()

    def first_sample(self, timeout=FIRST_SAMPLE_WAIT):
        """A Deferred that fires once the first sample since the start has
        been archived (or has failed), or after ``timeout`` seconds.  The
        service opens its listeners after it: XAPI serves only once
        xcp-rrdd runs, which samples as it starts, so a client never finds
        a new host without RRDs (No_RRA_Available)."""
        if self._sampled:
            return defer.succeed(None)
        d = defer.Deferred()
        d.addTimeout(timeout, self.clock, onTimeoutCancel=lambda *_: None)
        self._waiting.append(d)
        return d

    def run(self, fn, *args):
        """``fn(*args)`` on the metrics threads (a Deferred)."""
        return self.workers.run(fn, *args)

    # --- one sample --------------------------------------------------------------

    def sample(self):
        if self._sampling is not None:
            return None     # the last one is still being archived
        facts = self.facts()
        d = self.xenops.call("sample_metrics", list(facts.pifs))
        d.addCallback(self._archive, facts)
        d.addCallback(self._raise_alarms)
        d.addErrback(lambda f: log.failure("metrics sample", f))

        def done(_):
            self._sampling = None
            self._sampled = True
            waiting, self._waiting = self._waiting, []
            for w in waiting:
                if not w.called:
                    w.callback(None)
        d.addBoth(done)
        self._sampling = d
        return None

    @defer.inlineCallbacks
    def _archive(self, stats, facts):
        """The sample archived (once the master's RRDs of VMs and SRs new
        here are in), then the RRDs of the VMs gone sent where they went; the
        alarms due."""
        yield self.handover.arriving([d.uuid for d in stats.domains],
                                     facts.srs)
        alarms, moved = yield self.run(self.archive, stats, facts)
        self.handover.left(*moved)
        return alarms

    def facts(self):
        db, host_ref = self.db, self.identity.host_ref
        f = Facts()
        host = db.fields("host", host_ref)
        f.host = host["uuid"]
        dom0 = host["control_domain"]
        f.control_domain = db.fields("VM", dom0)["uuid"] \
            if db.exists("VM", dom0) else None
        f.pifs = sorted(row.fields["device"] for row in
                        db.table("PIF").rows.values()
                        if row.fields["host"] == host_ref)
        f.srs = {}
        for row in db.table("PBD").rows.values():
            pbd = row.fields
            if pbd["host"] == host_ref and pbd["currently_attached"] and \
                    db.exists("SR", pbd["SR"]):
                sr = db.fields("SR", pbd["SR"])
                f.srs[sr["uuid"]] = (sr["physical_utilisation"],
                                     sr["physical_size"])
        vm_uuids = {ref: row.fields["uuid"]
                    for ref, row in db.table("VM").rows.items()}
        f.vbd_srs = {}
        for row in db.table("VBD").rows.values():
            vbd = row.fields
            if vbd["currently_attached"] and vbd["VDI"] != NULL_REF and \
                    db.exists("VDI", vbd["VDI"]):
                sr = db.fields("VDI", vbd["VDI"])["SR"]
                if db.exists("SR", sr):
                    f.vbd_srs[(vm_uuids.get(vbd["VM"]), vbd["device"])] = \
                        db.fields("SR", sr)["uuid"]
        pool = db.fields("pool", self.identity.pool_ref)
        f.min_max = pool["other_config"].get(MIN_MAX_KEY) == "true"
        f.perfmon = {}
        for kind, table in ((HOST, "host"), (VM, "VM"), (SR, "SR")):
            for row in db.table(table).rows.values():
                text = row.fields["other_config"].get("perfmon")
                if text:
                    f.perfmon[(kind, row.fields["uuid"])] = text
        return f

    def archive(self, stats, facts):
        """On a metrics thread: the sample into the RRDs; (the alarms
        due, (the uuids of the VMs whose domains went, of those whose
        domains came))."""
        if stats.unavailable != self.unavailable:
            for what, why in stats.unavailable.items():
                log.warn("metrics: {what} not collected: {why}", what=what,
                         why=why)
            self.unavailable = dict(stats.unavailable)
        io = self.traffic.advance(stats.domains, facts.vbd_srs)
        host = (facts.host,) + sources.readings_host(stats, io)
        vms = [(d.uuid, d.domid) + sources.readings_vm(d)
               for d in stats.domains]
        if stats.control_domain is not None and facts.control_domain:
            vms.append((facts.control_domain, 0) +
                       sources.readings_vm(stats.control_domain))
        srs = []
        for uuid, (used, size) in facts.srs.items():
            read, written, _ = io.get(uuid, (0, 0, 0))
            srs.append((uuid,) + sources.readings_sr(used, size, read,
                                                     written))
        moved = self.store.update(stats.time, host, vms, srs, facts.min_max)
        self.perfmon.configure(facts.perfmon, stats.time)
        if not self.perfmon.monitors:
            return [], moved
        return self.perfmon.evaluate(self.store.latest(), stats.time), moved

    @defer.inlineCallbacks
    def _raise_alarms(self, alarms):
        for priority, cls, uuid, body in alarms:
            try:
                yield self.messages.create("ALARM", priority, cls, uuid,
                                           body)
            except Exception:
                log.failure("raising an ALARM for {cls} {uuid}", cls=cls,
                            uuid=uuid)

    # --- keeping -------------------------------------------------------------------

    def _save_now(self):
        """The periodic save, in the background as a sample is: the loop
        waits for nothing that a thread finishes (a LoopingCall waiting
        on a thread's Deferred reschedules itself from that thread where
        the reactor is a test's clock)."""
        if self._saving is not None:
            return      # the last one is still being written
        d = self._saving = self.save()
        d.addErrback(lambda f: log.failure("metrics save", f))

        def done(_):
            self._saving = None
        d.addBoth(done)

    def _backup_now(self):
        # In the background, as the periodic save.
        self.handover.backup().addErrback(
            lambda f: log.failure("metrics backup", f))

    def save(self):
        known = [{row.fields["uuid"] for row in self.db.table(t).rows.values()}
                 for t in ("VM", "SR", "host")]
        return self.run(self._save, *known)

    def _save(self, vms, srs, hosts):
        self.store.prune(vms, srs, hosts)
        state = self.archives.state
        self.archives.save(self.store.uuids(), lambda uuid, written:
                           self.store.copy_if_behind(uuid, written, state))
