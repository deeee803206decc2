#!/usr/bin/env python3
"""Errors answered before the request body is read must reach real clients whole.

Starts two berth servers in basic-auth mode (plain HTTP, and TLS with the self-signed
development CA), sets them up with the CLI, and sends a 20 MiB body down each early-error
path with each client, over both transports:

  paths    401 (no credentials), 403 (pull-only user pushes), 404 (PATCH to an unknown
           upload), 413 (oversized manifest PUT), 416 (out-of-order chunk), 429 (a user
           blocked by the login throttle)
  clients  curl over HTTP/1.1, curl over HTTP/2 (h2 over TLS, h2c with prior knowledge on
           plain HTTP), python-requests, and a raw socket client that writes the whole
           request, body included, before it reads a byte of the answer

Each check must see the exact status and the registry's JSON error code. Then: a 1 GiB body
sent to a refused endpoint is neither read whole nor holds the connection open for long, and
a plain HTTP request to the TLS port gets a plain 400.

  tests/clients/early_errors.py /path/to/berth

Prints one PASS/FAIL line per check and "N passed, M failed"; exits 1 on any failure.
"""

import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid

import requests

BODY_MIB = 20
PW = "early-Passw0rd"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, berth, work, name, tls):
        self.berth, self.tls = berth, tls
        self.data = os.path.join(work, name)
        os.makedirs(self.data)
        for user, role in (("dev", "developer"), ("guest", "guest"), ("victim", "developer")):
            self.cli("user", "add", user, "--password-stdin", stdin=PW + "\n")
        self.cli("namespace", "create", "team")
        for user, role in (("dev", "developer"), ("guest", "guest"), ("victim", "developer")):
            self.cli("namespace", "member", "add", "team", user, role)
        self.port = free_port()
        args = [berth, "serve", "--auth", "basic", "--addr", f"127.0.0.1:{self.port}",
                "--data-dir", self.data, "--log-format", "json"]
        if tls:
            args.append("--tls-self-signed")
        self.log = open(os.path.join(work, name + ".log"), "wb")
        self.proc = subprocess.Popen(args, stderr=self.log, stdout=subprocess.DEVNULL)
        scheme = "https" if tls else "http"
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        self.ca = os.path.join(self.data, "tls", "ca.crt") if tls else None
        for _ in range(300):
            if b"berth ready" in open(self.log.name, "rb").read():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"berth {name} did not start:\n" + open(self.log.name).read())

    def cli(self, *args, stdin=None):
        subprocess.run([self.berth, *args, "--data-dir", self.data], input=stdin, text=True,
                       check=True, stdout=subprocess.DEVNULL)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def verify(self):
        return self.ca if self.tls else True

    def access_lines(self):
        out = []
        for line in open(self.log.name, "rb").read().decode(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("target") == "berth::access":
                out.append(rec["fields"])
        return out


def basic(user):
    import base64
    return "Basic " + base64.b64encode(f"{user}:{PW}".encode()).decode()


class Case:
    """One early-error path: method, path, headers, and the expected answer."""

    def __init__(self, name, method, path, headers, status, code):
        self.name, self.method, self.path = name, method, path
        self.headers, self.status, self.code = headers, status, code


def cases(srv, body_len, digest):
    s = requests.Session()
    dev = {"Authorization": basic("dev")}
    # 416: a session that has received nothing, then a chunk that claims to start at 5.
    r = s.post(srv.base + "/v2/team/app/blobs/uploads/", headers=dev, verify=srv.verify())
    assert r.status_code == 202, r.text
    session = r.headers["Location"]
    octets = {"Content-Type": "application/octet-stream"}
    return [
        Case("401 no credentials", "POST", f"/v2/team/app/blobs/uploads/?digest={digest}",
             octets, 401, "UNAUTHORIZED"),
        Case("403 pull-only user pushes", "POST", f"/v2/team/app/blobs/uploads/?digest={digest}",
             {**octets, "Authorization": basic("guest")}, 403, "DENIED"),
        Case("404 PATCH to an unknown upload", "PATCH",
             f"/v2/team/app/blobs/uploads/{uuid.uuid4()}", {**octets, **dev}, 404,
             "BLOB_UPLOAD_UNKNOWN"),
        Case("413 oversized manifest", "PUT", "/v2/team/app/manifests/huge",
             {"Content-Type": "application/vnd.oci.image.manifest.v1+json", **dev}, 413,
             "MANIFEST_INVALID"),
        Case("416 out-of-order chunk", "PATCH", session,
             {**octets, **dev, "Content-Range": f"5-{body_len + 4}"}, 416,
             "BLOB_UPLOAD_INVALID"),
        Case("429 throttled user", "POST", f"/v2/team/app/blobs/uploads/?digest={digest}",
             {**octets, "Authorization": basic("victim")}, 429, "TOOMANYREQUESTS"),
    ]


def block_victim(srv):
    """Ten wrong passwords block (victim, 127.0.0.1) with the default limits."""
    for i in range(12):
        requests.get(srv.base + "/v2/", auth=("victim", f"wrong-{i}"), verify=srv.verify())
    r = requests.get(srv.base + "/v2/", auth=("victim", PW), verify=srv.verify())
    assert r.status_code == 429, f"victim not blocked: {r.status_code}"


def error_code(text):
    try:
        return json.loads(text)["errors"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def via_curl(srv, case, body_file, http2):
    args = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code} %{http_version}", "-X", case.method,
            "--data-binary", "@" + body_file]
    if http2:
        args.append("--http2" if srv.tls else "--http2-prior-knowledge")
    else:
        args.append("--http1.1")
    if srv.tls:
        args += ["--cacert", srv.ca]
    for k, v in case.headers.items():
        args += ["-H", f"{k}: {v}"]
    args.append(srv.base + case.path)
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        return None, None, f"curl exit {p.returncode}: {p.stderr.strip()}"
    body, _, tail = p.stdout.rpartition("\n")
    status, version = tail.split()
    want = "2" if http2 else "1.1"
    if version != want:
        return None, None, f"spoke HTTP/{version}, not {want}"
    return int(status), error_code(body), None


