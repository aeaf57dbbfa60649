"""The in-memory database: indexes, computed set fields, generations."""

from txxapi.datamodel import MODEL
from txxapi.db.memory import Database


def test_no_op_update_is_no_change():
    db = Database(MODEL)
    seen = []
    db.listeners.append(lambda record, cls: seen.append(record))
    net = db.create("network", {"name_label": "a"})
    gen = db.generation
    db.update("network", net, {"name_label": "a"})
    assert db.generation == gen and len(seen) == 1


def test_computed_sets_follow_and_bump_their_rows():
    db = Database(MODEL)
    vm = db.create("VM", {"name_label": "vm"})
    before = db.row("VM", vm).mtime
    vif = db.create("VIF", {"VM": vm, "device": "0"})
    assert db.record("VM", vm)["VIFs"] == [vif]
    assert db.row("VM", vm).mtime > before
    other = db.create("VM", {"name_label": "other"})
    db.update("VIF", vif, {"VM": other})
    assert db.get("VM", vm, "VIFs") == [] and db.get("VM", other, "VIFs") == [vif]
    mtime = db.row("VM", other).mtime
    db.delete("VIF", vif)
    assert db.get("VM", other, "VIFs") == []
    assert db.row("VM", other).mtime > mtime


def test_indexes_by_uuid_and_name():
    db = Database(MODEL)
    a = db.create("network", {"name_label": "same"})
    b = db.create("network", {"name_label": "same"})
    assert sorted(db.by_name_label("network", "same")) == sorted([a, b])
    db.update("network", a, {"name_label": "other"})
    assert db.by_name_label("network", "same") == [b]
    assert db.by_uuid("network", db.fields("network", a)["uuid"]) == a
    db.delete("network", b)
    assert db.by_name_label("network", "same") == []


def test_change_log_coalesces_and_reaches_back():
    db = Database(MODEL)
    net = db.create("network", {"name_label": "a"})
    gen = db.generation
    db.update("network", net, {"name_label": "b"})
    db.update("network", net, {"name_label": "c"})
    assert list(db.changes_since(gen)) == [("network", net)]
    assert db.changes_since(gen - 1) is not None


def test_an_answered_record_is_encoded_again_when_its_row_changes():
    from txxapi.wire import jsonrpc, shared, xmlrpc
    db = Database(MODEL)
    vm = db.create("VM", {"name_label": "vm"})
    for wire, encode in (("xml", xmlrpc.encode_success),
                         ("json", jsonrpc.dumps)):
        def answered():
            return shared.encoded_record(db.answer_record("VM", vm), wire,
                                         encode)

        first = answered()
        assert first == encode(db.record("VM", vm))
        assert answered() is first          # the same state: reused
        db.update("VM", vm, {"name_label": "renamed " + wire})
        renamed = answered()
        assert renamed == encode(db.record("VM", vm)) and renamed != first
        # A computed set field changes without the row's fields changing.
        vif = db.create("VIF", {"VM": vm, "device": wire})
        assert db.record("VM", vm)["VIFs"][-1] == vif
        assert answered() == encode(db.record("VM", vm)) != renamed
    # Any other value is not this cache's.
    assert shared.encoded_record(db.record("VM", vm), "xml",
                                 xmlrpc.encode_success) is None
