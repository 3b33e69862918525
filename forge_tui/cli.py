"""Entry points: console (embedded gateway), demo, serve (headless), attach, smoke, and the host tools."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import socket
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__, aio
from .config import ConfigError, load_catalog
from .state import StateError

DEMO_CONFIG = Path(__file__).resolve().parent / "data" / "demo.yaml"
DEFAULT_CONFIG_ENV = "FORGE_CONFIG"


def _default_config() -> str:
    env = os.environ.get(DEFAULT_CONFIG_ENV)
    if env:
        return env
    for candidate in (Path("config/forge.yaml"), Path("~/.config/forge-tui/forge.yaml").expanduser()):
        if candidate.exists():
            return str(candidate)
    return "config/forge.yaml"


def _actor() -> str:
    """Who the audit log names for changes made from this console."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "operator"
    return f"{user}@{socket.gethostname()}"


def _fail(msg: str, code: int = 2) -> int:
    print(f"forge-tui: {msg}", file=sys.stderr)
    return code


# ------------------------------------------------------------------ gateway-backed commands
async def _serve(args: argparse.Namespace, config: str, banner: str | None = None, catalog: Any = None) -> int:
    from .gateway.app import GatewayBindError
    from .runtime import Runtime
    from .telemetry import HistoryError

    rt = Runtime(config, catalog=catalog, state_dir=args.state_dir, host=args.host, port=args.port,
                 admin_token=args.admin_token, api_keys=tuple(args.api_key or ()), with_hosts=not args.no_hosts)
    if rt.host not in ("127.0.0.1", "localhost", "::1") and not rt.api_keys:
        print(f"forge-tui: warning: listening on {rt.host} without caller API keys (--api-key)", file=sys.stderr)
    try:
        await rt.start()
    except (GatewayBindError, HistoryError) as exc:
        await rt.stop()
        return _fail(str(exc))
    for w in rt.state.warnings:
        print(f"forge-tui: {w}", file=sys.stderr)
    print(f"forge-tui {__version__}: gateway listening on {rt.url} (config {config}, state {rt.state_dir}, {aio.loop_name()})", flush=True)
    token_path = rt.gateway.admin_token_path
    if token_path is not None:
        print(f"forge-tui: admin token written to {token_path} "
              f"(forge-tui attach {rt.url} --token-file {token_path})", flush=True)
    if banner:
        print(banner, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        print("forge-tui: draining in-flight requests and stopping", flush=True)
        await rt.stop()
    return 0


async def _console(args: argparse.Namespace, config: str, catalog: Any = None) -> int:
    from .console.app import ForgeApp
    from .control.local import LocalControl
    from .gateway.app import GatewayBindError
    from .runtime import Runtime
    from .telemetry import HistoryError

    rt = Runtime(config, catalog=catalog, state_dir=args.state_dir, host=args.host, port=args.port,
                 admin_token=args.admin_token, api_keys=tuple(args.api_key or ()), with_hosts=not args.no_hosts)
    try:
        await rt.start()
    except (GatewayBindError, HistoryError) as exc:
        await rt.stop()
        return _fail(str(exc))
    try:
        app = ForgeApp(LocalControl(rt), actor=_actor(), api_key=rt.api_keys[0] if rt.api_keys else None)
        await app.run_async()
    finally:
        await rt.stop()
    for w in rt.state.warnings:
        print(f"forge-tui: {w}", file=sys.stderr)
    return 0


async def _attach(args: argparse.Namespace) -> int:
    from .console.app import ForgeApp
    from .control.base import ControlError
    from .control.remote import RemoteControl
    from .gateway.admin_token import TOKEN_FILE_NAME, read_token_file

    # The admin API always wants a token: --token, then $FORGE_ADMIN_TOKEN, then --token-file.
    token = args.token or os.environ.get("FORGE_ADMIN_TOKEN")
    if not token and args.token_file:
        try:
            token = read_token_file(args.token_file)
        except ValueError as exc:
            return _fail(str(exc))
    if not token:
        return _fail(f"attach needs the gateway's admin token: pass --token, set $FORGE_ADMIN_TOKEN, or "
                     f"--token-file PATH; without a configured token `forge-tui serve` writes a per-run one to "
                     f"<state dir>/{TOKEN_FILE_NAME} and prints that path when it starts")
    control = RemoteControl(args.url, token)
    try:
        await control.snapshot()  # fail before drawing anything if the gateway or token is wrong
    except ControlError as exc:
        await control.close()
        return _fail(str(exc))
    try:
        await ForgeApp(control, actor=_actor(), api_key=args.api_key).run_async()
    finally:
        await control.close()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .launch import LaunchError, LocalBackends

    catalog = load_catalog(DEMO_CONFIG)
    backends = LocalBackends(catalog)
    if args.backend_ports == "auto":
        catalog = backends.with_free_ports()
    n = sum(1 for _ in backends.launchable())
    print(f"forge-tui demo: starting {n} local llama.cpp servers (Gemma 3 270M, CPU)...", flush=True)
    try:
        backends.start()
    except LaunchError as exc:
        return _fail(f"demo backends did not start: {exc}")
    try:
        if args.headless:
            return aio.run(_serve(args, str(DEMO_CONFIG), banner="forge-tui demo: Ctrl-C to stop", catalog=catalog))
        return aio.run(_console(args, str(DEMO_CONFIG), catalog=catalog))
    finally:
        backends.stop()


async def _smoke(args: argparse.Namespace) -> int:
    import httpx

    from .config.models import ROLE_REQUIRES, Capability
    from .smoke import smoke_roles

    url = args.url.rstrip("/")
    roles: list[Any] = []
    if args.config:
        state_roles = load_catalog(args.config).roles
        wanted = args.roles or list(state_roles)
        for name in wanted:
            if name not in state_roles:
                return _fail(f"unknown role {name!r} in {args.config} (roles: {', '.join(state_roles)})")
            roles.append(argparse.Namespace(name=name, requires=list(state_roles[name].required(name))))
    else:
        names = list(args.roles)
        if not names:
            try:
                async with httpx.AsyncClient(timeout=10) as c:
                    data = (await c.get(url + "/v1/models")).json()["data"]
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                return _fail(f"cannot list roles from {url}/v1/models: {exc}")
            names = [d["id"] for d in data if isinstance(d, dict) and d.get("forge", {}).get("kind") == "role"]
        for name in names:
            roles.append(argparse.Namespace(name=name, requires=list(ROLE_REQUIRES.get(name, (Capability.CHAT,)))))
    if not roles:
        return _fail("no roles to smoke")
    results = await smoke_roles(url, roles, api_key=args.api_key, timeout=args.timeout)
    for r in results:
        print(r.line())
        if r.snippet:
            print(f"      {r.snippet}")
    failed = sum(1 for r in results if not r.ok)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


# ------------------------------------------------------------------ parser
def _gateway_opts(p: argparse.ArgumentParser, top: bool = False) -> None:
    # Subcommands SUPPRESS their defaults so `forge-tui --port 1 serve` keeps the top-level value.
    dflt: Any = None if top else argparse.SUPPRESS
    p.add_argument("--host", default=dflt, help="bind address (default: the config's, 127.0.0.1)")
    p.add_argument("--port", type=int, default=dflt, help="port (default: the config's, 8600)")
    p.add_argument("--state-dir", default=dflt, help="where the state overlay, audit log and history live")
    p.add_argument("--admin-token", default=dflt, help="admin API token (default: $FORGE_ADMIN_TOKEN)")
    p.add_argument("--api-key", action="append", default=dflt, help="require this caller API key (repeatable)")
    p.add_argument("--no-hosts", action="store_true", default=False if top else argparse.SUPPRESS, help="do not probe hosts over SSH")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="forge-tui",
        description="Operations console with an embedded OpenAI-compatible gateway. "
        "Without a command: open the console on --config with the gateway embedded.",
    )
    ap.add_argument("--version", action="version", version=f"forge-tui {__version__}")
    ap.add_argument("--config", default=None, help=f"catalog YAML (default: ${DEFAULT_CONFIG_ENV} or config/forge.yaml)")
    _gateway_opts(ap, top=True)
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")

    s = sub.add_parser("serve", help="run the gateway headless")
    s.add_argument("--config", default=argparse.SUPPRESS)
    _gateway_opts(s)

    d = sub.add_parser("demo", help="start local llama.cpp backends and open the console on the demo config")
    d.add_argument("--headless", action="store_true", help="serve only, no console")
    d.add_argument("--backend-ports", choices=("config", "auto"), default="config",
                   help="llama.cpp ports: as in demo.yaml (18431-18433), or free ones picked at start")
    _gateway_opts(d)

    a = sub.add_parser("attach", help="open the console against a running `forge-tui serve`")
    a.add_argument("url", help="gateway base URL, e.g. http://127.0.0.1:8600")
    a.add_argument("--token", default=None, help="admin token (default: $FORGE_ADMIN_TOKEN, then --token-file)")
    a.add_argument("--token-file", default=None, metavar="PATH",
                   help="read the admin token from this file (the admin.token `forge-tui serve` wrote)")
    a.add_argument("--api-key", default=None, help="caller API key for smoke requests, if the gateway needs one")

    sm = sub.add_parser("smoke", help="smoke roles through a running gateway; exit 1 on any failure")
    sm.add_argument("roles", nargs="*", help="roles to smoke (default: every role)")
    sm.add_argument("--url", default="http://127.0.0.1:8600")
    sm.add_argument("--config", default=None, help="learn the roles from this catalog instead of /v1/models")
    sm.add_argument("--api-key", default=None)
    sm.add_argument("--timeout", type=float, default=120.0)

    try:
        from .hosts import cli as hosts_cli
    except ImportError:
        hosts_cli = None
    if hosts_cli is not None:
        hosts_cli.register(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        if args.cmd == "demo":
            return _demo(args)
        if args.cmd == "attach":
            return aio.run(_attach(args))
        if args.cmd == "smoke":
            return aio.run(_smoke(args))
        if args.cmd in (None, "serve"):
            config = args.config or _default_config()
            load_catalog(config)  # validate before binding anything
            if args.cmd == "serve":
                return aio.run(_serve(args, config))
            return aio.run(_console(args, config))
        handler = getattr(args, "handler", None)
        if handler is None:
            ap.print_help()
            return 2
        return int(handler(args) or 0)
    except (ConfigError, StateError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
