"""Where the bench runs: two network namespaces joined by a shaped WAN link, or loopback; the link's counters."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

UP_NS, DC_NS = "amb-up", "amb-dc"
WAN_UP, WAN_DC = "10.77.0.1", "10.77.0.2"
CTL_UP = ("10.78.0.1", "10.78.0.2")  # the driver's control link to the upstream: (root side, namespace side)
UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def bits_per_second(rate: str) -> float:
    """tc's rate spelling (`200mbit`, `1gbit`) in bits per second."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", rate.lower())
    if not match:
        raise ValueError(f"--rate {rate!r}: expected tc's spelling of bits per second, e.g. 200mbit or 1gbit")
    return float(match[1]) * UNITS[match[2]]


class Network:
    """The two namespaces, the shaped WAN link between them, and the driver's control link."""

    def __init__(self, rate: str):
        self.rate = rate

    def up(self) -> None:
        self.down()
        for ns in (UP_NS, DC_NS):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "wan-up", "netns", UP_NS, "type", "veth", "peer", "name", "wan-dc", "netns", DC_NS)
        sh("ip", "-n", UP_NS, "addr", "add", f"{WAN_UP}/24", "dev", "wan-up")
        sh("ip", "-n", DC_NS, "addr", "add", f"{WAN_DC}/24", "dev", "wan-dc")
        for ns, dev in ((UP_NS, "wan-up"), (DC_NS, "wan-dc")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            # both directions shaped; the queue bound keeps latency sane under load
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", self.rate,
               "burst", "256kb", "latency", "100ms")
        sh("ip", "link", "add", "ctl-up", "type", "veth", "peer", "name", "ctl", "netns", UP_NS)
        sh("ip", "addr", "add", f"{CTL_UP[0]}/24", "dev", "ctl-up")
        sh("ip", "link", "set", "ctl-up", "up")
        sh("ip", "-n", UP_NS, "addr", "add", f"{CTL_UP[1]}/24", "dev", "ctl")
        sh("ip", "-n", UP_NS, "link", "set", "ctl", "up")

    @staticmethod
    def down() -> None:
        for ns in (UP_NS, DC_NS):
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", "ctl-up", check=False)

    @staticmethod
    def wan_bytes() -> int:
        """Bytes (frames, headers included) sent from the upstream's side of the WAN link to the data center."""
        result: list[int] = []

        def read() -> None:
            _enter(UP_NS)
            result.append(_tx_bytes("wan-up"))
        reader = threading.Thread(target=read)  # a namespace is entered per thread: this one ends with it
        reader.start()
        reader.join()
        return result[0]


def namespaces_available() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "not root"
    if not shutil.which("ip") or not shutil.which("tc"):
        return "iproute2 (ip, tc) missing"
    probe = sh("ip", "netns", "add", "amb-probe", check=False)
    sh("ip", "netns", "del", "amb-probe", check=False)
    return None if probe.returncode == 0 else f"ip netns add failed: {probe.stderr.strip()}"


@dataclass
class Site:
    """Where things run and how the driver reaches them."""
    wan: bool
    rate: str  # the WAN link's (tc's spelling); unused on loopback

    @property
    def name(self) -> str:
        return "wan" if self.wan else "loopback"

    @property
    def dc_netns(self) -> str | None:
        return DC_NS if self.wan else None

    @property
    def up_netns(self) -> str | None:
        return UP_NS if self.wan else None

    @property
    def up_host(self) -> str:
        """How the data center reaches the upstream."""
        return WAN_UP if self.wan else "127.0.0.1"

    @property
    def control_host(self) -> str:
        """How this driver reaches the upstream."""
        return CTL_UP[1] if self.wan else "127.0.0.1"

    def floor_s(self, image_bytes: int) -> float | None:
        """The link's floor for one image: its bytes over the link rate (None on loopback)."""
        return image_bytes * 8 / bits_per_second(self.rate) if self.wan else None


