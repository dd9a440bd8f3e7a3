"""The storage inventory reads Distribution's layout as the running registry leaves it, garbage included, on a
folder and on a bucket alike."""
import hashlib
import json

import pytest

from registry_mirror.storage.inventory import Image, blob_sizes, inventory, parse_manifest, set_aside
from registry_mirror.storage.layout import BLOBS, aside_path, data_path, repository_path
from tests.unit.support.storage import DOCKER_LIST, DOCKER_V2, OCI_INDEX

SHA, SHB, SHC = ("sha256:" + c * 64 for c in "abc")


@pytest.mark.parametrize("doc, children, blobs", [
    ({"schemaVersion": 2, "mediaType": DOCKER_V2, "config": {"digest": SHA}, "layers": [{"digest": SHB}]},
     set(), {SHA, SHB}),
    # a signature's subject is the image it signs, not one of its parts
    ({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"digest": SHA}], "subject": {"digest": SHC}},
     {SHA}, set()),
    ({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [{"digest": "sha512:" + "d" * 128}]},
     {"sha512:" + "d" * 128}, set()),
    ({"schemaVersion": 1, "fsLayers": [{"blobSum": SHA}, {"blobSum": SHA}]}, set(), {SHA}),
    ({"schemaVersion": 2, "layers": [{"digest": "sha256:ab"}, {"digest": 7}, "x", None], "config": []}, set(), set()),
    ({"schemaVersion": 2, "blobs": [{"digest": SHA}]}, set(), {SHA}),
])
def test_parse_manifest_names_what_it_needs(doc, children, blobs):
    assert parse_manifest(json.dumps(doc).encode()) == (children, blobs)


@pytest.mark.parametrize("data", [b"", b"not json", b"\xff\xfe\x00garbage", b"[1, 2]", b'{"layers": []}',
                                  b'{"schemaVersion": 3}', b"[" * 100_000])
def test_parse_manifest_refuses_what_is_not_a_manifest(data):
    assert parse_manifest(data) is None


def test_inventory_of_nested_repositories_tags_and_sizes(storage):
    base, app_layer = storage.blob(100), storage.blob(200)
    app = storage.image("team/app", [base, app_layer], tag="1.0")
    team = storage.image("team", [base], tag="latest")  # `team` is a repository and `team/app`'s parent
    inv = inventory(storage.store)
    assert sorted(inv.repositories) == ["team", "team/app"]
    assert inv.repositories["team/app"].tags == {"1.0": app}
    assert inv.repositories["team/app"].tag_history == {"1.0": {app}}
    assert inv.images == (Image("team", team), Image("team/app", app))
    assert inv.blob_sizes[base] == 100 and inv.total_bytes == storage.size(*inv.blob_sizes)
    blobs = inv.image_blobs(Image("team/app", app))
    assert {app, base, app_layer} < blobs and len(blobs) == 4  # and the config


def test_an_index_is_one_image_with_its_children_unless_a_child_is_tagged(storage):
    shared = storage.blob()
    amd, arm = storage.image("multi", [shared, storage.blob()]), storage.image("multi", [shared, storage.blob()])
    index = storage.index("multi", [amd, arm], tag="1.0", media_type=DOCKER_LIST)
    inv = inventory(storage.store)
    assert inv.images == (Image("multi", index),)
    assert inv.image_blobs(Image("multi", index)) == {index, amd, arm} | inv.image_blobs(Image("multi", amd)) | \
        inv.image_blobs(Image("multi", arm))
    storage.tag("multi", "arm-only", arm)
    assert set(inventory(storage.store).images) == {Image("multi", index), Image("multi", arm)}


def test_an_index_child_missing_from_the_repository_is_still_named(storage):
    present = storage.image("multi", [storage.blob()])
    index = storage.index("multi", [present, SHA], tag="1.0")
    inv = inventory(storage.store)
    assert inv.images == (Image("multi", index),) and SHA in inv.image_blobs(Image("multi", index))
    assert inv.unreadable == set()  # a platform never pulled is no sign of garbage


