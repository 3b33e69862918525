"""The load generator: a raw asyncio HTTP/1.1 keep-alive client that records every request's latency.

It runs in its own process (``python -m bench.load SPEC_JSON``) so its CPU is never charged to
the system under test. Each phase is bounded twice: a fixed request count and a time cap.
Requests are not pipelined: each of ``concurrency`` connections sends one request, reads the
whole answer, then sends the next (the way agents and SDK clients use a gateway).

Progress lines ``CKPT <completed>`` are printed every ``checkpoint_every`` answers (the
orchestrator samples the server's memory on them); the last line is ``RESULT <json>``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import cast

from .http1 import BodyFramer, Head, MalformedHTTP, parse_head
from .proc import pin_to_cpu

__all__ = ["LoadResult", "LoadSpec", "build_request", "percentile", "run_load"]

GRACE_S = 5.0  # past the time cap, connections still waiting are closed and counted as errors


@dataclass
class LoadSpec:
    host: str
    port: int
    path: str = "/v1/chat/completions"
    body: str = ""
    method: str = "POST"
    stream: bool = False
    concurrency: int = 1
    requests: int = 1000
    time_cap_s: float = 10.0
    checkpoint_every: int = 0
    warmup: int = 0  # requests sent first on the same connections, not measured
    headers: dict[str, str] = field(default_factory=dict)
    cpu: int | None = None


@dataclass
class LoadResult:
    requests: int  # answered with 2xx
    errors: int  # non-2xx, broken connections, timeouts
    statuses: dict[str, int]
    elapsed_s: float
    rps: float
    capped: bool  # the time cap ended the phase before the request count
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    loadgen_cpu_pct: float  # of one core, over the phase: near 100 means the client is the limit
    ttfc_p50_ms: float = 0.0
    ttfc_p95_ms: float = 0.0
    ttfc_p99_ms: float = 0.0
    events_per_stream: float = 0.0
    bursts_per_stream: float = 0.0  # reads that delivered at least one whole SSE event
    event_p50_ms: list[float] = field(default_factory=list)  # per event index: p50 arrival since send


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(q / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def build_request(spec: LoadSpec) -> bytes:
    body = spec.body.encode()
    lines = [f"{spec.method} {spec.path} HTTP/1.1", f"Host: {spec.host}:{spec.port}"]
    if spec.method in ("POST", "PUT"):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in spec.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Conn(asyncio.Protocol):
    """One keep-alive client connection; ``send`` returns a future resolved with the status code."""

    def __init__(self, stream: bool) -> None:
        self.stream = stream
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.fut: asyncio.Future[int] | None = None
        self.buf = bytearray()
        self.head: Head | None = None
        self.framer: BodyFramer | None = None
        self.events: list[int] = []  # arrival time (ns) of each SSE event of the current answer
        self.bursts = 0
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.fut is not None and not self.fut.done():
            if self.framer is not None and self.framer.mode == "close" and self.head is not None:
                self.fut.set_result(int(self.head.start[1]))
            else:
                self.fut.set_exception(ConnectionError("connection lost mid-answer"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, raw: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self.fut = asyncio.get_running_loop().create_future()
        self.head, self.framer = None, None
        self.events = []
        self.bursts = 0
        self._tail = b""
        self.buf.clear()
        self.transport.write(raw)
        return self.fut

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        try:
            if self.head is None:
                self.buf += data
                self.head = parse_head(self.buf)
                if self.head is None:
                    return
                self.framer = BodyFramer(self.head.headers, response=True)
                data = bytes(self.buf[self.head.size :])
                self.buf.clear()
            assert self.framer is not None
            _, parts = self.framer.feed(data, collect=self.stream)
        except (MalformedHTTP, ValueError) as exc:
            if self.fut is not None and not self.fut.done():
                self.fut.set_exception(exc)
            if self.transport is not None:
                self.transport.close()
            return
        if self.stream and parts:
            payload = self._tail + b"".join(parts)
            n = payload.count(b"\n\n")
            self._tail = payload[-1:]
            if n:
                self.events.extend([now] * n)
                self.bursts += 1
        if self.framer.done and self.fut is not None and not self.fut.done():
            self.fut.set_result(int(self.head.start[1]))
            if not self.head.keep_alive and self.transport is not None:
                self.transport.close()


async def run_load(spec: LoadSpec) -> LoadResult:
    """Run one phase (after its unmeasured warm-up) and return its summary, latencies in milliseconds."""
    loop = asyncio.get_running_loop()
    raw = build_request(spec)
    lat: list[int] = []
    ttfc: list[int] = []
    per_event: list[list[int]] = []
    events_total = bursts_total = 0
    statuses: dict[str, int] = {}
    errors = 0
    issued = 0
    limit = spec.warmup
    measuring = False
    conns: list[_Conn] = []
    held: list[_Conn | None] = [None] * spec.concurrency  # each worker keeps its connection across stages
    deadline = time.perf_counter() + spec.time_cap_s
    next_ckpt = spec.checkpoint_every or 0

    async def connect() -> _Conn | None:
        try:
            _, c = await loop.create_connection(lambda: _Conn(spec.stream), spec.host, spec.port)
        except OSError:
            return None
        conns.append(c)
        return c

    async def worker(w: int) -> None:
        nonlocal issued, errors, events_total, bursts_total, next_ckpt
        while issued < limit and time.perf_counter() < deadline:
            conn = held[w]
            if conn is None or conn.transport is None:
                conn = held[w] = await connect()
                if conn is None:
                    errors += measuring
                    await asyncio.sleep(0.01)
                    continue
            issued += 1
            t0 = time.perf_counter_ns()
            try:
                status = await conn.send(raw)
            except (ConnectionError, MalformedHTTP, ValueError, RuntimeError):
                errors += measuring
                held[w] = None
                continue
            t1 = time.perf_counter_ns()
            if not measuring:
                continue
            key = str(status)
            statuses[key] = statuses.get(key, 0) + 1
            if not 200 <= status < 300:
                errors += 1
                continue
            lat.append(t1 - t0)
            if spec.stream and conn.events:
                ttfc.append(conn.events[0] - t0)
                events_total += len(conn.events)
                bursts_total += conn.bursts
                for i, t in enumerate(conn.events):
                    if i == len(per_event):
                        per_event.append([])
                    per_event[i].append(t - t0)
            if next_ckpt and len(lat) >= next_ckpt:
                print(f"CKPT {len(lat)}", flush=True)
                next_ckpt += spec.checkpoint_every

    async def watchdog() -> None:
        # The time cap also bounds a server that stops answering: close whatever still waits.
        await asyncio.sleep(max(0.0, deadline - time.perf_counter()) + GRACE_S)
        for c in conns:
            if c.transport is not None:
                c.transport.abort()

    dog = loop.create_task(watchdog())
    try:
        if spec.warmup:
            await asyncio.gather(*(worker(w) for w in range(spec.concurrency)))
        issued, limit, measuring = 0, spec.requests, True
        t_start = time.perf_counter()
        cpu0 = _cpu()
        await asyncio.gather(*(worker(w) for w in range(spec.concurrency)))
    finally:
        dog.cancel()
        for c in conns:
            if c.transport is not None:
                c.transport.close()
    elapsed = time.perf_counter() - t_start
    cpu_pct = 100.0 * (_cpu() - cpu0) / elapsed if elapsed > 0 else 0.0
    ms = sorted(x / 1e6 for x in lat)
    ttfc_ms = sorted(x / 1e6 for x in ttfc)
    n = len(ms)
    return LoadResult(
        requests=n,
        errors=errors,
        statuses=statuses,
        elapsed_s=elapsed,
        rps=n / elapsed if elapsed > 0 else 0.0,
        capped=issued < spec.requests,
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
        mean_ms=sum(ms) / n if n else 0.0,
        max_ms=ms[-1] if ms else 0.0,
        loadgen_cpu_pct=cpu_pct,
        ttfc_p50_ms=percentile(ttfc_ms, 50),
        ttfc_p95_ms=percentile(ttfc_ms, 95),
        ttfc_p99_ms=percentile(ttfc_ms, 99),
        events_per_stream=events_total / len(ttfc) if ttfc else 0.0,
        bursts_per_stream=bursts_total / len(ttfc) if ttfc else 0.0,
        event_p50_ms=[percentile(sorted(x / 1e6 for x in col), 50) for col in per_event],
    )


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.load SPEC_JSON", file=sys.stderr)
        return 2
    spec = LoadSpec(**json.loads(args[0]))
    pin_to_cpu(spec.cpu)
    result = asyncio.run(run_load(spec))
    print("RESULT " + json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
