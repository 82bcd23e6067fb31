# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Just enough DER to read a client certificate's validity, so an expired one is named as such."""

import base64
import datetime
import re


def _der_item(data, pos):
    """(tag, content_start, content_end) of the DER item at pos."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(bytes(data[pos : pos + count]), "big")
        pos += count
    return tag, pos, pos + length


def _der_time(tag, raw):
    text = raw.decode("ascii").rstrip("Z")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSS
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    return datetime.datetime.strptime(text[:14], "%Y%m%d%H%M%S")


def certificate_validity(pem_or_der):
    """(not_before, not_after) as naive UTC datetimes of an X.509 certificate, from PEM text
    or DER bytes, with the standard library only. Raises ValueError when it cannot parse."""
    data = pem_or_der
    if isinstance(data, str):
        data = data.encode("ascii")
    if b"-----BEGIN" in data:
        match = re.search(b"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", data, re.S)
        if not match:
            raise ValueError("no certificate in PEM data")
        data = base64.b64decode(b"".join(match.group(1).split()))
    try:
        _tag, start, _end = _der_item(data, 0)  # Certificate
        _tag, pos, _end = _der_item(data, start)  # tbsCertificate
        tag, _start, end = _der_item(data, pos)
        if tag == 0xA0:  # [0] version
            tag, _start, end = _der_item(data, end)
        for _field in ("signature", "issuer"):  # end is past serial, then each field
            tag, _start, end = _der_item(data, end)
        tag, start, _end = _der_item(data, end)  # validity SEQUENCE
        tag, s1, e1 = _der_item(data, start)
        not_before = _der_time(tag, bytes(data[s1:e1]))
        tag, s2, e2 = _der_item(data, e1)
        not_after = _der_time(tag, bytes(data[s2:e2]))
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not an X.509 certificate: {exc}") from None
    return not_before, not_after


def certificate_problem(pem_or_der, now=None):
    """None when the certificate is valid at ``now`` (naive UTC), else why not."""
    try:
        not_before, not_after = certificate_validity(pem_or_der)
    except ValueError:
        return None  # the API server will judge it
    now = now or datetime.datetime.utcnow()
    if now > not_after:
        return f"expired at {not_after.isoformat()}Z"
    if now < not_before:
        return f"not valid before {not_before.isoformat()}Z"
    return None
