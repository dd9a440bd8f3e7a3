"""The addons mitmproxy loads: `mitmdump -s <this file>`, as `artifactory-mirror up` runs it.

A folder of its own: mitmproxy puts a script's folder on sys.path, and the package's module names
(config, requests, ...) must not shadow anything there.
"""
from registry_mirror.addon import RegistryMirror
from registry_mirror.deadlines import HeaderDeadline

addons = [RegistryMirror(), HeaderDeadline()]
