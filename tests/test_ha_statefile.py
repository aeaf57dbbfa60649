"""xhad's survival rules for a host that has lost the statefile."""

from txxapi.ha.statefile import survives_without

HOSTS = {"a", "b", "c"}


def test_a_host_alone_without_it_does_not_survive():
    assert not survives_without("a", HOSTS, HOSTS, {"b", "c"})
    assert not survives_without("a", HOSTS, HOSTS, {"c"})


def test_lost_everywhere_every_host_in_the_liveset_survives():
    assert survives_without("a", HOSTS, HOSTS, set())
    # What it said itself before it lost it is not another host's.
    assert survives_without("a", HOSTS, HOSTS, {"a"})


def test_lost_everywhere_with_a_member_missing_does_not_survive():
    assert not survives_without("a", {"a", "b"}, HOSTS, set())


def test_hosts_out_of_the_membership_are_not_waited_for():
    # A leaver (emergency_ha_disable) is no member any more.
    assert survives_without("a", {"a", "b"}, {"a", "b"}, set())
