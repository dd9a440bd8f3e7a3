"""Entry script of the demo's and tests' upstream: an Artifactory-compatible front before a plain registry.

`mitmdump -s devtools/artifactory_front.py --mode reverse:http://127.0.0.1:<registry port>@<port>`
"""
import sys
from pathlib import Path

# mitmproxy puts only this script's folder on sys.path; the `devtools` package is its parent's child
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.front import ArtifactoryFront  # noqa: E402

addons = [ArtifactoryFront()]
