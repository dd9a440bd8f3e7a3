"""The seam between the mirror and where the registry's storage lives: what the expiry, `forget`, the scrub and
the last pulls ask of it, as files named by '/'-separated paths under the storage's root (the registry's
`rootdirectory`). A folder (`FolderStore`, here) and a bucket (`storage/bucket_store.BucketStore`) answer alike;
tests/unit/storage/test_store.py holds both to one contract.

The registry keeps serving while the mirror reads and changes its storage, so what vanishes is skipped, never
raised; every operation is one file's, and is harmless when repeated. Calls block: run them in a thread.
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the store's root, '/'-separated
    size: int
    changed: float  # when it last changed (wall clock): a file's ctime, which a rename moves; an object's write


class Store(Protocol):
    name: str  # for messages: the folder, or the bucket and prefix
    requests: Counter[str]  # operations made, by kind: what a pass costs on a bucket

    def files(self, folder: str) -> Iterator[Entry]:
        """Every file under `folder`, at any depth, in no set order."""
        ...

    def read(self, path: str, limit: int) -> bytes | None:
        """Up to `limit` bytes from the file's start, or None when it is not there."""
        ...

    def read_many(self, paths: Iterable[str], limit: int) -> dict[str, bytes | None]:
        """`read` of each path (a bucket asks for them at once)."""
        ...

    def exists(self, path: str) -> bool: ...

    def write(self, path: str, data: bytes) -> None:
        """The whole file, replaced at once: a reader sees the old bytes or the new ones."""
        ...

    def delete(self, path: str) -> bool:
        """Whether it was there."""
        ...

    def delete_folder(self, folder: str) -> int:
        """Every file under `folder`; how many."""
        ...

    def copy(self, source: str, target: str) -> bool:
        """`source`'s bytes to `target` (replacing it), whole or not at all; False when `source` is not there."""
        ...

    def put_back(self, source: str, target: str) -> bool:
        """`source` to `target` unless `target` is there (what is there stays), then `source` goes. False when
        `source` is not there."""
        ...


class FolderStore:
    """The storage in a local (or shared POSIX) folder."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.name = str(self.root)
        self.requests: Counter[str] = Counter()

    def _path(self, path: str) -> Path:
        return self.root / path

    def files(self, folder: str) -> Iterator[Entry]:
        self.requests["list"] += 1
        top = self._path(folder)
        for where, _, names in os.walk(top):
            for name in names:
                full = os.path.join(where, name)
                try:
                    st = os.lstat(full)
                except OSError:
                    continue  # deleted while listed
                yield Entry(os.path.relpath(full, self.root).replace(os.sep, "/"), st.st_size, st.st_ctime)

    def read(self, path: str, limit: int) -> bytes | None:
        self.requests["read"] += 1
        try:
            with open(self._path(path), "rb") as f:
                return f.read(limit)
        except OSError:
            return None

    def read_many(self, paths: Iterable[str], limit: int) -> dict[str, bytes | None]:
        return {path: self.read(path, limit) for path in paths}

    def exists(self, path: str) -> bool:
        self.requests["stat"] += 1
        return self._path(path).is_file()  # a folder is no file: a bucket has none

    def write(self, path: str, data: bytes) -> None:
        self.requests["write"] += 1
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # a name no other writer has: replicas in containers share pids, and may write the same link at once
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            temporary.write_bytes(data)
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
            raise

    def delete(self, path: str) -> bool:
        """Its folder stays: the registry may be about to write into it (it makes the folder, then opens the
        file); an emptied folder goes later (storage/empty_folders.py)."""
        self.requests["delete"] += 1
        try:
            self._path(path).unlink()
            return True
        except FileNotFoundError:
            return False

    def delete_folder(self, folder: str) -> int:
        self.requests["delete"] += 1
        count = sum(1 for _ in self.files(folder))
        shutil.rmtree(self._path(folder), ignore_errors=True)
        return count

    def copy(self, source: str, target: str) -> bool:
        """A hard link, under a name of its own first: the same bytes at once, whatever their size."""
        self.requests["copy"] += 1
        temporary = f"{target}.{uuid.uuid4().hex}.tmp"
        if not self._into_place(os.link, source, temporary):
            return False
        os.replace(self._path(temporary), self._path(target))
        return True

    def put_back(self, source: str, target: str) -> bool:
        self.requests["move"] += 1
        try:
            if not self._into_place(os.link, source, target):  # a link: never over what is there
                return False
        except FileExistsError:
            pass
        return self.delete(source)

    def _into_place(self, how: Callable[[Path, Path], None], source: str, target: str) -> bool:
        """`how(source, target)`, making the target's folder when it lacks one (a bucket has no folders to lack);
        False when `source` is not there."""
        try:
            how(self._path(source), self._path(target))
            return True
        except FileNotFoundError:
            if not self._path(source).is_file():
                return False
        self._path(target).parent.mkdir(parents=True, exist_ok=True)
        try:
            how(self._path(source), self._path(target))
            return True
        except FileNotFoundError:  # gone meanwhile
            return False
