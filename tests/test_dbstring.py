import math

import pytest
from hypothesis import given, strategies as st

from txxapi.datamodel import MODEL
from txxapi.datamodel import types as T
from txxapi.db.dbstring import (
    NAMESPACES, column_name, field_name, from_db, parse_map, parse_set,
    to_db)
from txxapi.values import DateTime, NULL_REF


def ftype(cls, field):
    return MODEL.classes[cls].fields[field].type


# (type, value, database form)
CASES = [
    (ftype("VM", "name_label"), "web 01", "web 01"),
    (ftype("VM", "name_label"), "", ""),
    (ftype("VM", "resident_on"), NULL_REF, "OpaqueRef:NULL"),
    (ftype("VM", "power_state"), "Running", "Running"),
    (ftype("VM", "memory_static_max"), 2147483648, "2147483648"),
    (ftype("VM", "domid"), -1, "-1"),
    (ftype("VM", "is_a_template"), True, "true"),
    (ftype("VM", "is_a_template"), False, "false"),
    (ftype("VM", "HVM_shadow_multiplier"), 1.0, "1"),
    (ftype("VM", "HVM_shadow_multiplier"), 0.0, "0"),
    (ftype("VM", "HVM_shadow_multiplier"), 1.5, "1.5"),
    (ftype("VM", "HVM_shadow_multiplier"), 0.1, "0.100000000000000006"),
    (ftype("VM", "snapshot_time"), DateTime("20240315T08:09:10Z"),
     "20240315T08:09:10Z"),
    (ftype("VM", "tags"), [], "()"),
    (ftype("VM", "tags"), ["web", "linux"], "('web' 'linux')"),
    (ftype("VM", "tags"), ["it's", "a\\b"], r"('it\'s' 'a\\b')"),
    (ftype("VM", "allowed_operations"), ["start", "clone"],
     "('start' 'clone')"),
    (ftype("VM", "other_config"), {}, "()"),
    (ftype("VM", "other_config"), {"k1": "v1", "k2": "v2"},
     "(('k1' 'v1') ('k2' 'v2'))"),
    (ftype("VM", "other_config"), {"folder": "/prod"}, "(('folder' '/prod'))"),
    (ftype("VM", "other_config"), {"q'": "b\\"}, r"(('q\'' 'b\\'))"),
    (ftype("VM", "blocked_operations"), {"destroy": "no"},
     "(('destroy' 'no'))"),
    (ftype("host", "virtual_hardware_platform_versions"), [0, 1],
     "('0' '1')"),
    (ftype("VM_metrics", "VCPUs_utilisation"), {0: 0.5, 1: 1.0},
     "(('0' '0.5') ('1' '1'))"),
    (ftype("VM_metrics", "VCPUs_CPU"), {0: 3}, "(('0' '3'))"),
    (ftype("VM_metrics", "VCPUs_flags"), {0: ["a", "b"], 1: []},
     r"(('0' '(\'a\' \'b\')') ('1' '()'))"),
    (ftype("PGPU", "supported_VGPU_max_capacities"), {"OpaqueRef:x": 8},
     "(('OpaqueRef:x' '8'))"),
    (ftype("network", "assigned_ips"), {"OpaqueRef:v": "10.0.0.1"},
     "(('OpaqueRef:v' '10.0.0.1'))"),
]


@pytest.mark.parametrize("typ,value,text", CASES)
def test_to_and_from_db(typ, value, text):
    assert to_db(value, typ) == text
    back = from_db(text, typ)
    assert back == value
    assert type(back) is type(value)


def test_every_stored_field_round_trips_its_default():
    for cls in MODEL.classes.values():
        if not cls.in_db:
            continue
        for f in cls.stored_fields:
            text = to_db(f.default, f.type)
            assert isinstance(text, str)
            assert from_db(text, f.type) == f.default, (cls.name, f.name)


def test_datetime_keeps_its_type_and_reads_other_forms():
    t = ftype("VM", "snapshot_time")
    assert isinstance(from_db("19700101T00:00:00Z", t), DateTime)
    assert from_db("2024-03-15T08:09:10Z", t) == "20240315T08:09:10Z"
    assert from_db("20240315T08:09:10", t) == "20240315T08:09:10Z"


