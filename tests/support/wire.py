"""Start, drive and stop the wire server (wire_server.py) in front of a test upstream."""
from __future__ import annotations

import json
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from registry_mirror import processes

SERVER = Path(__file__).with_name("wire_server.py")


@dataclass
class WireHarness:
    target: str  # the front's URL
    log_path: Path
    port: int = 0
    procs: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "WireHarness":
        self.port = self.port or processes.free_port()
        proc = processes.start([sys.executable, str(SERVER), "--listen", f"127.0.0.1:{self.port}",
                                "--target", self.target], self.log_path)
        self.procs.append(proc)
        processes.wait_for_port("127.0.0.1", self.port, proc, what="wire server", log_path=self.log_path)
        return self

    def stop(self) -> None:
        for proc in self.procs:
            processes.stop(proc)
        self.procs.clear()

    def behave(self, **behaviour) -> None:
        """How answers are written from now on (wire_server.Behaviour); `behave()` writes them plainly."""
        self._post(f"behave?{urllib.parse.urlencode(behaviour)}")

    def release(self) -> None:
        """Held answers go on."""
        self._post("release")

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/_wire/stats", timeout=30) as resp:
            return json.load(resp)

    def _post(self, action: str) -> None:
        req = urllib.request.Request(f"{self.url}/_wire/{action}", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=30).close()
