"""The last known answer for each tag, kept beyond the tag TTL and across restarts in a small JSON file, for
stale-if-error."""
import asyncio
import json
import logging

import pytest

from registry_mirror.manifests.tag_state import KnownTag, TagState, key_from_text, key_text
from tests.unit.support.clocks import Clock

IMAGE = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
A, B, C = ("sha256:" + c * 64 for c in "abc")


@pytest.fixture
async def scheduled(monkeypatch):
    """The saves the tag state asks its event loop for: (delay, callback), run only when the test says."""
    calls = []
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "call_later", lambda delay, callback, *args: calls.append((delay, callback)))
    return calls


@pytest.mark.parametrize("key,text", [
    (("team/app", "1.0", frozenset({IMAGE, INDEX})), f"team/app:1.0|{INDEX},{IMAGE}"),  # accepts sorted
    (("app", "latest", frozenset()), "app:latest|"),
    (("a/b/c", "v1.2.3-rc_1", frozenset({IMAGE})), f"a/b/c:v1.2.3-rc_1|{IMAGE}"),
])
def test_a_key_survives_its_text_form(key, text):
    assert key_text(key) == text
    assert key_from_text(text) == key


async def test_a_saved_state_is_what_the_next_start_knows(tmp_path, scheduled):
    path = tmp_path / "state" / "tags.json"  # its folder is made on the first save
    state = TagState(str(path))
    key = ("team/app", "1.0", frozenset({IMAGE, INDEX}))
    state.put(key, KnownTag(A, IMAGE, 1234, 1_700_000_000.5))
    state.save()
    restarted = TagState(str(path))
    assert restarted.get(key) == KnownTag(A, IMAGE, 1234, 1_700_000_000.5)
    assert restarted.get(("team/app", "1.0", frozenset({IMAGE}))) is None  # another accept set, another answer
    assert json.loads(path.read_text()) == {"tags": {f"team/app:1.0|{INDEX},{IMAGE}": {
        "digest": A, "content_type": IMAGE, "length": 1234, "fetched_at": 1_700_000_000.5}}}
    assert not path.with_suffix(".tmp").exists()  # written aside, then renamed over


async def test_puts_within_a_second_are_written_once_a_second_later(tmp_path, scheduled):
    path = tmp_path / "tags.json"
    state = TagState(str(path))
    for n, digest in enumerate((A, B, C)):
        state.put(("app", f"v{n}", frozenset()), KnownTag(digest, IMAGE, 1, 0.0))
    assert scheduled == [(1.0, state.save)] and not path.exists()
    scheduled.pop()[1]()  # the loop's timer fires
    assert len(json.loads(path.read_text())["tags"]) == 3
    state.put(("app", "v0", frozenset()), KnownTag(A, IMAGE, 1, 0.0))  # what it knew already: nothing to write
    assert scheduled == []
    state.put(("app", "v0", frozenset()), KnownTag(B, IMAGE, 1, 5.0))  # moved: the next save is scheduled
    assert scheduled == [(1.0, state.save)]


async def test_forget_drops_a_tag_or_a_repositorys_tags_and_names_their_digests(scheduled):
    state = TagState(None)
    for name, tag, digest in (("app", "1.0", A), ("app", "2.0", B), ("app", "latest", B), ("other", "1.0", C)):
        state.put((name, tag, frozenset()), KnownTag(digest, IMAGE, 1, 0.0))
    state.put(("app", "1.0", frozenset({IMAGE})), KnownTag(A, IMAGE, 1, 0.0))
    assert state.forget("app", "1.0") == {A}  # under every accept set
    assert state.forget("app", digests=frozenset({C})) == set()  # only tags of `app` naming C: none
    assert state.forget("app", digests=frozenset({B})) == {B}
    assert state.forget("nothing") == set()
    assert list(state.tags) == [("other", "1.0", frozenset())]
    assert scheduled == []  # no file: nothing is ever written


def test_ages_come_from_its_clock_and_never_go_negative():
    clock = Clock(1000.0)
    state = TagState(None, clock=clock)
    known = KnownTag(A, IMAGE, 10, state.now())
    clock.now = 1042.5
    assert state.age(known) == 42.5
    clock.now = 900.0  # the wall clock set back (NTP, an operator)
    assert state.age(known) == 0.0


def test_the_least_recently_used_tags_go_over_its_bound():
    state = TagState(None, maxsize=2)
    for tag, digest in (("1", A), ("2", B)):
        state.put(("app", tag, frozenset()), KnownTag(digest, IMAGE, 1, 0.0))
    assert state.get(("app", "1", frozenset())) is not None  # used: kept
    state.put(("app", "3", frozenset()), KnownTag(C, IMAGE, 1, 0.0))
    assert sorted(key[1] for key in state.tags) == ["1", "3"]


@pytest.mark.parametrize("content", [
    "{not json",
    '{"tags": {"app:1.0|": {"digest": "sha256:' + "a" * 64 + '"}}}',  # fields missing
    '{"tags": {"app:1.0|": {"digest": "x", "content_type": "t", "length": 1, "fetched_at": 0, "extra": 1}}}',
])
async def test_an_unreadable_state_file_is_ignored_with_a_warning_and_rewritten(tmp_path, caplog, scheduled,
                                                                                content):
    path = tmp_path / "tags.json"
    path.write_text(content)
    with caplog.at_level(logging.WARNING, "registry_mirror"):
        state = TagState(str(path))
    assert len(state.tags) == 0
    assert "ignoring the tag state file" in caplog.text
    state.put(("app", "1.0", frozenset()), KnownTag(A, IMAGE, 1, 0.0))
    scheduled.pop()[1]()
    assert TagState(str(path)).get(("app", "1.0", frozenset())) == KnownTag(A, IMAGE, 1, 0.0)


async def test_a_state_file_that_cannot_be_written_is_a_warning_not_a_failure(tmp_path, caplog, scheduled):
    (tmp_path / "not-a-folder").write_text("")
    state = TagState(str(tmp_path / "not-a-folder" / "tags.json"))
    state.put(("app", "1.0", frozenset()), KnownTag(A, IMAGE, 1, 0.0))
    with caplog.at_level(logging.WARNING, "registry_mirror"):
        scheduled.pop()[1]()
    assert "cannot write the tag state file" in caplog.text
    assert state.get(("app", "1.0", frozenset())) is not None  # still known in memory


@pytest.mark.parametrize("text", ["null", "[]", '{"tags": []}', '"tags"'])
def test_a_state_file_of_another_json_shape_is_ignored_not_fatal(tmp_path, text):
    path = tmp_path / "tags.json"
    path.write_text(text)
    assert TagState(str(path)).tags == {}
