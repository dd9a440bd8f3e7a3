"""Routes: which upstream serves a name, what name it is asked for, and what the configuration accepts."""
import pytest

from registry_mirror.config.load import ConfigError, parse
from registry_mirror.oci.registry_requests import Kind, RegistryRequest, classify
from registry_mirror.routes.routing import Router, choose, tag_state_file
from registry_mirror.stats.counters import Stats

UPSTREAM = {"url": "https://art.example.com", "repository": "docker-local", "username": "svc",
            "password": "default-secret"}


def config(*routes, **upstream):
    return parse({"upstream": {**UPSTREAM, **upstream}, "routes": list(routes)})


def test_longest_prefix_wins_and_everything_else_goes_to_upstream():
    cfg = config({"prefix": "team-a/", "repository": "docker-team-a"},
                 {"prefix": "team-a/special", "repository": "docker-special"})
    pick = lambda name, ns="": choose(cfg.routes, cfg.upstream, name, ns).repository  # noqa: E731
    assert pick("team-a/app") == "docker-team-a"
    assert pick("team-a/special/app") == "docker-special" and pick("team-a/special") == "docker-special"
    assert pick("team-ab/app") == "docker-local"  # a prefix is whole path components, not characters
    assert pick("other/app") == "docker-local" and pick("app") == "docker-local"


def test_ns_is_a_key_into_the_routes_never_a_host():
    cfg = config({"ns": ["docker.io"], "url": "https://nexus.example.com", "path_prefix": "/repository/{repository}",
                  "repository": "docker-hub", "anonymous": True, "library": "add"},
                 {"prefix": "team-a", "repository": "docker-team-a"})
    pick = lambda name, ns="": choose(cfg.routes, cfg.upstream, name, ns)  # noqa: E731
    assert pick("nginx", "docker.io").url == "https://nexus.example.com"
    assert pick("team-a/app", "docker.io").url == "https://nexus.example.com"  # the ns names the registry meant
    assert pick("nginx").repository == "docker-local"  # no ns: the ns route is not a catch-all
    assert pick("nginx", "evil.example.com").url == "https://art.example.com"  # unknown ns: ignored, not dialled
    req = classify("GET", "/v2/nginx/manifests/latest?ns=docker.io")
    assert req.ns == "docker.io" and req.query == ""  # the upstream never sees ns
    assert classify("GET", "/v2/app/tags/list?n=10&ns=ghcr.io&last=a") == RegistryRequest(
        Kind.TAGS, "app", query="n=10&last=a", ns="ghcr.io")


@pytest.mark.parametrize("route,name,expected", [
    ({"prefix": "team-a", "strip_prefix": True}, "team-a/app", "app"),
    ({"prefix": "team-a", "strip_prefix": True}, "team-a/web/app", "web/app"),
    ({"prefix": "hub", "strip_prefix": True, "library": "add"}, "hub/nginx", "library/nginx"),
    ({"prefix": "hub", "strip_prefix": True, "library": "add"}, "hub/bitnami/nginx", "bitnami/nginx"),
    ({"prefix": "library", "library": "strip"}, "library/plain", "plain"),
    ({"prefix": "team-a"}, "team-a/app", "team-a/app"),
])
def test_upstream_name(route, name, expected):
    cfg = config({"repository": "r", **route})
    assert choose(cfg.routes, cfg.upstream, name).upstream_name(name) == expected


def test_route_without_url_inherits_host_and_credentials():
    route = config({"prefix": "team-a", "repository": "docker-team-a"}).routes[0]
    assert (route.origin, route.username, route.password) == ("https://art.example.com", "svc", "default-secret")
    assert route.prefix == "/artifactory/api/docker/docker-team-a" and route.label == "routes[0]"


def test_a_route_with_its_own_credential_takes_none_of_upstreams():
    cfg = parse({"upstream": {"url": "https://art.example.com", "repository": "docker-local", "token": "t0k"},
                 "routes": [{"prefix": "team-a", "repository": "docker-team-a", "username": "team-a-bot",
                             "password": "team-a-secret"}]})
    route = cfg.routes[0]
    assert (route.username, route.password, route.token) == ("team-a-bot", "team-a-secret", None)
    assert route.origin == "https://art.example.com"


