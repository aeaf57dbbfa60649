import json

import pytest

from txxapi.values import DateTime, Int32
from txxapi.wire import jsonrpc
from txxapi.wire.errors import MalformedRequest
from txxapi.wire.jsonrpc import (
    JsonCall, decode_call, encode_early_failure, encode_failure,
    encode_success)

V1 = JsonCall("VM.get_power_state", [], 7, 1)
V2 = JsonCall("VM.get_power_state", [], 7, 2)


def body(**fields):
    return json.dumps(fields).encode()


# -- decoding ---------------------------------------------------------------

def test_v1():
    call = decode_call(body(method="VM.get_power_state",
                            params=["OpaqueRef:s", "OpaqueRef:v"], id=7))
    assert call == JsonCall("VM.get_power_state",
                            ["OpaqueRef:s", "OpaqueRef:v"], 7, 1)
    assert (call.method, call.params, call.id, call.version) == (
        "VM.get_power_state", ["OpaqueRef:s", "OpaqueRef:v"], 7, 1)


def test_v2():
    call = decode_call(body(jsonrpc="2.0", method="session.logout",
                            params=["OpaqueRef:s"], id="abc"))
    assert call == JsonCall("session.logout", ["OpaqueRef:s"], "abc", 2)


@pytest.mark.parametrize("fields, params", [
    ({}, []),
    ({"params": None}, []),
    ({"params": []}, []),
    ({"params": {"a": 1}}, [{"a": 1}]),
])
def test_v2_params_forms(fields, params):
    call = decode_call(body(jsonrpc="2.0", method="m", id=1, **fields))
    assert call.params == params


def test_values_decoded():
    call = decode_call(body(method="m", id=0, params=[
        1, -2, 9223372036854775807, 0.5, True, None, "s", [1], {"k": "v"}]))
    assert call.params == [1, -2, 9223372036854775807, 0.5, True, None, "s",
                           [1], {"k": "v"}]
    assert call.id == 0
    assert decode_call('{"method":"m","params":["caf\xe9"],"id":1}'
                       .encode()).params == ["caf\xe9"]


@pytest.mark.parametrize("raw", [
    b"",
    b"null",
    b"[]",
    b'"x"',
    b"{",
    b'{"method": "m", "params": [], "id": 1,}',
    b'{"method": "m", "params": ["\xff"], "id": 1}',
    b'{"method": "m", "params": ["\xed\xa0\x80"], "id": 1}',
    body(params=[], id=1),
    body(method=1, params=[], id=1),
    body(method=None, params=[], id=1),
    body(method="m", id=1),  # v1 needs params
    body(method="m", params=None, id=1),
    body(method="m", params={"a": 1}, id=1),
    body(method="m", params="x", id=1),
    body(jsonrpc="2.0", method="m", params="x", id=1),
    body(jsonrpc="2.0", method="m", params=3, id=1),
    body(method="m", params=[]),  # notification
    body(method="m", params=[], id=None),
    body(method="m", params=[], id=True),
    body(method="m", params=[], id=1.5),
    body(method="m", params=[], id=[1]),
    body(jsonrpc="2.0", method="m", params=[]),
    body(jsonrpc="1.0", method="m", params=[], id=1),
    body(jsonrpc="2", method="m", params=[], id=1),
    body(jsonrpc=2.0, method="m", params=[], id=1),
    body(jsonrpc=None, method="m", params=[], id=1),
])
def test_malformed(raw):
    with pytest.raises(MalformedRequest):
        decode_call(raw)


def test_nesting_limit():
    def nested(depth):
        # The request object is level 1, params level 2.
        inner = "[" * (depth - 2) + "]" * (depth - 2)
        return ('{"method":"m","params":[%s],"id":1}' % inner).encode()
    assert decode_call(nested(64)).method == "m"
    with pytest.raises(MalformedRequest):
        decode_call(nested(65))
    with pytest.raises(MalformedRequest):
        decode_call(nested(100000))
    # Many brackets side by side are not deep.
    wide = ('{"method":"m","params":[%s],"id":1}'
            % ",".join(["[{}]"] * 500)).encode()
    assert len(decode_call(wide).params) == 500


# -- encoding ---------------------------------------------------------------

def test_v1_success_and_failure():
    assert json.loads(encode_success(V1, "Halted")) == {
        "result": "Halted", "error": None, "id": 7}
    assert json.loads(encode_failure(V1, ["SESSION_INVALID", "OpaqueRef:x"])) \
        == {"result": None, "error": ["SESSION_INVALID", "OpaqueRef:x"],
            "id": 7}


