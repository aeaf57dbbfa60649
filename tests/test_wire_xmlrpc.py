import time
from xmlrpc import client as pyxmlrpc

import pytest

from txxapi.values import DateTime, Int32
from txxapi.wire import xmlrpc as codec
from txxapi.wire.errors import MalformedRequest
from txxapi.wire.xmlrpc import (
    decode_call, encode_bare, encode_failure, encode_fault, encode_success,
    encode_value)

REF = "OpaqueRef:9a8b7c6d-0000-4111-8222-333344445555"


def call(*values, method="VM.get_power_state"):
    """A methodCall body whose params are the given <value> fragments."""
    params = "".join("<param>%s</param>" % v for v in values)
    return ('<?xml version="1.0"?><methodCall><methodName>%s</methodName>'
            "<params>%s</params></methodCall>" % (method, params)).encode()


def roundtrip(v):
    method, params = decode_call(call(encode_value(v)))
    assert method == "VM.get_power_state"
    assert len(params) == 1
    return params[0]


def careful(v):
    out = []
    codec._careful(v, out)
    return "".join(out)


# -- decoding ---------------------------------------------------------------

def test_reference_request():
    body = b"""<?xml version="1.0"?>
<methodCall>
  <methodName>VM.get_power_state</methodName>
  <params>
    <param><value>OpaqueRef:5c0c7b5e-1f09-4a2e-9d47-0e1f7a3b8c11</value></param>
    <param><value>OpaqueRef:9a8b7c6d-0000-4111-8222-333344445555</value></param>
  </params>
</methodCall>
"""
    assert decode_call(body) == ("VM.get_power_state", [
        "OpaqueRef:5c0c7b5e-1f09-4a2e-9d47-0e1f7a3b8c11", REF])


@pytest.mark.parametrize("fragment, expected", [
    ("<value>Running</value>", "Running"),
    ("<value><string>Running</string></value>", "Running"),
    ("<value>  spaced  </value>", "  spaced  "),
    ("<value></value>", ""),
    ("<value/>", ""),
    ("<value><string></string></value>", ""),
    ("<value>4294967296</value>", "4294967296"),
    ("<value><i4>-12</i4></value>", -12),
    ("<value><int>7</int></value>", 7),
    ("<value><i8>9223372036854775807</i8></value>", 9223372036854775807),
    ("<value><boolean>1</boolean></value>", True),
    ("<value><boolean>0</boolean></value>", False),
    ("<value><double>0.25</double></value>", 0.25),
    ("<value><dateTime.iso8601>20240315T08:09:10Z</dateTime.iso8601>"
     "</value>", DateTime("20240315T08:09:10Z")),
    ("<value><dateTime.iso8601>2024-03-15T09:09:10+01:00</dateTime.iso8601>"
     "</value>", DateTime("20240315T08:09:10Z")),
    ("<value><nil/></value>", None),
    ("<value><base64>aGVsbG8=</base64></value>", b"hello"),
    ("<value><array><data></data></array></value>", []),
    ("<value><array><data/></array></value>", []),
    ("<value><struct></struct></value>", {}),
    ("<value>\n  <i4>5</i4>\n</value>", 5),
    ("<value> <array> <data> <value>a</value> <value><i4>1</i4></value> "
     "</data> </array> </value>", ["a", 1]),
    ("<value><struct> <member> <name>k</name> <value>v</value> </member>"
     "</struct></value>", {"k": "v"}),
    ("<value>a &lt;&amp;&gt; &quot;b&quot; &#233;</value>", 'a <&> "b" \xe9'),
    ("<value><![CDATA[<raw>]]></value>", "<raw>"),
])
def test_decode_values(fragment, expected):
    value = decode_call(call(fragment))[1][0]
    assert value == expected
    assert type(value) is type(expected)


def test_no_params():
    body = (b"<?xml version='1.0'?><methodCall><methodName>system.listMethods"
            b"</methodName></methodCall>")
    assert decode_call(body) == ("system.listMethods", [])
    body = (b"<methodCall><methodName>system.listMethods</methodName>"
            b"<params/></methodCall>")
    assert decode_call(body) == ("system.listMethods", [])


