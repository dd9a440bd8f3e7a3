"""Entry script from a checkout: `mitmdump -s addons/mirror.py --mode reverse:<upstream url>@127.0.0.1:8081`."""
from registry_mirror.script.mirror import addons  # noqa: F401  (mitmproxy reads `addons`)
