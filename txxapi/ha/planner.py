"""
The failover planner as pure functions: given live hosts with their free
memory, protected (agile) VMs with the memory a restart needs, where each
runs now, and a number of host failures r, may every protected VM always
be restarted on the survivors?

It answers as XAPI's binpacker does, including its choice between two
strategies: for at most 32 hosts and fewer than 3,500 ordered failure
sequences (nCr x r!) every sequence of r host failures is simulated, each
failure packing the dead host's VMs onto the survivors biggest-first onto
the emptiest host; otherwise a conservative bound is used (every VM as big
as the biggest, the r biggest hosts fail, carrying the r largest VM
counts).  Ties are broken as XAPI's stable sorts break them, so the
simulated placements, and hence the answers, are the same.

XAPI rebuilds sorted lists and searches association lists for every VM;
here the bins are a heap and the failure sequences a depth-first search
that shares each prefix's simulation, which keeps 64 hosts x 4,096 VMs
well under a second.
"""

import heapq
from collections import namedtuple

INT64_MAX = (1 << 63) - 1
EXHAUSTIVE_LIMIT = 3500
EXHAUSTIVE_MAX_HOSTS = 32

EXHAUSTIVE = "exhaustive"
APPROXIMATE = "approximate"


class Overflow(ArithmeticError):
    """A count past what a signed 64-bit integer holds (XAPI then falls
    back to the approximate strategy)."""


class ZeroSizedVMs(ArithmeticError):
    """The approximate bound divides by the biggest VM's size; XAPI's
    planner fails on zero and reports that no plan exists."""


# hosts: [(host, free bytes)] in the caller's order (XAPI sorts by uuid);
# vms: {vm: bytes needed}; placement: [(vm, host)] in the caller's order,
# hosts all live; total_hosts: the pool's size; num_failures: r.
Configuration = namedtuple(
    "Configuration", "hosts vms placement total_hosts num_failures")


def _wrap64(value):
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


def _checked(value):
    # XAPI's checked int64 arithmetic: a wrapped result below zero raises.
    value = _wrap64(value)
    if value < 0:
        raise Overflow()
    return value


def binomial(n, r):
    """nCr, raising Overflow past int64 (e.g. 68C34) as XAPI does."""
    if r < 0 or r > n:
        raise ValueError("binomial(%d, %d)" % (n, r))
    row = [1]
    for i in range(1, n + 1):
        row = [1] + [_checked(row[j - 1] + row[j]) for j in range(1, i)] \
            + [1]
    return row[r]


def factorial(r):
    result = 1
    for x in range(1, r + 1):
        result = _checked(result * x)
    return result


def choose_strategy(total_hosts, num_failures):
    if total_hosts > EXHAUSTIVE_MAX_HOSTS:
        return APPROXIMATE
    try:
        count = _checked(binomial(total_hosts, num_failures)
                         * factorial(num_failures))
    except Overflow:
        return APPROXIMATE
    return EXHAUSTIVE if count < EXHAUSTIVE_LIMIT else APPROXIMATE


def biggest_fit_decreasing(things, bins):
    """things: [(id, size)]; bins: [(id, free)].  Each thing, biggest
    first, goes to the bin with most room if it fits there, else is left
    out.  Returns ({thing: bin}, {bin: free left})."""
    order = sorted(range(len(things)), key=lambda i: -things[i][1])
    heap = []
    for rank, i in enumerate(sorted(range(len(bins)),
                                    key=lambda i: -bins[i][1])):
        # Among equal bins the earlier one wins; a bin put back after an
        # allocation goes before its equals, as XAPI's list insert does.
        heap.append((-bins[i][1], -(len(bins) - rank), bins[i][0]))
    heapq.heapify(heap)
    stamp = len(bins)
    mapping = {}
    for i in order:
        if not heap:
            break
        thing, size = things[i]
        free, _, bin_id = heap[0]
        if size > -free:
            continue
        stamp += 1
        heapq.heapreplace(heap, (free + size, -stamp, bin_id))
        mapping[thing] = bin_id
    return mapping, {b: -f for f, _, b in heap}


