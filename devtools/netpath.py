"""An MTU-1500 path to the test upstream: a network namespace joined to this one by a veth pair.

Loopback (MTU 65536) delivers a small body in one piece; across this path a body larger than one segment
arrives in several, as over a real WAN. Segmentation offloads are turned off on both ends, or the kernel
would hand the receiver 64 KiB super-segments and hide the split. Needs root: a test that asks for this
path fails without it, it is not skipped.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from devtools.netns import in_netns

HOST_SIDE, NAMESPACE_SIDE = "10.203.0.1", "10.203.0.2"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def _no_offloads(device: str, netns: str | None = None) -> None:
    command = ["ethtool", "-K", device, "tso", "off", "gso", "off", "gro", "off"]
    subprocess.run(in_netns(command, netns), check=True, capture_output=True, text=True)


@dataclass
class MtuPath:
    netns: str = f"amt{os.getpid()}"

    @property
    def devices(self) -> tuple[str, str]:
        return f"{self.netns}h", f"{self.netns}n"

    def up(self) -> "MtuPath":
        if os.geteuid() != 0:
            raise PermissionError("the MTU-1500 path needs root (network namespaces); run the tests as root")
        self.down()
        host_dev, ns_dev = self.devices
        try:
            _ip("netns", "add", self.netns)
            _ip("-n", self.netns, "link", "set", "lo", "up")
            _ip("link", "add", host_dev, "mtu", "1500", "type", "veth", "peer", "name", ns_dev, "netns", self.netns)
            _ip("addr", "add", f"{HOST_SIDE}/30", "dev", host_dev)
            _ip("-n", self.netns, "addr", "add", f"{NAMESPACE_SIDE}/30", "dev", ns_dev)
            _ip("link", "set", host_dev, "up")
            _ip("-n", self.netns, "link", "set", ns_dev, "up")
            _no_offloads(host_dev)
            _no_offloads(ns_dev, self.netns)
        except subprocess.CalledProcessError as e:
            self.down()
            raise RuntimeError(f"cannot build the MTU-1500 path: {' '.join(e.cmd)}: {e.stderr.strip()}") from e
        return self

    def down(self) -> None:
        _ip("netns", "del", self.netns, check=False)
        _ip("link", "del", self.devices[0], check=False)