def via_requests(srv, case, body_file):
    with open(body_file, "rb") as f:
        try:
            r = requests.request(case.method, srv.base + case.path, data=f,
                                 headers=case.headers, verify=srv.verify(), timeout=120)
        except requests.RequestException as e:
            return None, None, f"{type(e).__name__}: {e}"
    return r.status_code, error_code(r.text), None


def raw_request(srv, method, path, headers, body_len, write_body):
    """Writes the request line, headers and body completely, then reads the answer."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
    if srv.tls:
        ctx = ssl.create_default_context(cafile=srv.ca)
        sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{srv.port}",
            f"Content-Length: {body_len}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    sent, error = write_body(sock)
    answer = b""
    if error is None:
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except OSError as e:
            error = f"reading: {e}"
    sock.close()
    return answer, sent, error


def via_raw(srv, case, body):
    def write(sock):
        try:
            sock.sendall(body)
            return len(body), None
        except OSError as e:
            return 0, f"writing the body: {e}"

    answer, _, error = raw_request(srv, case.method, case.path, case.headers, len(body), write)
    if error:
        return None, None, error
    head, _, rest = answer.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ")[1])
    except (IndexError, ValueError):
        return None, None, f"no HTTP answer: {answer[:80]!r}"
    return status, error_code(rest.decode(errors="replace")), None


PASSED, FAILED = 0, []


def check(name, ok, detail=""):
    global PASSED
    if ok:
        PASSED += 1
        print(f"PASS: {name}")
    else:
        FAILED.append(name)
        print(f"FAIL: {name}" + (f": {detail}" if detail else ""))
    sys.stdout.flush()


def run_matrix(srv, label, body, body_file):
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    clients = [
        ("curl HTTP/1.1", lambda c: via_curl(srv, c, body_file, http2=False)),
        ("curl HTTP/2", lambda c: via_curl(srv, c, body_file, http2=True)),
        ("python-requests", lambda c: via_requests(srv, c, body_file)),
        ("write-all-then-read", lambda c: via_raw(srv, c, body)),
    ]
    for client, send in clients:
        block_victim(srv)
        for case in cases(srv, len(body), digest):
            status, code, error = send(case)
            ok = error is None and status == case.status and code == case.code
            got = error or f"{status} {code}"
            check(f"[{label}] {client}: {case.name} -> {case.status} {case.code}", ok, got)


def huge_body_is_cut_short(srv, label):
    """1 GiB of zeros to a refused endpoint: refused well before the end, quickly."""
    total = 1 << 30
    chunk = bytes(1 << 20)
    t0 = time.monotonic()

    def write(sock):
        sent = 0
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            return sent, "cut"
        return sent, None

    answer, sent, error = raw_request(srv, "POST", "/v2/team/app/blobs/uploads/?digest=sha256:"
                                      + "0" * 64, {}, total, write)
    elapsed = time.monotonic() - t0
    read = max((int(f.get("bytes_in", 0)) for f in srv.access_lines()
                if f.get("path") == "/v2/team/app/blobs/uploads/" and f.get("status") == 401),
               default=0)
    # berth drains at most 64 MiB (plus the frame that crossed the bound) before answering,
    # then lingers on the closing connection for at most 2 s and another 64 MiB.
    ok = sent < total and elapsed < 15 and 0 < read <= 65 << 20
    check(f"[{label}] a 1 GiB body to a refused endpoint is cut short "
          f"(sent {sent >> 20} MiB before the close, berth read {read >> 20} MiB, "
          f"{elapsed:.1f} s)", ok, f"sent {sent}, read {read}, {elapsed:.1f} s")


def plain_http_to_tls_port(srv):
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    sock.sendall(f"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n".encode())
    answer = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    sock.close()
    ok = answer.startswith(b"HTTP/1.0 400") and \
        answer.endswith(b"Client sent an HTTP request to an HTTPS server.\n")
    check("[tls] a plain HTTP request to the TLS port gets a plain 400 saying so", ok,
          repr(answer[:200]))
    p = subprocess.run(["curl", "-sS", "-w", "%{http_code}", f"http://127.0.0.1:{srv.port}/v2/"],
                       capture_output=True, text=True, timeout=30)
    check("[tls] curl http:// to the TLS port sees the 400 and the reason",
          p.stdout.startswith("Client sent an HTTP request to an HTTPS server.")
          and p.stdout.endswith("400"), p.stdout + p.stderr)


def main():
    berth = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="berth-early.")
    body = os.urandom(BODY_MIB << 20)
    body_file = os.path.join(work, "body")
    with open(body_file, "wb") as f:
        f.write(body)
    servers = []
    try:
        for label, tls in (("plain", False), ("tls", True)):
            srv = Server(berth, work, label, tls)
            servers.append(srv)
            run_matrix(srv, label, body, body_file)
            huge_body_is_cut_short(srv, label)
            if tls:
                plain_http_to_tls_port(srv)
            # Still serving after all that.
            r = requests.get(srv.base + "/v2/", auth=("dev", PW), verify=srv.verify())
            check(f"[{label}] berth still serves afterwards", r.status_code == 200,
                  str(r.status_code))
    finally:
        for srv in servers:
            srv.stop()
        if os.environ.get("KEEP") != "1":
            subprocess.run(["rm", "-rf", work])
        else:
            print(f"kept {work}")
    for f in FAILED:
        print(f"  failed: {f}")
    print(f"{PASSED} passed, {len(FAILED)} failed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