def test_utf8_and_declared_encoding():
    body = call("<value>caf\xe9 \u2603</value>")
    assert decode_call(body)[1] == ["caf\xe9 \u2603"]
    latin1 = ('<?xml version="1.0" encoding="ISO-8859-1"?><methodCall>'
              "<methodName>m</methodName><params><param><value>caf\xe9"
              "</value></param></params></methodCall>").encode("latin-1")
    assert decode_call(latin1)[1] == ["caf\xe9"]


@pytest.mark.parametrize("body", [
    b"",
    b"not xml",
    b"<methodCall><methodName>m</methodName>",
    b"<methodCall><methodName>m</methodName></methodCall><x/>",
    b"<methodResponse/>",
    b"<methodCall><params/></methodCall>",
    b"<methodCall><methodName></methodName></methodCall>",
    b"<methodCall><methodName>a</methodName><methodName>b</methodName>"
    b"</methodCall>",
    call("<value>x<i4>1</i4></value>"),
    call("<value><i4>1</i4>x</value>"),
    call("<value><i4>1</i4><i4>2</i4></value>"),
    call("<value><i4>x</i4></value>"),
    call("<value><i4>1_000</i4></value>"),
    call("<value><i8>9223372036854775808</i8></value>"),
    call("<value><boolean>2</boolean></value>"),
    call("<value><double>abc</double></value>"),
    call("<value><dateTime.iso8601>yesterday</dateTime.iso8601></value>"),
    call("<value><base64>\xe9</base64></value>"),
    call("<value><nil>x</nil></value>"),
    call("<value><unknown>1</unknown></value>"),
    call("<value><i4><i4>1</i4></i4></value>"),
    call("<value><struct><member><name>k</name></member></struct></value>"),
    call("<value><struct><member><value>v</value></member></struct>"
         "</value>"),
    call("<value><struct><member><name>a</name><name>b</name>"
         "<value>v</value></member></struct></value>"),
    call("<value><struct>text</struct></value>"),
    call("<value><array><value>1</value></array></value>"),
    call("<value><array><data/><data/></array></value>"),
    b"<methodCall><methodName>m</methodName><params><param></param>"
    b"</params></methodCall>",
    b"<methodCall><methodName>m</methodName><params><param><value>a</value>"
    b"<value>b</value></param></params></methodCall>",
    b"<methodCall><methodName>m</methodName><params>stray</params>"
    b"</methodCall>",
    call("<value>&undefined;</value>"),
    call("<value>\x01</value>"),
])
def test_malformed(body):
    with pytest.raises(MalformedRequest):
        decode_call(body)


def _outcome(decode, body):
    try:
        return decode(body)
    except MalformedRequest:
        return MalformedRequest


SIMPLE = ("<?xml version='1.0'?>\n<methodCall>\n<methodName>%s</methodName>"
          "\n<params>\n%s</params>\n</methodCall>\n")


@pytest.mark.parametrize("method, params", [
    ("VM.get_record", "<param>\n<value><string>%s</string></value>\n"
     "</param>\n" % REF),
    (" VM.get_record\t", "<param><value>%s</value></param>" % REF),
    ("", ""),
    ("m", ""),
    ("m", "<param><value><string></string></value></param>"
     "<param><value></value></param>"),
    ("m", "<param><value><string> a\tb\nc </string></value></param>"),
    ("m", "<param><value> <string>x</string> </value></param>"),
    ("m", "<param><value>a\rb</value></param>"),
    ("m", "<param><value>a\r\nb</value></param>"),
    ("m", "<param><value>a]]>b</value></param>"),
    ("m", "<param><value>a]]b</value></param>"),
    ("m", "<param><value>a\x01b</value></param>"),
    ("m", "<param><value>a\ufffeb</value></param>"),
    ("m", "<param><value>\x7f\xa0\u2603\U0001f600</value></param>"),
    ("m", "<param>\xa0<value>x</value></param>"),
    ("m", "<param><value>a&amp;b</value></param>"),
    ("m", "<param><value><string>a</string>b</value></param>"),
    ("m", "<param><value><i4>1</i4></value></param>"),
    ("m", "<param><value/></param>"),
    ("m<", ""),
])
def test_simple_calls_read_as_expat_reads_them(method, params):
    """The calls read without expat are read exactly as expat reads them,
    and what it cannot read goes to expat (refusals included)."""
    body = SIMPLE % (method, params)
    for variant in (body, body.replace("\n", ""), " " + body,
                    body.replace("'1.0'", '"1.0"'),
                    body.replace("<?xml version='1.0'?>", ""),
                    body.replace("'1.0'", "'1.0' encoding='utf-8'"),
                    body + "<x/>", body.replace("</params>", "")):
        raw = variant.encode("utf-8", "surrogatepass")
        assert _outcome(decode_call, raw) == \
            _outcome(codec._decode_call, raw), variant


