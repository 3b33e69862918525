"""Load and validate the catalog YAML, with errors that name the file, field path and expectation."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from .models import Catalog

__all__ = ["ConfigError", "load_catalog", "parse_catalog"]


class ConfigError(Exception):
    """The catalog file is missing, not YAML, or does not validate. The message is operator-facing."""


def _loc(loc: tuple[object, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_catalog(text: str, source: str = "<string>") -> Catalog:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level (hosts, backends, models, roles...)")
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = _loc(err["loc"])
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (not part of the schema; check the spelling)"
            elif err["type"] == "missing":
                msg = "required field is missing"
            lines.append(
                f"  {where}: {msg}"
                + (
                    f" (got {err['input']!r})"
                    if err["type"] not in ("missing", "extra_forbidden") and not isinstance(err.get("input"), dict)
                    else ""
                )
            )
        raise ConfigError(f"{source}: invalid catalog ({len(lines)} error(s)):\n" + "\n".join(lines)) from None


def load_catalog(path: str | Path) -> Catalog:
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    return parse_catalog(text, str(p))
