"""The supervisor's own logic: the command lines it builds, the registry configuration it writes, the order it
starts the pair in through its launcher, what it reports, and preflight's messages. No mitmproxy or registry
runs: a recording launcher starts a sleeping Python in place of each, real processes to wait on and stop."""
import asyncio
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import argon2
import pytest
import yaml
from aiohttp import web

from devtools.ports import free_port
from registry_mirror.cli import processes, supervisor
from registry_mirror.cli.supervisor import ADDON, Supervisor, preflight
from registry_mirror.config.load import load
from registry_mirror.proxy.notifications import SECRET_HEADER, notification_secret
from registry_mirror.stats.views import JSON_PATH, LOGS_PATH, READY_PATH
from registry_mirror.tls.certs import ensure_self_signed
from tests.unit.support.local_http import serve
from tests.unit.support.waits import BOUND

# a process that finishes its work on SIGTERM (exit 0), and one that a SIGTERM cuts short
DRAINS = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); time.sleep(600)"
CUT_SHORT = "import time; time.sleep(600)"


class RecordingLauncher:
    """A Launcher recording what the supervisor asks of it; `not_ready` makes mitmproxy's readiness wait fail."""

    def __init__(self, not_ready: bool = False):
        self.calls: list[tuple] = []
        self.procs: list[subprocess.Popen] = []
        self.environments: list[tuple[dict, tuple]] = []  # (env added, names unset) per start
        self.stand_in = DRAINS
        self.not_ready = not_ready

    def start(self, args, log, *, env=None, redact=(), unset=()):
        self.calls.append(("start", args, log, redact))
        self.environments.append((env or {}, unset))
        proc = processes.start([sys.executable, "-c", self.stand_in], log)
        self.procs.append(proc)
        return proc

    def wait_until_ready(self, url, proc, *, what, log_path=None):
        self.calls.append(("wait_until_ready", url, proc, what, log_path))
        if self.not_ready:
            raise processes.ProcessError(f"{what} did not report ready at {url} within 30 s")

    def wait_for_port(self, host, port, proc, *, what, log_path=None):
        self.calls.append(("wait_for_port", host, port, proc, what, log_path))


def write_config(tmp_path, **sections):
    """A mirror.yaml on loopback, storage and logs under `tmp_path`, TLS off; `sections` are merged in."""
    data = {"upstream": {"url": "http://127.0.0.1:9", "repository": "docker-local", "anonymous": True},
            "mirror": {"listen": f"127.0.0.1:{free_port()}", "storage": str(tmp_path / "storage"), "tls": False},
            "rewriter": {"listen": f"127.0.0.1:{free_port()}"}}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    path = tmp_path / "mirror.yaml"
    path.write_text(yaml.safe_dump(data))
    return load(path)


@pytest.fixture
def binaries(monkeypatch):
    """Fixed paths for the two programs: the command lines do not depend on this machine's installation."""
    monkeypatch.setattr(processes, "venv_tool", lambda name: f"/venv/bin/{name}")
    monkeypatch.setattr(processes, "registry_binary", lambda: "/usr/bin/docker-registry")
    # the test process's own open-files limit is not this module's to change
    monkeypatch.setattr(supervisor, "raise_open_files_limit", lambda: None)


