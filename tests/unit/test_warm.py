import pytest

from registry_mirror.warm import WarmError, parse_ref, read_refs

D = "sha256:" + "b" * 64


@pytest.mark.parametrize("ref,expected", [
    ("team/app:1.0", ("team/app", "1.0")),
    ("team/app", ("team/app", "latest")),
    (f"team/app@{D}", ("team/app", D)),
    ("a/b/c:v1.2.3-rc_1", ("a/b/c", "v1.2.3-rc_1")),
])
def test_parse_ref(ref, expected):
    assert parse_ref(ref) == expected


@pytest.mark.parametrize("ref", ["Team/app:1", "team/app:", "team/app@sha256:12", "../etc:1", "team//app:1",
                                 "team/app:-x", ""])
def test_parse_ref_rejects(ref):
    with pytest.raises(WarmError, match="is not an image reference"):
        parse_ref(ref)


def test_read_refs_skips_comments_and_blanks(tmp_path):
    f = tmp_path / "refs"
    f.write_text("# deploy\nteam/a:1  # the api\n\n  team/b:2\n")
    assert read_refs(["team/c:3"], str(f)) == ["team/c:3", "team/a:1", "team/b:2"]
