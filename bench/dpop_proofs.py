#!/usr/bin/env python3
"""Keys, tokens and DPoP proofs (RFC 9449) for bench/dpop_load.sh; needs PyJWT and cryptography.

    dpop_proofs.py setup ISSUER_URL DIR
        makes an ES256 key (DIR/key.pem), mints through the development issuer's POST /mint a
        token bound to it (DIR/bound.txt, with cnf.jkt its RFC 7638 thumbprint) and one that
        is not (DIR/bearer.txt)
    dpop_proofs.py proofs DIR COUNT OUT [HTU [HTM]]
        writes COUNT proofs for DIR/bound.txt to OUT, one a line: each with a jti of its own,
        iat = now and ath = base64url(SHA-256(token)); several processes when COUNT is large

A proof is the compact JWS of header {"typ":"dpop+jwt","alg":"ES256","jwk":{kty,crv,x,y}}
and claims {jti, htm, htu, iat, ath}. The header is the same for every proof, so it is
encoded once and each proof costs one JSON payload and one ECDSA signature (the same bytes
PyJWT's jwt.encode would produce; the first proof of each batch is checked with PyJWT).
"""

import base64
import hashlib
import http.client
import json
import multiprocessing
import os
import secrets
import sys
import time
import urllib.parse

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

HTU = "http://shop.test/api/orders"
HTM = "GET"
TTL_SECS = 3600
TIMEOUT_SECS = 10
# Below this many proofs one process is quicker than starting several.
PARALLEL_FROM = 5000


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }


def thumbprint(jwk: dict) -> str:
    """RFC 7638: SHA-256 of the required members, sorted, no whitespace."""
    canonical = json.dumps(
        {k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
    )
    return b64url(hashlib.sha256(canonical.encode()).digest())


def load_key(directory: str) -> ec.EllipticCurvePrivateKey:
    with open(os.path.join(directory, "key.pem"), "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def mint_one(conn: http.client.HTTPConnection, path: str, body: dict) -> str:
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        sys.exit(f"dpop_proofs.py: mint answered {resp.status}: {data[:200]!r}")
    return json.loads(data)["token"]


def setup(issuer: str, directory: str) -> None:
    url = urllib.parse.urlsplit(issuer)
    if url.hostname not in ("127.0.0.1", "::1", "localhost"):
        sys.exit(f"dpop_proofs.py: refusing a non-loopback issuer: {issuer}")
    key = ec.generate_private_key(ec.SECP256R1())
    with open(os.path.join(directory, "key.pem"), "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    jkt = thumbprint(public_jwk(key))
    path = url.path.rstrip("/") + "/mint"
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT_SECS)
    try:
        bound = mint_one(
            conn, path, {"sub": "dpop-bench", "ttl_secs": TTL_SECS, "claims": {"cnf": {"jkt": jkt}}}
        )
        bearer = mint_one(conn, path, {"sub": "bearer-bench", "ttl_secs": TTL_SECS})
    finally:
        conn.close()
    claims = jwt.decode(bound, options={"verify_signature": False})
    if claims.get("cnf", {}).get("jkt") != jkt:
        sys.exit(f"dpop_proofs.py: the issuer dropped cnf.jkt: {claims}")
    for name, token in (("bound.txt", bound), ("bearer.txt", bearer)):
        with open(os.path.join(directory, name), "w") as f:
            f.write(token + "\n")


# --- proofs ---------------------------------------------------------------------------------

_state = {}


def _init(pem: bytes, header_b64: str, htm: str, htu: str, ath: str, prefix: str) -> None:
    _state.update(
        key=serialization.load_pem_private_key(pem, password=None),
        header=header_b64,
        htm=htm,
        htu=htu,
        ath=ath,
        prefix=prefix,
    )


def _batch(bounds: tuple) -> str:
    """Proofs start..end-1, newline-terminated; iat is the second each one is made."""
    start, end = bounds
    s = _state
    key, algorithm = s["key"], ec.ECDSA(hashes.SHA256())
    out = []
    for i in range(start, end):
        claims = {
            "jti": f"{s['prefix']}-{i:x}",
            "htm": s["htm"],
            "htu": s["htu"],
            "iat": int(time.time()),
            "ath": s["ath"],
        }
        signing_input = s["header"] + "." + b64url(json.dumps(claims, separators=(",", ":")).encode())
        r, sig_s = decode_dss_signature(key.sign(signing_input.encode(), algorithm))
        out.append(signing_input + "." + b64url(r.to_bytes(32, "big") + sig_s.to_bytes(32, "big")))
    return "\n".join(out) + "\n"


def proofs(directory: str, count: int, out: str, htu: str, htm: str) -> None:
    key = load_key(directory)
    jwk = public_jwk(key)
    with open(os.path.join(directory, "bound.txt")) as f:
        token = f.read().strip()
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}
    args = (
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        b64url(json.dumps(header, separators=(",", ":")).encode()),
        htm,
        htu,
        b64url(hashlib.sha256(token.encode()).digest()),
        # Unique per run: jti values of earlier runs stay in the replay store for a while.
        secrets.token_hex(6),
    )
    start = time.monotonic()
    workers = min(os.cpu_count() or 1, 8) if count >= PARALLEL_FROM else 1
    step = 2000
    chunks = [(a, min(a + step, count)) for a in range(0, count, step)]
    with open(out, "w") as f:
        if workers == 1:
            _init(*args)
            for chunk in chunks:
                f.write(_batch(chunk))
        else:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(workers, initializer=_init, initargs=args) as pool:
                for text in pool.imap(_batch, chunks):
                    f.write(text)
    elapsed = time.monotonic() - start
    # The fast path must make what PyJWT would accept: check the first proof with it.
    with open(out) as f:
        first = f.readline().strip()
    got_header = jwt.get_unverified_header(first)
    got = jwt.decode(first, key.public_key(), algorithms=["ES256"])
    if got_header != header or got["htu"] != htu or got["ath"] != args[4]:
        sys.exit(f"dpop_proofs.py: a malformed proof: {got_header} {got}")
    print(
        f"dpop_proofs.py: {count} proofs in {elapsed:.1f} s ({workers} process(es))",
        file=sys.stderr,
    )


def main() -> None:
    args = sys.argv[1:]
    if len(args) == 3 and args[0] == "setup":
        setup(args[1], args[2])
    elif 4 <= len(args) <= 6 and args[0] == "proofs":
        count = int(args[2])
        if count < 1:
            sys.exit("dpop_proofs.py: COUNT must be positive")
        proofs(args[1], count, args[3], args[4] if len(args) > 4 else HTU, args[5] if len(args) > 5 else HTM)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    os.umask(0o077)
    main()