def test_other_digest_algorithms_are_read_from_their_own_folders(storage):
    data = storage.random.randbytes(50)
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    storage.store.write(data_path(digest), data)
    storage.image("app", [digest], tag="1.0")
    inv = inventory(storage.store)
    assert inv.blob_sizes[digest] == 50 and digest in inv.repositories["app"].layers


@pytest.mark.parametrize("relative, text", [
    ("_layers/sha256/{hex}/link", ""),
    ("_layers/sha256/{hex}/link", "sha256:"),
    ("_layers/sha256/{hex}/link", "\x00\xff garbage"),
    ("_manifests/revisions/sha256/{hex}/link", ""),
    ("_manifests/revisions/sha256/{hex}/link", "md5:1234"),
])
def test_an_unreadable_link_is_skipped_and_its_digest_pending(storage, relative, text):
    blob = storage.blob()
    storage.image("app", [storage.blob()], tag="1.0")
    storage.write_link("app", relative.format(hex=blob.split(":")[1]), text)
    inv = inventory(storage.store)
    repository = inv.repositories["app"]
    assert blob not in repository.layers and blob not in repository.revisions
    assert inv.pending == {blob} and len(inv.images) == 1


def test_garbage_never_raises(storage):
    good = storage.image("app", [storage.blob()], tag="1.0")
    missing = storage.image("app", [SHA], tag="gone")
    storage.remove(missing)  # a revision naming missing data
    not_json = storage.put(b"\x00 not a manifest")
    storage.link("app", "revision", not_json)
    storage.write_link("app", "_manifests/tags/empty/current/link", "")
    storage.write_link("app", "_layers/sha256/not-hex/link", SHA)
    storage.store.write(f"{BLOBS}/sha256/zz/zzzz/not-data", b"x")  # no data file
    storage.store.write(f"{BLOBS}/sha256/{SHA[7:9]}/{SHA[7:]}/data.partial", b"x")
    storage.store.write(repository_path("app", "_layers/stray-file"), b"x")
    storage.store.write(repository_path("app", "_layers/sha256/" + SHB[7:] + "/link/inside"), SHB.encode())
    inv = inventory(storage.store)
    assert set(inv.images) == {Image("app", good), Image("app", missing), Image("app", not_json)}
    assert inv.unreadable == {not_json, missing} and missing not in inv.references
    # what an unreadable manifest needs is unknown: it keeps every layer of its repository
    layers = inv.repositories["app"].layers.keys()
    assert inv.image_blobs(Image("app", missing)) == layers | {missing}
    assert inv.image_blobs(Image("app", not_json)) == layers | {not_json}
    assert "empty" not in inv.repositories["app"].tags and inv.pending == set()


def test_a_tag_ahead_of_its_revision_is_pending(storage):
    manifest = storage.put(json.dumps({"schemaVersion": 2, "layers": []}).encode())
    storage.image("app", [storage.blob()], tag="1.0")
    storage.write_link("app", "_manifests/tags/2.0/current/link", manifest)  # the proxy writes the tag first
    assert inventory(storage.store).pending == {manifest}


def test_an_empty_or_missing_root_is_an_empty_inventory(new_store):
    inv = inventory(new_store("nowhere"))
    assert (inv.repositories, inv.images, inv.total_bytes) == ({}, (), 0)


def test_partial_uploads_count_against_the_storage_and_make_no_repository(storage):
    storage.image("team/app", [storage.blob(1000)], tag="1.0")
    for repository, file, size in (("team/app", "_uploads/u1/data", 300), ("team/app", "_uploads/u1/startedat", 20),
                                   ("other", "_uploads/u2/data", 50)):
        storage.store.write(repository_path(repository, file), b"x" * size)
    inv = inventory(storage.store)
    assert list(inv.repositories) == ["team/app"] and inv.upload_bytes == 370
    assert inv.total_bytes == storage.stored_bytes() + 370


def test_data_set_aside_is_no_stored_blob(storage):
    kept, aside = storage.blob(100), storage.blob(200)
    assert storage.store.copy(data_path(aside), aside_path(aside)) and storage.store.delete(data_path(aside))
    assert blob_sizes(storage.store) == {kept: 100}
    assert set(set_aside(storage.store)) == {aside}
