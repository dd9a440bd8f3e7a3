"""The registry's bearer tokens (Docker token authentication), as the stock registry's `auth.token` verifies them:
ES256 JWTs whose `x5c` header holds the signing certificate (one of `rootcertbundle`), `aud` the service as one
string, `iss` the issuer. Scope parsing and the token answer too; pure, but for reading the signing pair."""
from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "artifactory-mirror"
SERVICE = "artifactory-mirror"
PULL = "pull"
CLOCK_SKEW = 60.0  # nbf this far back: a registry host whose clock is a little behind still accepts a new token


@dataclass(frozen=True)
class Scope:
    """One `scope` of a token request: `repository:team/app:pull,push`."""
    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


class ScopeError(ValueError):
    pass


def parse_scopes(values: list[str]) -> list[Scope]:
    """Each `scope` parameter holds one or more space-separated scopes; the name may hold a colon (a port)."""
    scopes = []
    for value in values:
        for text in value.split():
            kind, _, rest = text.partition(":")
            name, _, actions = rest.rpartition(":")
            if not kind or not name or not actions:
                raise ScopeError(f"scope {text!r} is not type:name:actions, e.g. repository:team/app:pull")
            scopes.append(Scope(kind, name, tuple(a for a in actions.split(",") if a)))
    return scopes


@dataclass(frozen=True)
class Signer:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def load(cls, cert_path: str, key_path: str) -> Signer:
        """The pair from PEM files; a ValueError naming the file when one is not what is expected."""
        try:
            certificate = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load the token signing certificate {cert_path}: {e}") from e
        try:
            key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"cannot load the token signing key {key_path}: {e}") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError(f"the token signing key {key_path} is not an EC P-256 key (ES256 needs one)")
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if certificate.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
            raise ValueError(f"the token signing key {key_path} does not match {cert_path}")
        return cls(key, certificate)

    @property
    def not_after(self) -> float:
        return self.certificate.not_valid_after_utc.timestamp()


def signer_problem(signer: Signer, cert_path: str, now: float, warn_days: float = 14) -> tuple[str, str] | None:
    """("error", why) once the signing certificate has expired (the registry then refuses every token),
    ("warning", why) within `warn_days` of it, else None."""
    date = time.strftime("%Y-%m-%d", time.gmtime(signer.not_after))
    renew = "replace the pair (both files missing: `up` generates one) and restart the mirror"
    if signer.not_after <= now:
        return "error", f"the token signing certificate {cert_path} expired on {date}: every pull is refused; {renew}"
    if signer.not_after - now <= warn_days * 86400:
        return "warning", f"the token signing certificate {cert_path} expires on {date}; {renew} before then"
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(signer: Signer, subject: str, granted: list[Scope], now: float, ttl: float) -> str:
    """A token for `subject` granting `granted`, valid `ttl` seconds from `now` (an epoch)."""
    header = {"typ": "JWT", "alg": "ES256",
              "x5c": [base64.b64encode(signer.certificate.public_bytes(serialization.Encoding.DER)).decode()]}
    claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "iat": int(now), "nbf": int(now - CLOCK_SKEW),
              "exp": int(now + ttl), "jti": secrets.token_hex(16),
              "access": [{"type": s.type, "name": s.name, "actions": list(s.actions)} for s in granted]}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(signer.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def token_answer(token: str, ttl: float, now: float) -> dict:
    """The JSON a token endpoint answers (both names: docker reads `token`, OAuth2 clients `access_token`)."""
    return {"token": token, "access_token": token, "expires_in": int(ttl),
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}


def registry_auth(realm: str, bundle: str) -> dict:
    """The stock registry's `auth` section for these tokens."""
    return {"token": {"realm": realm, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": bundle}}
