import gzip
import os
import stat
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings, strategies as st
from twisted.logger import formatEvent, globalLogPublisher

from txxapi.datamodel import MODEL
from txxapi.db import statedb
from txxapi.db.memory import Database
from txxapi.db.statedb import StateDBError, capture, import_xapi, load, write
from txxapi.values import DateTime

NASTY = [
    "", " ", "  two  blanks  ", "tab\there", "new\nline", "cr\r\n",
    "50%", "%.", "%%", "%_", "it's", "back\\slash", "\\'", "q\"uote",
    "<tag attr='x'>&amp;</tag>", "]]>", "unicodé ☃ 𝄞 中文", "\u00a0nbsp",
    "trailing ", "('fake' 'set')", "(('fake' 'map'))", "()",
]


@pytest.fixture
def populated():
    db = Database(MODEL)
    host = db.create("host", {
        "name_label": "host 1", "hostname": "xcp1",
        "other_config": {k: k for k in NASTY},
        "API_version_major": 2, "memory_overhead": 1 << 20})
    vms = []
    for i, name in enumerate(NASTY):
        vms.append(db.create("VM", {
            "name_label": name,
            "name_description": "vm %d" % i,
            "power_state": "Running" if i % 2 else "Halted",
            "resident_on": host if i % 2 else "OpaqueRef:NULL",
            "memory_static_max": (i + 1) << 30,
            "VCPUs_max": i + 1,
            "HVM_shadow_multiplier": 1.5 if i % 3 else 1.0,
            "other_config": {name: name, "k%d" % i: "v"},
            "tags": [name, "t"] if name != "t" else [name],
            "is_a_template": i % 4 == 0,
            "snapshot_time": DateTime.from_timestamp(1700000000 + i),
            "current_operations": {"OpaqueRef:task%d" % i: "start"},
            "allowed_operations": ["start", "clone"],
        }))
    for i, vm in enumerate(vms[:5]):
        db.create("VBD", {"VM": vm, "device": "xvd%s" % "abcde"[i],
                          "bootable": True, "mode": "RW", "type": "Disk"})
    db.update("VM", vms[0], {"name_description": "changed"})
    db.create("session", {})  # not persistent: never written
    db.create("VM_metrics", {"VCPUs_flags": {0: ["a'b", "c d"], 1: []},
                             "VCPUs_utilisation": {0: 0.25}})
    return db


def stored(db, table):
    return {ref: (dict(row.fields), row.ctime, row.mtime)
            for ref, row in db.tables[table].rows.items()}


def test_round_trip(populated, tmp_path):
    path = str(tmp_path / "state.db")
    snap = capture(populated)
    size = write(snap, path)
    assert size == os.path.getsize(path)
    assert os.listdir(str(tmp_path)) == ["state.db"]  # temp file renamed
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    db = Database(MODEL)
    assert load(path, db) == populated.generation
    assert db.generation == populated.generation
    for name, table in populated.tables.items():
        if not table.cls.persistent:
            assert db.tables[name].rows == {}
            continue
        before, after = stored(populated, name), stored(db, name)
        assert set(before) == set(after), name
        for ref, (fields, ctime, mtime) in before.items():
            fields2, ctime2, mtime2 = after[ref]
            assert (ctime2, mtime2) == (ctime, mtime)
            for field in statedb.RESET_ON_LOAD:
                if field in fields:
                    default = table.defaults[field]
                    assert fields2.pop(field) == default
                    fields.pop(field)
            assert fields2 == fields, (name, ref)
            for k, v in fields.items():
                assert type(fields2[k]) is type(v), (name, k)
    vm = populated.by_name_label("VM", NASTY[0])[0]
    assert db.record("VM", vm)["VBDs"] == populated.record("VM", vm)["VBDs"]
    assert db.by_uuid("VM", populated.fields("VM", vm)["uuid"]) == vm


