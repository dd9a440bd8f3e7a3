"""What a manifest body must be before it is cached: a JSON object with a schemaVersion of 1 or 2, whose
digest is the one the upstream claimed and the one asked for.

A digest header is not enough: an upstream may send none, and then the digest is computed over whatever
arrived. An answer that is not a manifest at all (a token reply or a proxy's page read from a desynchronized
keep-alive connection, an HTML login form) would be cached under the tag and served, and the stock registry
fails it as a schema1 manifest with no signature. Every manifest, index and schema1 alike, carries
`schemaVersion`.
"""
from __future__ import annotations

import hashlib
import json

from registry_mirror.oci import schema1
from registry_mirror.oci.schema1 import is_signed, signed_payload

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
IMAGE_TYPES = ("application/vnd.oci.image.manifest.v1+json",
               "application/vnd.docker.distribution.manifest.v2+json")
MANIFEST_TYPES = frozenset({*INDEX_TYPES, *IMAGE_TYPES, "application/vnd.docker.distribution.manifest.v1+json",
                            schema1.MEDIA_TYPE})


class ManifestMismatch(Exception):
    """The upstream's manifest bytes do not match their digest."""


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def manifest_problem(body: bytes) -> str | None:
    """Why `body` cannot be a manifest, or None."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):  # a hostile nesting depth included
        return "not JSON"
    if not isinstance(data, dict):
        return "not a JSON object"
    version = data.get("schemaVersion")
    if version not in (1, 2) or isinstance(version, bool):
        return f"schemaVersion is {json.dumps(version)}, not 1 or 2"
    return None


def verified_digest(body: bytes, content_type: str, claimed: str | None, asked: str | None, what: str) -> str:
    """The digest the manifest `body` is named by; ManifestMismatch (never cached, never handed on) unless it is a
    manifest whose digest is the upstream's `claimed` one and the `asked` one (by-digest requests), when given."""
    if problem := manifest_problem(body):
        raise ManifestMismatch(f"upstream answer for manifest {what} is not a manifest "
                               f"({problem}; {content_type}, {len(body)} bytes); discarded")
    try:  # a signed schema1 manifest is named by its payload, as Distribution names it
        actual = digest_of(signed_payload(body) if is_signed(content_type) else body)
    except ValueError as e:
        raise ManifestMismatch(f"upstream manifest for {what} is a malformed signed manifest ({e}); discarded") from e
    claimed = actual if claimed is None else claimed
    expected = claimed if asked is None else asked
    if actual != expected or claimed != actual:
        raise ManifestMismatch(f"upstream manifest for {what} does not match its digest "
                               f"(expected {expected}, got {actual}); discarded")
    return actual
