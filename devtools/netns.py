"""Processes inside a network namespace (the benchmark's data center and upstream, the MTU-1500 test path),
probed from inside it: a namespace's loopback is its own, so a probe from here would reach another listener or
none."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from registry_mirror.cli import processes
from registry_mirror.cli.logfiles import LogFile

if TYPE_CHECKING:  # the supervisor's imports are many; in_netns's users (skopeo, netpath) need none of them
    from registry_mirror.cli.supervisor import Launcher

# the probes run as child processes in the namespace (`ip netns exec`), this process staying where it is
_ACCEPT_PROBE = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), 0.5) as s:
        # a connect to a port nobody listens on in the ephemeral range can pick that very port as its own
        # and connect to itself (TCP simultaneous open): that is no listener
        sys.exit(0 if s.getsockname() != s.getpeername() else 1)
except OSError:
    sys.exit(1)
"""

_READY_PROBE = """
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as resp:
        sys.exit(0 if resp.status == 200 and json.load(resp).get("ready") is True else 1)
except Exception:
    sys.exit(1)
"""


def in_netns(args: list[str], netns: str | None) -> list[str]:
    """The command run inside a network namespace (`ip netns exec` execs it: the PID stays the command's)."""
    return ["ip", "netns", "exec", netns, *args] if netns else args


@dataclass(frozen=True)
class NamespaceLauncher:
    """cli/processes.py's start and waits, inside `netns`: a Supervisor's launcher, or any process's."""
    netns: str

    def start(self, args: list[str], log: Path | LogFile, env: dict[str, str] | None = None,
              redact: tuple[str, ...] = (), unset: tuple[str, ...] = ()) -> processes.LoggedProcess:
        return processes.start(in_netns(args, self.netns), log, env=env, redact=redact, unset=unset)

    def wait_for_port(self, host: str, port: int, proc: subprocess.Popen, timeout: float = 30.0,
                      what: str = "process", log_path: Path | None = None) -> None:
        probe = [sys.executable, "-c", _ACCEPT_PROBE, processes.connect_host(host), str(port)]
        processes.wait_until(lambda: self._succeeds(probe), proc, f"listen on {host}:{port} in {self.netns}",
                             timeout, what, log_path)

    def wait_until_ready(self, url: str, proc: subprocess.Popen, timeout: float = 30.0, what: str = "process",
                         log_path: Path | None = None) -> None:
        probe = [sys.executable, "-c", _READY_PROBE, url]
        processes.wait_until(lambda: self._succeeds(probe), proc, f"report ready at {url} in {self.netns}",
                             timeout, what, log_path)

    def _succeeds(self, probe: list[str]) -> bool:
        return subprocess.run(in_netns(probe, self.netns), capture_output=True, timeout=10).returncode == 0


def launcher(netns: str | None) -> Launcher:
    """Inside `netns` when one is given, else on this host (cli/processes.py itself)."""
    return NamespaceLauncher(netns) if netns else processes
