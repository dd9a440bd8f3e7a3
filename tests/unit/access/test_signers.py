"""The token signer's files at each start: generated when missing, a generated one rotated near its end with the
previous certificate kept in the registry's bundle while it is valid; an operator's own pair never replaced."""
from cryptography import x509

from registry_mirror.access import signers
from registry_mirror.access.tokens import Signer
from tests.unit.tls.test_certs import DAY, make_pair

NOW = 1_800_000_000.0


def certificates(path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_a_missing_pair_is_generated_and_is_the_bundle_alone(tmp_path):
    cert, key = str(tmp_path / "s.crt"), str(tmp_path / "s.key")
    bundle = signers.prepare(cert, key, NOW, generated=True)
    assert certificates(bundle) == certificates(tmp_path / "s.crt")
    assert (tmp_path / "s.key").stat().st_mode & 0o777 == 0o600


def test_a_generated_signer_near_its_end_is_rotated_and_the_previous_one_still_verifies(tmp_path):
    old_cert, _ = make_pair(tmp_path, NOW + 10 * DAY, cert_name="s.crt", key_name="s.key")
    old = certificates(old_cert)[0]
    bundle = signers.prepare(str(old_cert), str(tmp_path / "s.key"), NOW, generated=True)
    current = Signer.load(str(tmp_path / "s.crt"), str(tmp_path / "s.key"))  # a new pair, the key matching
    assert current.certificate != old and current.not_after > NOW + 365 * DAY
    assert certificates(bundle) == [current.certificate, old]
    assert certificates(signers.previous_path(str(old_cert))) == [old]


def test_an_expired_previous_certificate_leaves_the_bundle(tmp_path):
    make_pair(tmp_path, NOW - DAY, cert_name="s.crt.previous", key_name="old.key")
    cert, key = str(tmp_path / "s.crt"), str(tmp_path / "s.key")
    assert len(certificates(signers.prepare(cert, key, NOW, generated=True))) == 1


def test_an_operators_own_pair_is_never_replaced(tmp_path):
    cert, _ = make_pair(tmp_path, NOW + 10 * DAY, cert_name="s.crt", key_name="s.key")
    before = cert.read_bytes()
    signers.prepare(str(cert), str(tmp_path / "s.key"), NOW, generated=False)
    assert cert.read_bytes() == before and not signers.previous_path(str(cert)).exists()
