"""Pull with a real client: Debian's skopeo, into a `dir:` destination."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from devtools.netns import in_netns


class PullError(RuntimeError):
    pass


def pull(image_ref: str, dest: Path, cert_dir: Path | None = None, creds: str | None = None,
         tls_verify: bool = True, timeout: float = 600, netns: str | None = None, nice: int = 0) -> float:
    """Copy `host:port/name:tag` into `dest` (emptied first); return the wall time in seconds."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    args = ["skopeo", "--insecure-policy", "copy", "--retry-times", "0"]
    if cert_dir:
        args += ["--src-cert-dir", str(cert_dir)]
    if not tls_verify:
        args += ["--src-tls-verify=false"]
    if creds:
        args += ["--src-creds", creds]
    else:
        args += ["--src-no-creds"]
    args += [f"docker://{image_ref}", f"dir:{dest}"]
    if nice:
        args = ["nice", "-n", str(nice), *args]
    args = in_netns(args, netns)
    started = time.monotonic()
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise PullError(f"skopeo pull of {image_ref} did not finish within {timeout:.0f} s") from e
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise PullError(f"skopeo pull of {image_ref} failed: {result.stderr.strip()[-800:]}")
    return elapsed
