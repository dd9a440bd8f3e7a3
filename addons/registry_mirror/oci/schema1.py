"""Docker schema1 signed manifests (`application/vnd.docker.distribution.manifest.v1+prettyjws`).

Their digest is not that of the bytes served but of the payload without its signatures, as Distribution
computes it (libtrust's `ParsePrettySignature`, then `Payload()`): every signature's `protected` header is
base64url JSON holding `formatLength` and `formatTail`, and the payload is the body's first `formatLength`
bytes followed by the decoded `formatTail`. Signatures are not verified; Distribution's digest does not
verify them either.
"""
from __future__ import annotations

import base64
import binascii
import json
import re

MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v1+prettyjws"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def is_signed(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == MEDIA_TYPE


def base64url_decode(text: object, what: str) -> bytes:
    """JOSE base64url: the URL alphabet without its `=` padding (libtrust's joseBase64UrlDecode)."""
    if not isinstance(text, str) or not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError(f"{what} is not unpadded base64url text (letters, digits, - and _)")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"{what} is not base64url: {e}") from e


def signed_payload(body: bytes) -> bytes:
    """The bytes a schema1 signed manifest's digest is taken of; ValueError naming what is malformed."""
    try:
        document = json.loads(body)
    except ValueError as e:
        raise ValueError(f"signed manifest is not JSON: {e}") from e
    signatures = document.get("signatures") if isinstance(document, dict) else None
    if not isinstance(signatures, list) or not signatures:
        raise ValueError("signed manifest has no \"signatures\" list; expected at least one JWS signature")
    length, tail = _format_of(signatures[0], "signatures[0].protected")
    for i, signature in enumerate(signatures[1:], 1):
        what = f"signatures[{i}].protected"
        if _format_of(signature, what) != (length, tail):
            raise ValueError(f"{what}: formatLength/formatTail conflict with signatures[0]'s")
    if length > len(body):
        raise ValueError(f"formatLength {length} is past the end of the {len(body)}-byte manifest")
    return body[:length] + tail


def _format_of(signature: object, what: str) -> tuple[int, bytes]:
    """(formatLength, formatTail) of one signature's protected header: where the payload ends, what closes it."""
    encoded = signature.get("protected") if isinstance(signature, dict) else None
    protected = base64url_decode(encoded, what)
    try:
        header = json.loads(protected)
    except ValueError as e:
        raise ValueError(f"{what} is not base64url-encoded JSON: {e}") from e
    if not isinstance(header, dict):
        raise ValueError(f"{what} is not a JSON object with formatLength and formatTail")
    length, tail = header.get("formatLength"), header.get("formatTail")
    if isinstance(length, bool) or not isinstance(length, int | float) or length < 0:
        raise ValueError(f"{what}.formatLength: expected a byte count, got {length!r}")
    return int(length), base64url_decode(tail, f"{what}.formatTail")