class LinkSampler:
    """Samples the WAN link's byte counter from inside the upstream's namespace (a thread of its own there:
    reading /proc costs microseconds, where a process per sample would skew the times under load): when bytes
    began and ended, and how fully the transfer between used the link."""

    PERIOD = 0.05

    def __init__(self, rate: str):
        self.capacity = bits_per_second(rate) / 8  # bytes per second
        self.samples: list[tuple[float, int]] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "LinkSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        _enter(UP_NS)
        before = _tcp_counters()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self.started, _tx_bytes("wan-up")))
            self._stop.wait(self.PERIOD)
        after = _tcp_counters()
        self.tcp = {name: after[name] - before[name] for name in after}

    def at(self, share: float) -> float:
        """Seconds from the start until `share` of the bytes sent had been sent (interpolated)."""
        first, last = self.samples[0][1], self.samples[-1][1]
        goal = first + share * (last - first)
        for (ta, ba), (tb, bb) in zip(self.samples, self.samples[1:], strict=False):
            if bb >= goal:
                return ta + (tb - ta) * ((goal - ba) / (bb - ba) if bb > ba else 1.0)
        return self.samples[-1][0]

    def utilisation(self) -> dict:
        """The transfer is taken from 2% to 98% of the bytes sent (the ends are the manifests' trickle and
        the last TCP segments): the share of the link's rate it used on average and in its slowest whole
        second; also when bytes began to flow and when the last one crossed."""
        if len(self.samples) < 3 or self.samples[-1][1] == self.samples[0][1]:
            return {"mean": None, "lowest_second": None, "first_byte_s": None, "last_byte_s": None}
        begin, end = self.at(0.02), self.at(0.98)
        sent = (self.samples[-1][1] - self.samples[0][1]) * 0.96
        seconds, t = [], begin
        while t + 1.0 <= end:
            seconds.append(self._bytes_between(t, t + 1.0) / self.capacity)
            t += 1.0
        quarters = [round(self._bytes_between(i / 4, (i + 1) / 4) * 4 / 1e6, 1)
                    for i in range(int(self.samples[-1][0] * 4))]
        return {"mean": round(sent / (end - begin) / self.capacity, 3) if end > begin else None,
                "lowest_second": round(min(seconds), 3) if seconds else None,
                "first_byte_s": round(self.at(0.0001), 2), "last_byte_s": round(self.at(1.0), 2),
                "mb_per_s_by_quarter_second": quarters, "upstream_tcp": self.tcp}

    def _bytes_between(self, a: float, b: float) -> float:
        return self._bytes_at(b) - self._bytes_at(a)

    def _bytes_at(self, t: float) -> float:
        for (ta, ba), (tb, bb) in zip(self.samples, self.samples[1:], strict=False):
            if tb >= t:
                return ba + (bb - ba) * ((t - ta) / (tb - ta) if tb > ta else 1.0)
        return self.samples[-1][1]


def _enter(netns: str) -> None:
    """Move the calling thread (only it) into the network namespace `netns`."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        os.setns(fd, os.CLONE_NEWNET)
    finally:
        os.close(fd)


def _tcp_counters() -> dict[str, int]:
    """The calling thread's namespace's TCP counters a sender's stall shows in: segments sent again, and
    retransmission timeouts (a flow silent until its timer fires)."""
    counters = {}
    for table, names in (("snmp", ("RetransSegs",)), ("netstat", ("TCPTimeouts", "TCPLossProbes"))):
        lines = Path(f"/proc/thread-self/net/{table}").read_text().splitlines()
        for head, values in zip(lines[::2], lines[1::2], strict=True):
            row = dict(zip(head.split()[1:], values.split()[1:], strict=True))
            counters.update({n: int(row[n]) for n in names if n in row})
    return counters


def _tx_bytes(device: str) -> int:
    """Bytes the device sent, in the calling thread's network namespace."""
    for line in Path("/proc/thread-self/net/dev").read_text().splitlines()[2:]:
        name, _, counters = line.partition(":")
        if name.strip() == device:
            return int(counters.split()[8])
    raise LookupError(f"no network device {device} in this namespace")
