"""Start, watch and stop the processes the mirror is made of (and the demo's and tests' ones)."""
from __future__ import annotations

import fcntl
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from registry_mirror.cli.logfiles import LogFile, copy_lines

PIPE_BYTES = 1024 * 1024  # a process's output pipe: room for its lines while the log file is slow
LOG_FLUSH_SECONDS = 2.0  # how long a stop waits for a process's last lines to reach its log


class ProcessError(RuntimeError):
    pass


def venv_tool(name: str) -> str:
    """A console script of this Python's environment (mitmdump, mitmweb), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise ProcessError(f"{name} not found next to {sys.executable} or on PATH; install the package "
                           f"(pip install .) in this environment, or run ./run.sh from a checkout")
    return found


def registry_binary() -> str:
    """The stock registry: Debian's docker-registry, or `registry` as in the registry:2 image."""
    for name in ("docker-registry", "registry"):
        if found := shutil.which(name):
            return found
    raise ProcessError("the stock registry is not installed: apt-get install docker-registry "
                       "(or a `registry` binary on PATH, as in the registry:2 image)")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


class LoggedProcess(subprocess.Popen):
    """A process whose output a thread copies to its log; `log_copier` is that thread, joined after it exits."""
    log_copier: threading.Thread | None = None


def start(args: list[str], log: Path | LogFile, env: dict[str, str] | None = None,
          redact: tuple[str, ...] = (), unset: tuple[str, ...] = ()) -> LoggedProcess:
    """Start a process in its own session (a terminal's Ctrl-C reaches only the supervisor), its output piped to
    `log` (cli/logfiles.py: rotated, and a full disk drops lines, never stops the process), with every string in
    `redact` replaced on its way there (the stock registry logs its notification endpoint's headers). Its
    environment is ours plus `env`, without the variables named in `unset`."""
    log = log if isinstance(log, LogFile) else LogFile(log)
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}  # unbuffered: logs as they happen
    proc = LoggedProcess(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env={name: value for name, value in environment.items() if name not in unset},
                         start_new_session=True)
    output = proc.stdout
    assert output is not None, "stdout=PIPE gives it a pipe"
    try:  # a log write that blocks (a hung NFS) holds the process up only once a full pipe's worth is waiting
        fcntl.fcntl(output.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size: the default 64 KiB
    proc.log_copier = threading.Thread(target=copy_lines, args=(output, log, redact), daemon=True)
    proc.log_copier.start()
    return proc


def _flush_log(proc: subprocess.Popen) -> None:
    """Wait (briefly) for an exited process's last lines to reach its log: a panic's reason is among them."""
    copier = getattr(proc, "log_copier", None)
    if copier is not None:
        copier.join(LOG_FLUSH_SECONDS)


def wait_for_port(host: str, port: int, proc: subprocess.Popen, timeout: float = 30.0,
                  what: str = "process", log_path: Path | None = None) -> None:
    """Wait until `host:port` accepts connections, or the process dies."""
    wait_until(lambda: _accepts(connect_host(host), port), proc, f"listen on {host}:{port}", timeout, what, log_path)


def wait_until_ready(url: str, proc: subprocess.Popen, timeout: float = 30.0, what: str = "process",
                     log_path: Path | None = None) -> None:
    """Wait until `url` answers 200 with a JSON body whose "ready" is true, or the process dies.

    mitmproxy accepts connections before it has loaded its scripts and run their `running` hooks; a request
    in that gap is proxied without the addon (a probe too: it reaches the reverse target as a 404). Its port
    being open is not enough."""
    wait_until(lambda: _is_ready(url), proc, f"report ready at {url}", timeout, what, log_path)


def wait_until(check: Callable[[], bool], proc: subprocess.Popen, goal: str, timeout: float = 30.0,
               what: str = "process", log_path: Path | None = None) -> None:
    """Poll `check` until it holds; a ProcessError naming `what` (and its log's tail) if the process exits first,
    or saying it did not `goal` within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _flush_log(proc)
            tail = _tail(log_path) if log_path else ""
            raise ProcessError(f"{what} exited with status {proc.returncode} while starting{tail}")
        if check():
            return
        time.sleep(0.05)
    raise ProcessError(f"{what} did not {goal} within {timeout:.0f} s")


def connect_host(host: str) -> str:
    """Where to reach a listener bound to `host`: a wildcard address is reached on loopback."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            # a connect to a port nobody listens on in the ephemeral range can pick that very port as its own
            # and connect to itself (TCP simultaneous open): that is no listener
            return s.getsockname() != s.getpeername()
    except OSError:
        return False


def _is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            body = json.load(resp) if resp.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):  # refused, an error status, cut short, not JSON
        return False
    return isinstance(body, dict) and body.get("ready") is True


def stop(proc: subprocess.Popen | None, timeout: float = 10.0) -> bool:
    """Stop a process by its PID: SIGTERM, then SIGKILL after `timeout`; True if it had to be killed."""
    if proc is None or proc.poll() is not None:
        return False
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True
    finally:
        _flush_log(proc)
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "; its last output:\n  " + "\n  ".join(text) if text else ""
