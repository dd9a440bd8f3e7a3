"""Hashing bytes in a digest's algorithm: the algorithms the mirror checks blobs with."""
from __future__ import annotations

import hashlib

from registry_mirror.oci.registry_requests import DIGEST_HEX_LENGTHS


class UncheckableDigest(ValueError):
    """A digest in an algorithm the mirror does not hash with."""


def digest_hasher(digest: str) -> hashlib._Hash:
    """A hash object for `digest`'s algorithm."""
    algorithm = digest.partition(":")[0]
    if algorithm not in DIGEST_HEX_LENGTHS:
        raise UncheckableDigest(f"cannot check {digest[:100]!r}: its algorithm {algorithm[:30]!r} is not one of "
                                f"{', '.join(DIGEST_HEX_LENGTHS)}")
    return hashlib.new(algorithm)
