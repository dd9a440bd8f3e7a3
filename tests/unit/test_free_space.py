"""`mirror.min_free`: cold fetches are refused before the storage's or the spool's filesystem fills up, so that
cached images are still served; the stats page shows each filesystem's free space."""
from types import SimpleNamespace

import pytest

from registry_mirror.free_space import DiskWatch, Space, shortfall

MB = 1000 * 1000


def fs(what, device, free):
    return Space(what, f"/{what}", device, free, 10 * free)


@pytest.mark.parametrize("spaces,writes,min_free,short", [
    # storage and spool on one device: both writes come out of the same free space
    ([fs("storage", 1, 100), fs("spool", 1, 100)], {"storage": 30, "spool": 30}, 50, "storage"),
    # on two devices each keeps its own reserve
    ([fs("storage", 1, 100), fs("spool", 2, 100)], {"storage": 30, "spool": 30}, 50, None),
    ([fs("storage", 1, 100), fs("spool", 2, 60)], {"storage": 30, "spool": 30}, 50, "spool"),
    # exactly at min_free is not short; one byte under is
    ([fs("storage", 1, 100)], {"storage": 50}, 50, None),
    ([fs("storage", 1, 100)], {"storage": 51}, 50, "storage"),
    # already under the reserve with nothing to write
    ([fs("storage", 1, 40)], {}, 50, "storage"),
    # a filesystem nothing is written to only needs its reserve
    ([fs("storage", 1, 100), fs("logs", 1, 100)], {"logs": 0, "storage": 10}, 50, None),
    ([], {"storage": 10**12}, 50, None),
], ids=["one-device-adds-up", "two-devices-apart", "two-devices-spool-short", "exactly-min-free",
        "one-byte-under", "already-low", "logs-write-nothing", "no-filesystems"])
def test_which_filesystem_is_short(spaces, writes, min_free, short):
    low = shortfall(spaces, writes, min_free)
    assert (low.what if low else None) == short


class FakeStatvfs:
    """os.statvfs with the free bytes of each path set by the test; counts its calls."""
    def __init__(self, free: dict, total: int = 1000 * MB):
        self.free, self.total, self.calls = free, total, 0

    def __call__(self, path):
        self.calls += 1
        return SimpleNamespace(f_bavail=self.free[str(path)], f_frsize=1, f_blocks=self.total)


@pytest.fixture
def folders(tmp_path):
    """Storage and spool as real folders (os.stat gives their device): one filesystem."""
    (tmp_path / "storage").mkdir()
    (tmp_path / "spool").mkdir()
    return {"storage": str(tmp_path / "storage"), "spool": str(tmp_path / "spool")}


def test_cold_fetch_allowed_while_room_left(folders):
    watch = DiskWatch(100 * MB, folders, FakeStatvfs({folders["storage"]: 500 * MB, folders["spool"]: 500 * MB}))
    assert watch.refusal(100 * MB) is None
    assert watch.refused == 0 and watch.last_refusal == ""


def test_cold_fetch_refused_when_storage_and_spool_together_would_go_under_min_free(folders):
    # 300 MB free; 120 MB to the spool and 120 MB to storage on the same disk leave 60 MB, under 100 MB
    watch = DiskWatch(100 * MB, folders, FakeStatvfs({folders["storage"]: 300 * MB, folders["spool"]: 300 * MB}))
    assert watch.refusal(80 * MB) is None  # 140 MB left
    message = watch.refusal(120 * MB)
    assert message == watch.last_refusal
    assert f"storage filesystem ({folders['storage']})" in message
    assert "300.0 MB free" in message and "120.0 MB still to be written" in message
    assert "mirror.min_free (100.0 MB)" in message
    assert "cached images are served" in message
    assert watch.refused == 1


def test_each_refusal_is_counted(folders):
    watch = DiskWatch(100 * MB, folders, FakeStatvfs({folders["storage"]: 50 * MB, folders["spool"]: 500 * MB}))
    for _ in range(3):
        assert watch.refusal(0)
    assert watch.refused == 3
    assert watch.snapshot()["refused_fetches"] == 3


def test_stats_flag_the_filesystems_under_min_free(folders, tmp_path):
    logs = str(tmp_path)
    free = {folders["storage"]: 50 * MB, folders["spool"]: 500 * MB, logs: 20 * MB}
    watch = DiskWatch(100 * MB, {**folders, "logs": logs, "dump": None}, FakeStatvfs(free))
    snap = watch.snapshot()
    assert {f["what"]: f["low"] for f in snap["filesystems"]} == {"storage": True, "spool": False, "logs": True}
    assert {f["what"]: f["free_bytes"] for f in snap["filesystems"]} == {
        "storage": 50 * MB, "spool": 500 * MB, "logs": 20 * MB}
    assert snap["min_free_bytes"] == 100 * MB and snap["refused_fetches"] == 0


def test_logs_filesystem_never_refuses_a_fetch(folders, tmp_path):
    logs = str(tmp_path)
    free = {folders["storage"]: 500 * MB, folders["spool"]: 500 * MB, logs: 0}
    watch = DiskWatch(100 * MB, {**folders, "logs": logs}, FakeStatvfs(free))
    assert watch.refusal(10 * MB) is None


def test_missing_folder_is_left_out_not_raised(folders, tmp_path):
    gone = str(tmp_path / "gone")
    statvfs = FakeStatvfs({folders["storage"]: 500 * MB, folders["spool"]: 500 * MB, gone: 0})
    watch = DiskWatch(100 * MB, {**folders, "logs": gone}, statvfs)
    assert watch.refusal(10 * MB) is None
    assert [f["what"] for f in watch.snapshot()["filesystems"]] == ["storage", "spool"]


def test_unreadable_filesystem_is_left_out_not_raised(folders):
    def failing(path):
        raise PermissionError(13, "Permission denied", path)
    watch = DiskWatch(100 * MB, folders, failing)
    assert watch.refusal(10**12) is None  # nothing known to be short: the fetch goes on
    assert watch.snapshot()["filesystems"] == []
