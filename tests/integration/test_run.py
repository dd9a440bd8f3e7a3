"""`artifactory-mirror up`: configuration errors before any process, ports in use, supervision."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import yaml

from devtools.ports import free_port
from registry_mirror.cli import processes

from .conftest import MIRROR_COMMAND, wait_for


def cli(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([MIRROR_COMMAND, *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def write_config(tmp_path: Path, mirror_port: int, rewriter_port: int, **upstream) -> Path:
    path = tmp_path / "mirror.yaml"
    path.write_text(yaml.safe_dump({
        "upstream": {"url": "http://127.0.0.1:9", "repository": "docker-local", "anonymous": True, **upstream},
        "mirror": {"listen": f"127.0.0.1:{mirror_port}", "storage": str(tmp_path / "storage"),
                   "tls_cert": str(tmp_path / "c/mirror.crt"), "tls_key": str(tmp_path / "c/mirror.key")},
        "rewriter": {"listen": f"127.0.0.1:{rewriter_port}"}}))
    return path


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_bad_config_stops_before_anything_starts(tmp_path):
    cfg = write_config(tmp_path, free_port(), free_port(), url="artifactory:8081")
    proc = cli(tmp_path, "--config", str(cfg), "up", "--log-dir", str(tmp_path / "logs"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "upstream.url: 'artifactory:8081' is not scheme://host[:port]" in err
    assert not (tmp_path / "logs").exists() and not (tmp_path / "storage").exists()


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = write_config(tmp_path, port, free_port())
        proc = cli(tmp_path, "--config", str(cfg), "up")
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"mirror.listen: 127.0.0.1:{port} is already in use" in err


def test_sigterm_stops_both_and_a_dead_process_stops_the_other(tmp_path):
    mirror_port, rewriter_port = free_port(), free_port()
    cfg = write_config(tmp_path, mirror_port, rewriter_port)
    proc = cli(tmp_path, "--config", str(cfg), "up", "--log-dir", str(tmp_path / "logs"))
    try:
        processes.wait_for_port("127.0.0.1", mirror_port, proc, timeout=60, what="run.sh up")
        kids = children(proc.pid)
        assert len(kids) == 2
        os.kill(kids[-1], signal.SIGKILL)  # the registry dies
        out, err = proc.communicate(timeout=30)
        assert proc.returncode != 0 and "registry exited" in err
        wait_for(lambda: all(gone(k) for k in kids), "both processes to be gone")
    finally:
        processes.stop(proc)

    # SIGTERM (systemd, kill) and SIGHUP (the terminal that ran it closed): nothing is left behind
    for n, signum in enumerate((signal.SIGTERM, signal.SIGHUP)):
        proc = cli(tmp_path, "--config", str(cfg), "up", "--log-dir", str(tmp_path / f"logs-{n}"))
        try:
            processes.wait_for_port("127.0.0.1", mirror_port, proc, timeout=60, what="run.sh up")
            kids = children(proc.pid)
            proc.send_signal(signum)
            proc.communicate(timeout=30)
            assert proc.returncode == 0
            assert not any(Path(f"/proc/{k}").exists() for k in kids)
            assert not processes.port_in_use("127.0.0.1", rewriter_port)
        finally:
            processes.stop(proc)


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie its (gone) parent left to init."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
