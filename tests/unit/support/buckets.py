"""A bucket holding the registry's storage, in memory (storage/bucket.Bucket's calls the blob path makes)."""
from __future__ import annotations

import io

from registry_mirror.storage.bucket import BucketError


class FakeBucket:
    def __init__(self, blobs: dict[str, bytes] | None = None, name: str = "registry"):
        self.blobs, self.name = dict(blobs or {}), name
        self.quarantined: list[str] = []
        self.opened: list[str] = []

    def blob_size(self, digest: str) -> int | None:
        data = self.blobs.get(digest)
        return None if data is None else len(data)

    def open_blob(self, digest: str) -> io.BytesIO:
        if digest not in self.blobs:
            raise BucketError(f"cannot read {digest} from bucket {self.name!r}: NoSuchKey")
        self.opened.append(digest)
        return io.BytesIO(self.blobs[digest])

    def quarantine(self, digest: str) -> str | None:
        self.quarantined.append(digest)
        self.blobs.pop(digest, None)
        return f"docker/registry/v2/quarantine/{digest}"
