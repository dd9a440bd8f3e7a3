"""The token signer's files: the pair generated when missing, a generated one rotated within ROTATE_DAYS of its
end, and the bundle the registry verifies tokens against: the current certificate and, until it expires, the one
before it, so that tokens signed just before a rotation stay valid for their lifetime. Done at each start: the
registry reads its bundle, and the addon its pair, only then."""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from registry_mirror.access.tokens import Signer
from registry_mirror.tls import certs

log = logging.getLogger(__name__)

ROTATE_DAYS = 30  # a generated signer this close to its end is replaced at the next start


def previous_path(cert: str) -> Path:
    return Path(cert + ".previous")


def bundle_path(cert: str) -> Path:
    return Path(cert + ".bundle")


def prepare(cert: str, key: str, now: float, generated: bool) -> Path:
    """The pair ready (generated, or a generated one rotated), and the registry's bundle written; its path."""
    what = "access.signing_cert / access.signing_key"
    created = certs.ensure_own_pair(cert, key, "artifactory-mirror token signer", what)
    if generated and not created and Signer.load(cert, key).not_after - now < ROTATE_DAYS * 86400:
        os.replace(cert, previous_path(cert))  # its key goes: nothing signs with it any more
        Path(key).unlink()
        certs.ensure_own_pair(cert, key, "artifactory-mirror token signer", what)
        log.warning("rotated the token signer %s; the previous certificate is trusted until it expires", cert)
    pems = [Path(cert).read_bytes()]
    previous = previous_path(cert)
    try:
        if certs.certificate_expiry(str(previous)) > now:
            pems.append(previous.read_bytes())
    except certs.CertError:
        pass  # none, or unreadable: the current one alone
    return _write(bundle_path(cert), b"".join(p.rstrip() + b"\n" for p in pems))


def _write(target: Path, data: bytes) -> Path:
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # certificates only
        os.replace(tmp, target)
    except OSError as e:
        raise certs.CertError(f"cannot write the token signers' bundle {target}: {e.strerror}") from e
    return target
