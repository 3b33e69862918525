"""``forge-tui`` (the console with the gateway embedded), ``serve``, ``attach`` and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .. import __version__, aio
from ..config import load_catalog
from .common import CONFIG_HELP, DEMO_CONFIG, actor, default_config, fail, require_config, state_dir
from .secrets import SecretFileError, exposure

__all__ = ["gateway_opts", "register", "run_console_or_serve"]


async def _start_runtime(args: argparse.Namespace, config: str, ex: Any) -> Any:
    """The running forge both the console and ``serve`` use, or the message saying why it did not start
    (a taken port; a non-loopback address without caller keys unless --allow-unauthenticated; history)."""
    from ..gateway.app import GatewayBindError
    from ..runtime import Runtime
    from ..telemetry import HistoryError

    rt = Runtime(
        config,
        catalog=ex.catalog,
        state_dir=args.state_dir,
        host=args.host,
        port=args.port,
        admin_token=ex.admin_token,
        api_keys=ex.api_keys,
        with_hosts=not args.no_hosts,
    )
    try:
        await rt.start()
    except (GatewayBindError, HistoryError) as exc:
        await rt.stop()
        return str(exc)
    aio.settle_gc()  # started: the long-lived graph is built (a process-wide policy, hence here, in the CLI)
    return rt


# ------------------------------------------------------------------ gateway-backed commands
async def _serve(args: argparse.Namespace, config: str, banner: str | None = None, catalog: Any = None) -> int:

    try:
        ex = exposure(args, catalog or load_catalog(config))
    except SecretFileError as exc:
        return fail(str(exc))
    rt = await _start_runtime(args, config, ex)
    if isinstance(rt, str):
        return fail(rt)
    for w in rt.state.warnings:
        print(f"forge-tui: {w}", file=sys.stderr)
    print(
        f"forge-tui {__version__}: gateway listening on {_bound(rt)} (config {config}, state {rt.state_dir}, {aio.loop_name()})",
        flush=True,
    )
    token_path = rt.admin.token_path
    if token_path is not None:
        print(
            f"forge-tui: admin token written to {token_path} (forge-tui attach {rt.url} --token-file {token_path})",
            flush=True,
        )
    if banner:
        print(banner, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_watch_backends(rt, stop))
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        print("forge-tui: draining in-flight requests and stopping", flush=True)
        await rt.stop()
    return 0


_BAD = frozenset({"down", "circuit-open"})


def backend_changes(seen: dict[str, str], backends: dict[str, Any]) -> list[str]:
    """Log lines for backends that went down (or came back) since ``seen``, which is updated."""
    lines: list[str] = []
    for name, b in backends.items():
        label = b.status_label()
        before = seen.get(name)
        seen[name] = label
        if label in _BAD and before not in _BAD:
            why = f" ({b.detail})" if b.detail else ""
            lines.append(
                f"forge-tui: warning: backend {name} on {b.host} is {label}{why}; requests it would serve fail over or fail"
            )
        elif before in _BAD and label not in _BAD:
            lines.append(f"forge-tui: backend {name} on {b.host} is {label} again")
    bad = [n for n, label in seen.items() if label in _BAD]
    if lines and bad and len(bad) == len(seen):
        lines.append("forge-tui: warning: every backend is down: no role can be served")
    return lines


async def _watch_backends(rt: Any, stop: asyncio.Event, every_s: float = 1.0) -> None:
    """The serve log says when a backend goes down and when it is back (headless: nobody sees a console)."""
    seen: dict[str, str] = {}
    while not stop.is_set():
        for line in backend_changes(seen, rt.gateway.backends):
            print(line, file=sys.stderr, flush=True)
        await asyncio.sleep(every_s)


async def _console(args: argparse.Namespace, config: str, catalog: Any = None) -> int:
    from ..console.app import ForgeApp
    from ..console.keymap import KeymapError, check_keymap
    from ..control.local import LocalControl

    try:
        ex = exposure(args, catalog or load_catalog(config))
    except SecretFileError as exc:
        return fail(str(exc))
    try:
        keymap = check_keymap(ex.catalog.keys)  # before anything starts: a bad remap is the operator's to fix
    except KeymapError as exc:
        return fail(f"{config}: {exc}")
    rt = await _start_runtime(args, config, ex)
    if isinstance(rt, str):
        return fail(rt)
    print(f"forge-tui {__version__}: gateway listening on {_bound(rt)}", flush=True)
    from ..console.crashlog import ConsoleLog

    log_path = Path(rt.state_dir) / "console.log"
    app = ForgeApp(LocalControl(rt), actor=actor(), api_key=rt.api_keys[0] if rt.api_keys else None, keymap=keymap)
    try:
        with ConsoleLog(log_path):  # stderr is the console's terminal: the log goes to a file meanwhile
            await app.run_async()
    finally:
        await rt.stop()  # the gateway drains in-flight requests before the process reports or exits
    for w in rt.state.warnings:
        print(f"forge-tui: {w}", file=sys.stderr)
    if app.crash is not None or app.return_code:
        last = (app.crash or "").strip().splitlines()[-1:] or ["unknown error"]
        return fail(
            f"the console crashed ({last[0]}); the gateway drained and stopped; traceback in {log_path}", code=1
        )
    return 0


async def _attach(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..console.app import ForgeApp
    from ..console.keymap import KeymapError, check_keymap
    from ..control.base import ControlError
    from ..control.remote import RemoteControl
    from ..operator.admin_token import TOKEN_FILE_NAME, read_token_file

    # Key remaps come from a catalog named with --config (the gateway's catalog is on its machine).
    keymap: dict[str, str] = {}
    if args.config:
        try:
            keymap = check_keymap(load_catalog(args.config).keys)
        except (ConfigError, KeymapError) as exc:
            return fail(f"{args.config}: {exc}" if isinstance(exc, KeymapError) else str(exc))

    # The admin API always wants a token: --token, then $FORGE_ADMIN_TOKEN, then --token-file.
    token = args.token or os.environ.get("FORGE_ADMIN_TOKEN")
    if not token and args.token_file:
        try:
            token = read_token_file(args.token_file)
        except ValueError as exc:
            return fail(str(exc))
    if not token:
        return fail(
            f"attach needs the gateway's admin token: pass --token, set $FORGE_ADMIN_TOKEN, or "
            f"--token-file PATH; without a configured token `forge-tui serve` writes a per-run one to "
            f"<state dir>/{TOKEN_FILE_NAME} and prints that path when it starts"
        )
    # With --token-file the file is read again on a 401: a restarted serve writes a new per-run token.
    from_file = args.token_file if not (args.token or os.environ.get("FORGE_ADMIN_TOKEN")) else None
    control = RemoteControl(args.url, token, token_file=from_file)
    try:
        await control.snapshot()  # fail before drawing anything if the gateway or token is wrong
    except ControlError as exc:
        await control.close()
        return fail(str(exc))
    try:
        await ForgeApp(control, actor=actor(), api_key=args.api_key, keymap=keymap).run_async()
    finally:
        await control.close()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ..launch import LaunchError, LocalBackends

    catalog = load_catalog(DEMO_CONFIG)
    demo_state = state_dir(args, str(DEMO_CONFIG), catalog)
    _resume_or_fresh(demo_state, fresh=args.fresh)
    backends = LocalBackends(catalog)
    if args.backend_ports == "auto":
        catalog = backends.with_free_ports()
    n = sum(1 for _ in backends.launchable())
    print(f"forge-tui demo: starting {n} local llama.cpp servers (Gemma 3 270M, CPU)...", flush=True)
    try:
        backends.start()
    except LaunchError as exc:
        return fail(f"demo backends did not start: {exc}")
    try:
        if args.headless:
            return aio.run(_serve(args, str(DEMO_CONFIG), banner="forge-tui demo: Ctrl-C to stop", catalog=catalog))
        return aio.run(_console(args, str(DEMO_CONFIG), catalog=catalog))
    finally:
        backends.stop()


def _resume_or_fresh(demo_state: Path, *, fresh: bool) -> None:
    """Say that the demo resumes the last run's changes, or move them aside with --fresh."""
    audit = demo_state / "audit.jsonl"
    if not (demo_state / "state.json").exists() and not audit.exists():
        return
    if fresh:
        aside = demo_state.with_name(f"{demo_state.name}.before-{time.strftime('%Y%m%d-%H%M%S')}")
        demo_state.rename(aside)
        print(f"forge-tui demo: --fresh: the last demo's state moved to {aside}; starting from demo.yaml", flush=True)
        return
    changes = sum(1 for _ in audit.open(encoding="utf-8")) if audit.exists() else 0
    print(
        f"forge-tui demo: resuming the last demo's state from {demo_state} ({changes} audited changes: swaps, "
        "rollbacks, deprecations); `forge-tui demo --fresh` starts from demo.yaml",
        flush=True,
    )