def test_route_with_its_own_url_never_inherits_credentials():
    with pytest.raises(ConfigError, match=r"routes\[0\]: sets its own url but no credential.*never sent to another"):
        config({"prefix": "hub", "url": "https://nexus.example.com", "repository": "docker-hub"})
    route = config({"prefix": "hub", "url": "https://nexus.example.com", "repository": "docker-hub",
                    "username": "nexus-user", "password": "nexus-secret"}).routes[0]
    assert (route.username, route.password) == ("nexus-user", "nexus-secret")
    anonymous = config({"prefix": "hub", "url": "https://nexus.example.com", "repository": "h",
                        "anonymous": True}).routes[0]
    assert anonymous.username is None and anonymous.password is None and anonymous.anonymous


@pytest.mark.parametrize("routes,message", [
    ({"prefix": "team-a"}, r"routes: must be a list"),
    ([{"repository": "x"}], r"routes\[0\]: set prefix .* and/or ns"),
    ([{"prefix": "Team A", "repository": "x"}], r"routes\[0\]\.prefix: 'Team A' is not the start of an image name"),
    ([{"prefix": "a", "repository": "x"}, {"prefix": "a/", "repository": "y"}], r"routes\[1\]: another route"),
    ([{"ns": ["http://evil/"], "repository": "x"}], r"routes\[0\]\.ns: 'http://evil/' is not a registry host"),
    ([{"prefix": "a", "repository": "x", "library": "maybe"}], r"routes\[0\]\.library: 'maybe' is not one of"),
    ([{"prefix": "a", "repository": "bad key!"}], r"routes\[0\]\.repository: 'bad key!'"),
    ([{"prefix": "a", "repository": "x", "colour": "red"}], r"unknown key routes\[0\]\.colour"),
    ([{"ns": ["docker.io"], "repository": "x", "strip_prefix": True}], r"routes\[0\]\.strip_prefix: needs a prefix"),
    (["team-a"], r"routes\[0\]: must be a mapping"),
    # another host: its repository is named, never upstream's guessed (every request would 404 there)
    ([{"prefix": "hub", "url": "https://nexus.example.com", "anonymous": True}], r"routes\[0\]\.repository: missing"),
])
def test_bad_routes_are_named(routes, message):
    with pytest.raises(ConfigError, match=message):
        parse({"upstream": UPSTREAM, "routes": routes})


def test_route_errors_never_show_a_secret():
    with pytest.raises(ConfigError) as e:
        config({"prefix": "hub", "url": "https://u:hunter2@nexus.example.com", "repository": "h", "anonymous": True})
    assert "hunter2" not in str(e.value) and "routes[0].url" in str(e.value)


def test_each_route_keeps_its_own_last_known_tags():
    """An ns route and the default may both know nginx:latest, from two registries."""
    assert tag_state_file("/data/registry.tags.json", None) == "/data/registry.tags.json"
    assert tag_state_file("/data/registry.tags.json", 2) == "/data/registry.tags.route2.json"
    assert tag_state_file(None, 0) is None


def test_ns_values_match_whatever_their_case():
    cfg = config({"ns": ["Registry.Example.COM"], "repository": "r"})
    assert choose(cfg.routes, cfg.upstream, "app", classify("GET", "/v2/app/tags/list?ns=registry.example.com").ns) \
        is cfg.routes[0]
    assert classify("GET", "/v2/app/tags/list?ns=docker%2Eio").ns == "docker.io"


def _repository_path_config(**upstream) -> object:
    return parse({"upstream": {"url": "https://art.example.com", "repository": "docker-local", "anonymous": True,
                               "repository_path_names": True, **upstream},
                  "routes": [{"prefix": "team-a", "strip_prefix": True, "repository": "docker-team-a"}]})


@pytest.mark.parametrize("name, label, upstream_name", [
    ("docker-local/team/app", "upstream (docker-local/ names)", "team/app"),
    ("docker-team-a/app", "routes[0] (docker-team-a/ names)", "app"),
    ("team-a/app", "routes[0]", "app"),
    ("team/app", "upstream", "team/app"),
])
def test_repository_path_names_are_served_from_their_repository(name, label, upstream_name):
    cfg = _repository_path_config()
    route = choose(cfg.routes, cfg.upstream, name, ns="art.example.com")  # containerd sends the host it pulls
    assert (route.label, route.upstream_name(name)) == (label, upstream_name)


def test_repository_path_names_off_serves_the_key_as_part_of_the_name():
    cfg = _repository_path_config(repository_path_names=False)
    assert choose(cfg.routes, cfg.upstream, "docker-local/team/app").label == "upstream"