def test_v2_success_and_failure():
    assert json.loads(encode_success(V2, "Halted")) == {
        "jsonrpc": "2.0", "result": "Halted", "id": 7}
    assert json.loads(encode_failure(V2, ["HOST_IS_SLAVE", "192.0.2.10"])) \
        == {"jsonrpc": "2.0", "error": {"code": 1, "message": "HOST_IS_SLAVE",
                                        "data": ["192.0.2.10"]}, "id": 7}


def test_key_order_and_string_ids():
    text = encode_success(V1, "x")
    assert text.index(b'"result"') < text.index(b'"error"') < text.index(
        b'"id"')
    call = JsonCall("m", [], "req-1", 2)
    assert json.loads(encode_success(call, None)) == {
        "jsonrpc": "2.0", "result": None, "id": "req-1"}


def test_early_failure():
    assert json.loads(encode_early_failure(["INTERNAL_ERROR", "boom"])) == {
        "jsonrpc": "2.0", "error": {"code": 1, "message": "INTERNAL_ERROR",
                                    "data": ["boom"]}, "id": 0}


def test_error_params_become_strings():
    got = json.loads(encode_failure(
        V1, ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.start", 3, True]))
    assert got["error"] == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.start", "3", "true"]


VALUE = {
    "s": "Running", "empty": "", "n": 4294967296, "i": Int32(12),
    "f": 0.25, "b": True, "none": None,
    "when": DateTime("20240315T08:09:10Z"),
    "set": ["a", "b"], "tuple": ("x",), "map": {"k": "v"},
    "int_keys": {1: "one", Int32(2): "two"},
    "bool_keys": {True: 1, False: 0},
    "nested": [{"a": [DateTime("19700101T00:00:00Z")]}],
    "text": 'quote " backslash \\ control \x01 caf\xe9 \u2603',
}
EXPECTED = {
    "s": "Running", "empty": "", "n": 4294967296, "i": 12, "f": 0.25,
    "b": True, "none": None, "when": "20240315T08:09:10Z", "set": ["a", "b"],
    "tuple": ["x"], "map": {"k": "v"}, "int_keys": {"1": "one", "2": "two"},
    "bool_keys": {"true": 1, "false": 0},
    "nested": [{"a": ["19700101T00:00:00Z"]}],
    "text": 'quote " backslash \\ control \x01 caf\xe9 \u2603',
}


def test_value_mapping():
    got = json.loads(encode_success(V2, VALUE))
    assert got["result"] == EXPECTED


def test_stdlib_fallback_matches():
    via_fast = json.loads(encode_success(V1, VALUE))
    via_stdlib = json.loads(jsonrpc._stdlib_dumps(
        {"result": VALUE, "error": None, "id": 7}))
    assert via_fast == via_stdlib == {"result": EXPECTED, "error": None,
                                      "id": 7}


def test_awkward_values_fall_back():
    # Beyond 64 bits and lone surrogates are refused by orjson.
    got = json.loads(encode_success(V1, [1 << 70, "a\ud800b"]))
    assert got["result"] == [1 << 70, "a\ufffdb"]
    assert json.loads(encode_success(V1, b"hi"))["result"] == "aGk="
    with pytest.raises(TypeError):
        encode_success(V1, object())


def test_output_is_utf8_bytes():
    out = encode_success(V1, "caf\xe9")
    assert isinstance(out, bytes)
    assert "caf\xe9".encode("utf-8") in out


@pytest.mark.parametrize("call", [V1, V2, JsonCall("m", [], "req-1", 2),
                                  JsonCall("m", [], None, 1)])
def test_envelope_around_an_encoded_value_is_the_same_bytes(call):
    # A reply encoded once for many calls goes out in each call's
    # envelope: byte for byte what encoding it for that call writes.
    result = jsonrpc.dumps(VALUE)
    assert jsonrpc.encode_success_encoded(call, result) == \
        encode_success(call, VALUE)


def test_shared_values_are_encoded_once_and_only_while_shared():
    from txxapi.wire import shared
    reply = {"events": [], "token": "1"}
    seen = []

    def encode(value):
        seen.append(value)
        return jsonrpc.dumps(value)

    assert shared.encoded(reply, "json", encode) is None
    with shared.sharing():
        shared.share(reply)
        first = shared.encoded(reply, "json", encode)
        assert shared.encoded(reply, "json", encode) is first
        assert shared.encoded(dict(reply), "json", encode) is None
    assert seen == [reply]
    assert shared.encoded(reply, "json", encode) is None