@pytest.fixture
def path(tmp_path, monkeypatch):
    """A PATH of the test's own, holding nothing yet: preflight's real lookups."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


def install(folder, name: str) -> None:
    program = folder / name
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)


@pytest.fixture
def launcher(binaries):
    launcher = RecordingLauncher()
    yield launcher
    for proc in launcher.procs:
        processes.stop(proc)


@pytest.fixture
def supervisors():
    """Supervisors to stop after the test (their report thread, their stand-ins)."""
    made: list[Supervisor] = []
    yield made
    for made_one in made:
        made_one.stop()


def option(args: list[str], name: str) -> str | None:
    """The value of `--set name=value` in a mitmproxy command line."""
    values = [args[i + 1].partition("=")[2] for i, arg in enumerate(args[:-1])
              if arg == "--set" and args[i + 1].startswith(f"{name}=")]
    assert len(values) <= 1, f"{name} set {len(values)} times"
    return values[0] if values else None


def test_the_default_launcher_is_this_hosts(tmp_path):
    assert Supervisor(write_config(tmp_path), tmp_path / "logs").launcher is processes


def test_mitmdump_runs_the_addon_as_a_reverse_proxy_of_the_upstream(tmp_path, binaries):
    cfg = write_config(tmp_path)
    args = Supervisor(cfg, tmp_path / "logs").mitm_args()
    assert args[:3] == ["/venv/bin/mitmdump", "-s", str(ADDON)]
    assert args[args.index("--mode") + 1] == f"reverse:http://127.0.0.1:9@{cfg.rewriter.listen}"
    assert option(args, "mirror_config") == str(tmp_path / "mirror.yaml")
    assert option(args, "mirror_log_dir") == str(tmp_path / "logs")
    assert option(args, "connection_strategy") == "lazy"
    assert option(args, "stream_large_bodies") == "1m"
    assert option(args, "web_host") is None and option(args, "mirror_dump") is None


def test_mitmweb_gets_its_listener_and_a_hash_of_its_password_never_the_password(tmp_path, binaries):
    port = free_port()
    cfg = write_config(tmp_path, rewriter={"web_listen": f"127.0.0.1:{port}", "web_password": "correct horse"})
    args = Supervisor(cfg, tmp_path / "logs", web=True).mitm_args()
    assert args[0] == "/venv/bin/mitmweb"
    assert (option(args, "web_host"), option(args, "web_port")) == ("127.0.0.1", str(port))
    assert option(args, "web_open_browser") == "false"
    hashed = option(args, "web_password")
    assert hashed is not None and argon2.PasswordHasher().verify(hashed, "correct horse")
    assert not any("correct horse" in arg for arg in args)  # the command line is visible in ps


def test_mitmweb_without_a_password_gets_none(tmp_path, binaries):
    args = Supervisor(write_config(tmp_path), tmp_path / "logs", web=True).mitm_args()
    assert option(args, "web_host") == "127.0.0.1" and option(args, "web_password") is None


def test_a_flow_dump_is_the_addons_to_write(tmp_path, binaries):
    args = Supervisor(write_config(tmp_path), tmp_path / "logs", dump="+flows/mirror.flows").mitm_args()
    assert option(args, "mirror_dump") == "+flows/mirror.flows"
    assert "-w" not in args  # mitmproxy's own writer would stop the process on a full disk


def test_start_waits_for_the_addon_before_it_starts_the_registry(tmp_path, launcher, supervisors):
    cfg = write_config(tmp_path)
    mirror = Supervisor(cfg, tmp_path / "logs", launcher=launcher)
    supervisors.append(mirror)
    mirror.start()
    mitm, registry = launcher.procs
    assert (mirror.mitm, mirror.registry) == (mitm, registry)
    logs = mirror.logs
    assert launcher.calls == [
        ("start", mirror.mitm_args(), logs["mitmproxy"], ()),
        ("wait_until_ready", f"http://{cfg.rewriter.listen}{READY_PATH}", mitm, "mitmproxy with the addon",
         logs["mitmproxy"].path),
        ("start", ["/usr/bin/docker-registry", "serve", str(tmp_path / "logs" / "registry.yml")], logs["registry"],
         (notification_secret(cfg.mirror.storage),)),  # the registry logs its notification endpoint's headers
        ("wait_for_port", "127.0.0.1", cfg.mirror.listen.port, registry, "the stock registry", logs["registry"].path),
    ]


def test_a_mitmproxy_that_never_gets_ready_leaves_the_registry_unstarted(tmp_path, launcher, supervisors):
    launcher.not_ready = True
    mirror = Supervisor(write_config(tmp_path), tmp_path / "logs", launcher=launcher)
    supervisors.append(mirror)
    with pytest.raises(processes.ProcessError, match="mitmproxy with the addon did not report ready"):
        mirror.start()
    assert [call[0] for call in launcher.calls] == ["start", "wait_until_ready"]
    assert mirror.registry is None and not (tmp_path / "logs" / "registry.yml").exists()


def test_the_webhook_secret_is_kept_out_of_mitmproxys_log(tmp_path, launcher, supervisors):
    cfg = write_config(tmp_path, webhooks={"listen": f"127.0.0.1:{free_port()}", "secret": "hook-secret-123"})
    mirror = Supervisor(cfg, tmp_path / "logs", launcher=launcher)
    supervisors.append(mirror)
    mirror.start()
    assert launcher.calls[0][3] == ("hook-secret-123",)


def test_the_registry_configuration_is_private_and_points_at_the_addon(tmp_path, launcher, supervisors):
    cfg = write_config(tmp_path)
    registry_yml = tmp_path / "logs" / "registry.yml"
    registry_yml.parent.mkdir()
    registry_yml.write_text("an earlier run's, readable by all\n")
    registry_yml.chmod(0o644)
    mirror = Supervisor(cfg, tmp_path / "logs", launcher=launcher)
    supervisors.append(mirror)
    mirror.start()
    assert stat.S_IMODE(os.stat(registry_yml).st_mode) == 0o600  # created afresh, never readable by others
    written = yaml.safe_load(registry_yml.read_text())
    assert written["proxy"] == {"remoteurl": f"http://{cfg.rewriter.listen}"}
    assert written["http"]["addr"] == str(cfg.mirror.listen)
    assert written["storage"]["filesystem"]["rootdirectory"] == cfg.mirror.storage
    assert (tmp_path / "storage").is_dir()


def test_on_a_bucket_the_registry_gets_the_store_and_its_ca_never_aws_ca_bundle(tmp_path, launcher, supervisors):
    ensure_self_signed(str(tmp_path / "store-ca.crt"), str(tmp_path / "store-ca.key"))
    cfg = write_config(tmp_path, mirror={"s3": {"bucket": "registry", "endpoint": "https://s3.dc1.test:8333",
                                                "prefix": "dc1", "access_key": "AKTEST", "secret_key": "sk-123",
                                                "ca_file": str(tmp_path / "store-ca.crt")}})
    mirror = Supervisor(cfg, tmp_path / "logs", launcher=launcher)
    supervisors.append(mirror)
    mirror.start()
    written = yaml.safe_load((tmp_path / "logs" / "registry.yml").read_text())
    assert written["storage"]["s3"] == {"bucket": "registry", "region": "us-east-1", "v4auth": True,
                                        "regionendpoint": "https://s3.dc1.test:8333", "rootdirectory": "/dc1",
                                        "accesskey": "AKTEST", "secretkey": "sk-123"}
    assert written["storage"]["redirect"] == {"disable": True} and "filesystem" not in written["storage"]
    env, unset = launcher.environments[1]  # the registry's (mitmproxy's first)
    assert unset == ("AWS_CA_BUNDLE",)  # the driver panics at start with it
    bundle = Path(env["SSL_CERT_FILE"]).read_text()
    assert bundle.endswith((tmp_path / "store-ca.crt").read_text())  # after the system's CAs, if it has any
    assert "sk-123" in launcher.calls[2][3]  # kept out of its log


def test_on_a_bucket_an_aws_ca_bundle_reaches_the_registry_as_go_takes_it(tmp_path, launcher, supervisors,
                                                                          monkeypatch):
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/company-bundle.pem")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    cfg = write_config(tmp_path, mirror={"s3": {"bucket": "registry", "endpoint": "https://s3.dc1.test"}})
    mirror = Supervisor(cfg, tmp_path / "logs", launcher=launcher)
    supervisors.append(mirror)
    mirror.start()
    assert launcher.environments[1] == ({"SSL_CERT_FILE": "/etc/ssl/company-bundle.pem"}, ("AWS_CA_BUNDLE",))


def test_on_a_filesystem_the_registrys_environment_is_ours(tmp_path, launcher, supervisors):
    mirror = Supervisor(write_config(tmp_path), tmp_path / "logs", launcher=launcher)
    supervisors.append(mirror)
    mirror.start()
    assert launcher.environments[1] == ({}, ())


def test_wait_names_the_process_that_exited(tmp_path, launcher, supervisors, capsys):
    mirror = Supervisor(write_config(tmp_path), tmp_path / "logs", launcher=launcher)
    supervisors.append(mirror)
    mirror.start()
    registry = launcher.procs[1]
    registry.kill()
    registry.wait()
    assert mirror.wait() == -9
    message = capsys.readouterr().err
    assert "registry exited with status -9; stopping the other" in message and str(tmp_path / "logs") in message


@pytest.fixture
async def addon():
    """The addon's loopback listener: transfers in flight on its JSON page, and the log reports it receives."""
    state = {"transfers": [], "reports": asyncio.Queue()}

    async def handler(request: web.Request) -> web.Response:
        if request.method == "GET" and request.path == JSON_PATH:
            return web.json_response({"transfers": state["transfers"]})
        if request.method == "POST" and request.path == LOGS_PATH:
            state["reports"].put_nowait((request.headers.get(SECRET_HEADER), await request.json()))
            return web.json_response({})
        return web.Response(status=404)
    runner, port = await serve(handler)
    state["port"] = port
    yield state
    await runner.cleanup()


