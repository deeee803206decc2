#!/usr/bin/env python3
"""A TCP relay that stands in for a wide-area link in front of an upstream registry.

Usage: wan_relay.py LISTEN_PORT TARGET_PORT MB_PER_S [CONNECT_MS]

Every byte from the target back to the clients shares one token bucket of MB_PER_S
(MiB/s), as the clients of one site share its link to Docker Hub; requests go through
unthrottled. Each new connection waits CONNECT_MS first (a round trip to a distant host).
"""

import asyncio
import sys
import time

CHUNK = 64 * 1024


class Link:
    def __init__(self, rate):
        self.rate = rate
        self.free_at = time.monotonic()

    async def take(self, n):
        now = time.monotonic()
        start = max(now, self.free_at)
        self.free_at = start + n / self.rate
        if self.free_at - now > 0.001:
            await asyncio.sleep(self.free_at - now)


async def pump(reader, writer, link):
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            if link:
                await link.take(len(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    listen, target, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    connect_ms = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    link = Link(rate * 1024 * 1024)

    async def handle(creader, cwriter):
        await asyncio.sleep(connect_ms / 1000)
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(pump(creader, uwriter, None), pump(ureader, cwriter, link))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


asyncio.run(main())