def test_option_is_a_set_of_at_most_one():
    typ = T.OptionType(T.Ref("VM"))
    assert to_db(None, typ) == "()"
    assert to_db("OpaqueRef:a", typ) == "('OpaqueRef:a')"
    assert from_db("('OpaqueRef:a')", typ) == "OpaqueRef:a"
    assert from_db("()", typ) is None


def test_lenient_reading():
    # XAPI's reader also takes double quotes, symbols and extra blanks.
    assert parse_set('( "a b"  c\n)') == ["a b", "c"]
    assert parse_map("( ( 'k' \"v\" ) )") == [("k", "v")]
    assert from_db("0x10", ftype("VM", "domid")) == 16
    assert from_db("TRUE", ftype("VM", "is_a_template")) is True
    assert from_db("inf", ftype("VM", "HVM_shadow_multiplier")) == math.inf
    # duplicate set elements collapse
    assert from_db("('a' 'a' 'b')", ftype("VM", "tags")) == ["a", "b"]


@pytest.mark.parametrize("cls,field,text", [
    ("VM", "domid", "x"),
    ("VM", "is_a_template", "yes"),
    ("VM", "power_state", "Exploded"),
    ("VM", "tags", "('a'"),
    ("VM", "tags", "(('a' 'b'))"),
    ("VM", "other_config", "('a' 'b')"),
    ("VM", "snapshot_time", "yesterday"),
])
def test_bad_text_raises_value_error(cls, field, text):
    with pytest.raises(ValueError):
        from_db(text, ftype(cls, field))


texts = st.text(st.characters(blacklist_categories=("Cs",)))


@given(st.lists(texts))
def test_sets_of_strings_round_trip(items):
    typ = ftype("VM", "tags")
    items = list(dict.fromkeys(items))
    assert from_db(to_db(items, typ), typ) == items


@given(st.dictionaries(texts, texts))
def test_maps_of_strings_round_trip(m):
    typ = ftype("VM", "other_config")
    assert from_db(to_db(m, typ), typ) == m


@given(st.dictionaries(st.integers(0, 64), st.lists(texts, unique=True)))
def test_nested_maps_round_trip(m):
    typ = ftype("VM_metrics", "VCPUs_flags")
    assert from_db(to_db(m, typ), typ) == m


@given(st.floats(allow_nan=False))
def test_floats_round_trip(x):
    typ = ftype("VM", "HVM_shadow_multiplier")
    assert from_db(to_db(x, typ), typ) == x


def test_column_names():
    assert column_name("VM", "name_label") == "name__label"
    assert column_name("VM", "memory_static_max") == "memory__static_max"
    assert column_name("VM", "VCPUs_at_startup") == "VCPUs__at_startup"
    assert column_name("VM", "actions_after_crash") == "actions__after_crash"
    assert column_name("VM", "PV_kernel") == "PV__kernel"
    assert column_name("VM", "HVM_boot_policy") == "HVM__boot_policy"
    assert column_name("VM", "power_state") == "power_state"
    assert column_name("VM", "VBDs") == "VBDs"
    assert column_name("host", "API_version_major") == "API_version__major"
    assert column_name("host", "memory_overhead") == "memory__overhead"
    assert column_name("VBD", "qos_algorithm_type") == "qos__algorithm_type"
    assert column_name("VIF_metrics", "io_read_kbs") == "io__read_kbs"
    assert column_name("VM_metrics", "VCPUs_number") == "VCPUs__number"
    # pool's names are plain fields, not a namespace
    assert column_name("pool", "name_label") == "name_label"
    # prefixes that are not namespaces stay
    assert column_name("VM_guest_metrics", "PV_drivers_version") \
        == "PV_drivers_version"
    assert column_name("VM", "memory_nonsense") == "memory_nonsense"


def test_field_name_inverts_column_name():
    for cls in MODEL.classes.values():
        for name in cls.fields:
            assert field_name(cls.name, column_name(cls.name, name)) == name


def test_namespaced_fields_exist_in_the_model():
    for cls_name, spaces in NAMESPACES.items():
        cls = MODEL.classes.get(cls_name)
        if cls is None:
            continue  # classes txxapi does not implement (yet)
        for ns, fields in spaces.items():
            for f in fields:
                assert ns + "_" + f in cls.fields, (cls_name, ns, f)
