"""What every command group shares: where the catalog is, who the operator is, how a command fails."""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
from pathlib import Path

from ..config import Catalog, load_catalog
from ..state import default_state_dir

__all__ = ["DEFAULT_CONFIG_ENV", "DEMO_CONFIG", "actor", "default_config", "fail", "load_config", "state_dir"]

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "data" / "demo.yaml"
DEFAULT_CONFIG_ENV = "FORGE_CONFIG"


def default_config() -> str:
    """``$FORGE_CONFIG``, then ./config/forge.yaml, then ~/.config/forge-tui/forge.yaml."""
    env = os.environ.get(DEFAULT_CONFIG_ENV)
    if env:
        return env
    for candidate in (Path("config/forge.yaml"), Path("~/.config/forge-tui/forge.yaml").expanduser()):
        if candidate.exists():
            return str(candidate)
    return "config/forge.yaml"


def actor() -> str:
    """Who the audit log names for changes made from this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "operator"
    return f"{user}@{socket.gethostname()}"


def fail(msg: str, code: int = 2) -> int:
    print(f"forge-tui: {msg}", file=sys.stderr)
    return code


def load_config(args: argparse.Namespace) -> tuple[str, Catalog]:
    path = getattr(args, "config", None) or default_config()
    return path, load_catalog(path)


def state_dir(args: argparse.Namespace, path: str, catalog: Catalog) -> Path:
    d = getattr(args, "state_dir", None) or catalog.gateway.state_dir or default_state_dir(path)
    return Path(d).expanduser()
