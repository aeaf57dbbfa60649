"""
A slave's cache of the master's word on client sessions (txxapi.redirect.
sessions), on an in-process server made a slave: the master's answers to
``pool.http_caller`` come from the test, which sees every question asked.
What the old master vouched for goes when the host learns of a new one.
"""

import json

import pytest
from twisted.internet import defer

from tests.support.inprocess import make_server
from txxapi.pool import join as pool_join
from txxapi.pool import transition
from txxapi.pool.role import SLAVE, Role
from txxapi.redirect import remote

OLD, NEW = "127.0.99.2", "127.0.99.3"
CLIENT_SESSION = "OpaqueRef:client-session"
VOUCHED = {"auth_user_name": "root", "originator": "tests",
           "is_local_superuser": True, "subject": "OpaqueRef:NULL",
           "auth_user_sid": "", "rbac_permissions": []}


class Master:
    """What the master at each address is asked; its answers on demand."""

    def __init__(self):
        self.asked = []     # (address, method), Deferred

    def call(self, address, method, *args):
        d = defer.Deferred()
        self.asked.append(((address, method), d))
        return d

    def answer(self, i=-1):
        self.asked[i][1].callback(json.dumps({"session": VOUCHED}))


@pytest.fixture
def slave(tmp_path, monkeypatch):
    server, clock = make_server(tmp_path)
    server.identity.role = Role(SLAVE, OLD)
    server.peers = master = Master()
    # A change of role restarts the process: not this one's.
    monkeypatch.setattr(pool_join, "restart", lambda *a, **kw: None)
    yield server, master
    server.stop()


def ask(server):
    d = remote.local_session(server, CLIENT_SESSION, "")
    results = []
    d.addBoth(results.append)
    return results


def asked_of(master):
    return [who for who, _ in master.asked]


def test_a_vouched_session_is_taken_again_without_asking(slave):
    server, master = slave
    first = ask(server)
    master.answer()
    assert first and first[0][0].startswith("OpaqueRef:")
    assert ask(server)[0][0].startswith("OpaqueRef:")
    assert asked_of(master) == [(OLD, remote.CALLER_CALL)]


@pytest.mark.parametrize("change", ["followed in place", "committed"])
def test_a_new_master_is_asked_again(slave, change):
    server, master = slave
    ask(server)
    master.answer()
    if change == "followed in place":
        # HA: a slave follows the new holder of the mastership.
        server.identity.role = Role(SLAVE, NEW)
        expected = NEW
    else:
        # designate_new_master's commit, recover_slaves' reset: the
        # process restarts into its new role a moment later, and until
        # then asks the old master again rather than trust its cache.
        transition.become_slave_of(server, NEW)
        expected = OLD
    pending = ask(server)
    assert pending == []
    assert asked_of(master)[1:] == [(expected, remote.CALLER_CALL)]
    master.answer()
    assert pending[0][0].startswith("OpaqueRef:")


def test_an_answer_from_before_the_change_is_not_kept(slave):
    server, master = slave
    in_flight = ask(server)
    server.identity.role = Role(SLAVE, NEW)
    master.answer()
    # The request it was asked for goes on; the next asks the new master.
    assert in_flight[0][0].startswith("OpaqueRef:")
    assert ask(server) == []
    assert asked_of(master) == [(OLD, remote.CALLER_CALL),
                                (NEW, remote.CALLER_CALL)]