def _bound(rt: Any) -> str:
    """The URL to use locally, then the addresses really bound when they differ (0.0.0.0, ::, several).
    The URL stays first: scripts and tests read the word after "listening on"."""
    addrs = ", ".join(rt.gateway.addresses)
    local = rt.url.removeprefix("http://")
    return rt.url if not addrs or addrs == local else f"{rt.url} (bound to {addrs})"


def gateway_opts(p: argparse.ArgumentParser, top: bool = False) -> None:
    # Subcommands SUPPRESS their defaults so `forge-tui --port 1 serve` keeps the top-level value.
    dflt: Any = None if top else argparse.SUPPRESS
    p.add_argument("--host", default=dflt, help="bind address (default: the config's, 127.0.0.1)")
    p.add_argument("--port", type=int, default=dflt, help="port (default: the config's, 8600)")
    p.add_argument("--state-dir", default=dflt, help="where the state overlay, audit log and history live")
    p.add_argument(
        "--admin-token",
        default=dflt,
        help="admin API token (shows in `ps`: prefer $FORGE_ADMIN_TOKEN or --admin-token-file)",
    )
    p.add_argument("--admin-token-file", default=dflt, metavar="PATH", help="read the admin token from a 0600 file")
    p.add_argument(
        "--api-key",
        action="append",
        default=dflt,
        help="require this caller API key (repeatable; shows in `ps`: prefer $FORGE_API_KEYS, comma-separated, "
        "or --api-key-file)",
    )
    p.add_argument(
        "--api-key-file", default=dflt, metavar="PATH", help="caller API keys, one per line, from a 0600 file"
    )
    p.add_argument(
        "--metrics-token-file",
        default=dflt,
        metavar="PATH",
        help="a token that may read /health and /metrics only, from a 0600 file (or $FORGE_METRICS_TOKEN)",
    )
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="listen beyond loopback without caller API keys (anyone who reaches the port may use every model)",
    )
    p.add_argument(
        "--no-hosts",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="do not probe hosts over SSH",
    )


