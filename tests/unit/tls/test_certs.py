"""The mirror's TLS pair: generated only when both files are missing; an operator's certificate is never replaced;
one expired, or expiring soon, is said so by `check`."""
import datetime
import functools
import ipaddress
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from registry_mirror.cli import commands as cli
from registry_mirror.tls import certs
from registry_mirror.tls.certs import CertError, ensure_self_signed


def names_in(cert_path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n) for n in san.get_values_for_type(x509.DNSName)} | {
        str(n) for n in san.get_values_for_type(x509.IPAddress)}


def test_generated_once_with_the_listen_address_in_it(tmp_path):
    cert, key = tmp_path / "certs/mirror.crt", tmp_path / "certs/mirror.key"
    assert ensure_self_signed(str(cert), str(key), extra_names=("10.20.30.40",))
    assert {"localhost", "127.0.0.1", "10.20.30.40"} <= names_in(cert)
    assert os.stat(key).st_mode & 0o777 == 0o600
    first = cert.read_bytes()
    assert not ensure_self_signed(str(cert), str(key))
    assert cert.read_bytes() == first


@pytest.mark.parametrize("present", ["crt", "key"])
def test_one_file_without_the_other_is_an_error_and_nothing_is_written(tmp_path, present):
    cert, key = tmp_path / "mirror.crt", tmp_path / "mirror.key"
    mine = tmp_path / f"mirror.{present}"
    mine.write_text("the operator's own, signed by their CA\n")
    with pytest.raises(CertError, match=r"exists but .* does not"):
        ensure_self_signed(str(cert), str(key))
    assert mine.read_text() == "the operator's own, signed by their CA\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name]


def test_an_unwritable_place_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(CertError, match="cannot write the self-signed pair"):
        ensure_self_signed(str(blocker / "mirror.crt"), str(blocker / "mirror.key"))


# --- expiry: certificates made here with chosen dates; the clock is always given, never today's

NOW = 1_800_000_000  # 2027-01-15 08:00 UTC
DAY = 86400


def make_pair(folder, not_after: float, serial: int = 1, not_before: float | None = None,
              cert_name: str = "mirror.crt", key_name: str = "mirror.key"):
    """A self-signed pair for 127.0.0.1 valid from `not_before` (a year earlier) to `not_after`, written to
    `folder`; (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test-{serial}")])
    utc = datetime.timezone.utc
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(datetime.datetime.fromtimestamp(not_before or not_after - 365 * DAY, utc))
            .not_valid_after(datetime.datetime.fromtimestamp(not_after, utc))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / cert_name, folder / key_name
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


@pytest.mark.parametrize("left, level, text", [
    (-1 * DAY, "error", "expired on 2027-01-14 08:00 UTC: clients fail with `x509: certificate has expired`; "
                        "renew it: put a renewed certificate"),
    (0, "error", "expired on 2027-01-15 08:00 UTC"),
    (DAY // 2, "warning", "expires on 2027-01-15 20:00 UTC, within a day; renew it before then"),
    (13 * DAY, "warning", "expires on 2027-01-28 08:00 UTC, in 13 days; renew it before then"),
    (certs.EXPIRY_WARNING_DAYS * DAY, "warning", "expires on 2027-01-29 08:00 UTC, in 14 days"),
    (15 * DAY, None, None),
    (800 * DAY, None, None),
])
def test_expiry_problem_levels_and_messages(left, level, text):
    problem = certs.expiry_problem("/etc/mirror.crt", NOW + left, NOW)
    if level is None:
        assert problem is None
    else:
        assert problem[0] == level and f"mirror.tls_cert /etc/mirror.crt {text}" in problem[1]
        assert "mirror.tls_cert / mirror.tls_key" in problem[1]  # what to do


def test_certificate_expiry_reads_not_after(tmp_path):
    cert, _ = make_pair(tmp_path, NOW + 13 * DAY)
    assert certs.certificate_expiry(str(cert)) == NOW + 13 * DAY
    (tmp_path / "half.crt").write_bytes(cert.read_bytes()[:200])
    with pytest.raises(CertError, match="is not a PEM certificate"):
        certs.certificate_expiry(str(tmp_path / "half.crt"))
    with pytest.raises(CertError, match="cannot read mirror.tls_cert"):
        certs.certificate_expiry(str(tmp_path / "missing.crt"))


def test_pair_problem(tmp_path):
    cert_a, key_a = make_pair(tmp_path, NOW, serial=1, cert_name="a.crt", key_name="a.key")
    _, key_b = make_pair(tmp_path, NOW, serial=2, cert_name="b.crt", key_name="b.key")
    assert certs.pair_problem(cert_a.read_bytes(), key_a.read_bytes()) is None
    assert "does not match" in certs.pair_problem(cert_a.read_bytes(), key_b.read_bytes())
    assert "certificate is not PEM" in certs.pair_problem(cert_a.read_bytes()[:100], key_a.read_bytes())
    assert "key is not" in certs.pair_problem(cert_a.read_bytes(), key_a.read_bytes()[:100])


def check(tmp_path, monkeypatch, tls=True):
    """`artifactory-mirror check` on a configuration naming tmp_path/mirror.crt, at NOW; (exit code, out, err)."""
    config = tmp_path / "mirror.yaml"
    config.write_text(f"upstream:\n  url: https://art.example.com\n  repository: docker-local\n  anonymous: true\n"
                      f"mirror:\n  tls: {str(tls).lower()}\n  tls_cert: {tmp_path / 'mirror.crt'}\n"
                      f"  tls_key: {tmp_path / 'mirror.key'}\n  storage: {tmp_path / 'storage'}\n")
    monkeypatch.setattr(cli, "cmd_check", functools.partial(cli.cmd_check, clock=lambda: NOW))
    return cli.main(["--config", str(config), "check"])


@pytest.mark.parametrize("left, code, err", [
    (-DAY, 2, "artifactory-mirror: error: mirror.tls_cert {cert} expired on 2027-01-14 08:00 UTC"),
    (13 * DAY, 0, "artifactory-mirror: warning: mirror.tls_cert {cert} expires on 2027-01-28 08:00 UTC, in 13 days"),
    (15 * DAY, 0, ""),
])
def test_check_refuses_an_expired_certificate_and_warns_of_one_expiring_soon(tmp_path, monkeypatch, capsys, left,
                                                                           code, err):
    cert, _ = make_pair(tmp_path, NOW + left)
    assert check(tmp_path, monkeypatch) == code
    out, stderr = capsys.readouterr()
    assert stderr.startswith(err.format(cert=cert)) and (err or stderr == "")
    assert ("OK; upstream" in out) == (code == 0)


def test_check_passes_a_missing_certificate_and_one_mirror_tls_does_not_serve(tmp_path, monkeypatch, capsys):
    assert check(tmp_path, monkeypatch) == 0  # `up` generates a pair
    make_pair(tmp_path, NOW - DAY)
    assert check(tmp_path, monkeypatch, tls=False) == 0
    assert capsys.readouterr().err == ""


def test_check_refuses_a_certificate_it_cannot_parse(tmp_path, monkeypatch, capsys):
    (tmp_path / "mirror.crt").write_text("not a certificate\n")
    assert check(tmp_path, monkeypatch) == 2
    assert "is not a PEM certificate" in capsys.readouterr().err