def test_layout(populated, tmp_path):
    path = str(tmp_path / "state.db")
    write(capture(populated), path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == "database"
    manifest = {p.get("key"): p.get("value")
                for p in root.find("manifest")}
    assert manifest == {
        "schema_major_vsn": str(statedb.SCHEMA_MAJOR_VSN),
        "schema_minor_vsn": str(statedb.SCHEMA_MINOR_VSN),
        "generation_count": str(populated.generation)}
    tables = {t.get("name"): t for t in root.findall("table")}
    assert set(tables) == {c.name for c in MODEL.classes.values() if c.in_db}
    assert len(tables["session"]) == 0
    host = tables["host"][0]
    assert host.get("ref") == host.get("_ref") == populated.refs("host")[0]
    assert host.get("name__label") == "host%.1"  # XAPI's blank protection
    assert host.get("API_version__major") == "2"
    assert host.get("memory__overhead") == str(1 << 20)
    vm = tables["VM"][1]
    assert vm.get("memory__static_max") and vm.get("VCPUs__max")
    assert "VBDs" not in vm.attrib  # computed, not stored
    assert int(vm.get("__ctime")) <= int(vm.get("__mtime"))
    # no raw whitespace in any attribute value
    assert "\t" not in text and "\r" not in text
    assert all("\n" not in line for line in text.split("\n"))


def test_characters_xml_cannot_carry_are_dropped(tmp_path):
    db = Database(MODEL)
    vm = db.create("VM", {"name_label": "bell\x07 nul\x00 esc\x1b",
                          "other_config": {"k\x01": "v\ud800"}})
    path = str(tmp_path / "state.db")
    write(capture(db), path)
    db2 = Database(MODEL)
    load(path, db2)
    assert db2.fields("VM", vm)["name_label"] == "bell nul esc"
    assert db2.fields("VM", vm)["other_config"] == {"k": "v"}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(st.characters(
    blacklist_categories=("Cs",),
    blacklist_characters="".join(map(chr, range(1, 32))) + "\ufffe\uffff"
    ) | st.sampled_from(["\t", "\n", "\r", "%", " "])), min_size=1))
def test_any_text_round_trips(tmp_path_factory, strings):
    strings = [s.replace("\x00", "") for s in strings]
    db = Database(MODEL)
    vm = db.create("VM", {"name_label": strings[0],
                          "other_config": dict(zip(strings, strings)),
                          "tags": list(dict.fromkeys(strings))})
    path = str(tmp_path_factory.mktemp("rt") / "state.db")
    write(capture(db), path)
    db2 = Database(MODEL)
    load(path, db2)
    for k in ("name_label", "other_config", "tags"):
        assert db2.fields("VM", vm)[k] == db.fields("VM", vm)[k]


