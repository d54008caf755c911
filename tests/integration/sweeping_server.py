"""A df-server whose janitor sweeps the payload objects nothing holds with no grace, round
after round (``python -m tests.integration.sweeping_server URL``): crash tests kill it by its
PID in the middle of a sweep."""

from __future__ import annotations

import asyncio
import logging
import sys

from durablefuture.server import Server, ServerOptions


async def main(url: str) -> None:
    # what it deleted, in its log (a test prints it when it fails)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    logging.getLogger("durablefuture.transport.payload_gc").setLevel(logging.DEBUG)
    server = await Server.connect(url, ServerOptions(payload_grace=0.0, compact_interval=0.01))
    await server.start()
    await server.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
