"""The mirror's TLS certificate: a self-signed one is generated on first use (cryptography ships with mitmproxy);
its expiry is checked, for the stock registry reads it only at start and never says it has expired."""
from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

EXPIRY_WARNING_DAYS = 14  # a renewal through a CA can take days of tickets: warn while there is time
SERVER_DAYS = 825  # the longest validity clients accept for a server certificate
OWN_DAYS = 3650  # the mirror's own pairs (token signer, its client certificate) never leave its hosts


class CertError(Exception):
    pass


def ensure_self_signed(cert_path: str, key_path: str, extra_names: tuple[str, ...] = ()) -> bool:
    """Create cert and key when both are missing; True when created. Names: localhost, 127.0.0.1, this host
    and `extra_names`. One without the other is an error: an operator's own certificate is never replaced."""
    if not _both_missing(cert_path, key_path, "mirror.tls_cert / mirror.tls_key"):
        return False
    names = {"localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn(), *extra_names} - {"", "0.0.0.0", "::"}
    alt_names: list[x509.GeneralName] = []
    for name in sorted(names):
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    _write_pair(cert_path, key_path, socket.gethostname() or "artifactory-mirror", SERVER_DAYS,
                [(x509.SubjectAlternativeName(alt_names), False), (x509.BasicConstraints(ca=True, path_length=None),
                                                                    True)])
    return True


def ensure_own_pair(cert_path: str, key_path: str, common_name: str, what: str) -> bool:
    """A self-signed pair the mirror uses itself (signing tokens, or as a client of its own registry), created when
    both are missing; True when created. `what` names the keys, for the error when only one exists."""
    if not _both_missing(cert_path, key_path, what):
        return False
    _write_pair(cert_path, key_path, common_name, OWN_DAYS, [(x509.BasicConstraints(ca=True, path_length=None), True)])
    return True


def _both_missing(cert_path: str, key_path: str, what: str) -> bool:
    cert, key = Path(cert_path), Path(key_path)
    if cert.exists() and key.exists():
        return False
    if cert.exists() or key.exists():
        present, missing = (cert, key) if cert.exists() else (key, cert)
        raise CertError(f"{present} exists but {missing} does not; fix {what} (both missing: a self-signed pair is "
                        f"generated; never one of them)")
    return True


def _write_pair(cert_path: str, key_path: str, common_name: str, days: int,
                extensions: list[tuple[x509.ExtensionType, bool]]) -> None:
    """A new EC P-256 key (0600, created exclusively) and its self-signed certificate."""
    cert, key = Path(cert_path), Path(key_path)
    private_key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(private_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    certificate = builder.sign(private_key, hashes.SHA256())
    try:
        cert.parent.mkdir(parents=True, exist_ok=True)
        key.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.TraditionalOpenSSL,
                                              serialization.NoEncryption()))
        cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    except OSError as e:
        raise CertError(f"cannot write the self-signed pair {cert} / {key}: {e.strerror}") from e


def own_client_pair(tls_cert: str) -> tuple[str, str]:
    """The certificate and key the mirror presents to its own registry under mutual TLS (its warms), beside its
    server pair; the registry trusts it besides `mirror.client_ca`."""
    folder = Path(tls_cert).parent
    return str(folder / "mirror-client.crt"), str(folder / "mirror-client.key")


def trust_folder(cert_path: str) -> Path:
    """The folder clients point at (skopeo --src-cert-dir, podman --cert-dir): the CA certificate and nothing else,
    for a .key beside it makes containers/image demand a matching client certificate."""
    return Path(cert_path).parent / "trust"


def write_trust_folder(ca_file: str, cert_path: str) -> Path:
    """`trust_folder(cert_path)/ca.crt` as a copy of `ca_file`, replaced atomically when it differs."""
    folder = trust_folder(cert_path)
    target = folder / "ca.crt"
    try:
        pem = Path(ca_file).read_bytes()
        if target.exists() and target.read_bytes() == pem:
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(pem)
        os.replace(tmp, target)
    except OSError as e:
        raise CertError(f"cannot write the clients' trust folder {folder}: {e.strerror}; make the folder of "
                        f"mirror.tls_cert writable, or copy {ca_file} to the clients by hand") from e
    return folder


def system_ca_file() -> str | None:
    """The system's CA bundle as OpenSSL finds it (Debian: /usr/lib/ssl/cert.pem, a link to ca-certificates)."""
    paths = ssl.get_default_verify_paths()
    return next((f for f in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt")
                 if f and Path(f).is_file()), None)


