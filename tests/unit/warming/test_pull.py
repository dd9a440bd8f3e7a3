import datetime
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from registry_mirror.cli.commands import main
from registry_mirror.warming.pull import WarmError, parse_ref, pinned_context, read_refs

D = "sha256:" + "b" * 64


@pytest.mark.parametrize("ref,expected", [
    ("team/app:1.0", ("team/app", "1.0")),
    ("team/app", ("team/app", "latest")),
    (f"team/app@{D}", ("team/app", D)),
    (f"team/app:1.0@{D}", ("team/app", D)),  # pinned: the digest wins
    ("a/b/c:v1.2.3-rc_1", ("a/b/c", "v1.2.3-rc_1")),
])
def test_parse_ref(ref, expected):
    assert parse_ref(ref) == expected


@pytest.mark.parametrize("ref", ["Team/app:1", "team/app:", "team/app@sha256:12", "../etc:1", "team//app:1",
                                 "team/app:-x", ""])
def test_parse_ref_rejects(ref):
    with pytest.raises(WarmError, match="is not an image reference"):
        parse_ref(ref)


def test_read_refs_skips_comments_and_blanks(tmp_path):
    f = tmp_path / "refs"
    f.write_text("# deploy\nteam/a:1  # the api\n\n  team/b:2\n")
    assert read_refs(["team/c:3"], str(f)) == ["team/c:3", "team/a:1", "team/b:2"]


def test_a_missing_list_of_images_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "mirror.yaml").write_text("upstream:\n  url: http://127.0.0.1:9\n  repository: r\n  anonymous: true\n")
    code = main(["warm", "-f", str(tmp_path / "nope.txt"), "--config", str(tmp_path / "mirror.yaml")])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"warm: cannot read the list of images {tmp_path / 'nope.txt'}: " \
                                               "No such file or directory"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, key, issuer: str, issuer_key, ca: bool, san: list[str]) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in san]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.mark.parametrize("trusted", ["leaf", "other"])
def test_warm_trusts_a_ca_issued_mirror_certificate_and_nothing_else(tmp_path, trusted):
    """The systemd warm timer reaches the mirror on 127.0.0.1, whose certificate a company CA issued for its
    DNS name: the configured certificate is pinned, whatever its issuer and names."""
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _issue("Company CA", ca_key, "Company CA", ca_key, True, [])
    leaf = _issue("mirror.dc1.example", leaf_key, "Company CA", ca_key, False, ["mirror.dc1.example"])
    pem = serialization.Encoding.PEM
    (tmp_path / "leaf.crt").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (tmp_path / "leaf.key").write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _issue("someone else", other_key, "someone else", other_key, True, ["localhost"])
    (tmp_path / "other.crt").write_bytes(other.public_bytes(pem))
    (tmp_path / "mirror.crt").write_bytes(leaf.public_bytes(pem))  # what mirror.tls_cert holds

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "leaf.crt", tmp_path / "leaf.key")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_one():
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass
    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    context = pinned_context(str(tmp_path / ("mirror.crt" if trusted == "leaf" else "other.crt")))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            if trusted == "leaf":
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    assert tls.version()
                    tls.sendall(b"x")
            else:
                with pytest.raises(ssl.SSLCertVerificationError):
                    context.wrap_socket(raw, server_hostname="127.0.0.1")
    finally:
        thread.join(5)
        listener.close()
