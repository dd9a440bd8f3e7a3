"""Schema1 signed manifests are named by their payload without signatures, as Distribution names them."""
import base64
import hashlib
import json

import pytest

from registry_mirror.oci.schema1 import MEDIA_TYPE, base64url_decode, is_signed, signed_payload

MANIFEST = {
    "schemaVersion": 1, "name": "library/app", "tag": "1.0", "architecture": "amd64",
    "fsLayers": [{"blobSum": "sha256:" + "a" * 64}, {"blobSum": "sha256:" + "b" * 64}],
    "history": [{"v1Compatibility": json.dumps({"id": "1" * 64, "parent": "2" * 64, "created": "2016-01-01"})},
                {"v1Compatibility": json.dumps({"id": "2" * 64, "created": "2016-01-01"})}],
}


def b64url(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def protected(length, tail: bytes | str, **extra) -> str:
    tail_text = tail if isinstance(tail, str) else b64url(tail)
    return b64url(json.dumps({"formatLength": length, "formatTail": tail_text, "time": "2016-01-01T00:00:00Z",
                              **extra}))


def signature(protected_header: str, key_id: str = "K1") -> dict:
    """One JWS signature as libtrust writes it; its value is never checked by the digest."""
    return {"header": {"jwk": {"crv": "P-256", "kid": f"{key_id}:AAAA:BBBB", "kty": "EC", "x": "eA", "y": "eQ"},
                       "alg": "ES256"},
            "signature": b64url(b"\x01" * 64), "protected": protected_header}


def signed(manifest: dict = MANIFEST, keys=("K1",)) -> tuple[bytes, bytes]:
    """(served body, payload): libtrust's PrettySignature of `manifest` (three-space indent) with `keys`."""
    payload = json.dumps(manifest, indent=3).encode()
    length = len(payload) - 2  # the payload ends with "\n}", which becomes formatTail
    sigs = [signature(protected(length, payload[length:]), k) for k in keys]
    body = (payload[:length] + b',\n   "signatures": ' + json.dumps(sigs, indent=3).replace("\n", "\n   ").encode()
            + b"\n}")
    return body, payload


def test_the_payload_is_the_body_without_its_signatures():
    body, payload = signed()
    assert signed_payload(body) == payload
    assert json.loads(signed_payload(body)) == MANIFEST
    assert hashlib.sha256(signed_payload(body)).digest() != hashlib.sha256(body).digest()


def test_two_signatures_name_the_same_payload():
    body, payload = signed(keys=("K1", "K2"))
    assert signed_payload(body) == payload


def test_compact_body_and_a_float_format_length():
    payload = json.dumps(MANIFEST, separators=(",", ":")).encode()
    length = len(payload) - 1
    sigs = [signature(protected(float(length), b"}"))]
    body = payload[:length] + b',"signatures":' + json.dumps(sigs).encode() + b"}"
    assert signed_payload(body) == payload


@pytest.mark.parametrize("content_type,expected", [
    (MEDIA_TYPE, True), (MEDIA_TYPE.upper() + "; charset=utf-8", True),
    ("application/vnd.docker.distribution.manifest.v1+json", False),
    ("application/vnd.oci.image.manifest.v1+json", False), ("", False),
])
def test_is_signed(content_type, expected):
    assert is_signed(content_type) is expected


@pytest.mark.parametrize("text,expected", [("", b""), ("eA", b"x"), ("eHk", b"xy"), ("eHl6", b"xyz"),
                                           ("-_8", b"\xfb\xff")])
def test_base64url_decode(text, expected):
    assert base64url_decode(text, "x") == expected


@pytest.mark.parametrize("text", ["eA==", "e+A", "e/A", "eHl6e", "e A", None, 5])
def test_base64url_decode_refuses_what_jose_does_not_write(text):
    with pytest.raises(ValueError, match="x is not unpadded base64url"):
        base64url_decode(text, "x")


def _body_with(signatures) -> bytes:
    payload = json.dumps(MANIFEST, indent=3).encode()
    return payload[:-2] + b',\n   "signatures": ' + json.dumps(signatures).encode() + b"\n}"


LENGTH = len(json.dumps(MANIFEST, indent=3).encode()) - 2


@pytest.mark.parametrize("body,message", [
    (b"not json", "signed manifest is not JSON"),
    (b"[1, 2]", 'no "signatures" list'),
    (json.dumps(MANIFEST).encode(), 'no "signatures" list'),
    (_body_with([]), 'no "signatures" list'),
    (_body_with("sig"), 'no "signatures" list'),
    (_body_with(["sig"]), "signatures[0].protected is not unpadded base64url"),
    (_body_with([{"signature": "AA"}]), "signatures[0].protected is not unpadded base64url"),
    (_body_with([signature("!!")]), "signatures[0].protected is not unpadded base64url"),
    (_body_with([signature(b64url("{not json"))]), "signatures[0].protected is not base64url-encoded JSON"),
    (_body_with([signature(b64url("[1]"))]), "is not a JSON object with formatLength and formatTail"),
    (_body_with([signature(b64url(json.dumps({"formatTail": "fQ"})))]), "formatLength: expected a byte count"),
    (_body_with([signature(protected("12", b"}"))]), "formatLength: expected a byte count, got '12'"),
    (_body_with([signature(protected(True, b"}"))]), "formatLength: expected a byte count, got True"),
    (_body_with([signature(protected(-1, b"}"))]), "formatLength: expected a byte count, got -1"),
    (_body_with([signature(protected(10 ** 7, b"}"))]), "formatLength 10000000 is past the end"),
    (_body_with([signature(b64url(json.dumps({"formatLength": LENGTH})))]),
     "signatures[0].protected.formatTail is not unpadded base64url"),
    (_body_with([signature(protected(LENGTH, "fQ=="))]), "formatTail is not unpadded base64url"),
    (_body_with([signature(protected(LENGTH, b"\n}")), signature(protected(LENGTH - 1, b"\n}"))]),
     "signatures[1].protected: formatLength/formatTail conflict"),
    (_body_with([signature(protected(LENGTH, b"\n}")), signature(protected(LENGTH, b"}"))]),
     "signatures[1].protected: formatLength/formatTail conflict"),
])
def test_a_malformed_signed_manifest_says_what_is_wrong(body, message):
    with pytest.raises(ValueError) as e:
        signed_payload(body)
    assert message in str(e.value)