def run_console_or_serve(args: argparse.Namespace) -> int:
    config = args.config or default_config()
    require_config(config, explicit=bool(args.config))  # not found: say where it looked and how to start
    load_catalog(config)  # validate before binding anything
    if args.cmd == "serve":
        return aio.run(_serve(args, config))
    return aio.run(_console(args, config))


def register(sub: Any) -> None:
    s = sub.add_parser(
        "serve",
        help="run the gateway headless (no console); attach a console later with `forge-tui attach`",
        description="Run the OpenAI-compatible gateway without the console: it routes /v1/* requests by role "
        "to the catalog's backends, serves the admin API (for `forge-tui attach`), /health and /metrics, and "
        "writes the state overlay, audit log and request history under the state dir. Ctrl-C / SIGTERM drain "
        "in-flight requests, then stop.",
    )
    s.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
    gateway_opts(s)
    s.set_defaults(handler=run_console_or_serve)

    d = sub.add_parser(
        "demo",
        help="start local llama.cpp backends and open the console on the demo config",
        description="Start the demo's llama.cpp servers (Gemma 3 270M, CPU) and open the console on them. "
        "The demo keeps its state (swaps, rollbacks, deprecations, audit log) in its state dir and resumes "
        "it on the next run; --fresh starts again from demo.yaml as written.",
    )
    d.add_argument("--headless", action="store_true", help="serve only, no console")
    d.add_argument(
        "--fresh",
        action="store_true",
        help="start from demo.yaml as written: the last demo's state dir is moved aside (kept, not deleted)",
    )
    d.add_argument(
        "--backend-ports",
        choices=("config", "auto"),
        default="config",
        help="llama.cpp ports: as in demo.yaml (18431-18433), or free ones picked at start",
    )
    gateway_opts(d)
    d.set_defaults(handler=_demo)

    a = sub.add_parser("attach", help="open the console against a running `forge-tui serve`")
    a.add_argument("url", help="gateway base URL, e.g. http://127.0.0.1:8600")
    a.add_argument("--token", default=None, help="admin token (default: $FORGE_ADMIN_TOKEN, then --token-file)")
    a.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help="read the admin token from this file (the admin.token `forge-tui serve` wrote)",
    )
    a.add_argument("--api-key", default=None, help="caller API key for smoke requests, if the gateway needs one")
    a.set_defaults(handler=lambda args: aio.run(_attach(args)))
