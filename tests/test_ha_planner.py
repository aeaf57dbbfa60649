"""The failover planner against hand-worked configurations: XAPI's
binpacking with its tie-breaks, its choice of strategy (including nCr
overflow), the two strategies where they disagree, and the bisection for
the number of failures a pool tolerates."""

import pytest

from txxapi.ha import planner
from txxapi.ha.planner import (
    APPROXIMATE, EXHAUSTIVE, Configuration, Overflow, PoolState)


def config(hosts, vms, placement, r, total=None):
    return Configuration(hosts, vms, placement,
                         len(hosts) if total is None else total, r)


def test_biggest_fit_decreasing_biggest_first_onto_emptiest():
    mapping, left = planner.biggest_fit_decreasing(
        [("a", 3), ("b", 5), ("c", 2)], [("x", 6), ("y", 4)])
    # b(5)->x leaves 1; a(3)->y leaves 1; c(2) fits nowhere.
    assert mapping == {"b": "x", "a": "y"}
    assert left == {"x": 1, "y": 1}


def test_ties_break_as_xapi_stable_sorts_and_insert():
    # Equal bins: the earlier one first.
    assert planner.biggest_fit_decreasing(
        [("a", 1)], [("x", 4), ("y", 4)])[0] == {"a": "x"}
    # A bin put back goes before the bins equal to it: x(5)->4 beats y(4).
    assert planner.biggest_fit_decreasing(
        [("a", 1), ("b", 1)], [("x", 5), ("y", 4)])[0] == \
        {"a": "x", "b": "x"}
    # Equal things keep their given order.
    mapping = planner.biggest_fit_decreasing(
        [("p", 2), ("q", 2)], [("x", 3), ("y", 2)])[0]
    assert mapping == {"p": "x", "q": "y"}


def test_binomial_and_its_overflow():
    assert planner.binomial(5, 2) == 10
    assert planner.binomial(66, 33) == 7219428434016265740
    with pytest.raises(Overflow):
        planner.binomial(67, 33)        # 1.4e19 > int64
    with pytest.raises(Overflow):
        planner.binomial(68, 34)
    assert planner.factorial(20) == 2432902008176640000
    with pytest.raises(Overflow):
        planner.factorial(21)


def test_strategy_choice():
    assert planner.choose_strategy(3, 1) == EXHAUSTIVE
    assert planner.choose_strategy(16, 3) == EXHAUSTIVE     # 560 x 6 = 3360
    assert planner.choose_strategy(16, 4) == APPROXIMATE    # 1820 x 24
    assert planner.choose_strategy(32, 1) == EXHAUSTIVE
    assert planner.choose_strategy(33, 1) == APPROXIMATE    # > 32 hosts
    assert planner.choose_strategy(32, 21) == APPROXIMATE   # 21! overflows
    assert planner.choose_strategy(1, 0) == EXHAUSTIVE


# Two VMs of 1 on A, the biggest VM (2) on B, C empty; free A:2 B:0 C:2.
SMALL_AND_BIG = config([("A", 2), ("B", 0), ("C", 2)],
                       {"v1": 1, "v2": 1, "big": 2},
                       [("v1", "A"), ("v2", "A"), ("big", "B")], 1)


def test_exhaustive_and_approximate_disagree():
    # Any one failure can be absorbed: A's two VMs fit on C, B's on A.
    assert planner.plan_always_possible(SMALL_AND_BIG, EXHAUSTIVE)
    # The bound takes every VM as big as the biggest (2): A and C hold
    # one each, the biggest host fails, 1 slot is left for A's 2 VMs.
    assert not planner.plan_always_possible(SMALL_AND_BIG, APPROXIMATE)
    # 3 hosts and 1 failure: XAPI simulates every failure.
    assert planner.plan_always_possible(SMALL_AND_BIG)
    # The same pool with 33 hosts' worth of pool size takes the bound.
    assert not planner.plan_always_possible(SMALL_AND_BIG._replace(
        total_hosts=33))


def test_failure_order_matters_in_the_exhaustive_search():
    # A holds 2, B holds 2 (free 1 each), C free 3.  A then B: A's VM to
    # C (1 left), B's VM fits nowhere; no sequence of two survives.
    c = config([("A", 1), ("B", 1), ("C", 3)], {"a": 2, "b": 2},
               [("a", "A"), ("b", "B")], 2)
    assert not planner.plan_always_possible(c, EXHAUSTIVE)
    assert planner.plan_always_possible(c._replace(num_failures=1),
                                        EXHAUSTIVE)
    # More room on C alone is not enough (A, then C with A's VM, fails);
    # with 2 free on A and B every order survives.
    assert not planner.plan_always_possible(
        c._replace(hosts=[("A", 1), ("B", 1), ("C", 4)]), EXHAUSTIVE)
    roomy = c._replace(hosts=[("A", 2), ("B", 2), ("C", 4)])
    assert planner.plan_always_possible(roomy, EXHAUSTIVE)


