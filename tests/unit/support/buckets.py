"""A bucket holding the registry's storage, in memory (storage/bucket.Bucket's calls the blob path makes)."""
from __future__ import annotations

import io

from registry_mirror.storage.bucket import BucketError


class FakeBucket:
    """`unreadable`: HEAD finds the blob, GET fails; `fails_after`: a read fails after that many bytes."""

    def __init__(self, blobs: dict[str, bytes] | None = None, name: str = "registry", unreadable: bool = False,
                 fails_after: int | None = None):
        self.blobs, self.name = dict(blobs or {}), name
        self.unreadable, self.fails_after = unreadable, fails_after
        self.quarantined: list[str] = []
        self.opened: list[str] = []

    def blob_size(self, digest: str) -> int | None:
        data = self.blobs.get(digest)
        return None if data is None else len(data)

    def open_blob(self, digest: str) -> io.BytesIO:
        if digest not in self.blobs or self.unreadable:
            raise BucketError(f"cannot read {digest} from bucket {self.name!r}: NoSuchKey")
        self.opened.append(digest)
        if self.fails_after is not None:
            return _FailingBody(self.blobs[digest], self.fails_after)
        return io.BytesIO(self.blobs[digest])


    def quarantine(self, digest: str) -> str | None:
        self.quarantined.append(digest)
        self.blobs.pop(digest, None)
        return f"docker/registry/v2/quarantine/{digest}"


class _FailingBody(io.BytesIO):
    def __init__(self, data: bytes, fails_after: int):
        super().__init__(data)
        self.fails_after = fails_after

    def read(self, n: int | None = -1) -> bytes:
        if self.tell() >= self.fails_after:
            raise ConnectionResetError("the store closed the connection")
        return super().read(min(n if n is not None and n >= 0 else self.fails_after, self.fails_after - self.tell()))
