#!/usr/bin/env python3
"""Token pools for bench/load.sh, standard library only.

    tokens.py mint ISSUER_URL COUNT OUT [PREFIX]   mint COUNT tokens via POST {issuer}/mint
    tokens.py mix POOL OUT                         POOL's tokens, each followed by a bad one
    tokens.py ports COUNT                          COUNT free loopback ports, one a line
    tokens.py verify VERIFY_URL TOKENS TENANTS     GET {url}/verify/<tenant> once per token,
                                                   tenants (comma-separated) taken in turn
    tokens.py revoke ADMIN_URL KEY_FILE COUNT      POST COUNT jti revocations to the admin API

`mix` writes 50% valid tokens and 50% bad ones, alternating: half of the bad ones are
garbage (random base64url text in three parts, so the verifier gets past the split), half
are a real payload and signature under a header whose kid the issuer never had.
"""

import base64
import http.client
import json
import os
import secrets
import sys
import threading
import urllib.parse

from benchlib import ports, run_workers

WORKERS = 8
TIMEOUT_SECS = 10


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(issuer: str, count: int, out: str, prefix: str) -> None:
    url = urllib.parse.urlsplit(issuer)
    if url.hostname not in ("127.0.0.1", "::1", "localhost"):
        sys.exit(f"tokens.py: refusing a non-loopback issuer: {issuer}")
    path = url.path.rstrip("/") + "/mint"
    tokens = [None] * count
    errors = []

    def work(start: int) -> None:
        # One keep-alive connection per worker: minting is then ~0.1 ms a token.
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT_SECS)
        try:
            for i in range(start, count, WORKERS):
                body = json.dumps({"sub": f"{prefix}-{i}", "ttl_secs": 3600})
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"mint answered {resp.status}: {data[:200]!r}")
                tokens[i] = json.loads(data)["token"]
        except Exception as e:  # reported by the main thread
            errors.append(e)
        finally:
            conn.close()

    run_workers(work, WORKERS)
    if errors:
        sys.exit(f"tokens.py: minting failed: {errors[0]}")
    with open(out, "w") as f:
        f.write("\n".join(tokens) + "\n")


def mix(pool: str, out: str) -> None:
    with open(pool) as f:
        valid = [line.strip() for line in f if line.strip()]
    lines = []
    for i, token in enumerate(valid):
        lines.append(token)
        if i % 2 == 0:
            parts = [b64url(secrets.token_bytes(n)) for n in (36, 120, 64)]
            lines.append(".".join(parts))
        else:
            header = {"alg": "ES256", "typ": "JWT", "kid": "bench-" + secrets.token_hex(8)}
            _, payload, signature = token.split(".")
            lines.append(".".join([b64url(json.dumps(header).encode()), payload, signature]))
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


def _loopback(base: str) -> urllib.parse.SplitResult:
    url = urllib.parse.urlsplit(base)
    if url.hostname not in ("127.0.0.1", "::1", "localhost"):
        sys.exit(f"tokens.py: refusing a non-loopback URL: {base}")
    return url


def _fan_out(count: int, url: urllib.parse.SplitResult, one) -> dict:
    """Runs one(conn, i) for i in range(count) over WORKERS keep-alive connections; returns
    the statuses counted."""
    counts = {}
    errors = []
    lock = threading.Lock()

    def work(start: int) -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT_SECS)
        local = {}
        try:
            for i in range(start, count, WORKERS):
                status = one(conn, i)
                local[status] = local.get(status, 0) + 1
        except Exception as e:  # reported by the main thread
            errors.append(e)
        finally:
            conn.close()
            with lock:
                for k, v in local.items():
                    counts[k] = counts.get(k, 0) + v

    run_workers(work, WORKERS)
    if errors:
        sys.exit(f"tokens.py: {errors[0]}")
    return counts


def verify(base: str, tokens_file: str, tenants: str) -> None:
    url = _loopback(base)
    with open(tokens_file) as f:
        tokens = [line.strip() for line in f if line.strip()]
    names = tenants.split(",")

    def one(conn, i):
        path = url.path.rstrip("/") + "/verify/" + names[i % len(names)]
        conn.request("GET", path, headers={"Authorization": "Bearer " + tokens[i]})
        resp = conn.getresponse()
        resp.read()
        return resp.status

    print(json.dumps(_fan_out(len(tokens), url, one)))


def revoke(base: str, key_file: str, count: int) -> None:
    url = _loopback(base)
    with open(key_file) as f:
        key = f.read().strip()
    exp = int(__import__("time").time()) + 86400

    def one(conn, i):
        body = json.dumps({"jti": f"memory-bench-{i}-{secrets.token_hex(8)}", "exp": exp})
        conn.request(
            "POST",
            url.path.rstrip("/") + "/admin/v1/revocations",
            body,
            {"Content-Type": "application/json", "Authorization": "Bearer " + key},
        )
        resp = conn.getresponse()
        resp.read()
        return resp.status

    print(json.dumps(_fan_out(count, url, one)))




def main() -> None:
    args = sys.argv[1:]
    if len(args) >= 4 and args[0] == "mint":
        mint(args[1], int(args[2]), args[3], args[4] if len(args) > 4 else "bench")
    elif len(args) == 3 and args[0] == "mix":
        mix(args[1], args[2])
    elif len(args) == 2 and args[0] == "ports":
        ports(int(args[1]))
    elif len(args) == 4 and args[0] == "verify":
        verify(args[1], args[2], args[3])
    elif len(args) == 4 and args[0] == "revoke":
        revoke(args[1], args[2], int(args[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    os.umask(0o077)
    main()