XAPI_STATE_DB = """<?xml version="1.0" encoding="UTF-8"?>
<database>
  <manifest>
    <pair key="schema_major_vsn" value="5"/>
    <pair key="schema_minor_vsn" value="786"/>
    <pair key="generation_count" value="48213"/>
  </manifest>
  <table name="pool">
    <row ref="OpaqueRef:p1" __ctime="10" __mtime="40000" _ref="OpaqueRef:p1"
         uuid="8f1f3a0e-0000-4000-8000-000000000001" name_label="my%.pool"
         name_description="" master="OpaqueRef:h1" default_SR="OpaqueRef:NULL"
         other_config="(('memory-ratio-hvm'%.'0.25'))" />
  </table>
  <table name="host">
    <row ref="OpaqueRef:h1" __ctime="11" __mtime="48000" _ref="OpaqueRef:h1"
         uuid="8f1f3a0e-0000-4000-8000-000000000002" name__label="xcp-ng-1"
         name__description="Default%.install" memory__overhead="123"
         API_version__major="2" API_version__minor="21"
         API_version__vendor="XenSource" enabled="true" hostname="xcp1"
         address="10.0.0.2" resident_VMs="('OpaqueRef:vm1')" PIFs="()"
         allowed_operations="('provision')" />
  </table>
  <table name="session"/>
  <table name="task"/>
  <table name="VM">
    <row ref="OpaqueRef:vm1" __ctime="120" __mtime="48190"
         _ref="OpaqueRef:vm1" uuid="6f0c2f3e-9c57-4f6a-8e0b-1b2c3d4e5f60"
         name__label="web01" name__description="" power_state="Running"
         is_a_template="false" memory__static_max="2147483648"
         memory__dynamic_max="2147483648" VCPUs__max="2"
         VCPUs__at_startup="2" actions__after_crash="restart"
         resident_on="OpaqueRef:h1"
         other_config="(('folder'%.'/prod')%.('base_template_name'%.'Debian%.Bookworm%.12'))"
         tags="('web'%.'linux')" blocked_operations="()"
         VBDs="('OpaqueRef:vbd1')" PV__args="console=hvc0%%.quiet"
         HVM__shadow_multiplier="1.000000" user_version="garbage"
         snapshot_time="20240315T08:09:10Z"
         allowed_operations="('start')"
         current_operations="(('OpaqueRef:t1'%.'start'))"
         a_field_from_the_future="x" />
  </table>
  <table name="VBD">
    <row ref="OpaqueRef:vbd1" __ctime="121" __mtime="121"
         _ref="OpaqueRef:vbd1" uuid="0b7c3d5e-0000-4000-8000-000000000003"
         VM="OpaqueRef:vm1" VDI="OpaqueRef:NULL" device="xvda"
         userdevice="0" bootable="true" mode="RW" type="Disk"
         qos__algorithm_type="" qos__algorithm_params="()"
         qos__supported_algorithms="()" other_config="()" />
  </table>
  <table name="Future_object">
    <row ref="OpaqueRef:f1" __ctime="5" __mtime="5" uuid="f" />
  </table>
</database>
"""


@pytest.fixture
def logged():
    events = []

    def observer(event):
        events.append(formatEvent(event))
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def test_import_xapi(tmp_path, logged):
    path = tmp_path / "state.db"
    path.write_text(XAPI_STATE_DB, encoding="utf-8")
    db = Database(MODEL)
    summary = import_xapi(str(path), db)
    assert summary == {"pool": 1, "host": 1, "VM": 1, "VBD": 1}
    assert db.generation == 48213

    vm = db.record("VM", "OpaqueRef:vm1")
    assert vm["uuid"] == "6f0c2f3e-9c57-4f6a-8e0b-1b2c3d4e5f60"
    assert vm["name_label"] == "web01"
    assert vm["power_state"] == "Running"
    assert vm["is_a_template"] is False
    assert vm["memory_static_max"] == 2147483648
    assert vm["VCPUs_max"] == 2
    assert vm["actions_after_crash"] == "restart"
    assert vm["other_config"] == {"folder": "/prod",
                                  "base_template_name": "Debian Bookworm 12"}
    assert vm["tags"] == ["web", "linux"]
    assert vm["PV_args"] == "console=hvc0%.quiet"
    assert vm["HVM_shadow_multiplier"] == 1.0
    assert vm["snapshot_time"] == DateTime("20240315T08:09:10Z")
    assert vm["user_version"] == MODEL.classes["VM"].fields[
        "user_version"].default  # unreadable: the default
    assert vm["current_operations"] == {}  # reset, like XAPI
    assert vm["allowed_operations"] == []
    assert vm["VBDs"] == ["OpaqueRef:vbd1"]
    assert "a_field_from_the_future" not in vm
    assert db.row("VM", "OpaqueRef:vm1").ctime == 120
    assert db.row("VM", "OpaqueRef:vm1").mtime == 48190

    host = db.record("host", "OpaqueRef:h1")
    assert host["name_description"] == "Default install"
    assert host["API_version_major"] == 2
    assert host["API_version_vendor"] == "XenSource"
    assert host["memory_overhead"] == 123
    assert host["resident_VMs"] == ["OpaqueRef:vm1"]
    pool = db.record("pool", "OpaqueRef:p1")
    assert pool["name_label"] == "my pool"
    assert pool["master"] == "OpaqueRef:h1"
    vbd = db.record("VBD", "OpaqueRef:vbd1")
    assert (vbd["VM"], vbd["bootable"], vbd["mode"]) == (
        "OpaqueRef:vm1", True, "RW")
    assert db.by_uuid("VM", vm["uuid"]) == "OpaqueRef:vm1"
    assert db.by_name_label("VM", "web01") == ["OpaqueRef:vm1"]
    assert "Future_object" not in db.tables

    text = "\n".join(logged)
    assert "Future_object" in text
    assert "a_field_from_the_future" in text
    assert "user_version" in text

    # and what we write of it reads back the same
    out = str(tmp_path / "again.db")
    write(capture(db), out)
    db2 = Database(MODEL)
    assert load(out, db2) == 48213
    assert db2.record("VM", "OpaqueRef:vm1") == vm