def test_the_sdks_calls_are_read_without_expat():
    body = pyxmlrpc.dumps((REF, "a name"), "VM.set_name_label").encode()
    assert codec._simple_call(body) == ("VM.set_name_label", [REF, "a name"])


def test_invalid_utf8():
    with pytest.raises(MalformedRequest):
        decode_call(b"<methodCall><methodName>m</methodName><params><param>"
                    b"<value>\xff\xfe</value></param></params></methodCall>")
    with pytest.raises(MalformedRequest):
        # An encoded surrogate is not UTF-8 either.
        decode_call(b"<methodCall><methodName>m</methodName><params><param>"
                    b"<value>\xed\xa0\x80</value></param></params>"
                    b"</methodCall>")


def test_billion_laughs_refused_quickly():
    entities = ['<!ENTITY lol0 "lol">'] + [
        '<!ENTITY lol%d "%s">' % (i, ("&lol%d;" % (i - 1)) * 10)
        for i in range(1, 10)]
    body = ('<?xml version="1.0"?><!DOCTYPE methodCall [%s]><methodCall>'
            "<methodName>&lol9;</methodName></methodCall>"
            % "".join(entities)).encode()
    start = time.monotonic()
    with pytest.raises(MalformedRequest):
        decode_call(body)
    assert time.monotonic() - start < 1


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE methodCall SYSTEM '
    b'"file:///etc/passwd"><methodCall><methodName>m</methodName>'
    b"</methodCall>",
    b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM '
    b'"file:///etc/passwd">]><methodCall><methodName>&x;</methodName>'
    b"</methodCall>",
    b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY % p SYSTEM '
    b'"http://192.0.2.1/x.dtd"> %p;]><methodCall><methodName>m'
    b"</methodName></methodCall>",
    b'<?xml version="1.0"?><!DOCTYPE methodCall><methodCall><methodName>m'
    b"</methodName></methodCall>",
])
def test_dtd_and_external_entities_refused(body):
    with pytest.raises(MalformedRequest):
        decode_call(body)


def test_nesting_limit():
    deep = "<value><array><data>" * 100 + "</data></array></value>" * 100
    with pytest.raises(MalformedRequest):
        decode_call(call(deep))
    ok = "<value><array><data>" * 50 + "</data></array></value>" * 50
    decode_call(call(ok))


# -- encoding ---------------------------------------------------------------

def test_success_envelope_exact():
    assert encode_success("Halted") == (
        b'<?xml version="1.0"?><methodResponse><params><param><value><struct>'
        b"<member><name>Status</name><value>Success</value></member>"
        b"<member><name>Value</name><value>Halted</value></member>"
        b"</struct></value></param></params></methodResponse>")


def test_failure_envelope_exact():
    assert encode_failure(
        ["VM_BAD_POWER_STATE", REF, "halted", "running"]) == (
        b'<?xml version="1.0"?><methodResponse><params><param><value><struct>'
        b"<member><name>Status</name><value>Failure</value></member>"
        b"<member><name>ErrorDescription</name><value><array><data>"
        b"<value>VM_BAD_POWER_STATE</value>"
        b"<value>OpaqueRef:9a8b7c6d-0000-4111-8222-333344445555</value>"
        b"<value>halted</value>"
        b"<value>running</value>"
        b"</data></array></value></member>"
        b"</struct></value></param></params></methodResponse>")


def test_failure_params_become_strings():
    body = encode_failure(["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.start", 3,
                           True, "a<b"])
    (result,), _ = pyxmlrpc.loads(body)
    assert result["ErrorDescription"] == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.start", "3", "true", "a<b"]


