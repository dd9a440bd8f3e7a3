"""Entry script of the demo's and tests' upstream: an Artifactory-compatible front before a plain registry.

`mitmdump -s addons/artifactory_front.py --mode reverse:http://127.0.0.1:<registry port>@<port>`
"""
from devtools.front import ArtifactoryFront

addons = [ArtifactoryFront()]
