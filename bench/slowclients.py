"""Slow clients: does a good client's latency hold while hundreds of connections trickle their headers?

The gateway (``forge-tui serve``, its own process) in front of the fast upstream. The good client is
the benchmark's load generator at concurrency 8 from 127.0.0.1. The attackers open ``SLOW`` connections
from 127.0.0.2 (another address, as an attacker would be) and send one header byte a second without
ever finishing the request head. Measured:

- the good client's p50/p99 before the attack and during it (the figure that must not move);
- how many attacking connections the per-address cap refused (answered 429 and closed);
- how many the gateway closed itself within the window (its header/idle timeout), out of those admitted.

``python -m bench.slowclients [--slow 400] [--window 35]``; ``bench.run`` runs it with ``--slow-clients``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .catalog import write_catalog
from .load import LoadSpec
from .run import _chat_body, _free_port, run_phase, start_bench_process, start_gateway

__all__ = ["SlowResult", "markdown", "run_slow_clients"]

GOOD_CONCURRENCY = 8
GOOD_REQUESTS = 3000
SLOW_SOURCE = "127.0.0.2"


@dataclass
class SlowResult:
    slow_connections: int
    window_s: float
    good_p50_ms_before: float
    good_p99_ms_before: float
    good_p50_ms_during: float
    good_p99_ms_during: float
    good_errors_during: int
    refused_by_cap: int  # answered 429 at once
    closed_by_gateway: int  # admitted, then closed by the header/idle timeout within the window
    still_open: int  # admitted and still trickling when the window ended


async def _trickle(port: int, until: float, tally: dict[str, int]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(SLOW_SOURCE, 0))
    except OSError:
        tally["connect_failed"] += 1
        return
    head = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4000
    i = 0
    outcome = "still_open"
    try:
        while time.perf_counter() < until:
            writer.write(head[i : i + 1])
            i = (i + 1) % len(head)
            try:
                got = await asyncio.wait_for(reader.read(4096), 1.0)
            except TimeoutError:
                continue
            outcome = "refused_by_cap" if got.startswith(b"HTTP/1.1 429") else "closed_by_gateway"
            break
    except OSError:
        outcome = "closed_by_gateway"
    finally:
        writer.close()
    tally[outcome] += 1


async def _good_phase(port: int) -> dict[str, Any]:
    spec = LoadSpec(
        host="127.0.0.1",
        port=port,
        body=_chat_body(False),
        concurrency=GOOD_CONCURRENCY,
        requests=GOOD_REQUESTS,
        time_cap_s=30.0,
        warmup=100,
    )
    return await run_phase(spec)


async def run_slow_clients(slow: int = 400, window_s: float = 35.0, log: Callable[[str], None] = print) -> SlowResult:
    """``window_s`` should exceed the gateway's idle timeout (30 s by default) to see it cut connections."""
    with tempfile.TemporaryDirectory(prefix="forge-slow-") as tmp:
        work = Path(tmp)
        upstream = await start_bench_process("direct", "bench.upstream", [], None)
        gw = None
        try:
            port = _free_port()
            cfg = write_catalog(work / "forge.yaml", f"http://127.0.0.1:{upstream.port}", work / "state", port)
            gw = await start_gateway(cfg, port, None, work)
            before = await _good_phase(port)
            log(f"slow clients: good client before: p50 {before['p50_ms']:.3f} ms, p99 {before['p99_ms']:.3f} ms")
            tally = {"refused_by_cap": 0, "closed_by_gateway": 0, "still_open": 0, "connect_failed": 0}
            until = time.perf_counter() + window_s
            tasks = [asyncio.create_task(_trickle(port, until, tally)) for _ in range(slow)]
            await asyncio.sleep(1.0)  # the attack is in place before the good client measures
            during = await _good_phase(port)
            await asyncio.gather(*tasks)
        finally:
            if gw is not None:
                await gw.stop()
            await upstream.stop()
    res = SlowResult(
        slow_connections=slow,
        window_s=window_s,
        good_p50_ms_before=float(before["p50_ms"]),
        good_p99_ms_before=float(before["p99_ms"]),
        good_p50_ms_during=float(during["p50_ms"]),
        good_p99_ms_during=float(during["p99_ms"]),
        good_errors_during=int(during["errors"]),
        refused_by_cap=tally["refused_by_cap"],
        closed_by_gateway=tally["closed_by_gateway"],
        still_open=tally["still_open"] + tally["connect_failed"],
    )
    log(
        f"slow clients: during {slow} trickling connections: p50 {res.good_p50_ms_during:.3f} ms, "
        f"p99 {res.good_p99_ms_during:.3f} ms; refused by the cap {res.refused_by_cap}, "
        f"cut by the timeout {res.closed_by_gateway}, still open {res.still_open}"
    )
    return res


def markdown(r: SlowResult) -> str:
    return "\n".join(
        [
            f"### Slow clients ({r.slow_connections} connections trickling header bytes from another address, "
            f"{r.window_s:.0f} s)",
            "",
            "| good client (c8) | p50 ms | p99 ms |",
            "|---|---|---|",
            f"| before | {r.good_p50_ms_before:.3f} | {r.good_p99_ms_before:.3f} |",
            f"| during | {r.good_p50_ms_during:.3f} | {r.good_p99_ms_during:.3f} |",
            "",
            f"Refused by the per-address cap: {r.refused_by_cap}; closed by the header/idle timeout: "
            f"{r.closed_by_gateway}; still open at the end: {r.still_open}; good-client errors: "
            f"{r.good_errors_during}.",
            "",
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.slowclients")
    ap.add_argument("--slow", type=int, default=400, help="attacking connections (default 400)")
    ap.add_argument("--window", type=float, default=35.0, help="seconds the attack lasts (default 35)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    res = asyncio.run(run_slow_clients(args.slow, args.window))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(res), indent=2))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