def pack(config, failed_vms):
    """A restart plan {vm: host} for failed_vms on config's hosts; VMs
    that fit nowhere are left out."""
    things = [(vm, config.vms[vm]) for vm in failed_vms]
    return biggest_fit_decreasing(things, config.hosts)[0]


def apply_plan(config, plan):
    """The configuration after the plan's VMs started where it says."""
    used = {}
    for vm, host in plan.items():
        used[host] = used.get(host, 0) + config.vms[vm]
    hosts = [(h, free - used.get(h, 0)) for h, free in config.hosts]
    # XAPI's plan lists the last allocation first, and the planned VMs
    # precede the others; placement order breaks later ties.
    placement = list(reversed(plan.items())) + \
        [(vm, h) for vm, h in config.placement if vm not in plan]
    return config._replace(hosts=hosts, placement=placement)


def trivially_never_possible(config):
    n = len(config.hosts)
    return n < config.num_failures or \
        (n == config.num_failures and bool(config.vms))


def plan_always_possible(config, strategy=None):
    """True when every protected VM can be restarted after any
    config.num_failures host failures, by the strategy XAPI would pick."""
    strategy = strategy or choose_strategy(config.total_hosts,
                                           config.num_failures)
    if trivially_never_possible(config):
        return False
    if strategy == EXHAUSTIVE:
        return _every_sequence_survivable(config)
    return _approximation_holds(config)


def _approximation_holds(config):
    if not config.vms:
        return True
    biggest = max(config.vms.values())
    if biggest <= 0:
        raise ZeroSizedVMs()
    capacity = sorted((_trunc_div(free, biggest) for _, free in config.hosts),
                      reverse=True)
    left = sum(capacity[config.num_failures:])
    counts = {h: 0 for h, _ in config.hosts}
    for _, h in config.placement:
        if h in counts:
            counts[h] += 1
    moving = sum(sorted(counts.values(), reverse=True)[:config.num_failures])
    return moving <= left


def _trunc_div(a, b):
    # OCaml's Int64.div rounds towards zero.
    q = abs(a) // b
    return q if a >= 0 else -q


class _World:
    """The mutable state a failure sequence is simulated on: free memory
    per host and, per host, the VMs on it (ordered by placement rank, as
    XAPI keeps VMs in placement order, which decides ties), their total
    and their biggest."""

    def __init__(self, config):
        self.order = [h for h, _ in config.hosts]      # XAPI's host order
        self.free = dict(config.hosts)
        self.size = config.vms
        self.rank = {vm: i for i, (vm, _) in enumerate(config.placement)}
        self.on = {h: [] for h in self.order}
        self.load = {h: 0 for h in self.order}
        self.biggest = {h: 0 for h in self.order}
        for vm, h in config.placement:
            self._add(vm, h)
        self.dead = set()

    def _add(self, vm, host):
        size = self.size[vm]
        self.on[host].append(vm)
        self.load[host] += size
        self.biggest[host] = max(self.biggest[host], size)

    def _survivors(self, host):
        return [h for h in self.order if h not in self.dead and h != host]

    def absorbable(self, host):
        """Whether host's failure can be absorbed, without changing the
        world.  Worst-fit always finds room while the survivors' total
        room, less the failed total, is at least (k - 1) times the biggest
        failed VM (the fullest-roomed of k bins holds at least the
        average), so a full packing is needed only near the limit."""
        survivors = self._survivors(host)
        if not self.on[host]:
            return True
        room = sum(self.free[h] for h in survivors)
        if survivors and room - self.load[host] >= \
                (len(survivors) - 1) * self.biggest[host]:
            return True
        record = self.fail(host)
        if record is None:
            return False
        self.undo(record)
        return True

    def fail(self, host):
        """Restart host's VMs on the live ones; return an undo record, or
        None when some VM fits nowhere (the world is then unchanged)."""
        before = self.on[host]
        failed = sorted(before, key=self.rank.__getitem__)
        bins = [(h, self.free[h]) for h in self._survivors(host)]
        mapping, _ = biggest_fit_decreasing(
            [(vm, self.size[vm]) for vm in failed], bins)
        if len(mapping) != len(failed):
            return None
        saved = (before, self.load[host], self.biggest[host],
                 {h: (self.load[h], self.biggest[h]) for h in bins_of(bins)})
        self.dead.add(host)
        self.on[host] = []
        self.load[host] = self.biggest[host] = 0
        for vm in failed:
            target = mapping[vm]
            self.free[target] -= self.size[vm]
            self._add(vm, target)
        return host, failed, mapping, saved

    def undo(self, record):
        host, failed, mapping, (before, load, biggest, others) = record
        for vm in reversed(failed):
            target = mapping[vm]
            self.free[target] += self.size[vm]
            self.on[target].pop()
        for h, (hload, hbig) in others.items():
            self.load[h], self.biggest[h] = hload, hbig
        self.on[host] = before
        self.load[host], self.biggest[host] = load, biggest
        self.dead.discard(host)


