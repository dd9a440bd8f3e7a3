"""The spool's folder: one per running mirror, `<parent>/artifactory-mirror-spool-<random>`, locked while it runs.

A crash or `kill -9` cannot clean up after itself, and a new folder per start used to leave the old one for
ever. Each mirror therefore keeps an exclusive `flock` on its folder itself (not on a file in it, which an
age-based cleaner of /tmp could remove after weeks); the kernel drops the lock when the process dies, however
it dies. A start removes every spool folder in the parent whose lock it can take, then makes its own. The
parent is `cache.spool_dir`, else `$TMPDIR`.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import stat
import tempfile
import weakref
from pathlib import Path
from typing import NamedTuple

from registry_mirror.units import human_bytes

PREFIX = "artifactory-mirror-spool-"
STRAY_NAME = re.compile(r"blob-[a-z0-9_]{8}")  # mkstemp's: versions before the lock spooled into `cache.spool_dir`
_ATTEMPTS = 5  # a sibling starting at the same instant may take a fresh folder for a leftover

log = logging.getLogger(__name__)


class Removed(NamedTuple):
    folders: int
    files: int  # stray spool files directly in the parent
    bytes: int


class SpoolFolder:
    """This mirror's spool folder, locked from creation until `close()`, which removes it. Dropped without
    `close()` (or at interpreter exit) it is removed all the same; killed, the next start removes it."""

    def __init__(self, spool_dir: str | None = None):
        parent = Path(spool_dir) if spool_dir else Path(tempfile.gettempdir())
        made_parent = not parent.exists()
        parent.mkdir(parents=True, exist_ok=True)
        # $TMPDIR's blob-* files are not ours to judge, even when spool_dir names it
        shared = parent.resolve() == Path(tempfile.gettempdir()).resolve()
        remove_leftovers(parent, strays=spool_dir is not None and not shared)
        self.path, lock_fd = _create_locked(parent)
        self._finalizer = weakref.finalize(self, _release, self.path, lock_fd, parent if made_parent else None)

    def close(self) -> None:
        self._finalizer()


def remove_leftovers(parent: Path, strays: bool) -> Removed:
    """Removes every spool folder in `parent` whose lock nobody holds (an older version's never had one), and with
    `strays` the `blob-*` files older versions left directly in `parent`. Logs what it freed; what it
    cannot remove is logged and left, so that no leftover stops a start."""
    folders = files = freed = 0
    for folder in sorted(parent.glob(PREFIX + "*")):
        if folder.is_symlink() or not folder.is_dir():
            continue
        try:
            lock_fd = _take_lock(folder)
        except FileNotFoundError:  # removed meanwhile by a sibling's start
            continue
        except OSError as e:
            log.warning("left the spool folder %s: cannot take its lock: %s", folder, e)
            continue
        if lock_fd is None:
            log.debug("kept the spool folder %s: a running mirror holds its lock", folder)
            continue
        try:  # held while deleting: a sibling's start skips the folder instead of racing this one
            size = _remove_tree(folder)
        finally:
            os.close(lock_fd)
        folders += 1
        freed += size
        log.info("removed the leftover spool folder %s: %s freed", folder, human_bytes(size))
    if strays:
        files, stray_bytes = _remove_strays(parent)
        freed += stray_bytes
        if files:
            log.info("removed %d stray spool files from %s: %s freed", files, parent, human_bytes(stray_bytes))
    return Removed(folders, files, freed)


def _take_lock(folder: Path) -> int | None:
    """A held exclusive lock on `folder`; None while someone else holds it. A sibling's folder a moment old, not
    locked yet, is taken for a leftover: its start then finds it gone and makes another."""
    lock_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)  # not inherited
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        return None
    return lock_fd


def _create_locked(parent: Path) -> tuple[Path, int]:
    """A new spool folder in `parent` and its held lock. A sibling's start may see the folder before its lock
    exists and remove it: then the lock is not ours (or not the folder's any more), and we try a new one."""
    for _ in range(_ATTEMPTS):
        folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
        try:
            lock_fd = _take_lock(folder)
        except FileNotFoundError:
            continue
        if lock_fd is None:
            continue
        if _is_file_of(lock_fd, folder):
            return folder, lock_fd
        os.close(lock_fd)
    raise OSError(f"could not create a locked spool folder in {parent} in {_ATTEMPTS} attempts")


def _is_file_of(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
    except FileNotFoundError:
        return False


def _remove_tree(folder: Path) -> int:
    """Removes `folder`; the bytes freed. Failures are logged, and what they kept stays."""
    size = _bytes_in(folder)
    errors: list[BaseException] = []

    def note(function, path, error: BaseException) -> None:
        if not isinstance(error, FileNotFoundError):
            errors.append(error)
    shutil.rmtree(folder, onexc=note)
    if not errors:
        return size
    log.warning("could not remove all of the spool folder %s (%d errors, the first: %s); left the rest", folder,
                len(errors), errors[0])
    return size - _bytes_in(folder)


def _remove_strays(parent: Path) -> tuple[int, int]:
    files = freed = 0
    for stray in parent.glob("blob-*"):
        if not STRAY_NAME.fullmatch(stray.name):
            continue
        try:
            info = stray.lstat()
            if not stat.S_ISREG(info.st_mode):
                continue
            stray.unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("could not remove the stray spool file %s: %s", stray, e)
            continue
        files += 1
        freed += info.st_size
    return files, freed


def _bytes_in(folder: Path) -> int:
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _release(folder: Path, lock_fd: int, made_parent: Path | None) -> None:
    """Removes the folder while still holding its lock, then lets go; and the parent if this start made it and
    it is empty again, leaving the disk as it was found."""
    try:
        _remove_tree(folder)
    finally:
        os.close(lock_fd)
    if made_parent is not None:
        with contextlib.suppress(OSError):
            made_parent.rmdir()
