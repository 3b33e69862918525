"""Failover: how fast routing leaves a backend that misbehaves, and what callers wait meanwhile.

One role, a primary and a fallback on two hosts, callers sending chat requests non-stop through
the real gateway (in this process, on this loop). After a warm-up the primary is made to fail in
one of five ways:

- ``frozen``: the primary's process is SIGSTOPped: its kernel still accepts connections, nothing answers;
- ``link down``: the primary's host is a network namespace whose link loses carrier (needs root);
- ``killed``: the primary's process is SIGKILLed;
- ``slow start``: the primary restarts and answers 503 ``Loading model`` (llama.cpp's words) for
  the whole window, as a big model would while it loads;
- ``full primary``: the primary (one slot) holds each request for seconds, like a long generation;
  the role has ``spill_after_ms``, so waiting callers spill to the idle fallback.

Per fault: the time from the fault to the first request answered by the fallback, the worst caller
latency among requests sent in the window after the fault, and the errors callers saw. Budgets
(issue 8): frozen or unplugged -> fallback serving within health interval + 1 s; no request waits
longer than connect timeout + queue wait (here: + one health interval for a frozen backend, whose
requests are cancelled when the probe fails) while a fallback is ready.

``python -m bench.failover [--seconds 30] [--markdown PATH]``; ``bench.run`` can run it too
(``run_failover``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from forge_tui.config import Catalog
from forge_tui.gateway import Gateway
from forge_tui.state import RoutingState
from forge_tui.telemetry import Telemetry

from .proc import pin_to_cpu
from .run import REPO, Server, _child_env, _read_listening

__all__ = ["FAULTS", "FaultResult", "markdown", "run_failover", "table"]

FAULTS = ("frozen", "link down", "killed", "slow start", "full primary")
HEALTH_INTERVAL_S = 2.0
CONNECT_TIMEOUT_S = 2.0
QUEUE_TIMEOUT_S = 30.0
SPILL_AFTER_MS = 250
CALLERS = 4
WARMUP_S = 2.0
HOLD_S = 3.0  # full primary: how long the primary holds each request
CHAT = json.dumps({"model": "default-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})


@dataclass
class FaultResult:
    fault: str
    to_fallback_s: float | None  # fault -> first answer from the fallback
    worst_latency_s: float  # among requests sent after the fault, within the window
    worst_fallback_s: float  # the same, among those the fallback answered
    requests: int
    errors: int
    budget_s: float
    note: str = ""
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.to_fallback_s is not None and self.to_fallback_s <= self.budget_s


# ------------------------------------------------------------------ backends
async def _upstream(argv_prefix: list[str], host: str = "127.0.0.1", port: int = 0) -> Server:
    proc = await asyncio.create_subprocess_exec(
        *argv_prefix,
        sys.executable,
        "-m",
        "bench.upstream",
        "--host",
        host,
        "--port",
        str(port),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=str(REPO),
        env=_child_env(),
    )
    return Server("upstream", proc, await _read_listening(proc))


class _Scripted(asyncio.Protocol):
    """A stand-in primary for the two faults a fast upstream cannot play: 503 Loading model on every
    path (a slow start), or each request held ``hold_s`` before a small answer (a long generation)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.buf = b""
        self.t: asyncio.Transport | None = None
        self.tasks: set[asyncio.Future[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
            if len(rest) < n:
                return
            self.buf = rest[n:]
            task = asyncio.ensure_future(self._answer(head.split(b" ")[1]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _answer(self, path: bytes) -> None:
        if self.mode == "loading":
            body = b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}'
            status = b"503 Service Unavailable"
        elif path == b"/health":
            body, status = b'{"status":"ok"}', b"200 OK"
        else:
            await asyncio.sleep(HOLD_S)
            body = json.dumps(
                {
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "slow"}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                }
            ).encode()
            status = b"200 OK"
        if self.t is not None and not self.t.is_closing():
            self.t.write(
                b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (status, len(body), body)
            )


async def _scripted(mode: str, port: int = 0) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Scripted(mode), "127.0.0.1", port, reuse_address=True)


# ------------------------------------------------------------------ the gateway and its callers
def _catalog(primary: str, fallback: str, primary_host: str, slots: int) -> Catalog:
    def backend(host: str, url: str, cap: int) -> dict[str, Any]:
        return {
            "host": host,
            "kind": "llama-server",
            "base_url": url,
            "max_concurrency": cap,
            "queue_limit": 64,
            "queue_timeout_s": QUEUE_TIMEOUT_S,
            "warmup_timeout_s": 60,
            "request_timeout_s": 120,
            "connect_timeout_s": CONNECT_TIMEOUT_S,
        }

    host = {"platform": "cpu", "memory_budget_gb": 8, "transport": "local"}
    return Catalog.model_validate(
        {
            "gateway": {"health_interval_s": HEALTH_INTERVAL_S, "history": False},
            "hosts": {"alpha": {"address": primary_host, **host}, "beta": {"address": "127.0.0.1", **host}},
            "backends": {"a": backend("alpha", primary, slots), "b": backend("beta", fallback, 16)},
            "families": {"plain": {"thinking": "none"}},
            "models": {
                "primary": {"family": "plain", "architecture": "gemma3", "placements": [{"backend": "a"}]},
                "spare": {"family": "plain", "architecture": "gemma3", "placements": [{"backend": "b"}]},
            },
            "roles": {"default-chat": {"model": "primary", "fallbacks": ["spare"], "spill_after_ms": SPILL_AFTER_MS}},
        }
    )


@dataclass
class _Call:
    sent: float
    done: float
    status: int
    backend: str


async def _callers(url: str, stop: asyncio.Event, calls: list[_Call]) -> None:
    timeout = aiohttp.ClientTimeout(total=180)
    async with aiohttp.ClientSession(timeout=timeout) as s:

        async def one() -> None:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    async with s.post(
                        url + "/v1/chat/completions", data=CHAT, headers={"Content-Type": "application/json"}
                    ) as r:
                        await r.read()
                        route = r.headers.get("x-forge-route", "")
                        be = next((p.split("=", 1)[1] for p in route.split("; ") if p.startswith("backend=")), "")
                        calls.append(_Call(t0, time.monotonic(), r.status, be))
                except (aiohttp.ClientError, TimeoutError):
                    calls.append(_Call(t0, time.monotonic(), 0, ""))
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(one() for _ in range(CALLERS)))


