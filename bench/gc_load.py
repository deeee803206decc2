#!/usr/bin/env python3
"""Fills a registry for the GC benchmark, and probes latency while GC runs.

  gc_load.py fill HOST PORT IMAGES LAYERS SIZE OUT.json
      Pushes IMAGES images (a config and LAYERS layers each, SIZE bytes, all distinct) with
      POST-then-PUT uploads over 4 keep-alive connections, then writes the
      manifest digests to OUT.json.
  gc_load.py delete HOST PORT IN.json FROM TO
      Deletes manifests FROM..TO (by digest) of those listed in IN.json.
  gc_load.py probe HOST PORT SECONDS
      One connection: alternately pushes a 4 KiB blob (POST, PUT) and pulls a manifest
      and a blob, for SECONDS; prints JSON {"push": {"p50","p99","n"}, "pull": {...}} in ms.

Exits non-zero on any unexpected status.
"""
import hashlib
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

MT = "application/vnd.oci.image.manifest.v1+json"


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def call(conn, method, path, body=b"", headers=None, want=(200,)):
    h = {"Content-Length": str(len(body))}
    h.update(headers or {})
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    if r.status not in want:
        raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
    return data


def push_blob(conn, repo, data):
    """POST then PUT with the whole blob: the one protocol every registry speaks."""
    conn.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"", headers={"Content-Length": "0"})
    r = conn.getresponse()
    body = r.read()
    if r.status != 202:
        raise SystemExit(f"POST: {r.status} {body[:200]!r}")
    u = urllib.parse.urlsplit(r.getheader("Location"))
    path = u.path + ("?" + u.query + "&" if u.query else "?") + "digest=" + digest(data)
    call(conn, "PUT", path, data, {"Content-Type": "application/octet-stream"}, (201,))


def fill(host, port, images, layers, size, out):
    results = [None] * images
    def worker(w):
        conn = http.client.HTTPConnection(host, port, timeout=120)
        for i in range(w, images, 4):
            repo = f"bench/gc{i % 50}"
            cfg = json.dumps({"architecture": "amd64", "os": "linux", "n": i}).encode()
            push_blob(conn, repo, cfg)
            descs = []
            for _ in range(layers):
                b = os.urandom(size)
                push_blob(conn, repo, b)
                descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                              "digest": digest(b), "size": size})
            m = json.dumps({"schemaVersion": 2, "mediaType": MT,
                            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                       "digest": digest(cfg), "size": len(cfg)},
                            "layers": descs}).encode()
            call(conn, "PUT", f"/v2/{repo}/manifests/t{i}", m, {"Content-Type": MT}, (201,))
            results[i] = [repo, digest(m)]
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any(r is None for r in results):
        raise SystemExit("a worker failed")
    with open(out, "w") as f:
        json.dump(results, f)


def delete(host, port, path, lo, hi):
    with open(path) as f:
        images = json.load(f)[lo:hi]
    def worker(w):
        conn = http.client.HTTPConnection(host, port, timeout=120)
        for repo, d in images[w::4]:
            call(conn, "DELETE", f"/v2/{repo}/manifests/{d}", want=(202,))
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))] * 1000, 2) if xs else None


def probe(host, port, seconds):
    conn = http.client.HTTPConnection(host, port, timeout=120)
    cfg = b'{"architecture":"amd64","os":"linux","probe":true}'
    push_blob(conn, "bench/probe", cfg)
    layer = os.urandom(4096)
    push_blob(conn, "bench/probe", layer)
    m = json.dumps({"schemaVersion": 2, "mediaType": MT,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": digest(cfg), "size": len(cfg)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                "digest": digest(layer), "size": 4096}]}).encode()
    call(conn, "PUT", "/v2/bench/probe/manifests/latest", m, {"Content-Type": MT}, (201,))
    push, pull = [], []
    end = time.time() + seconds
    while time.time() < end:
        t = time.perf_counter()
        push_blob(conn, "bench/probe", os.urandom(4096))
        push.append(time.perf_counter() - t)
        t = time.perf_counter()
        call(conn, "GET", "/v2/bench/probe/manifests/latest", headers={"Accept": MT})
        call(conn, "GET", f"/v2/bench/probe/blobs/{digest(layer)}")
        pull.append(time.perf_counter() - t)
    print(json.dumps({k: {"p50": pct(v, 0.5), "p99": pct(v, 0.99), "n": len(v)}
                      for k, v in (("push", push), ("pull", pull))}))


def main():
    cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cmd == "fill":
        fill(host, port, int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
    elif cmd == "delete":
        delete(host, port, sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    elif cmd == "probe":
        probe(host, port, float(sys.argv[4]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
