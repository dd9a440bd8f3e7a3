"""Tokens the stock registry's `auth.token` accepts: ES256 over header.claims with the signing certificate in `x5c`,
`aud` one string, `iss` the issuer, pull only on what was granted; scopes parsed as clients send them."""
import base64
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from registry_mirror.access.tokens import (
    ISSUER,
    SERVICE,
    Scope,
    ScopeError,
    Signer,
    mint,
    parse_scopes,
    registry_auth,
    token_answer,
)
from registry_mirror.tls import certs

NOW = 1_800_000_000.0


def unpad(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def signer(tmp_path) -> Signer:
    certs.ensure_own_pair(str(tmp_path / "s.crt"), str(tmp_path / "s.key"), "signer", "the test's pair")
    return Signer.load(str(tmp_path / "s.crt"), str(tmp_path / "s.key"))


def test_a_token_verifies_against_the_certificate_in_its_x5c_and_says_who_may_pull_what(signer):
    token = mint(signer, "dev", [Scope("repository", "tools/lint", ("pull",))], NOW, 300)
    header_b64, claims_b64, signature_b64 = token.split(".")
    header, claims = json.loads(unpad(header_b64)), json.loads(unpad(claims_b64))
    assert header["alg"] == "ES256" and header["typ"] == "JWT"
    certificate = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    assert certificate == signer.certificate
    raw = unpad(signature_b64)
    assert len(raw) == 64  # r || s, as JWS wants, never DER
    signature = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    certificate.public_key().verify(signature, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    assert claims["iss"] == ISSUER and claims["aud"] == SERVICE and isinstance(claims["aud"], str)
    assert claims["sub"] == "dev" and claims["exp"] == NOW + 300 and claims["nbf"] < NOW <= claims["iat"] + 1
    assert claims["access"] == [{"type": "repository", "name": "tools/lint", "actions": ["pull"]}]
    assert mint(signer, "dev", [], NOW, 300).split(".")[1] != claims_b64  # a fresh jti each time


def test_the_answer_carries_the_token_under_both_names_and_its_lifetime():
    answer = token_answer("t0k3n", 300, NOW)
    assert answer["token"] == answer["access_token"] == "t0k3n" and answer["expires_in"] == 300
    assert answer["issued_at"] == "2027-01-15T08:00:00Z"


def test_scopes_are_parsed_as_clients_send_them():
    assert parse_scopes(["repository:team/app:pull,push", "repository:tools/lint:pull registry:catalog:*"]) == [
        Scope("repository", "team/app", ("pull", "push")), Scope("repository", "tools/lint", ("pull",)),
        Scope("registry", "catalog", ("*",))]
    assert parse_scopes(["repository:host:5000/app:pull"]) == [Scope("repository", "host:5000/app", ("pull",))]
    for bad in ("repository", "repository:team/app", ":team/app:pull"):
        with pytest.raises(ScopeError, match="type:name:actions"):
            parse_scopes([bad])


def test_a_signing_key_that_is_not_the_certificates_is_refused_at_load(tmp_path):
    for name in ("a", "b"):
        certs.ensure_own_pair(str(tmp_path / f"{name}.crt"), str(tmp_path / f"{name}.key"), name, "pair")
    with pytest.raises(ValueError, match="does not match"):
        Signer.load(str(tmp_path / "a.crt"), str(tmp_path / "b.key"))
    with pytest.raises(ValueError, match="cannot load the token signing certificate"):
        Signer.load(str(tmp_path / "missing.crt"), str(tmp_path / "a.key"))


def test_the_registry_verifies_against_the_signers_certificate():
    assert registry_auth("https://m:5001/token", "/c/s.crt") == {"token": {
        "realm": "https://m:5001/token", "service": SERVICE, "issuer": ISSUER, "rootcertbundle": "/c/s.crt"}}
