"""A tag the upstream deleted goes from the registry's storage, its image stays (by digest); a tag pushed again
since (another digest) is kept."""
from registry_mirror.storage.inventory import inventory
from registry_mirror.storage.tags import drop_tag
from tests.unit.storage.test_inventory import Storage


def tagged(tmp_path):
    storage = Storage(tmp_path)
    digest = storage.manifest("team/app", {"layers": []}, tag="1.0")
    return storage, digest


def test_a_dropped_tag_goes_and_its_image_stays(tmp_path):
    storage, digest = tagged(tmp_path)
    assert drop_tag(tmp_path, "team/app", "1.0") is True
    repository = inventory(tmp_path).repositories["team/app"]
    assert repository.tags == {} and digest in repository.revisions


def test_a_tag_that_names_another_digest_now_is_kept(tmp_path):
    storage, digest = tagged(tmp_path)
    assert drop_tag(tmp_path, "team/app", "1.0", digest="sha256:" + "b" * 64) is False
    assert inventory(tmp_path).repositories["team/app"].tags == {"1.0": digest}


def test_the_digest_it_names_drops_it(tmp_path):
    storage, digest = tagged(tmp_path)
    assert drop_tag(tmp_path, "team/app", "1.0", digest=digest) is True
    assert inventory(tmp_path).repositories["team/app"].tags == {}


def test_a_tag_or_repository_the_storage_lacks_is_not_dropped(tmp_path):
    tagged(tmp_path)
    assert drop_tag(tmp_path, "team/app", "2.0") is False
    assert drop_tag(tmp_path, "other/app", "1.0") is False
    assert drop_tag(tmp_path, "other/app", "1.0", digest="sha256:" + "b" * 64) is False
