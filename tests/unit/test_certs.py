"""The mirror's TLS pair: generated only when both files are missing; an operator's certificate is never replaced."""
import os

import pytest
from cryptography import x509

from registry_mirror.certs import CertError, ensure_self_signed


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
