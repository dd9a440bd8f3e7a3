"""The storage seam (storage/store.py) on a bucket: files are objects under a prefix, folders are key prefixes.

An object store has no rename: data goes aside as a copy, then a delete (the registry's own driver moves alike),
and `put_back` copies only while the target is missing (a blob's data is its digest's bytes, so a copy racing the
registry's writes the same bytes). A PUT replaces an object at once, so a reader never sees half of one. Listing
is a page of 1,000 keys a request; reads of many small files (links) go out at once.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from registry_mirror.redact import error_text
from registry_mirror.storage.store import Entry

log = logging.getLogger(__name__)

PARALLEL_READS = 16  # links read at once: a pass reads one per layer of every repository
DELETE_BATCH = 1000  # keys per DeleteObjects request, S3's most


class BucketStore:
    def __init__(self, client: Any, bucket: str, prefix: str = ""):
        """`client`: a boto3 S3 client (thread-safe); `prefix`: the storage's root in the bucket ("" for its top)."""
        self._client, self.bucket = client, bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.name = f"bucket {bucket}/{self.prefix}"
        self.requests: Counter[str] = Counter()

    def _key(self, path: str) -> str:
        return self.prefix + path

    def files(self, folder: str) -> Iterator[Entry]:
        prefix = self._key(folder.rstrip("/") + "/" if folder else "")
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            self.requests["list"] += 1
            for found in page.get("Contents", []):
                yield Entry(found["Key"][len(self.prefix):], int(found["Size"]), found["LastModified"].timestamp())

    def read(self, path: str, limit: int) -> bytes | None:
        self.requests["get"] += 1
        return self._get(path, limit)

    def _get(self, path: str, limit: int) -> bytes | None:
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=self._key(path), Range=f"bytes=0-{limit - 1}")
        except Exception as e:
            if _missing(e):
                return None
            if _status(e) == 416:  # an empty object has no byte 0
                return b""
            raise
        body = answer["Body"]
        try:
            return body.read(limit)
        finally:
            body.close()

    def read_many(self, paths: Iterable[str], limit: int) -> dict[str, bytes | None]:
        paths = list(paths)
        if len(paths) < 2:
            return {path: self.read(path, limit) for path in paths}
        self.requests["get"] += len(paths)  # counted here: the threads do not share a counter
        with ThreadPoolExecutor(PARALLEL_READS) as pool:
            return dict(zip(paths, pool.map(lambda path: self._get(path, limit), paths), strict=True))

    def exists(self, path: str) -> bool:
        self.requests["head"] += 1
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(path))
            return True
        except Exception as e:
            if _missing(e):
                return False
            raise

    def write(self, path: str, data: bytes) -> None:
        self.requests["put"] += 1
        self._client.put_object(Bucket=self.bucket, Key=self._key(path), Body=data)

    def delete(self, path: str) -> bool:
        """S3 deletes a missing key without a word: what was there is asked first."""
        if not self.exists(path):
            return False
        self.requests["delete"] += 1
        self._client.delete_object(Bucket=self.bucket, Key=self._key(path))
        return True

    def delete_folder(self, folder: str) -> int:
        keys = [self._key(entry.path) for entry in self.files(folder)]
        for start in range(0, len(keys), DELETE_BATCH):
            self.requests["delete"] += 1
            batch = keys[start:start + DELETE_BATCH]
            answer = self._client.delete_objects(Bucket=self.bucket,
                                                 Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            for error in answer.get("Errors", []):
                log.warning("cannot delete %s from %s: %s", error.get("Key"), self.bucket, error.get("Message"))
        return len(keys)

    def put_back(self, source: str, target: str) -> bool:
        if not self.exists(target) and not self.copy(source, target):
            return False
        return self.delete(source)

    def copy(self, source: str, target: str) -> bool:
        """A managed copy: objects over 5 GiB, which one CopyObject refuses, go in parts."""
        self.requests["copy"] += 1
        try:
            self._client.copy({"Bucket": self.bucket, "Key": self._key(source)}, self.bucket, self._key(target))
            return True
        except Exception as e:
            if _missing(e):
                return False
            log.warning("cannot copy %s to %s in %s: %s", source, target, self.bucket, error_text(e))
            raise


def _status(error: Exception) -> int | None:
    response = getattr(error, "response", None)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None
    return status if isinstance(status, int) else None


def _missing(error: Exception) -> bool:
    """Whether the key is not there; a missing bucket is an error (it answers 404 too)."""
    response = getattr(error, "response", None)
    code = str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
    return code != "NoSuchBucket" and (code in ("404", "NoSuchKey", "NotFound") or _status(error) == 404)