@pytest.mark.parametrize("value, text", [
    ("Running", "<value>Running</value>"),
    ("", "<value></value>"),
    ('a<b>&"c"', "<value>a&lt;b&gt;&amp;&quot;c&quot;</value>"),
    ("t\ta\nb\rc\x00\x01\x1f\x7f", "<value>t\ta\nb\rc\x7f</value>"),
    ("\ud800x\ufffe\uffff", "<value>\ufffdx</value>"),
    (4294967296, "<value>4294967296</value>"),
    (-5, "<value>-5</value>"),
    (Int32(12), "<value><i4>12</i4></value>"),
    (True, "<value><boolean>1</boolean></value>"),
    (False, "<value><boolean>0</boolean></value>"),
    (0.25, "<value><double>0.25</double></value>"),
    (0.1, "<value><double>0.1</double></value>"),
    (1e100, "<value><double>1e+100</double></value>"),
    (DateTime("20240315T08:09:10Z"),
     "<value><dateTime.iso8601>20240315T08:09:10Z</dateTime.iso8601>"
     "</value>"),
    (None, "<value><nil/></value>"),
    ([], "<value><array><data></data></array></value>"),
    ({}, "<value><struct></struct></value>"),
    (["a", 1], "<value><array><data><value>a</value><value>1</value>"
     "</data></array></value>"),
    (("a",), "<value><array><data><value>a</value></data></array></value>"),
    ({"k": "v"}, "<value><struct><member><name>k</name><value>v</value>"
     "</member></struct></value>"),
    ({1: "a"}, "<value><struct><member><name>1</name><value>a"
     "</value></member></struct></value>"),
    ({True: "b"}, "<value><struct><member><name>true</name><value>b"
     "</value></member></struct></value>"),
    ({2: 3, False: "x", "a&": Int32(1)},
     "<value><struct><member><name>2</name><value>3</value></member>"
     "<member><name>false</name><value>x</value></member>"
     "<member><name>a&amp;</name><value><i4>1</i4></value></member>"
     "</struct></value>"),
    (b"hello", "<value><base64>aGVsbG8=</base64></value>"),
])
def test_encode_value(value, text):
    assert encode_value(value) == text
    assert careful(value) == text


def test_subclass_dispatch():
    # DateTime must not be taken for a plain string, nor bool/Int32 for int,
    # wherever they sit.
    d = DateTime("20240315T08:09:10Z")
    for v in ([d], {"k": d}, {"k": d, "n": 1}, [True, Int32(3), 3]):
        assert encode_value(v) == careful(v)
    assert "<dateTime.iso8601>" in encode_value([d, "x"])
    assert "<dateTime.iso8601>" in encode_value({"a": "x", "b": d})

    class MyStr(str):
        pass

    class MyInt(int):
        pass
    assert encode_value(MyStr("a<")) == "<value>a&lt;</value>"
    assert encode_value(MyInt(5)) == "<value>5</value>"
    assert encode_value({MyStr("k"): MyInt(1)}) == (
        "<value><struct><member><name>k</name><value>1</value></member>"
        "</struct></value>")
    with pytest.raises(TypeError):
        encode_value(object())


def test_escaping_deep_inside_a_record():
    # The fast path checks strings in bulk; make sure a bad one anywhere is
    # still escaped, and clean neighbours are unaffected.
    clean = {"uuid": "u", "tags": ["a", "b"], "other_config": {"k": "v"},
             "n": 1, "b": False, "f": 0.5, "list": [{"x": "y"}, "z"]}
    base = encode_value({"r1": clean, "r2": clean})
    assert base == careful({"r1": clean, "r2": clean})
    for path in ("uuid", "tags", "other_config-key", "other_config-value",
                 "list-item", "list-record", "key"):
        dirty = dict(clean, tags=list(clean["tags"]),
                     other_config=dict(clean["other_config"]),
                     list=[dict(clean["list"][0]), "z"])
        if path == "uuid":
            dirty["uuid"] = "<x>"
        elif path == "tags":
            dirty["tags"][1] = "a&b"
        elif path == "other_config-key":
            dirty["other_config"] = {'"q"': "v"}
        elif path == "other_config-value":
            dirty["other_config"]["k"] = "\x00bad"
        elif path == "list-item":
            dirty["list"][1] = "<"
        elif path == "list-record":
            dirty["list"][0]["x"] = ">"
        else:
            dirty["a<b"] = "c"
        value = {"r1": clean, "r2": dirty}
        text = encode_value(value)
        assert text == careful(value), path
        assert text.startswith(careful({"r1": clean})[:-len(
            "</struct></value>")])
        assert encode_value(dirty) == careful(dirty)
    assert encode_value("a<b") == "<value>a&lt;b</value>"
    assert encode_value(["<", ">"]) == careful(["<", ">"])
    assert encode_value({"<": "&"}) == careful({"<": "&"})


