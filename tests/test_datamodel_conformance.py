"""
Holds txxapi's datamodel against the published XenAPI description in
shared/xenapi (beside the checkout, never committed).  Every difference is
reported by name.
"""

import json
import os

import pytest

from txxapi.datamodel import MODEL
from txxapi.datamodel.schema import PUBLISHED

SHARED = os.environ.get("TXXAPI_SHARED") or os.path.join(
    os.path.dirname(__file__), os.pardir, os.pardir, "shared")
API_JSON = os.path.join(SHARED, "xenapi", "xenapi.json")
ERRORS_JSON = os.path.join(SHARED, "xenapi", "errors.json")

pytestmark = pytest.mark.skipif(
    not os.path.exists(API_JSON),
    reason="shared/xenapi/xenapi.json is not beside the checkout")


@pytest.fixture(scope="module")
def api():
    with open(API_JSON) as f:
        return {c["name"]: c for c in json.load(f)}


@pytest.fixture(scope="module")
def errors():
    with open(ERRORS_JSON) as f:
        return {e["name"]: e for e in json.load(f)}


def test_classes(api):
    ours = {n for n in MODEL.classes}
    assert sorted(set(api) - ours) == [], "classes missing from our model"
    assert sorted(ours - set(api)) == [], "classes not in the description"


def test_class_lifecycle(api):
    diffs = [n for n, c in api.items()
             if MODEL.cls(n).state != c["lifecycle"]["state"]]
    assert diffs == []


def test_fields(api):
    diffs = []
    for name, c in api.items():
        ours = {f.name: f for f in MODEL.cls(name).fields.values()
                if not f.internal}
        theirs = {f["name"]: f for f in c["fields"]}
        for n in sorted(set(theirs) - set(ours)):
            diffs.append("%s.%s missing" % (name, n))
        for n in sorted(set(ours) - set(theirs)):
            diffs.append("%s.%s extra" % (name, n))
        for n in sorted(set(ours) & set(theirs)):
            f, t = ours[n], theirs[n]
            for what, a, b in (
                    ("type", f.type_text, t["type"]),
                    ("parsed type", str(f.type), t["type"]),
                    ("qualifier", f.qualifier, t["qualifier"]),
                    ("default", f.default_literal, t.get("default")),
                    ("state", f.state, t["lifecycle"]["state"])):
                if a != b:
                    diffs.append("%s.%s %s: ours %r, theirs %r"
                                 % (name, n, what, a, b))
    assert diffs == []


def _their_params(m):
    return [(p["type"], p["name"]) for p in m["params"]]


def _our_params(m):
    params = [(p.type_text, p.name) for p in m.params]
    if m.session:
        params.insert(0, ("session ref", "session_id"))
    return params


def test_messages(api):
    diffs = []
    for name, c in api.items():
        cls = MODEL.cls(name)
        ours = {n: m for n, m in cls.messages.items() if not m.hidden}
        theirs = {m["name"]: m for m in c["messages"]}
        for n in sorted(set(theirs) - set(ours)):
            diffs.append("%s.%s missing" % (name, n))
        for n in sorted(set(ours) - set(theirs)):
            diffs.append("%s.%s extra" % (name, n))
        for n in sorted(set(ours) & set(theirs)):
            m, t = ours[n], theirs[n]
            for what, a, b in (
                    ("params", _our_params(m), _their_params(t)),
                    ("result", m.result_text, t["result"][0]),
                    ("parsed result", str(m.result), t["result"][0]),
                    ("roles", list(m.roles), t["roles"]),
                    ("errors", list(m.errors),
                     [e["name"] for e in t["errors"]]),
                    ("implicit", m.implicit, t["implicit"]),
                    ("state", m.state, t["lifecycle"]["state"])):
                if a != b:
                    diffs.append("%s.%s %s: ours %r, theirs %r"
                                 % (name, n, what, a, b))
    assert diffs == []


def test_enums(api):
    diffs = []
    for name, c in api.items():
        ours = {e.name: e.values for e in MODEL.cls(name).enums}
        theirs = {e["name"]: tuple(v["name"] for v in e["values"])
                  for e in c["enums"]}
        if ours != theirs:
            diffs.append(name)
    assert diffs == []


def test_errors(errors):
    diffs = []
    for n in sorted(set(errors) | set(MODEL.errors)):
        theirs = tuple(errors[n]["params"]) if n in errors else None
        if MODEL.errors.get(n) != theirs:
            diffs.append("%s: ours %r, theirs %r"
                         % (n, MODEL.errors.get(n), theirs))
    assert diffs == []


def test_every_published_message_is_dispatchable(api):
    from txxapi.api.dispatch import Dispatcher
    missing = []
    for name, c in api.items():
        for m in c["messages"]:
            if m["lifecycle"]["state"] == "Removed_s":
                continue
            wire = "%s.%s" % (name, m["name"])
            if not Dispatcher.knows(wire):
                missing.append(wire)
    assert missing == []


def test_states_used_are_known():
    assert PUBLISHED == "Published_s"
