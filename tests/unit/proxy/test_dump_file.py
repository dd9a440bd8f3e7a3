"""`--dump`: the flow file is created readable by its owner only, before mitmproxy writes into it.

Before, mitmdump created it with 0666 less the umask: every local user could read every flow."""
import os
import stat

import pytest

from registry_mirror.cli import processes, supervisor
from registry_mirror.config.load import load


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_dump_file_is_created_0600(tmp_path, loose_umask):
    path = supervisor.private_dump_file(str(tmp_path / "flows" / "mirror.flows"))
    assert path == tmp_path / "flows" / "mirror.flows"
    assert mode_of(path) == 0o600 and path.read_bytes() == b""


def test_an_existing_dump_file_is_made_0600_and_kept(tmp_path, loose_umask):
    path = tmp_path / "mirror.flows"
    path.write_bytes(b"earlier flows")
    path.chmod(0o644)
    supervisor.private_dump_file(f"+{path}")  # mitmproxy's "append" spelling names the same file
    assert mode_of(path) == 0o600 and path.read_bytes() == b"earlier flows"
    assert not (tmp_path / f"+{path.name}").exists()


def test_a_dump_file_that_cannot_be_created_is_a_process_error_naming_it(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(processes.ProcessError, match="--dump .*not-a-folder/flows.*choose a path"):
        supervisor.private_dump_file(str(blocker / "flows"))


def test_the_mirror_creates_the_dump_file_before_it_starts_mitmproxy(tmp_path, monkeypatch, loose_umask):
    config = tmp_path / "mirror.yaml"
    config.write_text("upstream:\n  url: http://127.0.0.1:9\n  repository: docker-local\n  anonymous: true\n")
    dump = tmp_path / "mirror.flows"
    at_start = []

    def start(args, log_path, **kwargs):
        option = next(a for a in args if a.startswith("mirror_dump="))
        at_start.append((option.partition("=")[2], mode_of(dump) if dump.exists() else None))
        raise processes.ProcessError("not started in a unit test")
    monkeypatch.setattr(processes, "start", start)
    mirror = supervisor.Supervisor(load(str(config)), tmp_path / "logs", dump=str(dump))
    with pytest.raises(processes.ProcessError, match="not started"):
        mirror.start()
    assert at_start == [(str(dump), 0o600)]
