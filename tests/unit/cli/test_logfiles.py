"""The processes' log files: rotated by size, and a full disk drops lines (counted) instead of stopping the
process whose output they are."""
import errno
import io
from pathlib import Path

import pytest

from registry_mirror.cli.logfiles import LogFile, copy_lines

REDACTED = b"<redacted by artifactory-mirror>"


def line(n: int) -> bytes:
    return b"line %04d\n" % n  # 10 bytes


class FullDisk:
    """A log's open file whose writes fail with ENOSPC `failures` times (always, if None), then go through."""
    def __init__(self, real, failures: int | None = None):
        self.real, self.failures, self.attempts = real, failures, 0

    def write(self, data):
        self.attempts += 1
        if self.failures is None or self.failures > 0:
            if self.failures:
                self.failures -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real.write(data)

    def __getattr__(self, name):  # fileno, close
        return getattr(self.real, name)


@pytest.mark.parametrize("lines,kept,files", [
    (5, 3, ["app.log"]),  # under max_bytes: never rotated
    (10, 3, ["app.log"]),  # exactly max_bytes: not yet
    (11, 3, ["app.log", "app.log.1"]),
    (40, 3, ["app.log", "app.log.1", "app.log.2", "app.log.3"]),
    (95, 3, ["app.log", "app.log.1", "app.log.2", "app.log.3"]),  # the oldest are gone
    (95, 1, ["app.log", "app.log.1"]),
], ids=["small", "exactly-max-bytes", "one-rotation", "all-kept", "oldest-dropped", "kept-1"])
def test_log_rotates_by_size_and_keeps_a_bounded_number_of_files(tmp_path, lines, kept, files):
    log = LogFile(tmp_path / "app.log", max_bytes=100, kept=kept)
    for n in range(lines):
        log.write(line(n))
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    # newest lines in the main file, each older file the ten lines before
    newest_first = [(tmp_path / name).read_bytes() for name in files]
    written = b"".join(reversed(newest_first))
    assert written == b"".join(line(n) for n in range(lines - len(written) // 10, lines))
    assert newest_first[0].endswith(line(lines - 1))
    assert all(len(content) <= 100 for content in newest_first)
    assert log.dropped_lines == 0


def test_restarted_log_appends_and_counts_what_is_already_there(tmp_path):
    log = LogFile(tmp_path / "app.log", max_bytes=100, kept=2)
    for n in range(9):
        log.write(line(n))
    log.close()
    log = LogFile(tmp_path / "app.log", max_bytes=100, kept=2)
    log.write(line(9))  # the 10th line fills the file
    log.write(line(10))  # the 11th rotates it
    log.close()
    assert (tmp_path / "app.log.1").read_bytes() == b"".join(line(n) for n in range(10))
    assert (tmp_path / "app.log").read_bytes() == line(10)


def test_full_disk_drops_lines_counts_them_and_writing_resumes(tmp_path):
    path = tmp_path / "app.log"
    log = LogFile(path)
    log.write(line(0))
    log._file = disk = FullDisk(log._file, failures=2)
    for n in (1, 2, 3):
        log.write(line(n))
    log.close()
    assert disk.attempts == 3
    assert log.dropped_lines == 2
    assert log.last_error == f"{path}: No space left on device"
    assert path.read_bytes() == line(0) + line(3)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_dev_full_drops_every_line_without_raising():
    log = LogFile(Path("/dev/full"))  # every write fails with ENOSPC; its size stays 0, so it never rotates
    for n in range(5):
        log.write(line(n))
    log.close()
    assert log.dropped_lines == 5
    assert log.last_error == "/dev/full: No space left on device"


def test_process_output_is_copied_with_secrets_redacted(tmp_path):
    path = tmp_path / "app.log"
    log = LogFile(path)
    output = io.BytesIO(b"starting\nupstream password hunter2 accepted\ntoken=s3cr3t hunter2\n")
    copy_lines(output, log, secrets=("hunter2", "s3cr3t"))
    assert output.closed and log._file is None
    assert path.read_bytes() == (b"starting\nupstream password " + REDACTED + b" accepted\n"
                                 b"token=" + REDACTED + b" " + REDACTED + b"\n")


def test_process_output_is_drained_to_the_end_while_the_disk_is_full(tmp_path):
    log = LogFile(tmp_path / "app.log")
    log.write(b"")  # opens the file
    log._file = disk = FullDisk(log._file)
    output = io.BytesIO(b"".join(line(n) for n in range(1000)))
    copy_lines(output, log)
    assert output.closed  # read to the end: the process never blocks on a full pipe
    assert disk.attempts == 1000
    assert log.dropped_lines == 1000
    assert (tmp_path / "app.log").read_bytes() == b""
