"""A stand-in for llama-swap, the Go binary (mostlygeek/llama-swap), which no registry here carries.

It stands in for the Go binary only; the model processes behind it are real (``cmd`` starts a real
llama.cpp server, e.g. ``python -m forge_tui.launch serve ...``). Behaviour follows llama-swap's
own source at v250 (proxy/process.go, proxymanager*.go) as summarised in ../shared/docs/UPSTREAMS.md:

- one process per model, started on demand by its ``cmd`` (``${PORT}`` substituted), first health
  check after 250 ms on ``checkEndpoint`` then every ``health_check_interval`` up to
  ``health_check_timeout``; asking for another model stops the running one (no groups: one at a time);
- states ``stopped`` -> ``starting`` -> ``ready`` -> ``stopping`` -> ``stopped`` (``shutdown`` at exit);
- requests for a starting model queue until the start ends; a failed start answers each of them
  ``502`` text/plain ``unable to start process: upstream command exited prematurely but successfully``
  (the Go text: a process that exits while starting is forced to ``stopped``), while the process's own
  output (llama.cpp's log lines) goes only to the log history, ``GET /logs``;
- past ``concurrencyLimit`` (default 10) in flight: ``429`` ``Too many requests``;
- ``GET /health`` -> ``OK``; ``GET /running``; ``GET /v1/models`` (the config's models); ``GET /api/version``; ``GET /logs`` (text history);
  ``POST /api/models/unload`` and ``/api/models/unload/{model}``, ``GET /unload``; ``/upstream/{model}/...``;
- the OpenAI endpoints are proxied to the model's server, ``aliases`` resolved, ``useModelName``
  rewriting the body's model; an unknown model is ``400 could not find real modelID for X``.

Deliberate difference: the health-check interval is a parameter (the Go build checks every 5 s)
so tests do not wait on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import json
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from forge_tui.launch import free_port

__all__ = ["LlamaSwapStandin", "SwapModel"]

_START_FAILED = "upstream command exited prematurely but successfully"


@dataclass
class SwapModel:
    cmd: list[str]  # argv; "${PORT}" is replaced by the port llama-swap assigns
    aliases: tuple[str, ...] = ()
    use_model_name: str | None = None
    check_endpoint: str = "/health"
    concurrency_limit: int = 10
    ttl: int = 0
    name: str = ""
    description: str = ""


class _StartError(Exception):
    pass


@dataclass
class _Process:
    id: str
    cfg: SwapModel
    port: int
    state: str = "stopped"
    proc: asyncio.subprocess.Process | None = None
    start_task: asyncio.Task[None] | None = None
    waiter: asyncio.Task[None] | None = None
    inflight: int = 0
    argv: list[str] = field(default_factory=list)

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class LlamaSwapStandin:
    def __init__(
        self,
        models: dict[str, SwapModel],
        *,
        health_check_timeout: float = 120.0,
        health_check_interval: float = 0.25,
        log_lines: int = 5000,
    ) -> None:
        self.procs = {mid: _Process(mid, cfg, free_port()) for mid, cfg in models.items()}
        self.health_check_timeout = health_check_timeout
        self.health_check_interval = health_check_interval
        self.log: deque[str] = deque(maxlen=log_lines)
        self.port = 0
        self.started_at = time.time()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._swap_lock = asyncio.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> LlamaSwapStandin:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.add_routes(
            [
                web.get("/health", self._health),
                web.get("/running", self._running),
                web.get("/v1/models", self._models),
                web.get("/api/version", self._version),
                web.get("/logs", self._logs),
                web.post("/api/models/unload", self._unload_all),
                web.post("/api/models/unload/{model}", self._unload_one),
                web.get("/unload", self._unload_all),
                web.route("*", "/upstream/{model}/{path:.*}", self._upstream),
                web.post("/v1/chat/completions", self._oai),
                web.post("/v1/completions", self._oai),
                web.post("/v1/embeddings", self._oai),
                web.post("/v1/audio/transcriptions", self._oai),
            ]
        )
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._proxy_log(f"llama-swap stand-in listening on {self.url}")
        return self

    async def stop(self) -> None:
        for p in self.procs.values():
            await self._stop_process(p)
            p.state = "shutdown"
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------ logs
    def _proxy_log(self, line: str) -> None:
        self.log.append(f"[INFO] {line}")

    async def _pump(self, p: _Process) -> None:
        assert p.proc is not None and p.proc.stdout is not None
        while True:
            line = await p.proc.stdout.readline()
            if not line:
                return
            self.log.append(line.decode("utf-8", "replace").rstrip("\n"))

    # ------------------------------------------------------------------ processes
    def _resolve(self, requested: str) -> _Process | None:
        if requested in self.procs:
            return self.procs[requested]
        for p in self.procs.values():
            if requested in p.cfg.aliases:
                return p
        return None

    async def _ensure_ready(self, p: _Process) -> None:
        if p.state == "ready":
            return
        async with self._swap_lock:
            if p.state == "ready":
                return
            if p.state != "starting":
                for other in self.procs.values():
                    if other is not p and other.state in ("ready", "starting"):
                        await self._stop_process(other)
                p.state = "starting"
                p.start_task = asyncio.get_running_loop().create_task(self._start(p))
        assert p.start_task is not None
        await asyncio.shield(p.start_task)

    async def _start(self, p: _Process) -> None:
        p.argv = [a.replace("${PORT}", str(p.port)) for a in p.cfg.cmd]
        self._proxy_log(f"<{p.id}> Executing start command: {' '.join(p.argv)}")
        try:
            p.proc = await asyncio.create_subprocess_exec(
                *p.argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            p.state = "stopped"
            raise _StartError(f"start() failed for command '{' '.join(p.argv)}': {exc}") from None
        p.waiter = asyncio.get_running_loop().create_task(self._wait_exit(p, p.proc))
        await asyncio.sleep(0.25)  # llama-swap gives the process a moment before the first check
        began = time.monotonic()
        assert self._session is not None
        while True:
            if p.state != "starting":
                if p.state == "stopped":
                    raise _StartError(_START_FAILED)
                raise _StartError("health check interrupted due to shutdown")
            if time.monotonic() - began > self.health_check_timeout:
                await self._stop_process(p)
                raise _StartError(f"health check timed out after {self.health_check_timeout:g}s")
            try:
                async with self._session.get(
                    p.proxy + p.cfg.check_endpoint, timeout=aiohttp.ClientTimeout(total=5, sock_connect=0.5)
                ) as r:
                    if r.status == 200:
                        break
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(self.health_check_interval)
        p.state = "ready"
        self._proxy_log(f"<{p.id}> Health check passed on {p.proxy}{p.cfg.check_endpoint}")

    async def _wait_exit(self, p: _Process, proc: asyncio.subprocess.Process) -> None:
        pump = asyncio.get_running_loop().create_task(self._pump(p))
        code = await proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pump, 5)  # all of its output is in the log before the state changes
        if p.state != "stopping":
            self._proxy_log(f"<{p.id}> process exited but not StateStopping, current state: {p.state} (exit {code})")
        p.state = "stopped"

    async def _stop_process(self, p: _Process) -> None:
        proc = p.proc
        if proc is None or p.state in ("stopped", "shutdown"):
            return
        p.state = "stopping"
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
        if p.waiter is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.waiter, 5)
        p.state = "stopped"
        p.proc = None

    # ------------------------------------------------------------------ endpoints
    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def _running(self, request: web.Request) -> web.Response:
        running = [
            {
                "model": p.id,
                "state": p.state,
                "cmd": " ".join(p.argv),
                "proxy": p.proxy,
                "ttl": p.cfg.ttl,
                "name": p.cfg.name,
                "description": p.cfg.description,
            }
            for p in self.procs.values()
            if p.state not in ("stopped", "shutdown")
        ]
        return web.json_response({"running": running})

    async def _models(self, request: web.Request) -> web.Response:
        # The config's models, loaded or not (proxymanager's listModelsHandler: id, object, created,
        # owned_by "llama-swap", plus name/description when set).
        data = [
            {
                "id": p.id,
                "object": "model",
                "created": int(self.started_at),
                "owned_by": "llama-swap",
                **({"name": p.cfg.name} if p.cfg.name else {}),
                **({"description": p.cfg.description} if p.cfg.description else {}),
            }
            for p in self.procs.values()
        ]
        return web.json_response({"object": "list", "data": data})

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "v250", "commit": "forge-standin", "build_date": "2025-01-01T00:00:00Z"})

    async def _logs(self, request: web.Request) -> web.Response:
        if "text/html" in request.headers.get("Accept", ""):
            raise web.HTTPFound("/ui/")
        return web.Response(text="\n".join(self.log) + "\n", content_type="text/plain")

    async def _unload_all(self, request: web.Request) -> web.Response:
        for p in self.procs.values():
            await self._stop_process(p)
        return web.Response(text="OK")

    async def _unload_one(self, request: web.Request) -> web.Response:
        p = self._resolve(request.match_info["model"])
        if p is None:
            return web.Response(status=404, text="model not found")
        await self._stop_process(p)
        return web.Response(text="OK")

    @staticmethod
    def _go_error(status: int, text: str) -> web.Response:
        # What Go's http.Error writes.
        return web.Response(
            status=status,
            text=text + "\n",
            headers={"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
        )

    def _model_of(self, request: web.Request, raw: bytes) -> str | None:
        if request.content_type.startswith("multipart/"):
            head = f"Content-Type: {request.headers.get('Content-Type')}\r\n\r\n".encode()
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
            for part in msg.iter_parts():
                if part.get_param("name", header="content-disposition") == "model":
                    payload = part.get_payload(decode=True)
                    return payload.decode().strip() if isinstance(payload, bytes) else None
            return None
        try:
            body = json.loads(raw)
        except ValueError:
            return None
        m = body.get("model") if isinstance(body, dict) else None
        return m if isinstance(m, str) else None

    async def _oai(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        requested = self._model_of(request, raw)
        if not requested:
            return self._go_error(400, "missing or invalid 'model' key")
        p = self._resolve(requested)
        if p is None:
            return self._go_error(400, f"could not find real modelID for {requested}")
        if p.cfg.use_model_name and not request.content_type.startswith("multipart/"):
            body = json.loads(raw)
            body["model"] = p.cfg.use_model_name
            raw = json.dumps(body).encode()
        return await self._proxy(request, p, request.path, raw)

    async def _upstream(self, request: web.Request) -> web.StreamResponse:
        p = self._resolve(request.match_info["model"])
        if p is None:
            return self._go_error(400, f"model {request.match_info['model']} not found")
        raw = await request.read()
        return await self._proxy(request, p, "/" + request.match_info["path"], raw)

    async def _proxy(self, request: web.Request, p: _Process, path: str, raw: bytes) -> web.StreamResponse:
        if p.inflight >= p.cfg.concurrency_limit:
            return self._go_error(429, "Too many requests")
        p.inflight += 1
        try:
            try:
                await self._ensure_ready(p)
            except _StartError as exc:
                return self._go_error(502, f"unable to start process: {exc}")
            assert self._session is not None
            headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
            async with self._session.request(
                request.method,
                p.proxy + path,
                data=raw,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=600),
            ) as up:
                out = web.StreamResponse(
                    status=up.status, headers={k: v for k, v in up.headers.items() if k.lower() in ("content-type",)}
                )
                if "text/event-stream" in up.headers.get("Content-Type", ""):
                    out.headers["X-Accel-Buffering"] = "no"
                await out.prepare(request)
                try:
                    async for chunk in up.content.iter_any():
                        await out.write(chunk)
                except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                    # Go's reverse proxy aborts the client connection when the upstream breaks.
                    if request.transport is not None:
                        request.transport.abort()
                    return out
                await out.write_eof()
                return out
        finally:
            p.inflight -= 1
