"""What every command group shares: where the catalog is, who the operator is, how a command fails."""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
from pathlib import Path

from ..config import Catalog, ConfigError, load_catalog
from ..state import default_state_dir

__all__ = [
    "CONFIG_HELP",
    "DEFAULT_CONFIG_ENV",
    "DEMO_CONFIG",
    "actor",
    "default_config",
    "fail",
    "load_config",
    "require_config",
    "state_dir",
]

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "data" / "demo.yaml"
DEFAULT_CONFIG_ENV = "FORGE_CONFIG"


CONFIG_HELP = (
    f"catalog YAML (default: ${DEFAULT_CONFIG_ENV}, then ./config/forge.yaml, then ~/.config/forge-tui/forge.yaml)"
)


def _candidates() -> tuple[Path, ...]:
    return (Path("config/forge.yaml"), Path("~/.config/forge-tui/forge.yaml").expanduser())


def default_config() -> str:
    """``$FORGE_CONFIG``, then ./config/forge.yaml, then ~/.config/forge-tui/forge.yaml."""
    env = os.environ.get(DEFAULT_CONFIG_ENV)
    if env:
        return env
    for candidate in _candidates():
        if candidate.exists():
            return str(candidate)
    return "config/forge.yaml"


def require_config(path: str, explicit: bool) -> None:
    """A catalog that was not named and is not where forge-tui looks: say where it looked and what to do."""
    if explicit or os.environ.get(DEFAULT_CONFIG_ENV) or Path(path).exists():
        return  # load_catalog names a missing explicit file itself
    looked = ", ".join(str(p.resolve()) if not p.is_absolute() else str(p) for p in _candidates())
    raise ConfigError(
        f"config file not found: no --config given, ${DEFAULT_CONFIG_ENV} is not set, and there is no catalog at "
        f"{looked}. Try the local demo on real llama.cpp servers: `forge-tui demo`; or point at a catalog: "
        f"`forge-tui --config PATH` or `export {DEFAULT_CONFIG_ENV}=PATH`"
    )


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
    explicit = getattr(args, "config", None)
    path = explicit or default_config()
    require_config(path, explicit=bool(explicit))
    return path, load_catalog(path)


def state_dir(args: argparse.Namespace, path: str, catalog: Catalog) -> Path:
    d = getattr(args, "state_dir", None) or catalog.gateway.state_dir or default_state_dir(path)
    return Path(d).expanduser()
