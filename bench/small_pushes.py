#!/usr/bin/env python3
"""N sequential small-blob pushes over one keep-alive HTTP/1.1 connection.

Each blob is distinct random content. Protocol (same for every registry):
POST /v2/<repo>/blobs/uploads/ -> 202 + Location, then
PUT <Location>?digest=sha256:... with the whole body -> 201.
When the environment variable BENCH_AUTHORIZATION is set (e.g. "Basic YWxpY2U6..." or
"Bearer eyJ..."), every request carries it as the Authorization header; the secret stays
out of argv.
Prints: "<count> <seconds>" on success; exits non-zero on any unexpected status.

Usage: small_pushes.py HOST PORT [COUNT] [SIZE] [REPO]
"""
import hashlib
import http.client
import os
import sys
import time
import urllib.parse


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 4096
    repo = sys.argv[5] if len(sys.argv) > 5 else "bench-small"
    auth = os.environ.get("BENCH_AUTHORIZATION", "")
    extra = {"Authorization": auth} if auth else {}
    blobs = []
    for _ in range(count):
        data = os.urandom(size)
        blobs.append((data, "sha256:" + hashlib.sha256(data).hexdigest()))

    conn = http.client.HTTPConnection(host, port, timeout=60)
    start = time.perf_counter()
    for data, digest in blobs:
        conn.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"",
                     headers={"Content-Length": "0", **extra})
        r = conn.getresponse()
        body = r.read()
        if r.status != 202:
            print(f"POST: unexpected status {r.status}: {body[:300]!r}", file=sys.stderr)
            return 1
        loc = r.getheader("Location")
        u = urllib.parse.urlsplit(loc)
        path = u.path + ("?" + u.query + "&" if u.query else "?") + "digest=" + digest
        conn.request("PUT", path, body=data, headers={
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(data)),
            **extra,
        })
        r = conn.getresponse()
        body = r.read()
        if r.status != 201:
            print(f"PUT: unexpected status {r.status}: {body[:300]!r}", file=sys.stderr)
            return 1
    elapsed = time.perf_counter() - start
    conn.close()
    print(f"{count} {elapsed:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