async def test_a_drain_cut_short_names_the_blob_transfers_in_flight(tmp_path, launcher, addon, capsys):
    addon["transfers"] = [{"digest": f"sha256:{c * 64}"} for c in "ab"]
    mirror = Supervisor(write_config(tmp_path, rewriter={"listen": f"127.0.0.1:{addon['port']}"}),
                        tmp_path / "logs", launcher=launcher)
    launcher.stand_in = CUT_SHORT
    mirror.start()
    await asyncio.to_thread(mirror.stop)  # it asks the addon, served on this loop
    assert all(proc.poll() is not None for proc in launcher.procs)
    message = capsys.readouterr().err
    assert "did not finish its requests within mirror.drain_timeout (60 s)" in message
    assert f"2 blob transfers (sha256:{'a' * 12}, sha256:{'b' * 12}) cut" in message


async def test_dropped_log_lines_are_reported_to_the_addon_with_the_shared_secret(tmp_path, launcher, supervisors,
                                                                                 addon, monkeypatch):
    monkeypatch.setattr(supervisor, "LOG_REPORT_SECONDS", 0.01)
    cfg = write_config(tmp_path, rewriter={"listen": f"127.0.0.1:{addon['port']}"})
    mirror = Supervisor(cfg, tmp_path / "logs", launcher=launcher)
    supervisors.append(mirror)
    mirror.logs["registry"].dropped_lines, mirror.logs["registry"].last_error = 3, "registry.log: disk full"
    mirror.start()
    secret, report = await asyncio.wait_for(addon["reports"].get(), BOUND)
    assert secret == notification_secret(cfg.mirror.storage)
    assert report == {"mitmproxy.log": {"dropped_lines": 0, "last_error": ""},
                      "registry.log": {"dropped_lines": 3, "last_error": "registry.log: disk full"}}


def test_preflight_names_a_listener_already_in_use(tmp_path, path):
    install(path, "docker-registry")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = write_config(tmp_path, rewriter={"web_listen": f"127.0.0.1:{port}"})
        assert preflight(cfg, web=False) == []  # mitmweb's listener matters only for `web`
        assert preflight(cfg, web=True) == [f"rewriter.web_listen: 127.0.0.1:{port} is already in use; stop what "
                                            f"listens there or choose another port"]


def test_preflight_says_how_to_install_a_missing_registry(tmp_path, path):
    cfg = write_config(tmp_path)
    [problem] = preflight(cfg, web=False)
    assert problem.startswith("the stock registry is not installed: apt-get install docker-registry")
    install(path, "registry")  # as in the registry:2 image
    assert preflight(cfg, web=False) == []  # mitmdump is this environment's own, found beside its Python
