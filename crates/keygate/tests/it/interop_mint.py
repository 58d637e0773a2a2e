"""Mints keys, key sets and tokens with PyJWT and pyca/cryptography, for keygate's interop
tests (tests/it/interop.rs). Nothing here comes from keygate or its test fixtures.

Usage: python3 interop_mint.py OUT_DIR ISSUER AUDIENCE NOW

Writes OUT_DIR/cases.json: {"<case name>": {"jwks": {...}, "token": "..."}, ...}. The Rust
test holds the expectations; this script only mints.
"""

import base64
import datetime
import hashlib
import json
import os
import sys

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk(public_key, algorithm, kid, alg=None):
    key = json.loads(algorithm.to_jwk(public_key))
    key["kid"] = kid
    key["use"] = "sig"
    if alg is not None:
        key["alg"] = alg
    return key


def self_signed_der(private_key) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.interop.example")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(private_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def raw_token(header: dict, claims: dict, sign) -> str:
    """A compact JWS with a header PyJWT would not write (RFC 9864 `alg: Ed25519`)."""
    head = b64url(json.dumps(header, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{head}.{body}".encode()
    return f"{head}.{body}.{b64url(sign(signing_input))}"


def tamper(token: str) -> str:
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{body}.{b64url(bytes(raw))}"


def main() -> None:
    out_dir, issuer, audience, now = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    claims = {
        "iss": issuer,
        "sub": "interop-user",
        "aud": audience,
        "iat": now - 10,
        "nbf": now - 10,
        "exp": now + 3600,
        "jti": "interop-1",
    }

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p256 = ec.generate_private_key(ec.SECP256R1())
    p384 = ec.generate_private_key(ec.SECP384R1())
    p521 = ec.generate_private_key(ec.SECP521R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    ed448_key = ed448.Ed448PrivateKey.generate()
    attacker = ec.generate_private_key(ec.SECP256R1())

    rsa_jwk = jwk(rsa_key.public_key(), RSAAlgorithm, "rsa")  # no alg: RS* and PS*
    p521_jwk = jwk(p521.public_key(), ECAlgorithm, "p521", "ES512")
    for coordinate in ("x", "y"):
        length = len(base64.urlsafe_b64decode(p521_jwk[coordinate] + "=="))
        assert length == 66, f"P-521 {coordinate} is {length} bytes"
    main_jwks = {
        "keys": [
            rsa_jwk,
            jwk(p256.public_key(), ECAlgorithm, "p256", "ES256"),
            jwk(p384.public_key(), ECAlgorithm, "p384", "ES384"),
            p521_jwk,
            jwk(ed.public_key(), OKPAlgorithm, "ed", "EdDSA"),
        ]
    }
    ed25519_pinned = {"keys": [jwk(ed.public_key(), OKPAlgorithm, "ed", "Ed25519")]}
    with_ed448 = {
        "keys": main_jwks["keys"] + [jwk(ed448_key.public_key(), OKPAlgorithm, "ed448", "EdDSA")]
    }

    def pyjwt(key, alg, kid, **extra_headers):
        headers = {"kid": kid} if kid is not None else {}
        headers.update(extra_headers)
        return jwt.encode(claims, key, algorithm=alg, headers=headers)

    cert_der = self_signed_der(rsa_key)
    attacker_jwk = jwk(attacker.public_key(), ECAlgorithm, "attacker", "ES256")
    cases = {
        # Sanity, one per family.
        "RS256": pyjwt(rsa_key, "RS256", "rsa"),
        "PS256": pyjwt(rsa_key, "PS256", "rsa"),
        "ES256": pyjwt(p256, "ES256", "p256"),
        "ES384": pyjwt(p384, "ES384", "p384"),
        # Key-carrying headers on tokens the real key signed.
        "x5c": pyjwt(rsa_key, "RS256", "rsa", x5c=[base64.b64encode(cert_der).decode()]),
        "x5t": pyjwt(rsa_key, "RS256", "rsa", x5t=b64url(hashlib.sha1(cert_der).digest())),
        "jku": pyjwt(rsa_key, "RS256", "rsa", jku="https://evil.example/jwks.json"),
        "x5u": pyjwt(rsa_key, "RS256", "rsa", x5u="https://evil.example/cert.pem"),
        "jwk": pyjwt(rsa_key, "RS256", "rsa", jwk=rsa_jwk),
        # Forged: the attacker signs and brings its own key.
        "forged jwk, attacker kid": pyjwt(attacker, "ES256", "attacker", jwk=attacker_jwk),
        "forged jwk, real kid": pyjwt(attacker, "ES256", "p256", jwk=attacker_jwk),
        "forged jwk, no kid": pyjwt(attacker, "ES256", None, jwk=attacker_jwk),
        "forged jwk and jku, real kid": pyjwt(
            attacker, "ES256", "p256", jwk=attacker_jwk, jku="https://evil.example/jwks.json"
        ),
        # ES512 (P-521).
        "ES512": pyjwt(p521, "ES512", "p521"),
        "ES512 tampered": tamper(pyjwt(p521, "ES512", "p521")),
        "ES512 naming the P-256 key": pyjwt(p521, "ES512", "p256"),
        "ES256 naming the P-521 key": pyjwt(p256, "ES256", "p521"),
        # Ed25519 (RFC 9864) and EdDSA, each way.
        "EdDSA": pyjwt(ed, "EdDSA", "ed"),
        "Ed25519": raw_token({"alg": "Ed25519", "kid": "ed", "typ": "JWT"}, claims, ed.sign),
        "Ed25519 tampered": tamper(
            raw_token({"alg": "Ed25519", "kid": "ed", "typ": "JWT"}, claims, ed.sign)
        ),
        "Ed25519 naming the P-256 key": raw_token(
            {"alg": "Ed25519", "kid": "p256", "typ": "JWT"}, claims, ed.sign
        ),
        "Ed448": pyjwt(ed448_key, "EdDSA", "ed448"),
    }
    jwks_of = {
        "EdDSA under an Ed25519-pinned key": ed25519_pinned,
        "Ed25519 under an Ed25519-pinned key": ed25519_pinned,
        "Ed448": with_ed448,
    }
    cases["EdDSA under an Ed25519-pinned key"] = cases["EdDSA"]
    cases["Ed25519 under an Ed25519-pinned key"] = cases["Ed25519"]

    # Two documents of one issuer (jwks_uris) whose keys share a `kid`: a migration.
    first = ec.generate_private_key(ec.SECP256R1())
    second = ec.generate_private_key(ec.SECP256R1())
    stranger = ec.generate_private_key(ec.SECP256R1())
    shared_first = {"keys": [jwk(first.public_key(), ECAlgorithm, "shared", "ES256")]}
    shared_second = {
        "keys": [
            jwk(second.public_key(), ECAlgorithm, "shared", "ES256"),
            jwk(ed.public_key(), OKPAlgorithm, "ed", "EdDSA"),
        ]
    }
    for name, key in (
        ("shared kid, first document", first),
        ("shared kid, second document", second),
        ("shared kid, neither document", stranger),
    ):
        cases[name] = pyjwt(key, "ES256", "shared")
        jwks_of[name] = shared_first
    cases["shared kid, second document's other key"] = pyjwt(ed, "EdDSA", "ed")
    jwks_of["shared kid, second document's other key"] = shared_first

    document = {
        name: {"token": token, "jwks": jwks_of.get(name, main_jwks)}
        for name, token in cases.items()
    }
    document["shared kid, second document"]["second_jwks"] = shared_second
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(document, f)
    print(f"minted {len(document)} cases with PyJWT {jwt.__version__}")


if __name__ == "__main__":
    main()
