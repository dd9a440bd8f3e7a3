"""Noticing that the mirror's certificate and key were replaced, so that what serves them can take the new pair.

The stock registry reads its pair only at start, and the webhook listener when it starts: a renewed certificate
would wait for the next restart while clients fail with `x509: certificate has expired`. CertWatch
is polled (no thread, no inotify: the files may be on a volume a secret manager rewrites); it reports a change
once, and only when the new pair loads and matches, so that nothing is restarted onto a half-written file or
onto a certificate whose key has not been replaced yet.
"""
from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

from registry_mirror.tls import certs


class CertWatch:
    def __init__(self, cert_path: str, key_path: str):
        self.cert_path, self.key_path = cert_path, key_path
        self.problem = ""  # why the pair on disk is held back, "" when it is not
        read = self._read()
        # what the caller serves now: the pair on disk when it started (a missing pair: any complete one is new)
        self._taken = _digest(*read) if read else None

    def changed(self) -> bool:
        """True once for each new pair on disk that loads and matches; a missing or broken one waits."""
        read = self._read()
        if read is None:
            return False
        if _digest(*read) == self._taken:
            self.problem = ""
            return False
        problem = certs.pair_problem(*read)
        self.problem = f"{self.cert_path} / {self.key_path}: {problem}" if problem else ""
        if problem:
            return False
        self._taken = _digest(*read)
        return True

    def pair_ok(self) -> bool:
        """Whether the pair on disk loads and matches now: checked again just before a restart onto it."""
        read = self._read()
        return read is not None and certs.pair_problem(*read) is None

    def _read(self) -> tuple[bytes, bytes] | None:
        # a few KiB each: reading them every poll is cheaper than trusting mtimes (1 s on some file systems)
        try:
            return Path(self.cert_path).read_bytes(), Path(self.key_path).read_bytes()
        except OSError as e:  # between a delete and a create, say
            self.problem = f"cannot read {e.filename}: {e.strerror}"
            return None


def _digest(cert_pem: bytes, key_pem: bytes) -> tuple[bytes, bytes]:
    return hashlib.sha256(cert_pem).digest(), hashlib.sha256(key_pem).digest()


class CaWatch:
    """The same for a CA bundle the registry reads at start (`mirror.client_ca`): a change that loads is reported
    once; one that does not load waits, said in `problem`."""

    def __init__(self, path: str):
        self.path = path
        self.problem = ""
        self._taken = self._digest()

    def changed(self) -> bool:
        digest = self._digest()
        if digest is None or digest == self._taken:
            return False
        try:
            ssl.create_default_context(cafile=self.path)
        except (OSError, ssl.SSLError) as e:  # half-written, say
            self.problem = f"{self.path}: {e}"
            return False
        self.problem, self._taken = "", digest
        return True

    def _digest(self) -> bytes | None:
        try:
            return hashlib.sha256(Path(self.path).read_bytes()).digest()
        except OSError as e:
            self.problem = f"cannot read {e.filename}: {e.strerror}"
            return None
