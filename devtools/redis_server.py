"""A throwaway redis-server (Debian's) for the scale-out tests and benchmark: no persistence, loopback only."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from devtools.netns import launcher
from devtools.ports import free_port
from registry_mirror.cli import processes


@dataclass
class RedisServer:
    workdir: Path
    host: str = "127.0.0.1"
    netns: str | None = None
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if not binary:
            raise processes.ProcessError("redis-server is not installed: apt-get install redis-server "
                                         "(./run.sh test and ./run.sh bench install it when run as root)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        log = self.workdir / "redis.log"
        launch = launcher(self.netns)
        self.proc = launch.start([binary, "--bind", self.host, "--port", str(self.port), "--save", "",
                                  "--appendonly", "no", "--dir", str(self.workdir)], log)
        launch.wait_for_port(self.host, self.port, self.proc, what="redis-server", log_path=log)
        return self

    def stop(self) -> None:
        processes.stop(self.proc)