def test_import_gzipped(tmp_path):
    path = tmp_path / "state.db"
    with gzip.open(str(path), "wt", encoding="utf-8") as f:
        f.write(XAPI_STATE_DB)
    db = Database(MODEL)
    assert import_xapi(str(path), db)["VM"] == 1
    assert db.record("VM", "OpaqueRef:vm1")["name_label"] == "web01"


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(str(tmp_path / "nothing"), Database(MODEL))


BOMB = """<?xml version="1.0"?>
<!DOCTYPE database [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
]>
<database><manifest><pair key="generation_count" value="1"/></manifest>
<table name="VM"><row ref="OpaqueRef:x" uuid="u" name__label="&d;"/></table>
</database>
"""

EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE database SYSTEM "file:///etc/passwd">
<database><table name="VM"><row ref="OpaqueRef:x" uuid="u"/></table>
</database>
"""


@pytest.mark.parametrize("text", [BOMB, EXTERNAL])
def test_doctype_and_entities_are_refused(tmp_path, text):
    path = tmp_path / "state.db"
    path.write_text(text)
    db = Database(MODEL)
    with pytest.raises(StateDBError):
        load(str(path), db)
    assert db.tables["VM"].rows == {}


@pytest.mark.parametrize("text", [
    "not xml at all",
    "<database><table name='VM'>",  # truncated
    "<config><row key='a' value='b'/></config>",  # not a state.db
    "<database><row ref='x' uuid='&undefined;'/></database>",
])
def test_unreadable_files(tmp_path, text):
    path = tmp_path / "state.db"
    path.write_text(text)
    with pytest.raises(StateDBError):
        load(str(path), Database(MODEL))


def test_failed_write_leaves_old_file(populated, tmp_path):
    path = str(tmp_path / "state.db")
    write(capture(populated), path)
    before = open(path, "rb").read()
    snap = capture(populated)
    snap.tables.append((None, [("OpaqueRef:x", {}, 1, 1)]))  # unwritable
    with pytest.raises(Exception):
        write(snap, path)
    assert open(path, "rb").read() == before
    assert os.listdir(str(tmp_path)) == ["state.db"]


def test_capture_is_a_consistent_snapshot(populated, tmp_path):
    snap = capture(populated)
    vm = populated.by_name_label("VM", "50%")[0]
    populated.update("VM", vm, {"name_label": "renamed"})
    populated.delete("VM", populated.by_name_label("VM", "%%")[0])
    path = str(tmp_path / "state.db")
    write(snap, path)
    db = Database(MODEL)
    load(path, db)
    assert db.fields("VM", vm)["name_label"] == "50%"
    assert db.by_name_label("VM", "%%")
    assert db.generation == snap.generation < populated.generation
