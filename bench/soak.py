#!/usr/bin/env python3
"""Helpers for bench/soak.sh, standard library only, loopback only.

    soak.py ports COUNT                        COUNT free loopback ports, one a line
    soak.py mint ISSUER_URL COUNT OUT PREFIX   COUNT tokens via POST {issuer}/mint
    soak.py revoke ADMIN_URL KEY_FILE TOKEN    revoke TOKEN's jti; prints "<status> <jti>"
                                               (status 000 when the request failed)
    soak.py missing KEY_FILE JTIS ADMIN_URL..  jtis (one a line) absent from each replica's
                                               GET /admin/v1/revocations; prints one count a
                                               replica
    soak.py metric ADMIN_URL REGEX             sum of the /metrics samples matching REGEX
    soak.py ping PORT                          exit 0 if Redis on PORT answers PING
"""

import base64
import http.client
import json
import re
import socket
import sys
import time
import urllib.parse

from benchlib import ports

TIMEOUT_SECS = 10


def _loopback(base: str) -> urllib.parse.SplitResult:
    url = urllib.parse.urlsplit(base)
    if url.hostname not in ("127.0.0.1", "::1", "localhost"):
        sys.exit(f"soak.py: refusing a non-loopback URL: {base}")
    return url




def mint(issuer: str, count: int, out: str, prefix: str) -> None:
    url = _loopback(issuer)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT_SECS)
    tokens = []
    for i in range(count):
        body = json.dumps({"sub": f"{prefix}-{i}", "ttl_secs": 3600})
        conn.request("POST", "/mint", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            sys.exit(f"soak.py: /mint answered {resp.status}: {data[:200]!r}")
        tokens.append(json.loads(data)["token"])
    with open(out, "w") as f:
        f.write("\n".join(tokens) + "\n")


def jti_of(token: str) -> str:
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))["jti"]


def _request(base: str, method: str, path: str, key: str, body=None):
    url = _loopback(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT_SECS)
    headers = {"Authorization": f"Bearer {key}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body, headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def revoke(base: str, key_file: str, token: str) -> None:
    key = open(key_file).read().strip()
    jti = jti_of(token)
    body = json.dumps({"jti": jti, "exp": int(time.time()) + 3600})
    try:
        status, _ = _request(base, "POST", "/admin/v1/revocations", key, body)
    except OSError:
        status = 0
    print(f"{status:03d} {jti}")


def missing(key_file: str, jtis_file: str, bases: list) -> None:
    key = open(key_file).read().strip()
    wanted = {line.strip() for line in open(jtis_file) if line.strip()}
    for base in bases:
        status, data = _request(base, "GET", "/admin/v1/revocations", key)
        if status != 200:
            sys.exit(f"soak.py: GET /admin/v1/revocations on {base} answered {status}")
        held = {r.get("jti") for r in json.loads(data)["revocations"]}
        print(len(wanted - held))


def metric(base: str, pattern: str) -> None:
    url = _loopback(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT_SECS)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    regex = re.compile(pattern)
    total = 0.0
    for line in text.splitlines():
        if not line.startswith("#") and regex.search(line):
            total += float(line.rsplit(" ", 1)[1])
    print(int(total))


def ping(port: int) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(0.5)
            s.sendall(b"PING\r\n")
            ok = s.recv(64).startswith(b"+PONG")
    except OSError:
        ok = False
    sys.exit(0 if ok else 1)


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["ports"] and len(args) == 2:
        ports(int(args[1]))
    elif args[:1] == ["mint"] and len(args) == 5:
        mint(args[1], int(args[2]), args[3], args[4])
    elif args[:1] == ["revoke"] and len(args) == 4:
        revoke(args[1], args[2], args[3])
    elif args[:1] == ["missing"] and len(args) >= 4:
        missing(args[1], args[2], args[3:])
    elif args[:1] == ["metric"] and len(args) == 3:
        metric(args[1], args[2])
    elif args[:1] == ["ping"] and len(args) == 2:
        ping(int(args[1]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
