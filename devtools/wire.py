"""Start, drive and stop the wire server (wire_server.py) in front of a test upstream."""
from __future__ import annotations

import json
import ssl
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devtools.ports import free_port
from registry_mirror.cli import processes
from registry_mirror.tls import certs

SERVER = Path(__file__).with_name("wire_server.py")


@dataclass
class WireHarness:
    target: str  # the front's URL
    workdir: Path
    tls: bool = False  # serve HTTPS with a certificate of its own (`ca_file`)
    storage: bool = False  # a signed-URL storage host on 127.0.0.2 (another host: no credential may reach it)
    port: int = 0
    host: str = "127.0.0.1"  # where it listens (its certificate names it)
    procs: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def ca_file(self) -> str:
        return str(self.workdir / "wire.crt")

    def start(self) -> "WireHarness":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.host)
        args = [sys.executable, str(SERVER), "--listen", f"{self.host}:{self.port}", "--target", self.target]
        if self.storage:
            args += ["--storage-listen", f"127.0.0.2:{free_port('127.0.0.2')}"]
        if self.tls:
            certs.ensure_self_signed(self.ca_file, str(self.workdir / "wire.key"), extra_names=(self.host,))
            args += ["--tls-cert", self.ca_file, "--tls-key", str(self.workdir / "wire.key")]
        log = self.workdir / "wire.log"
        proc = processes.start(args, log)
        self.procs.append(proc)
        processes.wait_for_port(self.host, self.port, proc, what="wire server", log_path=log)
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
        with urllib.request.urlopen(f"{self.url}/_wire/stats", timeout=30, context=self._context()) as resp:
            return json.load(resp)

    def _post(self, action: str) -> None:
        req = urllib.request.Request(f"{self.url}/_wire/{action}", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=30, context=self._context()).close()

    def _context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.ca_file) if self.tls else None
