"""The kinds of mirror.yaml value: each converts a good value to the attribute's, and refuses a bad one with a
message naming the key and what would be right."""
import pytest

from registry_mirror.config.kinds import (
    ADDRESS,
    ANY_PORT,
    CA_FILE,
    DURATION,
    HOSTS,
    IMAGE_PREFIX,
    PATH_PREFIX,
    PLATFORMS,
    REGISTRY_HOSTS,
    SECONDS,
    SIZE,
    URL,
    Address,
    ConfigError,
    Secret,
    any_address,
)
from registry_mirror.tls import certs


@pytest.mark.parametrize("kind,value,expected", [
    (ADDRESS, "127.0.0.1:8081", Address("127.0.0.1", 8081)),
    (ADDRESS, "[::1]:5000", Address("::1", 5000)),
    (ANY_PORT, "0.0.0.0", Address("0.0.0.0", 0)),  # a host alone: any free port
    (ANY_PORT, "10.0.0.5:8083", Address("10.0.0.5", 8083)),
    (URL, "https://artifactory.example.com/", "https://artifactory.example.com"),
    (URL, "http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    (PATH_PREFIX, "", ""),
    (PATH_PREFIX, "/repository/{repository}", "/repository/{repository}"),
    (IMAGE_PREFIX, "/team-a/", "team-a"),
    (HOSTS, ["Auth.Example.COM:443"], ("auth.example.com:443",)),
    (REGISTRY_HOSTS, ["docker.io", "GHCR.io"], ("docker.io", "ghcr.io")),
    (PLATFORMS, ["linux/amd64", "linux/arm64/v8"], ("linux/amd64", "linux/arm64/v8")),
    (DURATION, "15m", 900.0),
    (DURATION, 90, 90.0),
    (SIZE, "1GiB", 1024 ** 3),
    (SIZE, "2TB", 2 * 10 ** 12),
    (SECONDS, 5, 5.0),
    (CA_FILE, "", ""),  # unset: the system CAs
])
def test_a_good_value_becomes_the_attributes_value(kind, value, expected):
    assert kind.convert("section.key", value) == expected


@pytest.mark.parametrize("kind,value,message", [
    (ADDRESS, "5000", "section.key: '5000' is not host:port, e.g. 127.0.0.1:8081"),
    (ADDRESS, "127.0.0.1:0", "section.key: '127.0.0.1:0' is not host:port"),  # port 0 only where any port will do
    (ADDRESS, "127.0.0.1:65536", "section.key: '127.0.0.1:65536' is not host:port"),
    (URL, "", "section.key: missing; expected scheme://host[:port] with scheme http or https, e.g. "
              "https://artifactory.example.com"),
    (URL, "ftp://art.example.com", "section.key: 'ftp://art.example.com' is not scheme://host[:port]"),
    (URL, "https://art.example.com:99999", "section.key: 'https://art.example.com:99999' has a bad port"),
    (PATH_PREFIX, "artifactory", "section.key: 'artifactory' must start with / (or be empty for the root)"),
    (PATH_PREFIX, "/a/../b", "section.key: '/a/../b' may not contain ?, #, %, whitespace or .."),
    (IMAGE_PREFIX, "Team-A/", "section.key: 'Team-A/' is not the start of an image name; expected lowercase path "
                              "components such as team-a/"),
    (HOSTS, ["https://auth.example.com/"], "section.key: 'https://auth.example.com/' is not a host or host:port"),
    (HOSTS, [443], "section.key: 443 is not a host or host:port"),
    (REGISTRY_HOSTS, ["https://docker.io"], "is not a registry host name such as docker.io; ns values are matched "
                                            "against containerd's ?ns= parameter, never dialled"),
    (PLATFORMS, ["linux"], "section.key: 'linux' is not a platform; expected os/architecture[/variant] as in an "
                           "image index, e.g. linux/amd64 or linux/arm64/v8"),
    (DURATION, "7 days", "section.key: '7 days' is not a duration; write seconds (604800) or 30s, 15m, 12h, 7d"),
    (SIZE, "500G", "section.key: '500G' is not a size; write bytes (536870912000) or 500GiB, 2TB, 800MiB"),
])
def test_a_bad_value_names_the_key_and_what_would_be_right(kind, value, message):
    with pytest.raises(ConfigError) as e:
        kind.convert("section.key", value)
    assert message in str(e.value)


def test_a_url_with_a_path_or_credentials_says_where_they_go_and_never_shows_the_password():
    with pytest.raises(ConfigError) as e:
        URL.convert("routes[0].url", "https://ci:fake-password@art.example.com")
    message = str(e.value)
    assert "fake-password" not in message and "https://ci:<redacted>@art.example.com" in message
    assert "credentials in routes[0].username and routes[0].password" in message
    with pytest.raises(ConfigError, match=r"put the repository path in upstream.repository / upstream.path_prefix"):
        URL.convert("upstream.url", "https://art.example.com/artifactory")


def test_a_ca_file_must_be_a_readable_pem_bundle(tmp_path):
    cert, key = tmp_path / "ca.crt", tmp_path / "ca.key"
    certs.ensure_self_signed(str(cert), str(key))
    assert CA_FILE.convert("upstream.ca_file", str(cert)) == str(cert)
    (tmp_path / "not-pem.crt").write_text("not a certificate\n")
    for path in (tmp_path / "missing.pem", tmp_path / "not-pem.crt"):
        with pytest.raises(ConfigError, match=f"upstream.ca_file: cannot load {path}: .*; expected a readable PEM "
                                              f"CA bundle"):
            CA_FILE.convert("upstream.ca_file", str(path))


def test_a_secret_is_its_string_but_never_shows_in_a_repr():
    secret = Secret("fake-token-value")
    assert secret == "fake-token-value" and f"{secret}" == "fake-token-value"
    assert repr(secret) == "Secret('<redacted>')"
    assert "fake-token-value" not in repr({"password": secret}) and "fake-token-value" not in repr([secret])


@pytest.mark.parametrize("address,url", [
    (Address("0.0.0.0", 8081), "http://127.0.0.1:8081/_mirror/stats"),  # every address: reached on loopback
    (Address("::", 8081), "http://127.0.0.1:8081/_mirror/stats"),
    (Address("10.0.0.5", 8081), "http://10.0.0.5:8081/_mirror/stats"),
    (Address("::1", 8081), "http://[::1]:8081/_mirror/stats"),
])
def test_a_local_url_reaches_the_address_from_this_machine(address, url):
    assert address.local_url("/_mirror/stats") == url


def test_only_the_wildcard_hosts_mean_every_address():
    assert all(any_address(host) for host in ("0.0.0.0", "::", ""))
    assert not any(any_address(host) for host in ("127.0.0.1", "::1", "mirror.example.com"))
    assert str(Address("127.0.0.1", 8081)) == "127.0.0.1:8081"


def test_an_ipv6_address_is_written_in_brackets_as_urls_and_listeners_take_it():
    assert str(Address("::1", 5000)) == "[::1]:5000" and str(Address("127.0.0.1", 5000)) == "127.0.0.1:5000"


@pytest.mark.parametrize(("value", "expected"), [
    ("10.0.0.5", Address("10.0.0.5", 0)), ("10.0.0.5:7000", Address("10.0.0.5", 7000)),
    ("mirror-a", Address("mirror-a", 0)), ("::", Address("::", 0)), ("[::]", Address("::", 0)),
    ("[fd00::5]:7000", Address("fd00::5", 7000)),
])
def test_a_host_alone_or_with_a_port_any_way_it_is_written(value, expected):
    assert ANY_PORT.convert("scale.listen", value) == expected
