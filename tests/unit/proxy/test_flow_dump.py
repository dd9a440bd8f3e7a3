"""`up --dump FILE`: flows are written as `-w` writes them, and a full disk drops a flow instead of stopping
mitmproxy; the file always reads back."""
import errno

import pytest
from mitmproxy import exceptions
from mitmproxy.io import FlowReader
from mitmproxy.test import taddons, tflow, tutils

from registry_mirror.proxy.flow_dump import FlowDump


def flow(path: str, response: bool = True):
    return tflow.tflow(req=tutils.treq(path=path.encode()), resp=response)


def read_back(path) -> list[str]:
    with open(path, "rb") as f:
        return [fl.request.path for fl in FlowReader(f).stream()]


def served(dump: FlowDump, *paths: str) -> None:
    for p in paths:
        f = flow(p)
        dump.request(f)
        dump.response(f)


class HalfWrite:
    """The dump's open file on a disk that fills up mid-record: one write stores half its bytes, then fails."""
    def __init__(self, real):
        self.real, self.failed = real, False

    def write(self, data):
        if self.failed:
            return self.real.write(data)
        self.failed = True
        self.real.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):  # tell, flush, close
        return getattr(self.real, name)


def test_served_and_failed_flows_are_written(tmp_path):
    path = tmp_path / "flows"
    dump = FlowDump()
    with taddons.context(dump) as tctx:
        tctx.configure(dump, mirror_dump=str(path))
        served(dump, "/v2/", "/v2/app/manifests/1.0")
        failed = tflow.tflow(req=tutils.treq(path=b"/v2/app/blobs/sha256:ab"), err=True)
        dump.request(failed)
        dump.error(failed)
        dump.done()
    assert read_back(path) == ["/v2/", "/v2/app/manifests/1.0", "/v2/app/blobs/sha256:ab"]
    assert dump.snapshot() == {"path": str(path), "written": 3, "dropped": 0, "last_error": ""}


@pytest.mark.parametrize("spec,before", [("{}", []), ("+{}", ["/v2/old"])], ids=["overwrite", "append"])
def test_plus_path_appends_to_an_existing_dump(tmp_path, spec, before):
    path = tmp_path / "flows"
    for option, paths in ((str(path), ["/v2/old"]), (spec.format(path), ["/v2/new"])):
        dump = FlowDump()
        with taddons.context(dump) as tctx:
            tctx.configure(dump, mirror_dump=option)
            served(dump, *paths)
            dump.done()
    assert read_back(path) == before + ["/v2/new"]


def test_full_disk_drops_one_flow_and_the_dump_still_reads_back(tmp_path):
    path = tmp_path / "flows"
    dump = FlowDump()
    with taddons.context(dump) as tctx:
        tctx.configure(dump, mirror_dump=str(path))
        served(dump, "/v2/first")
        dump._file = HalfWrite(dump._file)
        served(dump, "/v2/dropped")
        assert dump.dropped == 1
        assert dump.last_error == f"{path}: No space left on device"
        served(dump, "/v2/after")  # space came back
        dump.done()
    assert read_back(path) == ["/v2/first", "/v2/after"]
    assert (dump.written, dump.dropped) == (2, 1)


def test_unopenable_dump_path_is_an_option_error(tmp_path):
    dump = FlowDump()
    with taddons.context(dump) as tctx:
        with pytest.raises(exceptions.OptionsError, match=r"mirror_dump .*missing.*cannot open it for writing"):
            tctx.configure(dump, mirror_dump=str(tmp_path / "missing" / "flows"))
    assert dump.written == 0


def test_flows_in_flight_when_mitmproxy_stops_are_written(tmp_path):
    path = tmp_path / "flows"
    dump = FlowDump()
    with taddons.context(dump) as tctx:
        tctx.configure(dump, mirror_dump=str(path))
        served(dump, "/v2/done")
        dump.request(flow("/v2/app/blobs/sha256:slow", response=False))
        dump.done()
    with open(path, "rb") as f:
        flows = list(FlowReader(f).stream())
    assert [(f.request.path, f.response is None) for f in flows] == [
        ("/v2/done", False), ("/v2/app/blobs/sha256:slow", True)]
    assert dump.written == 2
