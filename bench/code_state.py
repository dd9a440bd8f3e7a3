"""Which addon code a benchmark ran, for its saved results."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import registry_mirror

ROOT = Path(__file__).resolve().parents[1]


def code_state() -> str:
    """This checkout's commit (and a hash of addons/'s changes against it), or, when `registry_mirror` comes from
    elsewhere (PYTHONPATH=<a snapshot>/addons), that folder."""
    package = Path(registry_mirror.__file__).resolve().parent
    if package != ROOT / "addons" / "registry_mirror":
        return f"registry_mirror from {package}"

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout
    head = git("rev-parse", "--short", "HEAD").strip() or "?"
    diff = git("diff", "HEAD", "--", "addons")
    untracked = git("ls-files", "--others", "--exclude-standard", "--", "addons").strip()
    if not diff and not untracked:
        return head
    changes = hashlib.sha256((diff + untracked).encode()).hexdigest()[:10]
    return f"{head} + addons/ as in the working tree (diff {changes})"
