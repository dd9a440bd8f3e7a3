"""The package as a new user meets it: `pip install .` in a fresh venv, the console script, the entry script
from a checkout, and the compose file."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

from devtools.ports import free_port
from registry_mirror.cli import processes

from .conftest import MIRROR_COMMAND

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("up", "web", "check", "status", "warm", "evictions", "clients")
PIP = ("-m", "pip", "--disable-pip-version-check", "-q")
# as a new user runs it: nothing of the checkout on the import path (run.sh puts it there for the tests)
OUTSIDE = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def tracked(*patterns: str) -> list[str]:
    return subprocess.run(["git", "-C", str(ROOT), "ls-files", *patterns], capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from the tracked files alone, as a fresh clone would be: a build/ folder left in a checkout would
    otherwise bring modules that no longer exist."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in tracked():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, *PIP, "wheel", "--no-deps", "-w", str(out), str(source)], check=True,
                   timeout=300, env=OUTSIDE)
    (built,) = out.glob("artifactory_mirror-*.whl")
    return built


def test_the_wheel_holds_the_package_and_no_test_tooling(wheel):
    with zipfile.ZipFile(wheel) as archive:
        modules = {n for n in archive.namelist() if n.endswith(".py")}
    assert modules == {name.removeprefix("addons/") for name in tracked("addons/registry_mirror")
                       if name.endswith(".py")}
    assert "registry_mirror/script/mirror.py" in modules and "registry_mirror/cli/commands.py" in modules
    # the Artifactory stand-in, fault injection, seeding, the harness, the client drivers: in devtools/ or tests/
    with zipfile.ZipFile(wheel) as archive:
        shipped = {archive.read(n) for n in modules}
    tooling = [p for p in (*(ROOT / "devtools").glob("*.py"), *(ROOT / "tests").rglob("*.py")) if p.stat().st_size]
    assert not [p.name for p in tooling if p.read_bytes() in shipped]


def test_pip_install_in_a_fresh_venv_gives_the_console_script(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), *PIP, "install", "-c", str(ROOT / "constraints.txt"), str(wheel)],
                   check=True, timeout=600, env=OUTSIDE)
    helped = subprocess.run([str(env_dir / "bin" / "artifactory-mirror"), "--help"], capture_output=True,
                            text=True, check=True, timeout=60, env=OUTSIDE)
    assert all(command in helped.stdout for command in COMMANDS), helped.stdout
    version = subprocess.run([str(env_dir / "bin" / "artifactory-mirror"), "--version"], capture_output=True,
                             text=True, check=True, timeout=60, env=OUTSIDE)
    assert version.stdout.startswith("artifactory-mirror ")
    # nothing of the checkout's tooling is importable from the installed package
    probe = subprocess.run([str(python), "-c", "import devtools"], capture_output=True, text=True, cwd=tmp_path,
                           timeout=60, env=OUTSIDE)
    assert probe.returncode == 1 and "No module named 'devtools'" in probe.stderr


def test_every_command_has_help():
    for command in COMMANDS:
        shown = subprocess.run([MIRROR_COMMAND, command, "--help"], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0 and "--config" in shown.stdout, (command, shown.stderr)


def test_mitmdump_loads_the_checkouts_entry_script(tmp_path):
    port = free_port()
    config = tmp_path / "mirror.yaml"
    config.write_text(yaml.safe_dump({"upstream": {"url": "http://127.0.0.1:9", "repository": "docker-local",
                                                   "anonymous": True},
                                      "mirror": {"storage": str(tmp_path / "storage")},
                                      "rewriter": {"listen": f"127.0.0.1:{port}"}}))
    log = tmp_path / "mitmdump.log"
    proc = processes.start([processes.venv_tool("mitmdump"), "-s", str(ROOT / "addons" / "mirror.py"),
                            "--mode", f"reverse:http://127.0.0.1:9@127.0.0.1:{port}",
                            "--set", f"mirror_config={config}"], log)
    try:
        processes.wait_until_ready(f"http://127.0.0.1:{port}/_mirror/ready", proc, timeout=60,
                                   what="mitmdump -s addons/mirror.py", log_path=log)
    finally:
        processes.stop(proc)


def test_the_compose_file_validates(tmp_path):
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose (Debian's package) validates the compose file; ./run.sh test installs it"
    for name in ("docker-compose.yml", "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    checked = subprocess.run([compose, "config"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr
    service = yaml.safe_load(checked.stdout)["services"]["mirror"]
    assert service["build"]["context"] == str(tmp_path) and service["ports"][0]["target"] == 5000
    assert {v.split(":")[1] for v in service["volumes"]} == {"/config/mirror.yaml", "/config/data", "/config/certs"}
    # the optional monitoring profile: Prometheus with the rules, Grafana with the dashboard, both on loopback
    profiled = subprocess.run([compose, "--profile", "monitoring", "config"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
    assert profiled.returncode == 0, profiled.stderr
    services = yaml.safe_load(profiled.stdout)["services"]
    mounted = {name: {v.split(":")[0].removeprefix(str(tmp_path) + "/") for v in services[name]["volumes"]}
               for name in ("prometheus", "grafana")}
    assert mounted == {"prometheus": {"monitoring/prometheus.yml", "monitoring/alerts.yml"},
                       "grafana": {"monitoring/grafana", "monitoring/dashboard.json"}}
    for name, mounts in mounted.items():
        assert all((ROOT / mount).exists() for mount in mounts), f"{name} mounts a file the checkout lacks"
        assert all(str(port).startswith("127.0.0.1:") for port in services[name]["ports"])
