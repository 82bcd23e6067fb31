"""protowire: Protocol Buffers' wire format against the bytes of the encoding guide
(protobuf.dev/programming-guides/encoding), decoding, and malformed input."""

import pytest

from ansible_collections.strata.ops.plugins.module_utils import protowire as pw


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (150, "9601"),
        (300, "ac02"),
        (2**63, "80" * 9 + "01"),
    ],
)
def test_a_varint_is_seven_bits_a_byte_least_significant_first(value, encoded):
    assert pw.varint(value) == bytes.fromhex(encoded)


def test_a_negative_varint_is_refused():
    with pytest.raises(ValueError, match="negative varint"):
        pw.varint(-1)


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (pw.field(1, 150), "089601"),  # the guide's Test1 {a: 150}
        (pw.field(2, "testing"), "120774657374696e67"),  # Test2 {b: "testing"}
        (pw.message(3, pw.field(1, 150)), "1a03089601"),  # Test3 {c: {a: 150}}
        (pw.field(5, True), "2801"),
        (pw.field(2, b"\x00\xff"), "120200ff"),
        (pw.field(16, 1), "800101"),  # a field number past 15 takes a two-byte key
        (pw.message(1, b""), "0a00"),  # an empty message is set, so written
    ],
    ids=["int", "string", "nested", "bool", "bytes", "field-16", "empty-message"],
)
def test_fields_encode_as_the_encoding_guide_shows(encoded, expected):
    assert encoded == bytes.fromhex(expected)


@pytest.mark.parametrize("zero", [0, False, "", b""])
def test_a_zero_value_is_left_out(zero):
    assert pw.field(1, zero) == b""


def test_repeated_strings_write_every_element_an_empty_one_too():
    assert pw.repeated(4, ["hello", "", "x"]) == bytes.fromhex("220568656c6c6f" + "2200" + "220178")
    assert pw.repeated(4, []) == b""


def test_a_map_writes_one_entry_message_per_item_in_key_order():
    # map<string, string> m = 3 is `repeated Entry m = 3` with Entry {key 1, value 2}
    assert pw.string_map(3, {"b": "2", "a": "1"}) == bytes.fromhex("1a060a0161120131" + "1a060a0162120132")
    assert pw.string_map(3, {"a": ""}) == bytes.fromhex("1a030a0161")  # an empty value is left out


def test_an_any_holds_its_type_url_and_value():
    assert pw.any_message("t/x", b"\x08\x01") == bytes.fromhex("0a03742f78" + "12020801")


def test_decode_gives_every_value_of_each_field():
    encoded = (
        pw.field(1, 150) + pw.field(2, "testing") + pw.message(3, pw.field(1, 7)) + pw.repeated(4, ["a", ""])
    )
    fields = pw.decode(encoded)
    assert fields == {1: [150], 2: [b"testing"], 3: [b"\x08\x07"], 4: [b"a", b""]}
    assert pw.decode(pw.first(fields, 3)) == {1: [7]}
    assert pw.text(fields, 2) == "testing"


def test_the_last_value_of_a_singular_field_wins_and_a_missing_one_is_the_default():
    fields = pw.decode(pw.field(1, "first") + pw.field(1, "last"))
    assert pw.text(fields, 1) == "last"
    assert pw.first(fields, 2, 0) == 0 and pw.text(fields, 2) == ""


def test_fixed_width_fields_are_little_endian_unsigned_ints():
    # wire type I64 (fixed64): key 0x09 and 8 bytes; I32 (fixed32): key 0x15 and 4
    encoded = bytes.fromhex("09" + "0102030405060708" + "15" + "0a0b0c0d") + pw.field(3, 1)
    assert pw.decode(encoded) == {1: [0x0807060504030201], 2: [0x0D0C0B0A], 3: [1]}


def test_singular_keeps_the_last_value_of_each_field():
    assert pw.singular(pw.field(1, 5) + pw.field(2, "a") + pw.field(1, 7)) == {1: 7, 2: b"a"}


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        ("0896", "truncated varint"),  # the value's last byte has its continuation bit set
        ("80", "truncated varint"),  # so does the key's
        ("1207746573", "runs past the message"),  # 7 bytes announced, 3 there
        ("0b", "wire type 3 is not supported"),  # a group (deprecated)
        ("0e", "wire type 6 is not supported"),
    ],
    ids=["value", "key", "length", "group", "unknown"],
)
def test_malformed_input_is_a_value_error(encoded, message):
    with pytest.raises(ValueError, match=message):
        pw.decode(bytes.fromhex(encoded))


def test_a_truncated_fixed_width_field_is_a_value_error():
    with pytest.raises(ValueError, match="fixed-width field runs past the message"):
        pw.decode(bytes.fromhex("090102"))
