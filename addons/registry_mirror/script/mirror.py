"""The addons mitmproxy loads: `mitmdump -s <this file>`, as `artifactory-mirror up` runs it.

A folder of its own: mitmproxy puts a script's folder on sys.path, and the package's module names
(config, requests, ...) must not shadow anything there.
"""
from registry_mirror.proxy.addon import RegistryMirror
from registry_mirror.proxy.deadlines import HeaderDeadline
from registry_mirror.proxy.flow_dump import FlowDump
from registry_mirror.proxy.pages import StatusPages


def mirror_addons() -> list:
    """The mirror's addons in the order mitmproxy calls their hooks: the reserved pages answer their paths
    before RegistryMirror would classify them as registry requests; flows are dumped once it has redacted them."""
    mirror, dump = RegistryMirror(), FlowDump()
    return [StatusPages(mirror, dump), mirror, HeaderDeadline(), dump]


addons = mirror_addons()
