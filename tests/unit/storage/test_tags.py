"""A tag the upstream deleted goes from the registry's storage, its image stays (by digest); a tag pushed again
since (another digest) is kept. On a folder and on a bucket alike."""
from registry_mirror.storage.inventory import inventory
from registry_mirror.storage.tags import drop_tag


def tagged(storage):
    return storage.manifest("team/app", {"layers": []}, tag="1.0")


def test_a_dropped_tag_goes_and_its_image_stays(storage):
    digest = tagged(storage)
    assert drop_tag(storage.store, "team/app", "1.0") is True
    repository = inventory(storage.store).repositories["team/app"]
    assert repository.tags == {} and repository.tag_history == {} and digest in repository.revisions
    assert storage.paths("docker/registry/v2/repositories/team/app/_manifests/tags") == []


def test_a_tag_that_names_another_digest_now_is_kept(storage):
    digest = tagged(storage)
    assert drop_tag(storage.store, "team/app", "1.0", digest="sha256:" + "b" * 64) is False
    assert inventory(storage.store).repositories["team/app"].tags == {"1.0": digest}


def test_the_digest_it_names_drops_it(storage):
    digest = tagged(storage)
    assert drop_tag(storage.store, "team/app", "1.0", digest=digest) is True
    assert inventory(storage.store).repositories["team/app"].tags == {}


def test_a_tag_or_repository_the_storage_lacks_is_not_dropped(storage):
    tagged(storage)
    assert drop_tag(storage.store, "team/app", "2.0") is False
    assert drop_tag(storage.store, "other/app", "1.0") is False
    assert drop_tag(storage.store, "other/app", "1.0", digest="sha256:" + "b" * 64) is False
    assert drop_tag(storage.store, "team/app", "1.") is False  # a prefix of a tag is no tag


def test_a_tag_whose_name_another_begins_with_leaves_that_one(storage):
    digest = tagged(storage)
    storage.tag("team/app", "1.0-rc", digest)
    assert drop_tag(storage.store, "team/app", "1.0") is True
    assert inventory(storage.store).repositories["team/app"].tags == {"1.0-rc": digest}
