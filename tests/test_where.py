import time

import pytest

from txxapi.datamodel import MODEL
from txxapi.db.memory import Database
from txxapi.db.where import LEX_ERROR, PARSE_ERROR, compile_expr, parse
from txxapi.errors import XenAPIError
from txxapi.values import NULL_REF


@pytest.fixture
def db():
    db = Database(MODEL)
    host = db.create("host", {"name_label": "h1"})
    db.refs_by_name = {}
    for name, fields in [
        ("web01", {"power_state": "Running", "resident_on": host,
                   "tags": ["web"], "other_config": {"folder": "/prod"},
                   "memory_static_max": 2147483648}),
        ("db01", {"power_state": "Halted", "tags": ["db", "it's"]}),
        ("template", {"is_a_template": True}),
        ("dom0", {"is_control_domain": True, "power_state": "Running",
                  "resident_on": host}),
    ]:
        fields["name_label"] = name
        db.refs_by_name[name] = db.create("VM", fields)
    db.create("VBD", {"VM": db.refs_by_name["web01"], "device": "xvda"})
    db.create("Certificate", {"type": "ca", "name": "root"})
    db.create("Certificate", {"type": "pinned", "name": "pin"})
    db.create("Certificate", {"type": "host", "name": "h"})
    return db


def names(db, text, table="VM"):
    t = db.table(table)
    refs = compile_expr(text).select(t)
    key = "name" if table == "Certificate" else "name_label"
    return sorted(t.rows[r].fields[key] for r in refs)


def test_reference_examples(db):
    assert names(db, 'field "is_a_template"="false" and '
                     'field "is_control_domain"="false"') == ["db01", "web01"]
    assert names(db, 'field "type"="ca" or field "type"="pinned"',
                 "Certificate") == ["pin", "root"]
    assert names(db, 'not (field "resident_on"="OpaqueRef:NULL")') \
        == ["dom0", "web01"]
    assert names(db, "true") == ["db01", "dom0", "template", "web01"]
    assert names(db, "false") == []


def test_column_and_wire_names(db):
    assert names(db, 'field "name__label"="web01"') == ["web01"]
    assert names(db, 'field "name_label"="web01"') == ["web01"]
    assert names(db, 'field "memory__static_max"="2147483648"') == ["web01"]
    assert names(db, 'field "memory_static_max"="2147483648"') == ["web01"]


def test_comparison_is_on_the_database_string(db):
    assert names(db, 'field "power_state"="Running"') == ["dom0", "web01"]
    assert names(db, 'field "power_state"="running"') == []
    assert names(db, 'field "is_a_template"="true"') == ["template"]
    assert names(db, 'field "is_a_template"="True"') == []
    assert names(db, 'field "memory__static_max"="02147483648"') == []
    assert names(db, 'field "HVM__shadow_multiplier"="1"') \
        == ["db01", "dom0", "template", "web01"]
    assert names(db, 'field "tags"="(\'web\')"') == ["web01"]
    assert names(db, 'field "tags"="(\'db\' \'it\\\'s\')"') == ["db01"]
    assert names(db, 'field "other_config"="((\'folder\' \'/prod\'))"') \
        == ["web01"]
    assert names(db, 'field "resident_on"="%s"' % NULL_REF) \
        == ["db01", "template"]
    web = db.refs_by_name["web01"]
    assert names(db, 'field "_ref"="%s"' % web) == ["web01"]
    assert names(db, '"a"="a"') == ["db01", "dom0", "template", "web01"]
    assert names(db, 'field "name__label"=field "name__description"') == []


def test_computed_sets_can_be_compared(db):
    vbd = db.refs("VBD")[0]
    assert names(db, 'field "VBDs"="(\'%s\')"' % vbd) == ["web01"]
    assert names(db, 'not field "VBDs"="()"') == ["web01"]