async def _measure(
    fault: str,
    catalog: Catalog,
    inject: Callable[[], Awaitable[None]],
    window_s: float,
    budget_s: float,
    note: str = "",
    warmup_s: float = WARMUP_S,
) -> FaultResult:
    state = RoutingState(catalog, None)
    tel = Telemetry(None)
    await tel.start()
    gw = Gateway(catalog, state, telemetry=tel)
    await gw.start("127.0.0.1", 0)
    calls: list[_Call] = []
    stop = asyncio.Event()
    load = asyncio.ensure_future(_callers(gw.url, stop, calls))
    try:
        await asyncio.sleep(warmup_s)
        t_fault = time.monotonic()
        await inject()
        await asyncio.sleep(window_s)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(load, 200)
        finally:
            await gw.stop(drain_timeout=1)
            await tel.close()
    after = [c for c in calls if c.sent >= t_fault or c.done >= t_fault]
    window = [c for c in after if c.sent <= t_fault + window_s]
    fb = [c.done - t_fault for c in after if c.backend == "b" and c.status == 200]
    statuses: dict[int, int] = {}
    for c in window:
        statuses[c.status] = statuses.get(c.status, 0) + 1
    return FaultResult(
        fault=fault,
        to_fallback_s=min(fb) if fb else None,
        worst_latency_s=max((c.done - c.sent for c in window), default=0.0),
        worst_fallback_s=max((c.done - c.sent for c in window if c.backend == "b"), default=0.0),
        requests=len(window),
        errors=sum(1 for c in window if c.status != 200),
        budget_s=budget_s,
        note=note,
        statuses=statuses,
    )


# ------------------------------------------------------------------ the faults
async def run_failover(window_s: float = 30.0, log: Callable[[str], None] = print) -> list[FaultResult]:
    out: list[FaultResult] = []
    fallback = await _upstream([])
    fb_url = f"http://127.0.0.1:{fallback.port}"
    try:
        for fault in FAULTS:
            log(f"failover: {fault} ...")
            res = await _one(fault, fb_url, window_s)
            log(
                f"failover: {fault}: to fallback {res.to_fallback_s if res.to_fallback_s is not None else '-'} s, "
                f"worst {res.worst_latency_s:.2f} s, {res.errors} errors of {res.requests}"
            )
            out.append(res)
    finally:
        await fallback.stop()
    return out


