"""
The server's parts are built from the collaborators they use, without a
Server, and the forwarding layer runs a call as its rule says.
"""

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from txxapi import interfaces
from txxapi.api.context import Context
from txxapi.api.sessions import SessionManager
from txxapi.api.tasks import TaskManager
from txxapi.datamodel import MODEL
from txxapi.db.memory import Database
from txxapi.errors import XenAPIError
from txxapi.events import EventHub
from txxapi.forwarding import Forwarder
from txxapi.forwarding.registry import RULES, Route
from txxapi.identity import HostIdentity
from txxapi.messages import MessageStore
from txxapi.storage import Storage


@pytest.fixture
def parts(tmp_path):
    db = Database(MODEL)
    identity = HostIdentity(str(tmp_path))
    identity.host_ref = "OpaqueRef:this-host"
    clock = Clock()
    tasks = TaskManager(db, identity, clock=clock)
    events = EventHub(db, clock)
    storage = Storage(db, identity, clock, tasks)
    return {
        "db": db, "identity": identity, "clock": clock, "tasks": tasks,
        "events": events, "storage": storage,
        "sessions": SessionManager(db, identity, tasks, portal=None,
                                   clock=clock),
        "messages": MessageStore(db, events, clock,
                                 str(tmp_path / "messages")),
        "forwarder": Forwarder(identity, db, clock, storage),
    }


def test_each_part_is_built_alone_and_provides_its_interface(parts):
    for name, iface in [("db", interfaces.IDatabase),
                        ("identity", interfaces.IHostIdentity),
                        ("tasks", interfaces.ITasks),
                        ("events", interfaces.IEvents),
                        ("storage", interfaces.IStorageBridge),
                        ("sessions", interfaces.ISessions),
                        ("messages", interfaces.IMessages),
                        ("forwarder", interfaces.IForwarder)]:
        assert verifyObject(iface, parts[name]), name


def test_every_rule_names_a_message_of_the_datamodel():
    assert "VM.start" in RULES and "VDI.create" in RULES
    assert all(name in MODEL.messages for name in RULES)


class _Server:
    """Only what a Context reads."""

    def __init__(self, parts):
        self.db = parts["db"]
        self.tasks = parts["tasks"]
        self.host_ref = parts["identity"].host_ref


def test_a_message_without_a_rule_passes_straight_through(parts):
    ctx = Context(_Server(parts), message=MODEL.messages["VM.get_all"])
    assert parts["forwarder"].execute(
        ctx, lambda ctx, *args: ("ran", args), [1, 2]) == ("ran", (1, 2))


def test_a_route_to_a_host_that_is_not_live_is_refused_and_runs_nothing(
        parts):
    ctx = Context(_Server(parts), message=MODEL.messages["VM.start_on"])
    ran = []
    for call, code in [(None, "NOT_IMPLEMENTED"),
                       (("VM.start_on", []), "HOST_OFFLINE")]:
        with pytest.raises(XenAPIError) as e:
            parts["forwarder"].run(ctx, Route("OpaqueRef:other-host"),
                                   lambda: ran.append(1), call)
        assert e.value.code == code and not ran