def test_precedence_follows_xapi(db):
    # "not" takes everything to its right: not (A and B)
    assert names(db, 'not field "power_state"="Running" and '
                     'field "name__label"="web01"') \
        == ["db01", "dom0", "template"]
    assert names(db, '(not field "power_state"="Running") and '
                     'field "name__label"="db01"') == ["db01"]
    # and/or: same level, left to right
    assert names(db, "true or true and false") == []
    assert names(db, "false and false or true") \
        == ["db01", "dom0", "template", "web01"]
    assert parse("true and not false or true") \
        == ("and", ("true",), ("not", ("or", ("false",), ("true",))))


def test_lexing_like_xapi():
    assert parse('not(field"a"="b")') == (
        "not", ("eq", ("field", "a"), ("literal", "b")))
    assert parse("trueandfalse") == ("and", ("true",), ("false",))
    assert parse(' \t\n"x y"\n=\t"x y" ') == (
        "eq", ("literal", "x y"), ("literal", "x y"))
    assert parse('"a\nb"="a\\b"') == (
        "eq", ("literal", "a\nb"), ("literal", "a\\b"))


@pytest.mark.parametrize("text,reason", [
    ("", PARSE_ERROR),
    ("field", PARSE_ERROR),
    ('field "a"', PARSE_ERROR),
    ('"a"=', PARSE_ERROR),
    ('"a"="b"="c"', PARSE_ERROR),
    ("true and", PARSE_ERROR),
    ("(true", PARSE_ERROR),
    ("true)", PARSE_ERROR),
    ("truefalse", PARSE_ERROR),
    ("not", PARSE_ERROR),
    ("TRUE", LEX_ERROR),
    ('field "a"="b', LEX_ERROR),
    ("true\r", LEX_ERROR),
    ("field 'a'='b'", LEX_ERROR),
    ('field "a" == "b"', PARSE_ERROR),
])
def test_bad_expressions(text, reason):
    with pytest.raises(XenAPIError) as e:
        compile_expr(text)
    assert e.value.description == ["INVALID_VALUE", text, reason]


def test_unknown_field_like_xapi(db):
    # only noticed when a row is evaluated and the comparison reached
    with pytest.raises(XenAPIError) as e:
        names(db, 'field "nonsense"="x"')
    assert e.value.description == [
        "INTERNAL_ERROR", "missing field", "nonsense", ""]
    assert names(db, 'false and field "nonsense"="x"') == []
    assert names(db, 'field "nonsense"="x"', "VDI") == []  # empty table
    # wire name of a column whose table spells it differently
    with pytest.raises(XenAPIError):
        names(db, 'field "name__label"="x"', "Certificate")


def test_predicate_on_fields(db):
    expr = compile_expr('field "power_state"="Running"')
    table = db.table("VM")
    web = db.refs_by_name["web01"]
    fields = table.rows[web].fields
    assert expr(table, fields) is True
    assert expr(table.cls, fields) is True  # a Class will do too
    assert expr(table.cls, table.rows[db.refs_by_name["db01"]].fields) \
        is False


def test_compiled_once():
    assert compile_expr('field "a"="b"') is compile_expr('field "a"="b"')


def test_evaluate_with_a_lookup():
    expr = compile_expr('field "priority"="1" and not field "cls"="VM"')
    assert expr.evaluate({"priority": "1", "cls": "Host"}.__getitem__)
    assert not expr.evaluate({"priority": "1", "cls": "VM"}.__getitem__)


def test_ten_thousand_rows_fast():
    db = Database(MODEL)
    for i in range(10000):
        db.create("VM", {"name_label": "vm%d" % i,
                         "is_a_template": i % 10 == 0,
                         "power_state": "Running" if i % 2 else "Halted",
                         "other_config": {"n": str(i % 3)}})
    table = db.table("VM")
    expr = compile_expr('field "is_a_template"="false" and '
                        'field "power_state"="Running" and '
                        'not field "other_config"="((\'n\' \'0\'))"')
    t0 = time.perf_counter()
    refs = expr.select(table)
    elapsed = time.perf_counter() - t0
    expected = [i for i in range(10000)
                if i % 10 and i % 2 and i % 3]
    assert len(refs) == len(expected)
    assert elapsed < 1.0, elapsed
