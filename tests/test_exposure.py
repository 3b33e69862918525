"""Exposure: no unauthenticated bind beyond loopback, secrets from files and env, guarded /health and
/metrics, and slow or greedy clients bounded (idle/header timeout, per-address connection cap).

Real parts: the real gateway on loopback, the recording upstream (tests/support) as its backend,
raw sockets for slow clients, and ``python -m forge_tui serve`` in a subprocess for the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml

from forge_tui.gateway import Gateway
from forge_tui.gateway.errors import GatewayBindError
from forge_tui.state import RoutingState
from forge_tui.telemetry import Telemetry
from tests.support.gateway_harness import make_catalog, running_gateway
from tests.support.recording_upstream import RecordingUpstream

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def up() -> AsyncIterator[RecordingUpstream]:
    u = await RecordingUpstream("a").start()
    yield u
    await u.stop()


def _catalog(url: str, **gateway: object):  # type: ignore[no-untyped-def]
    return make_catalog(
        backends={"a": {"base_url": url}},
        models={"m": {"placements": [{"backend": "a"}]}},
        roles={"default-chat": {"model": "m"}},
        gateway=dict(gateway),
    )


async def _start(cat, host: str, keys: tuple[str, ...] = ()) -> Gateway:  # type: ignore[no-untyped-def]
    tel = Telemetry(None)
    await tel.start()
    gw = Gateway(cat, RoutingState(cat, None), telemetry=tel, api_keys=keys)
    await gw.start(host, 0)
    return gw


async def test_refuses_all_addresses_without_keys_unless_allowed(up: RecordingUpstream) -> None:
    with pytest.raises(GatewayBindError) as ei:
        await _start(_catalog(up.url), "0.0.0.0")
    assert "--allow-unauthenticated" in str(ei.value) and "API keys" in str(ei.value)
    gw = await _start(_catalog(up.url, allow_unauthenticated=True), "0.0.0.0")
    try:
        assert gw.addresses == [f"0.0.0.0:{gw.port}"]  # the real bound address, not 127.0.0.1
        assert gw.url == f"http://127.0.0.1:{gw.port}"
    finally:
        await gw.stop()
    gw = await _start(_catalog(up.url), "0.0.0.0", keys=("k",))
    await gw.stop()
    gw = await _start(_catalog(up.url), "127.0.0.1")  # loopback needs nothing
    await gw.stop()


async def test_health_and_metrics_need_a_key_when_keys_are_configured(up: RecordingUpstream) -> None:
    cat = _catalog(up.url, metrics_token="scrape-me")
    async with running_gateway(cat, api_keys=["k1"]) as h, httpx.AsyncClient(base_url=h.url) as c:
        for path in ("/health", "/metrics"):
            r = await c.get(path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            assert r.headers["x-forge-request-id"]
            assert "backends" not in r.text and "forge_backend_up" not in r.text
            assert (await c.get(path, headers={"Authorization": "Bearer k1"})).status_code == 200
            assert (await c.get(path, headers={"Authorization": "Bearer scrape-me"})).status_code == 200
        # The metrics token reads health and metrics only, never the API.
        r = await c.get("/v1/models", headers={"Authorization": "Bearer scrape-me"})
        assert r.status_code == 401
    cat = _catalog(up.url, public_health=True)
    async with running_gateway(cat, api_keys=["k1"]) as h, httpx.AsyncClient(base_url=h.url) as c:
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/metrics")).status_code == 401


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def _read_all(s: socket.socket) -> bytes | None:
    """Everything until the peer closes; None when our own 10 s timeout ran out first."""
    out = b""
    while True:
        try:
            c = s.recv(65536)
        except ConnectionResetError:
            return out
        except TimeoutError:
            return None
        if not c:
            return out
        out += c


async def test_slow_header_is_cut_and_greedy_address_is_capped(up: RecordingUpstream) -> None:
    cat = _catalog(up.url, idle_timeout_s=0.5, max_connections_per_client=3)
    async with running_gateway(cat) as h:
        port = h.gw.port
        # A client trickling its request head is closed after the idle timeout (bounded wait: 10 s socket timeout).
        s = await asyncio.to_thread(_connect, port)
        s.sendall(b"GET /v1/mod")
        assert await asyncio.to_thread(_read_all, s) == b""  # closed by the gateway, not by our timeout
        s.close()
        # Three connections from 127.0.0.1 fill its cap; the fourth is answered 429 and closed.
        held = [await asyncio.to_thread(_connect, port) for _ in range(3)]
        for s in held:
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await asyncio.to_thread(s.recv, 65536)).startswith(b"HTTP/1.1 200")
        extra = await asyncio.to_thread(_connect, port)
        got = await asyncio.to_thread(_read_all, extra)
        assert got is not None and got.startswith(b"HTTP/1.1 429")
        body = json.loads(got.split(b"\r\n\r\n", 1)[1])
        assert body["error"]["code"] == "too_many_connections"
        # Another address is not affected by 127.0.0.1's connections.
        other = await asyncio.to_thread(_connect, port, "127.0.0.2")
        other.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.to_thread(_read_all, other) or b"").startswith(b"HTTP/1.1 200")
        other.close()
        for s in held:
            s.close()
        # Once they are gone, 127.0.0.1 connects again (the count drops as connections close).
        for _ in range(50):  # bounded: the server sees the closes shortly after
            s = await asyncio.to_thread(_connect, port)
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            got = await asyncio.to_thread(_read_all, s)
            s.close()
            if got and got.startswith(b"HTTP/1.1 200"):
                break
            await asyncio.sleep(0.05)
        assert got and got.startswith(b"HTTP/1.1 200")


def _write_config(tmp_path: Path, up_url: str) -> Path:
    cfg = {
        "gateway": {"health_interval_s": 60, "history": False},
        "hosts": {"local": {"address": "127.0.0.1", "platform": "cpu", "memory_budget_gb": 8, "transport": "local"}},
        "backends": {"a": {"host": "local", "kind": "llama-server", "base_url": up_url}},
        "families": {"plain": {}},
        "models": {"m": {"family": "plain", "architecture": "gemma3", "placements": [{"backend": "a"}]}},
        "roles": {"default-chat": {"model": "m"}},
    }
    p = tmp_path / "forge.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _serve(tmp_path: Path, cfg: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "forge_tui", "serve", "--config", str(cfg), "--port", "0", "--no-hosts"]
    argv += ["--state-dir", str(tmp_path / "state"), *extra]
    e = {k: v for k, v in os.environ.items() if k not in ("FORGE_API_KEYS", "FORGE_ADMIN_TOKEN")}
    e.update(env or {})
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)


def _listening_line(p: subprocess.Popen[str]) -> str:
    assert p.stdout is not None
    for _ in range(20):  # bounded: the first lines of output
        line = p.stdout.readline()
        if not line or "listening on" in line:
            return line
    return ""


async def test_cli_refuses_open_bind_and_takes_keys_from_files_and_env(tmp_path: Path, up: RecordingUpstream) -> None:
    cfg = _write_config(tmp_path, up.url)
    p = _serve(tmp_path, cfg, "--host", "0.0.0.0")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "--allow-unauthenticated" in err

    p = _serve(tmp_path, cfg, "--host", "0.0.0.0", "--allow-unauthenticated")
    try:
        line = await asyncio.to_thread(_listening_line, p)
        assert "listening on http://127.0.0.1:" in line and "(bound to 0.0.0.0:" in line, line
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)

    keyfile = tmp_path / "keys"
    keyfile.write_text("# caller keys\nfile-key\n")
    keyfile.chmod(0o644)
    p = _serve(tmp_path, cfg, "--api-key-file", str(keyfile))
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "chmod 600" in err

    keyfile.chmod(0o600)
    p = _serve(tmp_path, cfg, "--api-key-file", str(keyfile), env={"FORGE_API_KEYS": "env-key, other"})
    try:
        line = await asyncio.to_thread(_listening_line, p)
        url = line.split("listening on ")[1].split()[0]
        async with httpx.AsyncClient(base_url=url) as c:
            assert (await c.get("/v1/models")).status_code == 401
            for k in ("file-key", "env-key", "other"):
                assert (await c.get("/v1/models", headers={"Authorization": f"Bearer {k}"})).status_code == 200
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)


def test_help_says_where_secrets_can_come_from() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "forge_tui", "serve", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    ).stdout
    for needle in ("--api-key-file", "FORGE_API_KEYS", "--admin-token-file", "FORGE_ADMIN_TOKEN", "0600"):
        assert needle in out, needle
    assert "--allow-unauthenticated" in out


async def test_a_trickled_body_is_cut_with_408(up: RecordingUpstream) -> None:
    async with running_gateway(_catalog(up.url, body_timeout_s=0.5)) as h:
        s = await asyncio.to_thread(_connect, h.gw.port)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        s.sendall(b"Content-Length: 100\r\n\r\n" + b'{"messages"')  # 11 of 100 bytes, then nothing
        got = await asyncio.to_thread(s.recv, 65536)
        s.close()
        assert got.startswith(b"HTTP/1.1 408"), got[:100]
        err = json.loads(got.split(b"\r\n\r\n", 1)[1])["error"]
        assert err["code"] == "request_timeout" and "0.5 s" in err["message"]
        assert up.requests == []
