"""Entry script: `mitmdump -s addons/mirror.py --mode reverse:<upstream url>@127.0.0.1:8081`."""
from registry_mirror.addon import RegistryMirror
from registry_mirror.deadlines import HeaderDeadline

addons = [RegistryMirror(), HeaderDeadline()]