async def _one(fault: str, fb_url: str, window_s: float) -> FaultResult:
    probe_budget = HEALTH_INTERVAL_S + 1.0
    if fault in ("frozen", "killed"):
        primary = await _upstream([])
        try:
            cat = _catalog(f"http://127.0.0.1:{primary.port}", fb_url, "127.0.0.1", 16)

            async def inject() -> None:
                if fault == "frozen":
                    primary.pause()
                else:
                    primary.proc.send_signal(signal.SIGKILL)

            budget = probe_budget if fault == "frozen" else CONNECT_TIMEOUT_S
            return await _measure(fault, cat, inject, window_s, budget)
        finally:
            await primary.stop()
    if fault == "link down":
        return await _link_down(fb_url, window_s, probe_budget)
    if fault == "slow start":
        primary = await _upstream([])
        port = primary.port
        loading: list[asyncio.Server] = []
        try:
            cat = _catalog(f"http://127.0.0.1:{port}", fb_url, "127.0.0.1", 16)

            async def restart_loading() -> None:
                await primary.stop()  # it goes away, and comes back loading for the whole window
                loading.append(await _scripted("loading", port))

            return await _measure(fault, cat, restart_loading, window_s, CONNECT_TIMEOUT_S)
        finally:
            for s in loading:
                s.close()
            await primary.stop()
    # full primary: one slot, each request held HOLD_S; the fault is the traffic itself
    slow = await _scripted("hold")
    try:
        port = slow.sockets[0].getsockname()[1]
        cat = _catalog(f"http://127.0.0.1:{port}", fb_url, "127.0.0.1", 1)

        async def nothing() -> None:
            return None

        # The fault is the traffic itself: it starts full, so it is measured from the first request.
        return await _measure(
            fault,
            cat,
            nothing,
            window_s,
            SPILL_AFTER_MS / 1000 + 1.0,
            note=f"1 slot held {HOLD_S:g} s per request, spill_after_ms {SPILL_AFTER_MS}",
            warmup_s=0.0,
        )
    finally:
        slow.close()


async def _link_down(fb_url: str, window_s: float, budget: float) -> FaultResult:
    import os

    if os.geteuid() != 0:
        return FaultResult("link down", None, 0.0, 0.0, 0, 0, budget, note="skipped: network namespaces need root")
    sys.path.insert(0, str(REPO))
    from tests.support.netns import NetnsLab  # the project's own namespaces (a veth pair, a /30)

    lab = NetnsLab(prefix=f"fo{os.getpid() % 10000}")
    primary: Server | None = None
    try:
        ns = lab.add()
        primary = await _upstream(["ip", "netns", "exec", ns.name], host=ns.inner_ip, port=8080)
        cat = _catalog(f"http://{ns.inner_ip}:8080", fb_url, ns.inner_ip, 16)

        async def unplug() -> None:
            # Carrier lost on the host's side: the root side keeps its route, packets just vanish.
            subprocess.run(ns.exec_argv("ip", "link", "set", ns.inner_if, "down"), check=True)

        return await _measure("link down", cat, unplug, window_s, budget)
    finally:
        if primary is not None:
            primary.proc.kill()
            await primary.proc.wait()
        lab.teardown()


# ------------------------------------------------------------------ output
def table(results: list[FaultResult], window_s: float) -> str:
    rows = [
        f"{'fault':<14} {'to fallback (s)':>16} {'budget (s)':>11} {f'worst latency, first {window_s:g} s':>30} "
        f"{'worst via fallback':>19} {'requests':>9} {'errors':>7}  note"
    ]
    for r in results:
        tf = f"{r.to_fallback_s:.2f}" if r.to_fallback_s is not None else "-"
        rows.append(
            f"{r.fault:<14} {tf:>16} {r.budget_s:>11.2f} {r.worst_latency_s:>30.2f} {r.worst_fallback_s:>19.2f} "
            f"{r.requests:>9} {r.errors:>7}  {r.note}"
        )
    return "\n".join(rows)


def markdown(results: list[FaultResult], window_s: float) -> str:
    lines = [
        "## Failover",
        "",
        f"`python -m bench.failover --seconds {window_s:g}`: {CALLERS} callers non-stop through the gateway, a primary "
        f"and a fallback (`bench.upstream`), health interval {HEALTH_INTERVAL_S:g} s, connect timeout "
        f"{CONNECT_TIMEOUT_S:g} s, spill_after_ms {SPILL_AFTER_MS}. Budgets: frozen or unplugged -> fallback within "
        "health interval + 1 s; killed / slow start -> within the connect timeout; full primary -> within "
        "spill_after_ms + 1 s.",
        "",
        "| fault | fault -> first answer by the fallback (s) | budget (s) | worst caller latency, "
        f"first {window_s:g} s (s) | worst, answered by the fallback (s) | requests | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        tf = f"{r.to_fallback_s:.2f}" if r.to_fallback_s is not None else "-"
        lines.append(
            f"| {r.fault}{f' ({r.note})' if r.note else ''} | {tf} | {r.budget_s:.2f} | {r.worst_latency_s:.2f} "
            f"| {r.worst_fallback_s:.2f} | {r.requests} | {r.errors} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    ap.add_argument("--seconds", type=float, default=30.0, help="window after each fault")
    ap.add_argument("--markdown", metavar="PATH", help="append the table as a Markdown section to this file")
    ap.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = ap.parse_args(argv)
    pin_to_cpu(args.cpu)
    results = asyncio.run(run_failover(args.seconds, log=lambda m: print(m, file=sys.stderr, flush=True)))
    print(table(results, args.seconds))
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write("\n" + markdown(results, args.seconds))
    return 0 if all(r.ok or r.note.startswith("skipped") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