def bins_of(bins):
    return [b for b, _ in bins]


def _every_sequence_survivable(config):
    """Every ordered sequence of num_failures distinct host failures can
    be absorbed.  XAPI walks each permutation of each combination from
    scratch; a depth-first search simulates each prefix once, and the
    last failure of a sequence is only checked, not simulated."""
    world = _World(config)

    def survive(depth):
        if depth == 0:
            return True
        for host in world.order:
            if host in world.dead:
                continue
            if depth == 1:
                if not world.absorbable(host):
                    return False
                continue
            record = world.fail(host)
            if record is None:
                return False
            ok = survive(depth - 1)
            world.undo(record)
            if not ok:
                return False
        return True

    return survive(config.num_failures)


# --- XAPI's plan_for_n_failures over a pool's planning state -----------------

PLAN_FOR_ALL = "all"
PLAN_EXCLUDING_NON_AGILE = "excluding-non-agile"
NO_PLAN = "none"

# hosts: [(host, free bytes)] live hosts in uuid order, pinned non-agile
# VMs already subtracted; total_hosts: every host of the pool; vms: {vm:
# bytes} agile protected VMs; placement: [(vm, host)] those running on a
# live host, in VM uuid order; offline: [vm] the others, in VM uuid order;
# non_agile: whether protected non-agile VMs exist.
PoolState = namedtuple(
    "PoolState", "hosts total_hosts vms placement offline non_agile")


def restart_plan(state, num_failures):
    """(plan {vm: host} for the offline VMs, the configuration after it,
    [vm] that could not be placed)."""
    config = Configuration(list(state.hosts), dict(state.vms),
                           list(state.placement), state.total_hosts,
                           num_failures)
    plan = pack(config, state.offline)
    return plan, apply_plan(config, plan), \
        [vm for vm in state.offline if vm not in plan]


def plan_for_n_failures(state, n):
    if n < 0 or n > state.total_hosts:
        return NO_PLAN      # XAPI's configuration check fails
    _, config, not_restarted = restart_plan(state, n)
    if not_restarted:
        return NO_PLAN
    try:
        possible = plan_always_possible(config)
    except ZeroSizedVMs:
        return NO_PLAN
    if not possible:
        return NO_PLAN
    return PLAN_EXCLUDING_NON_AGILE if state.non_agile else PLAN_FOR_ALL


def max_failures_to_tolerate(state, upper=None):
    """The largest n in [0, upper] (default: the pool's size) with a plan
    for all protected VMs, found by XAPI's bisection (which assumes a
    plan for n means one for every smaller n, and answers 0 when even 0
    has none)."""
    def ok(n):
        return plan_for_n_failures(state, n) == PLAN_FOR_ALL
    lower, upper = 0, state.total_hosts if upper is None else upper
    while upper - lower >= 2:
        mid = (lower + upper) // 2
        if ok(mid):
            lower = mid
        else:
            upper = mid
    return upper if ok(upper) else lower