def test_roundtrip_every_type():
    d = DateTime("20240315T08:09:10Z")
    assert roundtrip("Running") == "Running"
    assert roundtrip("") == ""
    assert roundtrip('<&>" \t\n\xe9\u2603') == '<&>" \t\n\xe9\u2603'
    assert roundtrip(42) == "42"  # ints travel as text, as in XAPI
    assert roundtrip(Int32(-7)) == -7
    assert roundtrip(True) is True
    assert roundtrip(False) is False
    assert roundtrip(0.1) == 0.1
    assert roundtrip(-1.5e-300) == -1.5e-300
    got = roundtrip(d)
    assert got == d and type(got) is DateTime
    assert roundtrip(None) is None
    assert roundtrip(b"\x00\xff") == b"\x00\xff"
    assert roundtrip([]) == []
    assert roundtrip({}) == {}
    value = {"a": ["x", "y"], "b": {"k": "v"}, "c": [{"n": True}],
             "d": [[Int32(1)], []], "e": d}
    assert roundtrip(value) == value


def test_python_xmlrpc_client_reads_our_responses():
    d = DateTime("20240315T08:09:10Z")
    value = {"name": "a<b>&c", "n": 4294967296, "i": Int32(3), "b": True,
             "f": 0.25, "when": d, "set": ["x", "y"], "map": {"k": "v"},
             "none": None, "empty": "", "records": [{"x": "1"}]}
    (result,), method = pyxmlrpc.loads(encode_success(value))
    assert method is None
    assert result["Status"] == "Success"
    got = result["Value"]
    assert got["name"] == "a<b>&c"
    assert got["n"] == "4294967296"
    assert got["i"] == 3
    assert got["b"] is True
    assert got["f"] == 0.25
    assert got["when"].value == "20240315T08:09:10Z"
    assert got["set"] == ["x", "y"]
    assert got["map"] == {"k": "v"}
    assert got["none"] is None
    assert got["empty"] == ""
    assert got["records"] == [{"x": "1"}]

    (result,), _ = pyxmlrpc.loads(
        encode_failure(["SESSION_INVALID", REF]))
    assert result == {"Status": "Failure",
                      "ErrorDescription": ["SESSION_INVALID", REF]}

    (result,), _ = pyxmlrpc.loads(encode_bare(["VM.start", "VM.stop"]))
    assert result == ["VM.start", "VM.stop"]


def test_bare_and_fault():
    assert encode_bare([]) == (
        b'<?xml version="1.0"?><methodResponse><params><param><value><array>'
        b"<data></data></array></value></param></params></methodResponse>")
    with pytest.raises(pyxmlrpc.Fault) as info:
        pyxmlrpc.loads(encode_fault(-32700, "parse error: <bad>"))
    assert info.value.faultCode == -32700
    assert info.value.faultString == "parse error: <bad>"


def test_our_requests_decode():
    body = pyxmlrpc.dumps(("OpaqueRef:x", {"a": [1, True]}, 1.5),
                          "VM.set_other_config").encode()
    assert decode_call(body) == (
        "VM.set_other_config", ["OpaqueRef:x", {"a": [1, True]}, 1.5])


def test_large_record_set_roundtrip():
    records = {
        "OpaqueRef:%d" % i: {
            "uuid": "u%d" % i, "name_label": "vm %d" % i,
            "power_state": "Halted", "memory_static_max": 1 << 32,
            "is_a_template": False, "VBDs": ["OpaqueRef:a", "OpaqueRef:b"],
            "other_config": {"k%d" % i: "v"}, "blocked_operations": {},
            "tags": [], "start_time": DateTime("19700101T00:00:00Z"),
        } for i in range(200)}
    body = encode_success(records)
    (result,), _ = pyxmlrpc.loads(body)
    assert set(result["Value"]) == set(records)
    assert result["Value"]["OpaqueRef:7"]["other_config"] == {"k7": "v"}