def test_trivially_impossible():
    one = config([("A", 10)], {"v": 1}, [("v", "A")], 1)
    assert not planner.plan_always_possible(one)
    assert planner.plan_always_possible(one._replace(num_failures=0))
    assert planner.plan_always_possible(one._replace(vms={}, placement=[]))


def test_zero_sized_vms_have_no_plan_in_the_approximation():
    state = PoolState([("A", 5), ("B", 5)], 40, {"v": 0}, [("v", "A")], [],
                      False)
    assert planner.plan_for_n_failures(state, 1) == planner.NO_PLAN


def test_offline_vms_are_placed_first():
    state = PoolState([("A", 4), ("B", 4)], 2, {"x": 3, "y": 3}, [],
                      ["x", "y"], False)
    plan, after, left = planner.restart_plan(state, 1)
    assert plan == {"x": "A", "y": "B"} and left == []
    assert dict(after.hosts) == {"A": 1, "B": 1}
    # Each host now carries a 3 and has 1 free: no single failure fits.
    assert planner.plan_for_n_failures(state, 0) == planner.PLAN_FOR_ALL
    assert planner.plan_for_n_failures(state, 1) == planner.NO_PLAN
    crowded = state._replace(offline=["x", "y", "z"],
                             vms={"x": 3, "y": 3, "z": 3})
    assert planner.plan_for_n_failures(crowded, 0) == planner.NO_PLAN


def test_max_failures_to_tolerate():
    # One host with room: nothing can fail, so 0.
    one = PoolState([("A", 8)], 1, {"v": 2}, [("v", "A")], [], False)
    assert planner.max_failures_to_tolerate(one) == 0
    # No protected VMs: every host may fail.
    assert planner.max_failures_to_tolerate(
        one._replace(vms={}, placement=[])) == 1
    # Four hosts holding a 1 each with 2 free: any 2 may fail in any
    # order, not 3 (the survivor would need room for 3 more).
    four = PoolState([(h, 2) for h in "ABCD"], 4,
                     {h.lower(): 1 for h in "ABCD"},
                     [(h.lower(), h) for h in "ABCD"], [], False)
    assert planner.plan_for_n_failures(four, 2) == planner.PLAN_FOR_ALL
    assert planner.plan_for_n_failures(four, 3) == planner.NO_PLAN
    assert planner.max_failures_to_tolerate(four) == 2
    # Non-agile protected VMs never count as a plan for all.
    assert planner.max_failures_to_tolerate(
        four._replace(non_agile=True)) == 0


def test_same_answers_as_a_direct_port_of_xapi_on_random_pools():
    """The heap, the shared prefixes and the quick acceptance of a last
    failure change no answer: compare with the list-based port of XAPI's
    binpacker (the benchmark's baseline) on many small, tight pools."""
    import random
    from benchmarks.bench_ha_planner import Baseline
    rng = random.Random(20)
    for case in range(300):
        hosts = ["h%d" % i for i in range(rng.randint(1, 6))]
        vms = {"v%02d" % i: rng.randint(1, 8)
               for i in range(rng.randint(0, 14))}
        placement, offline = [], []
        for vm in sorted(vms):
            if rng.random() < 0.15:
                offline.append(vm)
            else:
                placement.append((vm, rng.choice(hosts)))
        free = [(h, rng.randint(-2, 14)) for h in hosts]
        state = PoolState(free, len(hosts) + rng.choice((0, 0, 1)), vms,
                          placement, offline, False)
        # The port's answers for every n its bisection may ask about,
        # each searched once: its max_failures reads them back.
        baseline = Baseline(60)
        theirs = {n: Baseline.plan_for_n(baseline, state, n)
                  for n in range(state.total_hosts + 1)}
        baseline.plan_for_n = lambda state, n: theirs[n]
        for n in range(len(hosts) + 1):
            ours = planner.plan_for_n_failures(state, n) == \
                planner.PLAN_FOR_ALL
            assert ours == theirs[n], (case, n, state)
        assert planner.max_failures_to_tolerate(state) == \
            baseline.max_failures(state)
