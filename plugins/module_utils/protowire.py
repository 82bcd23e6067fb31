# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Protocol Buffers' wire format, the part containerd's API messages use: varints, strings, bytes,
nested messages, repeated fields and maps of strings (protobuf.dev/programming-guides/encoding).

containerd's gRPC API (containerd_api.py) needs a handful of its messages; encoding them here keeps
the modules free of generated code and of the protobuf package. Fields follow proto3: a zero value
is not written, and a message decodes into {field number: [values]} (later values win for a
singular field, as in protobuf's own parsers).
"""

VARINT, LENGTH_DELIMITED = 0, 2
_FIXED_SIZES = {1: 8, 5: 4}  # wire types I64 and I32: little-endian, read as unsigned ints


def varint(value):
    """The varint of a non-negative int (int64 negatives are not sent by us)."""
    if value < 0:
        raise ValueError(f"protowire: a negative varint ({value}) is not supported")
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _key(number, wire_type):
    return varint(number << 3 | wire_type)


def field(number, value):
    """Field ``number`` holding ``value``: bool/int as varint, str/bytes as length-delimited (an
    already encoded message is bytes). Zero values give b"" (proto3 leaves them out)."""
    if isinstance(value, bool):
        return _key(number, VARINT) + varint(1) if value else b""
    if isinstance(value, int):
        return _key(number, VARINT) + varint(value) if value else b""
    data = value.encode() if isinstance(value, str) else bytes(value)
    if not data:
        return b""
    return _key(number, LENGTH_DELIMITED) + varint(len(data)) + data


def message(number, encoded):
    """A nested message field; unlike field(), an empty message is still written (it is set)."""
    return _key(number, LENGTH_DELIMITED) + varint(len(encoded)) + encoded


def repeated(number, values):
    """A repeated string or message field: every element is written, an empty one too."""
    return b"".join(message(number, v.encode() if isinstance(v, str) else v) for v in values)


def string_map(number, mapping):
    """A map<string, string> field: one entry message (key 1, value 2) per item, in key order."""
    return b"".join(message(number, field(1, k) + field(2, v)) for k, v in sorted(mapping.items()))


def any_message(type_url, value):
    """google.protobuf.Any: type_url 1, value 2."""
    return field(1, type_url) + field(2, value)


def _read_varint(data, pos):
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("protowire: truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def decode(data):
    """{field number: [raw values]}: ints for varints and fixed-width fields, bytes for
    length-delimited ones (strings, bytes and nested messages alike: the caller knows which).
    ValueError on malformed input."""
    fields = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == VARINT:
            value, pos = _read_varint(data, pos)
        elif wire_type == LENGTH_DELIMITED:
            size, pos = _read_varint(data, pos)
            if pos + size > len(data):
                raise ValueError("protowire: a length-delimited field runs past the message")
            value, pos = bytes(data[pos : pos + size]), pos + size
        elif wire_type in _FIXED_SIZES:
            size = _FIXED_SIZES[wire_type]
            if pos + size > len(data):
                raise ValueError("protowire: a fixed-width field runs past the message")
            value, pos = int.from_bytes(data[pos : pos + size], "little"), pos + size
        else:
            raise ValueError(f"protowire: wire type {wire_type} is not supported")
        fields.setdefault(number, []).append(value)
    return fields


def singular(data):
    """{field number: value} of a message whose fields are all singular: the last value of each
    (protobuf's rule)."""
    return {number: values[-1] for number, values in decode(data).items()}


def first(fields, number, default=None):
    """The last value of a singular field (protobuf's rule), or ``default``."""
    values = fields.get(number)
    return values[-1] if values else default


def text(fields, number):
    return first(fields, number, b"").decode()