# -- the client side: calls out, responses in ---------------------------------

def test_calls_out_decode_as_calls():
    params = [REF, {"key": ["a", True, 1.5]}, "x<&>y"]
    body = codec.encode_call("VM.add_to_other_config", params)
    assert decode_call(body) == ("VM.add_to_other_config", params)
    # The standard library reads them too.
    assert pyxmlrpc.loads(body.decode()) == (
        tuple(params), "VM.add_to_other_config")


def test_responses_in():
    value = {"OpaqueRef:a": {"name_label": "web <1>", "VCPUs_max": "2",
                             "is_a_template": False}}
    assert codec.decode_response(encode_success(value)) == {
        "Status": "Success", "Value": value}
    assert codec.decode_response(encode_failure(
        ["HOST_IS_SLAVE", "10.0.0.1"])) == {
            "Status": "Failure",
            "ErrorDescription": ["HOST_IS_SLAVE", "10.0.0.1"]}
    assert codec.decode_response(encode_bare([])) == []
    body = pyxmlrpc.dumps(({"Status": "Success", "Value": 7},),
                          methodresponse=True).encode()
    assert codec.decode_response(body) == {"Status": "Success", "Value": 7}


def test_fault_responses_raise():
    with pytest.raises(codec.Fault) as info:
        codec.decode_response(encode_fault(-32700, "parse error"))
    assert (info.value.code, info.value.text) == (-32700, "parse error")


@pytest.mark.parametrize("body", [
    call("<value>x</value>"),                       # a call, not a response
    b"<methodResponse><params></params></methodResponse>",
    b"<methodResponse><params><param><value>a</value></param><param>"
    b"<value>b</value></param></params></methodResponse>",
    b"<methodResponse><fault><value>x</value></fault><params><param><value>"
    b"a</value></param></params></methodResponse>",
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><methodResponse>'
    b"<params><param><value>&a;</value></param></params></methodResponse>",
])
def test_bad_responses_refused(body):
    with pytest.raises(MalformedRequest):
        codec.decode_response(body)


def test_a_response_is_no_call():
    with pytest.raises(MalformedRequest):
        decode_call(encode_success("x"))
    with pytest.raises(MalformedRequest):
        decode_call(encode_fault(1, "x"))


def _careful_text(value):
    out = [codec._SUCCESS_HEAD]
    codec._careful(value, out)
    out.append(codec._STRUCT_TAIL)
    return "".join(out).encode("utf-8")


def test_records_with_markup_in_strings_are_escaped_like_the_careful_way():
    # XML in a record (recommendations, other_config:disks) is escaped
    # where it stands; every other shape falls back to re-encoding.
    xml = '<restrictions><restriction field="vcpus-max" max="32"/>'
    same = "<twice>"
    record = {"recommendations": xml, "name_description": "two\nlines",
              "other_config": {"disks": "<provision/>", "folder": "/a"},
              "first": same, "second": same,
              "equal_but_another": "".join(["<tw", "ice>"]),
              "markup_lookalike": "".join(["</value>", "</member>"]),
              "tags": ["plain", "<tag>"], "nested": [{"k": "&"}, 1],
              "n": 3, "flag": True}
    for value in (record, {"OpaqueRef:1": record, "OpaqueRef:2": record},
                  [record, "<", {"a": '"'}]):
        assert codec.encode_success(value) == _careful_text(value)


def test_a_string_that_is_the_encoders_own_markup_is_still_escaped():
    """A task's result holding an empty set is the encoding of an empty
    array, which may be the encoder's very constant; in a record beside
    an empty array it is escaped where it stands, not in the array's
    place."""
    result = codec.encode_value([])
    record = {"allowed_operations": [], "result": result, "status": "x"}
    text = codec.encode_success(record)
    assert text == _careful_text(record)
    assert pyxmlrpc.loads(text.decode())[0][0]["Value"] == record
