"""The national axis's wire format against fixed vectors: the worked examples of
``national-axis-protocol.md`` §2 (captured from the Java SDK), iteration orders printed by a real
``java.util.HashMap`` (OpenJDK 17) and digests hex-encoded by Java's ``Integer.toHexString``."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json

import pytest

from adapters.national_axis.protocol import (
    AuthFailure,
    envelope,
    gson_string,
    hash_file,
    java_hashmap_order,
    java_timestamp,
    sign_header_string,
    signed_headers,
    verify_request,
)

SYSTEM, SECRET, STAMP = "000.00.00.H41", "s3cret", "15032024T101530+0042"
SECRETS = {SYSTEM: SECRET}

# -- the worked examples of §2 -------------------------------------------------------------------------

LIST_SIGN_HEADER = (
    '{"XroadVnpt-systemid":"000.00.00.H41","XroadVnpt-servicetype":"eDoc","XroadVnpt-messagetype":"edoc",'
    '"XroadVnpt-timestamp":"15032024T101530+0042","XroadVnpt-Content-Type":"application/json"}'
)


def _list_headers() -> list[tuple[str, str]]:
    return signed_headers(SYSTEM, SECRET, {"servicetype": "eDoc", "messagetype": "edoc"}, timestamp=STAMP)


def test_worked_example_headers_in_sending_order() -> None:
    assert [name for name, _ in _list_headers()] == [
        "XroadVnpt-systemid",
        "XroadVnpt-servicetype",
        "XroadVnpt-messagetype",
        "XroadVnpt-timestamp",
        "Content-Type",
        "XroadVnpt-Content-Type",
        "XroadVnpt-sign-header-key",
        "XroadVnpt-sign-header",
        "XroadVnpt-hash-header",
        "User-Agent",
        "XroadVnpt-version",
    ]


def test_worked_example_values() -> None:
    headers = dict(_list_headers())
    assert headers["XroadVnpt-sign-header-key"] == "systemid;servicetype;messagetype;timestamp;Content-Type"
    assert headers["XroadVnpt-sign-header"] == LIST_SIGN_HEADER
    assert headers["XroadVnpt-hash-header"] == (
        "faf010bf36eec15b6d8bd8582214c0e3709135e7425db14768f581c3601ac97d"
    )
    assert headers["Content-Type"] == headers["XroadVnpt-Content-Type"] == "application/json"
    assert headers["User-Agent"] == "JAVASDKAgent/1.0.0 XRoad/VPCP"
    assert headers["XroadVnpt-version"] == "3.0.201608"
    # Plain systemid/timestamp headers are not sent (§2.1).
    assert "systemid" not in headers
    assert "timestamp" not in headers


def test_worked_example_hash_is_hmac_over_the_sign_header_with_the_raw_secret() -> None:
    expected = hmac.new(b"s3cret", LIST_SIGN_HEADER.encode("utf-8"), hashlib.sha256).hexdigest()
    assert dict(_list_headers())["XroadVnpt-hash-header"] == expected


def test_worked_example_empty_json() -> None:
    headers = dict(signed_headers(SYSTEM, SECRET, {}, timestamp=STAMP))
    assert headers["XroadVnpt-sign-header-key"] == "systemid;timestamp;Content-Type"
    assert headers["XroadVnpt-hash-header"] == (
        "b5f663e903c60dc378114d553d81aa9842c60e1f35ee57d26c7af5f11619e926"
    )


def test_send_edoc_signs_hash_file_and_octet_stream() -> None:
    headers = signed_headers(
        SYSTEM,
        SECRET,
        {"from": SYSTEM, "servicetype": "eDoc", "messagetype": "edoc"},
        timestamp=STAMP,
        content_type="application/octet-stream",
        hash_of_file="abc",
    )
    values = dict(headers)
    order = "systemid;servicetype;messagetype;hash-file;from;timestamp;Content-Type"
    assert values["XroadVnpt-sign-header-key"] == order
    assert values["XroadVnpt-hash-file"] == "abc"
    assert json.loads(values["XroadVnpt-sign-header"])["XroadVnpt-Content-Type"] == "application/octet-stream"


# -- java.util.HashMap iteration order ------------------------------------------------------------------


def _keys(extra: str) -> list[str]:
    """The SDK's own three keys, then the caller's (space-separated)."""
    return ["timestamp", "systemid", "Content-Type", *extra.split()]


# Each expected order was printed by `new HashMap<String,String>()` after put() in this order (JDK 17).
JAVA_ORDERS = [
    (_keys("servicetype messagetype"), "systemid;servicetype;messagetype;timestamp;Content-Type"),
    (
        _keys("from to servicetype messagetype hash-file"),
        "systemid;servicetype;messagetype;hash-file;from;to;timestamp;Content-Type",
    ),
    # 14 keys: one resize to 32. Hand check, bucket = (h ^ h>>>16) & 31 of Java's String.hashCode:
    # systemid 2 | messagetype, level, pcode 5 | docId 6 | filePath 7 | servicetype 18 | hash-file 22 |
    # AgencyCode 25 | from 26 | to 27 | timestamp, Content-Type, status 31 (same bucket: insertion order).
    (
        _keys("from to servicetype messagetype docId filePath status level AgencyCode hash-file pcode"),
        "systemid;messagetype;level;pcode;docId;filePath;servicetype;hash-file;AgencyCode;from;to;"
        "timestamp;Content-Type;status",
    ),
    # 26 keys (two resizes), with Vietnamese and a surrogate pair (hashCode runs over UTF-16 units).
    (
        _keys(
            "from to servicetype messagetype docId filePath status level AgencyCode hash-file pcode id code "
            "name mail mobile fax trạng-thái 😀 oldCode version centerCode deleted"
        ),
        "systemid;code;mail;messagetype;pcode;docId;centerCode;AgencyCode;from;id;fax;timestamp;Content-Type;"
        "level;filePath;mobile;trạng-thái;version;servicetype;deleted;oldCode;hash-file;name;😀;to;status",
    ),
    # Only 10 keys, but 9 land in bucket 15 of 16: treeifyBin resizes a table below 64 instead of
    # making a tree, and timestamp/Content-Type move to bucket 31 behind the seven others.
    (
        _keys("kad kbe kcf kdg keh kfi kgj"),
        "systemid;kad;kbe;kcf;kdg;keh;kfi;kgj;timestamp;Content-Type",
    ),
]


@pytest.mark.parametrize(("keys", "expected"), JAVA_ORDERS)
def test_java_hashmap_order_matches_the_jdk(keys: list[str], expected: str) -> None:
    assert ";".join(java_hashmap_order(keys)) == expected


def test_java_hashmap_order_ignores_repeated_puts() -> None:
    assert java_hashmap_order(["timestamp", "systemid", "timestamp"]) == ["systemid", "timestamp"]


def test_signed_headers_follow_the_order_after_a_resize() -> None:
    params = {k: "1" for k in JAVA_ORDERS[2][0][3:]}
    headers = signed_headers(SYSTEM, SECRET, params, timestamp=STAMP)
    assert dict(headers)["XroadVnpt-sign-header-key"] == JAVA_ORDERS[2][1]
    signed = [k.removeprefix("XroadVnpt-") for k in json.loads(dict(headers)["XroadVnpt-sign-header"])]
    assert ";".join(signed) == JAVA_ORDERS[2][1]


# -- gson escaping ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "literal"),
    [
        ('say "hi"', r'"say \"hi\""'),
        ("C:\\edoc", r'"C:\\edoc"'),
        ("a\tb\nc\rd\be\ff", r'"a\tb\nc\rd\be\ff"'),
        ("\u0001\u001f", r'"\u0001\u001f"'),
        ("a\u2028b\u2029c", r'"a\u2028b\u2029c"'),
        ("/<>&='", '"/<>&=\'"'),
        ("Ủy ban nhân dân tỉnh Nghệ An", '"Ủy ban nhân dân tỉnh Nghệ An"'),
        ("\x7f", '"\x7f"'),
    ],
)
def test_gson_string(text: str, literal: str) -> None:
    assert gson_string(text) == literal
    assert json.loads(literal) == text


def test_sign_header_string_is_compact_and_prefixed() -> None:
    assert sign_header_string([("a", "x"), ("b", 'y"')]) == r'{"XroadVnpt-a":"x","XroadVnpt-b":"y\""}'


# -- hash-file, timestamp, envelope -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # From Java: for (byte x : digest) sb.append(Integer.toHexString(x & 0xff))
        ("<edXML/>", "8d55f6c7bf7cd534cf27a10e1bb5731c68279c3cb991cf4844774c685b3758"),
        ("Công văn số 1", "febec642953dad50c661db30f046c47260f18040e7f030fb79da51e520228b"),
        ("edoc", "dbc3209beff5c39d2038b7d9afc618985ae19560b0bf713db699dac88a8d9a60"),
    ],
)
def test_hash_file_drops_zero_padding(data: str, expected: str) -> None:
    assert hash_file(data.encode("utf-8")) == expected


def test_hash_file_is_shorter_when_a_byte_is_below_0x10() -> None:
    digest = hashlib.sha256(b"<edXML/>").digest()
    small = [b for b in digest if b < 0x10]
    assert small  # 0x0f and 0x02 in this digest
    assert len(hash_file(b"<edXML/>")) == 64 - len(small)


def test_java_timestamp_is_vietnam_local_time_with_literal_plus_and_millis() -> None:
    at = dt.datetime(2024, 3, 15, 3, 15, 30, 42_999, tzinfo=dt.UTC)
    assert java_timestamp(at) == "15032024T101530+0042"
    new_year = dt.datetime(2024, 12, 31, 17, 0, 0, 999_000, tzinfo=dt.UTC)
    assert java_timestamp(new_year) == "01012025T000000+0999"


def test_envelope_has_the_three_fields() -> None:
    assert envelope() == {"status": "OK", "ErrorCode": "0", "ErrorDesc": "Thành công"}
    assert envelope(ok=False, code="404", description="x", DocId="") == {
        "status": "FAIL",
        "ErrorCode": "404",
        "ErrorDesc": "x",
        "DocId": "",
    }


# -- verify_request -------------------------------------------------------------------------------------


def _raw(headers: list[tuple[str, str]]) -> dict[str, bytes]:
    """As a server sees them: lower-case names, UTF-8 bytes (sendEdoc sends UTF-8, §2 quirk b)."""
    return {name.lower(): value.encode("utf-8") for name, value in headers}


def test_verify_round_trip() -> None:
    params = {"docId": "abc", "note": 'Sở "Tài chính"\t/<>'}
    signed = verify_request(_raw(signed_headers(SYSTEM, SECRET, params, timestamp=STAMP)), SECRETS.get)
    assert signed.system_id == SYSTEM
    assert signed.timestamp == STAMP
    assert signed.params["docId"] == "abc"
    assert signed.params["note"] == 'Sở "Tài chính"\t/<>'


def test_verify_the_documented_capture() -> None:
    raw = {
        "xroadvnpt-sign-header": LIST_SIGN_HEADER.encode(),
        "xroadvnpt-hash-header": b"faf010bf36eec15b6d8bd8582214c0e3709135e7425db14768f581c3601ac97d",
    }
    assert verify_request(raw, SECRETS.get).params["servicetype"] == "eDoc"


def test_verify_wrong_secret() -> None:
    raw = _raw(signed_headers(SYSTEM, "not-the-secret", {}, timestamp=STAMP))
    with pytest.raises(AuthFailure, match="does not match"):
        verify_request(raw, SECRETS.get)


def test_verify_tampered_sign_header() -> None:
    raw = _raw(signed_headers(SYSTEM, SECRET, {"docId": "mine"}, timestamp=STAMP))
    raw["xroadvnpt-sign-header"] = raw["xroadvnpt-sign-header"].replace(b"mine", b"othr")
    with pytest.raises(AuthFailure, match="does not match"):
        verify_request(raw, SECRETS.get)


def test_verify_unknown_system() -> None:
    raw = _raw(signed_headers("000.00.00.H55", SECRET, {}, timestamp=STAMP))
    with pytest.raises(AuthFailure, match="unknown system"):
        verify_request(raw, SECRETS.get)


@pytest.mark.parametrize("missing", ["xroadvnpt-sign-header", "xroadvnpt-hash-header"])
def test_verify_missing_header(missing: str) -> None:
    raw = _raw(signed_headers(SYSTEM, SECRET, {}, timestamp=STAMP))
    del raw[missing]
    with pytest.raises(AuthFailure, match="missing"):
        verify_request(raw, SECRETS.get)


def test_verify_accepts_stale_keys_and_ignores_unsigned_headers() -> None:
    # The SDK never clears its map: a list call's keys ride along on the next updateStatus (§2 quirk a).
    params = {"servicetype": "eDoc", "messagetype": "edoc", "status": "done", "docId": "d-1"}
    raw = _raw(signed_headers(SYSTEM, SECRET, params, timestamp=STAMP))
    raw["xroadvnpt-docid"] = b"someone-elses"  # unsigned: must change nothing
    signed = verify_request(raw, SECRETS.get)
    assert signed.params["docId"] == "d-1"
    assert signed.params["servicetype"] == "eDoc"


def test_verify_accepts_any_header_order() -> None:
    raw = _raw(list(reversed(signed_headers(SYSTEM, SECRET, {"a": "1", "b": "2"}, timestamp=STAMP))))
    assert verify_request(raw, SECRETS.get).params["b"] == "2"


def test_verify_refuses_a_sign_header_that_is_not_an_object_of_strings() -> None:
    sign_header = b'{"XroadVnpt-systemid":"000.00.00.H41","XroadVnpt-n":1}'
    raw = {
        "xroadvnpt-sign-header": sign_header,
        "xroadvnpt-hash-header": hmac.new(b"s3cret", sign_header, hashlib.sha256).hexdigest().encode(),
    }
    with pytest.raises(AuthFailure, match="object of strings"):
        verify_request(raw, SECRETS.get)