def test_a_route_already_serving_a_repository_key_is_a_clear_conflict():
    with pytest.raises(ConfigError, match=r"upstream\.repository_path_names: routes\[0\] already serves the names "
                                          r"under docker-local/"):
        parse({"upstream": {"url": "https://art.example.com", "repository": "docker-local", "anonymous": True,
                            "repository_path_names": True},
               "routes": [{"prefix": "docker-local", "repository": "other", "repository_path_names": False}]})


def test_a_route_inheriting_the_repository_and_the_switch_adds_no_second_route_for_it():
    cfg = parse({"upstream": {"url": "https://art.example.com", "repository": "docker-local", "anonymous": True,
                              "repository_path_names": True},
                 "routes": [{"prefix": "team-a", "token": "t0ken-of-team-a"},  # inherits docker-local and the switch
                            {"prefix": "hub", "strip_prefix": True, "url": "https://nexus.example.com",
                             "path_prefix": "", "anonymous": True}]})  # its own url: no switch inherited
    derived = [r.label for r in cfg.routes if r.path_names_of]
    assert derived == ["upstream (docker-local/ names)"]


def test_repository_path_routes_keep_their_tag_file_when_routes_are_added():
    assert tag_state_file("/s/registry.tags.json", "repository-docker-local") == \
        "/s/registry.tags.repository-docker-local.json"
    assert tag_state_file("/s/registry.tags.json", 2) == "/s/registry.tags.route2.json"


@pytest.mark.parametrize("repository, image, names", [
    ("docker-local", "team/app", ["docker-local/team/app", "team/app"]),  # with repository-path names, both
    ("docker-team-a", "team-a/app", ["team-a/app"]),  # docker-local/team-a/app is docker-local's team-a/app
    ("docker-team-a", "other/app", []),  # that route serves team-a/ only; other/app is docker-local's
    ("docker-hub-cache", "library/nginx", ["docker-hub-cache/nginx", "hub/nginx"]),  # strip_prefix, library add
    ("docker-hub-cache", "nginx", []),  # asked for as library/nginx: no name of the mirror gives plain nginx
    ("docker-elsewhere", "team/app", []),
    ("docker-ns", "app", []),  # an ns route: the stock registry's requests never carry ns
])
def test_mirror_names_of_an_artifactory_image(repository, image, names):
    from registry_mirror.routes.routing import mirror_names
    cfg = config({"prefix": "team-a/", "repository": "docker-team-a", "repository_path_names": False},
                 {"prefix": "hub/", "repository": "docker-hub-cache", "strip_prefix": True, "library": "add"},
                 {"ns": ["docker.io"], "repository": "docker-ns"}, repository_path_names=True)
    assert mirror_names(cfg, repository, image) == names


def test_routes_to_one_origin_share_its_health_and_one_of_their_own_is_unknown_until_asked():
    cfg = parse({"upstream": {"url": "https://art.example.com", "repository": "docker-local", "anonymous": True},
                 "routes": [{"prefix": "team-a", "repository": "docker-team-a"},
                            {"prefix": "hub", "url": "https://hub.example.com", "path_prefix": "", "anonymous": True}]})
    router = Router(cfg, Stats())
    team_a, hub, default = router.routes["routes[0]"], router.routes["routes[1]"], router.routes["upstream"]
    assert team_a.health is default.health and hub.health is not default.health
    assert hub.health.state == default.health.state == "unknown"
    default.health.success()
    assert team_a.health.state == "up" and hub.health.state == "unknown"
    for _ in range(cfg.upstream.failures_before_down):
        team_a.health.failure("GET team-a/app:1.0: 503")
    assert default.health.state == "down" and hub.health.state == "unknown"  # Artifactory down, the hub not


async def test_one_probe_per_origin(tmp_path):
    cfg = parse({"upstream": {"url": "https://art.example.com", "repository": "docker-local", "anonymous": True},
                 "routes": [{"prefix": "team-a", "repository": "docker-team-a"},
                            {"prefix": "hub", "url": "https://hub.example.com", "path_prefix": "", "anonymous": True}],
                 "cache": {"tag_state_file": str(tmp_path / "tags.json")}})  # what close() saves goes there
    router = Router(cfg, Stats())
    await router.start()
    try:
        probed = [label for label, route in router.routes.items() if route.prober is not None]
        assert probed == ["routes[0]", "routes[1]"]  # team-a's probe serves the default route too
    finally:
        await router.close()