def ca_bundle(extra_ca: str) -> bytes:
    """The system's CAs plus `extra_ca`, for programs that take one bundle in place of the system's (Go's
    SSL_CERT_FILE, botocore's `verify`)."""
    system = system_ca_file()
    try:
        return (Path(system).read_bytes().rstrip() + b"\n" if system else b"") + Path(extra_ca).read_bytes()
    except OSError as e:
        raise CertError(f"cannot read the CAs to bundle ({system or 'no system bundle'} and {extra_ca}): "
                        f"{e.strerror}") from e


def write_ca_bundle(extra_ca: str, target: Path) -> Path:
    """`ca_bundle(extra_ca)` in `target`, replaced atomically through a file of a unique name beside it."""
    pem = ca_bundle(extra_ca)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.chmod(tmp, 0o644)  # certificates only: the registry's user may differ
        os.replace(tmp, target)
    except OSError as e:
        raise CertError(f"cannot write the CA bundle {target}: {e.strerror}") from e
    return target


def trust_hint(cert_path: str) -> str:
    ca_file = trust_folder(cert_path) / "ca.crt"
    return (f"clients trust {ca_file} (skopeo copy --src-cert-dir {ca_file.parent}, podman pull --cert-dir "
            f"{ca_file.parent}); `artifactory-mirror clients` prints docker's, containerd's and podman's configuration")


def certificate_expiry(cert_path: str) -> float:
    """The notAfter of the (first) certificate in a PEM file, as an epoch."""
    try:
        pem = Path(cert_path).read_bytes()
    except OSError as e:
        raise CertError(f"cannot read mirror.tls_cert {cert_path}: {e.strerror}") from e
    try:
        return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()
    except ValueError as e:
        raise CertError(f"mirror.tls_cert {cert_path} is not a PEM certificate ({e}); put the mirror's "
                        f"certificate there (-----BEGIN CERTIFICATE-----)") from e


def certificate_names(cert_path: str) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for (its subjectAltName)."""
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    except (OSError, ValueError) as e:
        raise CertError(f"cannot read the names of {cert_path}: {e}") from e
    return [*names.get_values_for_type(x509.DNSName), *(str(ip) for ip in names.get_values_for_type(x509.IPAddress))]


def names_host(names: list[str], host: str) -> bool:
    """Whether a certificate with `names` is valid for `host`, as clients check it: an IP address exactly, a DNS
    name case-insensitively, a wildcard for one leftmost label."""
    host = host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for name in names:
        name = name.lower()
        if address is not None:
            try:
                if ipaddress.ip_address(name) == address:
                    return True
            except ValueError:
                pass
            continue
        if name == host or (name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]):
            return True
    return False


def date_text(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def expiry_problem(cert_path: str, not_after: float, now: float) -> tuple[str, str] | None:
    """("error", why) once `not_after` is past, ("warning", why) within EXPIRY_WARNING_DAYS of it, else None."""
    date = date_text(not_after)
    renew = ("put a renewed certificate and its key at mirror.tls_cert / mirror.tls_key (for a generated "
             "self-signed pair: delete both and `up` makes a new one, which clients must trust again)")
    if not_after <= now:
        return "error", (f"mirror.tls_cert {cert_path} expired on {date}: clients fail with `x509: certificate "
                         f"has expired`; renew it: {renew}")
    left = (not_after - now) / 86400
    if left <= EXPIRY_WARNING_DAYS:
        when = f"in {int(left)} days" if left >= 1 else "within a day"
        return "warning", f"mirror.tls_cert {cert_path} expires on {date}, {when}; renew it before then: {renew}"
    return None


def certificate_problem(cert_path: str, now: float) -> tuple[str, str] | None:
    """`expiry_problem` of the certificate in `cert_path`, or ("error", why) when it cannot be read."""
    try:
        return expiry_problem(cert_path, certificate_expiry(cert_path), now)
    except CertError as e:
        return "error", str(e)


def pair_problem(cert_pem: bytes, key_pem: bytes) -> str | None:
    """Why a certificate and key cannot be served together (unparsable, say half-written, or not a pair), or None."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        return f"the certificate is not PEM (still being written?): {e}"
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:  # TypeError: it wants a passphrase
        return f"the key is not an unencrypted PEM private key (still being written?): {e}"
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        return "the key does not match the certificate (one of the two not replaced yet?)"
    return None
