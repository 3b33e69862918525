"""Entry points, one module per command group; ``main`` builds the parser and dispatches.

Each group's ``register(sub)`` adds its subcommands and sets ``handler`` (args -> exit code).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .. import __version__
from ..config import ConfigError
from ..state import StateError
from . import eval, gateway, hosts, smoke, trial
from .common import DEFAULT_CONFIG_ENV, DEMO_CONFIG, fail

__all__ = ["DEMO_CONFIG", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="forge-tui",
        description="Operations console with an embedded OpenAI-compatible gateway. "
        "Without a command: open the console on --config with the gateway embedded.",
    )
    ap.add_argument("--version", action="version", version=f"forge-tui {__version__}")
    ap.add_argument(
        "--config", default=None, help=f"catalog YAML (default: ${DEFAULT_CONFIG_ENV} or config/forge.yaml)"
    )
    gateway.gateway_opts(ap, top=True)
    ap.set_defaults(handler=gateway.run_console_or_serve)
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")
    for group in (gateway, smoke, hosts, trial, eval):
        group.register(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (ConfigError, StateError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130
