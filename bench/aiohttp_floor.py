"""A reference point, not a product: the thinnest forwarding proxy written with aiohttp.

aiohttp's web server on one side, one ``aiohttp.ClientSession`` (keep-alive pool) on the
other, and nothing in between: no routing, no JSON, no telemetry. It measures what the
framework itself costs per request, so the gateway's figure can be split into "aiohttp" and
"forge's own work". SSE answers are relayed chunk by chunk as they arrive.

``python -m bench.aiohttp_floor --upstream 127.0.0.1:PORT [--port 0] [--cpu N]`` prints
``LISTENING <host> <port>`` and stops on SIGTERM or when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web

from .proc import pin_to_cpu, serve_until_stopped

__all__ = ["start_aiohttp_floor"]


async def start_aiohttp_floor(upstream: str, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
    base = f"http://{upstream}"

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with session.request(request.method, base + request.path_qs, data=body, headers=headers) as up:
            ctype = up.headers.get("Content-Type", "application/json")
            if "text/event-stream" not in ctype:
                return web.Response(status=up.status, body=await up.read(), headers={"Content-Type": ctype})
            out = web.StreamResponse(status=up.status, headers={"Content-Type": ctype, "Cache-Control": "no-cache"})
            await out.prepare(request)
            async for chunk in up.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    server = site._server  # the asyncio.Server, for its socket and close()
    assert isinstance(server, asyncio.Server)
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.aiohttp_floor", description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the upstream")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = ap.parse_args(argv)
    pin_to_cpu(args.cpu)
    return serve_until_stopped(lambda: start_aiohttp_floor(args.upstream, args.host, args.port))


if __name__ == "__main__":
    raise SystemExit(main())
