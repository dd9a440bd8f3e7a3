"""CertWatch: a replaced pair is reported once, and only when it loads and matches; a missing, half-written or
half-replaced pair waits, so that nothing is restarted onto it."""
import os

from registry_mirror.tls.cert_watch import CaWatch, CertWatch
from tests.unit.tls.test_certs import DAY, NOW, make_pair


def watch_of(tmp_path, serial=1):
    cert, key = make_pair(tmp_path, NOW + 90 * DAY, serial=serial)
    return CertWatch(str(cert), str(key)), cert, key


def test_the_pair_it_started_with_is_no_change(tmp_path):
    watch, _, _ = watch_of(tmp_path)
    assert not watch.changed() and not watch.changed()
    assert watch.pair_ok() and watch.problem == ""


def test_a_new_pair_is_a_change_once(tmp_path):
    watch, _, _ = watch_of(tmp_path)
    make_pair(tmp_path, NOW + 400 * DAY, serial=2)
    assert watch.changed()
    assert not watch.changed()
    make_pair(tmp_path, NOW + 800 * DAY, serial=3)
    assert watch.changed() and not watch.changed()


def test_a_rewrite_with_the_same_bytes_is_no_change(tmp_path):
    watch, cert, _ = watch_of(tmp_path)
    pem = cert.read_bytes()
    cert.write_bytes(pem)
    os.utime(cert, ns=(0, 0))
    assert not watch.changed()


def test_a_missing_file_waits_and_the_pair_that_comes_back_is_taken(tmp_path):
    watch, cert, _ = watch_of(tmp_path)
    cert.unlink()
    assert not watch.changed() and not watch.pair_ok()
    assert "cannot read" in watch.problem and str(cert) in watch.problem
    make_pair(tmp_path, NOW + 400 * DAY, serial=2)
    assert watch.changed() and watch.problem == ""


def test_the_same_pair_coming_back_is_no_change(tmp_path):
    watch, cert, _ = watch_of(tmp_path)
    pem = cert.read_bytes()
    cert.unlink()
    assert not watch.changed()
    cert.write_bytes(pem)
    assert not watch.changed() and watch.problem == ""


def test_a_half_written_certificate_waits_until_it_is_whole(tmp_path):
    watch, cert, key = watch_of(tmp_path)
    new_cert, new_key = make_pair(tmp_path, NOW + 400 * DAY, serial=2, cert_name="new.crt", key_name="new.key")
    key.write_bytes(new_key.read_bytes())
    cert.write_bytes(new_cert.read_bytes()[:300])
    assert not watch.changed() and not watch.pair_ok()
    assert "certificate is not PEM" in watch.problem
    assert not watch.changed()  # still waiting, however often it is asked
    cert.write_bytes(new_cert.read_bytes())
    assert watch.pair_ok() and watch.changed() and watch.problem == ""
    assert not watch.changed()


def test_a_certificate_whose_key_is_not_replaced_yet_waits(tmp_path):
    watch, cert, key = watch_of(tmp_path)
    new_cert, new_key = make_pair(tmp_path, NOW + 400 * DAY, serial=2, cert_name="new.crt", key_name="new.key")
    cert.write_bytes(new_cert.read_bytes())
    assert not watch.changed() and "does not match" in watch.problem
    key.write_bytes(new_key.read_bytes())
    assert watch.changed()


def test_a_pair_missing_at_start_is_a_change_when_it_arrives(tmp_path):
    watch = CertWatch(str(tmp_path / "mirror.crt"), str(tmp_path / "mirror.key"))
    assert not watch.changed() and not watch.pair_ok()
    make_pair(tmp_path, NOW + 400 * DAY)
    assert watch.changed() and not watch.changed()


def test_a_new_clients_ca_is_a_change_once_and_a_half_written_one_waits(tmp_path):
    ca, _ = make_pair(tmp_path, NOW + 400 * DAY, serial=1, cert_name="nodes-ca.crt", key_name="nodes-ca.key")
    watch = CaWatch(str(ca))
    assert not watch.changed()
    new, _ = make_pair(tmp_path, NOW + 800 * DAY, serial=2, cert_name="new-ca.crt", key_name="new-ca.key")
    ca.write_bytes(new.read_bytes()[:200])  # the copy is under way
    assert not watch.changed() and watch.problem.startswith(f"{ca}: ")
    ca.write_bytes(new.read_bytes())
    assert watch.changed() and not watch.changed() and watch.problem == ""
