#!/usr/bin/env python3
"""A tiny TCP round-robin load balancer for the replica tests.

    lb.py LISTEN_PORT BACKEND_PORT...

Each new connection goes to the next backend (127.0.0.1:PORT) in turn; a backend that
refuses the connection is skipped, so killing one replica leaves the others serving. Bytes
are copied both ways until either side closes.
"""
import itertools
import socket
import sys
import threading


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def serve(client, backends, turn, lock):
    with lock:
        start = next(turn)
    for i in range(len(backends)):
        port = backends[(start + i) % len(backends)]
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
            upstream.settimeout(None)
            break
        except OSError:
            continue
    else:
        client.close()
        return
    t = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
    t.start()
    pipe(client, upstream)
    t.join()
    client.close()
    upstream.close()


def main():
    listen = int(sys.argv[1])
    backends = [int(p) for p in sys.argv[2:]]
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen))
    server.listen(128)
    turn, lock = itertools.count(), threading.Lock()
    print("lb ready", flush=True)
    while True:
        client, _ = server.accept()
        threading.Thread(target=serve, args=(client, backends, turn, lock), daemon=True).start()


if __name__ == "__main__":
    main()
