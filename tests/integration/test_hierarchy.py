"""Mirrors chained: data-center mirrors whose upstream is a regional mirror whose upstream is Artifactory.

The data-center mirror reaches the regional one as a plain registry at the root, over TLS with the regional
mirror's self-signed certificate, without a credential: the same keys an operator would write.
"""
from __future__ import annotations

import base64

import pytest

from devtools import seed
from devtools.skopeo import PullError, pull
from registry_mirror.tls import certs

from .conftest import RunningMirror, assert_pulled_identical, blob_gets, credentials_of, small_image


def chained_to(regional: RunningMirror) -> dict:
    """The upstream keys of a mirror whose upstream is `regional`'s stock registry."""
    return {"url": f"https://{regional.address}", "path_prefix": "", "anonymous": True,
            "ca_file": regional.cfg.mirror.tls_cert}


@pytest.fixture
def image(upstream, layer_cache) -> seed.Image:
    image = small_image(layer_cache, name="team/chained")
    seed.push(upstream.registry_url, image)
    return image


@pytest.fixture
def regional(upstream, mirror_factory) -> RunningMirror:
    return mirror_factory(credentials_of(upstream), dump=False)


def blob_gets_by_digest(upstream) -> list[str]:
    return sorted(r["path"].rsplit("/", 1)[1] for r in blob_gets(upstream.stats()))


def test_pull_through_two_tiers_fetches_each_blob_once_from_artifactory(upstream, image, regional, mirror_factory,
                                                                        tmp_path):
    """Two stock registries each fetch a blob twice; the addon in front of each must absorb that, or the WAN
    link to Artifactory carries every layer up to four times."""
    data_center = mirror_factory(chained_to(regional), dump=False)
    pull(f"{data_center.address}/{image.name}:{image.tag}", tmp_path / "out", cert_dir=data_center.trust)
    assert_pulled_identical(tmp_path / "out", image)

    for tier in (data_center, regional):
        tier.settle(upstream, image)
    assert blob_gets_by_digest(upstream) == sorted(b.digest for b in (*image.layers, image.config))

    secrets = [upstream.password, base64.b64encode(f"{upstream.username}:{upstream.password}".encode()).decode(),
               *upstream.stats()["issued_tokens"]]
    for tier, mirror in {"regional": regional, "data-center": data_center}.items():
        logs = mirror.logs()
        assert "COALESCED" in logs, f"the {tier} registry's second fetch of a blob should share the first"
        for secret in secrets:
            assert secret not in logs, f"a credential leaked into the {tier} mirror's logs"


def test_second_data_center_is_served_from_the_regional_mirror(upstream, image, regional, mirror_factory,
                                                               tmp_path):
    """A data center added later warms from the regional mirror's storage: Artifactory sends no blob again."""
    first = mirror_factory(chained_to(regional), dump=False)
    pull(f"{first.address}/{image.name}:{image.tag}", tmp_path / "first", cert_dir=first.trust)
    for tier in (first, regional):
        tier.settle(upstream, image)
    upstream.control("reset")

    second = mirror_factory(chained_to(regional), dump=False)
    pull(f"{second.address}/{image.name}:{image.tag}", tmp_path / "second", cert_dir=second.trust)
    assert_pulled_identical(tmp_path / "second", image)
    second.settle(upstream, image)
    assert blob_gets(upstream.stats()) == []


def test_a_data_center_mirror_presents_its_certificate_to_a_regional_mirror_that_requires_one(
        upstream, image, mirror_factory, tmp_path):
    dc_cert, dc_key = str(tmp_path / "dc1-mirror.crt"), str(tmp_path / "dc1-mirror.key")
    certs.ensure_own_pair(dc_cert, dc_key, "dc1-mirror", "the data center's pair")
    regional = mirror_factory(credentials_of(upstream), dump=False, mirror_keys={"client_ca": dc_cert})
    data_center = mirror_factory({**chained_to(regional), "client_cert": dc_cert, "client_key": dc_key}, dump=False)
    pull(f"{data_center.address}/{image.name}:{image.tag}", tmp_path / "out", cert_dir=data_center.trust)
    assert_pulled_identical(tmp_path / "out", image)

    without = mirror_factory(chained_to(regional), dump=False)  # the same keys, no certificate
    with pytest.raises(PullError):
        pull(f"{without.address}/{image.name}:{image.tag}", tmp_path / "refused", cert_dir=without.trust)
    # the regional registry's TLS alert, as the data center's addon logs it (Go sends one or the other)
    assert "ALERT_BAD_CERTIFICATE" in without.logs() or "ALERT_CERTIFICATE_REQUIRED" in without.logs()
